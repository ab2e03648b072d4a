//! A simulated NOR flash that enforces NOR programming rules and can lose
//! power in the middle of any program or erase.
//!
//! It exists so the flash store's power-loss guarantees can be tested on a
//! host (unit tests, the Linux platform, HIL test harnesses) against the
//! same rules real NOR flash imposes, at thousands of cut points per second.
//!
//! # Rules enforced
//!
//! - **Erase sets a whole sector to `0xFF`.** Erase ranges must be sector
//!   aligned. Every started erase is counted per sector (wear).
//! - **Program only clears bits.** A program that would turn any `0` bit
//!   into a `1` is rejected with [`SimError::ProgramsZeroToOne`] and changes
//!   nothing (real NOR would silently AND; rejecting catches bugs). Clearing
//!   more bits of an already programmed word is allowed, which is the
//!   [`MultiwriteNorFlash`] contract.
//! - **Programs are aligned**: offset and length are multiples of `WRITE`.
//! - **Reads** may start and end anywhere (`READ_SIZE` is 1).
//!
//! # Power-cut model
//!
//! [`NorSim::arm_cut`]`(n, mode)` lets `n` more program/erase operations
//! complete, then tears the next one and "loses power": that operation and
//! every later read, program or erase fail with [`SimError::PowerLost`]
//! until [`NorSim::reboot`]. The image is kept, as real flash keeps it.
//!
//! - A torn **program** ([`WriteTear::Prefix`]) writes a random prefix of
//!   its bytes (anywhere from none to all of them); in the word where it
//!   stopped, a random subset of the bits that were being cleared is
//!   cleared. [`WriteTear::Scatter`] instead clears a random subset of the
//!   to-be-cleared bits anywhere in the programmed range, which is the
//!   worst case the [`MultiwriteNorFlash`] documentation allows.
//! - A torn **erase** resets a random prefix of the range to `0xFF`; the
//!   byte where it stopped gets a random subset of its bits set. Bytes after
//!   it keep their old value. (A real interrupted erase may leave anything;
//!   this prefix model is the one the store's layout is designed for — see
//!   the store module's "power-loss model".)
//!
//! All randomness comes from a seeded xorshift generator, so a failing
//! sequence replays exactly from its seed.

extern crate alloc;

use alloc::vec;
use alloc::vec::Vec;

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Errors of the simulated flash; they mirror what a real driver reports
/// plus the injected power loss.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SimError {
    /// Offset or length is not a multiple of the program or erase unit.
    #[error("operation not aligned to the flash's program or erase unit")]
    NotAligned,
    /// The range does not lie inside the simulated flash.
    #[error("operation outside the simulated flash")]
    OutOfBounds,
    /// A program tried to turn a `0` bit back into `1` (needs an erase first).
    #[error("program at {address:#x} would turn a 0 bit into 1")]
    ProgramsZeroToOne {
        /// Address of the first offending byte.
        address: u32,
    },
    /// Power was cut during or before this operation; call [`NorSim::reboot`].
    #[error("power lost")]
    PowerLost,
}

impl NorFlashError for SimError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            SimError::NotAligned => NorFlashErrorKind::NotAligned,
            SimError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            SimError::ProgramsZeroToOne { .. } | SimError::PowerLost => NorFlashErrorKind::Other,
        }
    }
}

/// How a torn program leaves the bytes it was writing.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum WriteTear {
    /// A random prefix is written; the word where it stopped is partially
    /// programmed; the rest is untouched.
    Prefix,
    /// Any random subset of the bits being cleared is cleared, anywhere in
    /// the programmed range.
    Scatter,
}

/// Which kind of operation a power cut tore.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum TearKind {
    /// A program (write).
    Program,
    /// A sector erase.
    Erase,
}

/// Where the last power cut struck, for test diagnostics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Tear {
    /// The torn operation.
    pub kind: TearKind,
    /// Start address of the torn operation.
    pub address: u32,
    /// Length of the torn operation in bytes.
    pub len: u32,
    /// Bytes fully completed before the cut (for [`WriteTear::Scatter`]: 0).
    pub completed: u32,
}

