//! memkern's memory OS for any `std` device: users, cube namespaces,
//! memories with history, hybrid search, governance, the audit log,
//! `chat` with KV-block snapshots, signed packs and parametric memory, over
//! a durable [`Vault`].
//!
//! Exists as the one Rust API that every front end exposes — the `memkern`
//! CLI (`platforms/linux`), the HTTP server (`memkern-server`), tests and
//! benchmarks — so they can never disagree about a rule. It knows nothing
//! of HTTP, argument parsing or terminals (no axum, clap, indicatif or
//! tokio in its dependency tree: CI checks it), so an Android phone, a
//! macOS laptop or a Jetson links the same runtime. Every call takes the
//! [`Principal`] asking; access decisions are made by
//! [`memkern_core::governance::check`] in the query path and written to
//! the audit log.
//!
//! Durability: a call that changes memory returns after redb's commit
//! (fsync'ed), so an acknowledged write survives a crash or `kill -9`.
//! Search indexes live in RAM and are rebuilt from the stored cubes at
//! [`Runtime::open`] (the int8 vectors are part of each cube).
//!
//! - [`vault`]: durable state on disk — cubes in redb, snapshot and
//!   adapter blobs in a content-addressed directory.
//! - [`memories`], [`dedup`], [`accounts`], [`audit`], [`redact`]: the
//!   memory API and its rules.
//! - [`chat`]: retrieval → scheduler → KV blocks → LLM ([`Assistant`]).
//! - [`pack`], [`parametric`]: signed packs and LoRA adapters.
//! - [`ann`], [`embed`]: the dense index (exact int8 / HNSW) and the
//!   sentence-embedder seam.
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::panic)]

pub mod ann;
pub mod embed;
pub mod vault;

pub mod accounts;
pub mod audit;
pub mod chat;
pub mod config;
mod coverage;
pub mod dedup;
mod index;
pub mod input;
pub mod memories;
pub mod modules;
pub mod pack;
pub mod parametric;
pub mod redact;
pub mod stats;
mod stop;
mod tables;
pub mod utterance;

use std::path::{Path, PathBuf};
use std::sync::{Mutex, MutexGuard, RwLock, RwLockReadGuard, RwLockWriteGuard};

use memkern_core::governance::{DenyReason, Principal};
use memkern_core::ids::{CubeId, UserId};
use memkern_core::time::Timestamp;
use memkern_core::version::VersionError;

use crate::embed::DenseEmbedder;
use crate::vault::{Recovery, Vault, VaultError};

pub use accounts::{ApiKey, NamespaceInfo, ShareAccess, UserInfo};
pub use audit::AuditEntry;
pub use chat::{Assistant, ChatRequest, ChatResponse, Finish, Role, Turn};
pub use config::Config;
pub use dedup::{AddAction, DedupMode};
pub use memories::{
    AddOutcome, AddRequest, DeleteReport, MemoryId, MemoryView, SearchHit, SearchRequest,
};
pub use parametric::{AdapterInfo, DistillProgress, DistillReport, DistillRequest};
pub use stats::VaultStats;

use index::SearchIndex;
use redact::Redactor;

/// Why a runtime call failed.
///
/// Exists so the CLI and the HTTP server map failures to messages and
/// status codes the same way ([`RuntimeError::status`]).
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The vault (database or blob store) failed.
    #[error(transparent)]
    Vault(#[from] VaultError),
    /// No such thing — or the caller may not know it exists.
    #[error("{what} {id} not found")]
    NotFound {
        /// "memory", "user", "cube".
        what: &'static str,
        /// The id or name asked for.
        id: String,
    },
    /// Governance refused the operation.
    #[error("not allowed: {0}")]
    Denied(#[from] DenyReason),
    /// The request is malformed or out of range.
    #[error("invalid request: {0}")]
    Invalid(String),
    /// A name is already taken.
    #[error("{0} already exists")]
    Exists(String),
    /// The API key matches no user.
    #[error("unknown API key")]
    BadKey,
    /// The embedder failed.
    #[error("embedding failed: {0}")]
    Embed(String),
    /// A stored record does not decode (disk corruption).
    #[error("stored record is corrupt: {0}")]
    Corrupt(String),
    /// A version rule was broken (update of an immutable memory, …).
    #[error(transparent)]
    Version(#[from] VersionError),
    /// The redaction configuration is invalid.
    #[error(transparent)]
    Redact(#[from] redact::RedactError),
    /// The memory or cube belongs to an installed module, which nobody
    /// writes to (it changes only by `modules update` or `remove`).
    #[error(
        "read-only: it belongs to module {0} (change it with `memkern modules update` or `remove`)"
    )]
    ReadOnly(String),
}

impl RuntimeError {
    /// The HTTP status this error maps to.
    pub fn status(&self) -> u16 {
        match self {
            RuntimeError::NotFound { .. } => 404,
            RuntimeError::Denied(_) | RuntimeError::ReadOnly(_) => 403,
            RuntimeError::Invalid(_) | RuntimeError::Version(_) => 400,
            RuntimeError::Exists(_) => 409,
            RuntimeError::BadKey => 401,
            RuntimeError::Vault(_)
            | RuntimeError::Embed(_)
            | RuntimeError::Corrupt(_)
            | RuntimeError::Redact(_) => 500,
        }
    }
}

/// Result of runtime calls.
pub type Result<T, E = RuntimeError> = std::result::Result<T, E>;

/// What [`Runtime::open`] found and repaired.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct OpenReport {
    /// Crash leftovers removed from the blob store.
    pub recovery: Recovery,
    /// Memories indexed.
    pub memories: usize,
    /// Expired memories deleted.
    pub expired: usize,
}

