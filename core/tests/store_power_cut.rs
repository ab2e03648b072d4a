//! Power-cut tests of the flash log store on the simulated NOR flash.
//!
//! Each campaign runs one long "device life" on one flash image: random
//! puts (new ids and overwrites, 1 to a few hundred bytes), removes and
//! gets, with a power cut armed a random number of flash operations ahead.
//! When it fires, the device "reboots": the store is reopened on the same
//! image and checked against a model of every acknowledged operation, then
//! the workload continues on the recovered store. This checks the store
//! module's guarantees word for word:
//!
//! - every acknowledged `put`/`remove` is reflected exactly after the cut;
//! - the operation in flight reads as its old or its new state, nothing
//!   else (in particular never a torn value);
//! - iteration returns exactly the live set, each id once;
//! - the store keeps working (the next cut lands on the recovered store).
//!
//! Some cuts are aimed at erases (compaction), some land during the
//! recovery itself (a second cut before the first was fully repaired), and
//! after some the flash simply works again without a reboot (a transient
//! driver fault): the same store instance is then checked and used on.
//! Two campaigns replay seeds that once exposed engine hazards (see the
//! store module documentation) and fail if either fix is removed.
//! Everything is driven by a seeded xorshift generator: a failure prints
//! the seed, and `STORE_SEED=<n>` replays (or varies) it.
#![cfg(feature = "std")]

use std::collections::BTreeMap;
use std::ops::ControlFlow;
use std::time::Instant;

use memkern_core::ids::CubeId;
use memkern_core::store::cache::key_pointers::ArrayKeyPointers;
use memkern_core::store::cache::page_pointers::ArrayPagePointers;
use memkern_core::store::cache::page_states::ArrayPageStates;
use memkern_core::store::cache::{Cache, CacheImpl};
use memkern_core::store::nor_sim::{NorSim, TearKind, WriteTear};
use memkern_core::store::{
    BlockingFlash, ConfigError, FlashStore, LiveSlot, NoCache, SharedStore, StoreError,
};

/// Tiny deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn new(seed: u64) -> Self {
        Self(seed ^ 0x2545_F491_4F6C_DD1D | 1)
    }
    fn next(&mut self) -> u64 {
        let mut x = self.0;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.0 = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, percent: u64) -> bool {
        self.below(100) < percent
    }
    fn bytes(&mut self, len: usize) -> Vec<u8> {
        (0..len).map(|_| self.next().to_le_bytes()[2]).collect()
    }
}

