//! llama.cpp-compatible arithmetic on burn tensors: 8-bit activation
//! blocks, Q4_1 weights split into scale and minimum parts, and f16
//! rounding where ggml stores f16.
//!
//! llama.cpp never multiplies a Q4_1 weight by an f32 activation: it first
//! quantises the activation row to Q8_1 blocks (32 values, int8 with an f16
//! scale `d = max|x|/127` and an f16 block sum `s = d·Σq`), then computes
//! per block `d_w·d_x·Σ q_w q_x + m_w·s`. Those roundings are not small
//! noise that averages out: they are part of what the model computes, and
//! a different rounding here and there moves logits by ±0.3 over 30 layers.
//! Reproducing them exactly (integer products are exact in f32) is what
//! makes our greedy tokens agree with llama.cpp's rather than merely being
//! close.

use std::cell::OnceCell;
use std::sync::Arc;

use burn::module::{Module, Param};
use burn::tensor::{FloatDType, Tensor};

use super::native::QMatrix;

/// Values per ggml block.
pub const BLOCK: usize = 32;

/// How the forward pass rounds intermediate values.
///
/// Exists because two reasonable answers exist: llama.cpp's arithmetic
/// (what the Q4_1 file is validated against) and plain f32 (smooth: tiny
/// input changes give tiny output changes).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Numerics {
    /// llama.cpp's CPU arithmetic: matmul inputs rounded to Q8 blocks
    /// (Q8_1 with f16 block sums for Q4_1 weights, Q8_0 for the Q8_0 LM
    /// head), keys, values and queries rounded to f16 (its f16 KV cache),
    /// attention probabilities rounded to f16 before `PV`. The default:
    /// greedy tokens track llama.cpp's closely (see `models/README.md`).
    #[default]
    Ggml,
    /// Everything in f32 with the exact dequantised weights.
    F32,
}

impl Numerics {
    /// The matmul input as [`QLinear::forward_quantized`] takes it: Q8
    /// blocks and their f16 sums (`Ggml`), or the values and their exact
    /// block sums (`F32`).
    pub fn quantize(self, x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
        match self {
            Numerics::Ggml => quantize_q8(x),
            Numerics::F32 => {
                let [n, k] = x.dims();
                let s = x
                    .clone()
                    .reshape([n, k / BLOCK, BLOCK])
                    .sum_dim(2)
                    .reshape([n, k / BLOCK]);
                (x, s)
            }
        }
    }

    /// Rounds to f16 (`Ggml`) or leaves `x` as it is (`F32`).
    pub fn round_f16<const D: usize>(self, x: Tensor<D>) -> Tensor<D> {
        match self {
            Numerics::Ggml => round_f16(x),
            Numerics::F32 => x,
        }
    }
}

/// Rounds every value to the nearest IEEE half (as ggml stores it) and
/// back to f32.
pub fn round_f16<const D: usize>(x: Tensor<D>) -> Tensor<D> {
    x.cast(FloatDType::F16).cast(FloatDType::F32)
}

/// Quantises `x` (`[n, k]`, `k` a multiple of 32) to ggml Q8 activation
/// blocks and returns `(q·d, s)`: the values as the int8 blocks represent
/// them (`[n, k]`) and the per-block f16 sums `d·Σq` (`[n, k/32]`) that
/// Q4_1 dot products use for the minimum term.
///
/// As ggml's AVX code: `id = 127 / max|x|`, `q = round_half_even(x·id)`,
/// scale stored as f16.
pub fn quantize_q8(x: Tensor<2>) -> (Tensor<2>, Tensor<2>) {
    let [n, k] = x.dims();
    let blocks = k / BLOCK;
    let b = x.reshape([n, blocks, BLOCK]);
    let amax = b.clone().abs().max_dim(2);
    // All-zero blocks: any finite id gives q = 0, as ggml's id = 0 does.
    let id = amax.clone().clamp_min(1e-30).recip().mul_scalar(127.0);
    let d = amax.div_scalar(127.0);
    let q = (b * id).round();
    let s = round_f16(d.clone() * q.clone().sum_dim(2)).reshape([n, blocks]);
    let xq = (q * round_f16(d)).reshape([n, k]);
    (xq, s)
}

/// A projection's input on the dense path, rounded at most once.
///
/// Exists because q/k/v (and gate/up) share one input: its Q8 tensors are
/// made once for all of them, on first use.
pub struct QInput {
    x: Tensor<2>,
    numerics: Numerics,
    dense: OnceCell<(Tensor<2>, Tensor<2>)>,
}

impl QInput {
    /// `x` (`[n, in]`) to be rounded as `numerics` says.
    pub fn new(x: Tensor<2>, numerics: Numerics) -> Self {
        Self {
            x,
            numerics,
            dense: OnceCell::new(),
        }
    }

