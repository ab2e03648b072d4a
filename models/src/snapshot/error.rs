//! The typed refusals of snapshot reading, checking and restoring.

use std::io;
use std::path::PathBuf;

use memkern_core::cube::{KvDtype, KvLayout};

use crate::fingerprint::Fingerprint;

/// Why a snapshot file was refused (or could not be written).
///
/// Exists so that a damaged file, a file from another model or tokenizer
/// (MemOS bug #2300 loaded caches into the wrong model silently), and a
/// snapshot that does not fit the session are distinct, testable outcomes
/// instead of garbage output.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum SnapshotError {
    /// Reading or writing the file failed.
    #[error("snapshot file {path}")]
    Io {
        /// The file.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The file ends before a section is complete.
    #[error("snapshot truncated in the {section}: {needed} bytes needed, {available} present")]
    Truncated {
        /// Which section the file ends in.
        section: &'static str,
        /// Bytes the file must have.
        needed: u64,
        /// Bytes it has.
        available: u64,
    },
    /// Bytes after the checksum.
    #[error("snapshot has {extra} bytes after its checksum")]
    TrailingBytes {
        /// How many.
        extra: u64,
    },
    /// The file does not start with the snapshot magic.
    #[error("not a memkern KV snapshot (magic {found:02x?})")]
    BadMagic {
        /// The first eight bytes.
        found: [u8; 8],
    },
    /// A format version this build does not read.
    #[error("unsupported snapshot format version {0} (this build reads version 1)")]
    UnsupportedVersion(u16),
    /// The fixed header's CRC does not match: the header is damaged.
    #[error("snapshot header is corrupt (CRC-32C {found:08x}, computed {computed:08x})")]
    HeaderCorrupt {
        /// CRC stored in the file.
        found: u32,
        /// CRC of the bytes read.
        computed: u32,
    },
    /// The SHA-256 over the body does not match: a bit flipped somewhere.
    #[error("snapshot body is corrupt (SHA-256 mismatch)")]
    Corrupt,
    /// A header field is out of range (unknown dtype, reserved bits set,
    /// sizes that disagree).
    #[error("malformed snapshot header: {0}")]
    Malformed(String),
    /// The snapshot was computed by another model.
    #[error("snapshot is from model {found}, this is model {expected}")]
    ModelMismatch {
        /// This model's fingerprint.
        expected: Fingerprint,
        /// The snapshot's.
        found: Fingerprint,
    },
    /// The snapshot's token ids come from another tokenizer.
    #[error("snapshot is from tokenizer {found}, this is tokenizer {expected}")]
    TokenizerMismatch {
        /// This tokenizer's fingerprint.
        expected: Fingerprint,
        /// The snapshot's.
        found: Fingerprint,
    },
    /// Layers, KV heads or head dimension differ.
    #[error("snapshot layout {found:?} does not match {expected:?}")]
    LayoutMismatch {
        /// What the model (or cube) expects.
        expected: KvLayout,
        /// What the snapshot holds.
        found: KvLayout,
    },
    /// The element type differs from the one required.
    #[error("snapshot dtype {found:?}, expected {expected:?}")]
    DtypeMismatch {
        /// Required dtype.
        expected: KvDtype,
        /// The snapshot's.
        found: KvDtype,
    },
    /// The snapshot's positions do not fit the model's context.
    #[error(
        "snapshot positions {first}..{end} do not fit the context of {context} tokens",
        end = u64::from(*first) + u64::from(*tokens)
    )]
    PositionOutOfContext {
        /// First absolute position.
        first: u32,
        /// Tokens in the snapshot.
        tokens: u32,
        /// The model's context length.
        context: usize,
    },
    /// The session is not at the snapshot's first position.
    #[error("snapshot starts at position {first}, the session is at position {session}")]
    PositionMismatch {
        /// The snapshot's first position.
        first: u32,
        /// The session's next position.
        session: usize,
    },
    /// The tokens before the snapshot differ from the session's.
    #[error("the session's first {first} tokens differ from those the snapshot was computed after")]
    PrefixMismatch {
        /// Number of preceding tokens.
        first: u32,
    },
    /// The snapshot does not match the activation cube that refers to it.
    #[error("snapshot does not match its activation cube: {0}")]
    CubeMismatch(String),
}
