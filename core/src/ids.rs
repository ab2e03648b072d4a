//! Identifiers shared by every layer: cubes, users, namespaces, fingerprints.
//!
//! They exist so that a user id can never be passed where a cube id is
//! expected; each is a distinct newtype with a compact binary form and a
//! readable (hex or decimal) JSON form.

use core::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// Writes `bytes` as lowercase hex into a formatter.
fn write_hex(f: &mut fmt::Formatter<'_>, bytes: &[u8]) -> fmt::Result {
    for b in bytes {
        write!(f, "{b:02x}")?;
    }
    Ok(())
}

/// Parses exactly `N` bytes of hex; `None` on any other length or digit.
fn parse_hex<const N: usize>(s: &str) -> Option<[u8; N]> {
    let s = s.as_bytes();
    if s.len() != 2 * N {
        return None;
    }
    let mut out = [0u8; N];
    for (i, pair) in s.chunks_exact(2).enumerate() {
        let hi = (pair[0] as char).to_digit(16)?;
        let lo = (pair[1] as char).to_digit(16)?;
        // Both digits are < 16, so the value is < 256 and fits a byte.
        out[i] = (hi * 16 + lo) as u8;
    }
    Some(out)
}

/// Serde visitor for `[u8; N]` given as a hex string (human-readable formats)
/// or as a fixed-size tuple of bytes (postcard).
macro_rules! hex_bytes_newtype {
    ($(#[$doc:meta])* $name:ident, $n:expr) => {
        $(#[$doc])*
        #[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
        pub struct $name(pub [u8; $n]);

        impl $name {
            /// Number of bytes in the binary form.
            pub const LEN: usize = $n;

            /// Parses the lowercase or uppercase hex form.
            pub fn from_hex(s: &str) -> Option<Self> {
                parse_hex::<$n>(s).map(Self)
            }
        }

        impl fmt::Debug for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                write_hex(f, &self.0)
            }
        }

        #[cfg(feature = "defmt")]
        impl defmt::Format for $name {
            fn format(&self, f: defmt::Formatter<'_>) {
                defmt::write!(f, "{=[u8]:02x}", &self.0[..]);
            }
        }

        impl Serialize for $name {
            fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
                if s.is_human_readable() {
                    s.collect_str(self)
                } else {
                    self.0.serialize(s)
                }
            }
        }

        impl<'de> Deserialize<'de> for $name {
            fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
                if d.is_human_readable() {
                    struct V;
                    impl serde::de::Visitor<'_> for V {
                        type Value = $name;
                        fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                            write!(f, "{} hex digits", 2 * $n)
                        }
                        fn visit_str<E: serde::de::Error>(self, v: &str) -> Result<$name, E> {
                            $name::from_hex(v).ok_or_else(|| E::invalid_value(serde::de::Unexpected::Str(v), &self))
                        }
                    }
                    d.deserialize_str(V)
                } else {
                    <[u8; $n]>::deserialize(d).map(Self)
                }
            }
        }
    };
}

hex_bytes_newtype!(
    /// 128-bit identity of one cube version. Random (or hash-derived) on the
    /// platform; the core never generates ids itself.
    CubeId,
    16
);

hex_bytes_newtype!(
    /// 128-bit fingerprint of a model, tokenizer or embedder (a truncated
    /// cryptographic hash computed by the platform), so a cube can refuse to
    /// be used with the wrong model.
    Fingerprint,
    16
);

hex_bytes_newtype!(
    /// SHA-256 of a blob's bytes: the blob's content address *and* its checksum.
    BlobDigest,
    32
);

/// A user (principal) of the memory system.
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct UserId(pub u64);

/// A cube namespace: the unit of sharing and export (one user may own several).
#[derive(
    Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct NamespaceId(pub u64);

impl fmt::Display for UserId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "user:{}", self.0)
    }
}

impl fmt::Display for NamespaceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "ns:{}", self.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_round_trip() {
        let id = CubeId([0xab; 16]);
        let s = serde_json::to_string(&id).expect("serialize");
        assert_eq!(s, "\"abababababababababababababababab\"");
        let back: CubeId = serde_json::from_str(&s).expect("deserialize");
        assert_eq!(back, id);
        assert!(CubeId::from_hex("zz").is_none());
        assert!(CubeId::from_hex("ab").is_none());
    }

    #[test]
    fn binary_form_is_raw_bytes() {
        let id = CubeId([7; 16]);
        let mut buf = [0u8; 32];
        let used = postcard::to_slice(&id, &mut buf).expect("fits");
        assert_eq!(used.len(), 16);
    }
}
