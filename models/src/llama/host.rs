//! The CPU forward pass on host rows: every operation as llama.cpp's CPU
//! backend computes it ([`super::native`]), between the burn tensors of
//! the model's weights, its KV cache and the caller.
//!
//! Exists because on the CPU the tensor library's own matmul and
//! elementwise kernels round differently from ggml (and differently on
//! different CPUs); this path gives the same bits as llama.cpp on every
//! CPU, and reads the 4-bit weights directly. Other devices and autodiff
//! (LoRA training) take the burn path in [`super::model`].

use burn::tensor::{Int, Tensor, TensorData};

use super::cache::KvCache;
use super::error::LlmError;
use super::model::{Activation, Block, Llama, Logits};
use super::native::{self, AttnShape, Input, InputFormat, QMatrix};
use super::quant::{Numerics, QLinear};
use crate::lora::{Adapter, Target};

/// A projection's input rows, quantised once per block format asked for.
struct Rows<'a> {
    x: &'a [f32],
    quantised: [Option<Input>; InputFormat::COUNT],
}

impl<'a> Rows<'a> {
    fn new(x: &'a [f32]) -> Self {
        Self {
            x,
            quantised: Default::default(),
        }
    }

    /// The input quantised for `m`'s block format (computed once per
    /// format).
    fn input_for(&mut self, m: &QMatrix) -> Result<&Input, LlmError> {
        let slot = &mut self.quantised[m.input_format().index()];
        if slot.is_none() {
            *slot = m.quantize(self.x);
        }
        slot.as_ref().ok_or_else(|| {
            LlmError::Backend(format!(
                "{} values are not rows of {}",
                self.x.len(),
                m.cols()
            ))
        })
    }

    /// `x · Wᵀ` for several matrices in one parallel loop
    /// ([`QMatrix::matmul_many`]) when they share a block format, else one
    /// after the other.
    fn times_many(&mut self, ms: &[&QMatrix]) -> Result<Vec<Vec<f32>>, LlmError> {
        let same = ms
            .windows(2)
            .all(|w| w[0].input_format() == w[1].input_format());
        match ms.first() {
            Some(first) if same => QMatrix::matmul_many(ms, self.input_for(first)?),
            _ => ms.iter().map(|m| self.times(m)).collect(),
        }
    }

    /// `x · Wᵀ` for `m`'s block format.
    fn times(&mut self, m: &QMatrix) -> Result<Vec<f32>, LlmError> {
        m.matmul(self.input_for(m)?)
    }
}

/// Reads a tensor back as f32 values.
fn host(t: Tensor<2>) -> Result<Vec<f32>, LlmError> {
    t.try_into_vec_as::<f32>()
        .map_err(|e| LlmError::Backend(format!("reading a tensor back: {e:?}")))
}

/// The matrix of a projection that the caller checked has one.
fn matrix(lin: &QLinear) -> Result<&QMatrix, LlmError> {
    lin.native
        .as_deref()
        .ok_or_else(|| LlmError::Backend("a projection lost its native weights".into()))
}

impl Llama {
    /// Whether [`Self::forward_with`] runs on the host path: the CPU with
    /// native kernels on, llama.cpp's numerics, and every matrix in a
    /// format the kernels read.
    pub(crate) fn host_ready(&self) -> bool {
        let lin = |l: &QLinear| l.native.is_some();
        self.native_kernels
            && self.numerics == Numerics::Ggml
            && self.head_native.is_some()
            && !self.token_embd.device().is_autodiff()
            && self.blocks.iter().all(|b| {
                let (a, m) = (&b.attn, &b.mlp);
                [&a.q, &a.k, &a.v, &a.o, &m.gate, &m.up, &m.down]
                    .into_iter()
                    .all(lin)
            })
    }

