//! A 64-bit tick counter on SysTick, for timing requests.
//!
//! It exists to report how long a query takes on the device. QEMU's
//! `mps2-an386` clocks the core (and SysTick) at 25 MHz of *virtual* time;
//! run with `-icount shift=0` (one instruction per virtual nanosecond) the
//! ticks count instructions (40 per tick), independent of the host's load.

use core::sync::atomic::{AtomicU32, Ordering};

use cortex_m::peripheral::SYST;
use cortex_m::peripheral::syst::SystClkSource;
use cortex_m_rt::exception;

/// Core clock of the QEMU board.
pub const TICK_HZ: u32 = 25_000_000;
const RELOAD: u32 = 0x00FF_FFFF;

static WRAPS: AtomicU32 = AtomicU32::new(0);

/// Starts SysTick counting down from its maximum, wrapping with an
/// interrupt that counts the wraps.
pub fn start(mut syst: SYST) {
    syst.set_clock_source(SystClkSource::Core);
    syst.set_reload(RELOAD);
    syst.clear_current();
    syst.enable_interrupt();
    syst.enable_counter();
}

/// Ticks since [`start`].
pub fn now() -> u64 {
    loop {
        let before = WRAPS.load(Ordering::Acquire);
        let current = SYST::get_current();
        if WRAPS.load(Ordering::Acquire) == before {
            let elapsed = u64::from(RELOAD - current);
            return u64::from(before) * (u64::from(RELOAD) + 1) + elapsed;
        }
    }
}

#[exception]
fn SysTick() {
    WRAPS.fetch_add(1, Ordering::Release);
}
