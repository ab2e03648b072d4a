//! The runtime's redb tables and the records stored in them.
//!
//! Exists so that every table the runtime writes has one definition, one
//! record type and one place that knows how to copy it (the vacuum that
//! makes hard deletes leave no residue).

use memkern_core::ids::CubeId;
use redb::{
    Key, ReadTransaction, ReadableTable, TableDefinition, TableError, Value, WriteTransaction,
};
use serde::{Deserialize, Serialize};

/// User id → [`UserRow`].
pub(crate) const USERS: TableDefinition<u64, &[u8]> = TableDefinition::new("users");
/// SHA-256 of an API key → user id.
pub(crate) const USER_KEYS: TableDefinition<&[u8], u64> = TableDefinition::new("user_keys");
/// User name → user id.
pub(crate) const USER_NAMES: TableDefinition<&str, u64> = TableDefinition::new("user_names");
/// Namespace id → [`NamespaceRow`].
pub(crate) const NAMESPACES: TableDefinition<u64, &[u8]> = TableDefinition::new("namespaces");
/// Memory id (its first version's cube id) → [`MemoryRow`].
pub(crate) const MEMORIES: TableDefinition<u128, &[u8]> = TableDefinition::new("memories");
/// Namespace id ‖ SHA-256 of the normalised text → memory id (exact dedup).
pub(crate) const TEXT_HASHES: TableDefinition<&[u8], u128> = TableDefinition::new("text_hashes");
/// Sequence number → [`AuditRow`] (append-only).
pub(crate) const AUDIT: TableDefinition<u64, &[u8]> = TableDefinition::new("audit");
/// Statistic name → postcard record (chat counters).
pub(crate) const STATS: TableDefinition<&str, &[u8]> = TableDefinition::new("stats");
/// Counter name → next value (user ids, namespace ids, audit sequence).
pub(crate) const COUNTERS: TableDefinition<&str, u64> = TableDefinition::new("counters");
/// Module id → [`ModuleRow`] (installed modules).
pub(crate) const MODULES: TableDefinition<&str, &[u8]> = TableDefinition::new("modules");
/// Publisher public key (lowercase hex) → the name it was trusted under.
pub(crate) const PUBLISHERS: TableDefinition<&str, &str> = TableDefinition::new("publishers");
/// Per user: their parametric adapter and the memories it covers.
pub(crate) const ADAPTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("adapters");

/// A user account.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct UserRow {
    pub name: String,
    /// SHA-256 of the API key (the key itself is never stored).
    pub key_hash: [u8; 32],
    pub admin: bool,
}

/// A cube namespace: the unit of ownership, sharing and export.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct NamespaceRow {
    pub owner: u64,
    pub name: String,
    pub readers: Vec<u64>,
    pub writers: Vec<u64>,
    /// `Some` for an installed module's memories: read-only for everyone.
    pub mount: Option<Mount>,
}

/// The namespace layout before modules (no `mount`), still on disk in
/// vaults written by earlier builds.
#[derive(Deserialize)]
struct NamespaceRowV1 {
    owner: u64,
    name: String,
    readers: Vec<u64>,
    writers: Vec<u64>,
}

impl NamespaceRow {
    /// Decodes a row of either layout (postcard has no optional trailing
    /// fields, so the old one is tried when the new one runs short).
    pub fn decode(bytes: &[u8]) -> Result<NamespaceRow, postcard::Error> {
        match postcard::from_bytes::<NamespaceRow>(bytes) {
            Ok(r) => Ok(r),
            Err(postcard::Error::DeserializeUnexpectedEnd) => {
                let v1: NamespaceRowV1 = postcard::from_bytes(bytes)?;
                Ok(NamespaceRow {
                    owner: v1.owner,
                    name: v1.name,
                    readers: v1.readers,
                    writers: v1.writers,
                    mount: None,
                })
            }
            Err(e) => Err(e),
        }
    }
}

/// Which module a namespace holds, and for whom it is mounted.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct Mount {
    /// The module's id.
    pub module: String,
    /// Readable by every user (`--global`); otherwise by the namespace's
    /// readers.
    pub global: bool,
}

/// An installed module: its manifest and where its memories are.
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct ModuleRow {
    /// The manifest, as signed.
    pub manifest: crate::modules::manifest::Manifest,
    /// The namespace holding its memories.
    pub namespace: u64,
    /// SHA-256 of the module file installed.
    pub sha256: [u8; 32],
    /// When it was installed (ms since the epoch).
    pub installed_ms: i64,
    /// Memories it holds.
    pub memories: u64,
}

/// One memory: every version's cube id, oldest first (the last is the head).
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize)]
pub(crate) struct MemoryRow {
    /// Insertion order (1, 2, …; 0 until committed): the index keeps
    /// memories in this order so a dialogue's turns stay neighbours.
    pub seq: u64,
    pub namespace: u64,
    pub versions: Vec<[u8; 16]>,
    /// Key of this memory's [`TEXT_HASHES`] entry (for removal).
    pub text_key: Vec<u8>,
}

