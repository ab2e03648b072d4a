//! LoCoMo evidence recall: how often retrieval finds the dialogue turns that
//! answer a question about a long conversation.
//!
//! It exists to measure memkern's plaintext retrieval on real, long
//! (300–700 turn, 19–32 session) conversations against fixed baselines.
//! Data: the LoCoMo benchmark (Maharana et al., ACL 2024), one JSON file per
//! conversation (`speaker_a`, `speaker_b`, `session_N` turns,
//! `session_N_date_time`, `qa`).
//!
//! For each conversation, every turn becomes one plaintext MemCube (speaker,
//! text, image caption, said at the session's time; relative dates resolved
//! and kept as tags) in a fresh in-memory store and index. Every question of
//! categories 1–4 (multi-hop, temporal, open-domain, single-hop; 5,
//! adversarial, has no evidence to find) then retrieves the top k memories,
//! scored as evidence recall@k = |evidence ∩ top-k| / |evidence|, averaged
//! per category and over all questions.
//!
//! Data quirks handled (and counted in the report): evidence lists written
//! as one `"D8:6; D9:17"` string are split; `"D:11:26"` reads as `D11:26`;
//! evidence naming no turn of the conversation is dropped; a question left
//! with no evidence is skipped.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use memkern_core::cube::{
    self, Cube, Embedding, EncodeError, Int8Vec, Metadata, Payload, Plaintext, SourceKind,
};
use memkern_core::ids::{CubeId, Fingerprint, NamespaceId, UserId};
use memkern_core::lifecycle::LifecycleState;
use memkern_core::search::hybrid::{HybridParams, MemoryIndex, MemoryQuery, MemoryRecord};
use memkern_core::search::temporal::{self, DateSpan, Day, QueryTime};
use memkern_core::search::text::Analyzer;
use memkern_core::search::{DocId, SearchError, TopK, int8};
use memkern_core::time::Timestamp;
use serde::{Deserialize, Serialize};

use super::stats::Latency;
use memkern_runtime::embed::{DenseEmbedder, EmbedError};

/// Why a LoCoMo evaluation could not run.
#[derive(Debug, thiserror::Error)]
pub enum LocomoError {
    /// A file or directory could not be read.
    #[error("cannot read {}", path.display())]
    Io {
        /// The path.
        path: PathBuf,
        /// The cause.
        #[source]
        source: std::io::Error,
    },
    /// A file is not valid JSON of the expected shape.
    #[error("{} is not a LoCoMo conversation", path.display())]
    Json {
        /// The file.
        path: PathBuf,
        /// The parser's complaint.
        #[source]
        source: serde_json::Error,
    },
    /// A file is JSON of the right shape but breaks a rule of the format.
    #[error("{}: {reason}", path.display())]
    Format {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        reason: String,
    },
    /// The directory holds no `*.json` file.
    #[error("no LoCoMo conversation (*.json) in {}", .0.display())]
    Empty(PathBuf),
    /// A conversation asked for by id is not in the directory.
    #[error("conversation {0:?} is not in the data directory")]
    MissingConversation(String),
    /// The embedder failed.
    #[error("embedding failed")]
    Embed(#[source] EmbedError),
    /// The embedder returned the wrong number or size of vectors.
    #[error("embedder returned {got} vectors for {want} texts, or a vector of the wrong dimension")]
    BadEmbedding {
        /// Texts sent.
        want: usize,
        /// Vectors received.
        got: usize,
    },
    /// A memory could not be indexed.
    #[error("cannot index memory {dia_id}")]
    Index {
        /// The turn.
        dia_id: String,
        /// The cause.
        #[source]
        source: SearchError,
    },
    /// A memory could not be encoded as a MemCube.
    #[error("cannot store memory {dia_id} as a cube")]
    Cube {
        /// The turn.
        dia_id: String,
        /// The cause.
        #[source]
        source: EncodeError,
    },
}

/// A LoCoMo question category.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Category {
    /// 1: the answer combines several turns.
    MultiHop,
    /// 2: the answer is a date or duration.
    Temporal,
    /// 3: the answer needs world knowledge plus the conversation.
    OpenDomain,
    /// 4: one turn answers it.
    SingleHop,
    /// 5: unanswerable by design (not scored).
    Adversarial,
}

impl Category {
    /// The scored categories, in report order.
    pub const SCORED: [Category; 4] = [
        Category::MultiHop,
        Category::Temporal,
        Category::OpenDomain,
        Category::SingleHop,
    ];

    fn from_number(n: u8) -> Option<Category> {
        match n {
            1 => Some(Category::MultiHop),
            2 => Some(Category::Temporal),
            3 => Some(Category::OpenDomain),
            4 => Some(Category::SingleHop),
            5 => Some(Category::Adversarial),
            _ => None,
        }
    }

    /// The snake_case name used in reports.
    pub fn name(self) -> &'static str {
        match self {
            Category::MultiHop => "multi_hop",
            Category::Temporal => "temporal",
            Category::OpenDomain => "open_domain",
            Category::SingleHop => "single_hop",
            Category::Adversarial => "adversarial",
        }
    }
}

