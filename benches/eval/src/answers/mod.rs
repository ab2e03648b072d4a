//! The LoCoMo answer benchmark: every question through the path a user's
//! `chat` takes, scored as the mem0 harness scores answers, beside the
//! baselines that say where answers are lost.
//!
//! It exists because recall says whether memkern *finds* the evidence,
//! not whether the assistant *answers*: the no-memory row is the floor,
//! the oracle row (the gold evidence turns given as the memories) the
//! ceiling of this model with perfect retrieval, full context what the
//! window alone buys, and memkern warm must equal memkern text (KV blocks
//! restored instead of prefilled, greedy decoding).
//!
//! - [`metrics`]: F1, BLEU-1, exact match, contains (mem0's arithmetic).
//! - [`ingest`]: one conversation as one user's memories, as `memkern demo`
//!   stores it.
//! - [`answer`]: one question through the chosen baselines.
//! - [`summarise`]: per baseline and category, adversarial declines,
//!   prompt tokens, latency percentiles.

pub mod metrics;

use std::collections::{BTreeMap, HashMap};
use std::time::{Duration, Instant};

use memkern_core::governance::Principal;
use memkern_core::ids::NamespaceId;
use memkern_runtime::{
    AddAction, AddRequest, Assistant, ChatRequest, ChatResponse, MemoryId, Runtime, RuntimeError,
};
use serde::Serialize;

use crate::locomo::{Category, Conversation, Question, Session, Turn};
use crate::stats::percentile;

/// How an answer is produced.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Baseline {
    /// The question alone: what the model says without memory.
    NoMemory,
    /// The most recent turns that fit the window, as the system text.
    FullContext,
    /// The question's gold evidence turns as the memories (pinned).
    Oracle,
    /// memkern's retrieval and scheduler, memories prefilled as text.
    Memkern,
    /// The same with KV blocks: asked twice, the second answer restores
    /// the block the first one saved.
    MemkernWarm,
}

impl Baseline {
    /// Every baseline, in report order.
    pub const ALL: [Baseline; 5] = [
        Baseline::NoMemory,
        Baseline::FullContext,
        Baseline::Oracle,
        Baseline::Memkern,
        Baseline::MemkernWarm,
    ];

    /// The snake_case name used in reports and on the command line.
    pub fn name(self) -> &'static str {
        match self {
            Baseline::NoMemory => "no_memory",
            Baseline::FullContext => "full_context",
            Baseline::Oracle => "oracle",
            Baseline::Memkern => "memkern",
            Baseline::MemkernWarm => "memkern_warm",
        }
    }
}

/// What to run.
#[derive(Clone, Debug)]
pub struct AnswerOptions {
    /// The baselines, in any order (reported in [`Baseline::ALL`] order).
    pub baselines: Vec<Baseline>,
    /// Most questions per conversation, in file order (None: all).
    pub limit: Option<usize>,
    /// Most tokens per answer.
    pub max_tokens: usize,
    /// Most tokens of conversation in the full-context baseline (None:
    /// as many as the model's window leaves).
    pub full_context_tokens: Option<usize>,
}

impl Default for AnswerOptions {
    fn default() -> Self {
        AnswerOptions {
            baselines: Baseline::ALL.to_vec(),
            limit: None,
            max_tokens: 48,
            full_context_tokens: None,
        }
    }
}

/// One baseline's answer to one question, with its scores.
#[derive(Clone, Debug, Serialize)]
pub struct Answer {
    /// How it was produced.
    pub baseline: Baseline,
    /// The answer text.
    pub text: String,
    /// Token F1 against the gold answer (mem0's).
    pub f1: f64,
    /// BLEU-1 against the gold answer (mem0's).
    pub bleu1: f64,
    /// Equal to the gold answer (mem0's exact match).
    pub exact: bool,
    /// Contains the gold answer's tokens in order.
    pub contains: bool,
    /// Says it does not know (see [`declines`]).
    pub declined: bool,
    /// Repeats a sentence or loops on a phrase (see [`repeats`]).
    pub repeats: bool,
    /// Tokens in the prompt.
    pub prompt_tokens: usize,
    /// Of them, restored from KV blocks.
    pub restored_tokens: usize,
    /// Memories in the prompt.
    pub memories: usize,
    /// Time to the first answer token, ms.
    pub ttft_ms: f64,
    /// Time to the whole answer, ms.
    pub total_ms: f64,
}

