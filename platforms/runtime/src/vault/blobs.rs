//! Content-addressed blobs (KV snapshots, LoRA adapters) in a directory.
//!
//! Exists because blobs are large, immutable and referenced by digest from
//! cubes: a file per blob, named by its SHA-256, is the simplest store that
//! makes a reference either valid or visibly dangling.
//!
//! Crash rules (the vault's contract with the database that references
//! blobs):
//! - [`BlobStore::put`] writes a temporary file, fsyncs it, renames it to
//!   its digest and fsyncs the directory; only after `put` returns may a
//!   reference be committed. A crash leaves either no blob or the whole
//!   blob, plus at worst a temporary file.
//! - [`BlobStore::open`] deletes temporary files left by a crash;
//!   [`BlobStore::retain`] deletes blobs nothing references (a crash
//!   between `put` and committing the reference leaves such orphans).
//! - [`BlobStore::get`] re-hashes what it reads: a damaged blob is an
//!   error, never data.

use std::collections::HashSet;
use std::fs::{self, File};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};

use memkern_core::ids::BlobDigest;
use sha2::{Digest, Sha256};

/// Why a blob operation failed.
#[derive(Debug, thiserror::Error)]
pub enum BlobError {
    /// The file system refused.
    #[error("blob store {path}: {source}")]
    Io {
        /// The file or directory involved.
        path: PathBuf,
        /// The underlying error.
        source: io::Error,
    },
    /// No blob with this digest.
    #[error("blob {0} not found")]
    NotFound(BlobDigest),
    /// The file's content does not hash to its name.
    #[error("blob {expected} is damaged: its content hashes to {found}")]
    Damaged {
        /// The digest asked for (the file's name).
        expected: BlobDigest,
        /// The digest of what was read.
        found: BlobDigest,
    },
}

/// A directory of blobs named by their SHA-256 (`<64 hex digits>`).
///
/// Exists as the single writer of the blob directory, so that every blob
/// on disk is complete and every name is its content's digest.
#[derive(Debug)]
pub struct BlobStore {
    dir: PathBuf,
}

/// Suffix of in-flight files; never a valid blob name.
const TMP_SUFFIX: &str = ".tmp";

/// Distinguishes concurrent temporary files of one process.
static TMP_COUNTER: AtomicU64 = AtomicU64::new(0);

/// Maps an I/O error on `path` to [`BlobError::Io`].
fn io_err(path: &Path) -> impl FnOnce(io::Error) -> BlobError {
    let path = path.to_owned();
    move |source| BlobError::Io { path, source }
}

fn digest_of(bytes: &[u8]) -> BlobDigest {
    BlobDigest(Sha256::digest(bytes).into())
}

impl BlobStore {
    /// Opens (creating if needed) the blob directory `dir` and removes
    /// temporary files a crash left behind. Returns the store and how many
    /// temporary files were removed.
    pub fn open(dir: impl Into<PathBuf>) -> Result<(Self, usize), BlobError> {
        let dir = dir.into();
        fs::create_dir_all(&dir).map_err(|source| BlobError::Io {
            path: dir.clone(),
            source,
        })?;
        let store = Self { dir };
        let mut removed = 0;
        for entry in store.entries()? {
            let name = entry.file_name();
            if name.to_string_lossy().ends_with(TMP_SUFFIX) {
                let path = entry.path();
                fs::remove_file(&path).map_err(|source| BlobError::Io { path, source })?;
                removed += 1;
            }
        }
        Ok((store, removed))
    }

    /// The directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Where the blob `digest` lives.
    pub fn path(&self, digest: &BlobDigest) -> PathBuf {
        self.dir.join(digest.to_string())
    }

    /// Stores `bytes` durably and returns their digest. Storing the same
    /// content twice is one file; a damaged file of that digest is replaced.
    pub fn put(&self, bytes: &[u8]) -> Result<BlobDigest, BlobError> {
        let digest = digest_of(bytes);
        let target = self.path(&digest);
        // Same content already stored — unless that file was damaged, in
        // which case it is rewritten below.
        if self.get(&digest).is_ok() {
            return Ok(digest);
        }
        let n = TMP_COUNTER.fetch_add(1, Ordering::Relaxed);
        let tmp = self
            .dir
            .join(format!(".{digest}.{}.{n}{TMP_SUFFIX}", std::process::id()));
        let written = (|| {
            let mut f = File::create(&tmp)?;
            f.write_all(bytes)?;
            f.sync_all()?;
            drop(f);
            fs::rename(&tmp, &target)
        })();
        if let Err(e) = written {
            let _ = fs::remove_file(&tmp);
            return Err(io_err(&tmp)(e));
        }
        File::open(&self.dir)
            .and_then(|d| d.sync_all())
            .map_err(io_err(&self.dir))?;
        Ok(digest)
    }