/// Operation counters, so tests can show what a workload did to the flash.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct SimStats {
    /// Read calls.
    pub reads: u64,
    /// Program calls that started (including torn ones).
    pub programs: u64,
    /// Sector erases that started (including torn ones).
    pub erases: u64,
    /// Operations torn by an injected power cut.
    pub tears: u64,
    /// Programs rejected because they would set a `0` bit.
    pub rejected_programs: u64,
}

/// A simulated NOR flash of `sectors × SECTOR` bytes, programmed in units of
/// `WRITE` bytes; see the module documentation for the rules and the
/// power-cut model.
#[derive(Debug, Clone)]
pub struct NorSim<const WRITE: usize, const SECTOR: usize> {
    data: Vec<u8>,
    erase_counts: Vec<u32>,
    /// `Some(n)`: `n` more operations complete, then the next one is torn.
    cut_in: Option<u64>,
    /// Only erases count down and get torn.
    cut_erases_only: bool,
    tear_mode: WriteTear,
    powered: bool,
    rng: u64,
    stats: SimStats,
    last_tear: Option<Tear>,
}

impl<const WRITE: usize, const SECTOR: usize> NorSim<WRITE, SECTOR> {
    /// A fully erased flash of `sectors` sectors; `seed` drives the tear
    /// randomness.
    pub fn new(sectors: usize, seed: u64) -> Self {
        Self::from_image(vec![0xFF; sectors.saturating_mul(SECTOR)], seed)
            .unwrap_or_else(Self::empty)
    }

    /// A zero-sector flash: what `new` gives for an impossible geometry
    /// (`SECTOR` not a multiple of `WRITE`, or more than 4 GiB), so every
    /// operation on it fails with [`SimError::OutOfBounds`] instead of panicking.
    fn empty() -> Self {
        Self {
            data: Vec::new(),
            erase_counts: Vec::new(),
            cut_in: None,
            cut_erases_only: false,
            tear_mode: WriteTear::Prefix,
            powered: true,
            rng: 1,
            stats: SimStats::default(),
            last_tear: None,
        }
    }

    /// Wraps an existing image (e.g. saved from an earlier run). `None` if
    /// its length is not a whole number of sectors.
    pub fn from_image(image: Vec<u8>, seed: u64) -> Option<Self> {
        if WRITE == 0
            || SECTOR == 0
            || !SECTOR.is_multiple_of(WRITE)
            || !image.len().is_multiple_of(SECTOR)
        {
            return None;
        }
        if u32::try_from(image.len()).is_err() {
            return None;
        }
        let sectors = image.len() / SECTOR;
        Some(Self {
            data: image,
            erase_counts: vec![0; sectors],
            cut_in: None,
            cut_erases_only: false,
            tear_mode: WriteTear::Prefix,
            powered: true,
            // xorshift must not start at zero.
            rng: (seed ^ 0x9E37_79B9_7F4A_7C15) | 1,
            stats: SimStats::default(),
            last_tear: None,
        })
    }

    /// The raw flash contents.
    pub fn image(&self) -> &[u8] {
        &self.data
    }

    /// Mutable raw contents, for tests that corrupt flash on purpose.
    pub fn image_mut(&mut self) -> &mut [u8] {
        &mut self.data
    }

    /// Gives the image back (to persist it or to build a new simulator).
    pub fn into_image(self) -> Vec<u8> {
        self.data
    }

    /// Number of sectors.
    pub fn sector_count(&self) -> usize {
        self.erase_counts.len()
    }

    /// Lets `after_ops` more program/erase operations complete, then tears
    /// the next one (torn programs behave as `mode` says) and loses power.
    pub fn arm_cut(&mut self, after_ops: u64, mode: WriteTear) {
        self.cut_in = Some(after_ops);
        self.cut_erases_only = false;
        self.tear_mode = mode;
    }

    /// Lets `after_erases` more erases complete (programs are not counted
    /// and never torn), then tears the next erase and loses power: erases
    /// are rare, so this aims cuts at compaction.
    pub fn arm_erase_cut(&mut self, after_erases: u64) {
        self.cut_in = Some(after_erases);
        self.cut_erases_only = true;
    }