/// An embedder the runtime can share between threads.
pub type SharedEmbedder = Box<dyn DenseEmbedder + Send + Sync>;

/// The memory runtime of one device: a vault directory plus in-RAM
/// indexes, safe to share between threads (`Arc<Runtime>`).
pub struct Runtime {
    dir: PathBuf,
    config: Config,
    vault: RwLock<Vault>,
    index: RwLock<SearchIndex>,
    /// Serialises writers so redb commits and index updates happen in the
    /// same order.
    writer: Mutex<()>,
    embedder: Option<SharedEmbedder>,
    redactor: Redactor,
    /// Distillation anchors of the last model used (the base model's
    /// answers to the anchor questions cost a few seconds to compute).
    anchors: Mutex<Option<parametric::AnchorCache>>,
    /// Fingerprint of the LLM loaded beside this runtime, if any (set by
    /// [`Assistant::new`]): install reports say which derivatives fit it.
    llm_model: Mutex<Option<memkern_core::ids::Fingerprint>>,
    /// Bumped whenever KV blocks or adapters arrive or leave in bulk
    /// (module install, update and removal, pack import), so a running
    /// [`Assistant`] rescans the vault for them.
    derived_epoch: std::sync::atomic::AtomicU64,
}

impl std::fmt::Debug for Runtime {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Runtime")
            .field("dir", &self.dir)
            .field("embedder", &self.embedder.as_ref().map(|e| e.name()))
            .finish_non_exhaustive()
    }
}

impl Drop for Runtime {
    /// Reads are audited with non-durable commits; one durable commit at
    /// close makes them persistent (a crash may lose read entries, never
    /// writes).
    fn drop(&mut self) {
        let vault = self.vault();
        match vault.database().begin_write() {
            Ok(txn) => {
                if let Err(e) = txn.commit() {
                    tracing::warn!("final commit failed: {e}");
                }
            }
            Err(e) => tracing::warn!("final commit failed: {e}"),
        }
    }
}

/// The user id of the built-in local administrator (the CLI).
pub const ADMIN: UserId = UserId(1);

impl Runtime {
    /// Records the fingerprint of the LLM that answers with this runtime.
    pub fn set_llm_model(&self, model: memkern_core::ids::Fingerprint) {
        *self.llm_model.lock().unwrap_or_else(|p| p.into_inner()) = Some(model);
    }

    /// The fingerprint of the LLM answering with this runtime, if one is.
    pub fn llm_model(&self) -> Option<memkern_core::ids::Fingerprint> {
        *self.llm_model.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Changes whenever KV blocks or adapters were added or removed in
    /// bulk; see [`Assistant`], which rescans when it moves.
    pub fn derived_epoch(&self) -> u64 {
        self.derived_epoch
            .load(std::sync::atomic::Ordering::Acquire)
    }

    pub(crate) fn bump_derived_epoch(&self) {
        self.derived_epoch
            .fetch_add(1, std::sync::atomic::Ordering::AcqRel);
    }

    /// Opens the runtime in `dir` (created if needed): repairs crash
    /// leftovers (a module update or removal cut short included), creates the local admin on first use, deletes expired
    /// memories and rebuilds the search index.
    ///
    /// Without an embedder, search is keyword + time only and dedup is by
    /// identical text only.
    pub fn open(
        dir: impl AsRef<Path>,
        config: Config,
        embedder: Option<SharedEmbedder>,
    ) -> Result<(Runtime, OpenReport)> {
        let dir = dir.as_ref().to_path_buf();
        std::fs::create_dir_all(&dir).map_err(|e| {
            RuntimeError::Invalid(format!("cannot create data dir {}: {e}", dir.display()))
        })?;
        let (vault, recovery) = Vault::open(&dir)?;
        let redactor = Redactor::new(&config.redaction)?;
        let dim = embedder.as_ref().map(|e| e.dim());
        let rt = Runtime {
            dir,
            config,
            vault: RwLock::new(vault),
            index: RwLock::new(SearchIndex::new(dim)),
            writer: Mutex::new(()),
            embedder,
            redactor,
            anchors: Mutex::new(None),
            llm_model: Mutex::new(None),
            derived_epoch: std::sync::atomic::AtomicU64::new(0),
        };
        rt.ensure_admin()?;
        // A module update or removal cut short leaves the old namespace
        // mounted but unreferenced: finish it before anything reads it.
        if rt.sweep_module_orphans()? > 0 {
            rt.vacuum()?;
        }
        let memories = rt.rebuild_index()?;
        let expired = rt.sweep_expired()?;
        Ok((
            rt,
            OpenReport {
                recovery,
                memories,
                expired,
            },
        ))
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The configuration in force.
    pub fn config(&self) -> &Config {
        &self.config
    }

    /// The embedder, if any.
    pub fn embedder(&self) -> Option<&(dyn DenseEmbedder + Send + Sync)> {
        self.embedder.as_deref()
    }

    /// The local administrator principal (what the CLI acts as).
    pub fn admin(&self) -> Principal {
        Principal::admin(ADMIN)
    }

    fn vault(&self) -> RwLockReadGuard<'_, Vault> {
        // A poisoned lock means a writer panicked mid-call; the vault
        // itself is consistent (redb commits are atomic), so go on.
        self.vault.read().unwrap_or_else(|p| p.into_inner())
    }

    fn vault_mut(&self) -> RwLockWriteGuard<'_, Vault> {
        self.vault.write().unwrap_or_else(|p| p.into_inner())
    }

