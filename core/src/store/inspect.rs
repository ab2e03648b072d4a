//! A read-only walker of the on-flash log, for the recovery report and
//! [`super::StoreStats`].
//!
//! It exists because sequential-storage exposes no statistics and repairs
//! lazily: to tell the caller what recovery found (torn records, removed
//! records, half-erased sectors) and how full the log is, we read its
//! layout ourselves. The layout is sequential-storage's, which that crate
//! keeps stable within a major version (8.x); it is documented in the
//! parent module and mirrored here rule by rule. The power-cut tests check,
//! after every cut, that this walker counts exactly the records the engine's
//! own iterator returns, so a format drift fails loudly.
//!
//! The walker never writes. The repairs [`super::FlashStore`] does itself
//! (see `settle` there) are decided with [`page_state`] and [`is_blank`].

use core::ops::Range;

use embedded_storage_async::nor_flash::NorFlash;

/// Bytes of a record header on flash, before padding to the word size.
const HEADER_LEN: usize = 8;
/// A page marker counts as written when this many of its bits are 0
/// (sequential-storage tolerates a few flipped bits in a marker).
const MARKER_ZERO_BITS: u32 = 4;
/// Largest read unit the walker supports (sequential-storage's limit too).
pub(crate) const MAX_WORD: usize = 32;
/// Stack buffer for streaming record data through the CRC.
const CHUNK: usize = 64;

/// The engine's word: the larger of the program and read units.
pub(crate) const fn word_size<S: NorFlash>() -> usize {
    if S::WRITE_SIZE > S::READ_SIZE {
        S::WRITE_SIZE
    } else {
        S::READ_SIZE
    }
}

/// Bytes a record header occupies (header padded to the word).
pub(crate) const fn header_span<S: NorFlash>() -> usize {
    HEADER_LEN.next_multiple_of(word_size::<S>())
}

/// Data bytes of one page: the page minus its start and end marker words.
pub(crate) const fn page_data_len<S: NorFlash>() -> usize {
    S::ERASE_SIZE.saturating_sub(2 * word_size::<S>())
}

/// What a page's two marker words say about it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum PageState {
    /// Both markers erased: the page holds nothing.
    Open,
    /// Start marker written: the page is being filled.
    Partial,
    /// Both markers written: the page is full.
    Closed,
    /// Only the end marker written: an erase was cut short after it
    /// cleared the start marker. Holds nothing the engine will read.
    HalfErased,
}

/// Counts for one walk over the log.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub(crate) struct Scan {
    pub(crate) pages_open: u16,
    pub(crate) pages_partial: u16,
    pub(crate) pages_closed: u16,
    pub(crate) pages_half_erased: u16,
    /// Open pages that are not entirely `0xFF` (an erase or a marker
    /// program cut short).
    pub(crate) pages_dirty_open: u16,
    pub(crate) records_valid: u32,
    pub(crate) records_removed: u32,
    pub(crate) records_torn: u32,
    pub(crate) valid_bytes: u32,
    pub(crate) garbage_bytes: u32,
    /// Unwritten bytes of open pages and partial-page tails.
    pub(crate) unwritten_bytes: u32,
}

/// Walks every page of `range` and counts what it holds.
pub(crate) async fn scan<S: NorFlash>(flash: &mut S, range: Range<u32>) -> Result<Scan, S::Error> {
    let erase = S::ERASE_SIZE as u32;
    let pages = range.end.saturating_sub(range.start) / erase.max(1);
    let mut out = Scan::default();
    for index in 0..pages {
        let page = range.start + index * erase;
        let state = page_state(flash, page).await?;
        match state {
            PageState::Open => {
                out.pages_open = out.pages_open.saturating_add(1);
                let blank = is_blank(flash, page).await?;
                if !blank {
                    out.pages_dirty_open = out.pages_dirty_open.saturating_add(1);
                }
                out.unwritten_bytes = out
                    .unwritten_bytes
                    .saturating_add(page_data_len::<S>() as u32);
            }
            PageState::HalfErased => {
                out.pages_half_erased = out.pages_half_erased.saturating_add(1);
            }
            PageState::Partial | PageState::Closed => {
                if state == PageState::Partial {
                    out.pages_partial = out.pages_partial.saturating_add(1);
                } else {
                    out.pages_closed = out.pages_closed.saturating_add(1);
                }
                let tail = walk_records(flash, page, &mut out).await?;
                if state == PageState::Partial {
                    out.unwritten_bytes = out.unwritten_bytes.saturating_add(tail);
                }
            }
        }
    }
    Ok(out)
}

/// Reads one marker (READ_SIZE bytes) and says whether it counts as written.
async fn marker_written<S: NorFlash>(flash: &mut S, address: u32) -> Result<bool, S::Error> {
    let mut buf = [0u8; MAX_WORD];
    let n = S::READ_SIZE.clamp(1, MAX_WORD);
    flash.read(address, &mut buf[..n]).await?;
    let zeros: u32 = buf[..n].iter().map(|b| b.count_zeros()).sum();
    Ok(zeros >= MARKER_ZERO_BITS)
}

/// The state of the page starting at `page`, decoded as the engine does.
pub(crate) async fn page_state<S: NorFlash>(
    flash: &mut S,
    page: u32,
) -> Result<PageState, S::Error> {
    let start = marker_written(flash, page).await?;
    let end_at = page + S::ERASE_SIZE.saturating_sub(S::READ_SIZE.clamp(1, MAX_WORD)) as u32;
    let end = marker_written(flash, end_at).await?;
    Ok(match (start, end) {
        (false, false) => PageState::Open,
        (true, false) => PageState::Partial,
        (true, true) => PageState::Closed,
        (false, true) => PageState::HalfErased,
    })
}

