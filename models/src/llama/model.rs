//! The Llama decoder: embedding, blocks of (RMSNorm, grouped-query attention
//! with RoPE, RMSNorm, SwiGLU MLP), final norm and LM head.
//!
//! Shapes use one sequence (no batch axis): activations are `[seq, hidden]`.

use std::sync::Arc;

use burn::module::{Module, Param};
use burn::nn::RmsNorm;
use burn::tensor::activation::{silu, softmax};
use burn::tensor::{Device, Int, Tensor, TensorData};

use super::cache::KvCache;
use super::config::LlamaConfig;
use super::error::LlmError;
use super::native::{GgmlIsa, QMatrix, Threads};
use super::quant::{Numerics, QInput, QLinear};
use super::rope::Rope;
use crate::lora::{Adapter, Target};

/// What every block needs to know about the current forward call.
struct Pass<'a> {
    /// RoPE tables.
    rope: &'a Rope,
    /// RoPE tables of the sliding-window layers (their own base).
    rope_local: &'a Rope,
    /// Absolute position of the first input token.
    start: usize,
    /// Additive causal mask `[seq, start + seq]`; none for one token.
    mask: Option<&'a Tensor<2>>,
    /// The causal mask of the sliding-window layers, which also hides
    /// keys older than the window; none when nothing is hidden.
    mask_local: Option<&'a Tensor<2>>,
    /// How to round.
    numerics: Numerics,
    /// A LoRA adapter applied beside the base weights.
    adapter: Option<&'a Adapter>,
}

impl Pass<'_> {
    /// `x` as the input of one or more projections.
    fn input(&self, x: Tensor<2>) -> QInput {
        QInput::new(x, self.numerics)
    }

    /// A copy of `x` for the adapter's low-rank path, only when an adapter
    /// is applied.
    ///
    /// Without one nothing else holds `x`, so the rounding below it can
    /// work in place — and burn's in-place and allocating CPU kernels do
    /// not round identically (the llama.cpp agreement test sees the
    /// difference), so the base path must stay exactly as it was.
    fn keep(&self, x: &Tensor<2>) -> Option<Tensor<2>> {
        self.adapter.map(|_| x.clone())
    }

    /// `y` plus the adapter's update of `target` in block `layer` for the
    /// unrounded input `x` (the low-rank path stays in f32).
    fn adapt(
        &self,
        layer: usize,
        target: Target,
        x: Option<&Tensor<2>>,
        y: Tensor<2>,
    ) -> Tensor<2> {
        match (self.adapter, x) {
            (Some(a), Some(x)) => match a.delta(layer, target, x.clone()) {
                Some(d) => y + d,
                None => y,
            },
            _ => y,
        }
    }
}

/// Grouped-query self-attention with RoPE and a KV cache.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection, `[hidden, heads·head_dim]`.
    pub q: QLinear,
    /// Key projection, `[hidden, kv_heads·head_dim]`.
    pub k: QLinear,
    /// Value projection, `[hidden, kv_heads·head_dim]`.
    pub v: QLinear,
    /// Output projection, `[heads·head_dim, hidden]`.
    pub o: QLinear,
    /// RMSNorm of each query head before RoPE (Gemma 3, Qwen 3).
    pub q_norm: Option<RmsNorm>,
    /// RMSNorm of each key head before RoPE.
    pub k_norm: Option<RmsNorm>,
    /// Whether this layer attends to a sliding window (its own RoPE base
    /// and mask).
    #[module(skip)]
    pub local: bool,
    /// Factor on the queries before attention (Gemma 3) and on `q·k`
    /// ([`super::LlamaConfig::attention_scales`]).
    #[module(skip)]
    pub scales: (Option<f32>, f32),
    /// Query heads.
    #[module(skip)]
    pub heads: usize,
    /// Key/value heads.
    #[module(skip)]
    pub kv_heads: usize,
    /// Values per head.
    #[module(skip)]
    pub head_dim: usize,
}