fn base_seed() -> u64 {
    std::env::var("STORE_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(0x00C0_FFEE)
}

/// One campaign's parameters.
struct Campaign {
    name: &'static str,
    seed: u64,
    /// Power cuts to inject.
    cuts: u64,
    sectors: usize,
    /// Distinct ids in the workload.
    keys: usize,
    /// Longest value the workload writes.
    max_value: usize,
    /// Most flash operations between a boot and its cut.
    cut_distance: u64,
    /// Percentage of cuts after which the flash comes back without a
    /// reboot (a transient driver fault) and the same store carries on.
    transient_percent: u64,
}

/// What a campaign exercised.
#[derive(Default, Debug)]
struct Outcome {
    cuts: u64,
    program_tears: u64,
    erase_tears: u64,
    recovery_cuts: u64,
    transient_faults: u64,
    acknowledged_ops: u64,
    in_flight_new: u64,
    in_flight_old: u64,
    torn_seen_at_boot: u64,
    half_erased_repaired: u64,
    dirty_repaired: u64,
    compaction_resumes: u64,
    full: u64,
    erases: u64,
    erase_spread: (u32, u32),
}

/// The operation that was running when power failed.
#[derive(Debug, Clone)]
enum InFlight {
    Put(CubeId, Vec<u8>),
    Remove(CubeId),
}

type Model = BTreeMap<CubeId, Vec<u8>>;

type Store<'f, const W: usize, const S: usize, const N: usize, C> =
    FlashStore<BlockingFlash<&'f mut NorSim<W, S>>, N, C>;

/// Reads everything back and checks it against the model; returns the
/// recovered state (the model with the in-flight operation resolved), or
/// the store error that interrupted the check (a cut during recovery).
fn check_recovered<const W: usize, const S: usize, const N: usize, C: CacheImpl<CubeId>>(
    store: &mut Store<'_, W, S, N, C>,
    ids: &[CubeId],
    model: &Model,
    in_flight: Option<&InFlight>,
    scratch_len: usize,
    ctx: &str,
) -> Result<Model, StoreError> {
    let mut out = vec![0u8; N];
    let mut actual = Model::new();
    for id in ids {
        if let Some(v) = store.get(id, &mut out)? {
            actual.insert(*id, v.to_vec());
        }
    }
    for id in ids {
        let before = model.get(id);
        let after = match in_flight {
            Some(InFlight::Put(pid, v)) if pid == id => Some(Some(v)),
            Some(InFlight::Remove(pid)) if pid == id => Some(None),
            _ => None,
        };
        let got = actual.get(id);
        let ok = got == before || after.is_some_and(|a| got == a);
        assert!(
            ok,
            "{ctx}: id {id} recovered as {:?} bytes, acknowledged {:?} bytes, in flight {:?}",
            got.map(|v| v.len()),
            before.map(|v| v.len()),
            in_flight.map(|f| match f {
                InFlight::Put(_, v) => format!("put of {} bytes", v.len()),
                InFlight::Remove(_) => "remove".to_string(),
            }),
        );
    }
    let mut scratch = vec![LiveSlot::EMPTY; scratch_len];
    let mut listed = Model::new();
    let summary = store.for_each_live(&mut scratch, |id, v| {
        assert!(
            listed.insert(*id, v.to_vec()).is_none(),
            "{ctx}: id {id} listed twice"
        );
        ControlFlow::Continue(())
    })?;
    assert_eq!(listed, actual, "{ctx}: iteration disagrees with get");
    assert_eq!(summary.live as usize, actual.len(), "{ctx}: live count");
    // The one-pass listing: the newest version of each id is its last
    // record in log order, and no removed id shows up.
    let mut newest = Model::new();
    let records = store.for_each_record(|id, v| {
        newest.insert(*id, v.to_vec());
        ControlFlow::Continue(())
    })?;
    assert_eq!(newest, actual, "{ctx}: one-pass listing disagrees with get");
    assert_eq!(records, summary.records, "{ctx}: one-pass record count");
    let stats = store.stats()?;
    assert_eq!(
        stats.records_valid, summary.records,
        "{ctx}: the layout walker and the engine count different records"
    );
    Ok(actual)
}

fn run_campaign<const W: usize, const S: usize, const N: usize, C: CacheImpl<CubeId>>(
    cfg: &Campaign,
    make_cache: fn() -> C,
) -> Outcome {
    let started = Instant::now();
    let mut rng = Rng::new(cfg.seed);
    let mut sim = NorSim::<W, S>::new(cfg.sectors, cfg.seed);
    let range = 0..(cfg.sectors * S) as u32;
    let ids: Vec<CubeId> = (0..cfg.keys)
        .map(|i| {
            let mut b = [0u8; 16];
            b.copy_from_slice(&rng.bytes(16));
            b[0] = i as u8; // distinct
            CubeId(b)
        })
        .collect();
    let max_value = cfg
        .max_value
        .min(Store::<'static, W, S, N, C>::max_value_len());
    let mut model = Model::new();
    let mut in_flight: Option<InFlight> = None;
    let mut o = Outcome::default();
    let mut boot = 0u64;
    let mut out = vec![0u8; N];

    'boot: while o.cuts < cfg.cuts {
        boot += 1;
        let ctx = format!(
            "campaign {} seed {:#x} boot {boot} last tear {:?}",
            cfg.name,
            cfg.seed,
            sim.last_tear()
        );
        sim.reboot();
        let recovery_cut = rng.chance(12);
        if recovery_cut {
            sim.arm_cut(rng.below(3), WriteTear::Prefix);
        }

        // --- Recovery: reopen and check everything acknowledged. ---
        let opened = Store::<'_, W, S, N, C>::open_with(
            BlockingFlash::new(&mut sim),
            range.clone(),
            make_cache,
        );
        let (mut store, report) = match opened {
            Ok(x) => x,
            Err(e) => {
                assert!(!sim.is_powered(), "{ctx}: open failed: {e:?}");
                o.cuts += 1;
                o.recovery_cuts += 1;
                continue;
            }
        };
        o.torn_seen_at_boot += u64::from(report.stats.records_torn > 0);
        o.half_erased_repaired += u64::from(report.pages_half_erased);
        o.dirty_repaired += u64::from(report.pages_dirty);
        o.compaction_resumes += u64::from(report.compaction_interrupted);
        let scratch_len = pick_scratch_len(&mut rng, cfg.keys);
        let checked = check_recovered(
            &mut store,
            &ids,
            &model,
            in_flight.as_ref(),
            scratch_len,
            &ctx,
        );
        match checked {
            Ok(recovered) => {
                tally_in_flight(&mut o, &model, &recovered, in_flight.take());
                model = recovered;
            }
            Err(e) => {
                drop(store);
                assert!(!sim.is_powered(), "{ctx}: recovery check failed: {e:?}");
                o.cuts += 1;
                o.recovery_cuts += 1;
                continue;
            }
        }

        // --- One session: workload until a cut, then either a reboot or,
        // for a transient fault, the same store instance carries on. ---
        loop {
            let flash = store.flash_mut().inner_mut();
            flash.disarm();
            if rng.chance(15) {
                flash.arm_erase_cut(rng.below(3));
            } else {
                let distance = if rng.chance(30) {
                    rng.below(4)
                } else {
                    rng.below(cfg.cut_distance)
                };
                let mode = if rng.chance(70) {
                    WriteTear::Prefix
                } else {
                    WriteTear::Scatter
                };
                flash.arm_cut(distance, mode);
            }
            let mut ops_this_boot = 0u32;
            let mut last_op;
            let failure = loop {
                ops_this_boot += 1;
                assert!(ops_this_boot < 20_000, "{ctx}: the armed cut never fired");
                let id = ids[rng.below(ids.len() as u64) as usize];
                let pick = rng.below(100);
                if pick < 55 {
                    let len = match rng.below(10) {
                        0..=3 => 1 + rng.below(24) as usize,
                        4..=7 => 25 + rng.below(126) as usize,
                        _ => 151 + rng.below((max_value - 150) as u64) as usize,
                    }
                    .min(max_value);
                    let value = rng.bytes(len);
                    last_op = "put";
                    match store.put(&id, &value) {
                        Ok(()) => {
                            model.insert(id, value);
                        }
                        Err(StoreError::Full) => o.full += 1,
                        Err(e) => {
                            in_flight = Some(InFlight::Put(id, value));
                            break e;
                        }
                    }
                } else if pick < 75 {
                    last_op = "remove";
                    match store.remove(&id) {
                        Ok(()) => {
                            model.remove(&id);
                        }
                        Err(e) => {
                            in_flight = Some(InFlight::Remove(id));
                            break e;
                        }
                    }
                } else {
                    last_op = "get";
                    match store.get(&id, &mut out) {
                        Ok(v) => assert_eq!(
                            v,
                            model.get(&id).map(Vec::as_slice),
                            "{ctx}: get of {id} between cuts"
                        ),
                        Err(e) => break e,
                    }
                }
                o.acknowledged_ops += 1;
            };
            let flash = store.flash_mut().inner_mut();
            assert!(
                !flash.is_powered(),
                "{ctx}: {last_op} #{ops_this_boot} failed without a power cut: {failure:?}"
            );
            o.cuts += 1;
            match flash.last_tear().map(|t| t.kind) {
                Some(TearKind::Program) => o.program_tears += 1,
                Some(TearKind::Erase) => o.erase_tears += 1,
                None => {}
            }
            if o.cuts >= cfg.cuts
                || cfg.transient_percent == 0
                || !rng.chance(cfg.transient_percent)
            {
                continue 'boot;
            }
            // A transient fault: the flash works again but nothing was
            // reset; the store must cope with whatever the failed
            // operation left behind, without `open`'s recovery.
            o.transient_faults += 1;
            let ctx = format!(
                "{ctx}, transient fault {} at {:?}",
                o.transient_faults,
                flash.last_tear()
            );
            flash.reboot();
            let scratch_len = pick_scratch_len(&mut rng, cfg.keys);
            let recovered = check_recovered(
                &mut store,
                &ids,
                &model,
                in_flight.as_ref(),
                scratch_len,
                &ctx,
            )
            .unwrap_or_else(|e| panic!("{ctx}: check after a transient fault failed: {e:?}"));
            tally_in_flight(&mut o, &model, &recovered, in_flight.take());
            model = recovered;
        }
    }

    let st = sim.stats();
    assert_eq!(
        st.rejected_programs, 0,
        "campaign {}: the engine tried to program a 0 bit back to 1",
        cfg.name
    );
    o.erases = st.erases;
    let counts = sim.erase_counts();
    o.erase_spread = (
        counts.iter().copied().min().unwrap_or(0),
        counts.iter().copied().max().unwrap_or(0),
    );
    println!(
        "campaign {:<12} seed {:#010x}: {} cuts ({} program, {} erase, {} during recovery, \
         {} transient), \
         {} acknowledged ops, in-flight op recovered new/old {}/{}, \
         boots with torn records {}, pages re-erased half-erased/dirty {}/{}, compaction resumes {}, \
         full {}, erases {} (per sector {}..={}), {:.1?}",
        cfg.name,
        cfg.seed,
        o.cuts,
        o.program_tears,
        o.erase_tears,
        o.recovery_cuts,
        o.transient_faults,
        o.acknowledged_ops,
        o.in_flight_new,
        o.in_flight_old,
        o.torn_seen_at_boot,
        o.half_erased_repaired,
        o.dirty_repaired,
        o.compaction_resumes,
        o.full,
        o.erases,
        o.erase_spread.0,
        o.erase_spread.1,
        started.elapsed()
    );
    o
}

