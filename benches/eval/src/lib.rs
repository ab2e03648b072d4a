//! memkern's evaluation suite: how well and how fast the memory OS finds
//! and serves memories, measured on public data and under load.
//!
//! It exists so that every retrieval or serving change is judged by numbers
//! that carry their baselines (each report puts BM25-only and dense-only
//! beside the hybrid ranker), and so that the product crates
//! (`memkern-runtime`, `memkern-server`) carry no benchmark code. The
//! `memkern eval …` commands and `benches/` call it; nothing in the product
//! depends on it but the `memkern` binary's `eval` command.
//!
//! - [`locomo`]: evidence recall on LoCoMo conversations;
//! - [`answers`]: LoCoMo answers through `chat`, scored as mem0 scores
//!   them, beside no-memory, full-context and oracle baselines;
//! - [`scale`]: search latency and memory at 10k–100k synthetic memories,
//!   exact int8 against the HNSW index;
//! - [`load`]: a load generator for the HTTP API (throughput, latency,
//!   0 lost writes);
//! - [`stats`]: latency percentiles shared by the reports.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::panic)]

pub mod answers;
pub mod load;
pub mod locomo;
pub mod scale;
pub mod stats;