impl Attention {
    /// Attends `x` (`[seq, hidden]`, positions `pass.start..`) to itself
    /// and to the cached positions before it, storing its keys and values
    /// in `cache` at layer `layer` (without a cache, `x` is the whole
    /// sequence from position 0, as training runs it).
    ///
    /// Rounding follows llama.cpp's f16 KV cache: keys and values are
    /// stored as f16, queries are rounded to f16 for `QKᵀ`, and the
    /// attention probabilities to f16 for `PV`.
    fn forward(
        &self,
        x: Tensor<2>,
        pass: &Pass<'_>,
        cache: Option<&mut KvCache>,
        layer: usize,
    ) -> Tensor<2> {
        let (rope, mask) = match self.local {
            true => (pass.rope_local, pass.mask_local),
            false => (pass.rope, pass.mask),
        };
        let (start, nx) = (pass.start, pass.numerics);
        let seq = x.dims()[0];
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let group = h / kvh;
        let split = |t: Tensor<2>, heads: usize| t.reshape([seq, heads, d]).swap_dims(0, 1);
        let raw = pass.keep(&x);
        let xq = pass.input(x);
        let proj = |lin: &QLinear, t: Target| pass.adapt(layer, t, raw.as_ref(), lin.apply(&xq));
        let norm = |n: &Option<RmsNorm>, t: Tensor<3>| match n {
            Some(n) => n.forward(t),
            None => t,
        };
        let (q_scale, scale) = self.scales;
        let q = rope.apply(
            norm(&self.q_norm, split(proj(&self.q, Target::Q), h)),
            start,
        );
        let q = nx.round_f16(match q_scale {
            Some(f) => q.mul_scalar(f),
            None => q,
        });
        let k = norm(&self.k_norm, split(proj(&self.k, Target::K), kvh));
        let k = nx.round_f16(rope.apply(k, start));
        let v = nx.round_f16(split(proj(&self.v, Target::V), kvh));
        let total = start + seq;
        let (k, v) = match cache {
            Some(cache) => {
                cache.write(layer, start, k.clone(), v.clone());
                cache.read(layer, total).unwrap_or((k, v))
            }
            None => (k, v),
        };
        // Query head i reads KV head i / group: fold each group of query
        // heads into the rows of its KV head, [kvh, group·seq, d].
        let q = q.reshape([kvh, group * seq, d]);
        let scores = q.matmul(k.swap_dims(1, 2)).mul_scalar(scale);
        let scores = match mask {
            Some(m) => {
                let m = m.clone().unsqueeze::<3>().expand([group, seq, total]);
                scores + m.reshape([1, group * seq, total])
            }
            None => scores,
        };
        let p = nx.round_f16(softmax(scores, 2));
        let out = p.matmul(v).reshape([h, seq, d]);
        let out = out.swap_dims(0, 1).reshape([seq, h * d]);
        let raw = pass.keep(&out);
        let o = self.o.apply(&pass.input(out));
        pass.adapt(layer, Target::O, raw.as_ref(), o)
    }
}

/// The gate's activation in [`Mlp`].
///
/// Exists because the families differ only here: Llama and Qwen gate with
/// SiLU (SwiGLU), Gemma with tanh-approximated GELU (GEGLU).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Activation {
    /// `x·σ(x)`.
    #[default]
    Silu,
    /// `0.5·x·(1 + tanh(√(2/π)·(x + 0.044715·x³)))`.
    GeluTanh,
}

/// The gated feed-forward network: `down(act(gate(x)) ⊙ up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection, `[hidden, ffn]`.
    pub gate: QLinear,
    /// Up projection, `[hidden, ffn]`.
    pub up: QLinear,
    /// Down projection, `[ffn, hidden]`.
    pub down: QLinear,
    /// The gate's activation.
    #[module(skip)]
    pub act: Activation,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>, pass: &Pass<'_>, layer: usize) -> Tensor<2> {
        let raw = pass.keep(&x);
        let xq = pass.input(x);
        let gate = pass.adapt(layer, Target::Gate, raw.as_ref(), self.gate.apply(&xq));
        let up = pass.adapt(layer, Target::Up, raw.as_ref(), self.up.apply(&xq));
        let h = match self.act {
            Activation::Silu => silu(gate),
            Activation::GeluTanh => gelu_tanh(gate),
        } * up;
        let raw = pass.keep(&h);
        let down = self.down.apply(&pass.input(h));
        pass.adapt(layer, Target::Down, raw.as_ref(), down)
    }
}

/// One transformer block with pre-normalisation and residuals.
#[derive(Module, Debug)]
pub struct Block {
    /// RMSNorm before attention.
    pub attn_norm: RmsNorm,
    /// Self-attention.
    pub attn: Attention,
    /// RMSNorm before the MLP.
    pub ffn_norm: RmsNorm,
    /// Feed-forward network.
    pub mlp: Mlp,
    /// RMSNorm of attention's output before the residual (Gemma 3).
    pub post_attn_norm: Option<RmsNorm>,
    /// RMSNorm of the MLP's output before the residual (Gemma 3).
    pub post_ffn_norm: Option<RmsNorm>,
}