/// One question and its answers.
#[derive(Clone, Debug, Serialize)]
pub struct QuestionResult {
    /// The conversation's id.
    pub conversation: String,
    /// The question.
    pub question: String,
    /// Its category.
    pub category: Category,
    /// The gold answer (category 5: the trap answer the model should not
    /// give).
    pub gold: String,
    /// One answer per baseline run.
    pub answers: Vec<Answer>,
}

/// A conversation stored as one user's memories.
pub struct Ingested {
    /// The user.
    pub who: Principal,
    /// Their `default` cube, which holds the turns.
    pub namespace: NamespaceId,
    /// Each turn's memory (a repeated turn maps to the memory it merged
    /// into).
    pub turns: HashMap<String, MemoryId>,
    /// Turns that merged into an earlier memory.
    pub merged: usize,
    /// Turns that became a new version of an earlier memory.
    pub updated: usize,
    /// The conversation as dated lines, oldest first (full context).
    pub transcript: Vec<String>,
    /// Each transcript line's tokens (with its newline), counted once on
    /// first use.
    transcript_tokens: std::sync::OnceLock<Vec<usize>>,
}

/// A turn as memkern stores it: who said it, what, and the photo they
/// shared.
pub fn turn_text(turn: &Turn) -> String {
    let mut text = format!("{}: {}", turn.speaker, turn.text);
    if let Some(c) = &turn.caption {
        text.push_str(&format!(" [shares a photo: {c}]"));
    }
    text
}

/// The date a session is shown with ("8 May 2023").
pub fn session_date(s: &Session) -> String {
    chrono::DateTime::from_timestamp_millis(s.time.0).map_or_else(
        || s.time.0.to_string(),
        |d| d.format("%-d %B %Y").to_string(),
    )
}

/// Stores `conv` as the memories of a new user named after its first
/// speaker and its id (`caroline-26`), one memory per turn at its
/// session's time, calling `on_turn` after each.
pub fn ingest(
    rt: &Runtime,
    conv: &Conversation,
    mut on_turn: impl FnMut(),
) -> Result<Ingested, RuntimeError> {
    let name: String = format!("{}-{}", conv.speakers[0], conv.id)
        .chars()
        .filter(|c| c.is_ascii_alphanumeric() || *c == '-')
        .collect::<String>()
        .to_lowercase();
    let (info, _key) = rt.create_user(&rt.admin(), &name)?;
    let namespace = rt.namespace_named(info.id, "default")?.id;
    let who = Principal::user(info.id);
    let mut out = Ingested {
        who,
        namespace,
        turns: HashMap::new(),
        merged: 0,
        updated: 0,
        transcript: Vec::new(),
        transcript_tokens: std::sync::OnceLock::new(),
    };
    for s in &conv.sessions {
        let date = session_date(s);
        for turn in &s.turns {
            let text = turn_text(turn);
            out.transcript.push(format!("[{date}] {text}"));
            let added = rt.add(
                &who,
                &AddRequest {
                    namespace,
                    text,
                    time: Some(s.time),
                    ..AddRequest::default()
                },
            )?;
            out.merged += usize::from(added.action == AddAction::Merged);
            out.updated += usize::from(added.action == AddAction::Updated);
            out.turns.insert(turn.dia_id.clone(), added.id);
            on_turn();
        }
    }
    Ok(out)
}

/// Phrases that mark an answer as declining to answer (category 5 asks
/// about what was never said).
const DECLINES: &[&str] = &[
    "not mentioned",
    "no mention",
    "no information",
    "not specified",
    "not provided",
    "not stated",
    "don't know",
    "do not know",
    "don't have",
    "do not have",
    "not sure",
    "cannot answer",
    "can't answer",
    "cannot determine",
    "can't determine",
    "unknown",
    "doesn't say",
    "does not say",
    "no record",
];