/// One dialogue turn.
#[derive(Clone, Debug)]
pub struct Turn {
    /// LoCoMo's id, `D<session>:<turn>`.
    pub dia_id: String,
    /// Who said it.
    pub speaker: String,
    /// What was said.
    pub text: String,
    /// Caption of the image shared with the turn, if any.
    pub caption: Option<String>,
}

/// One session: turns said at one time.
#[derive(Clone, Debug)]
pub struct Session {
    /// Session number (1-based).
    pub number: u32,
    /// When the session took place.
    pub time: Timestamp,
    /// Its turns, in order.
    pub turns: Vec<Turn>,
}

/// One question with the turns that answer it.
#[derive(Clone, Debug)]
pub struct Question {
    /// The question.
    pub text: String,
    /// Its category.
    pub category: Category,
    /// Evidence turn ids (normalised; may name turns that do not exist).
    pub evidence: Vec<String>,
    /// Evidence entries that are not turn ids at all (e.g. `"D"`).
    pub malformed_evidence: usize,
    /// The gold answer (`answer`, or `adversarial_answer` for category 5;
    /// numbers as written), if the file has one.
    pub answer: Option<String>,
}

/// One LoCoMo conversation.
#[derive(Clone, Debug)]
pub struct Conversation {
    /// The file stem ("26").
    pub id: String,
    /// `speaker_a` and `speaker_b`.
    pub speakers: [String; 2],
    /// Sessions with turns, in order.
    pub sessions: Vec<Session>,
    /// Every question, adversarial ones included.
    pub questions: Vec<Question>,
}

impl Conversation {
    /// Number of turns.
    pub fn turn_count(&self) -> usize {
        self.sessions.iter().map(|s| s.turns.len()).sum()
    }
}

#[derive(Deserialize)]
struct RawConversation {
    speaker_a: String,
    speaker_b: String,
    qa: Vec<RawQa>,
    #[serde(flatten)]
    rest: BTreeMap<String, serde_json::Value>,
}

#[derive(Deserialize)]
struct RawTurn {
    speaker: String,
    dia_id: String,
    text: String,
    #[serde(default)]
    blip_caption: Option<String>,
}

#[derive(Deserialize)]
struct RawQa {
    question: String,
    #[serde(default)]
    evidence: Vec<String>,
    category: u8,
    #[serde(default)]
    answer: Option<serde_json::Value>,
    #[serde(default)]
    adversarial_answer: Option<serde_json::Value>,
}

/// A gold answer as text: strings as they are, numbers as written.
fn answer_text(v: Option<serde_json::Value>) -> Option<String> {
    match v? {
        serde_json::Value::String(s) => Some(s),
        serde_json::Value::Null => None,
        other => Some(other.to_string()),
    }
}

/// Parses LoCoMo's session time, e.g. `"1:56 pm on 8 May, 2023"`.
pub fn parse_session_time(s: &str) -> Option<Timestamp> {
    let (clock, date) = s.split_once(" on ")?;
    let mut parts = date
        .split(|c: char| c.is_whitespace() || c == ',')
        .filter(|p| !p.is_empty());
    let day: u8 = parts.next()?.parse().ok()?;
    let month = temporal::month_from_name(parts.next()?)?;
    let year: i32 = parts.next()?.parse().ok()?;
    if parts.next().is_some() {
        return None;
    }
    let day = Day::from_civil(year, month, day)?;
    let clock = clock.trim().to_ascii_lowercase();
    let (hm, half) = clock.split_once(' ')?;
    let (h, m) = hm.split_once(':')?;
    let (h, m): (i64, i64) = (h.parse().ok()?, m.parse().ok()?);
    if !(1..=12).contains(&h) || !(0..60).contains(&m) {
        return None;
    }
    let h = match half.trim() {
        "am" => h % 12,
        "pm" => h % 12 + 12,
        _ => return None,
    };
    Some(day.start().saturating_add_millis((h * 60 + m) * 60_000))
}

/// Splits and normalises one raw evidence entry (`"D8:6; D9:17"`,
/// `"D:11:26"`) into turn ids; `None` for a piece that is no turn id.
fn normalise_evidence(raw: &str) -> impl Iterator<Item = Option<String>> + '_ {
    raw.split(|c: char| c == ';' || c == ',' || c.is_whitespace())
        .filter(|p| !p.is_empty())
        .map(|p| {
            let rest = p.strip_prefix('D')?;
            let rest = rest.strip_prefix(':').unwrap_or(rest);
            let (s, t) = rest.split_once(':')?;
            let (s, t): (u32, u32) = (s.parse().ok()?, t.parse().ok()?);
            Some(format!("D{s}:{t}"))
        })
}