    /// Cancels an armed cut that has not fired yet.
    pub fn disarm(&mut self) {
        self.cut_in = None;
    }

    /// Whether an armed cut is still waiting to fire.
    pub fn is_armed(&self) -> bool {
        self.cut_in.is_some()
    }

    /// `false` after a cut fired and before [`Self::reboot`].
    pub fn is_powered(&self) -> bool {
        self.powered
    }

    /// Restores power (and cancels any armed cut); the image is unchanged.
    pub fn reboot(&mut self) {
        self.powered = true;
        self.cut_in = None;
    }

    /// How many erases each sector has started, index = sector number.
    pub fn erase_counts(&self) -> &[u32] {
        &self.erase_counts
    }

    /// Operation counters since creation.
    pub fn stats(&self) -> SimStats {
        self.stats
    }

    /// The most recent torn operation, if any.
    pub fn last_tear(&self) -> Option<Tear> {
        self.last_tear
    }

    fn next_random(&mut self) -> u64 {
        // xorshift64*: tiny, deterministic, good enough for fault placement.
        let mut x = self.rng;
        x ^= x >> 12;
        x ^= x << 25;
        x ^= x >> 27;
        self.rng = x;
        x.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }

    /// Uniform-ish value in `0..=max`.
    fn random_upto(&mut self, max: usize) -> usize {
        let span = (max as u64).saturating_add(1);
        // `span` is at least 1, so the remainder is defined and <= max.
        (self.next_random() % span) as usize
    }

    fn random_byte(&mut self) -> u8 {
        self.next_random().to_le_bytes()[3]
    }

    /// Consumes one operation from the cut countdown; `true` if this
    /// operation is the one to tear.
    fn tears_now(&mut self, is_erase: bool) -> bool {
        if self.cut_erases_only && !is_erase {
            return false;
        }
        match self.cut_in {
            Some(0) => {
                self.cut_in = None;
                self.powered = false;
                self.stats.tears += 1;
                true
            }
            Some(n) => {
                self.cut_in = Some(n - 1);
                false
            }
            None => false,
        }
    }

    fn range(&self, offset: u32, len: usize) -> Result<core::ops::Range<usize>, SimError> {
        let start = offset as usize;
        let end = start.checked_add(len).ok_or(SimError::OutOfBounds)?;
        if end > self.data.len() {
            return Err(SimError::OutOfBounds);
        }
        Ok(start..end)
    }
}

impl<const WRITE: usize, const SECTOR: usize> ErrorType for NorSim<WRITE, SECTOR> {
    type Error = SimError;
}

impl<const WRITE: usize, const SECTOR: usize> ReadNorFlash for NorSim<WRITE, SECTOR> {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        self.stats.reads += 1;
        let range = self.range(offset, bytes.len())?;
        let src = self.data.get(range).ok_or(SimError::OutOfBounds)?;
        bytes.copy_from_slice(src);
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.data.len()
    }
}

