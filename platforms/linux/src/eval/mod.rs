//! Benchmarks of memkern's retrieval: quality on public data sets, and
//! speed.
//!
//! It exists so that every retrieval change is judged by numbers that carry
//! their baselines: each report puts BM25-only and dense-only beside the
//! hybrid ranker.
//!
//! - [`locomo`]: evidence recall on LoCoMo conversations;
//! - [`scale`]: search latency and memory at 10k–100k synthetic memories.

pub mod locomo;
pub mod scale;
pub mod stats;
