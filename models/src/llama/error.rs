//! The typed error of model loading, inference and generation.

use crate::gguf::{GgmlType, GgufError};
use crate::snapshot::SnapshotError;
use crate::tokenizer::TokenizerError;

/// Everything that can go wrong loading a Llama model or running it.
///
/// Exists so callers can tell a bad model file from a bad request (a prompt
/// longer than the context, an unknown token id) and from a backend failure,
/// instead of the process panicking inside a tensor library.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LlmError {
    /// The GGUF file is malformed or lacks a required key or tensor.
    #[error(transparent)]
    Gguf(#[from] GgufError),
    /// The tokenizer could not be built or used.
    #[error(transparent)]
    Tokenizer(#[from] TokenizerError),
    /// A snapshot was refused or could not be written.
    #[error(transparent)]
    Snapshot(#[from] SnapshotError),
    /// The hyper-parameters describe a model this implementation cannot run.
    #[error("unsupported model: {0}")]
    UnsupportedModel(String),
    /// A tensor has a shape other than the hyper-parameters imply.
    #[error("tensor {name} has shape {found:?}, expected {expected:?} (ne0 first)")]
    TensorShape {
        /// Tensor name.
        name: String,
        /// Expected dimensions.
        expected: Vec<u64>,
        /// Dimensions in the file.
        found: Vec<u64>,
    },
    /// A tensor is stored in a type the loader cannot dequantise.
    #[error("tensor {name} has unsupported type {ty:?}")]
    TensorType {
        /// Tensor name.
        name: String,
        /// Its ggml type.
        ty: GgmlType,
    },
    /// The requested backend is not compiled in or has no usable device.
    #[error("backend {backend} unavailable: {reason}")]
    BackendUnavailable {
        /// The backend asked for.
        backend: &'static str,
        /// Why it cannot be used.
        reason: String,
    },
    /// The backend failed while reading results back.
    #[error("backend error: {0}")]
    Backend(String),
    /// More tokens than the model's context can hold.
    #[error("context overflow: {needed} tokens needed, the context holds {context}")]
    ContextOverflow {
        /// Positions the request would occupy.
        needed: usize,
        /// Context length.
        context: usize,
    },
    /// A token id outside the vocabulary.
    #[error("token id {id} is outside the vocabulary of {vocab} tokens")]
    TokenOutOfVocab {
        /// The id.
        id: u32,
        /// Vocabulary size.
        vocab: usize,
    },
    /// An empty token list where at least one token is needed.
    #[error("no input tokens")]
    EmptyInput,
    /// Sampling or a snapshot with logits was asked for before any token
    /// was processed.
    #[error("no logits yet: prefill at least one token or restore a snapshot with logits")]
    NoLogits,
    /// A token range outside the session's cached tokens.
    #[error("range {start}..{end} is outside the {len} cached tokens")]
    BadRange {
        /// Range start.
        start: usize,
        /// Range end.
        end: usize,
        /// Cached tokens.
        len: usize,
    },
    /// Invalid sampling parameters.
    #[error("invalid sampling parameters: {0}")]
    Sampling(String),
}
