//! The typed error of every GGUF operation.

use std::io;
use std::path::PathBuf;

use super::types::GgmlType;

/// Everything that can be wrong with a GGUF file or a request against it.
///
/// Exists so a malformed or hostile file is reported precisely (what, where)
/// instead of panicking or reading out of bounds.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum GgufError {
    /// The file could not be opened or mapped.
    #[error("cannot read GGUF file {path}: {source}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The first four bytes are not `GGUF`.
    #[error("not a GGUF file: magic bytes are {found:02x?}, expected \"GGUF\"")]
    BadMagic {
        /// The bytes found.
        found: [u8; 4],
    },
    /// A version other than 2 or 3 (version 1 used 32-bit counts; a
    /// big-endian file also lands here because its version reads byte-swapped).
    #[error("unsupported GGUF version {0} (supported: 2 and 3, little-endian)")]
    UnsupportedVersion(u32),
    /// The file ends inside a structure.
    #[error("GGUF truncated: {what} at byte {offset} needs {needed} bytes, {available} remain")]
    Truncated {
        /// What was being read.
        what: &'static str,
        /// Where it starts.
        offset: u64,
        /// Bytes it needs.
        needed: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A count that could not possibly fit in the rest of the file; checked
    /// before anything is allocated for it.
    #[error(
        "GGUF {what} count {count} at byte {offset} cannot fit in the {available} bytes that remain"
    )]
    CountTooLarge {
        /// What is being counted.
        what: &'static str,
        /// The count read.
        count: u64,
        /// Where the count was read.
        offset: u64,
        /// Bytes left in the file.
        available: u64,
    },
    /// A string is not valid UTF-8.
    #[error("GGUF {what} at byte {offset} is not valid UTF-8")]
    InvalidUtf8 {
        /// Which string.
        what: &'static str,
        /// Where it starts.
        offset: u64,
    },
    /// A metadata value type id outside the GGUF specification.
    #[error("metadata key {key:?}: unknown value type {ty}")]
    UnknownValueType {
        /// The key.
        key: String,
        /// The type id read.
        ty: u32,
    },
    /// A bool byte other than 0 or 1.
    #[error("metadata key {key:?}: invalid bool byte {value}")]
    InvalidBool {
        /// The key.
        key: String,
        /// The byte read.
        value: u8,
    },
    /// Arrays of arrays nested deeper than the parser allows (guards the stack).
    #[error("metadata key {key:?}: arrays nested deeper than {max}")]
    NestingTooDeep {
        /// The key.
        key: String,
        /// The limit.
        max: usize,
    },
    /// The same metadata key appears twice.
    #[error("duplicate metadata key {0:?}")]
    DuplicateKey(String),
    /// The same tensor name appears twice.
    #[error("duplicate tensor name {0:?}")]
    DuplicateTensor(String),
    /// `general.alignment` is zero, not a power of two, or not an integer.
    #[error("invalid general.alignment {0}: must be a non-zero power of two")]
    BadAlignment(u64),
    /// A tensor with zero or more than four dimensions.
    #[error("tensor {name:?}: {n_dims} dimensions, expected 1 to 4")]
    BadDimCount {
        /// The tensor.
        name: String,
        /// The count read.
        n_dims: u32,
    },
    /// A tensor type id this crate does not know, so its size is unknown.
    #[error("tensor {name:?}: unknown ggml type id {ty}")]
    UnknownTensorType {
        /// The tensor.
        name: String,
        /// The type id read.
        ty: u32,
    },
    /// The element or byte count of a tensor overflows.
    #[error("tensor {name:?}: shape {dims:?} overflows")]
    ShapeOverflow {
        /// The tensor.
        name: String,
        /// Its dimensions, ne0 first.
        dims: Vec<u64>,
    },
    /// A row length (ne0) that is not a whole number of blocks.
    #[error("tensor {name:?}: row length {ne0} is not a multiple of the {ty} block size {block}")]
    BadRowLength {
        /// The tensor.
        name: String,
        /// Its first dimension.
        ne0: u64,
        /// Its type.
        ty: GgmlType,
        /// The type's block size.
        block: u64,
    },
    /// A tensor offset that is not a multiple of the file's alignment.
    #[error("tensor {name:?}: data offset {offset} is not a multiple of the alignment {alignment}")]
    MisalignedTensor {
        /// The tensor.
        name: String,
        /// Its offset relative to the data section.
        offset: u64,
        /// The file's alignment.
        alignment: u64,
    },
    /// A tensor's bytes extend past the end of the file.
    #[error("tensor {name:?}: bytes {start}..{end} lie outside the file ({file_len} bytes)")]
    TensorOutOfBounds {
        /// The tensor.
        name: String,
        /// Absolute start.
        start: u64,
        /// Absolute end (exclusive), saturated on overflow.
        end: u64,
        /// The file length.
        file_len: u64,
    },
    /// Two tensors share bytes.
    #[error("tensors {first:?} and {second:?} overlap")]
    TensorOverlap {
        /// The tensor that starts first.
        first: String,
        /// The tensor that starts inside it.
        second: String,
    },
    /// The aligned start of the data section lies past the end of the file.
    #[error("data section starts at {data_offset}, past the end of the file ({file_len} bytes)")]
    DataPastEof {
        /// The aligned data start.
        data_offset: u64,
        /// The file length.
        file_len: u64,
    },
    /// A required metadata key is absent.
    #[error("metadata key {0:?} is missing")]
    MissingKey(String),
    /// A metadata value of the wrong type (or out of range for the request).
    #[error("metadata key {key:?} is {found}, expected {expected}")]
    WrongType {
        /// The key.
        key: String,
        /// What the caller asked for.
        expected: &'static str,
        /// What the file holds.
        found: String,
    },
    /// The model's `general.architecture` has no forward pass here.
    #[error(
        "architecture {0:?} is not supported yet (memkern runs \"llama\": SmolLM2, Llama, TinyLlama; \"gemma3\")"
    )]
    UnsupportedArchitecture(String),
    /// The model needs a feature the forward pass does not implement.
    #[error("{0} is not supported yet")]
    UnsupportedFeature(String),
    /// No tensor of that name.
    #[error("tensor {0:?} not found")]
    TensorNotFound(String),
    /// The operation does not support the tensor's data type.
    #[error("tensor {name:?} is {ty}: {op} is not supported for this type")]
    UnsupportedType {
        /// The tensor.
        name: String,
        /// Its type.
        ty: GgmlType,
        /// The operation requested.
        op: &'static str,
    },
    /// A row index past the tensor's row count.
    #[error("tensor {name:?}: row {row} out of range ({rows} rows)")]
    RowOutOfRange {
        /// The tensor.
        name: String,
        /// The row asked for.
        row: u64,
        /// Rows in the tensor.
        rows: u64,
    },
    /// Input and output buffers whose lengths do not match.
    #[error("length mismatch in {what}: expected {expected}, got {got}")]
    LengthMismatch {
        /// The operation.
        what: &'static str,
        /// The length required.
        expected: usize,
        /// The length given.
        got: usize,
    },
    /// Tensor bytes whose address is not aligned for a zero-copy typed view
    /// (possible only for buffers not produced by [`super::GgufFile::open`]).
    #[error("tensor {name:?}: data is not aligned for a zero-copy {ty} view")]
    UnalignedData {
        /// The tensor.
        name: String,
        /// Its type.
        ty: GgmlType,
    },
}
