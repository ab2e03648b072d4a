//! The vault's cube table: every MemCube version, as its encoded bytes, in
//! a redb database, with the blobs its activation and parametric cubes
//! reference kept consistent.
//!
//! Exists so that "acknowledged" has one meaning on Linux: a cube is
//! stored when [`Vault::put`] has returned, which is after redb's commit
//! (fsync'ed, copy-on-write: a crash leaves the previous or the new
//! state). A cube referencing a blob is refused unless the blob is already
//! durable, so no committed cube points at a missing blob; blobs nothing
//! references are deleted at [`Vault::open`].

use std::collections::HashSet;
use std::path::{Path, PathBuf};

use memkern_core::cube::{self, DecodeError, OwnedCube, Payload};
use memkern_core::ids::{BlobDigest, CubeId};
use redb::{Database, ReadableDatabase, ReadableTable, ReadableTableMetadata, TableDefinition};

use super::blobs::{BlobError, BlobStore};

/// Cube id (big-endian u128) → encoded cube.
pub(crate) const CUBES: TableDefinition<u128, &[u8]> = TableDefinition::new("cubes");

/// Why a vault operation failed.
#[derive(Debug, thiserror::Error)]
pub enum VaultError {
    /// The database refused (I/O, corruption, another process holds it).
    #[error("vault database {path}: {message}")]
    Db {
        /// The database file.
        path: PathBuf,
        /// redb's description.
        message: String,
    },
    /// Another process holds the vault (a running `memkern serve`, most
    /// likely).
    #[error(
        "the vault {} is in use by another memkern process (a running `memkern serve`?): \
         the memory commands go through a running serve, this one needs the vault to itself; \
         use serve's HTTP API or MCP endpoint /mcp while it runs, or stop it first",
        path.display()
    )]
    InUse {
        /// The database file.
        path: PathBuf,
    },
    /// A blob operation failed.
    #[error(transparent)]
    Blob(#[from] BlobError),
    /// The bytes are not a valid cube.
    #[error("invalid cube: {0}")]
    InvalidCube(#[from] DecodeError),
    /// The cube references a blob the vault does not hold.
    #[error("cube {cube} references blob {blob}, which is not in the vault")]
    MissingBlob {
        /// The cube.
        cube: CubeId,
        /// The blob it names.
        blob: BlobDigest,
    },
}

/// The blob a cube references, if it is an activation or parametric cube.
fn blob_of(cube: &OwnedCube) -> Option<BlobDigest> {
    match &cube.payload {
        Payload::Plaintext(_) => None,
        Payload::Activation(a) => Some(a.blob.digest),
        Payload::Parametric(p) => Some(p.blob.digest),
    }
}

/// The table key of a cube id.
pub(crate) fn key(id: &CubeId) -> u128 {
    u128::from_be_bytes(id.0)
}

/// A directory holding `vault.redb` (cubes) and `blobs/` (snapshots,
/// adapters).
///
/// Exists as the one owner of a device's durable memory; every other layer
/// reads and writes memories through it.
#[derive(Debug)]
pub struct Vault {
    db: Database,
    path: PathBuf,
    blobs: BlobStore,
}

/// What [`Vault::open`] repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Recovery {
    /// Temporary blob files of interrupted writes, removed.
    pub temp_files: usize,
    /// Durable blobs no cube referenced (a crash between the blob write and
    /// the cube commit), removed.
    pub orphan_blobs: usize,
}

