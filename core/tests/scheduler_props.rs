//! Property tests for the fixed-budget scheduler: each test states one
//! guarantee from `memkern_core::scheduler`'s docs and tries to break it.
//!
//! Values are kept small (a few tokens, a few bytes, relevance up to ~20) so
//! that ties, exact fits and zero costs are common; a share of them are huge
//! to reach overflow paths.

use std::collections::{BTreeMap, BTreeSet};

use memkern_core::ids::CubeId;
use memkern_core::scheduler::{
    Budgets, Candidate, Kind, Location, Plan, PlanList, Policy, SchedulerError, plan,
};
use proptest::prelude::*;
use proptest::test_runner::TestCaseError;

/// Capacity that can never overflow for the generated inputs.
const BIG: usize = 16;

fn small_or_huge_u32(small: u32) -> impl Strategy<Value = u32> {
    prop_oneof![8 => 0..=small, 1 => Just(0), 1 => any::<u32>()]
}

fn small_or_huge_u64(small: u64) -> impl Strategy<Value = u64> {
    prop_oneof![8 => 0..=small, 1 => Just(0), 1 => any::<u64>()]
}

fn kind() -> impl Strategy<Value = Kind> {
    prop_oneof![Just(Kind::Plaintext), Just(Kind::Activation)]
}

fn location() -> impl Strategy<Value = Location> {
    prop_oneof![
        Just(Location::FlashText),
        Just(Location::ResidentSnapshot),
        Just(Location::FlashSnapshot)
    ]
}

/// Up to `max` candidates with distinct ids.
fn candidates(max: usize) -> impl Strategy<Value = Vec<Candidate>> {
    let one = (
        any::<u8>(),
        small_or_huge_u32(20),
        small_or_huge_u32(12),
        small_or_huge_u64(12),
        kind(),
        location(),
        small_or_huge_u32(6),
    )
        .prop_map(
            |(id, relevance, tokens, bytes, kind, location, heat)| Candidate {
                id: CubeId([id; 16]),
                relevance,
                tokens,
                bytes,
                kind,
                location,
                heat,
            },
        );
    prop::collection::vec(one, 0..=max).prop_map(|mut v| {
        let mut seen = BTreeSet::new();
        v.retain(|c| seen.insert(c.id));
        v
    })
}

/// Candidates whose costs never overflow, for the exhaustive budget sweeps.
fn small_candidates(max: usize) -> impl Strategy<Value = Vec<Candidate>> {
    candidates(max).prop_map(|mut v| {
        for c in &mut v {
            c.relevance %= 32;
            c.tokens %= 16;
            c.bytes %= 16;
        }
        v
    })
}

fn budgets() -> impl Strategy<Value = Budgets> {
    (
        small_or_huge_u32(60),
        small_or_huge_u64(40),
        small_or_huge_u64(60),
        small_or_huge_u32(14),
    )
        .prop_map(
            |(context_tokens, ram_bytes, flash_bytes, max_items)| Budgets {
                context_tokens,
                ram_bytes,
                flash_bytes,
                max_items,
            },
        )
}

fn policy() -> impl Strategy<Value = Policy> {
    prop_oneof![
        Just(Policy::default()),
        Just(Policy {
            promote_min_heat: None
        }),
        (0..=6u32).prop_map(|h| Policy {
            promote_min_heat: Some(h)
        }),
    ]
}

fn run<const N: usize>(
    cands: &[Candidate],
    budgets: Budgets,
    policy: Policy,
) -> Result<Plan<N>, SchedulerError> {
    let mut work = cands.to_vec();
    plan::<N>(&mut work, budgets, policy)
}

fn ok_plan(cands: &[Candidate], budgets: Budgets, policy: Policy) -> Plan<BIG> {
    match run::<BIG>(cands, budgets, policy) {
        Ok(p) => p,
        Err(e) => unreachable!("capacity {BIG} with {} candidates: {e}", cands.len()),
    }
}

fn set(ids: &[CubeId]) -> BTreeSet<CubeId> {
    ids.iter().copied().collect()
}