    /// Reads the blob `digest`, checking that its content hashes to it.
    pub fn get(&self, digest: &BlobDigest) -> Result<Vec<u8>, BlobError> {
        let path = self.path(digest);
        let bytes = match fs::read(&path) {
            Ok(b) => b,
            Err(e) if e.kind() == io::ErrorKind::NotFound => {
                return Err(BlobError::NotFound(*digest));
            }
            Err(source) => return Err(BlobError::Io { path, source }),
        };
        let found = digest_of(&bytes);
        if found != *digest {
            return Err(BlobError::Damaged {
                expected: *digest,
                found,
            });
        }
        Ok(bytes)
    }

    /// True when a blob named `digest` exists (its content is not checked).
    pub fn contains(&self, digest: &BlobDigest) -> bool {
        self.path(digest).is_file()
    }

    /// Deletes the blob `digest`; true if it existed.
    pub fn remove(&self, digest: &BlobDigest) -> Result<bool, BlobError> {
        let path = self.path(digest);
        match fs::remove_file(&path) {
            Ok(()) => Ok(true),
            Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(false),
            Err(source) => Err(BlobError::Io { path, source }),
        }
    }

    /// Digests of every blob in the directory, sorted.
    pub fn list(&self) -> Result<Vec<BlobDigest>, BlobError> {
        let mut out: Vec<BlobDigest> = self
            .entries()?
            .iter()
            .filter_map(|e| BlobDigest::from_hex(&e.file_name().to_string_lossy()))
            .collect();
        out.sort();
        Ok(out)
    }

    /// Deletes every blob not in `referenced` (orphans of a crash between
    /// [`Self::put`] and committing the reference); returns how many.
    pub fn retain(&self, referenced: &HashSet<BlobDigest>) -> Result<usize, BlobError> {
        let mut removed = 0;
        for d in self.list()? {
            if !referenced.contains(&d) && self.remove(&d)? {
                removed += 1;
            }
        }
        Ok(removed)
    }

    fn entries(&self) -> Result<Vec<fs::DirEntry>, BlobError> {
        let io = |source| BlobError::Io {
            path: self.dir.clone(),
            source,
        };
        fs::read_dir(&self.dir)
            .map_err(io)?
            .collect::<Result<Vec<_>, _>>()
            .map_err(io)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("memkern-blobs-{}-{tag}", std::process::id()));
        let _ = fs::remove_dir_all(&d);
        d
    }

    #[test]
    fn put_get_roundtrip_and_dedup() -> Result<(), BlobError> {
        let dir = temp_dir("roundtrip");
        let (store, removed) = BlobStore::open(&dir)?;
        assert_eq!(removed, 0);
        let a = store.put(b"kv cache bytes")?;
        let again = store.put(b"kv cache bytes")?;
        assert_eq!(a, again);
        assert_eq!(store.get(&a)?, b"kv cache bytes");
        assert_eq!(store.list()?, vec![a]);
        assert!(store.contains(&a));
        assert!(store.remove(&a)?);
        assert!(!store.remove(&a)?);
        assert!(matches!(store.get(&a), Err(BlobError::NotFound(_))));
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn damage_is_an_error_not_data() -> Result<(), BlobError> {
        let dir = temp_dir("damage");
        let (store, _) = BlobStore::open(&dir)?;
        let d = store.put(&[7u8; 4096])?;
        let mut bytes = fs::read(store.path(&d)).map_err(io_err(&store.path(&d)))?;
        bytes[100] ^= 0x10;
        fs::write(store.path(&d), &bytes).map_err(io_err(&store.path(&d)))?;
        assert!(matches!(store.get(&d), Err(BlobError::Damaged { expected, .. }) if expected == d));
        // Truncated to nothing: still damaged, not an empty blob.
        fs::write(store.path(&d), b"").map_err(io_err(&store.path(&d)))?;
        assert!(matches!(store.get(&d), Err(BlobError::Damaged { .. })));
        // Putting the content again repairs the file.
        assert_eq!(store.put(&[7u8; 4096])?, d);
        assert_eq!(store.get(&d)?, vec![7u8; 4096]);
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn crash_leftovers_are_cleaned() -> Result<(), BlobError> {
        let dir = temp_dir("crash");
        let (store, _) = BlobStore::open(&dir)?;
        let kept = store.put(b"referenced")?;
        let orphan = store.put(b"written, reference never committed")?;
        // A crash mid-put leaves a temporary file.
        let tmp = dir.join(format!(".{orphan}.1.0{TMP_SUFFIX}"));
        fs::write(&tmp, b"half").map_err(io_err(&tmp))?;
        drop(store);
        let (store, removed) = BlobStore::open(&dir)?;
        assert_eq!(removed, 1);
        assert!(!tmp.exists());
        assert_eq!(store.list()?.len(), 2, "temporary files are never blobs");
        let referenced: HashSet<_> = [kept].into_iter().collect();
        assert_eq!(store.retain(&referenced)?, 1);
        assert_eq!(store.list()?, vec![kept]);
        assert_eq!(store.get(&kept)?, b"referenced");
        let _ = fs::remove_dir_all(&dir);
        Ok(())
    }
}
