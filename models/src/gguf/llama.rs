//! Hyper-parameters of a decoder GGUF model (`llama`, `gemma3`).

use super::error::GgufError;
use super::parse::Gguf;

/// A decoder architecture this crate has a forward pass for, from
/// `general.architecture`.
///
/// Exists so the model code branches on a closed set instead of strings,
/// and an unknown architecture is refused once, with its name, at load.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash)]
pub enum Architecture {
    /// `llama`: SmolLM2, Llama 2/3, TinyLlama — pre-norm blocks, SwiGLU,
    /// RoPE over adjacent pairs.
    #[default]
    Llama,
    /// `gemma3`: embeddings scaled by √hidden, Q/K RMSNorm, pre- and
    /// post-norms around attention and the MLP, GELU-tanh gated MLP,
    /// RoPE over split halves, sliding-window local layers with their own
    /// RoPE base, tied embeddings.
    Gemma3,
}

impl Architecture {
    /// Parses `general.architecture`.
    pub fn from_name(name: &str) -> Result<Self, GgufError> {
        match name {
            "llama" => Ok(Self::Llama),
            "gemma3" => Ok(Self::Gemma3),
            other => Err(GgufError::UnsupportedArchitecture(other.to_owned())),
        }
    }

    /// The name GGUF metadata keys are prefixed with.
    pub fn name(self) -> &'static str {
        match self {
            Self::Llama => "llama",
            Self::Gemma3 => "gemma3",
        }
    }
}

impl core::fmt::Display for Architecture {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.name())
    }
}

/// The `{arch}.*` hyper-parameters a decoder implementation needs.
///
/// Exists so model code reads one typed struct instead of string keys, and
/// a file from another architecture is refused up front.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaParams {
    /// Which forward pass the file needs (`general.architecture`).
    pub architecture: Architecture,
    /// Transformer blocks (`{arch}.block_count`).
    pub block_count: u32,
    /// Hidden size (`{arch}.embedding_length`).
    pub embedding_length: u32,
    /// Feed-forward inner size (`{arch}.feed_forward_length`).
    pub feed_forward_length: u32,
    /// Query heads (`{arch}.attention.head_count`).
    pub head_count: u32,
    /// Key/value heads (`{arch}.attention.head_count_kv`, defaults to
    /// `head_count`).
    pub head_count_kv: u32,
    /// Values per key head (`{arch}.attention.key_length`; `None`:
    /// `embedding_length / head_count`).
    pub key_length: Option<u32>,
    /// Values per value head (`{arch}.attention.value_length`; `None`: as
    /// the keys).
    pub value_length: Option<u32>,
    /// Training context length (`{arch}.context_length`).
    pub context_length: u32,
    /// RoPE base frequency (`{arch}.rope.freq_base`, default 10 000).
    pub rope_freq_base: f32,
    /// RMSNorm epsilon (`{arch}.attention.layer_norm_rms_epsilon`).
    pub rms_norm_eps: f32,
    /// Vocabulary size (`{arch}.vocab_size`, else the token list's length).
    pub vocab_size: u32,
    /// Sliding-window size of the local attention layers
    /// (`{arch}.attention.sliding_window`; `None` or 0: every layer global).
    pub sliding_window: Option<u32>,
    /// One global layer in this many (`{arch}.attention.sliding_window_pattern`;
    /// Gemma 3's default is 6: five local layers, then one global).
    pub sliding_window_pattern: Option<u32>,
    /// RoPE base of the local layers (`{arch}.rope.freq_base_swa`;
    /// llama.cpp's default 10 000).
    pub rope_freq_base_swa: Option<f32>,
    /// `tanh` soft-capping of the final logits
    /// (`{arch}.final_logit_softcapping`; absent or 0: none).
    pub final_logit_softcapping: Option<f32>,
}

impl LlamaParams {
    /// Reads the hyper-parameters; fails unless `general.architecture` is
    /// one of [`Architecture`] and every required key is present with a
    /// sensible type.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, GgufError> {
        let architecture = Architecture::from_name(gguf.architecture()?)?;
        let a = architecture.name();
        let key = |k: &str| format!("{a}.{k}");
        let opt_u32 = |k: &str| -> Result<Option<u32>, GgufError> {
            let k = key(k);
            gguf.get(&k).map(|_| gguf.get_u32(&k)).transpose()
        };
        let opt_f32 = |k: &str| -> Result<Option<f32>, GgufError> {
            let k = key(k);
            gguf.get(&k)
                .map(|_| gguf.get_f64(&k).map(|v| v as f32))
                .transpose()
        };
        // Scaled RoPE (linear, YaRN, Llama 3's rope_freqs) changes every
        // rotation: refuse it by name rather than run it unscaled.
        if let Some(t) = gguf.get(&key("rope.scaling.type")) {
            let t = gguf
                .get_str(&key("rope.scaling.type"))
                .map_err(|_| GgufError::WrongType {
                    key: key("rope.scaling.type"),
                    expected: "string",
                    found: format!("{t:?}"),
                })?;
            if t != "none" {
                return Err(GgufError::UnsupportedFeature(format!(
                    "RoPE scaling {t:?} ({a}.rope.scaling.type)"
                )));
            }
        }
        if gguf.tensor_info("rope_freqs.weight").is_ok() {
            return Err(GgufError::UnsupportedFeature(
                "per-frequency RoPE factors (rope_freqs.weight, Llama 3.1+ scaling)".into(),
            ));
        }
        let head_count = gguf.get_u32(&key("attention.head_count"))?;
        let head_count_kv = opt_u32("attention.head_count_kv")?.unwrap_or(head_count);
        let vocab_size = match opt_u32("vocab_size")? {
            Some(v) => v,
            None => {
                let n = gguf.get_array("tokenizer.ggml.tokens")?.len();
                u32::try_from(n).map_err(|_| GgufError::WrongType {
                    key: "tokenizer.ggml.tokens".into(),
                    expected: "at most u32::MAX tokens",
                    found: n.to_string(),
                })?
            }
        };
        Ok(Self {
            architecture,
            block_count: gguf.get_u32(&key("block_count"))?,
            embedding_length: gguf.get_u32(&key("embedding_length"))?,
            feed_forward_length: gguf.get_u32(&key("feed_forward_length"))?,
            head_count,
            head_count_kv,
            key_length: opt_u32("attention.key_length")?,
            value_length: opt_u32("attention.value_length")?,
            context_length: gguf.get_u32(&key("context_length"))?,
            rope_freq_base: opt_f32("rope.freq_base")?.unwrap_or(10_000.0),
            rms_norm_eps: gguf.get_f64(&key("attention.layer_norm_rms_epsilon"))? as f32,
            vocab_size,
            sliding_window: opt_u32("attention.sliding_window")?,
            sliding_window_pattern: opt_u32("attention.sliding_window_pattern")?,
            rope_freq_base_swa: opt_f32("rope.freq_base_swa")?,
            final_logit_softcapping: opt_f32("final_logit_softcapping")?,
        })
    }

    /// Dimension of one attention head (`key_length`, else
    /// `embedding_length / head_count`).
    pub fn head_dim(&self) -> u32 {
        self.key_length.unwrap_or_else(|| {
            self.embedding_length
                .checked_div(self.head_count)
                .unwrap_or(0)
        })
    }
}