/// Reads one conversation file.
pub fn load_file(path: &Path) -> Result<Conversation, LocomoError> {
    let bytes = std::fs::read(path).map_err(|source| LocomoError::Io {
        path: path.to_owned(),
        source,
    })?;
    let raw: RawConversation =
        serde_json::from_slice(&bytes).map_err(|source| LocomoError::Json {
            path: path.to_owned(),
            source,
        })?;
    let format = |reason: String| LocomoError::Format {
        path: path.to_owned(),
        reason,
    };
    let mut sessions = Vec::new();
    for (key, value) in &raw.rest {
        let Some(n) = key
            .strip_prefix("session_")
            .and_then(|n| n.parse::<u32>().ok())
        else {
            continue;
        };
        let turns: Vec<RawTurn> =
            serde_json::from_value(value.clone()).map_err(|source| LocomoError::Json {
                path: path.to_owned(),
                source,
            })?;
        if turns.is_empty() {
            continue;
        }
        let time_key = format!("session_{n}_date_time");
        let time_str = raw
            .rest
            .get(&time_key)
            .and_then(|v| v.as_str())
            .ok_or_else(|| format(format!("{key} has turns but no {time_key}")))?;
        let time = parse_session_time(time_str)
            .ok_or_else(|| format(format!("{time_key}: cannot read the time {time_str:?}")))?;
        sessions.push(Session {
            number: n,
            time,
            turns: turns
                .into_iter()
                .map(|t| Turn {
                    dia_id: t.dia_id,
                    speaker: t.speaker,
                    text: t.text,
                    caption: t.blip_caption.filter(|c| !c.trim().is_empty()),
                })
                .collect(),
        });
    }
    if sessions.is_empty() {
        return Err(format("no session_N with turns".to_owned()));
    }
    sessions.sort_by_key(|s| s.number);
    let mut questions = Vec::with_capacity(raw.qa.len());
    for (i, q) in raw.qa.into_iter().enumerate() {
        let category = Category::from_number(q.category)
            .ok_or_else(|| format(format!("qa[{i}]: unknown category {}", q.category)))?;
        let pieces: Vec<Option<String>> = q
            .evidence
            .iter()
            .flat_map(|e| normalise_evidence(e))
            .collect();
        let malformed_evidence = pieces.iter().filter(|p| p.is_none()).count();
        questions.push(Question {
            text: q.question,
            category,
            evidence: pieces.into_iter().flatten().collect(),
            malformed_evidence,
            answer: answer_text(q.answer.or(q.adversarial_answer)),
        });
    }
    let id = path
        .file_stem()
        .map_or_else(String::new, |s| s.to_string_lossy().into_owned());
    Ok(Conversation {
        id,
        speakers: [raw.speaker_a, raw.speaker_b],
        sessions,
        questions,
    })
}

/// Reads every `*.json` conversation of `dir` (sorted by file name), or only
/// those whose file stem is in `only`.
pub fn load_dir(dir: &Path, only: Option<&[String]>) -> Result<Vec<Conversation>, LocomoError> {
    let io = |source| LocomoError::Io {
        path: dir.to_owned(),
        source,
    };
    let mut paths = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io)? {
        let path = entry.map_err(io)?.path();
        if path.extension().is_some_and(|e| e == "json") && path.is_file() {
            paths.push(path);
        }
    }
    paths.sort();
    if let Some(only) = only {
        for id in only {
            if !paths
                .iter()
                .any(|p| p.file_stem().is_some_and(|s| s == id.as_str()))
            {
                return Err(LocomoError::MissingConversation(id.clone()));
            }
        }
        paths.retain(|p| {
            p.file_stem()
                .is_some_and(|s| only.iter().any(|id| s == id.as_str()))
        });
    }
    if paths.is_empty() {
        return Err(LocomoError::Empty(dir.to_owned()));
    }
    paths.iter().map(|p| load_file(p)).collect()
}

/// The text a turn is remembered (and keyword-indexed, and embedded) as:
/// speaker, words, and the caption of a shared image.
pub fn memory_text(turn: &Turn) -> String {
    match &turn.caption {
        Some(c) => format!("{}: {} [shares an image: {}]", turn.speaker, turn.text, c),
        None => format!("{}: {}", turn.speaker, turn.text),
    }
}

/// A ranking configuration evaluated side by side with the others.
#[derive(Clone, Debug)]
pub struct Method {
    /// Name in reports ("bm25", "hybrid").
    pub name: String,
    /// Ranking parameters.
    pub params: HybridParams,
    /// Whether it needs query and memory embeddings.
    pub dense: bool,
    /// Rank by exact f32 cosine instead of the index (the f32 reference
    /// for int8 quantisation; `params` are then ignored).
    pub exact_f32: bool,
}

impl Method {
    /// Plain BM25 (the keyword baseline).
    pub fn bm25() -> Method {
        Method {
            name: "bm25".to_owned(),
            params: HybridParams::KEYWORD_ONLY,
            dense: false,
            exact_f32: false,
        }
    }

