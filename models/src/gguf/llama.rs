//! Hyper-parameters of a `llama`-architecture GGUF model.

use super::error::GgufError;
use super::parse::Gguf;

/// The `llama.*` hyper-parameters a decoder implementation needs.
///
/// Exists so model code reads one typed struct instead of string keys, and
/// a file from another architecture is refused up front.
#[derive(Clone, Debug, PartialEq)]
pub struct LlamaParams {
    /// Transformer blocks (`llama.block_count`).
    pub block_count: u32,
    /// Hidden size (`llama.embedding_length`).
    pub embedding_length: u32,
    /// Feed-forward inner size (`llama.feed_forward_length`).
    pub feed_forward_length: u32,
    /// Query heads (`llama.attention.head_count`).
    pub head_count: u32,
    /// Key/value heads (`llama.attention.head_count_kv`, defaults to
    /// `head_count`).
    pub head_count_kv: u32,
    /// Training context length (`llama.context_length`).
    pub context_length: u32,
    /// RoPE base frequency (`llama.rope.freq_base`, default 10 000).
    pub rope_freq_base: f32,
    /// RMSNorm epsilon (`llama.attention.layer_norm_rms_epsilon`).
    pub rms_norm_eps: f32,
    /// Vocabulary size (`llama.vocab_size`, else the token list's length).
    pub vocab_size: u32,
}

impl LlamaParams {
    /// Reads the hyper-parameters; fails unless `general.architecture` is
    /// `llama` and every required key is present with a sensible type.
    pub fn from_gguf(gguf: &Gguf) -> Result<Self, GgufError> {
        let arch = gguf.architecture()?;
        if arch != "llama" {
            return Err(GgufError::UnsupportedArchitecture(arch.to_owned()));
        }
        let head_count = gguf.get_u32("llama.attention.head_count")?;
        let head_count_kv = match gguf.get("llama.attention.head_count_kv") {
            Some(_) => gguf.get_u32("llama.attention.head_count_kv")?,
            None => head_count,
        };
        let rope_freq_base = match gguf.get("llama.rope.freq_base") {
            Some(_) => gguf.get_f64("llama.rope.freq_base")? as f32,
            None => 10_000.0,
        };
        let vocab_size = match gguf.get("llama.vocab_size") {
            Some(_) => gguf.get_u32("llama.vocab_size")?,
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
            block_count: gguf.get_u32("llama.block_count")?,
            embedding_length: gguf.get_u32("llama.embedding_length")?,
            feed_forward_length: gguf.get_u32("llama.feed_forward_length")?,
            head_count,
            head_count_kv,
            context_length: gguf.get_u32("llama.context_length")?,
            rope_freq_base,
            rms_norm_eps: gguf.get_f64("llama.attention.layer_norm_rms_epsilon")? as f32,
            vocab_size,
        })
    }

    /// Dimension of one attention head (`embedding_length / head_count`).
    pub fn head_dim(&self) -> u32 {
        self.embedding_length
            .checked_div(self.head_count)
            .unwrap_or(0)
    }
}
