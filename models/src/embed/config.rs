//! The BERT hyper-parameters read from a Hugging Face `config.json`.

use serde::Deserialize;

use super::error::EmbedError;

/// The parts of a BERT `config.json` the ONNX export needs.
///
/// Exists so the exporter builds the graph from the file's numbers (layer
/// count, widths, epsilon) instead of constants that would silently fit
/// only MiniLM.
#[derive(Clone, Debug, PartialEq, Deserialize)]
pub struct BertConfig {
    /// `"bert"` for the supported architecture (absent in some files).
    #[serde(default)]
    pub model_type: Option<String>,
    /// Vocabulary size (rows of the word embedding).
    pub vocab_size: usize,
    /// Hidden width.
    pub hidden_size: usize,
    /// Number of encoder layers.
    pub num_hidden_layers: usize,
    /// Attention heads per layer (divides `hidden_size`).
    pub num_attention_heads: usize,
    /// Width of the feed-forward layer.
    pub intermediate_size: usize,
    /// Rows of the learned position embedding: the longest input.
    pub max_position_embeddings: usize,
    /// Rows of the token-type embedding (row 0 is used).
    #[serde(default = "default_type_vocab_size")]
    pub type_vocab_size: usize,
    /// LayerNorm epsilon.
    #[serde(default = "default_layer_norm_eps")]
    pub layer_norm_eps: f64,
    /// Activation of the feed-forward layer; only erf-`"gelu"` is supported.
    #[serde(default = "default_hidden_act")]
    pub hidden_act: String,
    /// `"absolute"` (the only supported kind) when present.
    #[serde(default)]
    pub position_embedding_type: Option<String>,
}

fn default_type_vocab_size() -> usize {
    2
}

fn default_layer_norm_eps() -> f64 {
    1e-12
}

fn default_hidden_act() -> String {
    "gelu".to_owned()
}

impl BertConfig {
    /// Parses and validates `config.json` bytes.
    pub fn from_json(bytes: &[u8]) -> Result<Self, EmbedError> {
        let config: BertConfig = serde_json::from_slice(bytes)
            .map_err(|e| EmbedError::Config(format!("config.json is not a BERT config: {e}")))?;
        config.validate()?;
        Ok(config)
    }

    /// Width of one attention head.
    pub fn head_dim(&self) -> usize {
        self.hidden_size / self.num_attention_heads.max(1)
    }

    fn validate(&self) -> Result<(), EmbedError> {
        let bad = |m: String| Err(EmbedError::Config(m));
        if let Some(t) = &self.model_type
            && t != "bert"
        {
            return bad(format!("model_type {t:?} is not \"bert\""));
        }
        if let Some(p) = &self.position_embedding_type
            && p != "absolute"
        {
            return bad(format!("position_embedding_type {p:?} is not \"absolute\""));
        }
        if self.hidden_act != "gelu" {
            return bad(format!("hidden_act {:?} is not \"gelu\"", self.hidden_act));
        }
        let sizes = [
            self.vocab_size,
            self.hidden_size,
            self.num_hidden_layers,
            self.num_attention_heads,
            self.intermediate_size,
            self.max_position_embeddings,
            self.type_vocab_size,
        ];
        // Bounds keep every tensor size product far below overflow.
        if sizes.iter().any(|&s| s == 0 || s > 1 << 20) {
            return bad("a size is 0 or implausibly large".into());
        }
        if !self.hidden_size.is_multiple_of(self.num_attention_heads) {
            return bad(format!(
                "hidden_size {} is not a multiple of num_attention_heads {}",
                self.hidden_size, self.num_attention_heads
            ));
        }
        if !(self.layer_norm_eps.is_finite() && self.layer_norm_eps > 0.0) {
            return bad("layer_norm_eps must be finite and > 0".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const MINILM: &str = r#"{"architectures":["BertModel"],"attention_probs_dropout_prob":0.1,
        "gradient_checkpointing":false,"hidden_act":"gelu","hidden_dropout_prob":0.1,
        "hidden_size":384,"initializer_range":0.02,"intermediate_size":1536,
        "layer_norm_eps":1e-12,"max_position_embeddings":512,"model_type":"bert",
        "num_attention_heads":12,"num_hidden_layers":6,"pad_token_id":0,
        "position_embedding_type":"absolute","type_vocab_size":2,"vocab_size":30522}"#;

    #[test]
    fn parses_minilm() {
        let c = BertConfig::from_json(MINILM.as_bytes()).unwrap();
        assert_eq!(
            (c.hidden_size, c.num_hidden_layers, c.head_dim()),
            (384, 6, 32)
        );
    }

    #[test]
    fn refuses_unsupported() {
        for (from, to) in [
            ("\"gelu\"", "\"relu\""),
            ("\"bert\"", "\"llama\""),
            ("\"num_attention_heads\":12", "\"num_attention_heads\":7"),
            ("\"hidden_size\":384", "\"hidden_size\":0"),
        ] {
            let json = MINILM.replace(from, to);
            assert!(BertConfig::from_json(json.as_bytes()).is_err(), "{to}");
        }
        assert!(BertConfig::from_json(b"not json").is_err());
    }
}
