//! Fixed-budget scheduler: which memories enter the prompt, and in what form.
//!
//! It exists because both targets answer the same question under hard
//! limits: a Raspberry Pi chat turn and an MCU query each get a set of
//! retrieved memories and must fit them into a context window, a RAM budget
//! for resident KV snapshots and a flash budget for stored snapshots. One
//! deterministic, integer-only, allocation-free routine ([`plan`]) answers it
//! on both, bit for bit.
//!
//! # Model
//!
//! Every [`Candidate`] is a memory whose **text can always be put into the
//! prompt**; its cost there is `tokens` context positions. A
//! [`Kind::Activation`] memory may also have a KV-cache **snapshot** of that
//! text ([`Location::ResidentSnapshot`] in RAM, or
//! [`Location::FlashSnapshot`] on flash only). Restoring a snapshot puts the
//! same `tokens` into the context without prefill, so it saves time but not
//! context; it needs the snapshot's `bytes` of RAM. Every snapshot is backed
//! by flash (a resident one is a RAM copy of a stored one), so each existing
//! snapshot that is kept counts its `bytes` against the flash budget.
//!
//! Budgets ([`Budgets`]) cover the candidates passed in: snapshots of
//! memories that are not candidates are invisible to the scheduler, so the
//! caller either passes them too (typically with relevance 0, so they are
//! only considered for eviction) or subtracts their usage from the budgets.
//!
//! # Algorithm
//!
//! All orders below are total (the last tie-break is the unique
//! [`CubeId`]), so the plan does not depend on the order of the input slice.
//! All comparisons are exact integer cross-multiplications.
//!
//! 1. **Select** (uses only `context_tokens` and `max_items`). Candidates
//!    with `relevance > 0` are visited by *relevance density*
//!    `relevance / tokens`, highest first (a zero-token candidate has
//!    infinite density; ties: higher relevance, then lower id). Each is
//!    taken if the item count stays within `max_items` and its tokens fit in
//!    what is left of `context_tokens`; otherwise it is skipped and the scan
//!    goes on. Candidates with `relevance == 0` are never selected.
//! 2. **Restore** (RAM and flash). Selected `Activation` candidates that have
//!    a snapshot are visited by tokens saved per snapshot byte, highest first
//!    (ties: resident first, then lower id); each is restored if its bytes
//!    fit in both the remaining RAM and flash budgets. Every other selected
//!    candidate goes into the prompt as text.
//! 3. **Keep, promote, evict, demote** (flash, then RAM). The remaining
//!    snapshot holders and the promotion candidates (selected as text,
//!    `Activation`, no snapshot, heat at least
//!    [`Policy::promote_min_heat`]) are visited by heat, hottest first (ties:
//!    existing snapshots before new ones, then lower id). An existing
//!    snapshot that fits in the remaining flash budget is kept, otherwise
//!    evicted (deleted from flash and RAM); a kept resident snapshot stays in
//!    RAM if it fits in the remaining RAM budget, otherwise it is demoted
//!    (dropped from RAM, kept on flash). A promotion candidate whose
//!    expected `bytes` fit in the remaining flash budget is promoted. A
//!    snapshot of a `Plaintext` candidate is always evicted.
//!
//! Seven sorts of at most `n` elements in the caller's slice and linear scans:
//! `O(n log n)` time, no heap, and stack use proportional to `N`.
//!
//! # Guarantees
//!
//! - **Within budget**: the prompt's tokens ≤ `context_tokens`, its items ≤
//!   `max_items`, resident snapshot bytes after the plan (restored + kept)
//!   ≤ `ram_bytes`, snapshot bytes on flash after the plan (restored + kept +
//!   promoted) ≤ `flash_bytes`.
//! - **Deterministic**: equal candidate multisets and budgets give equal
//!   plans, whatever the slice order, on every platform.
//! - **No double booking**: an id appears at most once in the prompt
//!   (`restore` ∪ `text`) and at most once among the snapshot actions
//!   (`restore`, `promote`, `demote`, `evict`). `promote` ⊆ `text` by design:
//!   a memory is snapshotted while its text is being prefilled anyway.
//! - **No panics**: a full output list is [`SchedulerError::CapacityExceeded`].
//! - **Monotone relevance**: raising any budget (or several) never lowers
//!   [`Plan::relevance`]. The argument:
//!
//!   *RAM and flash.* Selection (step 1) reads neither; they only decide the
//!   form (snapshot or text) of an already selected memory, and the form does
//!   not change relevance or tokens. So the selected relevance is constant
//!   in these two budgets.
//!
//!   *Items.* Compare the scans for caps `K` and `K + 1` (same token
//!   budget). They make the same decisions until the first candidate `i`
//!   they disagree on; up to there both used the same tokens and count `c`.
//!   A candidate taken under `K` also fits under `K + 1`, so `i` is taken
//!   under `K + 1` only, which means `c = K`: the `K` scan is full and takes
//!   nothing more, while the `K + 1` scan has everything the `K` scan has.
//!
//!   *Tokens.* Compare budgets `b` and `b + 1` (same cap). Again the first
//!   disagreement `i` is taken under `b + 1` only, with the same tokens `U`
//!   used before it, so `U + tᵢ = b + 1` and `tᵢ ≥ 1`. After `i`, the `b`
//!   scan can spend at most `b − U = tᵢ − 1` tokens, on candidates whose
//!   density is at most `rᵢ / tᵢ` (they come later in the order; zero-token
//!   ones all come first), so it gains at most `rᵢ(tᵢ − 1)/tᵢ < rᵢ`. The
//!   `b + 1` scan gains at least `rᵢ`. Budgets are integers, so induction on
//!   `+1` steps covers any raise, and raising several budgets is a chain of
//!   single raises.
//!
//!   This is why the order is by density and not by relevance: "most
//!   relevant first, take if it fits" is not monotone (budget 9 takes
//!   relevance 9 + 8 with 4 tokens each, budget 10 takes a single
//!   relevance-10, 10-token memory). It is also why selection ignores RAM:
//!   with a second interacting budget a skip-greedy scan is not monotone.
//!
//! # Scales
//!
//! `relevance` and `heat` are unsigned fixed point with 16 fractional bits
//! ([`RELEVANCE_ONE`], [`crate::heat::ONE`]). Only their order and sums
//! matter, so any monotone integer mapping of a retriever score works;
//! [`Plan::relevance`] is the `u64` sum.
//!
//! ```
//! use memkern_core::ids::CubeId;
//! use memkern_core::scheduler::{self, Budgets, Candidate, Kind, Location, Plan, Policy};
//!
//! let mut candidates = [
//!     Candidate::text(CubeId([1; 16]), 40_000, 120),
//!     Candidate {
//!         kind: Kind::Activation,
//!         location: Location::FlashSnapshot,
//!         bytes: 3_000_000,
//!         ..Candidate::text(CubeId([2; 16]), 60_000, 500)
//!     },
//! ];
//! let budgets = Budgets { context_tokens: 1_024, ram_bytes: 4_000_000, flash_bytes: 8_000_000, max_items: 8 };
//! let plan: Plan<8> = scheduler::plan(&mut candidates, budgets, Policy::default())?;
//! assert_eq!(plan.text.as_slice(), &[CubeId([1; 16])]);
//! assert_eq!(plan.restore.as_slice(), &[CubeId([2; 16])]);
//! assert_eq!(plan.tokens, 620);
//! # Ok::<(), scheduler::SchedulerError>(())
//! ```

