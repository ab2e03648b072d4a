//! # memkern-core
//!
//! The `no_std` heart of memkern: it owns the **MemCube** binary format, the
//! memory lifecycle, governance checks, the fixed-budget scheduler and a
//! power-loss-safe flash log store. It knows nothing of files, threads or
//! models, so the same code runs on a Cortex-M4 and on a Raspberry Pi.
//!
//! Features:
//! - *(none)*: everything works from borrowed byte slices and caller-provided,
//!   fixed-capacity buffers; no heap.
//! - `alloc`: owned cube types ([`cube::OwnedCube`]) and `Vec` encoding.
//! - `std`: host conveniences; implies `alloc`.
//! - `defmt`: `defmt::Format` on public data types for MCU logging.
//!
//! [`protocol`] is the framed command protocol the MCU firmware speaks.
//!
//! ```ignore
//! use memkern_core::cube::{self, CubeRef};
//! # let bytes = memkern_core::cube::example_plaintext_bytes();
//! let cube: CubeRef<'_> = cube::decode(&bytes).expect("valid cube");
//! assert_eq!(cube.meta.version, 1);
//! ```ignore
#![no_std]
#![deny(missing_docs)]
#![deny(clippy::unwrap_used, clippy::panic)]
// Tests may unwrap: a panic there is a failed test, not a crashed device.
#![cfg_attr(test, allow(clippy::unwrap_used, clippy::panic))]

#[cfg(feature = "alloc")]
extern crate alloc;
#[cfg(any(feature = "std", test))]
extern crate std;

pub mod cube;
pub mod distill;
pub mod governance;
pub mod heat;
pub mod ids;
pub mod lifecycle;
pub mod protocol;
pub mod scheduler;
pub mod search;
pub mod store;
pub mod time;
pub mod version;
