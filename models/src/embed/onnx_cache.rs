//! The cached ONNX export next to the model files.
//!
//! Layout, inside the model's cache entry:
//!
//! ```text
//! minilm-<first 16 hex of the safetensors sha256>.x<EXPORT_VERSION>.onnx
//! minilm-<…>.x<EXPORT_VERSION>.onnx.json   sidecar, written last
//! ```
//!
//! The sidecar records the full SHA-256 of the weights and config it was
//! made from, and the ONNX file's own size and SHA-256. A file is used only
//! if its sidecar matches the current weights and its bytes hash to the
//! recorded digest; otherwise it is regenerated (temp file, fsync, rename;
//! sidecar removed first and written last). If the directory is read-only
//! the export is used from memory and a warning is logged.

use std::fs;
use std::io;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::error::EmbedError;
use super::onnx_export::{EXPORT_VERSION, export_onnx_files};
use crate::fingerprint::to_hex;

/// Sidecar format version.
const SIDECAR_FORMAT: u32 = 1;

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Sidecar {
    format: u32,
    export_version: u32,
    safetensors_sha256: String,
    config_sha256: String,
    onnx_size: u64,
    onnx_sha256: String,
}

/// How the ONNX bytes were obtained (for logs and tests).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Origin {
    /// Read from a valid cache file.
    Cached,
    /// Exported now and written to the cache.
    Exported,
    /// Exported now; writing the cache failed.
    ExportedUncached,
}

/// The weights and config an export is made from, with their digests.
pub(crate) struct Source<'a> {
    pub safetensors: &'a Path,
    pub safetensors_sha256: &'a str,
    pub config: &'a Path,
    pub config_sha256: &'a str,
}

/// The cache file's path for `source` in `dir`.
pub(crate) fn onnx_path(dir: &Path, safetensors_sha256: &str) -> PathBuf {
    let key: String = safetensors_sha256.chars().take(16).collect();
    dir.join(format!("minilm-{key}.x{EXPORT_VERSION}.onnx"))
}

fn sidecar_path(onnx: &Path) -> PathBuf {
    let mut s = onnx.as_os_str().to_owned();
    s.push(".json");
    PathBuf::from(s)
}

/// SHA-256 (lowercase hex) of `bytes`.
pub(crate) fn sha256_hex(bytes: &[u8]) -> String {
    to_hex(&Sha256::digest(bytes))
}

/// SHA-256 (lowercase hex) of a file's contents.
pub(crate) fn sha256_file(path: &Path) -> Result<String, EmbedError> {
    let bytes = fs::read(path).map_err(EmbedError::io("reading", path))?;
    Ok(sha256_hex(&bytes))
}

/// The ONNX bytes for `source`: from `dir`'s cache when valid, else freshly
/// exported (and cached when `dir` is writable).
pub(crate) fn load_or_export(
    dir: &Path,
    source: &Source<'_>,
) -> Result<(Vec<u8>, PathBuf, Origin), EmbedError> {
    let path = onnx_path(dir, source.safetensors_sha256);
    match read_valid(&path, source) {
        Ok(bytes) => {
            debug!(path = %path.display(), "ONNX cache hit");
            return Ok((bytes, path, Origin::Cached));
        }
        Err(why) => info!(path = %path.display(), reason = %why, "exporting the embedder to ONNX"),
    }
    let bytes = export_onnx_files(source.safetensors, source.config)?;
    let origin = match write_cache(&path, source, &bytes) {
        Ok(()) => Origin::Exported,
        Err(e) => {
            warn!(path = %path.display(), error = %e, "cannot cache the ONNX export; using it from memory");
            Origin::ExportedUncached
        }
    };
    Ok((bytes, path, origin))
}

/// The cached bytes if the sidecar matches `source` and the file its digest.
fn read_valid(path: &Path, source: &Source<'_>) -> Result<Vec<u8>, String> {
    let side = fs::read(sidecar_path(path)).map_err(|e| format!("no sidecar: {e}"))?;
    let side: Sidecar =
        serde_json::from_slice(&side).map_err(|e| format!("sidecar unparsable: {e}"))?;
    if side.format != SIDECAR_FORMAT
        || side.export_version != EXPORT_VERSION
        || side.safetensors_sha256 != source.safetensors_sha256
        || side.config_sha256 != source.config_sha256
    {
        return Err("sidecar is for other weights or another export version".into());
    }
    let bytes = fs::read(path).map_err(|e| format!("unreadable: {e}"))?;
    if bytes.len() as u64 != side.onnx_size {
        return Err(format!(
            "{} bytes, sidecar says {}",
            bytes.len(),
            side.onnx_size
        ));
    }
    let sha = sha256_hex(&bytes);
    if sha != side.onnx_sha256 {
        return Err(format!("sha256 {sha}, sidecar says {}", side.onnx_sha256));
    }
    Ok(bytes)
}

fn write_cache(path: &Path, source: &Source<'_>, bytes: &[u8]) -> io::Result<()> {
    let side_path = sidecar_path(path);
    match fs::remove_file(&side_path) {
        Ok(()) => {}
        Err(e) if e.kind() == io::ErrorKind::NotFound => {}
        Err(e) => return Err(e),
    }
    crate::atomic::write_atomic(path, bytes)?;
    let side = Sidecar {
        format: SIDECAR_FORMAT,
        export_version: EXPORT_VERSION,
        safetensors_sha256: source.safetensors_sha256.to_owned(),
        config_sha256: source.config_sha256.to_owned(),
        onnx_size: bytes.len() as u64,
        onnx_sha256: sha256_hex(bytes),
    };
    // Serialising plain strings and integers cannot fail.
    let json = serde_json::to_vec_pretty(&side).unwrap_or_default();
    crate::atomic::write_atomic(&side_path, &json)?;
    remove_other_exports(path);
    Ok(())
}

/// Removes exports for other weights or export versions from `path`'s
/// directory, so a model update does not leave 90 MB behind.
fn remove_other_exports(keep: &Path) {
    let (Some(dir), Some(keep_name)) = (keep.parent(), keep.file_name()) else {
        return;
    };
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let keep_name = keep_name.to_string_lossy().into_owned();
    let keep_side = format!("{keep_name}.json");
    for e in entries.flatten() {
        let name = e.file_name().to_string_lossy().into_owned();
        let ours = name.starts_with("minilm-")
            && (name.ends_with(".onnx") || name.ends_with(".onnx.json"));
        if ours && name != keep_name && name != keep_side {
            debug!(file = %name, "removing a stale ONNX export");
            let _ = fs::remove_file(e.path());
        }
    }
}
