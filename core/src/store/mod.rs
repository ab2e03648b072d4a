//! Flash log store: a power-loss-safe, append-only store of cubes on NOR
//! flash.
//!
//! It exists so a device can keep its memories (encoded cubes, opaque bytes
//! here) in raw NOR flash — no file system — and lose none it was told were
//! saved when the battery is pulled mid-write.
//!
//! # Guarantees
//!
//! These are the words `core/tests/store_power_cut.rs` tests, after every
//! one of thousands of random power cuts:
//!
//! 1. **Acknowledged means durable.** [`FlashStore::put`] and
//!    [`FlashStore::remove`] return `Ok` only after every byte they needed
//!    has been programmed and read back.
//! 2. **Recovery returns exactly the acknowledged state.** After power is
//!    lost at any instant and the store is reopened with [`FlashStore::open`]
//!    on the same flash, every id reads as its last acknowledged `put`, or
//!    as absent if its last acknowledged operation was `remove`. The single
//!    operation that was running when power failed reads as either its old
//!    or its new state — never anything else.
//! 3. **Never torn.** Every value returned ([`FlashStore::get`],
//!    [`FlashStore::for_each_live`]) is byte for byte a value once given to
//!    `put`: each record carries a CRC-32C over id and value and a CRC-16
//!    over its length; a record that fails either is skipped.
//! 4. **The store keeps working after recovery**, with no replay step: the
//!    log is its own index.
//!
//! # Engine: sequential-storage
//!
//! The log is [`sequential_storage`]'s `map`, keyed by [`CubeId`], with the
//! cube's bytes as the value. It fits this job:
//!
//! - it is an append-only log: a `put` appends a record, the newest record
//!   for an id wins, a removal invalidates records in place;
//! - records are CRC-protected and the layout is designed to be power-fail
//!   safe; its authors fuzz it against random power cuts, and we re-test it
//!   here against our own simulator (`nor_sim`);
//! - compaction (page migration) and wear levelling (pages used cyclically)
//!   are built in;
//! - `no_std`, no allocation, caller-provided buffers.
//!
//! What it lacks, and how this module fills the gap:
//!
//! - *Its API is async.* Firmware main loops and the Linux host call the
//!   store synchronously, so every method here runs the engine under
//!   `embassy_futures::block_on`. [`BlockingFlash`] adapts a blocking
//!   `embedded-storage` driver; its futures are ready on first poll, so
//!   `block_on` never spins. An async driver can be passed to
//!   [`FlashStore::open_with`] directly (`block_on` then busy-waits on it).
//! - *No statistics or recovery report.* A read-only walker of the layout
//!   below gives [`StoreStats`] and the [`RecoveryReport`] (the layout is
//!   stable within sequential-storage 8.x; the power-cut tests check the
//!   walker counts exactly the records the engine iterates).
//! - *Its iterator yields every stored version of an id.*
//!   [`FlashStore::for_each_live`] keeps only the newest, using a
//!   caller-provided scratch table (any size; fewer slots means more passes).
//! - *Removal zeroes a record's CRC in place*, so [`FlashStore::remove`]
//!   needs a [`MultiwriteNorFlash`] (a word may be programmed again to clear
//!   more bits: true of SPI NOR and most MCU flash, false of flash with
//!   per-word ECC such as STM32L4/H7). Tombstone records would avoid that
//!   but the engine never drops them, so the log would leak a record per
//!   removed cube.
//! - *No persistent erase counters.* [`StoreStats::erases_since_open`]
//!   counts this session's erases; wear is even by construction.
//! - *One repair can lose a record* (8.0.2; found by the power-cut tests):
//!   power cut during a compaction, then in the next session a `remove`
//!   cut short before any `put` — the engine's repair then erases the only
//!   valid copy of a record. This module settles an interrupted compaction
//!   itself, at [`FlashStore::open`] and, after a failed operation, before
//!   the next call, so that sequence cannot occur (details at `settle` in
//!   the source).
//! - *A torn record header can swallow the next record* when the program
//!   unit is smaller than the 8-byte header (found by the power-cut soak on
//!   byte-programmable flash): the next record is placed inside the torn
//!   header and may complete it into a valid one. The engine is therefore
//!   shown a program unit of at least 8 bytes (`MIN_PROGRAM_UNIT` in the
//!   source), which costs up to 7 bytes of padding per record.
//!
//! # On-flash layout (sequential-storage 8.x)
//!
//! The range is split into pages of `ERASE_SIZE` bytes; `W` is the largest
//! of the driver's `WRITE_SIZE`, its `READ_SIZE` and 8 (the engine is shown
//! a program unit of at least 8 bytes, so a record header is one unit).
//!
//! ```text
//! page   ┌──────────┬──────────────────────────────────────────┬──────────┐
//!        │ start    │ record │ record │ … │ 0xFF (unwritten)    │ end      │
//!        │ marker W │                                          │ marker W │
//!        └──────────┴──────────────────────────────────────────┴──────────┘
//!        markers (start, end): FF,FF open · 00,FF filling · 00,00 full
//!                              FF,00 half-erased (erase cut short)
//!
//! record ┌────────┬────────┬───────────┬─────┬──────────┬───────────┬─────┐
//!        │ crc32  │ len    │ crc16(len)│ pad │ cube id  │ value     │ pad │
//!        │ 4 B LE │ 2 B LE │ 2 B LE    │ → W │ 16 B     │ len−16 B  │ → W │
//!        └────────┴────────┴───────────┴─────┴──────────┴───────────┴─────┘
//!        crc32 = CRC-32C (seed 0xEEEE_EEEE) of id‖value, never 0 and never
//!        starting with 00/FF; crc32 = 0 means "removed"
//! ```
//!
//! Exactly one page is "filling"; new records are appended there. When a
//! record does not fit, that page is closed and the next (always kept open)
//! page starts filling; the page after *that* — the oldest — has its records
//! that are still the newest of their id copied forward, and is erased.
//! That is the compaction: incremental, one page per page filled, so `put`'s
//! worst case is bounded (copy one page, erase one page) and there is no
//! separate compaction call to make. Garbage never makes a `put` fail;
//! [`StoreError::Full`] means the live records themselves do not fit.
//! Pages are used in a ring, so every page is erased equally often.
//!
//! # Power-loss model
//!
//! A program may stop anywhere, leaving any subset of the bits it was
//! clearing cleared. An erase is assumed to clear from low to high address,
//! so one cut short has erased the start marker first and the page reads
//! half-erased ([`FlashStore::open`] erases it again). This is the model
//! sequential-storage is designed for and the one `nor_sim` injects. Two
//! defences reach beyond it: `open` also re-erases pages whose markers say
//! "erased" but that are not blank, and every program is read back, so a
//! record that does not program cleanly is reported as an error instead of
//! being acknowledged. A flash whose interrupted erase leaves both markers
//! intact while scrambling the records between them is outside the model.
//!
//! # Costs
//!
//! RAM: `N` bytes of record buffer plus the cache; no heap. Without a
//! cache, [`FlashStore::get`] reads (and CRC-checks) the log from the newest
//! page backwards until it finds the id: O(log size). A key-pointer cache
//! ([`FlashStore::open_with`], [`cache`]) makes hits O(1) flash reads.
//! [`FlashStore::remove`] visits the whole log (every older version must be
//! invalidated). [`FlashStore::for_each_live`] reads the log twice per
//! scratch-table-full of ids; [`FlashStore::stats`] reads it once.