use core::cmp::Ordering;

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::ids::CubeId;

/// A relevance of 1.0 (16 fractional bits), the suggested scale for
/// [`Candidate::relevance`] so scores from different retrievers line up.
pub const RELEVANCE_ONE: u32 = 1 << 16;

/// What the scheduler may do with a memory's KV snapshot.
///
/// Exists so platforms without KV-cache support (or memories not worth
/// caching) can opt out of snapshots per memory.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// Text only: never restored or promoted; a leftover snapshot is evicted.
    #[default]
    Plaintext,
    /// Snapshot-capable: restored when it has a snapshot and budgets allow,
    /// promoted when it is hot and has none.
    Activation,
}

/// Where a memory's best usable form lives right now.
///
/// Exists because the cost of using a snapshot depends on it: a resident
/// one is already in RAM, a flash one must be read in first.
#[derive(
    Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
#[serde(rename_all = "snake_case")]
pub enum Location {
    /// Only the text exists (on flash); no snapshot.
    #[default]
    FlashText,
    /// A snapshot is loaded in RAM (and stored on flash).
    ResidentSnapshot,
    /// A snapshot is stored on flash but not loaded.
    FlashSnapshot,
}

impl Location {
    /// Whether a snapshot exists (resident or on flash).
    pub const fn has_snapshot(self) -> bool {
        !matches!(self, Location::FlashText)
    }
}