/// Recomputes every total and checks every rule from the ids alone.
fn check_plan(
    cands: &[Candidate],
    b: Budgets,
    policy: Policy,
    p: &Plan<BIG>,
) -> Result<(), TestCaseError> {
    let by_id: BTreeMap<CubeId, Candidate> = cands.iter().map(|c| (c.id, *c)).collect();
    let get = |id: &CubeId| {
        by_id
            .get(id)
            .copied()
            .ok_or_else(|| TestCaseError::fail("unknown id"))
    };
    let lists: [(&[CubeId], &str); 5] = [
        (&p.restore, "restore"),
        (&p.text, "text"),
        (&p.promote, "promote"),
        (&p.demote, "demote"),
        (&p.evict, "evict"),
    ];
    for (list, name) in lists {
        prop_assert_eq!(set(list).len(), list.len(), "duplicate in {}", name);
    }
    let (restore, text) = (set(&p.restore), set(&p.text));
    let (promote, demote, evict) = (set(&p.promote), set(&p.demote), set(&p.evict));
    prop_assert!(restore.is_disjoint(&text), "id both restored and text");
    prop_assert!(
        promote.is_subset(&text),
        "promoted a memory not in the text"
    );
    let actions = p.restore.len() + p.promote.len() + p.demote.len() + p.evict.len();
    let union: BTreeSet<_> = restore
        .iter()
        .chain(&promote)
        .chain(&demote)
        .chain(&evict)
        .collect();
    prop_assert_eq!(union.len(), actions, "an id has two snapshot actions");

    // Prompt: tokens, items, relevance.
    let mut tokens = 0u64;
    let mut relevance = 0u64;
    for id in p.restore.iter().chain(&p.text) {
        let c = get(id)?;
        prop_assert!(c.relevance > 0, "zero-relevance memory selected");
        tokens += u64::from(c.tokens);
        relevance += u64::from(c.relevance);
    }
    prop_assert_eq!(tokens, u64::from(p.tokens));
    prop_assert!(
        tokens <= u64::from(b.context_tokens),
        "context budget exceeded"
    );
    prop_assert!(
        p.items() as u64 <= u64::from(b.max_items),
        "item budget exceeded"
    );
    prop_assert_eq!(relevance, p.relevance);

    // Snapshots: RAM and flash after the plan, recomputed.
    let mut ram = 0u128;
    let mut flash = 0u128;
    let mut load = 0u128;
    for id in &p.restore {
        let c = get(id)?;
        prop_assert!(c.kind == Kind::Activation && c.location.has_snapshot());
        ram += u128::from(c.bytes);
        flash += u128::from(c.bytes);
        if c.location == Location::FlashSnapshot {
            load += u128::from(c.bytes);
        }
    }
    for id in &p.promote {
        let c = get(id)?;
        prop_assert!(c.kind == Kind::Activation && c.location == Location::FlashText);
        prop_assert!(
            policy.promote_min_heat.is_some_and(|m| c.heat >= m),
            "promoted a cold memory"
        );
        flash += u128::from(c.bytes);
    }
    for id in &p.demote {
        let c = get(id)?;
        prop_assert!(c.kind == Kind::Activation && c.location == Location::ResidentSnapshot);
    }
    for c in cands {
        let restored = restore.contains(&c.id);
        let evicted = evict.contains(&c.id);
        prop_assert!(
            !evicted || c.location.has_snapshot(),
            "evicted a non-snapshot"
        );
        if c.kind == Kind::Plaintext && c.location.has_snapshot() {
            prop_assert!(evicted, "plaintext snapshot not evicted");
        }
        if c.kind == Kind::Activation && c.location.has_snapshot() && !restored && !evicted {
            flash += u128::from(c.bytes);
            if c.location == Location::ResidentSnapshot && !demote.contains(&c.id) {
                ram += u128::from(c.bytes);
            }
        }
    }
    prop_assert_eq!(ram, u128::from(p.ram_bytes));
    prop_assert_eq!(flash, u128::from(p.flash_bytes));
    prop_assert_eq!(load, u128::from(p.load_bytes));
    prop_assert!(ram <= u128::from(b.ram_bytes), "RAM budget exceeded");
    prop_assert!(flash <= u128::from(b.flash_bytes), "flash budget exceeded");
    Ok(())
}

/// A budget at least as large as `b` in every dimension.
fn raise(b: Budgets, d: (u32, u64, u64, u32)) -> Budgets {
    Budgets {
        context_tokens: b.context_tokens.saturating_add(d.0),
        ram_bytes: b.ram_bytes.saturating_add(d.1),
        flash_bytes: b.flash_bytes.saturating_add(d.2),
        max_items: b.max_items.saturating_add(d.3),
    }
}