mod flash;
mod inspect;
#[cfg(any(test, feature = "alloc"))]
pub mod nor_sim;
mod shared;

use core::ops::{ControlFlow, Range};

use embassy_futures::block_on;
use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash::{
    MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind,
};
/// Caches that speed up the engine (re-exported from sequential-storage) so
/// callers can build one for [`FlashStore::open_with`] with matching types.
pub use sequential_storage::cache;
use sequential_storage::cache::{Cache, CacheImpl, Uncached};
use sequential_storage::map::{Key, MapConfig, MapConfigError, MapStorage, SerializationError};

use crate::ids::CubeId;

pub use flash::BlockingFlash;
use flash::{Guard, GuardError, MIN_PROGRAM_UNIT};
pub use shared::SharedStore;

/// Bytes of the id stored in front of every value; it counts against the
/// record size limit ([`FlashStore::max_value_len`]).
pub const ID_LEN: usize = CubeId::LEN;

/// Default record buffer size of [`FlashStore`] (the `N` parameter): 1 KiB
/// of RAM for values up to 1008 bytes where the erase sector allows.
pub const DEFAULT_BUFFER: usize = 1024;

/// The cache type of a store opened without one: no RAM, every lookup reads
/// flash. The default because it cannot get out of step with the flash.
pub type NoCache = Cache<Uncached, Uncached, Uncached, CubeId>;

/// Lets [`CubeId`] key the engine's map: stored as its 16 raw bytes.
impl Key for CubeId {
    fn serialize_into(&self, buffer: &mut [u8]) -> Result<usize, SerializationError> {
        let dst = buffer
            .get_mut(..ID_LEN)
            .ok_or(SerializationError::BufferTooSmall)?;
        dst.copy_from_slice(&self.0);
        Ok(ID_LEN)
    }

    fn deserialize_from(buffer: &[u8]) -> Result<(Self, usize), SerializationError> {
        let src = buffer
            .get(..ID_LEN)
            .ok_or(SerializationError::BufferTooSmall)?;
        let mut id = [0u8; ID_LEN];
        id.copy_from_slice(src);
        Ok((CubeId(id), ID_LEN))
    }

