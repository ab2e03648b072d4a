//! [`SharedStore`]: one store shared by interrupt handlers and the main loop.

use core::cell::RefCell;

use critical_section::Mutex;

use super::StoreError;

/// A store (or anything else) behind a `critical_section::Mutex`, so an
/// interrupt handler and the main loop can both use it.
///
/// It exists because the flash and the log's position in it are shared
/// state: two contexts appending at once would interleave records. Every
/// [`SharedStore::with`] runs inside one critical section, so operations
/// never interleave. The cost: interrupts stay masked for the whole flash
/// operation (a `put` that triggers a page erase can take milliseconds).
/// On MCUs that stall code fetch while their internal flash programs, that
/// latency exists anyway; with external flash, prefer handing work to the
/// main loop from the interrupt instead of calling `with` there.
///
/// It can live in a `static`: create it empty with [`SharedStore::new`] and
/// [`SharedStore::try_install`] the opened store at start-up.
pub struct SharedStore<T> {
    slot: Mutex<RefCell<Option<T>>>,
}

impl<T> SharedStore<T> {
    /// An empty slot (usable in a `static`).
    pub const fn new() -> Self {
        Self {
            slot: Mutex::new(RefCell::new(None)),
        }
    }

    /// A slot that already holds `store`.
    pub const fn with_store(store: T) -> Self {
        Self {
            slot: Mutex::new(RefCell::new(Some(store))),
        }
    }

    /// Puts `store` in the slot. Gives it back as `Err` if the slot is
    /// occupied or in use (called from inside [`Self::with`]).
    pub fn try_install(&self, store: T) -> Result<(), T> {
        critical_section::with(|cs| match self.slot.borrow(cs).try_borrow_mut() {
            Ok(mut slot) if slot.is_none() => {
                *slot = Some(store);
                Ok(())
            }
            _ => Err(store),
        })
    }

    /// Takes the store out (e.g. to shut down or to reformat). `None` if the
    /// slot is empty or in use.
    pub fn take(&self) -> Option<T> {
        critical_section::with(|cs| {
            self.slot
                .borrow(cs)
                .try_borrow_mut()
                .ok()
                .and_then(|mut slot| slot.take())
        })
    }

    /// Runs `f` on the store inside a critical section.
    ///
    /// Fails with [`StoreError::Busy`] if no store is installed or if called
    /// from inside another `with` on the same slot (which would otherwise
    /// alias the store mutably).
    pub fn with<R>(&self, f: impl FnOnce(&mut T) -> R) -> Result<R, StoreError> {
        critical_section::with(|cs| {
            let mut slot = self
                .slot
                .borrow(cs)
                .try_borrow_mut()
                .map_err(|_| StoreError::Busy)?;
            let store = slot.as_mut().ok_or(StoreError::Busy)?;
            Ok(f(store))
        })
    }
}

impl<T> Default for SharedStore<T> {
    fn default() -> Self {
        Self::new()
    }
}
