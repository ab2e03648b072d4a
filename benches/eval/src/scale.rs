//! Search speed at scale: fill an index with synthetic memories (10k, 100k)
//! and time queries on one thread.
//!
//! It exists to check the latency budget (p95 ≤ 15 ms at 100k memories,
//! query embedding included), to measure where exact int8 search stops
//! being fast enough, and to compare the HNSW index ([`crate::ann`]) with
//! exact int8 search in the same process (exact is the recall baseline).
//!
//! Memory texts come from a seeded generator (names, verbs, objects, places,
//! time words and a Zipf-distributed tail of rare words, like dialogue).
//! Memory vectors are seeded and synthetic ([`Vectors`]): by default
//! clustered like sentence embeddings (topics of sub-topics), or uniform on
//! the sphere (the worst case for a graph index). Exact search cost does not
//! depend on them; HNSW cost and recall do, so HNSW recall is measured with
//! queries drawn from the same distribution as the memories. The real
//! embedder, when there is one, embeds the question text so that its time
//! is measured, and its vector drives the timed hybrid queries.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use memkern_core::search::hybrid::{HybridParams, MemoryIndex, MemoryQuery, MemoryRecord};
use memkern_core::search::temporal::{self, Day, QueryTime};
use memkern_core::search::text::Analyzer;
use memkern_core::search::{DocId, Hit, TopK, int8};
use serde::Serialize;

use super::locomo::LocomoError;
use super::stats::Latency;
use memkern_runtime::ann::{AnnParams, DenseIndex};
use memkern_runtime::embed::DenseEmbedder;

/// Distribution of the synthetic memory vectors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Vectors {
    /// Like sentence embeddings: [`TOPICS`] Gaussian clusters around random
    /// centres, each a mixture of [`SUBTOPICS`] tighter Gaussian clusters
    /// (cosine ≈ 0.8 between memories of one sub-topic, ≈ 0.5 within a
    /// topic, ≈ 0 across topics), topics and sub-topics equally likely.
    Clustered,
    /// Independent uniform unit vectors: no neighbourhood structure, the
    /// worst case for a graph index and unlike real embeddings.
    Uniform,
}

impl Vectors {
    /// One line saying what the vectors are, for reports.
    pub fn describe(self) -> String {
        match self {
            Vectors::Clustered => format!(
                "clustered: {TOPICS} topic clusters x {SUBTOPICS} sub-topic clusters \
                 (Gaussian, spreads {TOPIC_SPREAD}/{MEMORY_SPREAD}), unit-normalised; \
                 recall queries are fresh draws from the same mixture"
            ),
            Vectors::Uniform => "uniform random unit vectors; recall queries likewise".to_owned(),
        }
    }
}

/// Topic clusters of [`Vectors::Clustered`].
pub const TOPICS: usize = 256;
/// Sub-topic clusters per topic.
pub const SUBTOPICS: usize = 16;
/// Norm of the Gaussian offset of a sub-topic centre from its topic centre
/// (before normalising; the topic centre has norm 1).
const TOPIC_SPREAD: f32 = 0.7;
/// Norm of the Gaussian offset of a memory from its sub-topic centre.
const MEMORY_SPREAD: f32 = 0.5;

/// Options of [`run`].
#[derive(Clone, Debug)]
pub struct ScaleOptions {
    /// Store sizes to measure, in memories.
    pub sizes: Vec<usize>,
    /// Queries timed per size.
    pub queries: usize,
    /// Vector dimension when there is no embedder (MiniLM's 384).
    pub dim: usize,
    /// Generator seed.
    pub seed: u64,
    /// Distribution of the memory vectors.
    pub vectors: Vectors,
    /// Parameters of the HNSW index built at every size (its threshold is
    /// ignored: the graph is always built).
    pub ann: AnnParams,
}

