//! The host ↔ microcontroller command protocol: postcard messages in COBS
//! frames.
//!
//! It exists so a device that keeps a user's memories in flash (the
//! Cortex-M firmware) can be driven by whatever runs the model — a phone, a
//! hub, the test harness — over any byte pipe (UART, USB CDC, semihosting
//! stdio). Both ends link this module, so they cannot disagree on a field.
//!
//! # Framing
//!
//! Each message is serialised with postcard, COBS-encoded and terminated by
//! one `0x00` byte ([`encode`]); the receiver collects bytes up to a zero
//! and decodes in place ([`decode`]), borrowing strings and vectors from its
//! receive buffer — no heap on either side. A frame that does not decode is
//! answered with [`Response::Refused`]`(`[`Refusal::Malformed`]`)` and the
//! link resynchronises at the next zero.
//!
//! # Exchange
//!
//! Strictly request/response: the host sends one [`Request`], the device
//! answers with exactly one [`Response`]. Memory ids are assigned by the
//! device. Every request that reads or changes memories names the user it
//! acts for; the device enforces [`crate::governance`] on each.

use heapless::Vec;
use serde::{Deserialize, Serialize};

use crate::governance::DenyReason;
use crate::ids::{CubeId, Fingerprint, UserId};
use crate::time::Timestamp;

/// Version of this protocol, reported in [`DeviceStats::protocol`]; bumped
/// on any incompatible change to the messages.
pub const PROTOCOL_VERSION: u16 = 1;

/// Longest memory text (UTF-8 bytes) a device accepts: a short fact or
/// dialogue turn, sized so a cube with a 384-dimension vector fits one
/// 1 KiB flash record.
pub const MAX_TEXT: usize = 320;

/// Longest query text (UTF-8 bytes).
pub const MAX_QUERY: usize = 256;

/// Most dimensions of an int8 vector (all-MiniLM-L6-v2 has 384).
pub const MAX_DIM: usize = 384;

/// Most hits in a search answer or items in a plan.
pub const MAX_HITS: usize = 8;

/// Receive buffer a device needs for any request frame (an `Add` with the
/// longest text and vector, plus COBS overhead and the terminator).
pub const MAX_REQUEST_FRAME: usize = 1024;

/// Receive buffer a host needs for any response frame ([`MAX_HITS`] hits of
/// [`MAX_TEXT`] bytes each, plus overhead).
pub const MAX_RESPONSE_FRAME: usize = 3072;

/// An int8 embedding as sent over the link: `values[i] as i8 · scale`
/// approximates the float vector.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Vector<'a> {
    /// Which embedding model made it; vectors of different embedders are
    /// never compared.
    pub embedder: Fingerprint,
    /// Dequantisation scale.
    pub scale: f32,
    /// Components, each byte an `i8`.
    #[serde(borrow)]
    pub values: &'a [u8],
}

/// What a search or plan looks for, and for whom.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Query<'a> {
    /// The user asking; only memories they may read are considered.
    pub user: UserId,
    /// Keyword query (scored with BM25).
    pub text: &'a str,
    /// Optional query embedding from the host (an MCU does not run the
    /// embedder); adds cosine similarity to the score.
    #[serde(borrow)]
    pub vector: Option<Vector<'a>>,
    /// Hits wanted, at most [`MAX_HITS`].
    pub k: u8,
    /// The host's clock, for expiry checks.
    pub now: Timestamp,
}