    /// BM25 with the time, speaker and dialogue-context signals (what an
    /// MCU without an embedder ranks with).
    pub fn bm25_signals() -> Method {
        Method {
            name: "bm25+signals".to_owned(),
            params: HybridParams::KEYWORD_SIGNALS,
            dense: false,
            exact_f32: false,
        }
    }

    /// Plain dense cosine over int8 vectors (the dense baseline).
    pub fn dense() -> Method {
        Method {
            name: "dense".to_owned(),
            params: HybridParams::DENSE_ONLY,
            dense: true,
            exact_f32: false,
        }
    }

    /// Exact f32 cosine, brute force (what int8 quantisation is measured
    /// against).
    pub fn dense_f32() -> Method {
        Method {
            name: "dense-f32".to_owned(),
            params: HybridParams::DENSE_ONLY,
            dense: true,
            exact_f32: true,
        }
    }

    /// Everything: keyword + dense + time + speaker + context.
    pub fn hybrid() -> Method {
        Method {
            name: "hybrid".to_owned(),
            params: HybridParams::DEFAULT,
            dense: true,
            exact_f32: false,
        }
    }

    /// The methods reported by `memkern eval locomo`: the two baselines and
    /// the tuned rankers; dense ones only when `with_dense`.
    pub fn standard(with_dense: bool) -> Vec<Method> {
        if with_dense {
            vec![
                Method::bm25(),
                Method::dense(),
                Method::dense_f32(),
                Method::bm25_signals(),
                Method::hybrid(),
            ]
        } else {
            vec![Method::bm25(), Method::bm25_signals()]
        }
    }
}

/// One conversation ingested into a fresh store and index.
pub struct ConversationStore {
    /// The index over its memories.
    pub index: MemoryIndex,
    /// Turn id of each doc id.
    pub dia_ids: Vec<String>,
    /// Each memory as an encoded plaintext MemCube, by doc id.
    pub cubes: Vec<Vec<u8>>,
    /// Each memory's f32 embedding, by doc id (empty without an embedder).
    pub vectors_f32: Vec<Vec<f32>>,
    /// Lowercased speaker names (speaker id 1 and 2).
    speaker_words: [String; 2],
    doc_of: HashMap<String, DocId>,
    /// Time spent embedding memories.
    pub embed_time: Duration,
}

/// Embeds `texts` and checks the answer's shape.
fn embed_checked(e: &dyn DenseEmbedder, texts: &[&str]) -> Result<Vec<Vec<f32>>, LocomoError> {
    let v = e.embed(texts).map_err(LocomoError::Embed)?;
    if v.len() != texts.len() || v.iter().any(|x| x.len() != e.dim()) {
        return Err(LocomoError::BadEmbedding {
            want: texts.len(),
            got: v.len(),
        });
    }
    Ok(v)
}

/// A 16-byte fingerprint of an embedder name (FNV-1a, twice), so cubes
/// record which embedder made their vectors.
fn name_fingerprint(name: &str) -> Fingerprint {
    let mut out = [0u8; 16];
    for (i, chunk) in out.chunks_exact_mut(8).enumerate() {
        let mut h: u64 = 0xcbf2_9ce4_8422_2325 ^ i as u64;
        for b in name.bytes() {
            h = (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3);
        }
        chunk.copy_from_slice(&h.to_le_bytes());
    }
    Fingerprint(out)
}

/// `first..last` as a tag value (`2023-05-01..2023-05-07`, or one date).
fn span_tag(s: &DateSpan) -> String {
    let f = s.first.civil();
    let l = s.last.civil();
    if s.first == s.last {
        format!("when:{:04}-{:02}-{:02}", f.0, f.1, f.2)
    } else {
        format!(
            "when:{:04}-{:02}-{:02}..{:04}-{:02}-{:02}",
            f.0, f.1, f.2, l.0, l.1, l.2
        )
    }
}

/// Memories embedded per embedder call.
const EMBED_BATCH: usize = 64;