    fn get_len(_buffer: &[u8]) -> Result<usize, SerializationError> {
        Ok(ID_LEN)
    }
}

/// What went wrong with the flash driver, reduced to the kinds
/// `embedded-storage` defines, so [`StoreError`] needs no type parameter.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FlashFault {
    /// The driver refused an unaligned access.
    #[error("unaligned access")]
    NotAligned,
    /// The driver refused an access outside the device.
    #[error("access out of bounds")]
    OutOfBounds,
    /// Any other driver failure, including loss of power mid-operation.
    #[error("driver failure")]
    Other,
}

impl FlashFault {
    fn of<E: NorFlashError>(e: &E) -> Self {
        match e.kind() {
            NorFlashErrorKind::NotAligned => FlashFault::NotAligned,
            NorFlashErrorKind::OutOfBounds => FlashFault::OutOfBounds,
            _ => FlashFault::Other,
        }
    }
}

/// Why a flash range and buffer size cannot host a store.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum ConfigError {
    /// Range start or end is not a multiple of the erase size.
    #[error("range is not aligned to the erase size")]
    RangeNotAligned,
    /// The range holds fewer than two erase sectors.
    #[error("range needs at least two erase sectors")]
    RangeTooSmall,
    /// The range ends beyond the flash device.
    #[error("range ends beyond the flash")]
    RangeOutOfBounds,
    /// A sector cannot hold its markers plus one record.
    #[error("erase sectors are too small")]
    SectorTooSmall,
    /// Program or read unit above 32 bytes, a program unit below 8 bytes
    /// that does not divide 8, or a unit that does not divide the sector.
    #[error("unsupported program/read unit")]
    UnsupportedWordSize,
    /// The record buffer `N` cannot hold an id plus one byte of value.
    #[error("record buffer too small")]
    BufferTooSmall,
}

impl From<MapConfigError> for ConfigError {
    fn from(e: MapConfigError) -> Self {
        match e {
            MapConfigError::StartRangeNotAtPageBoundary
            | MapConfigError::EndRangeNotAtPageBoundary => ConfigError::RangeNotAligned,
            MapConfigError::RangeTooSmall => ConfigError::RangeTooSmall,
            MapConfigError::PagesTooSmall => ConfigError::SectorTooSmall,
            MapConfigError::WordSizeTooLarge => ConfigError::UnsupportedWordSize,
        }
    }
}

/// Errors of the flash store: one type for every operation, so callers act
/// on meaning (full, too large, flash failing) rather than on a driver's
/// error type. Every one leaves the store usable (after a driver failure,
/// as usable as the driver).
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum StoreError {
    /// The flash driver failed (this is what a power cut looks like to
    /// code that is still running). The operation may or may not have
    /// taken effect.
    #[error("flash driver error: {0}")]
    Flash(FlashFault),
    /// A program reported success but reading it back differed: the record
    /// was not acknowledged.
    #[error("flash program did not verify at {address:#x}")]
    VerifyFailed {
        /// First address whose read-back differed.
        address: u32,
    },
    /// The value is longer than this store can ever hold.
    #[error("value of {len} bytes exceeds the {max}-byte limit")]
    TooLarge {
        /// Length of the rejected value.
        len: usize,
        /// [`FlashStore::max_value_len`].
        max: usize,
    },
    /// The live records leave no room for this one; remove something.
    #[error("store is full")]
    Full,
    /// A caller buffer is too small.
    #[error("buffer too small: {needed} bytes/slots needed")]
    BufferTooSmall {
        /// Bytes (or scratch slots) needed.
        needed: usize,
    },
    /// The engine found a state it could not repair (never seen in the
    /// power-cut tests). Erasing the range with the driver and reopening
    /// recovers, losing the data.
    #[error("flash log corrupted beyond repair")]
    Corrupted,
    /// The range or buffer size cannot host a store.
    #[error("invalid store configuration: {0}")]
    Config(ConfigError),
    /// A [`SharedStore`] is empty or already in use.
    #[error("store not installed or already in use")]
    Busy,
    /// The engine reported an internal inconsistency (a bug).
    #[error("internal error in the log engine")]
    Internal,
}

impl From<ConfigError> for StoreError {
    fn from(e: ConfigError) -> Self {
        StoreError::Config(e)
    }
}

type EngineError<E> = sequential_storage::Error<GuardError<E>>;

fn engine_error<E: NorFlashError>(e: EngineError<E>) -> StoreError {
    use sequential_storage::Error as Ss;
    match e {
        Ss::Storage { value, .. } => match value {
            GuardError::Flash(f) => StoreError::Flash(FlashFault::of(&f)),
            GuardError::Verify { address } => StoreError::VerifyFailed { address },
        },
        Ss::FullStorage => StoreError::Full,
        Ss::Corrupted { .. } | Ss::SerializationError(_) => StoreError::Corrupted,
        Ss::BufferTooSmall(needed) => StoreError::BufferTooSmall { needed },
        _ => StoreError::Internal,
    }
}