/// A command from the host.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Request<'a> {
    /// Store a plaintext memory; answered with [`Response::Added`] once it
    /// is durable on flash (acknowledged means it survives a power cut).
    Add {
        /// Owner.
        user: UserId,
        /// The memory, at most [`MAX_TEXT`] bytes.
        text: &'a str,
        /// Readable by every user (otherwise private to the owner).
        public: bool,
        /// When it was said / recorded.
        at: Timestamp,
        /// Its embedding, if the host has one.
        #[serde(borrow)]
        vector: Option<Vector<'a>>,
    },
    /// The best memories for a query: [`Response::Hits`].
    Search(#[serde(borrow)] Query<'a>),
    /// The memories to put into a prompt within a context budget, chosen by
    /// [`crate::scheduler::plan`]: [`Response::Plan`].
    Plan {
        /// What to look for (its `k` bounds the candidates).
        #[serde(borrow)]
        query: Query<'a>,
        /// Context tokens available for memories.
        context_tokens: u32,
        /// Most memories in the prompt.
        max_items: u32,
    },
    /// One memory by id, if the user may read it: [`Response::Memory`].
    Get {
        /// Who asks.
        user: UserId,
        /// Which memory.
        id: CubeId,
        /// The host's clock, for expiry checks.
        now: Timestamp,
    },
    /// Hard-delete a memory; only its owner may.
    Delete {
        /// Who asks.
        user: UserId,
        /// Which memory.
        id: CubeId,
    },
    /// Device and store statistics: [`Response::Stats`].
    Stats,
}

/// One retrieved memory.
#[derive(Clone, Copy, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hit<'a> {
    /// The memory.
    pub id: CubeId,
    /// Its owner.
    pub owner: UserId,
    /// Fused score (BM25 + weighted cosine); higher is better.
    pub score: f32,
    /// Estimated context tokens of the text (the scheduler's cost).
    pub tokens: u32,
    /// The text.
    pub text: &'a str,
}

/// Why a request was not carried out (other than governance).
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Refusal {
    /// The frame did not decode as a [`Request`].
    Malformed,
    /// Empty text or query.
    EmptyText,
    /// Text longer than the device accepts.
    TextTooLong {
        /// Bytes received.
        len: u32,
        /// Limit.
        max: u32,
    },
    /// A vector with too many dimensions, or of another dimension than the
    /// device's stored vectors.
    BadVector {
        /// Dimensions received.
        dim: u32,
        /// Dimensions allowed.
        max: u32,
    },
    /// `k` or `max_items` is zero or above [`MAX_HITS`].
    BadCount,
    /// The flash holds no room for another memory; delete some.
    Full,
    /// The flash failed (the operation may not have taken effect).
    Storage,
}

/// Store and device figures, for capacity planning and the HIL report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DeviceStats {
    /// [`PROTOCOL_VERSION`] of the device.
    pub protocol: u16,
    /// Live memories.
    pub memories: u32,
    /// Flash bytes the store manages.
    pub flash_capacity: u32,
    /// Flash bytes held by records (live, superseded, removed, torn).
    pub flash_used: u32,
    /// Flash bytes still unwritten.
    pub flash_free: u32,
    /// Records cut short by power loss that recovery skipped.
    pub torn_records: u32,
    /// Pages recovery found half-erased or dirty at this boot.
    pub pages_repaired: u32,
    /// Whether this boot found an interrupted compaction.
    pub compaction_interrupted: bool,
    /// Sector erases since boot.
    pub erases: u32,
    /// RAM of the firmware image (`.data` + `.bss`), bytes.
    pub ram_static: u32,
    /// Deepest stack use since boot, bytes (stack painting).
    pub stack_peak: u32,
    /// RAM the firmware is linked for, bytes.
    pub ram_total: u32,
    /// Core clock ticks (SysTick) the previous request took, from frame
    /// received to response encoded; under QEMU with `-icount shift=0`
    /// one tick is [`DeviceStats::tick_hz`]⁻¹ s of virtual time, i.e. a
    /// fixed number of instructions.
    pub last_request_ticks: u64,
    /// SysTick frequency (0 when the device does not measure).
    pub tick_hz: u32,
}