fn deltas() -> impl Strategy<Value = (u32, u64, u64, u32)> {
    (
        prop_oneof![Just(0u32), Just(1), 0..=30u32],
        prop_oneof![Just(0u64), Just(1), 0..=30u64],
        prop_oneof![Just(0u64), Just(1), 0..=30u64],
        prop_oneof![Just(0u32), Just(1), 0..=5u32],
    )
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 6_000, ..ProptestConfig::default() })]

    /// The plan never exceeds any budget, and its lists and totals agree.
    #[test]
    fn plan_is_within_budgets_and_consistent(c in candidates(14), b in budgets(), pol in policy()) {
        let p = ok_plan(&c, b, pol);
        check_plan(&c, b, pol, &p)?;
    }

    /// Raising any budgets (one, several or all) never lowers the relevance.
    #[test]
    fn raising_budgets_never_lowers_relevance(
        c in candidates(14), b in budgets(), d in deltas(), pol in policy()
    ) {
        let low = ok_plan(&c, b, pol);
        let high = ok_plan(&c, raise(b, d), pol);
        prop_assert!(high.relevance >= low.relevance, "{} < {}", high.relevance, low.relevance);
    }

    /// The same candidates in another order give the same plan.
    #[test]
    fn input_order_does_not_matter(
        (c, shuffled) in candidates(14).prop_flat_map(|c| (Just(c.clone()), Just(c).prop_shuffle())),
        b in budgets(),
        pol in policy(),
    ) {
        prop_assert_eq!(ok_plan(&c, b, pol), ok_plan(&shuffled, b, pol));
    }

    /// RAM and flash budgets change only the form, never the selection.
    #[test]
    fn selection_ignores_ram_and_flash(
        c in candidates(14), b in budgets(), ram in small_or_huge_u64(40),
        flash in small_or_huge_u64(60), pol in policy(),
    ) {
        let p1 = ok_plan(&c, b, pol);
        let p2 = ok_plan(&c, Budgets { ram_bytes: ram, flash_bytes: flash, ..b }, pol);
        let sel = |p: &Plan<BIG>| p.restore.iter().chain(&p.text).copied().collect::<BTreeSet<_>>();
        prop_assert_eq!(sel(&p1), sel(&p2));
        prop_assert_eq!((p1.relevance, p1.tokens), (p2.relevance, p2.tokens));
    }

    /// When everything fits, every memory with relevance > 0 is selected.
    #[test]
    fn everything_fits_means_everything_selected(c in small_candidates(14), pol in policy()) {
        let total: u32 = c.iter().map(|c| c.tokens).sum();
        let b = Budgets { context_tokens: total, max_items: c.len() as u32, ..Budgets::UNLIMITED };
        let p = ok_plan(&c, b, pol);
        let want: BTreeSet<_> = c.iter().filter(|c| c.relevance > 0).map(|c| c.id).collect();
        let got: BTreeSet<_> = p.restore.iter().chain(&p.text).copied().collect();
        prop_assert_eq!(got, want);
    }

    /// A small capacity gives either the same plan or a typed error naming
    /// a list that really is too long; never a panic.
    #[test]
    fn small_capacity_is_a_typed_error(c in candidates(14), b in budgets(), pol in policy()) {
        let big = ok_plan(&c, b, pol);
        let lens = [
            (PlanList::Restore, big.restore.len()),
            (PlanList::Text, big.text.len()),
            (PlanList::Promote, big.promote.len()),
            (PlanList::Demote, big.demote.len()),
            (PlanList::Evict, big.evict.len()),
        ];
        match run::<3>(&c, b, pol) {
            Ok(small) => {
                prop_assert!(lens.iter().all(|(_, n)| *n <= 3));
                prop_assert_eq!(small.restore.as_slice(), big.restore.as_slice());
                prop_assert_eq!(small.text.as_slice(), big.text.as_slice());
                prop_assert_eq!(small.promote.as_slice(), big.promote.as_slice());
                prop_assert_eq!(small.demote.as_slice(), big.demote.as_slice());
                prop_assert_eq!(small.evict.as_slice(), big.evict.as_slice());
                prop_assert_eq!(
                    (small.relevance, small.tokens, small.ram_bytes, small.flash_bytes, small.load_bytes),
                    (big.relevance, big.tokens, big.ram_bytes, big.flash_bytes, big.load_bytes)
                );
            }
            Err(SchedulerError::CapacityExceeded { list, capacity }) => {
                prop_assert_eq!(capacity, 3);
                prop_assert!(lens.iter().any(|(l, n)| *l == list && *n > 3), "{:?} was not too long", list);
            }
            Err(e) => prop_assert!(false, "unexpected error {}", e),
        }
    }

    /// Duplicate ids are rejected, whatever else the input holds.
    #[test]
    fn duplicate_ids_are_rejected(
        (c, dup) in candidates(13).prop_filter("non-empty", |c| !c.is_empty())
            .prop_flat_map(|c| { let n = c.len(); (Just(c), 0..n) }),
        relevance in any::<u32>(), b in budgets(),
    ) {
        let mut with_dup = c.clone();
        let twin = Candidate { relevance, ..c[dup] };
        with_dup.push(twin);
        prop_assert_eq!(run::<BIG>(&with_dup, b, Policy::default()), Err(SchedulerError::DuplicateId(c[dup].id)));
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 1_000, ..ProptestConfig::default() })]

    /// Exhaustive sweep: relevance is non-decreasing along every +1 step of
    /// the token budget and of the item cap, over the whole grid.
    #[test]
    fn relevance_is_monotone_over_the_whole_grid(
        c in small_candidates(12), ram in 0..=40u64, flash in 0..=60u64, pol in policy()
    ) {
        let max_t: u32 = c.iter().map(|c| c.tokens).sum::<u32>() + 1;
        let max_k = c.len() as u32 + 1;
        let mut prev_row: Vec<u64> = vec![0; max_k as usize + 1];
        for t in 0..=max_t {
            let mut left = 0u64;
            for k in 0..=max_k {
                let b = Budgets { context_tokens: t, ram_bytes: ram, flash_bytes: flash, max_items: k };
                let r = ok_plan(&c, b, pol).relevance;
                prop_assert!(r >= left, "items {} -> {}: {} < {} at tokens {}", k - 1, k, r, left, t);
                prop_assert!(r >= prev_row[k as usize], "tokens {} -> {}: {} < {}", t.saturating_sub(1), t, r, prev_row[k as usize]);
                prev_row[k as usize] = r;
                left = r;
            }
        }
    }
}
