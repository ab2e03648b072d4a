//! Memory modules: knowledge a publisher packages and signs, which a
//! device installs as a read-only cube in the retrieval scope of the users
//! it was installed for (or of everyone, `--global`).
//!
//! Exists so expert knowledge travels like software: a versioned, signed
//! file with a manifest, installed only from publishers the device trusts,
//! updated without a window where it is missing, removed without residue.
//!
//! File layout (FORMAT.md, "Module files"): the signed container of
//! [`crate::pack`] with magic `MKMODL01`; the body is the postcard-encoded
//! [`ModuleBody`]. A module must be signed, by the key its manifest names.

mod build;
pub mod index;
mod install;
pub(crate) mod manifest;
pub mod seal;

pub use build::{BuildReport, Item, build_module, chunk_file, items_from_dir, items_from_json};
pub use install::{InstallAction, InstallReport, ModuleInfo, RemoveReport, Scope};
pub use manifest::{MAX_DESCRIPTION, MAX_FIELD, Manifest};

use serde::{Deserialize, Serialize};

use crate::pack::{seal, unseal};
use crate::tables::{decode, encode};
use crate::{Result, RuntimeError};
use ed25519_dalek::SigningKey;

/// The container magic of a module file (format version 1).
pub const MAGIC: &[u8; 8] = b"MKMODL01";
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
/// manifest, and that the manifest's publisher signed it. Trust in that
/// publisher is the installer's question.
pub fn decode_module(bytes: &[u8]) -> Result<ModuleBody> {
    let bad = |m: String| RuntimeError::Invalid(format!("module: {m}"));
    let (body, signer) = unseal(MAGIC, bytes, "module")?;
    let signer = signer
        .ok_or_else(|| bad("unsigned: a module must be signed by its publisher".to_owned()))?;
    let body: ModuleBody = decode(body).map_err(|e| bad(format!("body: {e}")))?;
    body.manifest.check()?;
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
