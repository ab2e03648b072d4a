//! Memory modules: knowledge a publisher packages and signs, which a
//! device installs as a read-only cube in the retrieval scope of the users
//! it was installed for (or of everyone, `--global`).
//!
//! Exists so expert knowledge travels like software: a versioned, signed
//! file with a manifest, installed only from publishers the device trusts,
//! updated without a window where it is missing, removed without residue.
//!
//! File layout (FORMAT.md, "Module files"): the signed container of
//! [`crate::pack`] with magic `MKMODL02` (`MKMODL01`, without
//! derivatives, is still read); the body is the postcard-encoded
//! [`ModuleBody`]. A module must be signed, by the key its manifest names.

mod build;
pub mod index;
mod install;
pub(crate) mod manifest;
pub mod seal;

pub use build::{
    BuildReport, Extras, Item, build_module, chunk_file, items_from_dir, items_from_json,
    items_from_pack,
};
pub use install::{DerivedSummary, InstallAction, InstallReport, ModuleInfo, RemoveReport, Scope};
pub use manifest::{MAX_DESCRIPTION, MAX_FIELD, Manifest};

use std::collections::HashSet;

use memkern_core::cube::{self, Payload};
use memkern_core::ids::CubeId;
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::pack::{seal, unseal};
use crate::tables::{decode, encode};
use crate::{Result, RuntimeError};
use ed25519_dalek::SigningKey;

/// The container magic of a module file (format version 2, written).
pub const MAGIC: &[u8; 8] = b"MKMODL02";
/// The magic of format version 1 (plaintext only), still read.
pub const MAGIC_V1: &[u8; 8] = b"MKMODL01";

/// The signed content of a module file.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct ModuleBody {
    /// What it is.
    pub manifest: Manifest,
    /// Release time (ms since the epoch): every memory's event time.
    pub released_ms: i64,
    /// One encoded plaintext cube per memory (ids unique in the module;
    /// an install gives them ids of the namespace it creates).
    pub memories: Vec<Vec<u8>>,
    /// Model-bound derivatives of those memories: KV blocks and LoRA
    /// adapters, each for the model fingerprint its cube names.
    pub derived: Vec<Derived>,
}

/// One model-bound derivative in a module: why it exists is that a KV
/// block or an adapter only means something for the model it was made
/// with, so it travels with that model's fingerprint (inside the cube).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Derived {
    /// The encoded Activation (KV block) or Parametric (adapter) cube;
    /// its provenance parents are memories of the module.
    pub cube: Vec<u8>,
    /// The blob it references (snapshot file or safetensors adapter).
    pub blob: Vec<u8>,
}

/// What a derivative is, for reports.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum DerivedKind {
    /// A KV-cache snapshot of a prompt prefix holding module memories.
    KvBlock,
    /// A LoRA adapter applied to the model for the module's users.
    Adapter,
}

impl DerivedKind {
    /// How reports name it.
    pub fn name(self) -> &'static str {
        match self {
            DerivedKind::KvBlock => "KV block",
            DerivedKind::Adapter => "adapter",
        }
    }
}

/// Format version 1's body (no derivatives).
#[derive(Deserialize)]
struct ModuleBodyV1 {
    manifest: Manifest,
    released_ms: i64,
    memories: Vec<Vec<u8>>,
}

/// What derivative cube `c` is, the model it is for and its blob (None:
/// not a derivative).
pub(crate) fn describe(
    c: &cube::OwnedCube,
) -> Option<(DerivedKind, memkern_core::ids::Fingerprint, cube::BlobRef)> {
    match &c.payload {
        Payload::Activation(a) => Some((DerivedKind::KvBlock, a.model, a.blob)),
        Payload::Parametric(p) => Some((DerivedKind::Adapter, p.base_model, p.blob)),
        Payload::Plaintext(_) => None,
    }
}