/// One memory the scheduler may use, with everything it needs to decide.
///
/// Exists as a plain `Copy` record so retrieval on any platform can fill a
/// fixed array of them without allocating.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Candidate {
    /// The memory (unique within one call).
    pub id: CubeId,
    /// Relevance to the current query, 16 fractional bits
    /// ([`RELEVANCE_ONE`] = 1.0). Zero means "never put in the prompt".
    pub relevance: u32,
    /// Context positions the memory occupies, as text or restored snapshot.
    /// Zero is allowed: such a memory costs no context and is taken first.
    pub tokens: u32,
    /// Snapshot size in bytes: the actual size when `location` has a
    /// snapshot, the expected size (cost of promotion) otherwise.
    pub bytes: u64,
    /// Whether snapshots are allowed for this memory.
    pub kind: Kind,
    /// Where the memory lives now.
    pub location: Location,
    /// Current heat ([`crate::heat::Heat::value_at`] at the query time):
    /// orders snapshot keeping and promotion.
    pub heat: u32,
}

impl Candidate {
    /// A text-only candidate (no snapshot, heat 0): the common case on an
    /// MCU, and a base for struct-update syntax.
    pub const fn text(id: CubeId, relevance: u32, tokens: u32) -> Candidate {
        Candidate {
            id,
            relevance,
            tokens,
            bytes: 0,
            kind: Kind::Plaintext,
            location: Location::FlashText,
            heat: 0,
        }
    }

    /// Whether this candidate could be restored from a snapshot.
    const fn restorable(&self) -> bool {
        matches!(self.kind, Kind::Activation) && self.location.has_snapshot()
    }
}

/// Hard limits a plan must respect.
///
/// Exists so every platform states its limits in one place; raising any of
/// them never lowers [`Plan::relevance`].
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Budgets {
    /// Context positions available for memories (restored and text).
    pub context_tokens: u32,
    /// RAM for resident snapshots after the plan (restored and kept).
    pub ram_bytes: u64,
    /// Flash for snapshots of the candidates after the plan.
    pub flash_bytes: u64,
    /// Most memories in the prompt (restored and text together).
    pub max_items: u32,
}

impl Budgets {
    /// No limits at all: useful for tests and for "what would I pick".
    pub const UNLIMITED: Budgets = Budgets {
        context_tokens: u32::MAX,
        ram_bytes: u64::MAX,
        flash_bytes: u64::MAX,
        max_items: u32::MAX,
    };
}

/// Tunables that are preferences, not limits.
///
/// Exists to keep [`Budgets`] purely about resources.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Policy {
    /// Least heat (Q16.16) for promoting a memory to a snapshot; `None`
    /// disables promotion. Default: two recent accesses.
    pub promote_min_heat: Option<u32>,
}

impl Default for Policy {
    fn default() -> Self {
        Policy {
            promote_min_heat: Some(2 * crate::heat::ONE),
        }
    }
}

/// The scheduler's answer: what to put in the prompt and what to do with
/// snapshots.
///
/// Exists as one value with fixed-capacity lists (`N` each) so it can be
/// built and returned without a heap. Lists hold ids; the caller still has
/// the candidates for everything else.
#[derive(Clone, Debug, PartialEq, Eq, Default, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Plan<const N: usize> {
    /// Snapshots to restore as the context prefix, in selection order
    /// (densest first). A flash one must be read into RAM first.
    pub restore: Vec<CubeId, N>,
    /// Memories to put into the prompt as text, after the restored prefix,
    /// in selection order (densest first).
    pub text: Vec<CubeId, N>,
    /// Memories in `text` whose KV to save as a new snapshot on flash, in
    /// heat order.
    pub promote: Vec<CubeId, N>,
    /// Resident snapshots to drop from RAM; they stay on flash.
    pub demote: Vec<CubeId, N>,
    /// Snapshots to delete (from flash and RAM); the text memory stays.
    pub evict: Vec<CubeId, N>,
    /// Sum of the relevance of `restore` and `text`.
    pub relevance: u64,
    /// Context positions used by `restore` and `text`.
    pub tokens: u32,
    /// Bytes of resident snapshots after the plan (restored and kept).
    pub ram_bytes: u64,
    /// Bytes of the candidates' snapshots on flash after the plan.
    pub flash_bytes: u64,
    /// Bytes to read from flash to restore the `restore` entries.
    pub load_bytes: u64,
}