impl Vault {
    /// Opens (creating if needed) the vault in `dir`, removing what an
    /// interrupted write left behind.
    pub fn open(dir: impl AsRef<Path>) -> Result<(Self, Recovery), VaultError> {
        let dir = dir.as_ref();
        let path = dir.join("vault.redb");
        std::fs::create_dir_all(dir).map_err(|e| VaultError::Db {
            path: path.clone(),
            message: format!("cannot create {}: {e}", dir.display()),
        })?;
        // The database lock first: only its holder may clean up the blob
        // directory (another process's half-written blob is not debris).
        let db = Database::create(&path).map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => VaultError::InUse { path: path.clone() },
            e => VaultError::Db {
                path: path.clone(),
                message: e.to_string(),
            },
        })?;
        let (blobs, temp_files) = BlobStore::open(dir.join("blobs"))?;
        let vault = Self { db, path, blobs };
        let referenced = vault.referenced_blobs()?;
        let orphan_blobs = vault.blobs.retain(&referenced)?;
        Ok((
            vault,
            Recovery {
                temp_files,
                orphan_blobs,
            },
        ))
    }

    fn db_err(&self) -> impl Fn(redb::Error) -> VaultError + '_ {
        |e| VaultError::Db {
            path: self.path.clone(),
            message: e.to_string(),
        }
    }

    /// The blob store (write a snapshot here before putting its cube).
    pub fn blobs(&self) -> &BlobStore {
        &self.blobs
    }

    /// Validates and stores an encoded cube (replacing a cube with the same
    /// id); returns its id once committed.
    pub fn put(&self, bytes: &[u8]) -> Result<CubeId, VaultError> {
        let err = self.db_err();
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        let id = self.put_in(&txn, bytes)?;
        txn.commit().map_err(|e| err(e.into()))?;
        Ok(id)
    }

    /// [`Self::put`] inside the caller's transaction, so a cube and the
    /// records that point at it commit together.
    pub(crate) fn put_in(
        &self,
        txn: &redb::WriteTransaction,
        bytes: &[u8],
    ) -> Result<CubeId, VaultError> {
        let cube = cube::decode_owned(bytes)?;
        let id = cube.meta.id;
        if let Some(blob) = blob_of(&cube).filter(|b| !self.blobs.contains(b)) {
            return Err(VaultError::MissingBlob { cube: id, blob });
        }
        let err = self.db_err();
        let mut t = txn.open_table(CUBES).map_err(|e| err(e.into()))?;
        t.insert(key(&id), bytes).map_err(|e| err(e.into()))?;
        Ok(id)
    }

    /// Whether cube `id` is stored, as `txn` sees it.
    pub(crate) fn contains_in(
        &self,
        txn: &redb::WriteTransaction,
        id: &CubeId,
    ) -> Result<bool, VaultError> {
        let err = self.db_err();
        let t = txn.open_table(CUBES).map_err(|e| err(e.into()))?;
        let found = t.get(key(id)).map_err(|e| err(e.into()))?.is_some();
        Ok(found)
    }

    /// The database, for layers that keep their own tables beside the
    /// cubes and commit them in the same transactions.
    pub(crate) fn database(&self) -> &Database {
        &self.db
    }

    /// Maps a redb error of this vault into a [`VaultError`].
    pub(crate) fn db_error(&self, e: impl Into<redb::Error>) -> VaultError {
        VaultError::Db {
            path: self.path.clone(),
            message: e.into().to_string(),
        }
    }

    /// Rewrites the database file with only its live records (`copy`
    /// copies every table), then replaces the old file.
    ///
    /// Exists because redb is copy-on-write: a deleted record's bytes stay
    /// in freed pages until they are reused. After a vacuum the file holds
    /// nothing that was deleted. Costs one copy of the live data.
    pub fn vacuum(
        &mut self,
        copy: impl FnOnce(&redb::ReadTransaction, &redb::WriteTransaction) -> Result<(), redb::Error>,
    ) -> Result<(), VaultError> {
        let tmp = self.path.with_extension("redb.vacuum");
        let _ = std::fs::remove_file(&tmp);
        {
            let fresh = Database::create(&tmp).map_err(|e| self.db_error(e))?;
            let src = self.db.begin_read().map_err(|e| self.db_error(e))?;
            let dst = fresh.begin_write().map_err(|e| self.db_error(e))?;
            copy(&src, &dst).map_err(|e| self.db_error(e))?;
            dst.commit().map_err(|e| self.db_error(e))?;
        }
        std::fs::rename(&tmp, &self.path).map_err(|e| VaultError::Db {
            path: self.path.clone(),
            message: format!("replacing the file after a vacuum: {e}"),
        })?;
        if let Some(dir) = self.path.parent() {
            std::fs::File::open(dir)
                .and_then(|d| d.sync_all())
                .map_err(|e| VaultError::Db {
                    path: self.path.clone(),
                    message: format!("syncing the directory after a vacuum: {e}"),
                })?;
        }
        self.db = Database::create(&self.path).map_err(|e| self.db_error(e))?;
        Ok(())
    }

    /// Removes blob `digest` if no stored cube references it; true if it
    /// was removed.
    pub(crate) fn remove_blob_if_unreferenced(
        &self,
        digest: &BlobDigest,
    ) -> Result<bool, VaultError> {
        // An error while checking other references keeps the blob (an
        // orphan is removed at the next open; a wrong delete loses data).
        if self.referenced_blobs()?.contains(digest) {
            return Ok(false);
        }
        Ok(self.blobs.remove(digest)?)
    }

    /// The encoded cube `id`, if stored.
    pub fn get(&self, id: &CubeId) -> Result<Option<Vec<u8>>, VaultError> {
        let err = self.db_err();
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = match txn.open_table(CUBES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(err(e.into())),
        };
        let value = t.get(key(id)).map_err(|e| err(e.into()))?;
        Ok(value.map(|v| v.value().to_vec()))
    }

    /// Deletes cube `id` and, once the deletion is committed, its blob if
    /// no other cube references it. True if the cube existed.
    pub fn delete(&self, id: &CubeId) -> Result<bool, VaultError> {
        let Some(bytes) = self.get(id)? else {
            return Ok(false);
        };
        let blob = cube::decode_owned(&bytes).ok().and_then(|c| blob_of(&c));
        let err = self.db_err();
        let txn = self.db.begin_write().map_err(|e| err(e.into()))?;
        {
            let mut t = txn.open_table(CUBES).map_err(|e| err(e.into()))?;
            t.remove(key(id)).map_err(|e| err(e.into()))?;
        }
        txn.commit().map_err(|e| err(e.into()))?;
        if let Some(b) = blob {
            self.remove_blob_if_unreferenced(&b)?;
        }
        Ok(true)
    }

    /// Number of stored cubes.
    pub fn len(&self) -> Result<u64, VaultError> {
        let err = self.db_err();
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        match txn.open_table(CUBES) {
            Ok(t) => t.len().map_err(|e| err(e.into())),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(err(e.into())),
        }
    }

    /// True when no cube is stored.
    pub fn is_empty(&self) -> Result<bool, VaultError> {
        Ok(self.len()? == 0)
    }

    /// Every stored cube's id and bytes, in id order.
    pub fn cubes(&self) -> Result<Vec<(CubeId, Vec<u8>)>, VaultError> {
        let err = self.db_err();
        let txn = self.db.begin_read().map_err(|e| err(e.into()))?;
        let t = match txn.open_table(CUBES) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(err(e.into())),
        };
        let mut out = Vec::new();
        for entry in t.iter().map_err(|e| err(e.into()))? {
            let (k, v) = entry.map_err(|e| err(e.into()))?;
            out.push((CubeId(k.value().to_be_bytes()), v.value().to_vec()));
        }
        Ok(out)
    }

    /// Digests of every blob a stored cube references.
    fn referenced_blobs(&self) -> Result<HashSet<BlobDigest>, VaultError> {
        Ok(self
            .cubes()?
            .iter()
            .filter_map(|(_, bytes)| cube::decode_owned(bytes).ok())
            .filter_map(|c| blob_of(&c))
            .collect())
    }
}

