//! memkern firmware for a Cortex-M4F (QEMU `mps2-an386`).
//!
//! It exists to run memkern's memory core where a small device keeps a
//! user's memories: plaintext MemCubes in a power-loss-safe log on NOR
//! flash, BM25 + int8 retrieval, the fixed-budget scheduler and governance,
//! answering a host over a postcard + COBS protocol
//! (`memkern_core::protocol`). Channels (all semihosting):
//!
//! - stdin/stdout: protocol frames;
//! - stderr: panic and HardFault reports (exit codes 101 and 102);
//! - `flash.img` in the working directory: the NOR flash (must exist);
//! - `memkern.defmt`: defmt log frames.
//!
//! The semihosting argument `crash=panic` or `crash=hardfault` crashes on
//! purpose (the harness checks that crashes end QEMU with an error).
//! When stdin closes, the firmware exits with code 0.

#![no_std]
#![no_main]

mod clock;
mod fault;
mod flash;
mod link;
mod log;
mod memory;
mod ram;

use cortex_m as _;
use memkern_core::protocol::{
    self, MAX_REQUEST_FRAME, MAX_RESPONSE_FRAME, Refusal, Request, Response,
};
use static_cell::ConstStaticCell;

use crate::link::{Frame, Link, LinkError};
use crate::memory::{DeleteError, Memories, Tables};

static TABLES: ConstStaticCell<Tables> = ConstStaticCell::new(Tables::new());
static SECTOR_CACHE: ConstStaticCell<[u8; flash::SECTOR]> =
    ConstStaticCell::new([0; flash::SECTOR]);
static RX: ConstStaticCell<[u8; MAX_REQUEST_FRAME]> = ConstStaticCell::new([0; MAX_REQUEST_FRAME]);
static TX: ConstStaticCell<[u8; MAX_RESPONSE_FRAME]> =
    ConstStaticCell::new([0; MAX_RESPONSE_FRAME]);

/// Exit code when the flash image cannot be opened or recovered.
const FLASH_EXIT: i32 = 3;
/// Exit code when the host link fails.
const LINK_EXIT: i32 = 4;

#[cortex_m_rt::entry]
fn main() -> ! {
    log::init();
    if let Ok(args) = semihosting::experimental::env::args::<128>() {
        for arg in args.flatten() {
            fault::self_test(arg);
        }
    }
    defmt::info!(
        "memkern firmware: {} B static RAM of {} B",
        ram::static_bytes(),
        ram::total_bytes()
    );

    let nor = match flash::HostNor::open(c"flash.img", SECTOR_CACHE.take()) {
        Ok(nor) => nor,
        Err(e) => {
            semihosting::eprintln!("memkern firmware: cannot open flash.img: {e:?}");
            semihosting::process::exit(FLASH_EXIT)
        }
    };
    let mut memories = match Memories::open(nor, TABLES.take()) {
        Ok(m) => m,
        Err(e) => {
            semihosting::eprintln!("memkern firmware: flash store unusable: {e}");
            semihosting::process::exit(FLASH_EXIT)
        }
    };
    let mut link = match Link::open(RX.take()) {
        Ok(l) => l,
        Err(e) => {
            semihosting::eprintln!("memkern firmware: no host link: {e:?}");
            semihosting::process::exit(LINK_EXIT)
        }
    };
    let tx = TX.take();
    if let Some(p) = cortex_m::Peripherals::take() {
        clock::start(p.SYST);
    }
    let mut last_ticks = 0u64;
    loop {
        let frame = match link.next_frame() {
            Ok(f) => f,
            Err(LinkError::Closed) => {
                defmt::info!("host closed the link");
                semihosting::process::exit(0)
            }
            Err(e) => {
                semihosting::eprintln!("memkern firmware: link failed: {e:?}");
                semihosting::process::exit(LINK_EXIT)
            }
        };
        let started = clock::now();
        let encoded = match frame {
            Frame::Overlong => protocol::encode(&Response::Refused(Refusal::Malformed), tx),
            Frame::Data(bytes) => match protocol::decode::<Request<'_>>(bytes) {
                Ok(req) => protocol::encode(&handle(&mut memories, req, last_ticks), tx),
                Err(_) => protocol::encode(&Response::Refused(Refusal::Malformed), tx),
            },
        };
        last_ticks = clock::now().saturating_sub(started);
        let sent = match encoded {
            Ok(out) => link.send(out),
            // Every response fits MAX_RESPONSE_FRAME (a core test checks
            // the largest); refuse rather than fall silent if not.
            Err(_) => match protocol::encode(&Response::Refused(Refusal::Storage), tx) {
                Ok(out) => link.send(out),
                Err(_) => Err(LinkError::Io),
            },
        };
        if let Err(e) = sent {
            semihosting::eprintln!("memkern firmware: cannot answer: {e:?}");
            semihosting::process::exit(LINK_EXIT)
        }
    }
}

/// Carries out one request.
fn handle<'m, F>(memories: &'m mut Memories<F>, req: Request<'_>, last_ticks: u64) -> Response<'m>
where
    F: embedded_storage::nor_flash::NorFlash
        + embedded_storage::nor_flash::MultiwriteNorFlash
        + 'static,
{
    match req {
        Request::Add {
            user,
            text,
            public,
            at,
            vector,
        } => match memories.add(user, text, public, at, vector) {
            Ok(id) => {
                defmt::debug!("added {}", id);
                Response::Added { id }
            }
            Err(r) => Response::Refused(r),
        },
        Request::Search(q) => match memories.search(&q) {
            Ok((hits, scanned)) => Response::Hits { hits, scanned },
            Err(r) => Response::Refused(r),
        },
        Request::Plan {
            query,
            context_tokens,
            max_items,
        } => match memories.plan(&query, context_tokens, max_items) {
            Ok((items, tokens, relevance)) => Response::Plan {
                items,
                tokens,
                relevance,
            },
            Err(r) => Response::Refused(r),
        },
        Request::Get { user, id, now } => match memories.get(user, &id, now) {
            Ok(hit) => Response::Memory(hit),
            Err(DeleteError::NotFound) => Response::NotFound,
            Err(DeleteError::Denied(d)) => Response::Denied(d),
            Err(DeleteError::Refused(r)) => Response::Refused(r),
        },
        Request::Delete { user, id } => {
            // Expiry never blocks a delete, so the check needs no clock.
            match memories.delete(user, &id, memkern_core::time::Timestamp(0)) {
                Ok(()) => Response::Deleted,
                Err(DeleteError::NotFound) => Response::NotFound,
                Err(DeleteError::Denied(d)) => Response::Denied(d),
                Err(DeleteError::Refused(r)) => Response::Refused(r),
            }
        }
        Request::Stats => match memories.stats() {
            Ok(s) => Response::Stats(memkern_core::protocol::DeviceStats {
                last_request_ticks: last_ticks,
                tick_hz: clock::TICK_HZ,
                ..s
            }),
            Err(r) => Response::Refused(r),
        },
    }
}
