//! `memkern stats`: what the vault holds, per tier, and how chats used it.
//!
//! Exists so an operator can see residency, snapshot hit rates, bytes per
//! tier and cold vs warm time-to-first-token without reading the database.

use memkern_core::cube::{self, Payload};
use redb::{ReadableDatabase, ReadableTableMetadata};
use serde::Serialize;

use super::chat::ChatStats;
use super::tables::{AUDIT, MEMORIES, NAMESPACES, STATS, USERS, decode, encode};
use super::{Result, Runtime, RuntimeError, corrupt};

/// A snapshot of the vault's contents and the chat counters.
#[derive(Clone, Debug, Default, PartialEq, Serialize)]
pub struct VaultStats {
    /// Users (the administrator included).
    pub users: u64,
    /// Cube namespaces.
    pub cubes: u64,
    /// Live memories.
    pub memories: u64,
    /// Plaintext cube versions (memories × their history).
    pub versions: u64,
    /// Plaintext bytes (encoded cubes).
    pub plaintext_bytes: u64,
    /// Activation snapshots stored (flash tier).
    pub snapshots: u64,
    /// Their blob bytes.
    pub snapshot_bytes: u64,
    /// Parametric adapters stored.
    pub adapters: u64,
    /// Their blob bytes.
    pub adapter_bytes: u64,
    /// Audit log entries.
    pub audit_entries: u64,
    /// Size of the database file.
    pub database_bytes: u64,
    /// Chat counters since the vault was created.
    pub chat: ChatStats,
}

impl Runtime {
    /// Counts what the vault holds.
    pub fn stats(&self) -> Result<VaultStats> {
        let mut s = VaultStats::default();
        let vault = self.vault();
        for (_, bytes) in vault.cubes()? {
            let Ok(c) = cube::decode_owned(&bytes) else {
                continue;
            };
            match &c.payload {
                Payload::Plaintext(_) => {
                    s.versions += 1;
                    s.plaintext_bytes += bytes.len() as u64;
                }
                Payload::Activation(a) => {
                    s.snapshots += 1;
                    s.snapshot_bytes += a.blob.size;
                }
                Payload::Parametric(p) => {
                    s.adapters += 1;
                    s.adapter_bytes += p.blob.size;
                }
            }
        }
        let txn = vault
            .database()
            .begin_read()
            .map_err(|e| vault.db_error(e))?;
        let count = |name: &str| -> Result<u64> {
            let r = match name {
                "users" => txn.open_table(USERS).map(|t| t.len()),
                "cubes" => txn.open_table(NAMESPACES).map(|t| t.len()),
                "memories" => txn.open_table(MEMORIES).map(|t| t.len()),
                _ => txn.open_table(AUDIT).map(|t| t.len()),
            };
            match r {
                Ok(n) => n.map_err(|e| vault.db_error(e).into()),
                Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
                Err(e) => Err(vault.db_error(e).into()),
            }
        };
        s.users = count("users")?;
        s.cubes = count("cubes")?;
        s.memories = count("memories")?;
        s.audit_entries = count("audit")?;
        drop(txn);
        s.database_bytes = std::fs::metadata(self.dir().join("vault.redb")).map_or(0, |m| m.len());
        drop(vault);
        s.chat = self.chat_stats()?;
        Ok(s)
    }

    /// The persisted chat counters.
    pub(crate) fn chat_stats(&self) -> Result<ChatStats> {
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_read()
            .map_err(|e| vault.db_error(e))?;
        let t = match txn.open_table(STATS) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(ChatStats::default()),
            Err(e) => return Err(vault.db_error(e).into()),
        };
        match t.get("chat").map_err(|e| vault.db_error(e))? {
            Some(v) => decode(v.value()).map_err(|e| corrupt("chat statistics", e)),
            None => Ok(ChatStats::default()),
        }
    }

    /// Persists the chat counters (non-durable commit: statistics may lose
    /// the last turns in a crash, memories never).
    pub(crate) fn save_chat_stats(&self, stats: &ChatStats) -> Result<()> {
        let bytes = encode(stats).map_err(|e| RuntimeError::Invalid(format!("statistics: {e}")))?;
        self.write(false, |txn| {
            txn.open_table(STATS)?.insert("chat", bytes.as_slice())?;
            Ok(())
        })
    }
}
