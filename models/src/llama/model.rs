//! The Llama decoder: embedding, blocks of (RMSNorm, grouped-query attention
//! with RoPE, RMSNorm, SwiGLU MLP), final norm and LM head.
//!
//! Shapes use one sequence (no batch axis): activations are `[seq, hidden]`.

use burn::module::{Module, Param};
use burn::nn::{Linear, RmsNorm};
use burn::tensor::activation::silu;
use burn::tensor::module::attention;
use burn::tensor::ops::AttentionModuleOptions;
use burn::tensor::{Int, Tensor, TensorData};

use super::cache::KvCache;
use super::config::LlamaConfig;
use super::error::LlmError;
use super::rope::Rope;

/// Grouped-query self-attention with RoPE and a KV cache.
#[derive(Module, Debug)]
pub struct Attention {
    /// Query projection, `[hidden, heads·head_dim]`.
    pub q: Linear,
    /// Key projection, `[hidden, kv_heads·head_dim]`.
    pub k: Linear,
    /// Value projection, `[hidden, kv_heads·head_dim]`.
    pub v: Linear,
    /// Output projection, `[heads·head_dim, hidden]`.
    pub o: Linear,
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
    /// Attends `x` (`[seq, hidden]`, positions `start..start + seq`) to
    /// itself and to the cached positions `0..start`, storing its keys and
    /// values in `cache` at layer `layer`.
    fn forward(
        &self,
        x: Tensor<2>,
        rope: &Rope,
        cache: &mut KvCache,
        layer: usize,
        start: usize,
    ) -> Tensor<2> {
        let [seq, hidden] = x.dims();
        let (h, kvh, d) = (self.heads, self.kv_heads, self.head_dim);
        let group = h / kvh;
        let split = |t: Tensor<2>, heads: usize| t.reshape([seq, heads, d]).swap_dims(0, 1);
        let q = rope.apply(split(self.q.forward(x.clone()), h), start);
        let k = rope.apply(split(self.k.forward(x.clone()), kvh), start);
        let v = split(self.v.forward(x), kvh);
        cache.write(layer, start, k.clone(), v.clone());
        let total = start + seq;
        let (k, v) = cache.read(layer, total).unwrap_or((k, v));
        let out = if seq == 1 {
            // One query per head: fold each KV head's group of query heads
            // into the query axis, so K and V are used without copies.
            let q = q.reshape([1, kvh, group, d]);
            let o = attention(
                q,
                k.unsqueeze::<4>(),
                v.unsqueeze::<4>(),
                None,
                None,
                AttentionModuleOptions::default(),
            );
            o.reshape([h, 1, d])
        } else {
            // Query head i reads KV head i / group.
            let expand = |t: Tensor<3>| {
                t.unsqueeze_dim::<4>(1)
                    .expand([kvh, group, total, d])
                    .reshape([1, h, total, d])
            };
            let options = AttentionModuleOptions {
                is_causal: true,
                ..AttentionModuleOptions::default()
            };
            let o = attention(q.unsqueeze::<4>(), expand(k), expand(v), None, None, options);
            o.reshape([h, seq, d])
        };
        self.o.forward(out.swap_dims(0, 1).reshape([seq, hidden]))
    }
}

/// The SwiGLU feed-forward network: `down(silu(gate(x)) ⊙ up(x))`.
#[derive(Module, Debug)]
pub struct Mlp {
    /// Gate projection, `[hidden, ffn]`.
    pub gate: Linear,
    /// Up projection, `[hidden, ffn]`.
    pub up: Linear,
    /// Down projection, `[ffn, hidden]`.
    pub down: Linear,
}

impl Mlp {
    fn forward(&self, x: Tensor<2>) -> Tensor<2> {
        let g = silu(self.gate.forward(x.clone()));
        self.down.forward(g * self.up.forward(x))
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
}

impl Block {
    fn forward(
        &self,
        x: Tensor<2>,
        rope: &Rope,
        cache: &mut KvCache,
        layer: usize,
        start: usize,
    ) -> Tensor<2> {
        let h = x.clone() + self.attn.forward(self.attn_norm.forward(x), rope, cache, layer, start);
        h.clone() + self.mlp.forward(self.ffn_norm.forward(h))
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
    /// Hyper-parameters.
    #[module(skip)]
    pub config: LlamaConfig,
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
        let seq = tokens.len();
        if seq == 0 {
            return Err(LlmError::EmptyInput);
        }
        let vocab = self.config.vocab;
        if let Some(&id) = tokens.iter().find(|&&id| id as usize >= vocab) {
            return Err(LlmError::TokenOutOfVocab { id, vocab });
        }
        let start = cache.len();
        let total = start + seq;
        if total > self.rope.positions() {
            return Err(LlmError::ContextOverflow {
                needed: total,
                context: self.rope.positions(),
            });
        }
        cache.reserve(total)?;

        let device = self.token_embd.device();
        let ids: Vec<i64> = tokens.iter().map(|&t| i64::from(t)).collect();
        let ids = Tensor::<1, Int>::from_data(TensorData::new(ids, [seq]), &device);
        let mut x = self.token_embd.val().select(0, ids);
        for (layer, block) in self.blocks.iter().enumerate() {
            x = block.forward(x, &self.rope, cache, layer, start);
        }
        cache.set_len(total);

        let x = match logits {
            Logits::Last if seq > 1 => x.slice([seq - 1..seq, 0..self.config.hidden]),
            _ => x,
        };
        let x = self.norm.forward(x);
        let head = self.output.as_ref().unwrap_or(&self.token_embd).val();
        Ok(x.matmul(head.transpose()))
    }
}