    fn index(&self) -> RwLockReadGuard<'_, SearchIndex> {
        self.index.read().unwrap_or_else(|p| p.into_inner())
    }

    fn index_mut(&self) -> RwLockWriteGuard<'_, SearchIndex> {
        self.index.write().unwrap_or_else(|p| p.into_inner())
    }

    fn write_lock(&self) -> MutexGuard<'_, ()> {
        self.writer.lock().unwrap_or_else(|p| p.into_inner())
    }
}

impl Runtime {
    /// Runs `f` in one write transaction and commits it: durably (fsync
    /// before returning), or with redb's non-durable commit, which the
    /// next durable commit makes persistent (audit reads, statistics).
    pub(crate) fn write<T>(
        &self,
        durable: bool,
        f: impl FnOnce(&redb::WriteTransaction) -> Result<T, redb::Error>,
    ) -> Result<T> {
        let vault = self.vault();
        let mut txn = vault
            .database()
            .begin_write()
            .map_err(|e| vault.db_error(e))?;
        if !durable {
            txn.set_durability(redb::Durability::None)
                .map_err(|e| RuntimeError::Invalid(format!("commit durability: {e}")))?;
        }
        let out = f(&txn).map_err(|e| vault.db_error(e))?;
        txn.commit().map_err(|e| vault.db_error(e))?;
        Ok(out)
    }

    /// Calls `f` with every entry of `table` from `from` on, in key order,
    /// until it returns `false` (a table never written is empty).
    pub(crate) fn scan<K: redb::Key + 'static, V: redb::Value + 'static>(
        &self,
        table: redb::TableDefinition<K, V>,
        from: Option<K::SelfType<'_>>,
        mut f: impl for<'a> FnMut(K::SelfType<'a>, V::SelfType<'a>) -> Result<bool>,
    ) -> Result<()> {
        use redb::{ReadableDatabase, ReadableTable};
        let vault = self.vault();
        let txn = vault
            .database()
            .begin_read()
            .map_err(|e| vault.db_error(e))?;
        let t = match txn.open_table(table) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(()),
            Err(e) => return Err(vault.db_error(e).into()),
        };
        let iter = match from {
            Some(start) => t.range(start..),
            None => t.iter(),
        }
        .map_err(|e| vault.db_error(e))?;
        for entry in iter {
            let (k, v) = entry.map_err(|e| vault.db_error(e))?;
            if !f(k.value(), v.value())? {
                break;
            }
        }
        Ok(())
    }
}

/// Now, as a core timestamp (milliseconds since the Unix epoch).
pub fn now() -> Timestamp {
    let ms = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_millis()).unwrap_or(i64::MAX));
    Timestamp(ms)
}

/// Lowercase hex of `bytes` (keys, signatures).
pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|x| format!("{x:02x}")).collect()
}

/// A fresh random cube id.
pub(crate) fn random_id() -> Result<CubeId> {
    let mut b = [0u8; 16];
    getrandom::fill(&mut b)
        .map_err(|e| RuntimeError::Invalid(format!("no randomness available: {e}")))?;
    Ok(CubeId(b))
}

/// Maps a decode failure of a stored record.
pub(crate) fn corrupt(what: &str, e: impl std::fmt::Display) -> RuntimeError {
    RuntimeError::Corrupt(format!("{what}: {e}"))
}
