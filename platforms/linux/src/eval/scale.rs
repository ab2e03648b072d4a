//! Search speed at scale: fill an index with synthetic memories (10k, 100k)
//! and time queries on one thread.
//!
//! It exists to check the latency budget (p95 ≤ 15 ms at 100k memories,
//! query embedding included) and to measure where exact int8 search stops
//! being fast enough. Memory texts come from a seeded generator (names,
//! verbs, objects, places, time words and a Zipf-distributed tail of rare
//! words, like dialogue); memory vectors are seeded random unit vectors
//! (search cost does not depend on their content); query vectors come from
//! the real embedder when there is one, so its time is measured.

use std::time::{Duration, Instant};

use memkern_core::search::hybrid::{HybridParams, MemoryIndex, MemoryQuery, MemoryRecord};
use memkern_core::search::temporal::{self, Day, QueryTime};
use memkern_core::search::text::Analyzer;
use memkern_core::search::{DocId, int8};
use serde::Serialize;

use super::locomo::LocomoError;
use super::stats::Latency;
use crate::embed::DenseEmbedder;

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
}

/// A whole scale run.
#[derive(Clone, Debug, Serialize)]
pub struct ScaleReport {
    /// The embedder timed, if any.
    pub embedder: Option<String>,
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
    let v: Vec<f32> = (0..dim).map(|_| rng.unit_f32()).collect();
    let n = int8::dot_f32(&v, &v).sqrt().max(1e-6);
    v.into_iter().map(|x| x / n).collect()
}

/// Fills stores of each size and times queries on the calling thread.
pub fn run(
    opts: &ScaleOptions,
    embedder: Option<&dyn DenseEmbedder>,
    mut on_progress: impl FnMut(&str),
) -> Result<ScaleReport, LocomoError> {
    let dim = embedder.map_or(opts.dim, |e| e.dim());
    let mut rows = Vec::new();
    let said = Day::from_civil(2023, 5, 8).unwrap_or_default();
    for &n in &opts.sizes {
        on_progress(&format!("filling {n} memories"));
        let mut rng = Rng(opts.seed | 1);
        let t0 = Instant::now();
        let mut index = MemoryIndex::new(Analyzer::DEFAULT, Some(dim));
        let mut q = vec![0i8; dim];
        let mut f32_vectors: Vec<f32> = Vec::new();
        for i in 0..n {
            let text = memory_text(&mut rng);
            let day = said.plus(-(rng.below(700) as i32));
            let mut dates = Vec::new();
            temporal::resolve_relative(&text, day, |m| dates.push(m.span));
            let v = random_unit(&mut rng, dim);
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
        on_progress(&format!("querying {n} memories"));
        let (mut kw, mut dn, mut emb, mut total) = (Vec::new(), Vec::new(), Vec::new(), Vec::new());
        let mut dn32 = Vec::new();
        let signals = HybridParams::KEYWORD_SIGNALS;
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
            let hybrid = index.search(&query, &HybridParams::DEFAULT, 10);
            let total_time = t_all.elapsed().saturating_sub(excluded);
            std::hint::black_box(hybrid);
            let t = Instant::now();
            std::hint::black_box(index.search(&query, &signals, 10));
            kw.push(t.elapsed());
            let t = Instant::now();
            if let Some(d) = index.dense() {
                std::hint::black_box(d.search(&qi, qs, 10));
            }
            dn.push(t.elapsed());
            let t = Instant::now();
            let mut top = memkern_core::search::TopK::new(10);
            for (i, v) in f32_vectors.chunks_exact(dim.max(1)).enumerate() {
                top.push(DocId(i as u32), int8::dot_f32(&qv, v));
            }
            std::hint::black_box(top.into_sorted_vec());
            dn32.push(t.elapsed());
            emb.push(embed_time);
            total.push(total_time);
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
        });
    }
    Ok(ScaleReport {
        embedder: embedder.map(|e| e.name().to_owned()),
        rows,
    })
}
