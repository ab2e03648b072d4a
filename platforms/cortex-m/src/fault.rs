//! Crash reporting: a panic or HardFault ends QEMU with a non-zero exit code
//! and a message on stderr, never a hang.
//!
//! It exists because the default HardFault handler loops forever, which in
//! CI is a silent timeout instead of a failure with a cause.

use cortex_m_rt::{ExceptionFrame, exception};

/// Exit code of a panic.
pub const PANIC_EXIT: i32 = 101;
/// Exit code of a HardFault.
pub const HARDFAULT_EXIT: i32 = 102;

#[panic_handler]
fn panic(info: &core::panic::PanicInfo<'_>) -> ! {
    cortex_m::interrupt::disable();
    semihosting::eprintln!("memkern firmware panic: {info}");
    semihosting::process::exit(PANIC_EXIT)
}

#[exception]
unsafe fn HardFault(frame: &ExceptionFrame) -> ! {
    semihosting::eprintln!(
        "memkern firmware HardFault: pc={:#010x} lr={:#010x} xpsr={:#010x}",
        frame.pc(),
        frame.lr(),
        frame.xpsr()
    );
    semihosting::process::exit(HARDFAULT_EXIT)
}

/// Deliberate crashes, selected by a semihosting argument, so the harness
/// can prove that both paths exit non-zero.
pub fn self_test(which: &str) {
    match which {
        "crash=panic" => panic!("self-test panic requested by the host"),
        // An undefined instruction: a UsageFault, escalated to HardFault
        // because the configurable faults are not enabled.
        "crash=hardfault" => cortex_m::asm::udf(),
        _ => {}
    }
}
