//! Flash adapters between a driver and the log engine.
//!
//! - [`BlockingFlash`] lets a blocking `embedded-storage` driver (what most
//!   MCU HALs and the Linux platform offer) be used where the engine needs
//!   the `embedded-storage-async` traits.
//! - `Guard` sits between any flash and the engine: it counts erases (for
//!   [`super::StoreStats`]), reads back every program, so a program that
//!   did not stick is reported as an error rather than acknowledged, and
//!   shows the engine a program unit of at least 8 bytes (see
//!   [`MIN_PROGRAM_UNIT`]).

use embedded_storage::nor_flash as blocking;
use embedded_storage_async::nor_flash::{
    ErrorType, MultiwriteNorFlash, NorFlash, NorFlashError, NorFlashErrorKind, ReadNorFlash,
};

/// Presents a blocking `embedded_storage::nor_flash::NorFlash` driver as an
/// async `embedded_storage_async` one.
///
/// It exists because the store's engine (sequential-storage) is async while
/// firmware main loops and the Linux host call the store synchronously: each
/// async method simply runs the blocking call and is ready on first poll, so
/// the store's internal `block_on` never spins.
#[derive(Debug)]
pub struct BlockingFlash<F> {
    inner: F,
}

impl<F> BlockingFlash<F> {
    /// Wraps a blocking driver. Pass `&mut driver` to keep ownership of it.
    pub const fn new(inner: F) -> Self {
        Self { inner }
    }

    /// Gives the driver back.
    pub fn into_inner(self) -> F {
        self.inner
    }

    /// Shared access to the driver (e.g. to read a simulator's counters).
    pub fn inner(&self) -> &F {
        &self.inner
    }

    /// Exclusive access to the driver. Writing to the store's range through
    /// it bypasses every guarantee of the store.
    pub fn inner_mut(&mut self) -> &mut F {
        &mut self.inner
    }
}

impl<F: ErrorType> ErrorType for BlockingFlash<F> {
    type Error = F::Error;
}

impl<F: blocking::ReadNorFlash> ReadNorFlash for BlockingFlash<F> {
    const READ_SIZE: usize = F::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        blocking::ReadNorFlash::read(&mut self.inner, offset, bytes)
    }

    fn capacity(&self) -> usize {
        blocking::ReadNorFlash::capacity(&self.inner)
    }
}

impl<F: blocking::NorFlash> NorFlash for BlockingFlash<F> {
    const WRITE_SIZE: usize = F::WRITE_SIZE;
    const ERASE_SIZE: usize = F::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        blocking::NorFlash::erase(&mut self.inner, from, to)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        blocking::NorFlash::write(&mut self.inner, offset, bytes)
    }
}

impl<F: blocking::MultiwriteNorFlash> MultiwriteNorFlash for BlockingFlash<F> {}

/// Largest read the program verification does at once (stack buffer).
const VERIFY_CHUNK: usize = 32;

/// Smallest program unit the engine is shown: one record header.
///
/// The engine writes a record's 8-byte header, then its data. A header cut
/// short is stepped over one program unit at a time, and the next record is
/// written at the first unit that reads erased. With units smaller than the
/// header that unit can lie *inside* the torn header, so the next record
/// completes its missing bytes; if they happen to form a valid length (1 in
/// 256 for byte-programmable flash, 1 in 65 536 for 4-byte words, seen in
/// our power-cut soak) every reader then skips the new, acknowledged record
/// as part of the torn one. With units of at least 8 bytes a header is one
/// unit and a torn header's unit is never written again.
pub(crate) const MIN_PROGRAM_UNIT: usize = 8;

/// The program unit shown to the engine: the driver's, raised to
/// [`MIN_PROGRAM_UNIT`]. Programs of whole engine units are whole driver
/// units as long as the driver's unit divides 8, which
/// [`super::FlashStore::open_with`] checks.
pub(crate) const fn engine_write_size(driver: usize) -> usize {
    if driver < MIN_PROGRAM_UNIT {
        MIN_PROGRAM_UNIT
    } else {
        driver
    }
}