/// Checks derivative `d`: a KV block or adapter cube whose blob matches
/// it and whose parents are among the module's `memories`.
fn check_derived(d: &Derived, memories: &HashSet<CubeId>) -> Result<()> {
    let bad = |m: String| RuntimeError::Invalid(format!("module: derivative: {m}"));
    let c = cube::decode_owned(&d.cube).map_err(|e| bad(format!("invalid cube: {e}")))?;
    let (kind, _, blob) = describe(&c).ok_or_else(|| bad("a plaintext cube".to_owned()))?;
    let digest: [u8; 32] = Sha256::digest(&d.blob).into();
    if blob.size != d.blob.len() as u64 || blob.digest.0 != digest {
        return Err(bad(format!(
            "{} {}: its blob does not match the cube (damaged)",
            kind.name(),
            c.meta.id
        )));
    }
    let parents = &c.meta.provenance.parents;
    if parents.is_empty() || parents.iter().any(|p| !memories.contains(p)) {
        return Err(bad(format!(
            "{} {} is not derived from the module's memories",
            kind.name(),
            c.meta.id
        )));
    }
    Ok(())
}

/// Encodes and signs a module file. The manifest's publisher must be
/// `key`'s public key.
pub fn encode_module(body: &ModuleBody, key: &SigningKey) -> Result<Vec<u8>> {
    body.manifest.check()?;
    let public = crate::hex(key.verifying_key().as_bytes());
    if !public.eq_ignore_ascii_case(&body.manifest.publisher) {
        return Err(RuntimeError::Invalid(format!(
            "module: the manifest names publisher {} but the key is {public}",
            body.manifest.publisher
        )));
    }
    let b = encode(body).map_err(|e| RuntimeError::Invalid(format!("module: encoding: {e}")))?;
    Ok(seal(MAGIC, &b, Some(key)))
}

/// Decodes and verifies a module file: structure, checksum, signature,
/// manifest, that the manifest's publisher signed it, and that every
/// derivative matches its blob and derives from the module's memories.
/// Trust in that publisher is the installer's question.
pub fn decode_module(bytes: &[u8]) -> Result<ModuleBody> {
    let bad = |m: String| RuntimeError::Invalid(format!("module: {m}"));
    let v1 = bytes.starts_with(MAGIC_V1);
    let (body, signer) = unseal(if v1 { MAGIC_V1 } else { MAGIC }, bytes, "module")?;
    let signer = signer
        .ok_or_else(|| bad("unsigned: a module must be signed by its publisher".to_owned()))?;
    let body: ModuleBody = if v1 {
        let b: ModuleBodyV1 = decode(body).map_err(|e| bad(format!("body: {e}")))?;
        ModuleBody {
            manifest: b.manifest,
            released_ms: b.released_ms,
            memories: b.memories,
            derived: Vec::new(),
        }
    } else {
        decode(body).map_err(|e| bad(format!("body: {e}")))?
    };
    body.manifest.check()?;
    if !body.derived.is_empty() {
        let ids = body
            .memories
            .iter()
            .map(|m| {
                cube::decode_owned(m)
                    .map(|c| c.meta.id)
                    .map_err(|e| bad(format!("invalid memory: {e}")))
            })
            .collect::<Result<HashSet<_>>>()?;
        for d in &body.derived {
            check_derived(d, &ids)?;
        }
    }
    if !signer.eq_ignore_ascii_case(&body.manifest.publisher) {
        return Err(bad(format!(
            "signed by {signer}, but the manifest names publisher {}",
            body.manifest.publisher
        )));
    }
    Ok(body)
}

/// Parses a publisher key given on a command line or over HTTP: 64 hex
/// digits, lowercased.
pub fn parse_publisher(key: &str) -> Result<String> {
    let k = key.trim();
    let bytes = crate::pack::parse_hex::<32>(k, "the publisher key")?;
    ed25519_dalek::VerifyingKey::from_bytes(&bytes).map_err(|_| {
        RuntimeError::Invalid("the publisher key is not a valid ed25519 key".to_owned())
    })?;
    Ok(k.to_ascii_lowercase())
}