#[cfg(test)]
mod tests {
    use memkern_core::cube::{
        Activation, BlobRef, KvDtype, KvLayout, Metadata, Plaintext, SourceKind,
    };
    use memkern_core::ids::{Fingerprint, NamespaceId, UserId};
    use memkern_core::time::Timestamp;

    use super::*;

    fn temp_dir(tag: &str) -> PathBuf {
        let d = std::env::temp_dir().join(format!("memkern-vault-{}-{tag}", std::process::id()));
        let _ = std::fs::remove_dir_all(&d);
        d
    }

    fn meta(n: u8) -> Metadata<String> {
        let t = Timestamp(1_683_553_000_000);
        Metadata::new(
            CubeId([n; 16]),
            UserId(1),
            NamespaceId(1),
            t,
            t,
            SourceKind::DialogueTurn,
        )
    }

    fn plaintext(n: u8, text: &str) -> Vec<u8> {
        let c: OwnedCube = cube::Cube {
            meta: meta(n),
            payload: Payload::Plaintext(Plaintext {
                text: text.to_owned(),
                embedding: None,
            }),
        };
        cube::encode_to_vec(&c).unwrap_or_default()
    }

    fn activation(n: u8, blob: &[u8], digest: BlobDigest) -> Vec<u8> {
        let layout = KvLayout {
            dtype: KvDtype::F32,
            layers: 1,
            kv_heads: 1,
            head_dim: 2,
        };
        let kv_bytes = layout.tensor_bytes(1).unwrap_or(0);
        let c: OwnedCube = cube::Cube {
            meta: meta(n),
            payload: Payload::Activation(Activation {
                model: Fingerprint([1; 16]),
                tokenizer: Fingerprint([2; 16]),
                token_count: 1,
                first_position: 0,
                layout,
                kv_bytes,
                blob: BlobRef {
                    digest,
                    size: blob.len() as u64,
                },
            }),
        };
        cube::encode_to_vec(&c).unwrap_or_default()
    }