/// Flash usage, from one read-only pass over the log.
///
/// It exists so a device can decide when to evict cubes before `put` fails
/// and show that recovery found nothing alarming.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct StoreStats {
    /// Bytes of flash the store manages.
    pub capacity_bytes: u32,
    /// Bytes held by records (valid, removed or torn), headers and padding
    /// included.
    pub used_bytes: u32,
    /// Unwritten bytes new records can use before the next compaction, not
    /// counting the page the engine always keeps erased.
    pub free_bytes: u32,
    /// Bytes of removed and torn records (reclaimed by compaction; older
    /// versions of live ids are reclaimable too but not counted here).
    pub garbage_bytes: u32,
    /// Records with valid CRCs, including older versions of an id.
    pub records_valid: u32,
    /// Records invalidated by [`FlashStore::remove`].
    pub records_removed: u32,
    /// Records (or unreadable headers) cut short by power loss; ignored.
    pub records_torn: u32,
    /// Erased pages.
    pub pages_open: u16,
    /// Pages being filled (normally exactly one).
    pub pages_filling: u16,
    /// Full pages.
    pub pages_full: u16,
    /// Sectors erased by this store since it was opened.
    pub erases_since_open: u32,
    /// Longest value [`FlashStore::put`] accepts.
    pub max_value_len: u32,
}

/// What [`FlashStore::open`] found and did.
///
/// It exists so the platform can log the outcome of every boot's recovery
/// (how many torn writes the last power cut left, whether repair ran).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct RecoveryReport {
    /// Usage after recovery.
    pub stats: StoreStats,
    /// Pages found half-erased (an erase cut short); erased again.
    pub pages_half_erased: u16,
    /// Pages whose markers read "erased" but which were not blank (an erase
    /// or marker program cut short); erased again.
    pub pages_dirty: u16,
    /// A compaction step was cut short; its partial copy was erased (the
    /// page being compacted is intact) and the engine redoes the step at the
    /// next `put`. Reads are correct meanwhile.
    pub compaction_interrupted: bool,
}

/// One slot of the scratch table [`FlashStore::for_each_live`] uses to find
/// the newest version of each id without a heap.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LiveSlot {
    id: CubeId,
    last: u32,
}

impl LiveSlot {
    /// An unused slot, for initialising arrays: `[LiveSlot::EMPTY; 64]`.
    pub const EMPTY: Self = Self {
        id: CubeId([0; ID_LEN]),
        last: 0,
    };
}

/// Outcome of [`FlashStore::for_each_live`].
///
/// It exists so a caller can tell a complete listing from an early stop,
/// and see how many superseded versions compaction has yet to reclaim.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct LiveSummary {
    /// Live records passed to the callback.
    pub live: u32,
    /// Valid records on flash: live ones plus older versions of them.
    pub records: u32,
    /// The callback stopped the iteration early.
    pub stopped: bool,
}

/// Record buffer; aligned because some flash drivers need aligned sources.
#[repr(C, align(32))]
struct AlignedBuf<const N: usize>([u8; N]);

/// The engine instance behind a [`FlashStore`].
type Engine<S, C> = MapStorage<CubeId, Guard<S>, C>;

/// A power-loss-safe log of cubes in a range of NOR flash.
///
/// It exists to give the rest of memkern a synchronous key–value view
/// (`put` / `get` / `remove` / iterate by [`CubeId`]) over raw flash with
/// the guarantees listed in the [module documentation](self).
///
/// - `S`: the flash, as an async `embedded-storage-async` NOR flash; a
///   blocking driver is wrapped in [`BlockingFlash`] by [`FlashStore::open`].
/// - `N`: record buffer bytes; bounds the value size (see
///   [`FlashStore::max_value_len`]) and is the store's main RAM cost.
/// - `C`: the engine's cache ([`NoCache`] by default).
///
/// After an operation fails with a flash-level error (a driver fault, a
/// failed read-back, [`StoreError::Corrupted`]), the next call first runs
/// the same recovery as [`FlashStore::open`] with a fresh cache, so a
/// transient fault needs no reopen.
pub struct FlashStore<S: NorFlash, const N: usize = DEFAULT_BUFFER, C: CacheImpl<CubeId> = NoCache>
{
    /// Always `Some` between calls; `None` only inside [`Self::recover`].
    engine: Option<Engine<S, C>>,
    make_cache: fn() -> C,
    range: Range<u32>,
    needs_recovery: bool,
    buf: AlignedBuf<N>,
}

impl<F: blocking::NorFlash, const N: usize> FlashStore<BlockingFlash<F>, N, NoCache> {
    /// Opens the store on `range` of a blocking flash driver, running the
    /// recovery scan; see [`FlashStore::open_with`].
    ///
    /// Pass `&mut driver` to keep the driver if opening fails. A blank
    /// (erased) range opens as an empty store.
    pub fn open(flash: F, range: Range<u32>) -> Result<(Self, RecoveryReport), StoreError> {
        Self::open_with(BlockingFlash::new(flash), range, Cache::new_uncached)
    }
}

