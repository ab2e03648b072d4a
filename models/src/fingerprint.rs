//! 128-bit content fingerprints and lowercase-hex helpers.
//!
//! A fingerprint names the exact model or tokenizer a piece of derived data
//! (a KV-cache snapshot, an embedding) was computed with, so stale data can
//! be recognised and dropped when the model changes.

use std::fmt;

use sha2::{Digest, Sha256};

/// A 128-bit content fingerprint: the first 16 bytes of a SHA-256.
///
/// Exists so derived data can record which model produced it; 128 bits keep
/// accidental collisions out of reach while staying short to store.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Fingerprint(pub [u8; 16]);

impl Fingerprint {
    /// Truncates a finished SHA-256 to a fingerprint; the single place where
    /// the truncation rule lives.
    pub(crate) fn from_sha256(hasher: Sha256) -> Self {
        let digest = hasher.finalize();
        let mut out = [0u8; 16];
        out.copy_from_slice(&digest[..16]);
        Self(out)
    }

    /// Parses 32 hex digits (as [`Self::to_hex`] writes them); `None` for
    /// anything else.
    pub fn from_hex(s: &str) -> Option<Self> {
        let b = s.as_bytes();
        if b.len() != 32 {
            return None;
        }
        let mut out = [0u8; 16];
        for (o, pair) in out.iter_mut().zip(b.chunks_exact(2)) {
            let hi = char::from(pair[0]).to_digit(16)?;
            let lo = char::from(pair[1]).to_digit(16)?;
            *o = (hi * 16 + lo) as u8;
        }
        Some(Self(out))
    }

    /// The fingerprint as 32 lowercase hex digits, for logs and file names.
    pub fn to_hex(&self) -> String {
        to_hex(&self.0)
    }
}

impl fmt::Display for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_hex())
    }
}

impl fmt::Debug for Fingerprint {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "Fingerprint({})", self.to_hex())
    }
}

/// Lowercase hex of `bytes`; used for SHA-256 digests in logs and manifests.
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut s = String::with_capacity(bytes.len() * 2);
    for &b in bytes {
        s.push(char::from(DIGITS[usize::from(b >> 4)]));
        s.push(char::from(DIGITS[usize::from(b & 0x0f)]));
    }
    s
}

/// Length-prefixed update, so that concatenated fields cannot alias
/// ("ab"+"c" vs "a"+"bc").
pub(crate) fn update_framed(hasher: &mut Sha256, bytes: &[u8]) {
    hasher.update((bytes.len() as u64).to_le_bytes());
    hasher.update(bytes);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_is_lowercase_and_complete() {
        assert_eq!(to_hex(&[0x00, 0x0f, 0xa5, 0xff]), "000fa5ff");
    }

    #[test]
    fn fingerprint_is_sha256_prefix() {
        let mut h = Sha256::new();
        h.update(b"abc");
        let fp = Fingerprint::from_sha256(h);
        assert_eq!(fp.to_hex(), "ba7816bf8f01cfea414140de5dae2223");
    }
}