impl<const N: usize> Plan<N> {
    /// Number of memories in the prompt (`restore` and `text`).
    pub fn items(&self) -> usize {
        self.restore.len() + self.text.len()
    }
}

/// Names one output list of a [`Plan`], for errors.
///
/// Exists so a capacity error says which list overflowed.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum PlanList {
    /// [`Plan::restore`].
    Restore,
    /// [`Plan::text`].
    Text,
    /// [`Plan::promote`].
    Promote,
    /// [`Plan::demote`].
    Demote,
    /// [`Plan::evict`].
    Evict,
}

/// Why no plan could be made.
///
/// Exists so callers can react (deduplicate, raise `N`) instead of the
/// scheduler panicking.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SchedulerError {
    /// Two candidates share an id, so the plan would be ambiguous.
    #[error("candidate {0} appears more than once")]
    DuplicateId(CubeId),
    /// An output list needs more entries than its capacity `N`; a capacity
    /// of at least the number of candidates never overflows.
    #[error("plan list {list:?} needs more than {capacity} entries")]
    CapacityExceeded {
        /// The list that overflowed.
        list: PlanList,
        /// Its capacity (`N`).
        capacity: usize,
    },
}

/// Plans one prompt: selects memories within `budgets` and decides which
/// snapshots to restore, promote, demote and evict.
///
/// Exists as the single entry point shared by the Linux chat loop and the
/// MCU firmware; see the [module docs](self) for the rules and guarantees.
/// The slice is reordered in place (its final order is unspecified).
///
/// # Errors
///
/// [`SchedulerError::DuplicateId`] if two candidates share an id;
/// [`SchedulerError::CapacityExceeded`] if an output list would need more
/// than `N` entries (never when `N >= candidates.len()`).
pub fn plan<const N: usize>(
    candidates: &mut [Candidate],
    budgets: Budgets,
    policy: Policy,
) -> Result<Plan<N>, SchedulerError> {
    candidates.sort_unstable_by_key(|c| c.id);
    if let Some(pair) = candidates.windows(2).find(|w| w[0].id == w[1].id) {
        return Err(SchedulerError::DuplicateId(pair[0].id));
    }
    let mut plan = Plan::<N>::default();

    // 1. Select by relevance density; only tokens and items matter here.
    candidates.sort_unstable_by(selection_order);
    let mut items: u32 = 0;
    let mut tokens: u64 = 0;
    let selected = partition_in_order(candidates, |c| {
        let take = c.relevance > 0
            && items < budgets.max_items
            && fits(
                tokens,
                u64::from(c.tokens),
                u64::from(budgets.context_tokens),
            );
        if take {
            items += 1;
            tokens += u64::from(c.tokens);
            plan.relevance = plan.relevance.saturating_add(u64::from(c.relevance));
        }
        take
    });
    // `tokens` never exceeds `context_tokens`, a u32.
    plan.tokens = u32::try_from(tokens).unwrap_or(u32::MAX);
    let (chosen, others) = candidates.split_at_mut(selected);

    // 2. Restore the snapshots that save most prefill per byte.
    chosen.sort_unstable_by(restore_order);
    let mut ram: u64 = 0;
    let mut flash: u64 = 0;
    let restored = partition_in_order(chosen, |c| {
        let take = c.restorable()
            && fits(ram, c.bytes, budgets.ram_bytes)
            && fits(flash, c.bytes, budgets.flash_bytes);
        if take {
            ram += c.bytes;
            flash += c.bytes;
            if c.location == Location::FlashSnapshot {
                plan.load_bytes += c.bytes;
            }
        }
        take
    });
    let (as_snapshot, as_text) = chosen.split_at_mut(restored);
    as_snapshot.sort_unstable_by(selection_order);
    for c in as_snapshot.iter() {
        push(&mut plan.restore, PlanList::Restore, c.id)?;
    }
    as_text.sort_unstable_by(selection_order);
    for c in as_text.iter() {
        push(&mut plan.text, PlanList::Text, c.id)?;
    }

    // 3. Keep, promote, evict and demote by heat, merging the two groups
    //    (selected as text / not selected) in one order.
    as_text.sort_unstable_by(flash_order);
    others.sort_unstable_by(flash_order);
    let (mut i, mut j) = (0, 0);
    loop {
        let (c, in_text) = match (as_text.get(i), others.get(j)) {
            (Some(a), Some(b)) if flash_order(a, b) == Ordering::Less => {
                i += 1;
                (a, true)
            }
            (_, Some(b)) => {
                j += 1;
                (b, false)
            }
            (Some(a), None) => {
                i += 1;
                (a, true)
            }
            (None, None) => break,
        };
        match (c.kind, c.location) {
            (Kind::Plaintext, Location::ResidentSnapshot | Location::FlashSnapshot) => {
                push(&mut plan.evict, PlanList::Evict, c.id)?;
            }
            (Kind::Plaintext, Location::FlashText) => {}
            (Kind::Activation, Location::FlashText) => {
                let hot = policy.promote_min_heat.is_some_and(|min| c.heat >= min);
                if in_text && hot && fits(flash, c.bytes, budgets.flash_bytes) {
                    flash += c.bytes;
                    push(&mut plan.promote, PlanList::Promote, c.id)?;
                }
            }
            (Kind::Activation, location) => {
                if !fits(flash, c.bytes, budgets.flash_bytes) {
                    push(&mut plan.evict, PlanList::Evict, c.id)?;
                    continue;
                }
                flash += c.bytes;
                if location == Location::ResidentSnapshot {
                    if fits(ram, c.bytes, budgets.ram_bytes) {
                        ram += c.bytes;
                    } else {
                        push(&mut plan.demote, PlanList::Demote, c.id)?;
                    }
                }
            }
        }
    }
    plan.ram_bytes = ram;
    plan.flash_bytes = flash;
    Ok(plan)
}