impl<const WRITE: usize, const SECTOR: usize> NorFlash for NorSim<WRITE, SECTOR> {
    const WRITE_SIZE: usize = WRITE;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        if from > to {
            return Err(SimError::OutOfBounds);
        }
        if !(from as usize).is_multiple_of(SECTOR) || !(to as usize).is_multiple_of(SECTOR) {
            return Err(SimError::NotAligned);
        }
        let range = self.range(from, (to - from) as usize)?;
        if range.is_empty() {
            return Ok(());
        }
        let first_sector = range.start / SECTOR;
        if self.tears_now(true) {
            let done = self.random_upto(range.len());
            let byte = self.random_byte();
            let stop = range.start + done;
            // Sectors the erase had started on wear like a full erase.
            let last_touched = (stop.min(range.end - 1)) / SECTOR;
            for count in self
                .erase_counts
                .iter_mut()
                .take(last_touched + 1)
                .skip(first_sector)
            {
                *count += 1;
            }
            self.stats.erases += (last_touched + 1 - first_sector) as u64;
            if let Some(prefix) = self.data.get_mut(range.start..stop) {
                prefix.fill(0xFF);
            }
            if stop < range.end
                && let Some(b) = self.data.get_mut(stop)
            {
                *b |= byte;
            }
            self.last_tear = Some(Tear {
                kind: TearKind::Erase,
                address: from,
                len: to - from,
                completed: done as u32,
            });
            return Err(SimError::PowerLost);
        }
        for count in self
            .erase_counts
            .iter_mut()
            .take(range.end / SECTOR)
            .skip(first_sector)
        {
            *count += 1;
        }
        self.stats.erases += (range.len() / SECTOR) as u64;
        if let Some(bytes) = self.data.get_mut(range) {
            bytes.fill(0xFF);
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), SimError> {
        if !self.powered {
            return Err(SimError::PowerLost);
        }
        if !(offset as usize).is_multiple_of(WRITE) || !bytes.len().is_multiple_of(WRITE) {
            return Err(SimError::NotAligned);
        }
        let range = self.range(offset, bytes.len())?;
        if bytes.is_empty() {
            return Ok(());
        }
        let old = self.data.get(range.clone()).ok_or(SimError::OutOfBounds)?;
        if let Some(i) = old.iter().zip(bytes).position(|(o, n)| n & !o != 0) {
            self.stats.rejected_programs += 1;
            return Err(SimError::ProgramsZeroToOne {
                address: offset + i as u32,
            });
        }
        self.stats.programs += 1;
        if self.tears_now(false) {
            let len = bytes.len();
            let (done, torn_end) = match self.tear_mode {
                WriteTear::Prefix => {
                    let done = self.random_upto(len);
                    // The word in which the program stopped is torn.
                    (done, (done / WRITE + 1) * WRITE)
                }
                WriteTear::Scatter => (0, len),
            };
            for (i, new) in bytes.iter().enumerate().take(torn_end.min(len)) {
                let mask = if i < done { 0xFF } else { self.random_byte() };
                if let Some(b) = self.data.get_mut(range.start + i) {
                    // Clear only the chosen subset of the bits being cleared.
                    *b &= !(!new & mask);
                }
            }
            self.last_tear = Some(Tear {
                kind: TearKind::Program,
                address: offset,
                len: len as u32,
                completed: done as u32,
            });
            return Err(SimError::PowerLost);
        }
        if let Some(dst) = self.data.get_mut(range) {
            for (d, n) in dst.iter_mut().zip(bytes) {
                *d &= n;
            }
        }
        Ok(())
    }
}

impl<const WRITE: usize, const SECTOR: usize> MultiwriteNorFlash for NorSim<WRITE, SECTOR> {}

#[cfg(test)]
mod tests {
    use super::*;

    type Sim = NorSim<4, 256>;

    #[test]
    fn starts_erased_and_erase_resets_whole_sector() {
        let mut f = Sim::new(4, 1);
        assert!(f.image().iter().all(|&b| b == 0xFF));
        f.write(256, &[0, 1, 2, 3]).expect("program");
        f.write(508, &[9, 9, 9, 9]).expect("program");
        f.erase(256, 512).expect("erase");
        assert!(f.image().iter().all(|&b| b == 0xFF));
        assert_eq!(f.erase_counts(), &[0, 1, 0, 0]);
    }

    #[test]
    fn program_only_clears_bits() {
        let mut f = Sim::new(2, 1);
        f.write(0, &[0xF0, 0xFF, 0x0F, 0x00]).expect("program");
        // Clearing further bits of a programmed word is allowed (multiwrite).
        f.write(0, &[0x00, 0xFF, 0x0F, 0x00])
            .expect("clear more bits");
        assert_eq!(&f.image()[..4], &[0x00, 0xFF, 0x0F, 0x00]);
        // Setting a bit back to 1 needs an erase.
        assert_eq!(
            f.write(0, &[0x01, 0xFF, 0x0F, 0x00]),
            Err(SimError::ProgramsZeroToOne { address: 0 })
        );
        assert_eq!(&f.image()[..4], &[0x00, 0xFF, 0x0F, 0x00]);
        assert_eq!(f.stats().rejected_programs, 1);
    }