fn pick_scratch_len(rng: &mut Rng, keys: usize) -> usize {
    if rng.chance(25) {
        1 + rng.below(keys as u64 / 2) as usize
    } else {
        keys + 2
    }
}

/// Counts whether the operation cut short landed in its old or new state.
fn tally_in_flight(o: &mut Outcome, before: &Model, after: &Model, in_flight: Option<InFlight>) {
    if let Some(f) = in_flight {
        let id = match f {
            InFlight::Put(id, _) | InFlight::Remove(id) => id,
        };
        if after.get(&id) == before.get(&id) {
            o.in_flight_old += 1;
        } else {
            o.in_flight_new += 1;
        }
    }
}

/// Checks that a campaign reached the paths it is meant to reach.
fn assert_coverage(o: &Outcome, cuts: u64) {
    assert_eq!(o.cuts, cuts);
    assert!(o.program_tears > cuts / 2, "too few torn programs: {o:?}");
    assert!(o.erase_tears > cuts / 20, "too few torn erases: {o:?}");
    assert!(
        o.torn_seen_at_boot > cuts / 40,
        "torn records rarely seen: {o:?}"
    );
    assert!(o.in_flight_new > 0 && o.in_flight_old > 0, "{o:?}");
    assert!(o.erases > cuts / 4, "too little compaction: {o:?}");
    assert!(
        o.half_erased_repaired > 0,
        "no half-erased page seen: {o:?}"
    );
    assert!(
        o.compaction_resumes > 0,
        "no interrupted compaction seen: {o:?}"
    );
}