/// Whether an answer declines to answer.
pub fn declines(answer: &str) -> bool {
    let a = answer.to_lowercase().replace('’', "'");
    DECLINES.iter().any(|d| a.contains(d))
}

/// Whether an answer repeats itself: the same sentence twice, or the same
/// four words three times (a loop without punctuation).
pub fn repeats(answer: &str) -> bool {
    let lower = answer.to_lowercase();
    let mut seen = std::collections::HashSet::new();
    let sentence_again = lower
        .split(['.', '!', '?', '\n'])
        .map(|s| s.split_whitespace().collect::<Vec<_>>().join(" "))
        .filter(|s| s.split(' ').count() >= 2)
        .any(|s| !seen.insert(s));
    let words: Vec<&str> = lower
        .split(|c: char| !c.is_alphanumeric())
        .filter(|w| !w.is_empty())
        .collect();
    let mut grams: HashMap<&[&str], usize> = HashMap::new();
    let looping = words.windows(4).any(|w| {
        let n = grams.entry(w).or_default();
        *n += 1;
        *n >= 3
    });
    sentence_again || looping
}

/// The most recent transcript lines that fit `budget` tokens, oldest
/// first.
fn fit_transcript(
    assistant: &Assistant,
    ing: &Ingested,
    budget: usize,
) -> Result<String, RuntimeError> {
    let counts = match ing.transcript_tokens.get() {
        Some(c) => c,
        None => {
            let c = ing
                .transcript
                .iter()
                .map(|l| assistant.count_tokens(l).map(|n| n + 1))
                .collect::<Result<Vec<_>, _>>()?;
            ing.transcript_tokens.get_or_init(|| c)
        }
    };
    let mut used = 0;
    let kept = counts
        .iter()
        .rev()
        .take_while(|&&n| {
            used += n;
            used <= budget
        })
        .count();
    Ok(ing.transcript[ing.transcript.len() - kept..].join("\n"))
}

/// Answers `q` of the conversation `ing` holds with each of `opts`'
/// baselines.
pub fn answer(
    assistant: &Assistant,
    ing: &Ingested,
    conversation: &str,
    q: &Question,
    opts: &AnswerOptions,
) -> Result<QuestionResult, RuntimeError> {
    let gold = q.answer.clone().unwrap_or_default();
    let mut baselines = opts.baselines.clone();
    baselines.sort_unstable();
    baselines.dedup();
    let both = baselines.contains(&Baseline::Memkern) && baselines.contains(&Baseline::MemkernWarm);
    // With both memkern rows, the first snapshot ask doubles as the text
    // answer when it restored nothing (its prompt is then prefilled
    // exactly as with snapshots off).
    let mut cold: Option<(ChatResponse, f64)> = None;
    let mut answers = Vec::with_capacity(baselines.len());
    for b in baselines {
        let mut req = ChatRequest::new(q.text.clone());
        req.remember = false;
        req.max_tokens = opts.max_tokens;
        req.snapshots = false;
        match b {
            Baseline::NoMemory => req.memories = Some(Vec::new()),
            Baseline::Oracle => {
                let mut ids: Vec<MemoryId> = Vec::new();
                for e in &q.evidence {
                    if let Some(id) = ing.turns.get(e)
                        && !ids.contains(id)
                    {
                        ids.push(*id);
                    }
                }
                ids.truncate(16);
                req.memories = Some(ids);
            }
            Baseline::FullContext => {
                req.memories = Some(Vec::new());
                let room = assistant
                    .context_len()
                    .saturating_sub(opts.max_tokens + assistant.count_tokens(&q.text)? + 96);
                let budget = opts.full_context_tokens.map_or(room, |t| t.min(room));
                req.system = Some(fit_transcript(assistant, ing, budget)?);
            }
            Baseline::Memkern => {
                req.namespaces = Some(vec![ing.namespace]);
                if both {
                    let mut first = req.clone();
                    first.snapshots = true;
                    let (r, ms) = timed(assistant, ing, &first)?;
                    let text = r.restored_tokens == 0;
                    cold = Some((r.clone(), ms));
                    if text {
                        answers.push(scored(b, r, ms, &gold));
                        continue;
                    }
                }
            }
            Baseline::MemkernWarm => {
                req.namespaces = Some(vec![ing.namespace]);
                req.snapshots = true;
                // The first ask saves the block (or finds one saved by an
                // earlier question); the second restores it.
                if cold.take().is_none() {
                    assistant.chat(&ing.who, &req)?;
                }
            }
        }
        let (r, ms) = timed(assistant, ing, &req)?;
        answers.push(scored(b, r, ms, &gold));
    }
    Ok(QuestionResult {
        conversation: conversation.to_owned(),
        question: q.text.clone(),
        category: q.category,
        gold,
        answers,
    })
}