/// Measurements at one store size.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleRow {
    /// Memories in the store.
    pub memories: usize,
    /// Time to fill it (generate, resolve dates, index), seconds.
    pub fill_seconds: f64,
    /// Resident set size of the process after filling, MiB.
    pub rss_mib: f64,
    /// Bytes of int8 vectors + scales held by the dense index, MiB.
    pub dense_mib: f64,
    /// Keyword postings held by the BM25 index.
    pub postings: usize,
    /// BM25 + signals search (no dense).
    pub keyword: Latency,
    /// Exact int8 dense search alone.
    pub dense: Latency,
    /// The same scan over f32 vectors (the unquantised reference).
    pub dense_f32: Latency,
    /// Query embedding alone (zero without an embedder).
    pub embed: Latency,
    /// The full hybrid query: analysis + embedding + hybrid search.
    pub hybrid_total: Latency,
    /// Exact int8 scan cost per memory, nanoseconds (dense p50 / memories).
    pub dense_ns_per_memory: f64,
    /// Time to build the HNSW graph over every memory vector, seconds (all
    /// cores).
    pub ann_build_seconds: f64,
    /// Approximate heap held by the HNSW index, MiB.
    pub ann_mib: f64,
    /// HNSW top-10 search, queries drawn from the memory distribution.
    pub ann: Latency,
    /// Exact int8 top-10 search over the same queries.
    pub exact: Latency,
    /// Share of the exact int8 top-10 that HNSW's top-10 finds, over the
    /// same queries.
    pub ann_recall_at_10: f64,
    /// The hybrid query with the HNSW dense path: analysis + embedding +
    /// bm25+signals + HNSW top-`ef_search`, fused by weighted sum.
    pub hybrid_ann_total: Latency,
}

/// A whole scale run.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    /// The embedder timed, if any.
    pub embedder: Option<String>,
    /// What the memory vectors are.
    pub vectors: String,
    /// HNSW `ef_construction`.
    pub ef_construction: usize,
    /// HNSW `ef_search`.
    pub ef_search: usize,
    /// One row per size.
    pub rows: Vec<ScaleRow>,
}

/// xorshift64*: a small, seeded, reproducible generator.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n.max(1) as u64) as usize
    }
    fn pick<'a>(&mut self, xs: &[&'a str]) -> &'a str {
        xs.get(self.below(xs.len())).copied().unwrap_or("")
    }
    /// Zipf-like rank in 0..n (rank r with probability ∝ 1/(r+1)).
    fn zipf(&mut self, n: usize) -> usize {
        let u = (self.next() >> 11) as f64 / (1u64 << 53) as f64;
        ((n as f64 + 1.0).powf(u) - 1.0).floor() as usize
    }
    fn unit_f32(&mut self) -> f32 {
        ((self.next() >> 40) as f32 / (1u32 << 24) as f32) * 2.0 - 1.0
    }
    /// A standard normal sample (Box–Muller).
    fn normal(&mut self) -> f32 {
        let u = ((self.next() >> 40) as f32 + 0.5) / (1u32 << 24) as f32;
        let v = (self.next() >> 40) as f32 / (1u32 << 24) as f32;
        (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
    }
    /// `normalise(centre + spread · g)` with `g ~ N(0, I/dim)` (so
    /// `‖spread · g‖ ≈ spread`); no centre: a uniform unit vector.
    fn gaussian_unit(&mut self, centre: Option<&[f32]>, spread: f32, dim: usize) -> Vec<f32> {
        let s = spread / (dim.max(1) as f32).sqrt();
        let mut v: Vec<f32> = (0..dim).map(|_| self.normal() * s).collect();
        if let Some(c) = centre {
            for (x, m) in v.iter_mut().zip(c) {
                *x += m;
            }
        }
        normalise(v)
    }
}

fn normalise(v: Vec<f32>) -> Vec<f32> {
    let n = int8::dot_f32(&v, &v).sqrt().max(1e-6);
    v.into_iter().map(|x| x / n).collect()
}

/// The seeded generator of memory (and recall-query) vectors.
struct VectorSource {
    kind: Vectors,
    dim: usize,
    /// `TOPICS · SUBTOPICS` sub-topic centres (clustered only).
    centres: Vec<Vec<f32>>,
}

impl VectorSource {
    fn new(kind: Vectors, dim: usize, seed: u64) -> VectorSource {
        let mut rng = Rng(seed | 1);
        let mut centres = Vec::new();
        if kind == Vectors::Clustered {
            for _ in 0..TOPICS {
                let topic = rng.gaussian_unit(None, 1.0, dim);
                for _ in 0..SUBTOPICS {
                    centres.push(rng.gaussian_unit(Some(&topic), TOPIC_SPREAD, dim));
                }
            }
        }
        VectorSource { kind, dim, centres }
    }