impl MemoryRow {
    /// The head version's cube id.
    pub fn head(&self) -> Option<CubeId> {
        self.versions.last().map(|v| CubeId(*v))
    }
}

/// One audit log line (see `runtime::audit`).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AuditRow {
    pub at_ms: i64,
    pub actor: u64,
    pub admin: bool,
    pub action: String,
    pub target: Option<[u8; 16]>,
    pub allowed: bool,
    pub detail: String,
}

/// Takes the next value of `counter` (starting at `first`).
/// A user's parametric adapter: the Parametric cube (none once dropped),
/// the memories it was distilled from, and how the run went.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub(crate) struct AdapterRow {
    /// The Parametric cube; `None` after a covered memory changed or was
    /// deleted (the adapter was dropped: deletion wins over memorisation).
    pub cube: Option<[u8; 16]>,
    /// SHA-256 of the adapter blob.
    pub digest: [u8; 32],
    /// Size of the adapter blob.
    pub bytes: u64,
    /// When it was distilled (ms since the epoch).
    pub created_ms: i64,
    /// Memory keys it covers (their lifecycle is `Merged` while it lives).
    pub covers: Vec<u128>,
    /// Why it was dropped, if it was.
    pub stale: Option<String>,
    /// Training pairs, steps, first and last batch loss.
    pub pairs: u32,
    pub steps: u32,
    pub loss_first: f32,
    pub loss_last: f32,
    /// LoRA rank.
    pub rank: u16,
}

pub(crate) fn next(txn: &WriteTransaction, counter: &str, first: u64) -> Result<u64, redb::Error> {
    let mut t = txn.open_table(COUNTERS)?;
    let n = t.get(counter)?.map_or(first, |v| v.value());
    t.insert(counter, n + 1)?;
    Ok(n)
}

/// Encodes a record (postcard).
pub(crate) fn encode<T: Serialize>(row: &T) -> Result<Vec<u8>, postcard::Error> {
    postcard::to_allocvec(row)
}

/// Decodes a record (postcard).
pub(crate) fn decode<'a, T: Deserialize<'a>>(bytes: &'a [u8]) -> Result<T, postcard::Error> {
    postcard::from_bytes(bytes)
}

/// Copies one table's entries from `src` into `dst` (a missing table is
/// skipped).
fn copy_table<K: Key + 'static, V: Value + 'static>(
    src: &ReadTransaction,
    dst: &WriteTransaction,
    def: TableDefinition<K, V>,
) -> Result<(), redb::Error> {
    let from = match src.open_table(def) {
        Ok(t) => t,
        Err(TableError::TableDoesNotExist(_)) => return Ok(()),
        Err(e) => return Err(e.into()),
    };
    let mut to = dst.open_table(def)?;
    for entry in from.iter()? {
        let (k, v) = entry?;
        to.insert(k.value(), v.value())?;
    }
    Ok(())
}

/// Copies every runtime table and the vault's cube table.
pub(crate) fn copy_all(src: &ReadTransaction, dst: &WriteTransaction) -> Result<(), redb::Error> {
    copy_table(src, dst, crate::vault::CUBES)?;
    copy_table(src, dst, USERS)?;
    copy_table(src, dst, USER_KEYS)?;
    copy_table(src, dst, USER_NAMES)?;
    copy_table(src, dst, NAMESPACES)?;
    copy_table(src, dst, MEMORIES)?;
    copy_table(src, dst, TEXT_HASHES)?;
    copy_table(src, dst, AUDIT)?;
    copy_table(src, dst, COUNTERS)?;
    copy_table(src, dst, STATS)?;
    copy_table(src, dst, ADAPTERS)?;
    copy_table(src, dst, MODULES)?;
    copy_table(src, dst, PUBLISHERS)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn namespace_rows_of_earlier_builds_still_decode() {
        #[derive(Serialize)]
        struct V1 {
            owner: u64,
            name: String,
            readers: Vec<u64>,
            writers: Vec<u64>,
        }
        let old = encode(&V1 {
            owner: 7,
            name: "default".to_owned(),
            readers: vec![3],
            writers: Vec::new(),
        })
        .expect("encode");
        let row = NamespaceRow::decode(&old).expect("an old row decodes");
        assert_eq!((row.owner, row.readers, row.mount), (7, vec![3], None));
        let new = NamespaceRow {
            owner: 1,
            name: "module:x".to_owned(),
            readers: Vec::new(),
            writers: Vec::new(),
            mount: Some(Mount {
                module: "x".to_owned(),
                global: true,
            }),
        };
        let bytes = encode(&new).expect("encode");
        assert_eq!(NamespaceRow::decode(&bytes).expect("decode"), new);
        assert!(NamespaceRow::decode(&bytes[..3]).is_err());
    }
}
