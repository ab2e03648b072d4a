//! The MemCube: memkern's unit of memory, and its compact binary format.
//!
//! A cube is [`Metadata`] plus one [`Payload`] (plaintext, activation or
//! parametric memory), framed by a 16-byte checksummed header. The byte
//! layout and versioning rules are in `core/FORMAT.md`.
//!
//! Two views share one wire format:
//! - [`CubeRef`] borrows strings and vectors from the input (no heap);
//! - [`OwnedCube`] (feature `alloc`) owns them.

mod envelope;
mod error;
mod meta;
mod payload;
mod validate;

use serde::{Deserialize, Serialize};

pub use envelope::{
    FORMAT_VERSION, HEADER_LEN, Header, MAGIC, MAX_PAYLOAD_LEN, decode, decode_prefix, encode_into,
    encoded_len, verify,
};
#[cfg(feature = "alloc")]
pub use envelope::{decode_owned, encode_to_vec};
pub use error::{DecodeError, EncodeError, InvalidCube};
pub use meta::{
    AccessPolicy, BiTemporal, MAX_GRANTEES, MAX_PARENTS, MAX_SOURCE_REF_LEN, MAX_TAG_LEN, MAX_TAGS,
    Metadata, Provenance, Sensitivity, SourceKind, UsageStats, Visibility,
};
pub use payload::{
    Activation, AdapterFormat, BlobRef, ByteStorage, CubeKind, Embedding, Int8Vec, KvDtype,
    KvLayout, MAX_EMBEDDING_DIM, MAX_LORA_RANK, MAX_TEXT_LEN, Parametric, Plaintext, TargetModules,
};

/// One MemCube: metadata plus a payload, generic over how strings (`S`) and
/// byte vectors (`B`) are held.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(bound(
    serialize = "S: Serialize, B: AsRef<[u8]>",
    deserialize = "S: Deserialize<'de>, B: ByteStorage<'de>"
))]
pub struct Cube<S, B> {
    /// What every cube carries.
    pub meta: Metadata<S>,
    /// The memory itself.
    pub payload: Payload<S, B>,
}

/// The three kinds of memory a cube can hold.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
#[serde(bound(
    serialize = "S: Serialize, B: AsRef<[u8]>",
    deserialize = "S: Deserialize<'de>, B: ByteStorage<'de>"
))]
pub enum Payload<S, B> {
    /// Text (and embedding) memory.
    Plaintext(Plaintext<S, B>),
    /// KV-cache snapshot memory.
    Activation(Activation),
    /// LoRA adapter memory.
    Parametric(Parametric),
}

/// A cube decoded in place from a byte slice.
pub type CubeRef<'a> = Cube<&'a str, &'a [u8]>;

/// A cube that owns its strings and vectors.
#[cfg(feature = "alloc")]
pub type OwnedCube = Cube<alloc::string::String, alloc::vec::Vec<u8>>;

impl<S, B> Cube<S, B> {
    /// The payload kind (stored in the header).
    pub fn kind(&self) -> CubeKind {
        match self.payload {
            Payload::Plaintext(_) => CubeKind::Plaintext,
            Payload::Activation(_) => CubeKind::Activation,
            Payload::Parametric(_) => CubeKind::Parametric,
        }
    }

    /// The plaintext payload, if this is a plaintext cube.
    pub fn plaintext(&self) -> Option<&Plaintext<S, B>> {
        match &self.payload {
            Payload::Plaintext(p) => Some(p),
            _ => None,
        }
    }
}