    /// The rounded input ([`Numerics::quantize`]).
    fn dense(&self) -> &(Tensor<2>, Tensor<2>) {
        self.dense
            .get_or_init(|| self.numerics.quantize(self.x.clone()))
    }
}

/// A linear layer over a ggml-quantised weight, computed the way
/// llama.cpp does: `y = Σ_blocks (d_w q_w)·(d_x q_x) + m_w·s_x`.
///
/// Exists because burn's quantisation cannot represent Q4_1 (`q·d + m`).
/// Two copies of the weight serve two paths:
/// - dense (any burn device, autodiff, LoRA merges): the scaled part `d·q`
///   (`[in, out]`, exact in f32) plus, for Q4_1, the per-block minimums
///   `m` (`[in/32, out]`), with the input rounded to Q8 blocks first;
/// - native (the CPU): the file's own blocks in a [`QMatrix`], which the
///   host forward pass (`host.rs`) multiplies with [`super::native`]'s
///   ggml-exact kernels, summing in llama.cpp's order to the bit and
///   reading 6× fewer bytes.
#[derive(Module, Debug)]
pub struct QLinear {
    /// `d·q` of every weight, `[in, out]`.
    pub weight: Param<Tensor<2>>,
    /// Per-block minimums of a Q4_1 weight, `[in/32, out]`.
    pub mins: Option<Param<Tensor<2>>>,
    /// The weight's ggml blocks for the native CPU path; `None` on other
    /// devices and after anything changed `weight` (a LoRA merge).
    #[module(skip)]
    pub native: Option<Arc<QMatrix>>,
}

impl QLinear {
    /// `x` (`[n, in]`) times the weight, `[n, out]`, with the input
    /// rounded as `numerics` says (dense path).
    pub fn forward(&self, x: Tensor<2>, numerics: Numerics) -> Tensor<2> {
        self.forward_quantized(&numerics.quantize(x))
    }

    /// `input` times the weight, `[n, out]` (dense path).
    pub fn apply(&self, input: &QInput) -> Tensor<2> {
        self.forward_quantized(input.dense())
    }

    /// Like [`Self::forward`] for an input already prepared by
    /// [`Numerics::quantize`] (the dense path).
    pub fn forward_quantized(&self, (xq, s): &(Tensor<2>, Tensor<2>)) -> Tensor<2> {
        let y = xq.clone().matmul(self.weight.val());
        match &self.mins {
            Some(m) => y + s.clone().matmul(m.val()),
            None => y,
        }
    }
}

#[cfg(test)]
mod tests {
    use burn::tensor::{Device, Tensor, TensorData};

    use super::*;

    fn values() -> Vec<f32> {
        // Halfway points between f16 neighbours, subnormals, large and
        // ordinary values: where rounding modes differ.
        let mut v = Vec::new();
        let mut x = 0x3f80_1000u32; // 1.0 + half an f16 ulp
        for _ in 0..64 {
            v.push(f32::from_bits(x));
            v.push(-f32::from_bits(x));
            x = x.wrapping_add(0x0000_2000).wrapping_mul(3) % 0x4780_0000;
        }
        v.extend([0.0, 1e-7, 6.1e-5, 65504.0, 0.333_333_34, 2.5, 3.5, -2.5]);
        v
    }

    #[test]
    fn round_f16_is_round_to_nearest_even() {
        let device = Device::default();
        let v = values();
        let n = v.len();
        let t = Tensor::<1>::from_data(TensorData::new(v.clone(), [n]), &device);
        let got = round_f16(t).try_into_vec_as::<f32>().unwrap();
        for (x, g) in v.iter().zip(&got) {
            let want = half::f16::from_f32(*x).to_f32();
            assert_eq!(
                g.to_bits(),
                want.to_bits(),
                "{x:e}: got {g:e}, want {want:e}"
            );
        }
    }

    #[test]
    fn quantize_q8_matches_ggml() {
        let device = Device::default();
        let v: Vec<f32> = (0..64)
            .map(|i| ((i * 37 % 23) as f32 - 11.0) * 0.173)
            .collect();
        let t = Tensor::<2>::from_data(TensorData::new(v.clone(), [2, 32]), &device);
        let (xq, s) = quantize_q8(t);
        let xq = xq.try_into_vec_as::<f32>().unwrap();
        let s = s.try_into_vec_as::<f32>().unwrap();
        for (b, block) in v.chunks(32).enumerate() {
            let amax = block.iter().fold(0f32, |m, x| m.max(x.abs()));
            let d = amax / 127.0;
            let id = 127.0 / amax;
            let dh = half::f16::from_f32(d).to_f32();
            let mut sum = 0f32;
            for (i, x) in block.iter().enumerate() {
                let q = (x * id).round_ties_even();
                sum += q;
                assert_eq!(xq[b * 32 + i], q * dh, "block {b} value {i}");
            }
            assert_eq!(s[b], half::f16::from_f32(d * sum).to_f32(), "block {b} sum");
        }
    }
}