/// Whether `add` more fits on top of `used` within `budget` (no overflow).
fn fits(used: u64, add: u64, budget: u64) -> bool {
    used.checked_add(add).is_some_and(|total| total <= budget)
}

/// Appends to a plan list, turning a full list into a typed error.
fn push<const N: usize>(
    list: &mut Vec<CubeId, N>,
    which: PlanList,
    id: CubeId,
) -> Result<(), SchedulerError> {
    list.push(id).map_err(|_| SchedulerError::CapacityExceeded {
        list: which,
        capacity: N,
    })
}

/// Moves the elements for which `keep` is true to the front, keeping their
/// order; `keep` sees every element once, in slice order. Returns how many
/// were kept.
fn partition_in_order(items: &mut [Candidate], mut keep: impl FnMut(&Candidate) -> bool) -> usize {
    let mut kept = 0;
    for i in 0..items.len() {
        // Swaps only touch positions ≤ i, so `items[i]` is still the i-th
        // element of the original order.
        if keep(&items[i]) {
            items.swap(kept, i);
            kept += 1;
        }
    }
    kept
}

/// Compares `value / cost` ratios exactly; a zero cost is an infinite ratio.
/// `Greater` means `a` is denser.
fn cmp_density(a_value: u64, a_cost: u64, b_value: u64, b_cost: u64) -> Ordering {
    match (a_cost, b_cost) {
        (0, 0) => Ordering::Equal,
        (0, _) => Ordering::Greater,
        (_, 0) => Ordering::Less,
        _ => (u128::from(a_value) * u128::from(b_cost))
            .cmp(&(u128::from(b_value) * u128::from(a_cost))),
    }
}