/// Whether the whole page reads `0xFF`.
pub(crate) async fn is_blank<S: NorFlash>(flash: &mut S, page: u32) -> Result<bool, S::Error> {
    let read = S::READ_SIZE.clamp(1, MAX_WORD);
    let chunk = (CHUNK / read) * read;
    let mut buf = [0u8; CHUNK];
    let mut off = 0usize;
    while off < S::ERASE_SIZE {
        let n = chunk.min(S::ERASE_SIZE - off);
        flash.read(page + off as u32, &mut buf[..n]).await?;
        if buf[..n].iter().any(|&b| b != 0xFF) {
            return Ok(false);
        }
        off += n;
    }
    Ok(true)
}

/// Walks the records of one partial or closed page, adding to `out`.
/// Returns the unwritten bytes after the last record.
///
/// Mirrors sequential-storage's `ItemHeaderIter::traverse` and
/// `ItemHeader::read_item`: an all-`0xFF` header ends the page; a header
/// whose length CRC fails, or whose length runs past the page, is skipped
/// one word at a time; a record with data CRC 0 was removed; otherwise the
/// data CRC decides valid or torn.
async fn walk_records<S: NorFlash>(
    flash: &mut S,
    page: u32,
    out: &mut Scan,
) -> Result<u32, S::Error> {
    let word = word_size::<S>() as u64;
    let span = header_span::<S>();
    let start = u64::from(page) + word;
    let end = u64::from(page) + S::ERASE_SIZE as u64 - word;
    let mut addr = start;
    let mut in_torn_run = false;
    let mut header = [0u8; MAX_WORD];
    loop {
        if addr + span as u64 > end {
            return Ok(end.saturating_sub(addr) as u32);
        }
        let h = &mut header[..span];
        flash.read(addr as u32, h).await?;
        if h.iter().all(|&b| b == 0xFF) {
            return Ok((end - addr) as u32);
        }
        let len = u16::from_le_bytes([h[4], h[5]]);
        let len_crc = u16::from_le_bytes([h[6], h[7]]);
        let data_crc = u32::from_le_bytes([h[0], h[1], h[2], h[3]]);
        let data_at = addr + span as u64;
        let next = data_at + u64::from(len).next_multiple_of(word);
        if crc16(&[h[4], h[5]]) != len_crc || next > end {
            // Unreadable header: the engine steps over it word by word.
            if !in_torn_run {
                out.records_torn = out.records_torn.saturating_add(1);
                in_torn_run = true;
            }
            out.garbage_bytes = out.garbage_bytes.saturating_add(word as u32);
            addr += word;
            continue;
        }
        in_torn_run = false;
        let size = (next - addr) as u32;
        if data_crc == 0 {
            out.records_removed = out.records_removed.saturating_add(1);
            out.garbage_bytes = out.garbage_bytes.saturating_add(size);
        } else if data_crc_of(flash, data_at as u32, usize::from(len)).await? == data_crc {
            out.records_valid = out.records_valid.saturating_add(1);
            out.valid_bytes = out.valid_bytes.saturating_add(size);
        } else {
            out.records_torn = out.records_torn.saturating_add(1);
            out.garbage_bytes = out.garbage_bytes.saturating_add(size);
        }
        addr = next;
    }
}

/// The engine's CRC of `len` data bytes at `at`, streamed through a small
/// buffer (reads cover the word padding, as the engine's do).
async fn data_crc_of<S: NorFlash>(flash: &mut S, at: u32, len: usize) -> Result<u32, S::Error> {
    let word = word_size::<S>();
    let chunk = (CHUNK / word) * word;
    let mut buf = [0u8; CHUNK];
    let mut to_read = len.next_multiple_of(word);
    let mut to_hash = len;
    let mut addr = at;
    let mut crc = CRC32_INIT;
    while to_read > 0 {
        let n = chunk.min(to_read);
        flash.read(addr, &mut buf[..n]).await?;
        let take = n.min(to_hash);
        crc = crc32_update(crc, &buf[..take]);
        to_hash -= take;
        to_read -= n;
        addr += n as u32;
    }
    Ok(crc32_finish(crc))
}

/// sequential-storage's header length CRC: CRC-16F/4.2 (poly 0x1a2e,
/// reflected), never `0xFFFF` so an erased field can never match.
fn crc16(data: &[u8]) -> u16 {
    let mut crc: u16 = 0xFFFF;
    for &byte in data {
        crc ^= u16::from(byte);
        for _ in 0..8 {
            crc = if crc & 1 == 1 {
                (crc >> 1) ^ 0x1A2E
            } else {
                crc >> 1
            };
        }
    }
    crc ^= 0xFFFF;
    if crc == 0xFFFF { 0xFFFE } else { crc }
}

/// Initial value of sequential-storage's data CRC (CRC-32C with a
/// non-standard seed chosen to be resistant to all-ones data).
const CRC32_INIT: u32 = 0xEEEE_EEEE;

fn crc32_update(mut crc: u32, data: &[u8]) -> u32 {
    for &byte in data {
        crc ^= u32::from(byte);
        for _ in 0..8 {
            let low = crc & 1 == 1;
            crc >>= 1;
            if low {
                crc ^= 0x82F6_3B78;
            }
        }
    }
    crc
}

/// Final step: never 0 (0 marks a removed record), and a first stored byte
/// that is neither 0x00 nor 0xFF, so a half-written CRC cannot look valid.
fn crc32_finish(crc: u32) -> u32 {
    let value = !crc;
    let low = value.to_le_bytes()[0];
    if value == 0 {
        1
    } else if low == 0 || low == 0xFF {
        value ^ 1
    } else {
        value
    }
}
