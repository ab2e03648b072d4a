//! Activation memory: KV-cache snapshots of a token prefix, as files.
//!
//! A snapshot holds the keys (after RoPE) and values that a model computed
//! for a run of tokens, so a later session can restore them instead of
//! prefilling the same text again — the point of memkern's activation
//! memory: a memory prefix restored from flash costs a file read, not a
//! forward pass.
//!
//! Guarantees (each one is a test in `models/tests/snapshot.rs`):
//! - **Immutable.** A [`Snapshot`] is its file's bytes; restoring copies
//!   them into the session's cache, and nothing ever writes them back.
//!   Generating after a restore leaves the file and its digest unchanged
//!   (MemOS bug #2301 mutated the stored cache).
//! - **Atomic writes.** [`Snapshot::write`] writes a temporary file in the
//!   target directory, fsyncs it, renames it over the target and fsyncs
//!   the directory: a crash leaves the old file or the new one, never a
//!   mix.
//! - **Damage is refused.** A CRC-32C guards the fixed header, a SHA-256
//!   the whole body; truncation at any point, a bit flip anywhere, an
//!   unknown version or dtype is a typed [`SnapshotError`].
//! - **Identity is checked.** Restoring refuses a snapshot from another
//!   model or tokenizer (MemOS bug #2300 loaded caches into the wrong model
//!   silently), with another layout, whose positions do not fit the
//!   context, or computed after other preceding tokens.
//! - **Exact by default.** An f32 snapshot restores bit-identical state:
//!   greedy output after a restore equals greedy output after prefilling
//!   the same prefix. f16 halves the size; q8 (int8 with one f32 scale per
//!   row) cuts it to 28 % with a small, measured effect on logits.
//!
//! The byte layout is documented in `models/SNAPSHOT.md`; its tensor
//! section is exactly `KvLayout::tensor_bytes(token_count)` bytes, and the
//! SHA-256 of the whole file is the blob digest an activation cube records
//! ([`Snapshot::activation_payload`]).

mod error;
mod format;

use std::fs;
use std::path::Path;

use memkern_core::cube::{Activation, BlobRef, KvDtype, KvLayout};
use memkern_core::ids::{self, BlobDigest};
use sha2::{Digest, Sha256};

pub use error::SnapshotError;
pub use format::{
    CHECKSUM_LEN, HEADER_LEN, MAGIC, SnapshotHeader, TENSOR_ALIGN, VERSION, prefix_fingerprint,
    row_bytes,
};

use crate::fingerprint::Fingerprint;

/// A KV-cache snapshot: a validated, immutable snapshot file in memory.
///
/// Exists as the unit of activation memory: it is written to and read from
/// flash as one blob, named by its SHA-256, described by an activation
/// cube, and restored into a [`crate::session::Session`].
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Snapshot {
    header: SnapshotHeader,
    bytes: Vec<u8>,
}

impl Snapshot {
    /// Validates a snapshot file's bytes: structure, header CRC, lengths
    /// and the body's SHA-256. Identity (model, tokenizer, layout,
    /// position) is checked when restoring.
    pub fn from_bytes(bytes: Vec<u8>) -> Result<Self, SnapshotError> {
        let header = SnapshotHeader::decode(&bytes)?;
        let s = header.sections()?;
        let have = bytes.len();
        if have < s.total {
            let section = match have {
                n if n < s.tensors => "token ids",
                n if n < s.logits => "kv tensors",
                n if n < s.checksum => "logits",
                _ => "checksum",
            };
            return Err(SnapshotError::Truncated {
                section,
                needed: s.total as u64,
                available: have as u64,
            });
        }
        if have > s.total {
            return Err(SnapshotError::TrailingBytes {
                extra: (have - s.total) as u64,
            });
        }
        let (body, sum) = bytes.split_at(s.checksum);
        if Sha256::digest(body).as_slice() != sum {
            return Err(SnapshotError::Corrupt);
        }
        if bytes[s.tokens + 4 * header.token_count as usize..s.tensors]
            .iter()
            .any(|&b| b != 0)
        {
            return Err(SnapshotError::Malformed("padding is not zero".into()));
        }
        Ok(Self { header, bytes })
    }

