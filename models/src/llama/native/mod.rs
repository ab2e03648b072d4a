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

/// Defines a function whose body is compiled twice: for the baseline CPU
/// and, on x86-64, with AVX2 + FMA + F16C + SSE4.1 enabled, the latter
/// chosen at run time when the CPU has them.
///
/// Exists because the bodies use `f32::mul_add` and round-to-nearest,
/// which the baseline x86-64 target can only reach through `fmaf` /
/// `rintf` library calls (a profile showed them at ~10 % of prefill); with
/// the features on they are single instructions. Both versions perform
/// the same IEEE operations, so the bits do not depend on which one runs.
macro_rules! fast_fn {
    ($(#[$m:meta])* $vis:vis fn $name:ident($($arg:ident: $ty:ty),* $(,)?) $(-> $ret:ty)? $body:block) => {
        $(#[$m])*
        $vis fn $name($($arg: $ty),*) $(-> $ret)? {
            #[inline(always)]
            fn body($($arg: $ty),*) $(-> $ret)? $body
            #[cfg(target_arch = "x86_64")]
            {
                #[target_feature(enable = "avx2,fma,f16c,sse4.1")]
                fn fast($($arg: $ty),*) $(-> $ret)? {
                    body($($arg),*)
                }
                if $crate::llama::native::x86_fast() {
                    // SAFETY: x86_fast() checked the CPU has every feature
                    // `fast` is compiled for.
                    return unsafe { fast($($arg),*) };
                }
            }
            body($($arg),*)
        }
    };
}

/// Whether this x86-64 CPU has AVX2, FMA, F16C and SSE4.1 (checked once;
/// `MEMKERN_PORTABLE_KERNELS` forces the portable code).
#[cfg(target_arch = "x86_64")]
pub(crate) fn x86_fast() -> bool {
    use std::sync::OnceLock;
    static OK: OnceLock<bool> = OnceLock::new();
    *OK.get_or_init(|| {
        std::env::var_os("MEMKERN_PORTABLE_KERNELS").is_none()
            && std::is_x86_feature_detected!("avx2")
            && std::is_x86_feature_detected!("fma")
            && std::is_x86_feature_detected!("f16c")
            && std::is_x86_feature_detected!("sse4.1")
    })
}

mod act;
mod dot;
mod kquant;
mod matrix;
mod ops;
mod pool;

pub use act::Q8Rows;
pub use kquant::Q8KRows;
pub use matrix::{Input, InputFormat, QMatrix};
pub use ops::{
    AttnShape, FA_TILE_KV, FA_TILE_Q, GgmlIsa, attention, expf_ggml, expf_ggml_avx512, geglu,
    rms_norm, rope_halves, rope_pairs, round_f16, swiglu,
};
pub use pool::Threads;

/// Values per ggml block.
const BLOCK: usize = 32;