/// Ingests every turn of `conv` as one memory: resolves its relative dates
/// against the session time, encodes it as a plaintext cube, embeds it when
/// an embedder is given, and indexes it. `on_turn` is called once per turn.
pub fn ingest(
    conv: &Conversation,
    analyzer: Analyzer,
    embedder: Option<&dyn DenseEmbedder>,
    mut on_turn: impl FnMut(),
) -> Result<ConversationStore, LocomoError> {
    let turns: Vec<(&Session, &Turn)> = conv
        .sessions
        .iter()
        .flat_map(|s| s.turns.iter().map(move |t| (s, t)))
        .collect();
    let fingerprint = embedder.map(|e| {
        e.fingerprint()
            .unwrap_or_else(|| name_fingerprint(e.name()))
    });
    let conv_hash = name_fingerprint(&conv.id).0;
    let namespace = NamespaceId(u64::from_le_bytes({
        let mut b = [0u8; 8];
        b.copy_from_slice(&conv_hash[..8]);
        b
    }));
    let mut store = ConversationStore {
        index: MemoryIndex::new(analyzer, embedder.map(|e| e.dim())),
        dia_ids: Vec::with_capacity(turns.len()),
        cubes: Vec::with_capacity(turns.len()),
        vectors_f32: Vec::new(),
        speaker_words: conv.speakers.clone().map(|s| s.to_lowercase()),
        doc_of: HashMap::with_capacity(turns.len()),
        embed_time: Duration::ZERO,
    };
    for (batch_start, batch) in turns
        .chunks(EMBED_BATCH)
        .enumerate()
        .map(|(i, b)| (i * EMBED_BATCH, b))
    {
        let texts: Vec<String> = batch.iter().map(|(_, t)| memory_text(t)).collect();
        let vectors = match embedder {
            Some(e) => {
                let refs: Vec<&str> = texts.iter().map(String::as_str).collect();
                let t0 = Instant::now();
                let v = embed_checked(e, &refs)?;
                store.embed_time += t0.elapsed();
                Some(v)
            }
            None => None,
        };
        for (j, ((session, turn), text)) in batch.iter().zip(&texts).enumerate() {
            let n = batch_start + j;
            // A conversation has far fewer than 2^24 turns; `DocId::MAX`
            // is still checked by the index.
            let doc = DocId(u32::try_from(n).unwrap_or(u32::MAX));
            let said = Day::of(session.time);
            let mut dates = Vec::new();
            temporal::resolve_relative(&turn.text, said, |m| dates.push(m.span));
            let speaker = conv
                .speakers
                .iter()
                .position(|s| *s == turn.speaker)
                .map_or(0, |i| i as u16 + 1);
            let quantised = match vectors.as_ref().and_then(|v| v.get(j)) {
                Some(v) => {
                    let mut q = vec![0i8; v.len()];
                    let scale = int8::quantize(v, &mut q).ok_or(LocomoError::Index {
                        dia_id: turn.dia_id.clone(),
                        source: SearchError::NotFinite,
                    })?;
                    Some((q, scale))
                }
                None => None,
            };
            let mut id = [0u8; 16];
            id[..8].copy_from_slice(&conv_hash[..8]);
            id[8..].copy_from_slice(&(n as u64).to_be_bytes());
            let mut meta = Metadata::new(
                CubeId(id),
                UserId(1),
                namespace,
                session.time,
                session.time,
                SourceKind::DialogueTurn,
            );
            meta.lifecycle = LifecycleState::Activated;
            meta.provenance.source_ref = Some(turn.dia_id.clone());
            let mut tag = format!("speaker:{}", turn.speaker);
            tag.truncate(tag.floor_char_boundary(cube::MAX_TAG_LEN));
            let _ = meta.tags.push(tag);
            for d in &dates {
                // Tags past the limit are dropped; the index keeps every date.
                let _ = meta.tags.push(span_tag(d));
            }
            let cube: cube::OwnedCube = Cube {
                meta,
                payload: Payload::Plaintext(Plaintext {
                    text: text.clone(),
                    embedding: match (&quantised, fingerprint) {
                        (Some((q, scale)), Some(fp)) => Some(Embedding {
                            embedder: fp,
                            scale: *scale,
                            values: Int8Vec(q.iter().map(|&x| x as u8).collect::<Vec<u8>>()),
                        }),
                        _ => None,
                    },
                }),
            };
            let bytes = cube::encode_to_vec(&cube).map_err(|source| LocomoError::Cube {
                dia_id: turn.dia_id.clone(),
                source,
            })?;
            let record = MemoryRecord {
                text,
                said,
                speaker,
                thread: session.number,
                dates: &dates,
                vector: quantised.as_ref().map(|(q, s)| (q.as_slice(), *s)),
            };
            store
                .index
                .insert(doc, &record)
                .map_err(|source| LocomoError::Index {
                    dia_id: turn.dia_id.clone(),
                    source,
                })?;
            store.doc_of.insert(turn.dia_id.clone(), doc);
            store.dia_ids.push(turn.dia_id.clone());
            store.cubes.push(bytes);
            if let Some(v) = vectors.as_ref().and_then(|v| v.get(j)) {
                store.vectors_f32.push(v.clone());
            }
            on_turn();
        }
    }
    Ok(store)
}

/// A question ready to run: evidence mapped to doc ids, time and speakers
/// analysed, embedded if an embedder is given.
#[derive(Clone, Debug)]
pub struct PreparedQuestion {
    /// The question text.
    pub text: String,
    /// Its category.
    pub category: Category,
    /// Evidence memories.
    pub evidence: Vec<DocId>,
    /// What it asks about time.
    pub time: QueryTime,
    /// Speakers it names (1 = `speaker_a`, 2 = `speaker_b`).
    pub speakers: Vec<u16>,
    /// Its int8 embedding and scale.
    pub vector: Option<(Vec<i8>, f32)>,
    /// Its f32 embedding.
    pub vector_f32: Option<Vec<f32>>,
    /// Time spent analysing it (tokens, time words, speakers).
    pub analyse_time: Duration,
    /// Time spent embedding it.
    pub embed_time: Duration,
}