impl<S: NorFlash, const N: usize, C: CacheImpl<CubeId>> FlashStore<S, N, C> {
    /// Opens the store on `range` of an async flash, with an engine cache
    /// built by `make_cache`.
    ///
    /// Recovery: checks the configuration, reads every page, erases pages
    /// that hold nothing the engine still needs (half-erased pages, dirty
    /// erased-looking pages, the partial copy of an interrupted compaction;
    /// see `settle` in the source for why each is safe and why it must
    /// happen here), and reports what it found. No record is rewritten: the
    /// engine redoes an interrupted compaction at the next `put`.
    ///
    /// `make_cache` is called now and after every in-session recovery (a
    /// cache must never outlive changes made behind the engine's back). A
    /// cache sized in pages must cover at least the pages of `range`
    /// (sequential-storage panics otherwise).
    pub fn open_with(
        flash: S,
        range: Range<u32>,
        make_cache: fn() -> C,
    ) -> Result<(Self, RecoveryReport), StoreError> {
        let config = MapConfig::<Guard<S>>::try_new(range.clone()).map_err(ConfigError::from)?;
        if range.end as usize > flash.capacity() {
            return Err(ConfigError::RangeOutOfBounds.into());
        }
        let word = inspect::word_size::<Guard<S>>();
        if word > inspect::MAX_WORD
            || !S::ERASE_SIZE.is_multiple_of(word)
            || (S::WRITE_SIZE < MIN_PROGRAM_UNIT
                && !MIN_PROGRAM_UNIT.is_multiple_of(S::WRITE_SIZE.max(1)))
        {
            return Err(ConfigError::UnsupportedWordSize.into());
        }
        if Self::max_value_len() == 0 {
            return Err(ConfigError::BufferTooSmall.into());
        }
        let mut guard = Guard::new(flash);
        let mut report = RecoveryReport::default();
        let scan = block_on(async {
            settle(&mut guard, range.clone(), &mut report).await?;
            inspect::scan(&mut guard, range.clone()).await
        })
        .map_err(|e| StoreError::Flash(FlashFault::of(&e)))?;
        report.stats = Self::stats_from(&scan, &range, guard.erased_sectors);
        Ok((
            Self {
                engine: Some(MapStorage::new(guard, config, make_cache())),
                make_cache,
                range,
                needs_recovery: false,
                buf: AlignedBuf([0; N]),
            },
            report,
        ))
    }

    /// Longest value [`Self::put`] accepts: the smaller of what fits in one
    /// page (a record never spans pages) and what fits in the `N`-byte
    /// record buffer together with the id.
    pub const fn max_value_len() -> usize {
        let word = inspect::word_size::<Guard<S>>();
        let page_limit =
            inspect::page_data_len::<Guard<S>>().saturating_sub(inspect::header_span::<Guard<S>>());
        let buf_limit = N - N % word;
        let mut limit = if page_limit < buf_limit {
            page_limit
        } else {
            buf_limit
        };
        if limit > u16::MAX as usize {
            limit = u16::MAX as usize;
        }
        limit.saturating_sub(ID_LEN)
    }

    /// The flash range the store manages.
    pub fn range(&self) -> Range<u32> {
        self.range.clone()
    }

    /// The engine and the record buffer, after running recovery if an
    /// earlier call left the flash in doubt.
    fn parts(&mut self) -> Result<(&mut Engine<S, C>, &mut [u8]), StoreError> {
        if self.needs_recovery {
            self.recover()?;
        }
        let engine = self.engine.as_mut().ok_or(StoreError::Internal)?;
        Ok((engine, &mut self.buf.0))
    }

    /// In-session recovery: settle the flash as [`Self::open_with`] does and
    /// restart the engine with a fresh cache (the old one may describe pages
    /// that failed operations or `settle` changed).
    fn recover(&mut self) -> Result<(), StoreError> {
        // Succeeded at open for the same range, so it succeeds again; it is
        // built first so that nothing can fail while the engine is out.
        let config =
            MapConfig::<Guard<S>>::try_new(self.range.clone()).map_err(|_| StoreError::Internal)?;
        let Some(engine) = self.engine.take() else {
            return Err(StoreError::Internal);
        };
        let (mut guard, _stale) = engine.destroy();
        let mut report = RecoveryReport::default();
        let settled = block_on(settle(&mut guard, self.range.clone(), &mut report));
        self.engine = Some(MapStorage::new(guard, config, (self.make_cache)()));
        settled.map_err(|e| StoreError::Flash(FlashFault::of(&e)))?;
        self.needs_recovery = false;
        Ok(())
    }

