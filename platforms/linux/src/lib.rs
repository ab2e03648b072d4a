//! memkern on Linux: the pieces of the `memkern` command that benches and
//! tests call directly.
//!
//! It exists so that an evaluation is a library call, not a subprocess: the
//! CLI (`src/main.rs`, `src/cli.rs`, `src/commands/`) is a thin shell over
//! this crate.
//!
//! - [`ann`]: [`ann::DenseIndex`], exact int8 search for small stores and
//!   an HNSW graph (instant-distance) above a measured size.
//! - [`embed`]: the [`embed::DenseEmbedder`] seam that sentence embedders
//!   (MiniLM on tract, from `memkern-models`) plug into.
//! - [`eval`]: benchmarks of retrieval quality and speed — LoCoMo evidence
//!   recall ([`eval::locomo`]).
//! - [`runtime`]: the memory OS — users, cube namespaces, memories with
//!   history, hybrid search, governance, audit ([`runtime::Runtime`]).
//! - [`vault`]: durable state on disk — cubes in redb, snapshot and
//!   adapter blobs in a content-addressed directory ([`vault::Vault`]).
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::panic)]

pub mod ann;
pub mod embed;
pub mod eval;
pub mod runtime;
pub mod server;
pub mod vault;