/// Questions of one conversation prepared for ranking, with what was left out.
pub struct PreparedQuestions {
    /// Scored questions (categories 1–4 with at least one known evidence turn).
    pub questions: Vec<PreparedQuestion>,
    /// Questions of categories 1–4 skipped for lack of known evidence.
    pub skipped: usize,
    /// Evidence entries that are malformed or name no turn of the conversation.
    pub dropped_evidence: usize,
}

/// Prepares the scored questions of `conv` against its store.
pub fn prepare_questions(
    conv: &Conversation,
    store: &ConversationStore,
    embedder: Option<&dyn DenseEmbedder>,
) -> Result<PreparedQuestions, LocomoError> {
    let mut out = PreparedQuestions {
        questions: Vec::new(),
        skipped: 0,
        dropped_evidence: 0,
    };
    for q in conv
        .questions
        .iter()
        .filter(|q| q.category != Category::Adversarial)
    {
        let mut evidence: Vec<DocId> = Vec::new();
        out.dropped_evidence += q.malformed_evidence;
        for e in &q.evidence {
            match store.doc_of.get(e) {
                Some(&d) if !evidence.contains(&d) => evidence.push(d),
                Some(_) => {}
                None => out.dropped_evidence += 1,
            }
        }
        if evidence.is_empty() {
            out.skipped += 1;
            continue;
        }
        let t0 = Instant::now();
        let (time, speakers) = analyse_question(&q.text, &store.speaker_words);
        let analyse_time = t0.elapsed();
        let (vector, vector_f32, embed_time) = match embedder {
            Some(e) => {
                let t0 = Instant::now();
                let v = embed_checked(e, &[q.text.as_str()])?;
                let mut qv = vec![0i8; e.dim()];
                let scale = v
                    .first()
                    .and_then(|v| int8::quantize(v, &mut qv))
                    .ok_or(LocomoError::BadEmbedding { want: 1, got: 0 })?;
                (Some((qv, scale)), v.into_iter().next(), t0.elapsed())
            }
            None => (None, None, Duration::ZERO),
        };
        out.questions.push(PreparedQuestion {
            text: q.text.clone(),
            category: q.category,
            evidence,
            time,
            speakers,
            vector,
            vector_f32,
            analyse_time,
            embed_time,
        });
    }
    Ok(out)
}

/// What a question asks about time, and which of the speakers it names
/// (by any word of their name).
pub fn analyse_question(text: &str, speaker_words: &[String; 2]) -> (QueryTime, Vec<u16>) {
    let time = QueryTime::of(text, None);
    let raw = memkern_core::search::text::Analyzer {
        drop_stopwords: false,
        stemmer: memkern_core::search::text::Stemmer::None,
    };
    let mut speakers = Vec::new();
    for token in raw.tokens(text) {
        for (i, name) in speaker_words.iter().enumerate() {
            let id = i as u16 + 1;
            if !speakers.contains(&id) && raw.tokens(name).any(|n| n == token) {
                speakers.push(id);
            }
        }
    }
    (time, speakers)
}

/// Ranks one prepared question with `method` and returns the top `k` doc
/// ids and the search time (analysis and embedding not included).
pub fn rank(
    store: &ConversationStore,
    q: &PreparedQuestion,
    method: &Method,
    k: usize,
) -> (Vec<DocId>, Duration) {
    let query = MemoryQuery {
        text: &q.text,
        vector: q.vector.as_ref().map(|(v, s)| (v.as_slice(), *s)),
        speakers: &q.speakers,
        time: q.time,
    };
    let t0 = Instant::now();
    let hits = if method.exact_f32 {
        let mut top = TopK::new(k);
        if let Some(qv) = &q.vector_f32 {
            for (i, v) in store.vectors_f32.iter().enumerate() {
                // Doc ids are the positions, far below 2^32.
                top.push(DocId(i as u32), int8::dot_f32(qv, v));
            }
        }
        top.into_sorted_vec()
    } else {
        store.index.search(&query, &method.params, k)
    };
    let elapsed = t0.elapsed();
    (hits.into_iter().map(|h| h.doc).collect(), elapsed)
}

/// Evidence recall of a ranking at each `k`.
pub fn recall_at(ranked: &[DocId], evidence: &[DocId], ks: &[usize]) -> Vec<f64> {
    ks.iter()
        .map(|&k| {
            let top = &ranked[..k.min(ranked.len())];
            let found = evidence.iter().filter(|e| top.contains(e)).count();
            found as f64 / evidence.len().max(1) as f64
        })
        .collect()
}

/// Recall of one category (or of all) at each k.
#[derive(Clone, Debug, Serialize)]
pub struct CategoryRecall {
    /// `multi_hop`, `temporal`, `open_domain`, `single_hop` or `overall`.
    pub category: String,
    /// Questions averaged.
    pub questions: usize,
    /// k → mean evidence recall@k.
    pub recall_at: BTreeMap<usize, f64>,
}