    /// Passes `result` through, noting whether it leaves the flash in doubt.
    fn noted<T>(&mut self, result: Result<T, StoreError>) -> Result<T, StoreError> {
        if let Err(
            StoreError::Flash(_)
            | StoreError::VerifyFailed { .. }
            | StoreError::Corrupted
            | StoreError::Internal,
        ) = result
        {
            self.needs_recovery = true;
        }
        result
    }

    /// Stores `value` under `id`, replacing any previous value; returns once
    /// it is durable (acknowledged).
    ///
    /// May compact one page first (copy its live records forward, erase it).
    pub fn put(&mut self, id: &CubeId, value: &[u8]) -> Result<(), StoreError> {
        let max = Self::max_value_len();
        if value.len() > max {
            return Err(StoreError::TooLarge {
                len: value.len(),
                max,
            });
        }
        let result = self.parts().and_then(|(engine, buf)| {
            block_on(engine.store_item(buf, id, &value)).map_err(|e| match e {
                sequential_storage::Error::ItemTooBig => StoreError::TooLarge {
                    len: value.len(),
                    max,
                },
                other => engine_error(other),
            })
        });
        self.noted(result)
    }

    /// Copies the value of `id` into `out` and returns that part of `out`;
    /// `None` if the id is absent. [`StoreError::BufferTooSmall`] if `out`
    /// is shorter than the value.
    pub fn get<'o>(
        &mut self,
        id: &CubeId,
        out: &'o mut [u8],
    ) -> Result<Option<&'o [u8]>, StoreError> {
        let copied = self.get_with(id, |value| match out.get_mut(..value.len()) {
            Some(dst) => {
                dst.copy_from_slice(value);
                Ok(value.len())
            }
            None => Err(value.len()),
        })?;
        match copied {
            None => Ok(None),
            Some(Ok(n)) => Ok(out.get(..n)),
            Some(Err(needed)) => Err(StoreError::BufferTooSmall { needed }),
        }
    }

    /// Calls `f` with the value of `id` read into the store's own buffer (no
    /// copy); `None` if the id is absent.
    pub fn get_with<R>(
        &mut self,
        id: &CubeId,
        f: impl FnOnce(&[u8]) -> R,
    ) -> Result<Option<R>, StoreError> {
        let result = self.parts().and_then(|(engine, buf)| {
            block_on(engine.fetch_item::<&[u8]>(buf, id))
                .map(|found| found.map(f))
                .map_err(engine_error)
        });
        self.noted(result)
    }

    /// Whether `id` has a value.
    pub fn contains(&mut self, id: &CubeId) -> Result<bool, StoreError> {
        self.get_with(id, |_| ()).map(|v| v.is_some())
    }

    /// Removes `id` (no-op if absent); returns once durable.
    ///
    /// Invalidates every stored version of the id in place, oldest first, so
    /// a cut part-way leaves the newest version readable. Visits the whole
    /// log. Needs a flash that allows clearing more bits of a programmed
    /// word (see the module documentation).
    pub fn remove(&mut self, id: &CubeId) -> Result<(), StoreError>
    where
        S: MultiwriteNorFlash,
    {
        let result = self
            .parts()
            .and_then(|(engine, buf)| block_on(engine.remove_item(buf, id)).map_err(engine_error));
        self.noted(result)
    }

    /// Calls `f(id, value)` once for every live record (the newest version
    /// of every id that has not been removed), until `f` breaks.
    ///
    /// No heap: `scratch` holds one slot per id being resolved. With at
    /// least as many slots as live ids, the log is read twice; otherwise ids
    /// are handled in ascending batches of `scratch.len()`, two reads of the
    /// log per batch. Within a batch records come in log order (oldest
    /// first); each live id is visited exactly once.
    pub fn for_each_live<F>(
        &mut self,
        scratch: &mut [LiveSlot],
        f: F,
    ) -> Result<LiveSummary, StoreError>
    where
        F: FnMut(&CubeId, &[u8]) -> ControlFlow<()>,
    {
        if scratch.is_empty() {
            return Err(StoreError::BufferTooSmall { needed: 1 });
        }
        let result = self
            .parts()
            .and_then(|(engine, buf)| live_records(engine, buf, scratch, f));
        self.noted(result)
    }

    /// Calls `f(id, value)` for every valid record in log order (oldest
    /// first), in **one** read of the log, until `f` breaks; returns the
    /// number of records passed.
    ///
    /// Unlike [`Self::for_each_live`] it does not resolve versions: an id
    /// stored more than once is visited once per stored version still on
    /// flash. It exists for callers that never store an id twice (fresh ids
    /// for every `put`, as the MCU firmware does): for them every record is
    /// live and this is a complete listing at a quarter of the cost of a
    /// `for_each_live` that needs two batches, with no scratch table. (The
    /// partial copy of a compaction cut short by power loss, the one other
    /// source of a second record, is erased by recovery before any call.)
    pub fn for_each_record<F>(&mut self, mut f: F) -> Result<u32, StoreError>
    where
        F: FnMut(&CubeId, &[u8]) -> ControlFlow<()>,
    {
        let result = self.parts().and_then(|(engine, buf)| {
            block_on(async {
                let mut iter = engine.fetch_all_items(buf).await?;
                let mut seen = 0u32;
                while let Some((id, value)) = iter.next::<&[u8]>(buf).await? {
                    seen = seen.saturating_add(1);
                    if f(&id, value).is_break() {
                        break;
                    }
                }
                Ok(seen)
            })
            .map_err(engine_error)
        });
        self.noted(result)
    }

    /// Number of live records (see [`Self::for_each_live`] for the cost).
    pub fn count_live(&mut self, scratch: &mut [LiveSlot]) -> Result<u32, StoreError> {
        self.for_each_live(scratch, |_, _| ControlFlow::Continue(()))
            .map(|s| s.live)
    }

    /// Flash usage, from one read-only pass over the log.
    pub fn stats(&mut self) -> Result<StoreStats, StoreError> {
        let range = self.range.clone();
        let result = self.parts().and_then(|(engine, _)| {
            let guard = engine.flash();
            let erased = guard.erased_sectors;
            block_on(inspect::scan(guard, range.clone()))
                .map(|scan| Self::stats_from(&scan, &range, erased))
                .map_err(|e| StoreError::Flash(FlashFault::of(&e)))
        });
        self.noted(result)
    }

    fn stats_from(scan: &inspect::Scan, range: &Range<u32>, erased: u32) -> StoreStats {
        let reserve = inspect::page_data_len::<Guard<S>>() as u32;
        StoreStats {
            capacity_bytes: range.end.saturating_sub(range.start),
            used_bytes: scan.valid_bytes.saturating_add(scan.garbage_bytes),
            free_bytes: scan.unwritten_bytes.saturating_sub(reserve),
            garbage_bytes: scan.garbage_bytes,
            records_valid: scan.records_valid,
            records_removed: scan.records_removed,
            records_torn: scan.records_torn,
            pages_open: scan.pages_open,
            pages_filling: scan.pages_partial,
            pages_full: scan.pages_closed,
            erases_since_open: erased,
            max_value_len: Self::max_value_len() as u32,
        }
    }

    /// Exclusive access to the flash while the store is open (e.g. a
    /// simulator's counters or fault injection). Writing to the store's
    /// range through it bypasses every guarantee of the store.
    pub fn flash_mut(&mut self) -> &mut S {
        // `engine` is `None` only inside `recover`, which always puts it
        // back before returning, so it is `Some` whenever a caller can be
        // here.
        let engine = self.engine.as_mut().expect("engine present between calls");
        &mut engine.flash().inner
    }

    /// Closes the store, giving back the flash.
    pub fn into_flash(self) -> S {
        // See `flash_mut`: `engine` is always `Some` between calls.
        let engine = self.engine.expect("engine present between calls");
        engine.destroy().0.inner
    }
}

