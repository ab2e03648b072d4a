//! RAM accounting: static size from the linker symbols, peak stack by stack
//! painting, and a line counter for log timestamps.
//!
//! It exists to report (and let the harness check) that the store and
//! retrieval fit the 64 KiB the firmware is linked for.

use core::sync::atomic::{AtomicU32, Ordering};

unsafe extern "C" {
    static mut __sdata: u32;
    static mut __ebss: u32;
    static mut _stack_end: u32;
    static mut _stack_start: u32;
}

/// The value `cortex-m-rt` (feature `paint-stack`) fills the stack with.
const PAINT: u32 = 0xCCCC_CCCC;

fn addr(p: *mut u32) -> u32 {
    p as u32
}

/// Bytes of `.data` + `.bss`.
pub fn static_bytes() -> u32 {
    addr(&raw mut __ebss) - addr(&raw mut __sdata)
}

/// Bytes of RAM the firmware is linked for (statics + stack region).
pub fn total_bytes() -> u32 {
    addr(&raw mut _stack_start) - addr(&raw mut __sdata)
}

/// Deepest stack use since boot: the stack grows down from `_stack_start`;
/// the lowest word no longer holding the paint marks the peak.
pub fn stack_peak() -> u32 {
    let bottom = addr(&raw mut _stack_end);
    let top = addr(&raw mut _stack_start);
    let mut at = bottom;
    while at < top {
        // SAFETY: `at` is word-aligned (both symbols are) and inside the
        // RAM between the end of .bss and the initial stack pointer.
        let word = unsafe { core::ptr::read_volatile(at as *const u32) };
        if word != PAINT {
            break;
        }
        at += 4;
    }
    top - at
}

static LINES: AtomicU32 = AtomicU32::new(0);

/// A counter bumped per log line; orders defmt lines.
pub fn uptime_ticks() -> u32 {
    LINES.fetch_add(1, Ordering::Relaxed)
}