/// The device's answer to one [`Request`].
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Response<'a> {
    /// The memory is durable under this id.
    Added {
        /// Its id.
        id: CubeId,
    },
    /// Search results, best first.
    Hits {
        /// The hits.
        #[serde(borrow)]
        hits: Vec<Hit<'a>, MAX_HITS>,
        /// Memories scored (readable by the user).
        scanned: u32,
    },
    /// The scheduler's choice for the prompt, in prompt order.
    Plan {
        /// Memories to put into the prompt as text.
        #[serde(borrow)]
        items: Vec<Hit<'a>, MAX_HITS>,
        /// Context tokens they use (≤ the budget).
        tokens: u32,
        /// Sum of their relevance (Q16.16).
        relevance: u64,
    },
    /// The memory asked for by [`Request::Get`] (score 0).
    Memory(#[serde(borrow)] Hit<'a>),
    /// The memory is gone (durably).
    Deleted,
    /// No memory with that id.
    NotFound,
    /// Governance refused the operation.
    Denied(DenyReason),
    /// Statistics.
    Stats(DeviceStats),
    /// The request was not carried out.
    Refused(Refusal),
}

/// Framing errors.
#[derive(Clone, Copy, Debug, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum FrameError {
    /// The message does not fit the output buffer.
    #[error("frame does not fit the buffer")]
    TooLarge,
    /// The bytes are not a valid COBS frame of this message type.
    #[error("frame does not decode")]
    Malformed,
}

/// Serialises `msg` into `buf` as one COBS frame including its `0x00`
/// terminator, and returns that part of `buf`.
pub fn encode<'b, T: Serialize>(msg: &T, buf: &'b mut [u8]) -> Result<&'b mut [u8], FrameError> {
    postcard::to_slice_cobs(msg, buf).map_err(|_| FrameError::TooLarge)
}

/// Decodes one frame in place (`frame` may include the terminator); the
/// message borrows from `frame`.
pub fn decode<'a, T: Deserialize<'a>>(frame: &'a mut [u8]) -> Result<T, FrameError> {
    postcard::from_bytes_cobs(frame).map_err(|_| FrameError::Malformed)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_round_trips_through_a_frame() {
        let values = [1u8, 255, 7];
        let req = Request::Add {
            user: UserId(7),
            text: "My dog is called Biscuit",
            public: false,
            at: Timestamp(1_700_000_000_000),
            vector: Some(Vector {
                embedder: Fingerprint([3; 16]),
                scale: 0.01,
                values: &values,
            }),
        };
        let mut buf = [0u8; MAX_REQUEST_FRAME];
        let frame = encode(&req, &mut buf).unwrap();
        assert_eq!(frame.last(), Some(&0));
        assert!(!frame[..frame.len() - 1].contains(&0));
        let back: Request<'_> = decode(frame).unwrap();
        assert_eq!(back, req);
    }

    #[test]
    fn largest_messages_fit_their_buffers() {
        let text = core::str::from_utf8(&[b'x'; MAX_TEXT]).unwrap();
        let values = [0x80u8; MAX_DIM];
        let vector = Some(Vector {
            embedder: Fingerprint([0xff; 16]),
            scale: f32::MAX,
            values: &values,
        });
        let add = Request::Add {
            user: UserId(u64::MAX),
            text,
            public: true,
            at: Timestamp(i64::MIN),
            vector,
        };
        let mut buf = [0u8; MAX_REQUEST_FRAME];
        encode(&add, &mut buf).unwrap();
        let hit = Hit {
            id: CubeId([0xff; 16]),
            owner: UserId(u64::MAX),
            score: f32::MAX,
            tokens: u32::MAX,
            text,
        };
        let mut hits = Vec::new();
        for _ in 0..MAX_HITS {
            hits.push(hit).unwrap();
        }
        let resp = Response::Plan {
            items: hits,
            tokens: u32::MAX,
            relevance: u64::MAX,
        };
        let mut out = [0u8; MAX_RESPONSE_FRAME];
        encode(&resp, &mut out).unwrap();
    }

    #[test]
    fn garbage_is_an_error_not_a_panic() {
        let mut junk = [0x13u8, 0x44, 0x01, 0x00];
        assert_eq!(decode::<Request<'_>>(&mut junk), Err(FrameError::Malformed));
        let mut empty = [0u8; 0];
        assert!(decode::<Response<'_>>(&mut empty).is_err());
    }
}