    /// [`Self::forward_with`] on the host path; the caller has validated
    /// `tokens` and reserved room in `cache` for positions
    /// `cache.len()..cache.len() + tokens.len()`.
    pub(super) fn forward_host(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        adapter: Option<&Adapter>,
    ) -> Result<Tensor<2>, LlmError> {
        let c = &self.config;
        let (start, seq) = (cache.len(), tokens.len());
        let device = self.token_embd.device();
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [seq]), &device);
        let mut x = host(self.token_embd.val().select(0, ids))?;
        let delta = |layer: usize, t: Target, rows: &[f32], width: usize| match adapter {
            Some(a) => {
                let n = rows.len() / width;
                let input =
                    Tensor::<2>::from_data(TensorData::new(rows.to_vec(), [n, width]), &device);
                a.delta(layer, t, input).map(host).transpose()
            }
            None => Ok(None),
        };
        let add = |y: &mut Vec<f32>, d: Option<Vec<f32>>| {
            if let Some(d) = d {
                y.iter_mut().zip(d).for_each(|(a, b)| *a += b);
            }
        };
        if let Some(f) = c.embedding_scale() {
            x.iter_mut().for_each(|v| *v *= f);
        }
        let (q_scale, kq_scale) = c.attention_scales();
        let d = c.head_dim;
        // Rows still computed: all of them, until the last block keeps
        // only the ones whose logits are asked for (as llama.cpp selects
        // its output rows after the last attention: the MLP of that block
        // then runs on those rows alone, through the same kernels).
        let mut rows = seq;
        for (layer, block) in self.blocks.iter().enumerate() {
            let Block {
                attn_norm,
                attn,
                ffn_norm,
                mlp,
                post_attn_norm,
                post_ffn_norm,
            } = block;
            // Attention.
            let normed = native::rms_norm(&x, &host_1d(&attn_norm.gamma.val())?, c.rms_eps);
            let qkv = Rows::new(&normed).times_many(&[
                matrix(&attn.q)?,
                matrix(&attn.k)?,
                matrix(&attn.v)?,
            ])?;
            let [mut q, mut k, mut v]: [Vec<f32>; 3] = qkv
                .try_into()
                .map_err(|_| LlmError::Backend("q/k/v projections went missing".into()))?;
            add(&mut q, delta(layer, Target::Q, &normed, c.hidden)?);
            add(&mut k, delta(layer, Target::K, &normed, c.hidden)?);
            add(&mut v, delta(layer, Target::V, &normed, c.hidden)?);
            if let Some(n) = &attn.q_norm {
                q = native::rms_norm(&q, &host_1d(&n.gamma.val())?, c.rms_eps);
            }
            if let Some(n) = &attn.k_norm {
                k = native::rms_norm(&k, &host_1d(&n.gamma.val())?, c.rms_eps);
            }
            let rope = match attn.local {
                true => self.rope_local.as_ref().unwrap_or(&self.rope),
                false => &self.rope,
            };
            for i in 0..seq {
                for head in q[i * c.heads * d..(i + 1) * c.heads * d].chunks_exact_mut(d) {
                    rope.rotate_host(head, start + i);
                }
                for head in k[i * c.kv_heads * d..(i + 1) * c.kv_heads * d].chunks_exact_mut(d) {
                    rope.rotate_host(head, start + i);
                }
            }
            if let Some(f) = q_scale {
                q.iter_mut().for_each(|v| *v *= f);
            }
            // The f16 cache stores [kv_heads][capacity][head_dim]; the new
            // positions go straight into it.
            let stride = cache.capacity();
            let (keys, values) = cache.host_layer(layer)?;
            for i in 0..seq {
                for h in 0..c.kv_heads {
                    let (src, dst) = ((i * c.kv_heads + h) * d, (h * stride + start + i) * d);
                    for (o, &x) in keys[dst..dst + d].iter_mut().zip(&k[src..src + d]) {
                        *o = native::round_f16(x);
                    }
                    for (o, &x) in values[dst..dst + d].iter_mut().zip(&v[src..src + d]) {
                        *o = native::round_f16(x);
                    }
                }
            }
            let shape = AttnShape {
                heads: c.heads,
                kv_heads: c.kv_heads,
                head_dim: d,
                seq,
                start,
                total: start + seq,
                stride,
                isa: self.ggml_isa,
                scale: kq_scale,
                window: c.window(layer),
            };
            let att = native::attention(&q, keys, values, shape);
            let mut o = Rows::new(&att).times(matrix(&attn.o)?)?;
            add(&mut o, delta(layer, Target::O, &att, c.q_dim())?);
            if layer + 1 == self.blocks.len() && logits == Logits::Last && seq > 1 {
                o.drain(..(seq - 1) * c.hidden);
                x.drain(..(seq - 1) * c.hidden);
                rows = 1;
            }
            if let Some(n) = post_attn_norm {
                o = native::rms_norm(&o, &host_1d(&n.gamma.val())?, c.rms_eps);
            }
            x.iter_mut().zip(&o).for_each(|(a, b)| *a += *b);
            // Feed-forward.
            let normed = native::rms_norm(&x, &host_1d(&ffn_norm.gamma.val())?, c.rms_eps);
            let gate_up = Rows::new(&normed).times_many(&[matrix(&mlp.gate)?, matrix(&mlp.up)?])?;
            let [mut gate, mut up]: [Vec<f32>; 2] = gate_up
                .try_into()
                .map_err(|_| LlmError::Backend("gate/up projections went missing".into()))?;
            add(&mut gate, delta(layer, Target::Gate, &normed, c.hidden)?);
            add(&mut up, delta(layer, Target::Up, &normed, c.hidden)?);
            let h = match mlp.act {
                Activation::Silu => native::swiglu(&gate, &up, self.ggml_isa),
                Activation::GeluTanh => native::geglu(&gate, &up),
            };
            let mut down = Rows::new(&h).times(matrix(&mlp.down)?)?;
            add(&mut down, delta(layer, Target::Down, &h, c.ffn)?);
            if let Some(n) = post_ffn_norm {
                down = native::rms_norm(&down, &host_1d(&n.gamma.val())?, c.rms_eps);
            }
            x.iter_mut().zip(&down).for_each(|(a, b)| *a += *b);
        }
        cache.set_len(start + seq);
        let last = match logits {
            Logits::Last => &x[(rows - 1) * c.hidden..],
            Logits::All => &x[..],
        };
        let normed = native::rms_norm(last, &host_1d(&self.norm.gamma.val())?, c.rms_eps);
        let head = self
            .head_native
            .as_deref()
            .ok_or_else(|| LlmError::Backend("the LM head lost its native weights".into()))?;
        let n = normed.len() / c.hidden;
        let mut out = Rows::new(&normed).times(head)?;
        if let Some(cap) = c.logit_softcap {
            // ggml_scale(1/cap), ggml_tanh, ggml_scale(cap).
            let inv = 1.0 / cap;
            out.iter_mut().for_each(|v| *v = (*v * inv).tanh() * cap);
        }
        Ok(Tensor::from_data(
            TensorData::new(out, [n, c.vocab]),
            &device,
        ))
    }
}

/// Reads a 1-D tensor (a norm weight) back as f32 values.
fn host_1d(t: &Tensor<1>) -> Result<Vec<f32>, LlmError> {
    t.clone()
        .try_into_vec_as::<f32>()
        .map_err(|e| LlmError::Backend(format!("reading a norm weight: {e:?}")))
}
