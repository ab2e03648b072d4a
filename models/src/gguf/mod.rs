//! A memory-mapped, zero-copy reader for GGUF v2/v3 model files.
//!
//! Guarantees:
//! - **A malformed file is a typed [`GgufError`], never a panic or an
//!   out-of-bounds read.** Magic, version, every count, string, array,
//!   alignment, tensor shape, offset and size is checked against the file
//!   length at open; tensors may not overlap.
//! - **Bounded allocation.** No count read from the file is used as a
//!   capacity before it is checked against the bytes that remain, so memory
//!   use is at most a small constant factor of the file's header size.
//! - **Zero copy.** [`TensorView`]s borrow the mapped bytes; quantised data is
//!   handed out as slices of fixed-size blocks ([`quant`]).
//!
//! Layout read (little-endian): `"GGUF"`, `u32` version, `u64` tensor count,
//! `u64` metadata count, metadata entries (`string` key, `u32` type, value),
//! tensor infos (`string` name, `u32` n_dims, `u64` × n_dims with `ne0`
//! first, `u32` ggml type, `u64` offset relative to the data section), then
//! padding to `general.alignment` (default 32) and the tensor data. Strings
//! are a `u64` length plus UTF-8 bytes.
//!
//! ```
//! use memkern_models::gguf::{GgufError, GgufFile};
//!
//! let err = GgufFile::from_bytes(b"GGUF\x01\0\0\0".as_slice()).err().unwrap();
//! assert!(matches!(err, GgufError::UnsupportedVersion(1)));
//! ```

mod error;
mod file;
pub mod kquant;
mod llama;
mod metadata;
mod parse;
pub mod quant;
mod types;
pub mod writer;

pub use error::GgufError;
pub use file::{GgufFile, TensorView};
pub use llama::{Architecture, LlamaParams};
pub use metadata::{MetaArray, MetaType, MetaValue};
pub use parse::{DEFAULT_ALIGNMENT, GGUF_MAGIC, Gguf, MAX_ARRAY_NESTING, MAX_DIMS, TensorInfo};
pub use quant::{dot_q4_1_f32, dot_q8_0_f32};
pub use types::GgmlType;