fn uncached() -> NoCache {
    Cache::new_uncached()
}

// 4-byte program unit, 1 KiB sectors: a typical MCU internal flash.
#[test]
fn power_cuts_word4_sector1k() {
    const CUTS: u64 = 1200;
    let o = run_campaign::<4, 1024, 512, _>(
        &Campaign {
            name: "w4-s1k",
            seed: base_seed(),
            cuts: CUTS,
            sectors: 12,
            keys: 24,
            max_value: 400,
            cut_distance: 60,
            transient_percent: 25,
        },
        uncached,
    );
    assert_coverage(&o, CUTS);
}

// Byte-programmable flash with small sectors and large values relative to
// them (a record may take most of a page).
#[test]
fn power_cuts_word1_sector512() {
    const CUTS: u64 = 800;
    let o = run_campaign::<1, 512, 512, _>(
        &Campaign {
            name: "w1-s512",
            seed: base_seed() ^ 0x1111,
            cuts: CUTS,
            sectors: 10,
            keys: 16,
            max_value: 300,
            cut_distance: 60,
            transient_percent: 25,
        },
        uncached,
    );
    assert_coverage(&o, CUTS);
}

// 16-byte program unit (e.g. STM32 quad-word flash) with 2 KiB sectors.
#[test]
fn power_cuts_word16_sector2k() {
    const CUTS: u64 = 600;
    let o = run_campaign::<16, 2048, 1024, _>(
        &Campaign {
            name: "w16-s2k",
            seed: base_seed() ^ 0x2222,
            cuts: CUTS,
            sectors: 6,
            keys: 20,
            max_value: 500,
            cut_distance: 60,
            transient_percent: 25,
        },
        uncached,
    );
    assert_coverage(&o, CUTS);
}

