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
mod install;

pub use build::{BuildReport, Item, build_module, items_from_dir, items_from_json};
pub use install::{InstallAction, InstallReport, ModuleInfo, RemoveReport, Scope};

use serde::{Deserialize, Serialize};

use crate::pack::{seal, unseal};
use crate::tables::{decode, encode};
use crate::{Result, RuntimeError};
use ed25519_dalek::SigningKey;

/// The container magic of a module file (format version 1).
pub const MAGIC: &[u8; 8] = b"MKMODL01";
/// Longest id, name, licence or language tag.
pub const MAX_FIELD: usize = 128;
/// Longest description.
pub const MAX_DESCRIPTION: usize = 4096;

/// What a module is and who vouches for it, signed with its memories.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub struct Manifest {
    /// Stable identifier: 1–128 of `a–z 0–9 - _ .` (`memkern-manual`).
    pub id: String,
    /// Human-readable name.
    pub name: String,
    /// Semantic version (`1.2.0`); an install never goes backwards.
    pub version: String,
    /// The publisher's ed25519 public key (64 hex digits): the signer.
    pub publisher: String,
    /// SPDX licence id or the licence's text.
    pub licence: String,
    /// What it knows.
    pub description: String,
    /// BCP 47 language tag of the memories (`en`).
    pub language: String,
}

impl Manifest {
    /// Checks every field; returns the parsed version.
    pub fn check(&self) -> Result<semver::Version> {
        let bad = |m: String| RuntimeError::Invalid(format!("module manifest: {m}"));
        let id_ok = !self.id.is_empty()
            && self.id.len() <= MAX_FIELD
            && self.id.chars().all(|c| {
                c.is_ascii_lowercase() || c.is_ascii_digit() || matches!(c, '-' | '_' | '.')
            });
        if !id_ok {
            return Err(bad(format!(
                "id {:?}: use 1–{MAX_FIELD} of a–z 0–9 - _ .",
                self.id
            )));
        }
        for (what, v) in [
            ("name", &self.name),
            ("licence", &self.licence),
            ("language", &self.language),
        ] {
            if v.trim().is_empty() || v.len() > MAX_FIELD && what != "licence" {
                return Err(bad(format!("{what} must be 1–{MAX_FIELD} bytes")));
            }
        }
        if self.licence.len() > MAX_DESCRIPTION || self.description.len() > MAX_DESCRIPTION {
            return Err(bad(format!(
                "licence and description are at most {MAX_DESCRIPTION} bytes"
            )));
        }
        if self.publisher.len() != 64 || !self.publisher.bytes().all(|b| b.is_ascii_hexdigit()) {
            return Err(bad("publisher must be a 64-hex-digit public key".to_owned()));
        }
        semver::Version::parse(&self.version)
            .map_err(|e| bad(format!("version {:?} is not semver: {e}", self.version)))
    }
}

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
