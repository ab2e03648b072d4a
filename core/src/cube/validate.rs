//! Semantic rules every cube obeys, checked on encode *and* decode so that
//! memkern never writes a cube it would refuse to read.

use super::error::InvalidCube;
use super::meta::{MAX_SOURCE_REF_LEN, MAX_TAG_LEN, Metadata};
use super::payload::{
    Activation, Embedding, MAX_EMBEDDING_DIM, MAX_LORA_RANK, MAX_TEXT_LEN, Parametric, Plaintext,
};
use super::{Cube, Payload};
use crate::lifecycle::LifecycleState;

impl<S: AsRef<str>> Metadata<S> {
    /// Checks the metadata rules (version links, tag and reference lengths,
    /// time order).
    pub fn validate(&self) -> Result<(), InvalidCube> {
        if self.version == 0 {
            return Err(InvalidCube::ZeroVersion);
        }
        if (self.version == 1) == self.previous.is_some() {
            return Err(InvalidCube::VersionLink {
                version: self.version,
                has_previous: self.previous.is_some(),
            });
        }
        if self.previous == Some(self.id) || self.provenance.parents.contains(&self.id) {
            return Err(InvalidCube::SelfReference);
        }
        if self
            .time
            .valid_until
            .is_some_and(|until| until < self.time.event_time)
        {
            return Err(InvalidCube::ValidityInverted);
        }
        for tag in &self.tags {
            let len = tag.as_ref().len();
            if len == 0 || len > MAX_TAG_LEN {
                return Err(InvalidCube::TagLength {
                    len,
                    max: MAX_TAG_LEN,
                });
            }
        }
        if let Some(r) = &self.provenance.source_ref {
            let len = r.as_ref().len();
            if len > MAX_SOURCE_REF_LEN {
                return Err(InvalidCube::SourceRefTooLong {
                    len,
                    max: MAX_SOURCE_REF_LEN,
                });
            }
        }
        Ok(())
    }
}

impl<S: AsRef<str>, B: AsRef<[u8]>> Plaintext<S, B> {
    fn validate(&self, state: LifecycleState) -> Result<(), InvalidCube> {
        let len = self.text.as_ref().len();
        if len > MAX_TEXT_LEN {
            return Err(InvalidCube::TextTooLong {
                len,
                max: MAX_TEXT_LEN,
            });
        }
        if state == LifecycleState::Deleted && (len != 0 || self.embedding.is_some()) {
            return Err(InvalidCube::TombstoneWithContent);
        }
        if let Some(e) = &self.embedding {
            e.validate()?;
        }
        Ok(())
    }
}

impl<B: AsRef<[u8]>> Embedding<B> {
    fn validate(&self) -> Result<(), InvalidCube> {
        let dim = self.values.len();
        if dim == 0 || dim > MAX_EMBEDDING_DIM {
            return Err(InvalidCube::EmbeddingDim {
                dim,
                max: MAX_EMBEDDING_DIM,
            });
        }
        if !(self.scale.is_finite() && self.scale > 0.0) {
            return Err(InvalidCube::EmbeddingScale);
        }
        Ok(())
    }
}

impl Activation {
    /// Checks that the layout is non-degenerate and matches the data size.
    pub fn validate(&self) -> Result<(), InvalidCube> {
        let l = &self.layout;
        if self.token_count == 0 || l.layers == 0 || l.kv_heads == 0 || l.head_dim == 0 {
            return Err(InvalidCube::EmptyLayout);
        }
        if self.first_position.checked_add(self.token_count).is_none() {
            return Err(InvalidCube::PositionOverflow);
        }
        let expected = l.tensor_bytes(self.token_count);
        if expected != Some(self.kv_bytes) {
            return Err(InvalidCube::KvSizeMismatch {
                declared: self.kv_bytes,
                expected: expected.unwrap_or(u64::MAX),
            });
        }
        if self.blob.size < self.kv_bytes {
            return Err(InvalidCube::BlobTooSmall {
                size: self.blob.size,
                needed: self.kv_bytes,
            });
        }
        Ok(())
    }
}

impl Parametric {
    /// Checks rank, alpha, targets and blob size.
    pub fn validate(&self) -> Result<(), InvalidCube> {
        if self.rank == 0 || self.rank > MAX_LORA_RANK {
            return Err(InvalidCube::LoraRank {
                rank: self.rank,
                max: MAX_LORA_RANK,
            });
        }
        if !(self.alpha.is_finite() && self.alpha > 0.0) {
            return Err(InvalidCube::LoraAlpha);
        }
        if self.targets.is_empty() || self.targets.unknown_bits() != 0 {
            return Err(InvalidCube::LoraTargets {
                bits: self.targets.0,
            });
        }
        if self.blob.size == 0 {
            return Err(InvalidCube::BlobTooSmall { size: 0, needed: 1 });
        }
        Ok(())
    }
}

impl<S: AsRef<str>, B: AsRef<[u8]>> Cube<S, B> {
    /// Checks every semantic rule of the format.
    pub fn validate(&self) -> Result<(), InvalidCube> {
        self.meta.validate()?;
        match &self.payload {
            Payload::Plaintext(p) => p.validate(self.meta.lifecycle),
            Payload::Activation(a) => a.validate(),
            Payload::Parametric(p) => p.validate(),
        }
    }
}
