//! Errors of adapters: files, shapes, base-model mismatches, training.

use crate::fingerprint::Fingerprint;
use crate::llama::LlmError;

/// Why an adapter could not be built, read, applied or trained.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum LoraError {
    /// Rank, alpha or targets out of range.
    #[error("invalid LoRA configuration: {0}")]
    BadConfig(String),
    /// The adapter was trained on another base model (MemOS bug #2300's
    /// adapter twin: applying it anyway would silently corrupt outputs).
    #[error("adapter belongs to base model {found}, this model is {expected}")]
    BaseMismatch {
        /// Fingerprint of the model it is being applied to.
        expected: Fingerprint,
        /// Fingerprint the adapter records.
        found: Fingerprint,
    },
    /// A tensor the configuration requires is missing from the file.
    #[error("adapter file lacks tensor {0}")]
    MissingTensor(String),
    /// A tensor has the wrong number of values.
    #[error("adapter tensor {name} has {found:?} values (A, B), expected {expected:?}")]
    Shape {
        /// Base weight name of the pair.
        name: String,
        /// Expected `(A, B)` value counts.
        expected: (usize, usize),
        /// Found `(A, B)` value counts.
        found: (usize, usize),
    },
    /// A weight is NaN or infinite.
    #[error("adapter tensor {0} holds a NaN or infinite value")]
    NotFinite(String),
    /// The file is not a memkern adapter (bad safetensors, metadata, dtype).
    #[error("malformed adapter file: {0}")]
    Format(String),
    /// The file's bytes do not match the checksum its cube records.
    #[error("adapter checksum mismatch: the file is damaged or not the one the cube names")]
    Checksum,
    /// No training examples, or one without answer tokens.
    #[error("invalid training data: {0}")]
    BadData(String),
    /// The loss became NaN or infinite (learning rate too high).
    #[error("training diverged at step {step}: loss {loss}")]
    Diverged {
        /// Step at which it happened.
        step: usize,
        /// The non-finite loss.
        loss: f32,
    },
    /// A model error during training or evaluation.
    #[error(transparent)]
    Llm(#[from] LlmError),
    /// A tensor backend failure.
    #[error("backend error: {0}")]
    Backend(String),
    /// Reading or writing a file.
    #[error("{path}: {source}")]
    Io {
        /// The file.
        path: String,
        /// The I/O error.
        source: std::io::Error,
    },
}
