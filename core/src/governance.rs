//! Governance primitives: who may do what to a cube, and the audit record
//! of every decision.
//!
//! The rules live in one pure function, [`check`], so the Linux runtime, the
//! HTTP server and the MCU firmware all enforce exactly the same policy.

use serde::{Deserialize, Serialize};

use crate::cube::{Metadata, Sensitivity, Visibility};
use crate::ids::{CubeId, UserId};
use crate::lifecycle::LifecycleState;
use crate::time::Timestamp;

/// What a principal wants to do with a cube.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum Operation {
    /// See the content, history or a search hit.
    Read,
    /// Create a new version.
    Write,
    /// Hard-delete the memory.
    Delete,
    /// Grant access to another user.
    Share,
    /// Copy the memory off the device (pack file).
    Export,
}

/// The role of a principal.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// An ordinary user: sees own memories and what was shared.
    User,
    /// The device's local administrator (the CLI); still bound by the
    /// tombstone, expiry, freeze and secrecy rules.
    Admin,
}

/// Who is asking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Principal {
    /// The user.
    pub user: UserId,
    /// Their role.
    pub role: Role,
}

impl Principal {
    /// An ordinary user.
    pub fn user(user: UserId) -> Self {
        Principal {
            user,
            role: Role::User,
        }
    }

    /// The local administrator acting as `user`.
    pub fn admin(user: UserId) -> Self {
        Principal {
            user,
            role: Role::Admin,
        }
    }
}

/// Why an operation was refused.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum DenyReason {
    /// The operation is reserved to the owner.
    #[error("only the owner may do this")]
    NotOwner,
    /// The cube was not shared with this principal (for this operation).
    #[error("not shared with this user")]
    NotGranted,
    /// The cube is a tombstone.
    #[error("the memory was deleted")]
    Tombstone,
    /// The cube's TTL has passed.
    #[error("the memory has expired")]
    Expired,
    /// The cube is frozen against changes.
    #[error("the memory is frozen")]
    Frozen,
    /// Secret memories never leave their owner or the device.
    #[error("the memory is secret")]
    TooSensitive,
}

/// The outcome of a governance check.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum Decision {
    /// Go ahead.
    Allow,
    /// Refused, with the reason.
    Deny(DenyReason),
}

impl Decision {
    /// True for [`Decision::Allow`].
    pub fn is_allowed(self) -> bool {
        self == Decision::Allow
    }

    /// `Ok(())` when allowed, the reason otherwise (for `?`).
    pub fn into_result(self) -> Result<(), DenyReason> {
        match self {
            Decision::Allow => Ok(()),
            Decision::Deny(r) => Err(r),
        }
    }
}

/// Decides whether `principal` may perform `op` on the cube described by
/// `meta` at time `now`.
///
/// Rules, in order: tombstones refuse everything; expired cubes refuse
/// everything but delete; secret cubes are never shared or exported;
/// frozen cubes refuse writes; the admin and the owner may do the rest;
/// others may read public cubes or cubes shared with them (readers or
/// writers), and write cubes shared read-write with them; only the owner or
/// admin may delete, share or export.
pub fn check<S>(
    principal: &Principal,
    meta: &Metadata<S>,
    op: Operation,
    now: Timestamp,
) -> Decision {
    use Operation::*;
    if meta.lifecycle == LifecycleState::Deleted {
        return Decision::Deny(DenyReason::Tombstone);
    }
    if meta.is_expired(now) && op != Delete {
        return Decision::Deny(DenyReason::Expired);
    }
    if meta.sensitivity == Sensitivity::Secret && matches!(op, Share | Export) {
        return Decision::Deny(DenyReason::TooSensitive);
    }
    if meta.lifecycle == LifecycleState::Frozen && op == Write {
        return Decision::Deny(DenyReason::Frozen);
    }
    if principal.role == Role::Admin || principal.user == meta.owner {
        return Decision::Allow;
    }
    let access = &meta.access;
    let is_writer =
        access.visibility == Visibility::Shared && access.writers.contains(&principal.user);
    let is_reader = is_writer
        || access.visibility == Visibility::Public
        || (access.visibility == Visibility::Shared && access.readers.contains(&principal.user));
    match op {
        Read if is_reader => Decision::Allow,
        Write if is_writer => Decision::Allow,
        Read | Write => Decision::Deny(DenyReason::NotGranted),
        Delete | Share | Export => Decision::Deny(DenyReason::NotOwner),
    }
}

/// One line of the audit log: who did what to which cube, when, and whether
/// it was allowed. Fixed-size, so an MCU can log it without a heap.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct AuditRecord {
    /// When the decision was made.
    pub at: Timestamp,
    /// Who asked.
    pub actor: UserId,
    /// The actor's role.
    pub role: Role,
    /// What they asked for.
    pub operation: Operation,
    /// The cube concerned.
    pub target: CubeId,
    /// The decision.
    pub outcome: Decision,
}