/// Error of a guarded flash: the driver's own error, or a program whose
/// read-back differs from what was written.
#[derive(Debug)]
pub(crate) enum GuardError<E> {
    /// The driver failed.
    Flash(E),
    /// Read-back after a program differed at `address`.
    Verify { address: u32 },
}

impl<E: NorFlashError> NorFlashError for GuardError<E> {
    fn kind(&self) -> NorFlashErrorKind {
        match self {
            GuardError::Flash(e) => e.kind(),
            GuardError::Verify { .. } => NorFlashErrorKind::Other,
        }
    }
}

/// The flash as the engine sees it: counts erases and verifies programs.
pub(crate) struct Guard<S> {
    pub(crate) inner: S,
    /// Sectors whose erase was started since the store was opened.
    pub(crate) erased_sectors: u32,
}

impl<S> Guard<S> {
    pub(crate) const fn new(inner: S) -> Self {
        Self {
            inner,
            erased_sectors: 0,
        }
    }
}

impl<S: ErrorType> ErrorType for Guard<S> {
    type Error = GuardError<S::Error>;
}

impl<S: ReadNorFlash> ReadNorFlash for Guard<S> {
    const READ_SIZE: usize = S::READ_SIZE;

    async fn read(&mut self, offset: u32, bytes: &mut [u8]) -> Result<(), Self::Error> {
        self.inner
            .read(offset, bytes)
            .await
            .map_err(GuardError::Flash)
    }

    fn capacity(&self) -> usize {
        self.inner.capacity()
    }
}

impl<S: NorFlash> NorFlash for Guard<S> {
    const WRITE_SIZE: usize = engine_write_size(S::WRITE_SIZE);
    const ERASE_SIZE: usize = S::ERASE_SIZE;

    async fn erase(&mut self, from: u32, to: u32) -> Result<(), Self::Error> {
        let sectors = to.saturating_sub(from) / (S::ERASE_SIZE.max(1) as u32);
        // Counted before the call: a started erase wears the sector even if
        // it fails or is cut short.
        self.erased_sectors = self.erased_sectors.saturating_add(sectors);
        self.inner.erase(from, to).await.map_err(GuardError::Flash)
    }

    async fn write(&mut self, offset: u32, bytes: &[u8]) -> Result<(), Self::Error> {
        self.inner
            .write(offset, bytes)
            .await
            .map_err(GuardError::Flash)?;
        self.verify(offset, bytes).await
    }
}

impl<S: MultiwriteNorFlash> MultiwriteNorFlash for Guard<S> {}

impl<S: NorFlash> Guard<S> {
    /// Reads back `bytes` at `offset`, in READ_SIZE-aligned chunks.
    ///
    /// On NOR a program that reports success can still leave bits set (worn
    /// cells, or a sector left dirty by an erase that power cut short). The
    /// engine never reads a record back after writing it, so without this
    /// check such a record would be acknowledged and later found torn.
    async fn verify(&mut self, offset: u32, bytes: &[u8]) -> Result<(), GuardError<S::Error>> {
        let read = S::READ_SIZE.max(1);
        let chunk = (VERIFY_CHUNK / read) * read;
        if chunk == 0 || bytes.is_empty() {
            // A read unit above 32 bytes is rejected when the store opens;
            // nothing to compare for an empty program.
            return Ok(());
        }
        let start = offset as usize;
        let end = start + bytes.len();
        let mut at = start - start % read;
        let end_aligned = end.div_ceil(read) * read;
        let mut buf = [0u8; VERIFY_CHUNK];
        while at < end_aligned {
            let n = chunk.min(end_aligned - at);
            let window = &mut buf[..n];
            self.inner
                .read(at as u32, window)
                .await
                .map_err(GuardError::Flash)?;
            for (i, got) in window.iter().enumerate() {
                let addr = at + i;
                if let Some(want) = addr.checked_sub(start).and_then(|k| bytes.get(k))
                    && got != want
                {
                    return Err(GuardError::Verify {
                        address: addr as u32,
                    });
                }
            }
            at += n;
        }
        Ok(())
    }
}
