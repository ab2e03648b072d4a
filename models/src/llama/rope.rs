//! Rotary position embedding (RoPE) with precomputed cos/sin tables.

use std::sync::Arc;

use burn::module::Module;
use burn::tensor::{Device, Tensor, TensorData};

/// Rotary position embedding over adjacent pairs `(x[2i], x[2i+1])`
/// (Llama) or split halves `(x[i], x[i + d/2])` (Gemma, Qwen: llama.cpp's
/// `LLAMA_ROPE_TYPE_NEOX`).
///
/// Exists as its own module (rather than burn's `RotaryEncoding`) so that
/// positions are absolute and checked by the caller, and the rotation is two
/// multiplies and an add per pair instead of a small matmul. GGUF `llama`
/// q/k weights are stored permuted for exactly this adjacent-pair layout
/// (llama.cpp's `LLAMA_ROPE_TYPE_NORM`):
///
/// `θ_i = p · base^(-2i/d)`, `(x₀, x₁) ↦ (x₀ cos θ_i − x₁ sin θ_i, x₀ sin θ_i + x₁ cos θ_i)`.
#[derive(Module, Debug)]
pub struct Rope {
    /// `cos θ_i(p)`, shape `[positions, head_dim / 2]`.
    cos: Tensor<2>,
    /// `sin θ_i(p)`, shape `[positions, head_dim / 2]`.
    sin: Tensor<2>,
    /// The same tables on the host (`cos`, `sin`, row-major), for the
    /// native CPU forward pass.
    #[module(skip)]
    host: Arc<(Vec<f32>, Vec<f32>)>,
    /// Whether pairs are split halves (NEOX) rather than adjacent values.
    #[module(skip)]
    neox: bool,
}

impl Rope {
    /// Tables for positions `0..positions` of heads of `head_dim` values
    /// (even, checked by [`super::LlamaConfig::validate`]).
    pub fn new(head_dim: usize, positions: usize, theta: f32, neox: bool, device: &Device) -> Self {
        let half = head_dim / 2;
        let mut cos = Vec::with_capacity(positions * half);
        let mut sin = Vec::with_capacity(positions * half);
        // llama.cpp's `ggml_rope_cache_init`, operation for operation in
        // f32: θ starts at the position and is multiplied by
        // `base^(-2/d)` once per pair, so our rotations are bit-identical.
        let theta_scale = theta.powf(-2.0 / head_dim as f32);
        for p in 0..positions {
            let mut t = p as f32;
            for _ in 0..half {
                cos.push(t.cos());
                sin.push(t.sin());
                t *= theta_scale;
            }
        }
        Self {
            cos: Tensor::from_data(TensorData::new(cos.clone(), [positions, half]), device),
            sin: Tensor::from_data(TensorData::new(sin.clone(), [positions, half]), device),
            host: Arc::new((cos, sin)),
            neox,
        }
    }

    /// Whether pairs are split halves (`LLAMA_ROPE_TYPE_NEOX`).
    pub fn neox(&self) -> bool {
        self.neox
    }

    /// Rotates one head's values at position `p` on the host, as ggml's
    /// RoPE does for this pairing.
    pub fn rotate_host(&self, head: &mut [f32], p: usize) {
        let (cos, sin) = self.host_row(p);
        if self.neox {
            super::native::rope_halves(head, cos, sin);
        } else {
            super::native::rope_pairs(head, cos, sin);
        }
    }

    /// `cos θ_i(p)` and `sin θ_i(p)` of position `p` (`head_dim / 2`
    /// values each); empty slices beyond the tables.
    pub fn host_row(&self, p: usize) -> (&[f32], &[f32]) {
        let half = self.cos.dims()[1];
        let (cos, sin) = &*self.host;
        let r = p * half..(p + 1) * half;
        (cos.get(r.clone()).unwrap_or(&[]), sin.get(r).unwrap_or(&[]))
    }

    /// Number of positions the tables cover.
    pub fn positions(&self) -> usize {
        self.cos.dims()[0]
    }

    /// Rotates `x` of shape `[heads, seq, head_dim]` whose rows sit at
    /// absolute positions `start..start + seq`. The caller guarantees
    /// `start + seq <= self.positions()`.
    pub fn apply(&self, x: Tensor<3>, start: usize) -> Tensor<3> {
        let [heads, seq, dim] = x.dims();
        let half = dim / 2;
        let table = |t: &Tensor<2>| {
            t.clone()
                .slice([start..start + seq, 0..half])
                .unsqueeze::<3>()
        };
        let (cos, sin) = (table(&self.cos), table(&self.sin));
        let rotate = |x0: Tensor<3>, x1: Tensor<3>| {
            let r0 = x0.clone() * cos.clone() - x1.clone() * sin.clone();
            (r0, x0 * sin.clone() + x1 * cos.clone())
        };
        if self.neox {
            let (r0, r1) = rotate(
                x.clone().slice([0..heads, 0..seq, 0..half]),
                x.slice([0..heads, 0..seq, half..dim]),
            );
            return Tensor::cat(vec![r0, r1], 2);
        }
        let pairs = x.reshape([heads, seq, half, 2]);
        let x0 = pairs
            .clone()
            .slice([0..heads, 0..seq, 0..half, 0..1])
            .reshape([heads, seq, half]);
        let x1 = pairs
            .slice([0..heads, 0..seq, 0..half, 1..2])
            .reshape([heads, seq, half]);
        let (r0, r1) = rotate(x0, x1);
        Tensor::stack::<4>(vec![r0, r1], 3).reshape([heads, seq, dim])
    }
}