/// One chat, timed end to end (ms).
fn timed(
    assistant: &Assistant,
    ing: &Ingested,
    req: &ChatRequest,
) -> Result<(ChatResponse, f64), RuntimeError> {
    let start = Instant::now();
    let r = assistant.chat(&ing.who, req)?;
    Ok((r, start.elapsed().as_secs_f64() * 1e3))
}

/// An answer with its scores against `gold`.
fn scored(baseline: Baseline, r: ChatResponse, total_ms: f64, gold: &str) -> Answer {
    Answer {
        baseline,
        f1: metrics::f1(&r.answer, gold),
        bleu1: metrics::bleu1(&r.answer, gold),
        exact: metrics::exact_match(&r.answer, gold),
        contains: metrics::contains(&r.answer, gold),
        declined: declines(&r.answer),
        repeats: repeats(&r.answer),
        prompt_tokens: r.prompt_tokens,
        restored_tokens: r.restored_tokens,
        memories: r.memories.len(),
        ttft_ms: r.ttft_ms,
        total_ms,
        text: r.answer,
    }
}

/// Mean scores over a set of answers.
#[derive(Clone, Debug, Default, Serialize)]
pub struct Scores {
    /// Answers scored.
    pub questions: usize,
    /// Mean token F1.
    pub f1: f64,
    /// Mean BLEU-1.
    pub bleu1: f64,
    /// Share of exact matches.
    pub exact: f64,
    /// Share that contain the gold answer.
    pub contains: f64,
}

impl Scores {
    fn of<'a>(answers: impl Iterator<Item = &'a Answer>) -> Scores {
        let mut s = Scores::default();
        for a in answers {
            s.questions += 1;
            s.f1 += a.f1;
            s.bleu1 += a.bleu1;
            s.exact += f64::from(u8::from(a.exact));
            s.contains += f64::from(u8::from(a.contains));
        }
        if s.questions > 0 {
            let n = s.questions as f64;
            s.f1 /= n;
            s.bleu1 /= n;
            s.exact /= n;
            s.contains /= n;
        }
        s
    }
}

/// One baseline over every question.
#[derive(Clone, Debug, Serialize)]
pub struct BaselineReport {
    /// The baseline.
    pub baseline: Baseline,
    /// Categories 1–4 together.
    pub overall: Scores,
    /// Per category (1–4), by name.
    pub categories: BTreeMap<&'static str, Scores>,
    /// Category 5 questions asked.
    pub adversarial: usize,
    /// Share of them the answer declined (higher is better).
    pub adversarial_declined: f64,
    /// Answers (all categories) that repeat themselves.
    pub repeats: usize,
    /// Mean prompt tokens.
    pub prompt_tokens: f64,
    /// Mean memories in the prompt.
    pub memories: f64,
    /// TTFT p50 / p95, ms.
    pub ttft_ms: [f64; 2],
    /// Whole-answer latency p50 / p95, ms.
    pub total_ms: [f64; 2],
}

