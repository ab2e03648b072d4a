//! The typed error of the embedder.

use std::io;
use std::path::PathBuf;

use crate::fetch::FetchError;

/// Everything that can go wrong loading or running the embedder.
///
/// Exists so callers can tell a missing or damaged model (fetch again) from
/// an unsupported one (wrong architecture) and from a runtime failure.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum EmbedError {
    /// The model files could not be fetched.
    #[error(transparent)]
    Fetch(#[from] FetchError),
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "reading".
        op: &'static str,
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The model files lack one the embedder needs.
    #[error("model files have no {0:?}")]
    MissingFile(&'static str),
    /// `config.json` is unreadable or describes an unsupported model.
    #[error("model config: {0}")]
    Config(String),
    /// The safetensors weights are unreadable or do not fit the config.
    #[error("model weights: {0}")]
    Weights(String),
    /// `tokenizer.json` could not be loaded, or tokenizing failed.
    #[error("tokenizer: {0}")]
    Tokenizer(String),
    /// Token ids given to [`super::Embedder::embed_token_ids`] are empty,
    /// too long or outside the vocabulary.
    #[error("invalid token input: {0}")]
    InvalidInput(String),
    /// tract refused the graph or failed while running it.
    #[error("inference: {0}")]
    Runtime(String),
}

impl EmbedError {
    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| EmbedError::Io { op, path, source }
    }

    /// Wraps a tract (anyhow) error with its whole cause chain.
    pub(crate) fn runtime(what: &str, e: impl std::fmt::Display) -> Self {
        EmbedError::Runtime(format!("{what}: {e:#}"))
    }
}
