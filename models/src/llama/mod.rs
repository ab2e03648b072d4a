//! A Llama-architecture decoder on burn 0.22 (SmolLM2-135M-Instruct and
//! relatives), with the backend chosen at run time.
//!
//! - [`LlamaConfig`]: hyper-parameters from GGUF metadata, validated once.
//! - [`Llama`]: the model — token embedding, blocks of RMSNorm →
//!   grouped-query attention with RoPE → RMSNorm → SwiGLU, final RMSNorm,
//!   LM head (tied to the embedding when the file has no `output.weight`).
//!   `Llama::forward(tokens, cache, logits)` runs incremental decoding over
//!   a [`KvCache`].
//! - [`load_llama`]: the weights loader (GGUF names, shapes, Q4_1/Q8_0 →
//!   f32), kept apart from the model definition as in burn's own models.
//! - [`Backend`]: `cpu` (burn's `flex`; `burn-ndarray` is deprecated in
//!   burn 0.22) or `wgpu` (Vulkan/Metal/DX12; Mesa lavapipe in CI).
//!
//! Numerics: weights are dequantised to f32 at load and every matmul runs
//! in f32, while llama.cpp multiplies Q4_1 weights by activations
//! quantised to 8 bits; logits differ slightly (≈ 0.1 typical), which is
//! why the llama.cpp agreement test tolerates divergence only at near-ties.

mod backend;
mod cache;
mod config;
mod error;
mod loader;
mod model;
mod rope;

pub use backend::Backend;
pub use cache::KvCache;
pub use config::LlamaConfig;
pub use error::LlmError;
pub use loader::{llama_config, load_llama};
pub use model::{Attention, Block, Llama, Logits, Mlp};
pub use rope::Rope;