/// Step 1 order: selectable first, densest first, then more relevant, then
/// lower id.
fn selection_order(a: &Candidate, b: &Candidate) -> Ordering {
    (a.relevance == 0)
        .cmp(&(b.relevance == 0))
        .then_with(|| {
            cmp_density(
                u64::from(b.relevance),
                u64::from(b.tokens),
                u64::from(a.relevance),
                u64::from(a.tokens),
            )
        })
        .then_with(|| b.relevance.cmp(&a.relevance))
        .then_with(|| a.id.cmp(&b.id))
}

/// Step 2 order: most tokens saved per byte first, resident before flash,
/// then lower id.
fn restore_order(a: &Candidate, b: &Candidate) -> Ordering {
    cmp_density(u64::from(b.tokens), b.bytes, u64::from(a.tokens), a.bytes)
        .then_with(|| {
            (a.location != Location::ResidentSnapshot)
                .cmp(&(b.location != Location::ResidentSnapshot))
        })
        .then_with(|| a.id.cmp(&b.id))
}

/// Step 3 order: hottest first, existing snapshots before new ones (so a tie
/// never churns flash), then lower id.
fn flash_order(a: &Candidate, b: &Candidate) -> Ordering {
    b.heat
        .cmp(&a.heat)
        .then_with(|| b.location.has_snapshot().cmp(&a.location.has_snapshot()))
        .then_with(|| a.id.cmp(&b.id))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(n: u8) -> CubeId {
        CubeId([n; 16])
    }

    fn budgets(context_tokens: u32) -> Budgets {
        Budgets {
            context_tokens,
            ..Budgets::UNLIMITED
        }
    }

    fn snapshot(
        n: u8,
        relevance: u32,
        tokens: u32,
        bytes: u64,
        location: Location,
        heat: u32,
    ) -> Candidate {
        Candidate {
            bytes,
            kind: Kind::Activation,
            location,
            heat,
            ..Candidate::text(id(n), relevance, tokens)
        }
    }

    #[test]
    fn density_beats_raw_relevance_and_stays_monotone() {
        // The counterexample to "most relevant first": I(10, 10), J(9, 4), K(8, 4).
        let base = [
            Candidate::text(id(1), 10, 10),
            Candidate::text(id(2), 9, 4),
            Candidate::text(id(3), 8, 4),
        ];
        let mut prev = 0;
        for b in 0..=20 {
            let mut c = base;
            let p: Plan<4> = plan(&mut c, budgets(b), Policy::default()).expect("plan");
            assert!(p.relevance >= prev, "budget {b}");
            prev = p.relevance;
        }
        let mut c = base;
        let p: Plan<4> = plan(&mut c, budgets(9), Policy::default()).expect("plan");
        assert_eq!(p.text.as_slice(), &[id(2), id(3)]);
        assert_eq!((p.relevance, p.tokens), (17, 8));
        let mut c = base;
        let p: Plan<4> = plan(&mut c, budgets(10), Policy::default()).expect("plan");
        assert_eq!(p.relevance, 17);
    }

    #[test]
    fn zero_tokens_and_zero_relevance() {
        let mut c = [
            Candidate::text(id(1), 0, 0),
            Candidate::text(id(2), 5, 0),
            Candidate::text(id(3), 0, 3),
            Candidate::text(id(4), 1, 1),
        ];
        let p: Plan<4> = plan(&mut c, budgets(0), Policy::default()).expect("plan");
        assert_eq!(p.text.as_slice(), &[id(2)]);
        let p: Plan<4> = plan(&mut c, Budgets::UNLIMITED, Policy::default()).expect("plan");
        assert_eq!(p.text.as_slice(), &[id(2), id(4)]);
        assert_eq!((p.relevance, p.tokens), (6, 1));
        let p: Plan<4> = plan(
            &mut c,
            Budgets {
                max_items: 0,
                ..Budgets::UNLIMITED
            },
            Policy::default(),
        )
        .expect("plan");
        assert_eq!(p, Plan::default());
    }

    #[test]
    fn full_scenario() {
        let r = RELEVANCE_ONE;
        let hot = 3 * crate::heat::ONE;
        let mut c = [
            // Selected, resident: restored from RAM.
            snapshot(1, r, 100, 1_000, Location::ResidentSnapshot, hot),
            // Selected, on flash: restored, loaded from flash.
            snapshot(2, r, 100, 1_000, Location::FlashSnapshot, 0),
            // Selected, on flash, but RAM is full: text; kept on flash.
            snapshot(3, r / 2, 100, 1_000, Location::FlashSnapshot, 5),
            // Selected as text, hot, no snapshot: promoted.
            snapshot(4, r / 2, 100, 500, Location::FlashText, hot),
            // Not selected (relevance 0), resident and cold: no flash left, evicted.
            snapshot(5, 0, 100, 1_000, Location::ResidentSnapshot, 1),
            // Not selected, resident, hotter: kept on flash, demoted (RAM full).
            snapshot(6, 0, 100, 500, Location::ResidentSnapshot, 10),
            // Plaintext with a leftover snapshot: selected as text, snapshot evicted.
            Candidate {
                location: Location::FlashSnapshot,
                bytes: 7,
                ..Candidate::text(id(7), r / 4, 10)
            },
            // Does not fit the context.
            Candidate::text(id(8), r / 8, 1_000),
        ];
        let b = Budgets {
            context_tokens: 500,
            ram_bytes: 2_000,
            flash_bytes: 4_000,
            max_items: 8,
        };
        let p: Plan<8> = plan(&mut c, b, Policy::default()).expect("plan");
        assert_eq!(p.restore.as_slice(), &[id(1), id(2)]);
        assert_eq!(p.text.as_slice(), &[id(7), id(3), id(4)]);
        assert_eq!(p.promote.as_slice(), &[id(4)]);
        assert_eq!(p.demote.as_slice(), &[id(6)]);
        assert_eq!(p.evict.as_slice(), &[id(5), id(7)]);
        assert_eq!(p.tokens, 410);
        assert_eq!(p.relevance, u64::from(2 * r + r / 2 + r / 2 + r / 4));
        assert_eq!(p.ram_bytes, 2_000);
        assert_eq!(p.flash_bytes, 4_000);
        assert_eq!(p.load_bytes, 1_000);

        let p: Plan<8> = plan(
            &mut c,
            b,
            Policy {
                promote_min_heat: None,
            },
        )
        .expect("plan");
        assert!(p.promote.is_empty());
        assert_eq!(p.demote.as_slice(), &[id(6)]);
        assert_eq!(p.evict.as_slice(), &[id(5), id(7)]);
        assert_eq!(p.flash_bytes, 3_500);
    }

    #[test]
    fn errors_are_typed() {
        let mut c = [Candidate::text(id(1), 1, 1), Candidate::text(id(1), 2, 2)];
        assert_eq!(
            plan::<4>(&mut c, Budgets::UNLIMITED, Policy::default()),
            Err(SchedulerError::DuplicateId(id(1)))
        );
        let mut c = [Candidate::text(id(1), 1, 1), Candidate::text(id(2), 2, 2)];
        assert_eq!(
            plan::<1>(&mut c, Budgets::UNLIMITED, Policy::default()),
            Err(SchedulerError::CapacityExceeded {
                list: PlanList::Text,
                capacity: 1
            })
        );
        let p = plan::<0>(&mut [], Budgets::UNLIMITED, Policy::default()).expect("empty plan");
        assert_eq!(p.items(), 0);
    }

    #[test]
    fn extreme_values_do_not_overflow() {
        let mut c = [
            snapshot(
                1,
                u32::MAX,
                u32::MAX,
                u64::MAX,
                Location::ResidentSnapshot,
                u32::MAX,
            ),
            snapshot(2, u32::MAX, 0, u64::MAX, Location::FlashSnapshot, u32::MAX),
            snapshot(3, u32::MAX, 1, u64::MAX, Location::FlashText, u32::MAX),
        ];
        let p: Plan<3> = plan(&mut c, Budgets::UNLIMITED, Policy::default()).expect("plan");
        assert_eq!(p.items(), 2);
        assert_eq!(p.relevance, 2 * u64::from(u32::MAX));
        assert_eq!(p.restore.as_slice(), &[id(2)]);
        assert_eq!(p.text.as_slice(), &[id(3)]);
        assert_eq!(p.evict.as_slice(), &[id(1)]);
        assert!(p.promote.is_empty());
    }
}