/// Both passes of [`FlashStore::for_each_live`], batch by batch.
fn live_records<S: NorFlash, C: CacheImpl<CubeId>, F>(
    engine: &mut Engine<S, C>,
    buf: &mut [u8],
    scratch: &mut [LiveSlot],
    mut f: F,
) -> Result<LiveSummary, StoreError>
where
    F: FnMut(&CubeId, &[u8]) -> ControlFlow<()>,
{
    let mut summary = LiveSummary::default();
    let mut after: Option<CubeId> = None;
    loop {
        let (filled, records) =
            block_on(collect_batch(engine, buf, scratch, after)).map_err(engine_error)?;
        if after.is_none() {
            summary.records = records;
        }
        let batch = &scratch[..filled];
        let Some(last_id) = batch.last().map(|s| s.id) else {
            break;
        };
        let (emitted, stopped) =
            block_on(emit_batch(engine, buf, batch, &mut f)).map_err(engine_error)?;
        summary.live = summary.live.saturating_add(emitted);
        if stopped {
            summary.stopped = true;
            break;
        }
        if filled < scratch.len() {
            break;
        }
        after = Some(last_id);
    }
    Ok(summary)
}

/// Brings the log into a state in which every engine operation is safe,
/// by erasing pages that hold nothing the engine still needs:
///
/// 1. *Half-erased pages* (an erase cut short after it cleared the start
///    marker): the engine would erase them too, on first contact.
/// 2. *Dirty erased-looking pages* (costs a read of every open page):
///    markers erased, contents not. The engine never reads
///    records from such a page but would append on top of the leftovers.
/// 3. *The target of an interrupted compaction*: a filling page followed by
///    a full page. The engine was copying the full page's live records into
///    the filling one. Those copies are all there is in it (a `put` in this
///    state repairs first; only a failed operation can leave it), and the
///    originals are intact, so erasing it loses nothing — it is the first
///    step of the engine's own repair, which redoes the copy at the next
///    `put`. Doing it here, before any `remove`, matters: a `remove` cut
///    short in this state invalidates the original but not yet the copy,
///    and the engine's repair would then erase the only valid record (found
///    by the power-cut tests). `settle` runs at open and, after a failed
///    operation, before the next call, so no `remove` ever runs in this
///    state.
///
/// Returns whether anything was erased.
async fn settle<S: NorFlash>(
    guard: &mut Guard<S>,
    range: Range<u32>,
    report: &mut RecoveryReport,
) -> Result<bool, GuardError<S::Error>> {
    use inspect::PageState;
    let erase = S::ERASE_SIZE as u32;
    let pages = range.end.saturating_sub(range.start) / erase.max(1);
    let page_at = |i: u32| range.start + (i % pages.max(1)) * erase;
    let mut changed = false;
    for i in 0..pages {
        let page = page_at(i);
        let repair = match inspect::page_state(guard, page).await? {
            PageState::HalfErased => {
                report.pages_half_erased = report.pages_half_erased.saturating_add(1);
                true
            }
            PageState::Open if !inspect::is_blank(guard, page).await? => {
                report.pages_dirty = report.pages_dirty.saturating_add(1);
                true
            }
            _ => false,
        };
        if repair {
            guard.erase(page, page + erase).await?;
            changed = true;
        }
    }
    for i in 0..pages {
        let page = page_at(i);
        if inspect::page_state(guard, page).await? == PageState::Partial
            && inspect::page_state(guard, page_at(i + 1)).await? == PageState::Closed
        {
            report.compaction_interrupted = true;
            guard.erase(page, page + erase).await?;
            changed = true;
        }
    }
    Ok(changed)
}

