//! Model hyper-parameters, read from GGUF metadata and checked once.

use memkern_core::cube::{KvDtype, KvLayout};

use super::error::LlmError;
use crate::gguf::{Architecture, LlamaParams};

/// The shape of a Llama decoder, validated so the model code can index and
/// reshape without further checks.
///
/// Exists because GGUF metadata is untrusted input: every size the forward
/// pass relies on (head split, GQA grouping, even head dimension for RoPE)
/// is checked here, at load, and nowhere else.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaConfig {
    /// Which forward pass (the blocks' shape and norms).
    pub arch: Architecture,
    /// Transformer blocks.
    pub layers: usize,
    /// Hidden size (`d_model`).
    pub hidden: usize,
    /// Query heads.
    pub heads: usize,
    /// Key/value heads (grouped-query attention when fewer than `heads`).
    pub kv_heads: usize,
    /// Values per head.
    pub head_dim: usize,
    /// SwiGLU inner size.
    pub ffn: usize,
    /// Vocabulary size (rows of the embedding and the LM head).
    pub vocab: usize,
    /// Context length the model was trained for; the session's maximum.
    pub context: usize,
    /// RoPE base frequency θ.
    pub rope_theta: f32,
    /// RMSNorm epsilon.
    pub rms_eps: f32,
    /// Local (sliding-window) attention layers, if the model has them.
    pub swa: Option<SlidingWindow>,
    /// RoPE base of the local layers.
    pub rope_theta_swa: f32,
    /// `tanh` soft-cap of the final logits (`None`: none).
    pub logit_softcap: Option<f32>,
}

/// Which layers attend only to a window of recent positions, and how far.
///
/// Exists because Gemma 3 interleaves local and global attention: a local
/// layer's query at position `p` sees keys `p − window + 1 ..= p` and
/// rotates with its own RoPE base.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SlidingWindow {
    /// Positions a local query sees, its own included.
    pub window: usize,
    /// One global layer in this many: layer `l` is local when
    /// `l % pattern < pattern − 1` (llama.cpp's `set_swa_pattern`).
    pub pattern: usize,
}

/// Largest value accepted for any single dimension; far above any model
/// this crate targets, low enough that products of two never overflow.
const MAX_DIM: usize = 1 << 20;

impl LlamaConfig {
    /// Validates GGUF hyper-parameters.
    pub fn from_params(p: &LlamaParams) -> Result<Self, LlmError> {
        let to_usize = |v: u32| usize::try_from(v).unwrap_or(usize::MAX);
        let swa = match p.sliding_window {
            Some(w) if w > 0 => Some(SlidingWindow {
                window: to_usize(w),
                pattern: to_usize(p.sliding_window_pattern.unwrap_or(6)),
            }),
            _ => None,
        };
        if let Some(v) = p.value_length
            && v != p.head_dim()
        {
            return Err(LlmError::UnsupportedModel(format!(
                "value heads of {v} values beside key heads of {}",
                p.head_dim()
            )));
        }
        let c = Self {
            arch: p.architecture,
            layers: to_usize(p.block_count),
            hidden: to_usize(p.embedding_length),
            heads: to_usize(p.head_count),
            kv_heads: to_usize(p.head_count_kv),
            head_dim: to_usize(p.head_dim()),
            ffn: to_usize(p.feed_forward_length),
            vocab: to_usize(p.vocab_size),
            context: to_usize(p.context_length),
            rope_theta: p.rope_freq_base,
            rms_eps: p.rms_norm_eps,
            swa,
            rope_theta_swa: p.rope_freq_base_swa.unwrap_or(10_000.0),
            logit_softcap: p.final_logit_softcapping.filter(|&c| c != 0.0),
        };
        c.validate()?;
        Ok(c)
    }

    /// Checks every invariant the forward pass relies on.
    pub fn validate(&self) -> Result<(), LlmError> {
        let bad = |m: String| Err(LlmError::UnsupportedModel(m));
        for (name, v) in [
            ("block_count", self.layers),
            ("embedding_length", self.hidden),
            ("head_count", self.heads),
            ("head_count_kv", self.kv_heads),
            ("feed_forward_length", self.ffn),
            ("vocab_size", self.vocab),
            ("context_length", self.context),
        ] {
            if v == 0 || v > MAX_DIM {
                return bad(format!("{name} = {v} is outside 1..={MAX_DIM}"));
            }
        }
        if self.layers > usize::from(u16::MAX) || self.kv_heads > usize::from(u16::MAX) {
            return bad("more than 65535 layers or KV heads".into());
        }
        if self.head_dim == 0 || self.heads * self.head_dim > MAX_DIM {
            return bad(format!(
                "head_count {} × head dimension {} is outside 1..={MAX_DIM}",
                self.heads, self.head_dim
            ));
        }
        if self.arch == Architecture::Llama && self.heads * self.head_dim != self.hidden {
            return bad(format!(
                "embedding_length {} is not head_count {} × an integer head dimension",
                self.hidden, self.heads
            ));
        }
        if let Some(w) = self.swa
            && (w.pattern == 0 || w.window == 0)
        {
            return bad(format!(
                "sliding window {} with pattern {} (both must be ≥ 1)",
                w.window, w.pattern
            ));
        }
        for (name, t) in [
            ("rope.freq_base", self.rope_theta),
            ("rope.freq_base_swa", self.rope_theta_swa),
        ] {
            if !(t.is_finite() && t > 1.0) {
                return bad(format!("{name} {t} must be finite and > 1"));
            }
        }
        if let Some(c) = self.logit_softcap
            && !(c.is_finite() && c > 0.0)
        {
            return bad(format!(
                "final_logit_softcapping {c} must be finite and > 0"
            ));
        }
        if !self.head_dim.is_multiple_of(2) || self.head_dim > usize::from(u16::MAX) {
            return bad(format!(
                "head dimension {} must be even (RoPE pairs)",
                self.head_dim
            ));
        }
        if !self.heads.is_multiple_of(self.kv_heads) {
            return bad(format!(
                "head_count {} is not a multiple of head_count_kv {}",
                self.heads, self.kv_heads
            ));
        }
        if !(self.rms_eps.is_finite() && self.rms_eps > 0.0) {
            return bad(format!(
                "rms epsilon {} must be finite and > 0",
                self.rms_eps
            ));
        }
        Ok(())
    }