/// Results of one method.
#[derive(Clone, Debug, Serialize)]
pub struct MethodReport {
    /// The method's name.
    pub name: String,
    /// Per category, then `overall` last.
    pub recall: Vec<CategoryRecall>,
    /// Query latency: analysis + (embedding, for dense methods) + search.
    pub latency: Latency,
}

impl MethodReport {
    /// Recall@k of the `overall` row, if k was measured.
    pub fn overall(&self, k: usize) -> Option<f64> {
        self.recall
            .iter()
            .find(|c| c.category == "overall")
            .and_then(|c| c.recall_at.get(&k).copied())
    }
}

/// Ingest figures.
#[derive(Clone, Debug, Default, Serialize)]
pub struct IngestReport {
    /// Memories stored.
    pub memories: usize,
    /// Wall time of the whole ingest (resolve, encode, embed, index).
    pub seconds: f64,
    /// Memories per second.
    pub per_second: f64,
    /// Of which embedding.
    pub embed_seconds: f64,
}

/// A whole LoCoMo run.
#[derive(Clone, Debug, Serialize)]
pub struct Report {
    /// Conversation ids evaluated.
    pub conversations: Vec<String>,
    /// Questions scored (categories 1–4 with known evidence).
    pub questions: usize,
    /// Questions of categories 1–4 skipped for lack of known evidence.
    pub skipped_questions: usize,
    /// Evidence ids that name no turn.
    pub dropped_evidence: usize,
    /// The k of recall@k.
    pub ks: Vec<usize>,
    /// The embedder used, if any.
    pub embedder: Option<String>,
    /// Why dense methods were not run, if they were not.
    pub dense_unavailable: Option<String>,
    /// Ingest figures.
    pub ingest: IngestReport,
    /// One entry per method, baselines first.
    pub methods: Vec<MethodReport>,
}

/// Progress of an evaluation, for a progress bar.
#[derive(Clone, Copy, Debug)]
pub struct Progress {
    /// Units done (turns ingested + questions ranked).
    pub done: u64,
    /// Units in all.
    pub total: u64,
}

/// Per-question outcome of one method, for aggregation and tuning.
#[derive(Clone, Debug)]
pub struct Outcome {
    /// The question's category.
    pub category: Category,
    /// Recall at each k.
    pub recall: Vec<f64>,
    /// Full query latency.
    pub latency: Duration,
}

/// Averages outcomes per category and overall.
pub fn aggregate(outcomes: &[Outcome], ks: &[usize]) -> Vec<CategoryRecall> {
    let row = |name: &str, sel: &dyn Fn(&Outcome) -> bool| {
        let chosen: Vec<&Outcome> = outcomes.iter().filter(|o| sel(o)).collect();
        let n = chosen.len();
        let recall_at = ks
            .iter()
            .enumerate()
            .map(|(i, &k)| {
                let sum: f64 = chosen
                    .iter()
                    .map(|o| o.recall.get(i).copied().unwrap_or(0.0))
                    .sum();
                (k, if n == 0 { 0.0 } else { sum / n as f64 })
            })
            .collect();
        CategoryRecall {
            category: name.to_owned(),
            questions: n,
            recall_at,
        }
    };
    let mut rows: Vec<CategoryRecall> = Category::SCORED
        .iter()
        .map(|&c| row(c.name(), &|o: &Outcome| o.category == c))
        .collect();
    rows.push(row("overall", &|_| true));
    rows
}

/// Runs `methods` over prepared questions of one store.
pub fn run_methods(
    store: &ConversationStore,
    questions: &[PreparedQuestion],
    methods: &[Method],
    ks: &[usize],
    mut on_question: impl FnMut(),
) -> Vec<Vec<Outcome>> {
    let kmax = ks.iter().copied().max().unwrap_or(0);
    let mut out = vec![Vec::with_capacity(questions.len()); methods.len()];
    for q in questions {
        for (m, method) in methods.iter().enumerate() {
            if method.dense && q.vector.is_none() {
                continue;
            }
            let (ranked, search) = rank(store, q, method, kmax);
            let latency = q.analyse_time
                + search
                + if method.dense {
                    q.embed_time
                } else {
                    Duration::ZERO
                };
            out[m].push(Outcome {
                category: q.category,
                recall: recall_at(&ranked, &q.evidence, ks),
                latency,
            });
        }
        on_question();
    }
    out
}

/// Options of [`evaluate`].
#[derive(Clone, Debug)]
pub struct EvalOptions {
    /// The k of recall@k.
    pub ks: Vec<usize>,
    /// Methods to compare; dense ones are skipped without an embedder.
    pub methods: Vec<Method>,
}

