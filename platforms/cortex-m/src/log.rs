//! `defmt` logging into a host file over semihosting.
//!
//! It exists because the firmware's stdout carries the binary protocol and
//! its stderr the human-readable fault reports: defmt's compact frames go to
//! a third channel, the file `memkern.defmt` in QEMU's working directory.
//! Decode it on the host with `defmt-print -e <firmware ELF> < memkern.defmt`
//! (crates.io `defmt-print`; the CI harness keeps the raw file instead of
//! compiling the decoder, see the README).

use core::cell::UnsafeCell;
use core::sync::atomic::{AtomicBool, Ordering};

use semihosting::fs::File;
use semihosting::io::Write;

/// The log file, opened once by [`init`] before anything logs.
struct Sink {
    encoder: UnsafeCell<defmt::Encoder>,
    file: UnsafeCell<Option<File>>,
    restore: UnsafeCell<critical_section::RestoreState>,
}

// SAFETY: every access happens between `acquire` and `release`, inside a
// critical section on this single-core MCU, with `TAKEN` refusing re-entry.
unsafe impl Sync for Sink {}

static SINK: Sink = Sink {
    encoder: UnsafeCell::new(defmt::Encoder::new()),
    file: UnsafeCell::new(None),
    restore: UnsafeCell::new(critical_section::RestoreState::invalid()),
};
static TAKEN: AtomicBool = AtomicBool::new(false);

/// Opens (truncates) the log file; logging before this is dropped.
pub fn init() {
    let file = File::create(c"memkern.defmt").ok();
    critical_section::with(|_| {
        // SAFETY: inside a critical section and not inside a log call
        // (`TAKEN` is false), so nothing else touches the file slot.
        if !TAKEN.load(Ordering::Relaxed) {
            unsafe { *SINK.file.get() = file };
        }
    });
}

fn emit(bytes: &[u8]) {
    // SAFETY: only called from the logger methods below, between acquire
    // and release (see `Sink`).
    if let Some(file) = unsafe { &mut *SINK.file.get() } {
        // A full disk on the host must not stop the firmware.
        let _ = file.write_all(bytes);
    }
}

#[defmt::global_logger]
struct Logger;

// SAFETY: `acquire`/`release` bracket each frame with a critical section and
// refuse nesting, as defmt requires.
unsafe impl defmt::Logger for Logger {
    fn acquire() {
        // SAFETY: released in `release`, which defmt always calls next.
        let restore = unsafe { critical_section::acquire() };
        if TAKEN.swap(true, Ordering::Acquire) {
            // A log call from inside the logger (e.g. a fault while
            // writing); drop it rather than corrupting the frame.
            // SAFETY: undoing the acquire just made.
            unsafe { critical_section::release(restore) };
            return;
        }
        // SAFETY: we hold the logger (TAKEN) inside a critical section.
        unsafe {
            *SINK.restore.get() = restore;
            (*SINK.encoder.get()).start_frame(emit);
        }
    }

    unsafe fn flush() {}

    unsafe fn release() {
        // SAFETY: defmt calls release after a successful acquire.
        unsafe {
            (*SINK.encoder.get()).end_frame(emit);
            let restore = *SINK.restore.get();
            TAKEN.store(false, Ordering::Release);
            critical_section::release(restore);
        }
    }

    unsafe fn write(bytes: &[u8]) {
        // SAFETY: between acquire and release.
        unsafe { (*SINK.encoder.get()).write(bytes, emit) };
    }
}

defmt::timestamp!("{=u32}", crate::ram::uptime_ticks());