// Live data close to capacity: most puts compact, many find the store full.
#[test]
fn power_cuts_nearly_full() {
    const CUTS: u64 = 500;
    let o = run_campaign::<4, 1024, 512, _>(
        &Campaign {
            name: "w4-tight",
            seed: base_seed() ^ 0x4444,
            cuts: CUTS,
            sectors: 5,
            keys: 64,
            max_value: 300,
            cut_distance: 400,
            transient_percent: 25,
        },
        uncached,
    );
    assert_coverage(&o, CUTS);
    assert!(o.full > 0, "never full: {o:?}");
}

// Seeds that once failed, replayed exactly (no transient faults, which
// would change the random sequence).
//
// Near-full store: a compaction cut short, then a `remove` cut short before
// any `put`, made the engine's repair erase the only valid copy of a record
// (fixed by `settle`).
#[test]
fn power_cuts_regression_interrupted_compaction() {
    let o = run_campaign::<4, 1024, 512, _>(
        &Campaign {
            name: "w4-regress",
            seed: 0x4442,
            cuts: 60,
            sectors: 5,
            keys: 50,
            max_value: 300,
            cut_distance: 60,
            transient_percent: 0,
        },
        uncached,
    );
    assert!(o.compaction_resumes > 0, "{o:?}");
}

// Byte-programmable flash: a torn record header that the next record
// completed hid that record (fixed by 8-byte program units).
#[test]
fn power_cuts_regression_torn_header() {
    const CUTS: u64 = 700;
    let o = run_campaign::<1, 512, 512, _>(
        &Campaign {
            name: "w1-regress",
            seed: 0x115f,
            cuts: CUTS,
            sectors: 10,
            keys: 16,
            max_value: 300,
            cut_distance: 60,
            transient_percent: 0,
        },
        uncached,
    );
    assert_coverage(&o, CUTS);
}

type FullCache =
    Cache<ArrayPageStates<8>, ArrayPagePointers<8>, ArrayKeyPointers<CubeId, 16>, CubeId>;

fn full_cache() -> FullCache {
    Cache::new(
        ArrayPageStates::new(),
        ArrayPagePointers::new(),
        ArrayKeyPointers::new(),
    )
}

// The engine's caches change which flash reads happen; they must not
// change what survives a cut.
#[test]
fn power_cuts_with_cache() {
    const CUTS: u64 = 600;
    let o = run_campaign::<4, 1024, 512, FullCache>(
        &Campaign {
            name: "w4-cached",
            seed: base_seed() ^ 0x3333,
            cuts: CUTS,
            sectors: 8,
            keys: 24,
            max_value: 300,
            cut_distance: 60,
            transient_percent: 25,
        },
        full_cache,
    );
    assert_coverage(&o, CUTS);
}