    /// Reads and validates a snapshot file (see [`Self::from_bytes`]).
    pub fn read(path: impl AsRef<Path>) -> Result<Self, SnapshotError> {
        let path = path.as_ref();
        let bytes = fs::read(path).map_err(|source| SnapshotError::Io {
            path: path.to_owned(),
            source,
        })?;
        Self::from_bytes(bytes)
    }

    /// Writes the snapshot to `path` atomically: temporary file in the
    /// same directory, fsync, rename, fsync of the directory.
    pub fn write(&self, path: impl AsRef<Path>) -> Result<(), SnapshotError> {
        let path = path.as_ref();
        let io = |source| SnapshotError::Io {
            path: path.to_owned(),
            source,
        };
        crate::atomic::write_atomic(path, &self.bytes).map_err(io)
    }

    /// The decoded header.
    pub fn header(&self) -> &SnapshotHeader {
        &self.header
    }

    /// The whole file's bytes.
    pub fn bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The cached tokens' ids.
    pub fn token_ids(&self) -> Vec<u32> {
        let n = self.header.token_count as usize;
        self.bytes[HEADER_LEN..HEADER_LEN + 4 * n]
            .chunks_exact(4)
            .map(|c| u32::from_le_bytes([c[0], c[1], c[2], c[3]]))
            .collect()
    }

    /// Number of cached tokens.
    pub fn token_count(&self) -> u32 {
        self.header.token_count
    }

    /// Absolute position of the first cached token.
    pub fn first_position(&self) -> u32 {
        self.header.first_position
    }

    /// Element type and shape of the KV tensors.
    pub fn layout(&self) -> KvLayout {
        self.header.layout
    }

    /// The SHA-256 of the whole file: the blob's address and checksum.
    pub fn digest(&self) -> BlobDigest {
        let mut d = [0u8; 32];
        d.copy_from_slice(&Sha256::digest(&self.bytes));
        BlobDigest(d)
    }

    /// The identity of this snapshot as the core's activation-cube payload:
    /// fingerprints, token count, first position, layout, tensor bytes and
    /// the blob reference (SHA-256 and size of the whole file).
    pub fn activation_payload(&self) -> Activation {
        let h = &self.header;
        Activation {
            model: ids::Fingerprint(h.model.0),
            tokenizer: ids::Fingerprint(h.tokenizer.0),
            token_count: h.token_count,
            first_position: h.first_position,
            layout: h.layout,
            kv_bytes: h.kv_bytes,
            blob: BlobRef {
                digest: self.digest(),
                size: self.bytes.len() as u64,
            },
        }
    }

    /// Checks that this file is the blob `cube` describes: same digest and
    /// size, fingerprints, position, token count and layout (dtype
    /// included).
    pub fn verify_against(&self, cube: &Activation) -> Result<(), SnapshotError> {
        let h = &self.header;
        if cube.layout.dtype != h.layout.dtype {
            return Err(SnapshotError::DtypeMismatch {
                expected: cube.layout.dtype,
                found: h.layout.dtype,
            });
        }
        if cube.layout != h.layout {
            return Err(SnapshotError::LayoutMismatch {
                expected: cube.layout,
                found: h.layout,
            });
        }
        if cube.model.0 != h.model.0 {
            return Err(SnapshotError::ModelMismatch {
                expected: Fingerprint(cube.model.0),
                found: h.model,
            });
        }
        if cube.tokenizer.0 != h.tokenizer.0 {
            return Err(SnapshotError::TokenizerMismatch {
                expected: Fingerprint(cube.tokenizer.0),
                found: h.tokenizer,
            });
        }
        let mismatch = |what: &str| Err(SnapshotError::CubeMismatch(what.to_owned()));
        if cube.token_count != h.token_count || cube.first_position != h.first_position {
            return mismatch("token count or first position differ");
        }
        if cube.kv_bytes != h.kv_bytes || cube.blob.size != self.bytes.len() as u64 {
            return mismatch("sizes differ");
        }
        if cube.blob.digest != self.digest() {
            return mismatch("SHA-256 differs");
        }
        Ok(())
    }

