//! The byte layout of a snapshot file (see `models/SNAPSHOT.md`).

use memkern_core::cube::{KvDtype, KvLayout};
use sha2::{Digest, Sha256};

use super::error::SnapshotError;
use crate::fingerprint::{Fingerprint, update_framed};

/// The first eight bytes of every snapshot file.
pub const MAGIC: [u8; 8] = *b"MKKVSNAP";
/// The format version this build writes and reads.
pub const VERSION: u16 = 1;
/// Bytes of the fixed header (CRC included).
pub const HEADER_LEN: usize = 96;
/// The tensor section starts at a multiple of this.
pub const TENSOR_ALIGN: usize = 64;
/// Bytes of the trailing SHA-256.
pub const CHECKSUM_LEN: usize = 32;
/// Most tokens one snapshot may hold (bounds every size computation).
pub const MAX_TOKENS: u32 = 1 << 24;
/// Largest logits section accepted, in values.
pub const MAX_LOGITS: u32 = 1 << 24;
/// Header flag: the next-token logits of the last position follow the
/// tensors.
pub const FLAG_LOGITS: u8 = 1;

/// CRC-32C (Castagnoli) of the fixed header.
const HEADER_CRC: crc::Crc<u32> = crc::Crc::<u32>::new(&crc::CRC_32_ISCSI);

/// Domain separator of the prefix fingerprint.
const PREFIX_DOMAIN: &[u8] = b"memkern/kv-prefix/v1\0";

/// The file's code for a dtype.
pub fn dtype_code(d: KvDtype) -> u8 {
    match d {
        KvDtype::F32 => 1,
        KvDtype::F16 => 2,
        KvDtype::Q8 => 3,
    }
}

fn dtype_from_code(c: u8) -> Option<KvDtype> {
    match c {
        1 => Some(KvDtype::F32),
        2 => Some(KvDtype::F16),
        3 => Some(KvDtype::Q8),
        _ => None,
    }
}

/// Bytes of one row of `head_dim` values stored as `dtype`.
pub fn row_bytes(dtype: KvDtype, head_dim: usize) -> usize {
    match dtype {
        KvDtype::F32 => 4 * head_dim,
        KvDtype::F16 => 2 * head_dim,
        KvDtype::Q8 => head_dim + 4,
    }
}

/// Fingerprint of the token ids that precede a snapshot (its context):
/// restoring is only valid after exactly these tokens.
pub fn prefix_fingerprint(tokens: &[u32]) -> Fingerprint {
    let mut h = Sha256::new();
    h.update(PREFIX_DOMAIN);
    let mut bytes = Vec::with_capacity(tokens.len() * 4);
    for t in tokens {
        bytes.extend_from_slice(&t.to_le_bytes());
    }
    update_framed(&mut h, &bytes);
    Fingerprint::from_sha256(h)
}

/// The decoded fixed header of a snapshot.
///
/// Exists so a snapshot's identity and shape can be inspected (and checked
/// against a model or an activation cube) without touching its tensors.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct SnapshotHeader {
    /// Format version (1).
    pub version: u16,
    /// Element type and shape of the KV tensors.
    pub layout: KvLayout,
    /// Whether the next-token logits of the last position are stored.
    pub has_logits: bool,
    /// Number of logits stored (the vocabulary size), 0 without logits.
    pub logits_len: u32,
    /// Number of cached tokens (> 0).
    pub token_count: u32,
    /// Absolute position of the first cached token.
    pub first_position: u32,
    /// Fingerprint of the model that computed the cache.
    pub model: Fingerprint,
    /// Fingerprint of the tokenizer that produced the token ids.
    pub tokenizer: Fingerprint,
    /// Fingerprint of the token ids at positions `0..first_position`.
    pub prefix: Fingerprint,
    /// Bytes of tensor data; equals `layout.tensor_bytes(token_count)`.
    pub kv_bytes: u64,
}

/// Section offsets derived from a header.
#[derive(Clone, Copy, Debug)]
pub struct Sections {
    /// Start of the token ids.
    pub tokens: usize,
    /// Start of the KV tensors (64-byte aligned).
    pub tensors: usize,
    /// Start of the logits.
    pub logits: usize,
    /// Start of the SHA-256.
    pub checksum: usize,
    /// Total file length.
    pub total: usize,
}

impl SnapshotHeader {
    /// Offsets of every section, or an error if they overflow.
    pub fn sections(&self) -> Result<Sections, SnapshotError> {
        let overflow = || SnapshotError::Malformed("section sizes overflow".into());
        let n = usize::try_from(self.token_count).map_err(|_| overflow())?;
        let tokens = HEADER_LEN;
        let tensors = (tokens + 4 * n).next_multiple_of(TENSOR_ALIGN);
        let kv = usize::try_from(self.kv_bytes).map_err(|_| overflow())?;
        let logits = tensors.checked_add(kv).ok_or_else(overflow)?;
        let logits_bytes = 4 * usize::try_from(self.logits_len).map_err(|_| overflow())?;
        let checksum = logits.checked_add(logits_bytes).ok_or_else(overflow)?;
        let total = checksum.checked_add(CHECKSUM_LEN).ok_or_else(overflow)?;
        Ok(Sections {
            tokens,
            tensors,
            logits,
            checksum,
            total,
        })
    }