// ----- Unit tests of the store's contract, without cuts. -----

type Sim = NorSim<4, 512>;

fn open<const N: usize>(sim: &mut Sim) -> FlashStore<BlockingFlash<&mut Sim>, N> {
    let len = (sim.sector_count() * 512) as u32;
    FlashStore::<_, N>::open(sim, 0..len).expect("open").0
}

fn id(n: u8) -> CubeId {
    CubeId([n; 16])
}

#[test]
fn too_large_values_are_rejected_with_the_limit() {
    // Buffer-limited: N = 128 leaves 112 bytes of value.
    let mut sim = Sim::new(4, 1);
    let mut store = open::<128>(&mut sim);
    let max = FlashStore::<BlockingFlash<&mut Sim>, 128>::max_value_len();
    assert_eq!(max, 128 - 16);
    store.put(&id(1), &vec![7; max]).expect("max fits");
    assert_eq!(
        store.put(&id(2), &vec![7; max + 1]),
        Err(StoreError::TooLarge { len: max + 1, max })
    );
    let mut out = [0u8; 200];
    assert_eq!(
        store.get(&id(1), &mut out).expect("get"),
        Some(&vec![7; max][..])
    );
    let mut small = [0u8; 10];
    assert_eq!(
        store.get(&id(1), &mut small),
        Err(StoreError::BufferTooSmall { needed: max })
    );
    assert_eq!(store.get(&id(2), &mut out).expect("get"), None);

    // Page-limited: a 512-byte page holds 512 - 2*8 markers - 8 header - 16
    // id (the store shows the engine 8-byte program units).
    let mut sim = Sim::new(4, 1);
    let mut store = open::<4096>(&mut sim);
    let max = FlashStore::<BlockingFlash<&mut Sim>, 4096>::max_value_len();
    assert_eq!(max, 512 - 16 - 8 - 16);
    store.put(&id(1), &vec![1; max]).expect("a full page");
    assert!(matches!(
        store.put(&id(1), &vec![1; max + 1]),
        Err(StoreError::TooLarge { .. })
    ));
}

#[test]
fn full_flash_is_an_error_and_nothing_acknowledged_is_lost() {
    let mut sim = Sim::new(4, 2);
    let mut store = open::<256>(&mut sim);
    let mut stored = Vec::new();
    let err = loop {
        let n = stored.len() as u8;
        match store.put(&id(n), &[n; 100]) {
            Ok(()) => stored.push(n),
            Err(e) => break e,
        }
        assert!(stored.len() < 100, "never filled up");
    };
    assert_eq!(err, StoreError::Full);
    // Three of four pages hold data (one is kept free), four records each.
    assert!(stored.len() >= 9, "only {} records fit", stored.len());
    let mut out = [0u8; 256];
    for &n in &stored {
        assert_eq!(
            store.get(&id(n), &mut out).expect("get"),
            Some(&[n; 100][..])
        );
    }
    let mut scratch = [LiveSlot::EMPTY; 4];
    assert_eq!(
        store.count_live(&mut scratch).expect("count"),
        stored.len() as u32
    );
    // Removing frees room again (compaction reclaims it).
    for &n in &stored[..3] {
        store.remove(&id(n)).expect("remove");
    }
    store.put(&id(200), &[9; 100]).expect("room after removals");
    for &n in &stored[3..] {
        assert_eq!(
            store.get(&id(n), &mut out).expect("get"),
            Some(&[n; 100][..])
        );
    }
}

#[test]
fn wear_is_spread_evenly_across_sectors() {
    let mut sim = Sim::new(8, 3);
    let mut rng = Rng::new(3);
    {
        let mut store = open::<512>(&mut sim);
        for i in 0..6000u32 {
            let k = (i % 12) as u8;
            let len = 1 + rng.below(150) as usize;
            store.put(&id(k), &rng.bytes(len)).expect("put");
            if i % 7 == 0 {
                store.remove(&id((i % 13) as u8)).expect("remove");
            }
        }
        let stats = store.stats().expect("stats");
        assert!(stats.erases_since_open > 100, "{stats:?}");
    }
    let counts = sim.erase_counts().to_vec();
    let (min, max) = (
        *counts.iter().min().expect("sectors"),
        *counts.iter().max().expect("sectors"),
    );
    println!("erase counts per sector after 6000 puts: {counts:?}");
    assert!(min >= 30, "too few erases to judge: {counts:?}");
    assert!(max - min <= 1, "uneven wear: {counts:?}");
}