    #[test]
    fn alignment_and_bounds() {
        let mut f = Sim::new(2, 1);
        assert_eq!(f.write(2, &[0; 4]), Err(SimError::NotAligned));
        assert_eq!(f.write(0, &[0; 3]), Err(SimError::NotAligned));
        assert_eq!(f.write(512, &[0; 4]), Err(SimError::OutOfBounds));
        assert_eq!(f.erase(0, 100), Err(SimError::NotAligned));
        assert_eq!(f.erase(256, 0), Err(SimError::OutOfBounds));
        assert_eq!(f.erase(0, 768), Err(SimError::OutOfBounds));
        // Reads may be unaligned and of any length.
        let mut buf = [0u8; 3];
        f.read(5, &mut buf).expect("unaligned read");
        assert_eq!(f.read(510, &mut buf), Err(SimError::OutOfBounds));
    }

    #[test]
    fn torn_program_is_prefix_then_dead_until_reboot() {
        for seed in 0..200 {
            let mut f = Sim::new(2, seed);
            f.arm_cut(1, WriteTear::Prefix);
            f.write(0, &[0x00; 8]).expect("first program completes");
            assert_eq!(f.write(8, &[0x00; 16]), Err(SimError::PowerLost));
            let tear = f.last_tear().expect("tear recorded");
            assert_eq!(
                (tear.kind, tear.address, tear.len),
                (TearKind::Program, 8, 16)
            );
            let done = tear.completed as usize;
            let img = f.image();
            assert!(img[8..8 + done].iter().all(|&b| b == 0));
            // Bytes after the torn word are untouched.
            let torn_end = (done / 4 + 1) * 4;
            assert!(img[8 + torn_end.min(16)..].iter().all(|&b| b == 0xFF));
            // Dead until reboot.
            let mut b = [0u8; 1];
            assert_eq!(f.read(0, &mut b), Err(SimError::PowerLost));
            assert_eq!(f.erase(0, 256), Err(SimError::PowerLost));
            f.reboot();
            f.read(0, &mut b).expect("alive again");
            assert_eq!(b[0], 0);
        }
    }

    #[test]
    fn torn_erase_leaves_erased_prefix() {
        let mut saw_partial = false;
        for seed in 0..100 {
            let mut f = Sim::new(2, seed);
            f.write(0, &[0u8; 256]).expect("fill");
            f.arm_cut(0, WriteTear::Prefix);
            assert_eq!(f.erase(0, 256), Err(SimError::PowerLost));
            let done = f.last_tear().expect("tear").completed as usize;
            assert!(f.image()[..done].iter().all(|&b| b == 0xFF));
            assert!(f.image()[(done + 1).min(256)..256].iter().all(|&b| b == 0));
            assert_eq!(f.erase_counts()[0], 1);
            saw_partial |= done > 0 && done < 256;
        }
        assert!(saw_partial);
    }

    #[test]
    fn erase_cut_skips_programs() {
        let mut f = Sim::new(2, 5);
        f.arm_erase_cut(1);
        f.write(0, &[0; 4]).expect("programs are not counted");
        f.erase(256, 512).expect("first erase completes");
        f.write(4, &[0; 4]).expect("still not counted");
        assert_eq!(f.erase(256, 512), Err(SimError::PowerLost));
        assert_eq!(f.last_tear().map(|t| t.kind), Some(TearKind::Erase));
    }

    #[test]
    fn scatter_tear_only_clears_bits_being_programmed() {
        let mut f = Sim::new(1, 7);
        f.arm_cut(0, WriteTear::Scatter);
        let pattern = [0xA5u8; 32];
        assert_eq!(f.write(0, &pattern), Err(SimError::PowerLost));
        for &b in &f.image()[..32] {
            // Every bit that is 1 in the pattern stayed 1.
            assert_eq!(b & 0xA5, 0xA5);
        }
    }

    #[test]
    fn image_round_trip() {
        let mut f = Sim::new(2, 3);
        f.write(4, &[1, 2, 3, 4]).expect("program");
        let img = f.clone().into_image();
        let g = Sim::from_image(img, 3).expect("valid image");
        assert_eq!(g.image(), f.image());
        assert!(Sim::from_image(alloc::vec![0xFF; 100], 0).is_none());
    }
}