    fn sample(&self, rng: &mut Rng) -> Vec<f32> {
        match self.kind {
            Vectors::Clustered => {
                let c = self
                    .centres
                    .get(rng.below(self.centres.len()))
                    .map(Vec::as_slice);
                rng.gaussian_unit(c, MEMORY_SPREAD, self.dim)
            }
            Vectors::Uniform => random_unit(rng, self.dim),
        }
    }
}

const NAMES: &[&str] = &[
    "Caroline", "Melanie", "Jon", "Gina", "Audrey", "Andrew", "Tim", "John", "Maria", "Joanna",
    "Nate", "Evan", "Sam", "Dave", "Calvin", "Deborah", "Jolene", "James", "Sara", "Leo",
];
const VERBS: &[&str] = &[
    "painted", "visited", "adopted", "cooked", "bought", "started", "finished", "joined",
    "watched", "read", "played", "built", "planted", "found", "lost", "tried", "booked", "sold",
];
const OBJECTS: &[&str] = &[
    "a sunset",
    "the garden",
    "a new puppy",
    "a pottery class",
    "a marathon",
    "a guitar",
    "a road trip",
    "the museum",
    "a camping tent",
    "a yoga retreat",
    "a short story",
    "a vegan cake",
    "a board game",
    "the community center",
    "a charity run",
    "a photo album",
];
const PLACES: &[&str] = &[
    "in the park",
    "at the lake",
    "downtown",
    "at home",
    "at the beach",
    "in Paris",
    "at the shelter",
    "at work",
    "at school",
    "in the mountains",
];
const TIMES: &[&str] = &[
    "yesterday",
    "last week",
    "last Saturday",
    "two weeks ago",
    "last year",
    "this weekend",
    "",
    "",
    "",
    "",
    "",
    "",
];

/// One synthetic memory text.
fn memory_text(rng: &mut Rng) -> String {
    let rare: Vec<String> = (0..3).map(|_| format!("w{}", rng.zipf(50_000))).collect();
    format!(
        "{}: I {} {} {} {} — {} {} {}",
        rng.pick(NAMES),
        rng.pick(VERBS),
        rng.pick(OBJECTS),
        rng.pick(PLACES),
        rng.pick(TIMES),
        rare[0],
        rare[1],
        rare[2]
    )
}

/// One synthetic question.
fn question(rng: &mut Rng) -> String {
    match rng.below(3) {
        0 => format!("When did {} go {}?", rng.pick(NAMES), rng.pick(PLACES)),
        1 => format!(
            "What did {} say about {} w{}?",
            rng.pick(NAMES),
            rng.pick(OBJECTS),
            rng.zipf(50_000)
        ),
        _ => format!(
            "Who {} {} {}?",
            rng.pick(VERBS),
            rng.pick(OBJECTS),
            rng.pick(PLACES)
        ),
    }
}

/// Resident set size of this process in MiB (Linux `/proc/self/status`),
/// 0 where unavailable.
pub fn rss_mib() -> f64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with("VmRSS:"))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|kb| kb.parse::<f64>().ok())
        })
        .map_or(0.0, |kb| kb / 1024.0)
}

fn random_unit(rng: &mut Rng, dim: usize) -> Vec<f32> {
    normalise((0..dim).map(|_| rng.unit_f32()).collect())
}

/// Weighted-sum fusion of two ranked lists as [`HybridParams::DEFAULT`]
/// combines its rankers (keyword max-normalised, dense min-max-normalised),
/// over the union of the lists; the best `k`.
fn fuse(keyword: &[Hit], dense: &[Hit], p: &HybridParams, k: usize) -> Vec<Hit> {
    let mut score: HashMap<DocId, f32> = HashMap::new();
    let kmax = keyword.iter().map(|h| h.score).fold(0f32, f32::max);
    if kmax > 0.0 {
        for h in keyword {
            *score.entry(h.doc).or_default() += p.keyword_weight * h.score / kmax;
        }
    }
    let lo = dense.iter().map(|h| h.score).fold(f32::INFINITY, f32::min);
    let hi = dense
        .iter()
        .map(|h| h.score)
        .fold(f32::NEG_INFINITY, f32::max);
    for h in dense {
        let x = if hi > lo {
            (h.score - lo) / (hi - lo)
        } else {
            1.0
        };
        *score.entry(h.doc).or_default() += p.dense_weight * x;
    }
    let mut top = TopK::new(k);
    for (doc, s) in score {
        top.push(doc, s);
    }
    top.into_sorted_vec()
}

