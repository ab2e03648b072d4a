//! The append-only audit log: who read, wrote, deleted, shared or exported
//! what, and whether it was allowed.
//!
//! Exists so an administrator can answer "who saw my memory?" after the
//! fact. Entries name memories by id, never by content, so a hard delete
//! leaves no text behind in the log. Writes and denials are logged in the
//! same transaction as the change; reads are logged with redb's
//! non-durable commits (made durable by the next write), so a search does
//! not cost an fsync.

use memkern_core::governance::{Principal, Role};
use memkern_core::ids::{CubeId, UserId};
use memkern_core::time::Timestamp;
use redb::{ReadableTable, WriteTransaction};
use serde::Serialize;

use super::tables::{AUDIT, AuditRow, COUNTERS, decode, encode};
use super::{Result, Runtime, RuntimeError, corrupt};
use memkern_core::governance::DenyReason;

/// One audit log line, as the admin reads it.
#[derive(Clone, Debug, PartialEq, Serialize)]
pub struct AuditEntry {
    /// Position in the log (increasing).
    pub seq: u64,
    /// When.
    pub at: Timestamp,
    /// Who.
    pub actor: UserId,
    /// Whether they acted as the administrator.
    pub admin: bool,
    /// What: `add`, `get`, `search`, `update`, `rollback`, `delete`,
    /// `expire`, `share`, `export`, `import`, `create_user`, …
    pub action: String,
    /// The memory concerned (hex id), if one.
    pub target: Option<String>,
    /// The decision.
    pub allowed: bool,
    /// Extra facts (never memory text): reason of a denial, counts.
    pub detail: String,
}

/// An entry about to be written.
pub(crate) struct Event<'a> {
    pub actor: &'a Principal,
    pub action: &'a str,
    pub target: Option<CubeId>,
    pub allowed: bool,
    pub detail: String,
}

impl<'a> Event<'a> {
    /// An allowed action.
    pub fn ok(actor: &'a Principal, action: &'a str, target: Option<CubeId>) -> Self {
        Event {
            actor,
            action,
            target,
            allowed: true,
            detail: String::new(),
        }
    }

    /// A refused action, with the reason.
    pub fn denied(
        actor: &'a Principal,
        action: &'a str,
        target: Option<CubeId>,
        why: &impl std::fmt::Display,
    ) -> Self {
        Event {
            actor,
            action,
            target,
            allowed: false,
            detail: why.to_string(),
        }
    }

    /// Adds detail.
    pub fn with(mut self, detail: String) -> Self {
        self.detail = detail;
        self
    }
}

/// Appends `events` inside `txn`.
pub(crate) fn append(txn: &WriteTransaction, events: &[Event<'_>]) -> Result<(), redb::Error> {
    if events.is_empty() {
        return Ok(());
    }
    let mut counters = txn.open_table(COUNTERS)?;
    let mut seq = counters.get("audit")?.map_or(0, |v| v.value());
    let mut log = txn.open_table(AUDIT)?;
    let at_ms = super::now().0;
    for e in events {
        let row = AuditRow {
            at_ms,
            actor: e.actor.user.0,
            admin: e.actor.role == Role::Admin,
            action: e.action.to_owned(),
            target: e.target.map(|t| t.0),
            allowed: e.allowed,
            detail: e.detail.clone(),
        };
        // Encoding a plain struct of integers and strings cannot fail
        // (postcard only fails on unsupported types or full buffers).
        let bytes = encode(&row).unwrap_or_default();
        log.insert(seq, bytes.as_slice())?;
        seq += 1;
    }
    counters.insert("audit", seq)?;
    Ok(())
}

impl Runtime {
    /// Logs events in their own non-durable transaction (reads, denials
    /// outside a write).
    pub(crate) fn log(&self, events: &[Event<'_>]) -> Result<()> {
        self.write(false, |txn| append(txn, events))
    }

    /// Logs a denial and returns it as an error.
    pub(crate) fn deny(
        &self,
        actor: &Principal,
        action: &str,
        target: Option<CubeId>,
        why: DenyReason,
    ) -> RuntimeError {
        if let Err(e) = self.log(&[Event::denied(actor, action, target, &why)]) {
            tracing::warn!("audit log write failed: {e}");
        }
        RuntimeError::Denied(why)
    }

    /// Logs a refused write to an installed module's memories and returns
    /// the error that names the module.
    pub(crate) fn refuse_module_write(
        &self,
        actor: &Principal,
        action: &str,
        target: Option<CubeId>,
        mount: &crate::tables::Mount,
    ) -> RuntimeError {
        let _ = self.deny(actor, action, target, DenyReason::Frozen);
        RuntimeError::ReadOnly(mount.module.clone())
    }

    /// The audit log from sequence number `from`, at most `limit` entries
    /// (administrator only).
    pub fn audit_log(&self, who: &Principal, from: u64, limit: usize) -> Result<Vec<AuditEntry>> {
        if who.role != Role::Admin {
            return Err(self.deny(who, "audit", None, DenyReason::NotOwner));
        }
        let mut out = Vec::new();
        self.scan(AUDIT, Some(from), |seq, bytes| {
            if out.len() == limit {
                return Ok(false);
            }
            let row: AuditRow = decode(bytes).map_err(|e| corrupt("audit entry", e))?;
            out.push(AuditEntry {
                seq,
                at: Timestamp(row.at_ms),
                actor: UserId(row.actor),
                admin: row.admin,
                action: row.action,
                target: row.target.map(|t| CubeId(t).to_string()),
                allowed: row.allowed,
                detail: row.detail,
            });
            Ok(true)
        })?;
        Ok(out)
    }
}