    #[test]
    fn cubes_survive_reopen() -> Result<(), VaultError> {
        let dir = temp_dir("reopen");
        {
            let (v, rec) = Vault::open(&dir)?;
            assert_eq!(rec, Recovery::default());
            assert!(v.is_empty()?);
            v.put(&plaintext(1, "My dog is called Biscuit."))?;
            v.put(&plaintext(2, "I'm allergic to peanuts."))?;
        }
        let (v, _) = Vault::open(&dir)?;
        assert_eq!(v.len()?, 2);
        let got = v.get(&CubeId([1; 16]))?.unwrap_or_default();
        assert_eq!(got, plaintext(1, "My dog is called Biscuit."));
        assert!(v.delete(&CubeId([1; 16]))?);
        assert!(!v.delete(&CubeId([1; 16]))?);
        assert_eq!(v.get(&CubeId([1; 16]))?, None);
        assert_eq!(v.cubes()?.len(), 1);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn invalid_cubes_and_dangling_blobs_are_refused() -> Result<(), VaultError> {
        let dir = temp_dir("refuse");
        let (v, _) = Vault::open(&dir)?;
        let mut bad = plaintext(1, "text");
        let last = bad.len() - 1;
        bad[last] ^= 1;
        assert!(matches!(v.put(&bad), Err(VaultError::InvalidCube(_))));
        let blob = vec![0u8; 64];
        use sha2::Digest as _;
        let digest = BlobDigest(<[u8; 32]>::from(sha2::Sha256::digest(&blob)));
        let snap = activation(3, &blob, digest);
        assert!(matches!(
            v.put(&snap),
            Err(VaultError::MissingBlob { blob, .. }) if blob == digest
        ));
        assert!(v.is_empty()?);
        // Blob first, then the cube: accepted.
        assert_eq!(v.blobs().put(&blob)?, digest);
        v.put(&snap)?;
        // Deleting the cube deletes its now unreferenced blob.
        assert!(v.delete(&CubeId([3; 16]))?);
        assert!(!v.blobs().contains(&digest));
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }

    #[test]
    fn orphan_blobs_of_a_crash_are_removed_at_open() -> Result<(), VaultError> {
        let dir = temp_dir("orphan");
        let kept = vec![1u8; 64];
        let kept_digest;
        {
            let (v, _) = Vault::open(&dir)?;
            kept_digest = v.blobs().put(&kept)?;
            v.put(&activation(4, &kept, kept_digest))?;
            // Crash after the blob write, before the cube commit.
            v.blobs().put(b"never referenced")?;
        }
        let (v, rec) = Vault::open(&dir)?;
        assert_eq!(rec.orphan_blobs, 1);
        assert_eq!(v.blobs().list()?, vec![kept_digest]);
        assert_eq!(v.blobs().get(&kept_digest)?, kept);
        let _ = std::fs::remove_dir_all(&dir);
        Ok(())
    }
}