impl Block {
    fn forward(
        &self,
        x: Tensor<2>,
        pass: &Pass<'_>,
        cache: Option<&mut KvCache>,
        layer: usize,
    ) -> Tensor<2> {
        let post = |n: &Option<RmsNorm>, t: Tensor<2>| match n {
            Some(n) => n.forward(t),
            None => t,
        };
        let normed = self.attn_norm.forward(x.clone());
        let h = x + post(
            &self.post_attn_norm,
            self.attn.forward(normed, pass, cache, layer),
        );
        let f = self
            .mlp
            .forward(self.ffn_norm.forward(h.clone()), pass, layer);
        h + post(&self.post_ffn_norm, f)
    }
}

/// Which positions' logits [`Llama::forward`] computes.
///
/// Exists because the LM head (vocab × hidden) is the largest single
/// matmul: prefill needs only the last position's logits.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Logits {
    /// Only the last input position: `[1, vocab]`.
    Last,
    /// Every input position: `[seq, vocab]`.
    All,
}

/// A Llama-architecture decoder (SmolLM2, Llama 2/3 style) on a burn
/// device.
///
/// Exists as the model definition alone: weights come from
/// [`super::load_llama`], state (the KV cache) is passed in, so one model
/// serves any number of sessions.
#[derive(Module, Debug)]
pub struct Llama {
    /// Token embeddings `[vocab, hidden]`; also the LM head when the model
    /// ties them (no `output.weight`).
    pub token_embd: Param<Tensor<2>>,
    /// Separate LM head `[vocab, hidden]`, if the model has one.
    pub output: Option<Param<Tensor<2>>>,
    /// Transformer blocks.
    pub blocks: Vec<Block>,
    /// Final RMSNorm.
    pub norm: RmsNorm,
    /// RoPE tables for the whole context.
    pub rope: Rope,
    /// RoPE tables of the sliding-window layers, when their base differs.
    pub rope_local: Option<Rope>,
    /// Hyper-parameters.
    #[module(skip)]
    pub config: LlamaConfig,
    /// How intermediate values are rounded.
    #[module(skip)]
    pub numerics: Numerics,
    /// The LM head's ggml blocks for the native CPU path (see
    /// [`QLinear`]); `None` on other devices.
    #[module(skip)]
    pub head_native: Option<Arc<QMatrix>>,
    /// Whether layers with native CPU kernels use them (`false` runs the
    /// dense burn path everywhere: the baseline the benchmarks compare
    /// against).
    #[module(skip)]
    pub native_kernels: bool,
    /// Which ggml x86 build the native CPU path reproduces (they differ in
    /// attention's f16 dot product and in SiLU).
    #[module(skip)]
    pub ggml_isa: GgmlIsa,
    /// The threads the native CPU path runs on (`None`: the process's
    /// shared pool, [`Threads::shared`]).
    #[module(skip)]
    pub threads: Option<Threads>,
}

impl Llama {
    /// Runs `tokens` at positions `cache.len()..`, appends their keys and
    /// values to `cache`, and returns logits (`[1 or seq, vocab]`).
    ///
    /// Fails without touching the cache if `tokens` is empty, holds an id
    /// outside the vocabulary, or would overflow the context.
    pub fn forward(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
    ) -> Result<Tensor<2>, LlmError> {
        self.forward_with(tokens, cache, logits, None)
    }

    /// [`Self::forward`] with a LoRA adapter applied beside the base
    /// weights (`y = Wx + (α/r)·B(Ax)` on every adapted projection). The
    /// caller checks that the adapter belongs to this model
    /// ([`Adapter::check_base`]); the cache then holds the adapted model's
    /// keys and values.
    pub fn forward_with(
        &self,
        tokens: &[u32],
        cache: &mut KvCache,
        logits: Logits,
        adapter: Option<&Adapter>,
    ) -> Result<Tensor<2>, LlmError> {
        let start = cache.len();
        let total = self.check_input(tokens, start)?;
        cache.reserve(total)?;
        if self.host_ready() {
            return match self.threads.as_ref().or(Threads::shared()) {
                Some(t) => t.run(|| self.forward_host(tokens, cache, logits, adapter)),
                None => self.forward_host(tokens, cache, logits, adapter),
            };
        }
        let seq = tokens.len();
        let x = self.hidden(tokens, start, Some(cache), adapter, self.numerics);
        cache.set_len(total);
        let x = match logits {
            Logits::Last if seq > 1 => x.slice([seq - 1..seq, 0..self.config.hidden]),
            _ => x,
        };
        Ok(self.head(x, self.numerics))
    }

