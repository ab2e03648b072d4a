//! Typed errors of the cube codec: what exactly is wrong with a byte string.

use crate::lifecycle::LifecycleState;

/// Why bytes could not be decoded as a MemCube.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum DecodeError {
    /// The input ends before the header or the declared payload does.
    #[error("truncated cube: need {needed} bytes, have {available}")]
    Truncated {
        /// Bytes the header says the cube occupies (or the header size).
        needed: usize,
        /// Bytes actually present.
        available: usize,
    },
    /// The first four bytes are not `MKCB`.
    #[error("not a MemCube: bad magic {found:02x?}")]
    BadMagic {
        /// The bytes found instead.
        found: [u8; 4],
    },
    /// A newer (or unknown) format version.
    #[error("unsupported MemCube format version {found} (this build reads version {supported})")]
    UnsupportedVersion {
        /// Version byte found.
        found: u8,
        /// Highest version this build understands.
        supported: u8,
    },
    /// The kind byte names no known payload kind.
    #[error("unknown cube kind {0}")]
    UnknownKind(u8),
    /// Flag bits this version does not define are set.
    #[error("unknown header flags {0:#06x}")]
    UnknownFlags(u16),
    /// The declared payload length exceeds the format limit.
    #[error("cube payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Declared length.
        len: u32,
        /// Maximum allowed.
        max: u32,
    },
    /// Bytes remain after the cube when exactly one cube was expected.
    #[error("{extra} unexpected bytes after the cube")]
    TrailingBytes {
        /// How many.
        extra: usize,
    },
    /// The CRC does not match: the bytes were corrupted.
    #[error("checksum mismatch: stored {stored:#010x}, computed {computed:#010x}")]
    CrcMismatch {
        /// CRC stored in the header.
        stored: u32,
        /// CRC computed over the bytes.
        computed: u32,
    },
    /// The payload is not valid postcard for the declared kind.
    #[error("malformed payload: {0}")]
    Payload(postcard::Error),
    /// The payload parsed but violates a format rule.
    #[error("invalid cube: {0}")]
    Invalid(#[from] InvalidCube),
}

/// Why a cube could not be encoded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum EncodeError {
    /// The output buffer is too small.
    #[error("output buffer too small for the cube")]
    BufferTooSmall,
    /// The encoded payload would exceed the format limit.
    #[error("cube payload of {len} bytes exceeds the limit of {max}")]
    TooLarge {
        /// Encoded length.
        len: usize,
        /// Maximum allowed.
        max: u32,
    },
    /// The cube violates a format rule; it would be refused on decode.
    #[error("invalid cube: {0}")]
    Invalid(#[from] InvalidCube),
    /// The serializer failed for another reason.
    #[error("serialization failed: {0}")]
    Payload(postcard::Error),
}

/// A semantic rule of the format that a cube breaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum InvalidCube {
    /// Version numbers start at 1.
    #[error("version must be at least 1")]
    ZeroVersion,
    /// `previous` must be set exactly when `version > 1`.
    #[error("version {version} {}", if *has_previous { "must not name a previous version" } else { "must name its previous version" })]
    VersionLink {
        /// The version number.
        version: u32,
        /// Whether a previous id was present.
        has_previous: bool,
    },
    /// A cube cannot be its own previous version or parent.
    #[error("cube refers to itself")]
    SelfReference,
    /// `valid_until` precedes `event_time`.
    #[error("valid_until precedes event_time")]
    ValidityInverted,
    /// A tag is empty or longer than the limit.
    #[error("tag length {len} outside 1..={max}")]
    TagLength {
        /// Length found.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// The source reference is longer than the limit.
    #[error("source reference of {len} bytes exceeds {max}")]
    SourceRefTooLong {
        /// Length found.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Plaintext longer than the limit.
    #[error("text of {len} bytes exceeds {max}")]
    TextTooLong {
        /// Length found.
        len: usize,
        /// Limit.
        max: usize,
    },
    /// Embedding dimension is zero or above the limit.
    #[error("embedding dimension {dim} outside 1..={max}")]
    EmbeddingDim {
        /// Dimension found.
        dim: usize,
        /// Limit.
        max: usize,
    },
    /// Embedding scale is not a finite positive number.
    #[error("embedding scale must be finite and > 0")]
    EmbeddingScale,
    /// A deleted (tombstone) cube still carries content.
    #[error("a deleted cube must carry no content")]
    TombstoneWithContent,
    /// An activation layout with a zero dimension or zero tokens.
    #[error("activation layout has a zero dimension or no tokens")]
    EmptyLayout,
    /// Positions of the cached tokens overflow.
    #[error("first_position + token_count overflows")]
    PositionOverflow,
    /// The declared KV byte count does not match the layout.
    #[error("KV data of {declared} bytes does not match the layout's {expected}")]
    KvSizeMismatch {
        /// `kv_bytes` in the cube.
        declared: u64,
        /// What the layout implies (`u64::MAX` on overflow).
        expected: u64,
    },
    /// The blob is smaller than the data it must hold, or empty.
    #[error("blob of {size} bytes cannot hold {needed} bytes")]
    BlobTooSmall {
        /// Blob size.
        size: u64,
        /// Bytes needed.
        needed: u64,
    },
    /// LoRA rank zero or above the limit.
    #[error("LoRA rank {rank} outside 1..={max}")]
    LoraRank {
        /// Rank found.
        rank: u16,
        /// Limit.
        max: u16,
    },
    /// LoRA alpha not finite and positive.
    #[error("LoRA alpha must be finite and > 0")]
    LoraAlpha,
    /// No target modules, or bits this version does not define.
    #[error("target modules {bits:#06x} are empty or unknown")]
    LoraTargets {
        /// The bit set found.
        bits: u16,
    },
    /// The lifecycle state is not allowed for this payload.
    #[error("lifecycle state {0:?} is not valid here")]
    Lifecycle(LifecycleState),
}