    /// Writes the 96-byte fixed header, CRC included.
    pub fn encode(&self) -> [u8; HEADER_LEN] {
        let mut b = [0u8; HEADER_LEN];
        b[0..8].copy_from_slice(&MAGIC);
        b[8..10].copy_from_slice(&self.version.to_le_bytes());
        b[10] = dtype_code(self.layout.dtype);
        b[11] = if self.has_logits { FLAG_LOGITS } else { 0 };
        b[12..14].copy_from_slice(&self.layout.layers.to_le_bytes());
        b[14..16].copy_from_slice(&self.layout.kv_heads.to_le_bytes());
        b[16..18].copy_from_slice(&self.layout.head_dim.to_le_bytes());
        // 18..20 reserved, zero.
        b[20..24].copy_from_slice(&self.token_count.to_le_bytes());
        b[24..28].copy_from_slice(&self.first_position.to_le_bytes());
        b[28..32].copy_from_slice(&self.logits_len.to_le_bytes());
        b[32..48].copy_from_slice(&self.model.0);
        b[48..64].copy_from_slice(&self.tokenizer.0);
        b[64..80].copy_from_slice(&self.prefix.0);
        b[80..88].copy_from_slice(&self.kv_bytes.to_le_bytes());
        // 88..92 reserved, zero.
        let crc = HEADER_CRC.checksum(&b[..92]);
        b[92..96].copy_from_slice(&crc.to_le_bytes());
        b
    }

    /// Parses and checks the fixed header at the start of `bytes`.
    ///
    /// Order: length, magic, version, CRC, then field ranges; so a
    /// damaged header is reported as such before any of its sizes is used.
    pub fn decode(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let Some(b) = bytes.first_chunk::<HEADER_LEN>() else {
            return Err(SnapshotError::Truncated {
                section: if bytes.len() < MAGIC.len() {
                    "magic"
                } else {
                    "header"
                },
                needed: HEADER_LEN as u64,
                available: bytes.len() as u64,
            });
        };
        let u16_at = |i: usize| u16::from_le_bytes([b[i], b[i + 1]]);
        let u32_at = |i: usize| u32::from_le_bytes([b[i], b[i + 1], b[i + 2], b[i + 3]]);
        let fp_at = |i: usize| {
            let mut f = [0u8; 16];
            f.copy_from_slice(&b[i..i + 16]);
            Fingerprint(f)
        };
        let mut magic = [0u8; 8];
        magic.copy_from_slice(&b[0..8]);
        if magic != MAGIC {
            return Err(SnapshotError::BadMagic { found: magic });
        }
        let version = u16_at(8);
        if version != VERSION {
            return Err(SnapshotError::UnsupportedVersion(version));
        }
        let found = u32_at(92);
        let computed = HEADER_CRC.checksum(&b[..92]);
        if found != computed {
            return Err(SnapshotError::HeaderCorrupt { found, computed });
        }
        let bad = |m: String| Err(SnapshotError::Malformed(m));
        let Some(dtype) = dtype_from_code(b[10]) else {
            return bad(format!("unknown dtype code {}", b[10]));
        };
        let flags = b[11];
        if flags & !FLAG_LOGITS != 0 {
            return bad(format!("unknown flags {flags:#04x}"));
        }
        if u16_at(18) != 0 || u32_at(88) != 0 {
            return bad("reserved bytes are not zero".into());
        }
        let layout = KvLayout {
            dtype,
            layers: u16_at(12),
            kv_heads: u16_at(14),
            head_dim: u16_at(16),
        };
        let mut kv = [0u8; 8];
        kv.copy_from_slice(&b[80..88]);
        let h = Self {
            version,
            layout,
            has_logits: flags & FLAG_LOGITS != 0,
            logits_len: u32_at(28),
            token_count: u32_at(20),
            first_position: u32_at(24),
            model: fp_at(32),
            tokenizer: fp_at(48),
            prefix: fp_at(64),
            kv_bytes: u64::from_le_bytes(kv),
        };
        h.validate()?;
        Ok(h)
    }

    /// Checks the field ranges and the size identity.
    pub fn validate(&self) -> Result<(), SnapshotError> {
        let bad = |m: String| Err(SnapshotError::Malformed(m));
        let l = &self.layout;
        if l.layers == 0 || l.kv_heads == 0 || l.head_dim == 0 {
            return bad(format!("empty layout {l:?}"));
        }
        if self.token_count == 0 || self.token_count > MAX_TOKENS {
            return bad(format!(
                "token count {} outside 1..={MAX_TOKENS}",
                self.token_count
            ));
        }
        if self.first_position.checked_add(self.token_count).is_none() {
            return bad("first position + token count overflows".into());
        }
        if l.tensor_bytes(self.token_count) != Some(self.kv_bytes) {
            return bad(format!(
                "kv_bytes {} does not match {} tokens of {l:?}",
                self.kv_bytes, self.token_count
            ));
        }
        if self.has_logits != (self.logits_len > 0) || self.logits_len > MAX_LOGITS {
            return bad(format!(
                "logits flag {} with {} logits",
                self.has_logits, self.logits_len
            ));
        }
        Ok(())
    }
}