    /// Decodes layer `layer`'s keys and values to f32, each laid out
    /// `[kv_heads][tokens][head_dim]`.
    pub(crate) fn layer_kv(&self, layer: usize) -> Result<(Vec<f32>, Vec<f32>), SnapshotError> {
        let h = &self.header;
        let (dtype, d) = (h.layout.dtype, usize::from(h.layout.head_dim));
        let rows = usize::from(h.layout.kv_heads) * h.token_count as usize;
        let rb = row_bytes(dtype, d);
        let s = h.sections()?;
        let decode = |part: usize| -> Result<Vec<f32>, SnapshotError> {
            let start = s.tensors + (2 * layer + part) * rows * rb;
            let src = self
                .bytes
                .get(start..start + rows * rb)
                .ok_or_else(|| SnapshotError::Malformed(format!("no layer {layer}")))?;
            let mut out = vec![0f32; rows * d];
            for (o, r) in out.chunks_exact_mut(d).zip(src.chunks_exact(rb)) {
                format::decode_row(dtype, r, o)?;
            }
            Ok(out)
        };
        Ok((decode(0)?, decode(1)?))
    }

    /// The stored next-token logits of the last position, if any.
    pub(crate) fn logits(&self) -> Option<Vec<f32>> {
        let s = self.header.sections().ok()?;
        self.header.has_logits.then(|| {
            self.bytes[s.logits..s.checksum]
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes([c[0], c[1], c[2], c[3]]))
                .collect()
        })
    }
}

/// Assembles a snapshot file in memory, layer by layer.
///
/// Exists so the session can stream its cache to bytes one layer at a time
/// (host memory stays at one layer of f32 plus the output).
pub(crate) struct SnapshotBuilder {
    header: SnapshotHeader,
    bytes: Vec<u8>,
    layers_done: usize,
}

impl SnapshotBuilder {
    /// Starts a snapshot of `tokens` at `first_position` after the tokens
    /// whose fingerprint is `prefix`.
    pub(crate) fn new(
        layout: KvLayout,
        model: Fingerprint,
        tokenizer: Fingerprint,
        prefix: Fingerprint,
        first_position: u32,
        tokens: &[u32],
        logits_len: u32,
    ) -> Result<Self, SnapshotError> {
        let token_count = u32::try_from(tokens.len())
            .map_err(|_| SnapshotError::Malformed("too many tokens".into()))?;
        let kv_bytes = layout
            .tensor_bytes(token_count)
            .ok_or_else(|| SnapshotError::Malformed("tensor size overflows".into()))?;
        let header = SnapshotHeader {
            version: VERSION,
            layout,
            has_logits: logits_len > 0,
            logits_len,
            token_count,
            first_position,
            model,
            tokenizer,
            prefix,
            kv_bytes,
        };
        header.validate()?;
        let s = header.sections()?;
        let mut bytes = Vec::with_capacity(s.total);
        bytes.extend_from_slice(&header.encode());
        for t in tokens {
            bytes.extend_from_slice(&t.to_le_bytes());
        }
        bytes.resize(s.tensors, 0);
        Ok(Self {
            header,
            bytes,
            layers_done: 0,
        })
    }

    /// Appends the next layer's keys and values (`[kv_heads][tokens][head_dim]`).
    pub(crate) fn push_layer(&mut self, k: &[f32], v: &[f32]) {
        let (dtype, d) = (
            self.header.layout.dtype,
            usize::from(self.header.layout.head_dim),
        );
        for part in [k, v] {
            for row in part.chunks_exact(d) {
                format::encode_row(dtype, row, &mut self.bytes);
            }
        }
        self.layers_done += 1;
    }

    /// Appends the logits (if the header announced them) and the checksum.
    pub(crate) fn finish(mut self, logits: Option<&[f32]>) -> Result<Snapshot, SnapshotError> {
        let s = self.header.sections()?;
        if self.layers_done != usize::from(self.header.layout.layers)
            || self.bytes.len() != s.logits
        {
            return Err(SnapshotError::Malformed("incomplete tensor section".into()));
        }
        match logits {
            Some(l) if self.header.has_logits && l.len() == self.header.logits_len as usize => {
                l.iter()
                    .for_each(|v| self.bytes.extend_from_slice(&v.to_le_bytes()));
            }
            None if !self.header.has_logits => {}
            _ => return Err(SnapshotError::Malformed("logits length mismatch".into())),
        }
        let sum = Sha256::digest(&self.bytes);
        self.bytes.extend_from_slice(&sum);
        Ok(Snapshot {
            header: self.header,
            bytes: self.bytes,
        })
    }
}

/// The dtypes a snapshot can store, smallest last.
pub const DTYPES: [KvDtype; 3] = [KvDtype::F32, KvDtype::F16, KvDtype::Q8];