    /// Width of the query projection and of attention's output:
    /// `heads × head_dim` (the hidden size for Llama; Gemma 3 differs).
    pub fn q_dim(&self) -> usize {
        self.heads * self.head_dim
    }

    /// Whether block `layer` attends only to a sliding window (and so
    /// rotates with [`Self::rope_theta_swa`]).
    pub fn is_local(&self, layer: usize) -> bool {
        self.swa.is_some_and(|w| layer % w.pattern < w.pattern - 1)
    }

    /// Positions block `layer`'s queries see (`None`: all before them).
    pub fn window(&self, layer: usize) -> Option<usize> {
        self.swa.filter(|_| self.is_local(layer)).map(|w| w.window)
    }

    /// The factor queries are multiplied by before attention and the one
    /// applied to `q·k`: Llama scales the scores by `1/√d`; Gemma 3 scales
    /// the queries by `1/√d` and the scores by 1 (which rounds
    /// differently once queries are stored as f16).
    pub fn attention_scales(&self) -> (Option<f32>, f32) {
        let inv_sqrt = 1.0 / (self.head_dim as f32).sqrt();
        match self.arch {
            Architecture::Llama => (None, inv_sqrt),
            Architecture::Gemma3 => (Some(inv_sqrt), 1.0),
        }
    }

    /// The factor token embeddings are multiplied by (`√hidden` for
    /// Gemma 3, computed in f32 as llama.cpp's `sqrtf`).
    pub fn embedding_scale(&self) -> Option<f32> {
        match self.arch {
            Architecture::Llama => None,
            Architecture::Gemma3 => Some((self.hidden as f32).sqrt()),
        }
    }

    /// Query heads that share one KV head.
    pub fn group_size(&self) -> usize {
        self.heads / self.kv_heads
    }

    /// Width of the K (and V) projection: `kv_heads × head_dim`.
    pub fn kv_dim(&self) -> usize {
        self.kv_heads * self.head_dim
    }

    /// The KV-cache layout of this model stored as `dtype`, in the core's
    /// terms (what an activation cube records).
    pub fn kv_layout(&self, dtype: KvDtype) -> KvLayout {
        // validate() bounds layers, kv_heads and head_dim by u16::MAX.
        KvLayout {
            dtype,
            layers: u16::try_from(self.layers).unwrap_or(u16::MAX),
            kv_heads: u16::try_from(self.kv_heads).unwrap_or(u16::MAX),
            head_dim: u16::try_from(self.head_dim).unwrap_or(u16::MAX),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn smollm2() -> LlamaParams {
        LlamaParams {
            architecture: Architecture::Llama,
            block_count: 30,
            embedding_length: 576,
            feed_forward_length: 1536,
            head_count: 9,
            head_count_kv: 3,
            context_length: 8192,
            rope_freq_base: 100_000.0,
            rms_norm_eps: 1e-5,
            vocab_size: 49152,
            key_length: None,
            value_length: None,
            sliding_window: None,
            sliding_window_pattern: None,
            rope_freq_base_swa: None,
            final_logit_softcapping: None,
        }
    }

    #[test]
    fn smollm2_shape() {
        let c = LlamaConfig::from_params(&smollm2()).unwrap();
        assert_eq!((c.head_dim, c.group_size(), c.kv_dim()), (64, 3, 192));
        let l = c.kv_layout(KvDtype::F16);
        assert_eq!(l.tensor_bytes(1), Some(30 * 2 * 3 * 64 * 2));
    }

    #[test]
    fn inconsistent_shapes_are_refused() {
        let mut p = smollm2();
        p.head_count_kv = 4;
        assert!(LlamaConfig::from_params(&p).is_err());
        let mut p = smollm2();
        p.embedding_length = 577;
        assert!(LlamaConfig::from_params(&p).is_err());
        let mut p = smollm2();
        p.block_count = 0;
        assert!(LlamaConfig::from_params(&p).is_err());
        let mut p = smollm2();
        p.rms_norm_eps = f32::NAN;
        assert!(LlamaConfig::from_params(&p).is_err());
    }
}
