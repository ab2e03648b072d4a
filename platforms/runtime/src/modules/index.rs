//! Module indexes: a publisher's signed JSON list of modules (id, name,
//! version, URL, SHA-256, publisher key) that devices read to find,
//! install and update modules by name.
//!
//! Exists so distribution needs nothing but static files on any web
//! server: `index.json` and its detached signature `index.json.sig` (the
//! hex ed25519 signature of the exact JSON bytes). Fetching is the
//! caller's business (the CLI, over HTTP); this module only builds,
//! verifies and resolves.

use ed25519_dalek::{Signature, Signer, SigningKey, Verifier, VerifyingKey};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::decode_module;
use crate::{Result, RuntimeError};

/// The `format` field of every index.
pub const FORMAT: &str = "memkern-module-index/1";

/// One module file an index offers.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IndexEntry {
    /// The module's id.
    pub id: String,
    /// Its name.
    pub name: String,
    /// Its version (semver).
    pub version: String,
    /// What it knows.
    #[serde(default)]
    pub description: String,
    /// Its publisher's key (hex): the manifest's, checked after download.
    pub publisher: String,
    /// Where the file is: absolute, or relative to the index's URL.
    pub url: String,
    /// SHA-256 of the file (hex), checked before anything else.
    pub sha256: String,
    /// Its size in bytes.
    pub bytes: u64,
}

/// A signed list of modules.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Index {
    /// Always [`FORMAT`].
    pub format: String,
    /// Who signed the index (hex public key).
    pub signer: String,
    /// The modules, any order.
    pub modules: Vec<IndexEntry>,
}

fn bad(msg: impl Into<String>) -> RuntimeError {
    RuntimeError::Invalid(format!("module index: {}", msg.into()))
}

/// Builds and signs an index of module `files` (name, bytes), each found
/// at `base_url` + its name: returns the JSON and its signature (hex).
pub fn build_index(
    files: &[(String, Vec<u8>)],
    base_url: &str,
    key: &SigningKey,
) -> Result<(Vec<u8>, String)> {
    let mut modules = Vec::with_capacity(files.len());
    for (name, bytes) in files {
        let body = decode_module(bytes)?;
        let m = body.manifest;
        modules.push(IndexEntry {
            id: m.id,
            name: m.name,
            version: m.version,
            description: m.description,
            publisher: m.publisher,
            url: if base_url.is_empty() {
                name.clone()
            } else {
                format!("{}/{name}", base_url.trim_end_matches('/'))
            },
            sha256: crate::hex(&Sha256::digest(bytes)),
            bytes: bytes.len() as u64,
        });
    }
    modules.sort_by(|a, b| (&a.id, &a.version).cmp(&(&b.id, &b.version)));
    let index = Index {
        format: FORMAT.to_owned(),
        signer: crate::hex(key.verifying_key().as_bytes()),
        modules,
    };
    let mut json = serde_json::to_vec_pretty(&index).map_err(|e| bad(e.to_string()))?;
    json.push(b'\n');
    let sig = crate::hex(&key.sign(&json).to_bytes());
    Ok((json, sig))
}

/// Verifies index `json` against its detached `signature` (hex) and
/// parses it. The signer must be one of `trusted` (hex keys).
pub fn open_index(json: &[u8], signature: &str, trusted: &[String]) -> Result<Index> {
    let index: Index =
        serde_json::from_slice(json).map_err(|e| bad(format!("not an index: {e}")))?;
    if index.format != FORMAT {
        return Err(bad(format!(
            "format {:?}, this build reads {FORMAT:?}",
            index.format
        )));
    }
    let key = crate::pack::parse_hex::<32>(&index.signer, "the index signer")?;
    let sig = crate::pack::parse_hex::<64>(signature, "the index signature")?;
    VerifyingKey::from_bytes(&key)
        .map_err(|_| bad("the signer is not a valid ed25519 key"))?
        .verify(json, &Signature::from_bytes(&sig))
        .map_err(|_| bad("the signature does not verify: the index was changed or damaged"))?;
    if !trusted
        .iter()
        .any(|t| t.eq_ignore_ascii_case(&index.signer))
    {
        return Err(bad(format!(
            "signed by {}, which this device does not trust (`memkern modules trust {}` if you do)",
            index.signer, index.signer
        )));
    }
    for e in &index.modules {
        semver::Version::parse(&e.version)
            .map_err(|err| bad(format!("{} has version {:?}: {err}", e.id, e.version)))?;
        crate::pack::parse_hex::<32>(&e.sha256, "a module's sha256")?;
    }
    Ok(index)
}

impl Index {
    /// The newest entry for module `id`.
    pub fn newest(&self, id: &str) -> Option<&IndexEntry> {
        self.modules
            .iter()
            .filter(|e| e.id == id)
            .max_by_key(|e| semver::Version::parse(&e.version).ok())
    }

    /// Entries whose id, name or description contains `query`
    /// (case-insensitive), newest version of each module only.
    pub fn search(&self, query: &str) -> Vec<&IndexEntry> {
        let q = query.to_lowercase();
        let mut ids: Vec<&str> = self.modules.iter().map(|e| e.id.as_str()).collect();
        ids.sort_unstable();
        ids.dedup();
        ids.into_iter()
            .filter_map(|id| self.newest(id))
            .filter(|e| {
                q.is_empty()
                    || e.id.to_lowercase().contains(&q)
                    || e.name.to_lowercase().contains(&q)
                    || e.description.to_lowercase().contains(&q)
            })
            .collect()
    }
}

/// `url` resolved against the index's own URL (a relative entry URL is
/// a path beside the index).
pub fn resolve_url(index_url: &str, url: &str) -> String {
    if url.contains("://") {
        return url.to_owned();
    }
    match index_url.rfind('/') {
        Some(i) => format!("{}/{}", &index_url[..i], url.trim_start_matches('/')),
        None => url.to_owned(),
    }
}

/// Checks a downloaded file against its entry: size and SHA-256 first,
/// then that it is the module the entry names.
pub fn check_download(entry: &IndexEntry, bytes: &[u8]) -> Result<()> {
    let actual = crate::hex(&Sha256::digest(bytes));
    if bytes.len() as u64 != entry.bytes || !actual.eq_ignore_ascii_case(&entry.sha256) {
        return Err(bad(format!(
            "{} {}: the download does not match the index (sha256 {actual}, {} bytes)",
            entry.id,
            entry.version,
            bytes.len()
        )));
    }
    let body = if super::seal::is_sealed(bytes) {
        return Ok(()); // checked after decryption, at install
    } else {
        decode_module(bytes)?
    };
    let m = body.manifest;
    if m.id != entry.id
        || m.version != entry.version
        || !m.publisher.eq_ignore_ascii_case(&entry.publisher)
    {
        return Err(bad(format!(
            "the file is {} {} by {}, the index promised {} {} by {}",
            m.id, m.version, m.publisher, entry.id, entry.version, entry.publisher
        )));
    }
    Ok(())
}