/// Fills stores of each size and times queries on the calling thread; at
/// each size also builds the HNSW index and measures it against exact int8
/// search.
pub fn run(
    opts: &ScaleOptions,
    embedder: Option<&dyn DenseEmbedder>,
    mut on_progress: impl FnMut(&str),
) -> Result<ScaleReport, LocomoError> {
    let dim = embedder.map_or(opts.dim, |e| e.dim());
    let source = VectorSource::new(opts.vectors, dim, opts.seed.rotate_left(17));
    let mut rows = Vec::new();
    let said = Day::from_civil(2023, 5, 8).unwrap_or_default();
    for &n in &opts.sizes {
        on_progress(&format!("filling {n} memories"));
        let mut rng = Rng(opts.seed | 1);
        let mut vec_rng = Rng(opts.seed.rotate_left(31) | 1);
        let t0 = Instant::now();
        let mut index = MemoryIndex::new(Analyzer::DEFAULT, Some(dim));
        let mut q = vec![0i8; dim];
        let mut f32_vectors: Vec<f32> = Vec::new();
        for i in 0..n {
            let text = memory_text(&mut rng);
            let day = said.plus(-(rng.below(700) as i32));
            let mut dates = Vec::new();
            temporal::resolve_relative(&text, day, |m| dates.push(m.span));
            let v = source.sample(&mut vec_rng);
            let scale = int8::quantize(&v, &mut q).unwrap_or(1.0);
            f32_vectors.extend_from_slice(&v);
            let doc = DocId(u32::try_from(i).unwrap_or(u32::MAX));
            let rec = MemoryRecord {
                text: &text,
                said: day,
                speaker: (rng.below(NAMES.len()) + 1) as u16,
                thread: (i / 25) as u32,
                dates: &dates,
                vector: Some((&q, scale)),
            };
            index
                .insert(doc, &rec)
                .map_err(|source| LocomoError::Index {
                    dia_id: format!("synthetic {i}"),
                    source,
                })?;
        }
        let fill_seconds = t0.elapsed().as_secs_f64();
        // The f32 copy is bench-only: keep it out of the RSS figure.
        let rss = rss_mib() - (f32_vectors.capacity() * 4) as f64 / (1024.0 * 1024.0);

        on_progress(&format!("building HNSW over {n} memories"));
        let quantised: Vec<(Vec<i8>, f32)> = f32_vectors
            .chunks_exact(dim.max(1))
            .map(|v| {
                let mut q = vec![0i8; dim];
                let s = int8::quantize(v, &mut q).unwrap_or(1.0);
                (q, s)
            })
            .collect();
        let t = Instant::now();
        let ann_params = AnnParams {
            threshold: 1,
            ..opts.ann
        };
        let ann = DenseIndex::build(
            dim,
            ann_params,
            quantised
                .iter()
                .enumerate()
                .map(|(i, (v, s))| (DocId(i as u32), v.as_slice(), *s)),
        )
        .map_err(|source| LocomoError::Index {
            dia_id: "synthetic HNSW".to_owned(),
            source,
        })?;
        let ann_build_seconds = t.elapsed().as_secs_f64();
        drop(quantised);

        on_progress(&format!("querying {n} memories"));
        let (mut kw, mut dn, mut emb, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let (mut dn32, mut ann_t, mut exact_t, mut total_ann) =
            (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut found = 0usize;
        let mut wanted = 0usize;
        let signals = HybridParams::KEYWORD_SIGNALS;
        let ef = opts.ann.ef_search.max(10);
        for _ in 0..opts.queries {
            let text = question(&mut rng);
            let t_all = Instant::now();
            let time = QueryTime::of(&text, None);
            let t_embed = Instant::now();
            let qv = match embedder {
                Some(e) => e
                    .embed(&[text.as_str()])
                    .map_err(LocomoError::Embed)?
                    .into_iter()
                    .next()
                    .ok_or(LocomoError::BadEmbedding { want: 1, got: 0 })?,
                None => random_unit(&mut rng, dim),
            };
            let vector_time = t_embed.elapsed();
            // Without an embedder the random query vector is not part of a query.
            let (embed_time, excluded) = if embedder.is_some() {
                (vector_time, Duration::ZERO)
            } else {
                (Duration::ZERO, vector_time)
            };
            let mut qi = vec![0i8; dim];
            let qs = int8::quantize(&qv, &mut qi).unwrap_or(1.0);
            let query = MemoryQuery {
                text: &text,
                vector: Some((&qi, qs)),
                speakers: &[1],
                time,
            };
            let analysis_and_embedding = t_all.elapsed().saturating_sub(excluded);
            let hybrid = index.search(&query, &HybridParams::DEFAULT, 10);
            let total_time = t_all.elapsed().saturating_sub(excluded);
            std::hint::black_box(hybrid);
            // The same query with the HNSW dense path: keyword + signals over
            // every memory, the dense side from the graph.
            let t = Instant::now();
            let keyword_hits = index.search(&query, &signals, ef);
            let dense_hits = ann.search(&qi, qs, ef);
            std::hint::black_box(fuse(&keyword_hits, &dense_hits, &HybridParams::DEFAULT, 10));
            total_ann.push(analysis_and_embedding + t.elapsed());
            let t = Instant::now();
            std::hint::black_box(index.search(&query, &signals, 10));
            kw.push(t.elapsed());
            let t = Instant::now();
            if let Some(d) = index.dense() {
                std::hint::black_box(d.search(&qi, qs, 10));
            }
            dn.push(t.elapsed());
            let t = Instant::now();
            let mut top = TopK::new(10);
            for (i, v) in f32_vectors.chunks_exact(dim.max(1)).enumerate() {
                top.push(DocId(i as u32), int8::dot_f32(&qv, v));
            }
            std::hint::black_box(top.into_sorted_vec());
            dn32.push(t.elapsed());
            emb.push(embed_time);
            total.push(total_time);

            // HNSW against exact, on a query from the memories' distribution.
            let sv = source.sample(&mut vec_rng);
            let mut si = vec![0i8; dim];
            let ss = int8::quantize(&sv, &mut si).unwrap_or(1.0);
            let t = Instant::now();
            let truth = index
                .dense()
                .map(|d| d.search(&si, ss, 10))
                .unwrap_or_default();
            exact_t.push(t.elapsed());
            let t = Instant::now();
            let got = ann.search(&si, ss, 10);
            ann_t.push(t.elapsed());
            let truth: HashSet<DocId> = truth.iter().map(|h| h.doc).collect();
            wanted += truth.len();
            found += got.iter().filter(|h| truth.contains(&h.doc)).count();
        }
        let dense = Latency::of(&dn);
        rows.push(ScaleRow {
            memories: n,
            fill_seconds,
            rss_mib: rss,
            dense_mib: (n * (dim + 8)) as f64 / (1024.0 * 1024.0),
            postings: index.keyword().posting_count(),
            keyword: Latency::of(&kw),
            dense,
            dense_f32: Latency::of(&dn32),
            embed: Latency::of(&emb),
            hybrid_total: Latency::of(&total),
            dense_ns_per_memory: if n == 0 {
                0.0
            } else {
                dense.p50_ms * 1e6 / n as f64
            },
            ann_build_seconds,
            ann_mib: ann.heap_bytes() as f64 / (1024.0 * 1024.0),
            ann: Latency::of(&ann_t),
            exact: Latency::of(&exact_t),
            ann_recall_at_10: if wanted == 0 {
                1.0
            } else {
                found as f64 / wanted as f64
            },
            hybrid_ann_total: Latency::of(&total_ann),
        });
    }
    Ok(ScaleReport {
        embedder: embedder.map(|e| e.name().to_owned()),
        vectors: opts.vectors.describe(),
        ef_construction: opts.ann.ef_construction,
        ef_search: opts.ann.ef_search,
        rows,
    })
}