    /// Logits (`[rows.len(), vocab]`) after the tokens at positions `rows`
    /// of `tokens`, run from position 0 without a KV cache, rounding as
    /// `numerics` says.
    ///
    /// Exists for training and evaluation: with a trainable adapter the
    /// result is tracked by autodiff, and only the rows a loss needs go
    /// through the LM head (the largest matmul).
    pub fn logits_at(
        &self,
        tokens: &[u32],
        rows: &[usize],
        adapter: Option<&Adapter>,
        numerics: Numerics,
    ) -> Result<Tensor<2>, LlmError> {
        self.check_input(tokens, 0)?;
        if let Some(&r) = rows.iter().find(|&&r| r >= tokens.len()) {
            return Err(LlmError::BadRange {
                start: r,
                end: r + 1,
                len: tokens.len(),
            });
        }
        if rows.is_empty() {
            return Err(LlmError::EmptyInput);
        }
        let x = self.hidden(tokens, 0, None, adapter, numerics);
        let device = self.token_embd.device();
        let idx: Vec<i64> = rows.iter().map(|&r| r as i64).collect();
        let idx = Tensor::<1, Int>::from_data(TensorData::new(idx, [rows.len()]), &device);
        Ok(self.head(x.select(0, idx), numerics))
    }

    /// Validates `tokens` at positions `start..` and returns the end
    /// position.
    fn check_input(&self, tokens: &[u32], start: usize) -> Result<usize, LlmError> {
        if tokens.is_empty() {
            return Err(LlmError::EmptyInput);
        }
        let vocab = self.config.vocab;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(LlmError::TokenOutOfVocab { id, vocab });
        }
        let total = start + tokens.len();
        if total > self.rope.positions() {
            return Err(LlmError::ContextOverflow {
                needed: total,
                context: self.rope.positions(),
            });
        }
        Ok(total)
    }

    /// The last block's output for `tokens` at positions `start..`
    /// (`[seq, hidden]`), writing keys and values to `cache` if given.
    fn hidden(
        &self,
        tokens: &[u32],
        start: usize,
        mut cache: Option<&mut KvCache>,
        adapter: Option<&Adapter>,
        numerics: Numerics,
    ) -> Tensor<2> {
        let seq = tokens.len();
        let device = self.token_embd.device();
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [seq]), &device);
        let mut x = self.token_embd.val().select(0, ids);
        if let Some(f) = self.config.embedding_scale() {
            x = x.mul_scalar(f);
        }
        let mask = (seq > 1).then(|| causal_mask(seq, start, None, &device));
        let mask_local = self
            .config
            .swa
            .filter(|w| seq > 1 || start + seq > w.window)
            .map(|w| causal_mask(seq, start, Some(w.window), &device));
        let pass = Pass {
            rope: &self.rope,
            rope_local: self.rope_local.as_ref().unwrap_or(&self.rope),
            start,
            mask: mask.as_ref(),
            mask_local: mask_local.as_ref(),
            numerics,
            adapter,
        };
        for (layer, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, &pass, cache.as_deref_mut(), layer);
        }
        x
    }

    /// Final norm and LM head. The LM head is a Q8_0 matrix in llama.cpp:
    /// its input is quantised to Q8_0 blocks like any other matmul input.
    fn head(&self, x: Tensor<2>, numerics: Numerics) -> Tensor<2> {
        let (x, _) = numerics.quantize(self.norm.forward(x));
        let head = self.output.as_ref().unwrap_or(&self.token_embd).val();
        let logits = x.matmul(head.transpose());
        match self.config.logit_softcap {
            Some(c) => logits.div_scalar(c).tanh().mul_scalar(c),
            None => logits,
        }
    }
}

/// The additive causal mask for `seq` queries at positions
/// `start..start + seq` over keys `0..start + seq`: 0 where a query may
/// look, −∞ after its own position and, with a sliding `window`, at or
/// beyond `window` positions before it.
fn causal_mask(seq: usize, start: usize, window: Option<usize>, device: &Device) -> Tensor<2> {
    let total = start + seq;
    let mut m = vec![0f32; seq * total];
    for (i, row) in m.chunks_mut(total).enumerate() {
        let p = start + i;
        row[p + 1..].fill(f32::NEG_INFINITY);
        if let Some(w) = window {
            row[..(p + 1).saturating_sub(w)].fill(f32::NEG_INFINITY);
        }
    }
    Tensor::from_data(TensorData::new(m, [seq, total]), device)
}

/// GELU with the tanh approximation (what Gemma's GEGLU uses).
fn gelu_tanh(x: Tensor<2>) -> Tensor<2> {
    const SQRT_2_OVER_PI: f32 = 0.797_884_6;
    let inner = x.clone() + x.clone().powi_scalar(3).mul_scalar(0.044_715);
    x.clone()
        .mul_scalar(0.5)
        .mul(inner.mul_scalar(SQRT_2_OVER_PI).tanh().add_scalar(1.0))
}