/// The benchmark's result.
#[derive(Clone, Debug, Serialize)]
pub struct AnswerReport {
    /// Conversations run.
    pub conversations: Vec<String>,
    /// One row per baseline, in [`Baseline::ALL`] order.
    pub baselines: Vec<BaselineReport>,
    /// Questions whose warm answer equals the text one, of those with
    /// both (None unless both ran).
    pub warm_equal: Option<[usize; 2]>,
    /// Wall time of the whole run, seconds (ingestion included).
    pub wall_s: f64,
    /// Every question with its answers.
    pub questions: Vec<QuestionResult>,
}

/// Summarises per-question results.
pub fn summarise(
    conversations: Vec<String>,
    questions: Vec<QuestionResult>,
    wall: Duration,
) -> AnswerReport {
    let mut baselines = Vec::new();
    for b in Baseline::ALL {
        let all: Vec<(&QuestionResult, &Answer)> = questions
            .iter()
            .flat_map(|q| {
                q.answers
                    .iter()
                    .filter(move |a| a.baseline == b)
                    .map(move |a| (q, a))
            })
            .collect();
        if all.is_empty() {
            continue;
        }
        let scored = || {
            all.iter()
                .filter(|(q, _)| q.category != Category::Adversarial)
                .map(|(_, a)| *a)
        };
        let categories = Category::SCORED
            .iter()
            .map(|&c| {
                (
                    c.name(),
                    Scores::of(all.iter().filter(|(q, _)| q.category == c).map(|(_, a)| *a)),
                )
            })
            .collect();
        let adversarial: Vec<&Answer> = all
            .iter()
            .filter(|(q, _)| q.category == Category::Adversarial)
            .map(|(_, a)| *a)
            .collect();
        let ms = |f: fn(&Answer) -> f64| -> [f64; 2] {
            let d: Vec<Duration> = all
                .iter()
                .map(|(_, a)| Duration::from_secs_f64(f(a).max(0.0) / 1e3))
                .collect();
            [
                percentile(&d, 50.0).as_secs_f64() * 1e3,
                percentile(&d, 95.0).as_secs_f64() * 1e3,
            ]
        };
        let n = all.len() as f64;
        baselines.push(BaselineReport {
            baseline: b,
            overall: Scores::of(scored()),
            categories,
            adversarial: adversarial.len(),
            adversarial_declined: if adversarial.is_empty() {
                0.0
            } else {
                adversarial.iter().filter(|a| a.declined).count() as f64 / adversarial.len() as f64
            },
            repeats: all.iter().filter(|(_, a)| a.repeats).count(),
            prompt_tokens: all.iter().map(|(_, a)| a.prompt_tokens as f64).sum::<f64>() / n,
            memories: all.iter().map(|(_, a)| a.memories as f64).sum::<f64>() / n,
            ttft_ms: ms(|a| a.ttft_ms),
            total_ms: ms(|a| a.total_ms),
        });
    }
    let warm_equal = {
        let pairs: Vec<(&Answer, &Answer)> = questions
            .iter()
            .filter_map(|q| {
                let text = q.answers.iter().find(|a| a.baseline == Baseline::Memkern)?;
                let warm = q
                    .answers
                    .iter()
                    .find(|a| a.baseline == Baseline::MemkernWarm)?;
                Some((text, warm))
            })
            .collect();
        (!pairs.is_empty()).then(|| {
            [
                pairs.iter().filter(|(t, w)| t.text == w.text).count(),
                pairs.len(),
            ]
        })
    };
    AnswerReport {
        conversations,
        baselines,
        warm_equal,
        wall_s: wall.as_secs_f64(),
        questions,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn declines_and_repeats() {
        assert!(declines("That is not mentioned in the memories."));
        assert!(declines("I don’t know."));
        assert!(!declines("On 7 May 2023."));
        assert!(repeats("She went home. She went home."));
        assert!(repeats(
            "Counseling and education, counseling and education, counseling and education, counseling and"
        ));
        assert!(
            !repeats("Counseling and education, counseling and education"),
            "a phrase said twice is not yet a loop"
        );
        assert!(!repeats("She went home. Then she slept."));
        assert!(!repeats("Yes. Yes."), "one-word sentences are not loops");
    }
}
