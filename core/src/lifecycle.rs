//! The memory lifecycle: which states a cube passes through and which moves
//! between them are allowed.
//!
//! The allowed transitions are data ([`TRANSITIONS`]), so the table in
//! `core/FORMAT.md`, the checks and the tests all read the same list.

use serde::{Deserialize, Serialize};

/// Where a memory is in its life.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum LifecycleState {
    /// Just created; not yet indexed or served.
    Generated,
    /// Live: retrievable and schedulable.
    Activated,
    /// Kept but cold: not served by default, can be re-activated.
    Archived,
    /// Distilled into a parametric adapter; still searchable and deletable.
    Merged,
    /// Pinned: content may not change until unfrozen.
    Frozen,
    /// Tombstone: content erased; terminal.
    Deleted,
}

impl LifecycleState {
    /// Every state, in declaration order.
    pub const ALL: [LifecycleState; 6] = [
        LifecycleState::Generated,
        LifecycleState::Activated,
        LifecycleState::Archived,
        LifecycleState::Merged,
        LifecycleState::Frozen,
        LifecycleState::Deleted,
    ];

    /// Whether the memory may be returned by retrieval in this state.
    pub fn is_servable(self) -> bool {
        matches!(
            self,
            LifecycleState::Activated | LifecycleState::Merged | LifecycleState::Frozen
        )
    }

    /// Whether the content may be updated (a new version created) in this state.
    pub fn is_mutable(self) -> bool {
        matches!(
            self,
            LifecycleState::Generated | LifecycleState::Activated | LifecycleState::Merged
        )
    }
}

/// The allowed `(from, to)` moves. Everything else is refused.
pub const TRANSITIONS: &[(LifecycleState, LifecycleState)] = {
    use LifecycleState::*;
    &[
        (Generated, Activated),
        (Generated, Deleted),
        (Activated, Archived),
        (Activated, Merged),
        (Activated, Frozen),
        (Activated, Deleted),
        (Archived, Activated),
        (Archived, Deleted),
        (Merged, Activated),
        (Merged, Deleted),
        (Frozen, Activated),
        (Frozen, Deleted),
    ]
};

/// A move the lifecycle does not allow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[error("invalid lifecycle transition from {from:?} to {to:?}")]
pub struct InvalidTransition {
    /// Current state.
    pub from: LifecycleState,
    /// Requested state.
    pub to: LifecycleState,
}

/// Whether `from → to` is in [`TRANSITIONS`].
pub fn is_allowed(from: LifecycleState, to: LifecycleState) -> bool {
    TRANSITIONS.iter().any(|&(f, t)| f == from && t == to)
}

/// Checks a move and returns the new state, or an error naming both states.
pub fn transition(
    from: LifecycleState,
    to: LifecycleState,
) -> Result<LifecycleState, InvalidTransition> {
    if is_allowed(from, to) {
        Ok(to)
    } else {
        Err(InvalidTransition { from, to })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_is_exactly_what_is_allowed() {
        for from in LifecycleState::ALL {
            for to in LifecycleState::ALL {
                let listed = TRANSITIONS.contains(&(from, to));
                assert_eq!(transition(from, to).is_ok(), listed, "{from:?}->{to:?}");
            }
        }
    }

    #[test]
    fn deleted_is_terminal_and_error_names_both_states() {
        for to in LifecycleState::ALL {
            let err = transition(LifecycleState::Deleted, to).expect_err("terminal");
            assert_eq!(err.from, LifecycleState::Deleted);
            assert_eq!(err.to, to);
        }
        let msg = std::format!(
            "{}",
            transition(LifecycleState::Generated, LifecycleState::Merged).expect_err("refused")
        );
        assert!(msg.contains("Generated") && msg.contains("Merged"), "{msg}");
    }

    #[test]
    fn every_non_deleted_state_can_be_deleted() {
        for s in LifecycleState::ALL {
            if s != LifecycleState::Deleted {
                assert!(is_allowed(s, LifecycleState::Deleted));
            }
        }
    }

    #[test]
    fn archive_round_trip() {
        let s = transition(LifecycleState::Generated, LifecycleState::Activated).expect("ok");
        let s = transition(s, LifecycleState::Archived).expect("ok");
        assert_eq!(
            transition(s, LifecycleState::Activated),
            Ok(LifecycleState::Activated)
        );
    }
}
