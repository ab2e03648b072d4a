//! The three payload kinds: plaintext, activation (KV-cache) and parametric
//! (LoRA adapter) memory.
//!
//! Large tensors never live inside a cube: activation and parametric cubes
//! hold a [`BlobRef`] to a content-addressed blob, so cubes stay small enough
//! for an MCU's flash log.

use core::fmt;

use serde::de::{self, SeqAccess, Visitor};
use serde::{Deserialize, Deserializer, Serialize, Serializer};

use crate::ids::{BlobDigest, Fingerprint};

/// Longest plaintext, in UTF-8 bytes.
pub const MAX_TEXT_LEN: usize = 64 * 1024;
/// Largest embedding dimension accepted.
pub const MAX_EMBEDDING_DIM: usize = 4096;
/// Largest LoRA rank accepted.
pub const MAX_LORA_RANK: u16 = 1024;

/// Which payload a cube carries; stored in the envelope header.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum CubeKind {
    /// Text with an optional embedding.
    Plaintext = 1,
    /// A KV-cache snapshot of memory text.
    Activation = 2,
    /// A LoRA adapter.
    Parametric = 3,
}

impl CubeKind {
    /// The header byte for this kind.
    pub fn to_byte(self) -> u8 {
        self as u8
    }

    /// Parses the header byte; `None` for unknown kinds.
    pub fn from_byte(b: u8) -> Option<Self> {
        match b {
            1 => Some(CubeKind::Plaintext),
            2 => Some(CubeKind::Activation),
            3 => Some(CubeKind::Parametric),
            _ => None,
        }
    }
}

/// Plaintext memory: a fact or a dialogue turn.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(bound(
    serialize = "S: Serialize, B: AsRef<[u8]>",
    deserialize = "S: Deserialize<'de>, B: ByteStorage<'de>"
))]
pub struct Plaintext<S, B> {
    /// The memory text (UTF-8, at most [`MAX_TEXT_LEN`] bytes).
    pub text: S,
    /// The text's embedding, if computed.
    pub embedding: Option<Embedding<B>>,
}

/// An int8-quantised embedding: `value[i] ≈ values[i] as f32 * scale`.
///
/// Int8 with one scale per vector is 4× smaller than f32 and lets an MCU do
/// integer dot products.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(bound(serialize = "B: AsRef<[u8]>", deserialize = "B: ByteStorage<'de>"))]
pub struct Embedding<B> {
    /// Fingerprint of the embedder that produced it (vectors from different
    /// embedders are not comparable).
    pub embedder: Fingerprint,
    /// Dequantisation scale (finite, > 0).
    pub scale: f32,
    /// The int8 components.
    pub values: Int8Vec<B>,
}

/// Int8 components stored as bytes (`&[u8]` borrowed or `Vec<u8>` owned).
///
/// Serialized as raw bytes in binary formats and as a list of signed
/// integers in human-readable ones (JSON).
#[derive(Clone, PartialEq, Eq)]
pub struct Int8Vec<B>(pub B);

impl<B: AsRef<[u8]>> Int8Vec<B> {
    /// Number of components.
    pub fn len(&self) -> usize {
        self.0.as_ref().len()
    }

    /// True when there are no components.
    pub fn is_empty(&self) -> bool {
        self.0.as_ref().is_empty()
    }

    /// The components as signed bytes.
    pub fn as_i8(&self) -> &[i8] {
        let b = self.0.as_ref();
        // SAFETY: i8 and u8 have identical size, alignment and validity (every
        // bit pattern is valid for both), so reinterpreting the slice is sound.
        unsafe { core::slice::from_raw_parts(b.as_ptr().cast::<i8>(), b.len()) }
    }
}

impl<B: fmt::Debug> fmt::Debug for Int8Vec<B> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_tuple("Int8Vec").field(&self.0).finish()
    }
}

#[cfg(feature = "defmt")]
impl<B: defmt::Format> defmt::Format for Int8Vec<B> {
    fn format(&self, f: defmt::Formatter<'_>) {
        defmt::write!(f, "Int8Vec({})", self.0);
    }
}

