//! Which plaintext memories are worth moving into a parametric adapter.
//!
//! It exists because distillation is expensive (a training run) and hard to
//! undo (knowledge in weights can only be removed by retraining), so only
//! memories that are **stable** (unchanged for a while, no expiry date —
//! a memory with a TTL is temporary by definition), **used** (heat), **not
//! secret** (weights are harder to govern than text) and **short enough to
//! be a fact** go in, hottest first, within a count and a token budget.
//! Like [`crate::scheduler::plan`] it is deterministic, integer-only and
//! allocation-free, so the Linux runtime and a device agree on the choice.

use crate::cube::Sensitivity;
use crate::ids::CubeId;
use crate::lifecycle::LifecycleState;
use crate::time::Timestamp;

/// A memory offered for distillation.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DistillCandidate {
    /// The memory (its head cube).
    pub id: CubeId,
    /// Its heat decayed to now (Q16.16, see [`crate::heat`]).
    pub heat: u32,
    /// When its current version was recorded.
    pub changed: Timestamp,
    /// Lifecycle state.
    pub state: LifecycleState,
    /// Expiry, if any.
    pub expires: Option<Timestamp>,
    /// Sensitivity label.
    pub sensitivity: Sensitivity,
    /// Training tokens its examples cost.
    pub tokens: u32,
}

/// The rules of selection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DistillPolicy {
    /// A memory must be unchanged for at least this long (ms).
    pub min_age_ms: i64,
    /// Minimum heat (Q16.16; 0 accepts never-used memories).
    pub min_heat: u32,
    /// Most memories in one adapter.
    pub max_memories: u16,
    /// Most training tokens (sum of the chosen candidates' `tokens`).
    pub max_tokens: u32,
}

impl DistillCandidate {
    /// Whether `policy` allows distilling this memory at `now` at all.
    pub fn eligible(&self, now: Timestamp, policy: &DistillPolicy) -> bool {
        matches!(
            self.state,
            LifecycleState::Activated | LifecycleState::Merged
        ) && self.expires.is_none()
            && self.sensitivity != Sensitivity::Secret
            && now.0.saturating_sub(self.changed.0) >= policy.min_age_ms
            && self.heat >= policy.min_heat
            && self.tokens > 0
    }
}

/// Orders `candidates` so the chosen ones come first (hottest first; ties:
/// older change, then lower id) and returns how many were chosen: eligible
/// ones, in that order, while they fit `max_memories` and `max_tokens`
/// (one that does not fit is skipped and the scan goes on).
pub fn select(
    candidates: &mut [DistillCandidate],
    now: Timestamp,
    policy: &DistillPolicy,
) -> usize {
    candidates.sort_unstable_by(|a, b| {
        let (ea, eb) = (a.eligible(now, policy), b.eligible(now, policy));
        eb.cmp(&ea)
            .then(b.heat.cmp(&a.heat))
            .then(a.changed.cmp(&b.changed))
            .then(a.id.cmp(&b.id))
    });
    let (mut chosen, mut tokens) = (0usize, 0u32);
    let mut i = 0;
    while i < candidates.len() {
        let c = candidates[i];
        if !c.eligible(now, policy) || chosen >= usize::from(policy.max_memories) {
            break;
        }
        match tokens.checked_add(c.tokens) {
            Some(t) if t <= policy.max_tokens => {
                tokens = t;
                candidates.swap(chosen, i);
                chosen += 1;
            }
            _ => {}
        }
        i += 1;
    }
    chosen
}

#[cfg(test)]
mod tests {
    use super::*;

    fn c(id: u8, heat: u32, changed: i64) -> DistillCandidate {
        DistillCandidate {
            id: CubeId([id; 16]),
            heat,
            changed: Timestamp(changed),
            state: LifecycleState::Activated,
            expires: None,
            sensitivity: Sensitivity::Personal,
            tokens: 10,
        }
    }

    const POLICY: DistillPolicy = DistillPolicy {
        min_age_ms: 1000,
        min_heat: 0,
        max_memories: 3,
        max_tokens: 1000,
    };

    #[test]
    fn hottest_stable_memories_first_within_budgets() {
        let mut v = [
            c(1, 5, 0),
            c(2, 50, 0),
            c(3, 20, 0),
            c(4, 99, 0),
            c(5, 1, 0),
        ];
        let n = select(&mut v, Timestamp(10_000), &POLICY);
        assert_eq!(n, 3);
        let ids: [u8; 3] = [v[0].id.0[0], v[1].id.0[0], v[2].id.0[0]];
        assert_eq!(ids, [4, 2, 3]);
    }

    #[test]
    fn unstable_expiring_secret_or_archived_memories_stay_out() {
        let now = Timestamp(10_000);
        let mut fresh = c(1, 9, 9_500);
        let mut expiring = c(2, 9, 0);
        expiring.expires = Some(Timestamp(20_000));
        let mut secret = c(3, 9, 0);
        secret.sensitivity = Sensitivity::Secret;
        let mut archived = c(4, 9, 0);
        archived.state = LifecycleState::Archived;
        let mut merged = c(5, 1, 0);
        merged.state = LifecycleState::Merged;
        let mut empty = c(6, 9, 0);
        empty.tokens = 0;
        let mut v = [fresh, expiring, secret, archived, merged, empty];
        let n = select(&mut v, now, &POLICY);
        assert_eq!(n, 1);
        assert_eq!(
            v[0].id,
            CubeId([5; 16]),
            "merged memories are re-distillable"
        );
        fresh.changed = Timestamp(0);
        assert!(fresh.eligible(now, &POLICY));
    }

    #[test]
    fn token_budget_skips_what_does_not_fit() {
        let mut big = c(1, 99, 0);
        big.tokens = 995;
        let mut v = [big, c(2, 50, 0), c(3, 40, 0)];
        let policy = DistillPolicy {
            max_tokens: 1000,
            ..POLICY
        };
        let n = select(&mut v, Timestamp(10_000), &policy);
        assert_eq!(n, 1);
        assert_eq!(v[0].id, CubeId([1; 16]));
        let mut v = [c(1, 99, 0), c(2, 50, 0)];
        let tiny = DistillPolicy {
            max_tokens: 15,
            ..POLICY
        };
        assert_eq!(select(&mut v, Timestamp(10_000), &tiny), 1);
    }
}
