//! llama.cpp's CPU arithmetic, reproduced to the bit: the quantised
//! matmuls (Q4_1 weights against Q8_1 activations, Q8_0 against Q8_0),
//! RMSNorm, SwiGLU and attention over the f16 KV cache.
//!
//! Why it exists: llama.cpp never multiplies a quantised weight by an f32
//! value. It rounds the activation row to 8-bit blocks, sums each block's
//! products in integers and accumulates the scaled block sums in eight f32
//! lanes with fused multiply-adds. A dense f32 matmul over the dequantised
//! weights rounds differently in the last bit, and since the next layer
//! rounds its input to 8 bits again, last-bit differences flip quantised
//! values and grow into logit differences of ±0.3 (enough to change
//! greedy tokens at near-ties). Worse, burn's f32 kernels pick their
//! accumulation order from the CPU's SIMD features, so the differences
//! changed from machine to machine. This module computes what ggml
//! computes ([`dot`] explains the order), identically on every CPU, and
//! reads the 4-bit blocks directly: 6× fewer bytes than the f32 weights.
//!
//! Rows of the output are spread over rayon's pool; each output value is
//! one sequential dot product, so the thread count never changes a bit.

mod act;
mod dot;
mod matrix;
mod ops;

pub use act::Q8Rows;
pub use matrix::QMatrix;
pub use ops::{
    AttnShape, GgmlIsa, attention, expf_ggml, expf_ggml_avx512, rms_norm, rope_pairs, round_f16,
    swiglu,
};

/// Values per ggml block.
const BLOCK: usize = 32;