/// Pass 1 of a batch: the `slots.len()` smallest ids greater than `after`,
/// each with the position of its last valid record in log order. Returns
/// (slots filled, valid records seen).
async fn collect_batch<S: NorFlash, C: CacheImpl<CubeId>>(
    map: &mut Engine<S, C>,
    buf: &mut [u8],
    slots: &mut [LiveSlot],
    after: Option<CubeId>,
) -> Result<(usize, u32), EngineError<S::Error>> {
    let mut iter = map.fetch_all_items(buf).await?;
    let mut filled = 0usize;
    let mut pos = 0u32;
    while let Some((id, _)) = iter.next::<&[u8]>(buf).await? {
        if after.is_none_or(|a| id > a) {
            note(slots, &mut filled, id, pos);
        }
        pos = pos.saturating_add(1);
    }
    Ok((filled, pos))
}

/// Records `id` seen at `pos` in the sorted table `slots[..filled]`.
///
/// Keeps the table holding the smallest ids seen: once full, a new id
/// smaller than the largest evicts it. An evicted id can never come back in
/// this batch (the largest only shrinks), so every id kept has seen all its
/// occurrences and its `last` is exact.
fn note(slots: &mut [LiveSlot], filled: &mut usize, id: CubeId, pos: u32) {
    let cap = slots.len();
    let Some(table) = slots.get_mut(..*filled) else {
        return;
    };
    match table.binary_search_by(|s| s.id.cmp(&id)) {
        Ok(i) => table[i].last = pos,
        Err(i) => {
            let entry = LiveSlot { id, last: pos };
            if *filled < cap {
                // i <= filled < cap: the shift stays inside `slots`.
                slots.copy_within(i..*filled, i + 1);
                slots[i] = entry;
                *filled += 1;
            } else if i < cap {
                // Full: drop the largest id (the last slot) to make room.
                slots.copy_within(i..cap - 1, i + 1);
                slots[i] = entry;
            }
        }
    }
}

/// Pass 2 of a batch: call `f` for each record that is the last of its id.
/// Returns (records passed to `f`, whether `f` stopped).
async fn emit_batch<S: NorFlash, C: CacheImpl<CubeId>, F>(
    map: &mut Engine<S, C>,
    buf: &mut [u8],
    slots: &[LiveSlot],
    f: &mut F,
) -> Result<(u32, bool), EngineError<S::Error>>
where
    F: FnMut(&CubeId, &[u8]) -> ControlFlow<()>,
{
    let mut iter = map.fetch_all_items(buf).await?;
    let mut pos = 0u32;
    let mut emitted = 0u32;
    while let Some((id, value)) = iter.next::<&[u8]>(buf).await? {
        if let Ok(i) = slots.binary_search_by(|s| s.id.cmp(&id))
            && slots.get(i).is_some_and(|s| s.last == pos)
        {
            emitted += 1;
            if f(&id, value).is_break() {
                return Ok((emitted, true));
            }
        }
        pos = pos.saturating_add(1);
    }
    Ok((emitted, false))
}