/// Runs [`check`] and returns the decision together with its audit record,
/// so callers cannot forget to log a decision they act on.
pub fn check_audited<S>(
    principal: &Principal,
    meta: &Metadata<S>,
    op: Operation,
    now: Timestamp,
) -> (Decision, AuditRecord) {
    let outcome = check(principal, meta, op, now);
    let record = AuditRecord {
        at: now,
        actor: principal.user,
        role: principal.role,
        operation: op,
        target: meta.id,
        outcome,
    };
    (outcome, record)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::cube::SourceKind;
    use crate::ids::NamespaceId;

    const A: UserId = UserId(1);
    const B: UserId = UserId(2);
    const NOW: Timestamp = Timestamp(1_000_000);

    fn meta() -> Metadata<&'static str> {
        let mut m = Metadata::new(
            CubeId([1; 16]),
            A,
            NamespaceId(1),
            NOW,
            NOW,
            SourceKind::DialogueTurn,
        );
        m.lifecycle = LifecycleState::Activated;
        m
    }

    const OPS: [Operation; 5] = [
        Operation::Read,
        Operation::Write,
        Operation::Delete,
        Operation::Share,
        Operation::Export,
    ];

    #[test]
    fn owner_may_do_everything_stranger_nothing() {
        let m = meta();
        for op in OPS {
            assert_eq!(
                check(&Principal::user(A), &m, op, NOW),
                Decision::Allow,
                "{op:?}"
            );
            assert!(
                !check(&Principal::user(B), &m, op, NOW).is_allowed(),
                "{op:?}"
            );
        }
    }

    #[test]
    fn sharing_grants_exactly_read_or_write() {
        let mut m = meta();
        m.access.visibility = Visibility::Shared;
        m.access.readers.push(B).expect("capacity");
        let b = Principal::user(B);
        assert_eq!(check(&b, &m, Operation::Read, NOW), Decision::Allow);
        assert_eq!(
            check(&b, &m, Operation::Write, NOW),
            Decision::Deny(DenyReason::NotGranted)
        );
        assert_eq!(
            check(&b, &m, Operation::Export, NOW),
            Decision::Deny(DenyReason::NotOwner)
        );
        m.access.writers.push(B).expect("capacity");
        assert_eq!(check(&b, &m, Operation::Write, NOW), Decision::Allow);
        // Grants only count while the cube is shared.
        m.access.visibility = Visibility::Private;
        assert_eq!(
            check(&b, &m, Operation::Read, NOW),
            Decision::Deny(DenyReason::NotGranted)
        );
    }

    #[test]
    fn hard_rules_bind_owner_and_admin() {
        let mut m = meta();
        m.sensitivity = Sensitivity::Secret;
        for p in [Principal::user(A), Principal::admin(B)] {
            assert_eq!(
                check(&p, &m, Operation::Export, NOW),
                Decision::Deny(DenyReason::TooSensitive)
            );
            assert_eq!(check(&p, &m, Operation::Read, NOW), Decision::Allow);
        }
        m.lifecycle = LifecycleState::Frozen;
        assert_eq!(
            check(&Principal::user(A), &m, Operation::Write, NOW),
            Decision::Deny(DenyReason::Frozen)
        );
        m.expires_at = Some(NOW);
        assert_eq!(
            check(&Principal::user(A), &m, Operation::Read, NOW),
            Decision::Deny(DenyReason::Expired)
        );
        assert_eq!(
            check(&Principal::user(A), &m, Operation::Delete, NOW),
            Decision::Allow
        );
        m.lifecycle = LifecycleState::Deleted;
        for op in OPS {
            assert_eq!(
                check(&Principal::admin(A), &m, op, NOW),
                Decision::Deny(DenyReason::Tombstone)
            );
        }
    }

    #[test]
    fn public_is_readable_not_writable() {
        let mut m = meta();
        m.access.visibility = Visibility::Public;
        let b = Principal::user(B);
        assert!(check(&b, &m, Operation::Read, NOW).is_allowed());
        assert!(!check(&b, &m, Operation::Write, NOW).is_allowed());
    }

    #[test]
    fn audit_record_matches_decision() {
        let m = meta();
        let (d, rec) = check_audited(&Principal::user(B), &m, Operation::Read, NOW);
        assert_eq!(rec.outcome, d);
        assert_eq!(rec.actor, B);
        assert_eq!(rec.target, m.id);
        let mut buf = [0u8; 64];
        let bytes = postcard::to_slice(&rec, &mut buf).expect("fits");
        let back: AuditRecord = postcard::from_bytes(bytes).expect("round trip");
        assert_eq!(back, rec);
    }
}
