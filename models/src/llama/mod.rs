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
//! Numerics ([`Numerics`]): by default the forward pass rounds where
//! llama.cpp's CPU path rounds — matmul inputs to 8-bit blocks (Q8_1 for
//! the Q4_1 projections, Q8_0 for the Q8_0 LM head), keys, values, queries
//! and attention probabilities to f16. [`Numerics::F32`] computes
//! everything in f32 instead.
//!
//! Two paths compute the default numerics:
//! - on the CPU, [`native`] (kernels) and `host.rs` (the forward pass on
//!   host rows) do what ggml's CPU backend does, operation for operation,
//!   over the file's quantised blocks: the logits equal llama.cpp's to the
//!   bit, on any CPU (`models/README.md` shows how that was verified);
//! - elsewhere (wgpu, autodiff for LoRA training, or
//!   `native_kernels = false`) burn's dense f32 matmuls over the
//!   dequantised weights (Q4_1 as `d·q` plus per-block minimums). 8-bit
//!   activation rounding makes that arithmetic chaotic, so it reproduces
//!   llama.cpp's tokens only up to near-ties.

mod backend;
mod cache;
mod config;
mod error;
mod host;
mod loader;
mod model;
pub mod native;
mod quant;
mod rope;

pub use backend::Backend;
pub use cache::KvCache;
pub use config::{LlamaConfig, SlidingWindow};
pub use error::LlmError;
pub use loader::{MAX_POSITIONS, llama_config, load_llama};
pub use model::{Activation, Attention, Block, Llama, Logits, Mlp};
pub use quant::{Numerics, QInput, QLinear, quantize_q8, round_f16};
pub use rope::Rope;
