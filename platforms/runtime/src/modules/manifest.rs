//! A module's manifest: what it is and who vouches for it.
//!
//! A leaf of its own, so the tables that store installed manifests need
//! nothing else of the modules.

use serde::{Deserialize, Serialize};

use crate::{Result, RuntimeError};

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