/// Evaluates `methods` on `conversations`: ingest each into a fresh store,
/// rank every scored question, aggregate.
pub fn evaluate(
    conversations: &[Conversation],
    opts: &EvalOptions,
    embedder: Result<&dyn DenseEmbedder, &str>,
    mut on_progress: impl FnMut(Progress),
) -> Result<Report, LocomoError> {
    let embedder_opt = embedder.ok();
    let methods: Vec<Method> = opts
        .methods
        .iter()
        .filter(|m| !m.dense || embedder_opt.is_some())
        .cloned()
        .collect();
    let total: u64 = conversations
        .iter()
        .map(|c| (c.turn_count() + c.questions.len()) as u64)
        .sum();
    let mut done = 0u64;
    let mut outcomes: Vec<Vec<Outcome>> = vec![Vec::new(); methods.len()];
    let mut ingest = IngestReport::default();
    let mut ingest_time = Duration::ZERO;
    let mut embed_time = Duration::ZERO;
    let (mut questions, mut skipped, mut dropped) = (0, 0, 0);
    for conv in conversations {
        let t0 = Instant::now();
        let store = ingest_conversation(conv, embedder_opt, &mut done, total, &mut on_progress)?;
        ingest_time += t0.elapsed();
        embed_time += store.embed_time;
        ingest.memories += store.dia_ids.len();
        let prepared = prepare_questions(conv, &store, embedder_opt)?;
        questions += prepared.questions.len();
        skipped += prepared.skipped;
        dropped += prepared.dropped_evidence;
        done += (conv.questions.len() - prepared.questions.len()) as u64;
        let per = run_methods(&store, &prepared.questions, &methods, &opts.ks, || {
            done += 1;
            on_progress(Progress { done, total });
        });
        for (all, new) in outcomes.iter_mut().zip(per) {
            all.extend(new);
        }
    }
    ingest.seconds = ingest_time.as_secs_f64();
    ingest.embed_seconds = embed_time.as_secs_f64();
    ingest.per_second = if ingest.seconds > 0.0 {
        ingest.memories as f64 / ingest.seconds
    } else {
        0.0
    };
    let reports = methods
        .iter()
        .zip(&outcomes)
        .map(|(m, o)| MethodReport {
            name: m.name.clone(),
            recall: aggregate(o, &opts.ks),
            latency: Latency::of(&o.iter().map(|x| x.latency).collect::<Vec<_>>()),
        })
        .collect();
    Ok(Report {
        conversations: conversations.iter().map(|c| c.id.clone()).collect(),
        questions,
        skipped_questions: skipped,
        dropped_evidence: dropped,
        ks: opts.ks.clone(),
        embedder: embedder_opt.map(|e| e.name().to_owned()),
        dense_unavailable: embedder.err().map(str::to_owned),
        ingest,
        methods: reports,
    })
}

fn ingest_conversation(
    conv: &Conversation,
    embedder: Option<&dyn DenseEmbedder>,
    done: &mut u64,
    total: u64,
    on_progress: &mut impl FnMut(Progress),
) -> Result<ConversationStore, LocomoError> {
    ingest(conv, Analyzer::DEFAULT, embedder, || {
        *done += 1;
        on_progress(Progress { done: *done, total });
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn session_times() {
        let t = parse_session_time("1:56 pm on 8 May, 2023").expect("valid in this test");
        let day = Day::from_civil(2023, 5, 8).expect("valid in this test");
        assert_eq!(t.0 - day.start().0, (13 * 60 + 56) * 60_000);
        let t = parse_session_time("12:05 am on 1 January, 2024").expect("valid in this test");
        assert_eq!(
            Day::of(t),
            Day::from_civil(2024, 1, 1).expect("valid in this test")
        );
        assert_eq!(t.0 % Timestamp::DAY, 5 * 60_000);
        assert!(parse_session_time("13:00 pm on 1 May, 2023").is_none());
        assert!(parse_session_time("1:00 pm on 31 April, 2023").is_none());
        assert!(parse_session_time("yesterday").is_none());
    }

    #[test]
    fn evidence_quirks() {
        let ids: Vec<Option<String>> = ["D8:6; D9:17", "D:11:26", "D", "D3:x", "D1:3"]
            .iter()
            .flat_map(|e| normalise_evidence(e))
            .collect();
        let some = |s: &str| Some(s.to_owned());
        assert_eq!(
            ids,
            [
                some("D8:6"),
                some("D9:17"),
                some("D11:26"),
                None,
                None,
                some("D1:3")
            ]
        );
    }

    #[test]
    fn recall_counts_evidence_in_the_top_k() {
        let ranked = [DocId(3), DocId(1), DocId(7)];
        let ev = [DocId(1), DocId(9)];
        assert_eq!(recall_at(&ranked, &ev, &[1, 2, 10]), [0.0, 0.5, 0.5]);
    }

    #[test]
    fn speakers_are_found_by_name() {
        let names = ["caroline".to_owned(), "melanie".to_owned()];
        let (t, s) = analyse_question("When did Caroline's friend meet Melanie?", &names);
        assert!(t.asks_time);
        assert_eq!(s, [1, 2]);
        assert!(analyse_question("What is it?", &names).1.is_empty());
    }
}