impl<B: AsRef<[u8]>> Serialize for Int8Vec<B> {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        if s.is_human_readable() {
            s.collect_seq(self.as_i8())
        } else {
            s.serialize_bytes(self.0.as_ref())
        }
    }
}

/// Byte containers an [`Int8Vec`] can be decoded into.
pub trait ByteStorage<'de>: Sized {
    /// Build from bytes borrowed from the input (zero-copy).
    fn from_borrowed(b: &'de [u8]) -> Option<Self>;
    /// Build from transient bytes or a sequence; only owned storage can.
    fn from_transient(b: &[u8]) -> Option<Self>;
    /// Build from a sequence of signed values (human-readable formats).
    fn from_seq<A: SeqAccess<'de>>(seq: A) -> Result<Self, A::Error>;
}

impl<'de> ByteStorage<'de> for &'de [u8] {
    fn from_borrowed(b: &'de [u8]) -> Option<Self> {
        Some(b)
    }
    fn from_transient(_: &[u8]) -> Option<Self> {
        None
    }
    fn from_seq<A: SeqAccess<'de>>(_: A) -> Result<Self, A::Error> {
        Err(de::Error::custom(
            "borrowed int8 vectors need a binary format",
        ))
    }
}

#[cfg(feature = "alloc")]
impl<'de> ByteStorage<'de> for alloc::vec::Vec<u8> {
    fn from_borrowed(b: &'de [u8]) -> Option<Self> {
        Some(b.to_vec())
    }
    fn from_transient(b: &[u8]) -> Option<Self> {
        Some(b.to_vec())
    }
    fn from_seq<A: SeqAccess<'de>>(mut seq: A) -> Result<Self, A::Error> {
        // Cap the pre-allocation: the hint comes from untrusted input.
        let cap = seq.size_hint().unwrap_or(0).min(MAX_EMBEDDING_DIM);
        let mut out = alloc::vec::Vec::with_capacity(cap);
        while let Some(v) = seq.next_element::<i8>()? {
            if out.len() >= MAX_EMBEDDING_DIM {
                return Err(de::Error::custom("embedding too long"));
            }
            out.push(v.to_ne_bytes()[0]);
        }
        Ok(out)
    }
}

impl<'de, B: ByteStorage<'de>> Deserialize<'de> for Int8Vec<B> {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V<B>(core::marker::PhantomData<B>);
        impl<'de, B: ByteStorage<'de>> Visitor<'de> for V<B> {
            type Value = B;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("int8 vector")
            }
            fn visit_borrowed_bytes<E: de::Error>(self, v: &'de [u8]) -> Result<B, E> {
                B::from_borrowed(v).ok_or_else(|| E::custom("cannot hold int8 vector"))
            }
            fn visit_bytes<E: de::Error>(self, v: &[u8]) -> Result<B, E> {
                B::from_transient(v)
                    .ok_or_else(|| E::custom("int8 vector must be borrowed from the input"))
            }
            fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<B, A::Error> {
                B::from_seq(seq)
            }
        }
        let v = V::<B>(core::marker::PhantomData);
        if d.is_human_readable() {
            d.deserialize_seq(v).map(Int8Vec)
        } else {
            d.deserialize_bytes(v).map(Int8Vec)
        }
    }
}

/// Activation memory: the identity of a KV-cache snapshot blob.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Activation {
    /// Fingerprint of the model whose KV cache this is.
    pub model: Fingerprint,
    /// Fingerprint of the tokenizer that produced the token ids.
    pub tokenizer: Fingerprint,
    /// Number of cached tokens (> 0).
    pub token_count: u32,
    /// Absolute position of the first cached token.
    pub first_position: u32,
    /// Shape and element type of the cache.
    pub layout: KvLayout,
    /// Bytes of KV tensor data; must equal [`KvLayout::tensor_bytes`].
    pub kv_bytes: u64,
    /// The snapshot blob (header + tensors), at least `kv_bytes` long.
    pub blob: BlobRef,
}

/// Element type of a KV cache.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum KvDtype {
    /// 4-byte IEEE floats.
    F32,
    /// 2-byte IEEE half floats.
    F16,
    /// int8 with one f32 scale per row of `head_dim` values.
    Q8,
}