/// Appends one row of f32 values encoded as `dtype`.
pub fn encode_row(dtype: KvDtype, row: &[f32], out: &mut Vec<u8>) {
    match dtype {
        KvDtype::F32 => row
            .iter()
            .for_each(|v| out.extend_from_slice(&v.to_le_bytes())),
        KvDtype::F16 => row
            .iter()
            .for_each(|v| out.extend_from_slice(&half::f16::from_f32(*v).to_le_bytes())),
        KvDtype::Q8 => {
            let max = row.iter().fold(0f32, |m, v| m.max(v.abs()));
            let scale = if max > 0.0 && max.is_finite() {
                max / 127.0
            } else {
                0.0
            };
            out.extend_from_slice(&scale.to_le_bytes());
            let inv = if scale > 0.0 { 1.0 / scale } else { 0.0 };
            for v in row {
                // |v · inv| <= 127 up to rounding; the clamp makes the cast exact.
                let q = (v * inv).round().clamp(-127.0, 127.0) as i8;
                out.push(q.to_le_bytes()[0]);
            }
        }
    }
}

/// Decodes one row (`row_bytes(dtype, out.len())` bytes) into `out`.
/// Fails on a Q8 row whose scale is negative or not finite.
pub fn decode_row(dtype: KvDtype, bytes: &[u8], out: &mut [f32]) -> Result<(), SnapshotError> {
    match dtype {
        KvDtype::F32 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(4)) {
                *o = f32::from_le_bytes([c[0], c[1], c[2], c[3]]);
            }
        }
        KvDtype::F16 => {
            for (o, c) in out.iter_mut().zip(bytes.chunks_exact(2)) {
                *o = half::f16::from_le_bytes([c[0], c[1]]).to_f32();
            }
        }
        KvDtype::Q8 => {
            let Some((s, q)) = bytes.split_first_chunk::<4>() else {
                return Err(SnapshotError::Malformed("short q8 row".into()));
            };
            let scale = f32::from_le_bytes(*s);
            if !(scale.is_finite() && scale >= 0.0) {
                return Err(SnapshotError::Malformed(format!("q8 row scale {scale}")));
            }
            for (o, &b) in out.iter_mut().zip(q) {
                *o = f32::from(i8::from_le_bytes([b])) * scale;
            }
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn header() -> SnapshotHeader {
        let layout = KvLayout {
            dtype: KvDtype::Q8,
            layers: 2,
            kv_heads: 3,
            head_dim: 4,
        };
        SnapshotHeader {
            version: VERSION,
            layout,
            has_logits: true,
            logits_len: 10,
            token_count: 5,
            first_position: 7,
            model: Fingerprint([1; 16]),
            tokenizer: Fingerprint([2; 16]),
            prefix: Fingerprint([3; 16]),
            kv_bytes: layout.tensor_bytes(5).unwrap(),
        }
    }

    #[test]
    fn header_round_trips_and_every_bit_flip_is_caught() {
        let h = header();
        let b = h.encode();
        assert_eq!(SnapshotHeader::decode(&b).unwrap(), h);
        for bit in 0..HEADER_LEN * 8 {
            let mut c = b;
            c[bit / 8] ^= 1 << (bit % 8);
            assert!(SnapshotHeader::decode(&c).is_err(), "bit {bit}");
        }
        for len in 0..HEADER_LEN {
            assert!(matches!(
                SnapshotHeader::decode(&b[..len]),
                Err(SnapshotError::Truncated { .. })
            ));
        }
    }

    #[test]
    fn sections_add_up() {
        let h = header();
        let s = h.sections().unwrap();
        assert_eq!(s.tensors, 128); // 96 + 20 rounded up to 64
        assert_eq!(s.logits - s.tensors, 5 * 2 * 2 * 3 * 8);
        assert_eq!(s.total, s.checksum + 32);
    }

    #[test]
    fn rows_round_trip_within_dtype_precision() {
        let row: Vec<f32> = (0..64).map(|i| (i as f32 - 31.5) * 0.37).collect();
        for (dtype, tol) in [
            (KvDtype::F32, 0.0),
            (KvDtype::F16, 6e-3),
            (KvDtype::Q8, 0.05),
        ] {
            let mut bytes = Vec::new();
            encode_row(dtype, &row, &mut bytes);
            assert_eq!(bytes.len(), row_bytes(dtype, 64));
            let mut back = vec![0f32; 64];
            decode_row(dtype, &bytes, &mut back).unwrap();
            let err = row
                .iter()
                .zip(&back)
                .map(|(a, b)| (a - b).abs())
                .fold(0f32, f32::max);
            assert!(err <= tol, "{dtype:?}: {err}");
        }
        let mut zeros = Vec::new();
        encode_row(KvDtype::Q8, &[0.0; 8], &mut zeros);
        let mut back = [1f32; 8];
        decode_row(KvDtype::Q8, &zeros, &mut back).unwrap();
        assert_eq!(back, [0.0; 8]);
    }
}