#[test]
fn iteration_batches_and_early_stop() {
    let mut sim = Sim::new(8, 4);
    let mut store = open::<256>(&mut sim);
    for round in 0..3u8 {
        for k in 0..30u8 {
            store.put(&id(k), &[k, round]).expect("put");
        }
    }
    for k in (0..30u8).step_by(3) {
        store.remove(&id(k)).expect("remove");
    }
    for slots in [1usize, 2, 7, 19, 20, 21, 64] {
        let mut scratch = vec![LiveSlot::EMPTY; slots];
        let mut seen = BTreeMap::new();
        let summary = store
            .for_each_live(&mut scratch, |id, v| {
                assert!(seen.insert(*id, v.to_vec()).is_none());
                ControlFlow::Continue(())
            })
            .expect("iterate");
        assert_eq!(summary.live, 20, "{slots} slots");
        assert!(!summary.stopped);
        for k in 0..30u8 {
            let want = (k % 3 != 0).then(|| vec![k, 2]);
            assert_eq!(seen.get(&id(k)), want.as_ref(), "{slots} slots, id {k}");
        }
    }
    let mut scratch = [LiveSlot::EMPTY; 32];
    let summary = store
        .for_each_live(&mut scratch, |_, _| ControlFlow::Break(()))
        .expect("iterate");
    assert!(summary.stopped);
    assert_eq!(summary.live, 1);
    assert_eq!(
        store.for_each_live(&mut [], |_, _| ControlFlow::Continue(())),
        Err(StoreError::BufferTooSmall { needed: 1 })
    );
}

#[test]
fn bit_rot_is_never_returned() {
    let mut sim = Sim::new(4, 5);
    {
        let mut store = open::<256>(&mut sim);
        store.put(&id(1), &[0xAA; 40]).expect("put v1");
        store.put(&id(1), &[0xBB; 40]).expect("put v2");
    }
    // Flip a bit in the newest record's value (second record on page 0:
    // marker 8 + record 8 + 16 + 40 = 72; its value starts at 72 + 8 + 16).
    let at = 72 + 8 + 16 + 5;
    assert_eq!(sim.image()[at], 0xBB);
    sim.image_mut()[at] ^= 0x01;
    let len = (sim.sector_count() * 512) as u32;
    let (mut store, report) = FlashStore::<_, 256>::open(&mut sim, 0..len).expect("open");
    assert_eq!(report.stats.records_torn, 1);
    assert_eq!(report.stats.records_valid, 1);
    let mut out = [0u8; 64];
    // The damaged newest version is skipped; the older intact one is served.
    assert_eq!(
        store.get(&id(1), &mut out).expect("get"),
        Some(&[0xAA; 40][..])
    );
}

#[test]
fn open_reports_and_repairs_half_erased_and_dirty_pages() {
    let mut sim = Sim::new(4, 6);
    {
        let mut store = open::<256>(&mut sim);
        store.put(&id(1), &[1; 10]).expect("put");
    }
    // Page 2: end marker written only (an erase cut short after it cleared
    // the start marker). Page 3: erased-looking markers, garbage inside.
    sim.image_mut()[3 * 512 - 4..3 * 512].fill(0);
    sim.image_mut()[3 * 512 + 100] = 0x12;
    let (mut store, report) = FlashStore::<_, 256>::open(&mut sim, 0..2048).expect("open");
    assert_eq!(report.pages_half_erased, 1);
    assert_eq!(report.pages_dirty, 1);
    assert_eq!(report.stats.erases_since_open, 2);
    assert_eq!(report.stats.records_valid, 1);
    assert_eq!(report.stats.pages_open, 3);
    assert_eq!(report.stats.pages_filling, 1);
    let mut out = [0u8; 16];
    assert_eq!(
        store.get(&id(1), &mut out).expect("get"),
        Some(&[1; 10][..])
    );
    // Pages 2 and 3 are blank again.
    assert!(sim.image()[1024..].iter().all(|&b| b == 0xFF));
}

