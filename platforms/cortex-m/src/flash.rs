//! The firmware's NOR flash: an image file on the host, reached through
//! semihosting file operations.
//!
//! It exists so the firmware's memories persist across QEMU runs exactly as
//! an SPI NOR chip's contents persist across resets, and so a power cut (the
//! host killing QEMU) can interrupt a program or erase part-way. The driver
//! enforces NOR rules instead of trusting the caller: erase works on whole
//! 4 KiB sectors and sets them to `0xFF`; a program may only clear bits
//! (1 → 0) and must be aligned to the 4-byte program unit; anything else is
//! an error. Programs reach the host one 4-byte word at a time and erases
//! 256 bytes at a time from the sector's start, so a cut can tear a record
//! at any word or leave a sector part-erased, as on a real chip.
//!
//! Reads go through a one-sector RAM cache (4 KiB), updated on every
//! program and erase, so a scan of the log costs one host call per sector.

use embedded_storage::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};
use semihosting::fs::File;
use semihosting::io::{Read, Seek, SeekFrom, Write};

/// Erase sector size (typical of SPI NOR).
pub const SECTOR: usize = 4096;
/// Program unit.
pub const WORD: usize = 4;

/// What went wrong talking to the flash.
#[derive(Debug, Clone, Copy, PartialEq, Eq, defmt::Format)]
pub enum NorError {
    /// Address or length not aligned to the program unit or sector.
    NotAligned,
    /// Access beyond the image.
    OutOfBounds,
    /// A program tried to set a bit that is 0 (needs an erase first).
    WouldSetBits {
        /// The offending address.
        address: u32,
    },
    /// The host file operation failed.
    Host,
}

impl NorFlashError for NorError {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            NorError::NotAligned => NorFlashErrorKind::NotAligned,
            NorError::OutOfBounds => NorFlashErrorKind::OutOfBounds,
            NorError::WouldSetBits { .. } | NorError::Host => NorFlashErrorKind::Other,
        }
    }
}

/// NOR flash backed by a host image file (see the module docs).
pub struct HostNor {
    file: File,
    capacity: u32,
    cache: &'static mut [u8; SECTOR],
    cached: Option<u32>,
}

impl HostNor {
    /// Opens the image at `path` (which must exist; its length, a multiple
    /// of [`SECTOR`], is the flash size). `cache` is the sector cache.
    pub fn open(
        path: &core::ffi::CStr,
        cache: &'static mut [u8; SECTOR],
    ) -> Result<Self, NorError> {
        let file = File::options()
            .read(true)
            .write(true)
            .open(path)
            .map_err(|_| NorError::Host)?;
        let len = file.metadata().map_err(|_| NorError::Host)?.len();
        let capacity = u32::try_from(len).map_err(|_| NorError::OutOfBounds)?;
        if capacity == 0 || !(capacity as usize).is_multiple_of(SECTOR) {
            return Err(NorError::NotAligned);
        }
        Ok(HostNor {
            file,
            capacity,
            cache,
            cached: None,
        })
    }

    fn check(&self, offset: u32, len: usize) -> Result<(), NorError> {
        let end = u64::from(offset) + len as u64;
        if end > u64::from(self.capacity) {
            return Err(NorError::OutOfBounds);
        }
        Ok(())
    }

    /// Makes `sector` (an index) the cached one.
    fn load(&mut self, sector: u32) -> Result<(), NorError> {
        if self.cached == Some(sector) {
            return Ok(());
        }
        self.cached = None;
        self.file
            .seek(SeekFrom::Start(u64::from(sector) * SECTOR as u64))
            .map_err(|_| NorError::Host)?;
        self.file
            .read_exact(&mut self.cache[..])
            .map_err(|_| NorError::Host)?;
        self.cached = Some(sector);
        Ok(())
    }

    fn host_write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        self.file
            .seek(SeekFrom::Start(u64::from(offset)))
            .map_err(|_| NorError::Host)?;
        self.file.write_all(bytes).map_err(|_| NorError::Host)
    }
}

impl ErrorType for HostNor {
    type Error = NorError;
}

impl ReadNorFlash for HostNor {
    const READ_SIZE: usize = 1;

    fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), NorError> {
        self.check(offset, bytes.len())?;
        let mut at = offset as usize;
        let mut done = 0;
        while done < bytes.len() {
            let sector = at / SECTOR;
            let within = at % SECTOR;
            let n = (SECTOR - within).min(bytes.len() - done);
            // `sector` < capacity / SECTOR, which fits a u32.
            self.load(sector as u32)?;
            bytes[done..done + n].copy_from_slice(&self.cache[within..within + n]);
            done += n;
            at += n;
        }
        Ok(())
    }

    fn capacity(&self) -> usize {
        self.capacity as usize
    }
}

impl NorFlash for HostNor {
    const WRITE_SIZE: usize = WORD;
    const ERASE_SIZE: usize = SECTOR;

    fn erase(&mut self, from: u32, to: u32) -> Result<(), NorError> {
        if !from.is_multiple_of(SECTOR as u32) || !to.is_multiple_of(SECTOR as u32) || to < from {
            return Err(NorError::NotAligned);
        }
        self.check(from, (to - from) as usize)?;
        // Erased low to high in 256-byte steps, so a power cut leaves a
        // sector part-erased from its start, as the store's recovery model
        // (and a real chip's erase, often) has it.
        const STEP: usize = 256;
        const BLANK: [u8; STEP] = [0xFF; STEP];
        let mut at = from;
        while at < to {
            if self.cached == Some(at / SECTOR as u32) {
                self.cached = None;
            }
            self.host_write(at, &BLANK)?;
            at += STEP as u32;
        }
        Ok(())
    }

    fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), NorError> {
        if !(offset as usize).is_multiple_of(WORD) || !bytes.len().is_multiple_of(WORD) {
            return Err(NorError::NotAligned);
        }
        self.check(offset, bytes.len())?;
        for (i, word) in bytes.chunks_exact(WORD).enumerate() {
            let at = offset + (i * WORD) as u32;
            let mut old = [0u8; WORD];
            self.read(at, &mut old)?;
            let mut new = [0u8; WORD];
            for k in 0..WORD {
                if word[k] & !old[k] != 0 {
                    return Err(NorError::WouldSetBits { address: at });
                }
                new[k] = old[k] & word[k];
            }
            if new == old {
                continue;
            }
            self.host_write(at, &new)?;
            // `read` above cached this word's sector.
            let within = at as usize % SECTOR;
            self.cache[within..within + WORD].copy_from_slice(&new);
        }
        Ok(())
    }
}

/// SPI NOR may program a word again to clear more bits (the store's
/// `remove` zeroes a record's CRC in place).
impl MultiwriteNorFlash for HostNor {}