/// Shape of a KV cache: per token, per layer, K and V for each KV head.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct KvLayout {
    /// Element type.
    pub dtype: KvDtype,
    /// Number of transformer layers (> 0).
    pub layers: u16,
    /// Number of KV heads per layer (> 0).
    pub kv_heads: u16,
    /// Values per head (> 0).
    pub head_dim: u16,
}

impl KvLayout {
    /// Bytes of tensor data for `tokens` tokens, or `None` on overflow.
    ///
    /// Rows = tokens × layers × 2 (K and V) × kv_heads, each of `head_dim`
    /// values; Q8 rows carry an extra 4-byte f32 scale.
    pub fn tensor_bytes(&self, tokens: u32) -> Option<u64> {
        let rows = u64::from(tokens)
            .checked_mul(u64::from(self.layers))?
            .checked_mul(2)?
            .checked_mul(u64::from(self.kv_heads))?;
        let row_bytes = match self.dtype {
            KvDtype::F32 => u64::from(self.head_dim) * 4,
            KvDtype::F16 => u64::from(self.head_dim) * 2,
            KvDtype::Q8 => u64::from(self.head_dim) + 4,
        };
        rows.checked_mul(row_bytes)
    }
}

/// A reference to a content-addressed blob (snapshot or adapter weights).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct BlobRef {
    /// SHA-256 of the blob: its address and its checksum.
    pub digest: BlobDigest,
    /// Size of the blob in bytes (> 0).
    pub size: u64,
}

/// File format of adapter weights.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum AdapterFormat {
    /// LoRA A/B matrices in a safetensors file.
    SafetensorsLora,
    /// llama.cpp's GGUF LoRA adapter format.
    GgufLora,
}

/// Parametric memory: a LoRA adapter for a specific base model.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Parametric {
    /// Fingerprint of the base model the adapter was trained on.
    pub base_model: Fingerprint,
    /// Weight file format.
    pub format: AdapterFormat,
    /// LoRA rank (1..=[`MAX_LORA_RANK`]).
    pub rank: u16,
    /// LoRA alpha (finite, > 0); the update is scaled by alpha / rank.
    pub alpha: f32,
    /// Which projections the adapter modifies (non-empty).
    pub targets: TargetModules,
    /// The weights blob.
    pub blob: BlobRef,
}

/// A set of transformer projections, as a bit set.
#[derive(Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(transparent)]
pub struct TargetModules(pub u16);

impl TargetModules {
    /// Attention query projection.
    pub const Q: Self = Self(1 << 0);
    /// Attention key projection.
    pub const K: Self = Self(1 << 1);
    /// Attention value projection.
    pub const V: Self = Self(1 << 2);
    /// Attention output projection.
    pub const O: Self = Self(1 << 3);
    /// MLP gate projection.
    pub const GATE: Self = Self(1 << 4);
    /// MLP up projection.
    pub const UP: Self = Self(1 << 5);
    /// MLP down projection.
    pub const DOWN: Self = Self(1 << 6);
    /// All bits defined by format version 1.
    pub const ALL: Self = Self(0x7f);
    /// The names, in bit order.
    pub const NAMES: [&'static str; 7] = ["q", "k", "v", "o", "gate", "up", "down"];

    /// Union of two sets.
    pub const fn union(self, other: Self) -> Self {
        Self(self.0 | other.0)
    }

    /// True when every module of `other` is in `self`.
    pub const fn contains(self, other: Self) -> bool {
        self.0 & other.0 == other.0
    }

    /// True when no module is selected.
    pub const fn is_empty(self) -> bool {
        self.0 == 0
    }

    /// Bits not defined by this format version.
    pub const fn unknown_bits(self) -> u16 {
        self.0 & !Self::ALL.0
    }
}

impl fmt::Debug for TargetModules {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let mut first = true;
        for (i, name) in Self::NAMES.iter().enumerate() {
            if self.0 & (1 << i) != 0 {
                if !first {
                    f.write_str("|")?;
                }
                f.write_str(name)?;
                first = false;
            }
        }
        if self.unknown_bits() != 0 {
            write!(f, "|0x{:x}", self.unknown_bits())?;
        }
        Ok(())
    }
}