#[test]
fn stats_track_usage() {
    let mut sim = Sim::new(4, 7);
    let mut store = open::<256>(&mut sim);
    let empty = store.stats().expect("stats");
    assert_eq!(empty.capacity_bytes, 2048);
    assert_eq!(empty.used_bytes, 0);
    // Four open pages of 512 - 2*8 = 496 data bytes, one kept in reserve.
    assert_eq!(empty.free_bytes, 3 * 496);
    store.put(&id(1), &[1; 20]).expect("put");
    store.put(&id(1), &[2; 20]).expect("put");
    store.put(&id(2), &[3; 20]).expect("put");
    store.remove(&id(2)).expect("remove");
    let s = store.stats().expect("stats");
    // Each record: 8 header + 16 id + 20 value, padded to 8 = 48 bytes.
    assert_eq!(s.used_bytes, 3 * 48);
    assert_eq!(s.records_valid, 2);
    assert_eq!(s.records_removed, 1);
    assert_eq!(s.garbage_bytes, 48);
    assert_eq!(s.free_bytes, 3 * 496 - 3 * 48);
    assert_eq!((s.pages_open, s.pages_filling, s.pages_full), (3, 1, 0));
    let mut scratch = [LiveSlot::EMPTY; 4];
    assert_eq!(store.count_live(&mut scratch).expect("count"), 1);
}

#[test]
fn configuration_errors_are_typed() {
    let mut sim = Sim::new(4, 8);
    let err = |r: Result<_, StoreError>| r.err();
    assert_eq!(
        err(FlashStore::<_, 256>::open(&mut sim, 0..1000).map(|_| ())),
        Some(StoreError::Config(ConfigError::RangeNotAligned))
    );
    assert_eq!(
        err(FlashStore::<_, 256>::open(&mut sim, 0..512).map(|_| ())),
        Some(StoreError::Config(ConfigError::RangeTooSmall))
    );
    assert_eq!(
        err(FlashStore::<_, 256>::open(&mut sim, 0..4096).map(|_| ())),
        Some(StoreError::Config(ConfigError::RangeOutOfBounds))
    );
    assert_eq!(
        err(FlashStore::<_, 16>::open(&mut sim, 0..2048).map(|_| ())),
        Some(StoreError::Config(ConfigError::BufferTooSmall))
    );
}

#[test]
fn shared_store_serialises_access() {
    let sim = Sim::new(4, 9);
    let (store, _) = FlashStore::<_, 256>::open(sim, 0..2048).expect("open");
    let shared = SharedStore::new();
    assert_eq!(
        shared.with(|_: &mut FlashStore<_, 256>| ()),
        Err(StoreError::Busy)
    );
    assert!(shared.try_install(store).is_ok());
    shared
        .with(|s| s.put(&id(1), b"from main loop"))
        .expect("installed")
        .expect("put");
    // A nested use (an interrupt firing inside `with` on a single core
    // cannot happen, but re-entrant code can) is refused, not aliased.
    let nested = shared.with(|_| shared.with(|s| s.contains(&id(1))));
    assert_eq!(nested, Ok(Err(StoreError::Busy)));
    let mut out = [0u8; 32];
    let got = shared
        .with(|s| s.get(&id(1), &mut out).map(|v| v.map(<[u8]>::to_vec)))
        .expect("installed")
        .expect("get");
    assert_eq!(got.as_deref(), Some(&b"from main loop"[..]));
    let store = shared.take().expect("take back");
    assert_eq!(shared.with(|_| ()), Err(StoreError::Busy));
    let sim = store.into_flash().into_inner();
    assert!(sim.stats().programs > 0);
}
