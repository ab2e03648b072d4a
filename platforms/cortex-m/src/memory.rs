//! The firmware's memory service: plaintext MemCubes in the flash log store,
//! BM25 + int8 retrieval streamed from flash, the fixed-budget scheduler and
//! governance — everything `memkern-core` offers an MCU, with no heap.
//!
//! It exists to answer the protocol's requests. Design, chosen for a 64 KiB
//! RAM budget with 10 000 memories:
//!
//! - **Store**: each memory is one encoded plaintext cube (text + optional
//!   int8 vector) under its id in the power-loss-safe `FlashStore`.
//! - **Index**: no inverted lists in RAM (10 000 memories' postings do not
//!   fit). BM25 needs per-term document frequencies, kept in a hashed
//!   16-bit table ([`TermStats`], 8 KiB) updated on add/delete and rebuilt
//!   from the log at boot; a query streams every live record from flash
//!   once, scoring BM25 and cosine, and keeps the best [`MAX_HITS`].
//! - **Governance**: every record is checked with `governance::check` for
//!   the asking user before it is scored; deletes need the owner.
//! - **Ids**: a sequence number (rebuilt at boot as max + 1) followed by a
//!   hash of owner, time and text, so ids sort by insertion and a deleted
//!   id is not handed out again for another memory.

use core::ops::ControlFlow;

use embedded_storage::nor_flash::{MultiwriteNorFlash, NorFlash};
use heapless::{String, Vec};
use memkern_core::cube::{
    self, AccessPolicy, Cube, Embedding, Int8Vec, Metadata, Payload, Plaintext, SourceKind,
    Visibility,
};
use memkern_core::governance::{self, DenyReason, Operation, Principal};
use memkern_core::ids::{CubeId, NamespaceId, UserId};
use memkern_core::protocol::{
    DeviceStats, Hit, MAX_DIM, MAX_HITS, MAX_QUERY, MAX_TEXT, PROTOCOL_VERSION, Query, Refusal,
    Vector,
};
use memkern_core::scheduler::{self, Budgets, Candidate, Policy, RELEVANCE_ONE};
use memkern_core::search::bm25::{Bm25Params, idf, term_score};
use memkern_core::search::df::TermStats;
use memkern_core::search::int8::cosine_i8;
use memkern_core::search::text::{Analyzer, Term};
use memkern_core::store::{BlockingFlash, FlashStore, RecoveryReport, StoreError};
use memkern_core::time::Timestamp;

/// Buckets of the document-frequency table (2 bytes each).
pub const DF_BUCKETS: usize = 4096;
/// Flash record buffer: one encoded cube.
pub const RECORD: usize = 1024;
/// Distinct query terms scored (the rest are ignored).
const MAX_QUERY_TERMS: usize = 16;
/// Terms of one memory counted for BM25 (a 320-byte text has fewer).
const MAX_DOC_TERMS: usize = 160;
/// Weight of cosine similarity against BM25 in the fused score.
const DENSE_WEIGHT: f32 = 4.0;

/// The flash log store over the firmware's flash.
pub type Store<F> = FlashStore<BlockingFlash<F>, RECORD>;

/// Memory-resident state that is too big for the stack, placed in statics
/// by `main`.
pub struct Tables {
    /// BM25 document frequencies.
    pub df: TermStats<DF_BUCKETS>,
    /// Texts of the current best hits.
    pub texts: [String<MAX_TEXT>; MAX_HITS],
}

impl Tables {
    /// Empty tables (const, so they live in `.bss`).
    pub const fn new() -> Self {
        Tables {
            df: TermStats::new(),
            texts: [const { String::new() }; MAX_HITS],
        }
    }
}

/// The best hits of one query, without text copies of losers.
struct Best {
    /// (score, id, owner, tokens, slot in `Tables::texts`), unordered.
    entries: Vec<(f32, CubeId, UserId, u32, usize), MAX_HITS>,
    k: usize,
}

impl Best {
    fn new(k: usize) -> Self {
        Best {
            entries: Vec::new(),
            k: k.min(MAX_HITS),
        }
    }

    /// `a` ranks before `b`: higher score, then lower id (deterministic).
    fn better(a: (f32, CubeId), b: (f32, CubeId)) -> bool {
        a.0 > b.0 || (a.0 == b.0 && a.1 < b.1)
    }

    /// The slot to write a new hit's text into, if it enters the top k.
    fn offer(&mut self, score: f32, id: CubeId, owner: UserId, tokens: u32) -> Option<usize> {
        if self.entries.iter().any(|e| e.1 == id) {
            return None; // listed twice (see `Memories::rebuild`)
        }
        if self.entries.len() < self.k {
            let slot = self.entries.len();
            self.entries.push((score, id, owner, tokens, slot)).ok()?;
            return Some(slot);
        }
        let (worst_at, worst) = self
            .entries
            .iter()
            .enumerate()
            .min_by(|(_, a), (_, b)| {
                if Self::better((a.0, a.1), (b.0, b.1)) {
                    core::cmp::Ordering::Greater
                } else {
                    core::cmp::Ordering::Less
                }
            })
            .map(|(i, e)| (i, *e))?;
        if !Self::better((score, id), (worst.0, worst.1)) {
            return None;
        }
        let slot = worst.4;
        self.entries[worst_at] = (score, id, owner, tokens, slot);
        Some(slot)
    }

    fn sorted(mut self) -> Vec<(f32, CubeId, UserId, u32, usize), MAX_HITS> {
        self.entries.sort_unstable_by(|a, b| {
            if Self::better((a.0, a.1), (b.0, b.1)) {
                core::cmp::Ordering::Less
            } else {
                core::cmp::Ordering::Greater
            }
        });
        self.entries
    }
}

/// Context tokens a text costs: about 4 bytes per token for English BPE
/// (the MCU has no tokenizer; the host may re-count).
pub fn estimate_tokens(text: &str) -> u32 {
    (text.len() as u32).div_ceil(4) + 1
}

fn fnv1a(seed: u64, bytes: &[u8]) -> u64 {
    bytes.iter().fold(seed, |h, &b| {
        (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01b3)
    })
}

/// The memory service (see the module docs).
pub struct Memories<F: NorFlash + MultiwriteNorFlash + 'static> {
    store: Store<F>,
    tables: &'static mut Tables,
    analyzer: Analyzer,
    params: Bm25Params,
    count: u32,
    next_seq: u64,
    /// Dimension of the stored vectors (all must agree).
    dim: Option<u16>,
    recovery: RecoveryReport,
    /// Records that failed to decode (never written by this firmware; a
    /// sign of a foreign or damaged image).
    foreign: u32,
}

/// A flash error reduced to what the host can act on.
fn refusal(e: StoreError) -> Refusal {
    match e {
        StoreError::Full => Refusal::Full,
        StoreError::TooLarge { len, max } => Refusal::TextTooLong {
            len: len as u32,
            max: max as u32,
        },
        _ => Refusal::Storage,
    }
}

/// The one plaintext payload of a record this firmware wrote, if it is one.
fn plaintext(bytes: &[u8]) -> Option<cube::CubeRef<'_>> {
    let cube = cube::decode(bytes).ok()?;
    cube.plaintext()?;
    Some(cube)
}

impl<F: NorFlash + MultiwriteNorFlash + 'static> Memories<F> {
    /// Opens the store (running power-loss recovery) and rebuilds the
    /// in-RAM statistics with one pass over the log.
    pub fn open(flash: F, tables: &'static mut Tables) -> Result<Self, StoreError> {
        let range = 0..flash.capacity() as u32;
        let (store, recovery) = Store::open(flash, range)?;
        let mut this = Memories {
            store,
            tables,
            analyzer: Analyzer::DEFAULT,
            params: Bm25Params::DEFAULT,
            count: 0,
            next_seq: 1,
            dim: None,
            recovery,
            foreign: 0,
        };
        this.rebuild()?;
        Ok(this)
    }

    fn rebuild(&mut self) -> Result<(), StoreError> {
        let Self {
            store,
            tables,
            analyzer,
            count,
            next_seq,
            dim,
            foreign,
            ..
        } = self;
        let df = &mut tables.df;
        df.clear();
        *count = 0;
        // One pass over every record: this firmware never stores an id
        // twice (fresh ids per add), so every record on flash is a live
        // memory (the store's `for_each_record` contract; the HIL power-cut
        // test checks the count after every cut).
        store.for_each_record(|id, bytes| {
            let Some(cube) = plaintext(bytes) else {
                *foreign += 1;
                return ControlFlow::Continue(());
            };
            let mut seq = [0u8; 8];
            seq.copy_from_slice(&id.0[..8]);
            *next_seq = (*next_seq).max(u64::from_be_bytes(seq).saturating_add(1));
            if let Some(p) = cube.plaintext() {
                df.add(analyzer.terms(p.text));
                if let Some(e) = &p.embedding {
                    dim.get_or_insert(e.values.len() as u16);
                }
            }
            *count += 1;
            ControlFlow::Continue(())
        })?;
        defmt::info!(
            "store open: {} memories, next seq {}, {} foreign records",
            self.count,
            self.next_seq,
            self.foreign
        );
        Ok(())
    }

    fn check_vector(&self, v: &Option<Vector<'_>>) -> Result<(), Refusal> {
        if let Some(v) = v {
            let dim = v.values.len();
            let expected = self.dim.map_or(MAX_DIM, usize::from);
            if dim == 0 || dim > MAX_DIM || (self.dim.is_some() && dim != expected) {
                return Err(Refusal::BadVector {
                    dim: dim as u32,
                    max: expected as u32,
                });
            }
            if !v.scale.is_finite() || v.scale <= 0.0 {
                return Err(Refusal::BadVector {
                    dim: dim as u32,
                    max: expected as u32,
                });
            }
        }
        Ok(())
    }

    /// Stores a memory; `Ok` only once it is durable.
    pub fn add(
        &mut self,
        user: UserId,
        text: &str,
        public: bool,
        at: Timestamp,
        vector: Option<Vector<'_>>,
    ) -> Result<CubeId, Refusal> {
        if text.trim().is_empty() {
            return Err(Refusal::EmptyText);
        }
        if text.len() > MAX_TEXT {
            return Err(Refusal::TextTooLong {
                len: text.len() as u32,
                max: MAX_TEXT as u32,
            });
        }
        self.check_vector(&vector)?;
        let mut id = [0u8; 16];
        id[..8].copy_from_slice(&self.next_seq.to_be_bytes());
        let mut h = fnv1a(0xcbf2_9ce4_8422_2325, &user.0.to_le_bytes());
        h = fnv1a(h, &at.0.to_le_bytes());
        h = fnv1a(h, text.as_bytes());
        id[8..].copy_from_slice(&h.to_le_bytes());
        let id = CubeId(id);

        let mut meta = Metadata::new(id, user, NamespaceId(0), at, at, SourceKind::DialogueTurn);
        meta.access = AccessPolicy {
            visibility: if public {
                Visibility::Public
            } else {
                Visibility::Private
            },
            ..AccessPolicy::default()
        };
        let cube: Cube<&str, &[u8]> = Cube {
            meta,
            payload: Payload::Plaintext(Plaintext {
                text,
                embedding: vector.map(|v| Embedding {
                    embedder: v.embedder,
                    scale: v.scale,
                    values: Int8Vec(v.values),
                }),
            }),
        };
        let mut buf = [0u8; RECORD];
        let len = cube::encode_into(&cube, &mut buf).map_err(|_| Refusal::TextTooLong {
            len: text.len() as u32,
            max: MAX_TEXT as u32,
        })?;
        self.store.put(&id, &buf[..len]).map_err(refusal)?;
        self.tables.df.add(self.analyzer.terms(text));
        if let Some(v) = vector {
            self.dim.get_or_insert(v.values.len() as u16);
        }
        self.count += 1;
        self.next_seq += 1;
        Ok(id)
    }

    /// Reads `id` into `buf` and checks that `user` may do `op` to it.
    fn checked<'b>(
        &mut self,
        user: UserId,
        id: &CubeId,
        op: Operation,
        now: Timestamp,
        buf: &'b mut [u8; RECORD],
    ) -> Result<cube::CubeRef<'b>, DeleteError> {
        let bytes = self
            .store
            .get(id, buf)
            .map_err(|e| DeleteError::Refused(refusal(e)))?
            .ok_or(DeleteError::NotFound)?;
        let cube = plaintext(bytes).ok_or(DeleteError::NotFound)?;
        governance::check(&Principal::user(user), &cube.meta, op, now)
            .into_result()
            .map_err(DeleteError::Denied)?;
        Ok(cube)
    }

    /// The memory `id`, if `user` may read it (text copied to the first
    /// hit slot).
    pub fn get(
        &mut self,
        user: UserId,
        id: &CubeId,
        now: Timestamp,
    ) -> Result<Hit<'_>, DeleteError> {
        let mut buf = [0u8; RECORD];
        let cube = self.checked(user, id, Operation::Read, now, &mut buf)?;
        let text = &mut self.tables.texts[0];
        text.clear();
        let body = cube.plaintext().map_or("", |p| p.text);
        // Stored texts are at most MAX_TEXT bytes (checked at add).
        let _ = text.push_str(body);
        Ok(Hit {
            id: *id,
            owner: cube.meta.owner,
            score: 0.0,
            tokens: estimate_tokens(body),
            text: text.as_str(),
        })
    }

    /// Hard-deletes `id` if `user` owns it.
    pub fn delete(&mut self, user: UserId, id: &CubeId, now: Timestamp) -> Result<(), DeleteError> {
        let mut buf = [0u8; RECORD];
        let cube = self.checked(user, id, Operation::Delete, now, &mut buf)?;
        // Keep the text to uncount its terms after the durable remove
        // (stored texts are at most MAX_TEXT bytes, checked at add).
        let mut text: String<MAX_TEXT> = String::new();
        if let Some(p) = cube.plaintext() {
            let _ = text.push_str(p.text);
        }
        self.store
            .remove(id)
            .map_err(|e| DeleteError::Refused(refusal(e)))?;
        self.tables.df.remove(self.analyzer.terms(&text));
        self.count = self.count.saturating_sub(1);
        Ok(())
    }

    /// The best `q.k` memories `q.user` may read; returns them best first
    /// (texts borrowed from the tables) and the number scored.
    pub fn search(&mut self, q: &Query<'_>) -> Result<(Vec<Hit<'_>, MAX_HITS>, u32), Refusal> {
        if q.text.trim().is_empty() && q.vector.is_none() {
            return Err(Refusal::EmptyText);
        }
        if q.text.len() > MAX_QUERY {
            return Err(Refusal::TextTooLong {
                len: q.text.len() as u32,
                max: MAX_QUERY as u32,
            });
        }
        if q.k == 0 || usize::from(q.k) > MAX_HITS {
            return Err(Refusal::BadCount);
        }
        self.check_vector(&q.vector)?;

        let Self {
            store,
            tables,
            analyzer,
            params,
            ..
        } = self;
        let Tables { df, texts } = &mut **tables;
        let n = df.docs();
        let avg = df.avg_len();
        let mut terms: Vec<(Term, f32), MAX_QUERY_TERMS> = Vec::new();
        for t in analyzer.terms(q.text) {
            if !terms.iter().any(|(u, _)| *u == t)
                && terms.push((t, idf(n, df.doc_freq(t)))).is_err()
            {
                break;
            }
        }
        let principal = Principal::user(q.user);
        let mut best = Best::new(usize::from(q.k));
        let mut scanned = 0u32;
        store
            .for_each_record(|id, bytes| {
                let Some(cube) = plaintext(bytes) else {
                    return ControlFlow::Continue(());
                };
                if !governance::check(&principal, &cube.meta, Operation::Read, q.now).is_allowed() {
                    return ControlFlow::Continue(());
                }
                let Some(p) = cube.plaintext() else {
                    return ControlFlow::Continue(());
                };
                scanned += 1;
                let mut score = 0.0f32;
                if !terms.is_empty() {
                    // Tokenise once; count each query term's frequency.
                    let mut tf = [0u32; MAX_QUERY_TERMS];
                    let mut doc_len = 0u32;
                    for t in analyzer.terms(p.text).take(MAX_DOC_TERMS) {
                        doc_len += 1;
                        if let Some(i) = terms.iter().position(|(u, _)| *u == t) {
                            tf[i] += 1;
                        }
                    }
                    for ((_, w), &f) in terms.iter().zip(&tf) {
                        score += term_score(*w, f, doc_len, avg, *params);
                    }
                }
                if let (Some(v), Some(e)) = (&q.vector, &p.embedding)
                    && e.embedder == v.embedder
                    && let Some(cos) = cosine_i8(as_i8(v.values), e.values.as_i8())
                {
                    score += DENSE_WEIGHT * cos.max(0.0);
                }
                if score > 0.0 {
                    let tokens = estimate_tokens(p.text);
                    if let Some(slot) = best.offer(score, *id, cube.meta.owner, tokens) {
                        let text = &mut texts[slot];
                        text.clear();
                        // Stored texts are at most MAX_TEXT bytes (checked at add).
                        let _ = text.push_str(p.text);
                    }
                }
                ControlFlow::Continue(())
            })
            .map_err(refusal)?;
        let mut hits = Vec::new();
        for (score, id, owner, tokens, slot) in best.sorted() {
            let hit = Hit {
                id,
                owner,
                score,
                tokens,
                text: texts[slot].as_str(),
            };
            // `best` holds at most MAX_HITS entries.
            let _ = hits.push(hit);
        }
        Ok((hits, scanned))
    }

    /// The scheduler's choice of memories for a prompt of `context_tokens`
    /// and `max_items`, in prompt order, with their tokens and relevance.
    pub fn plan(
        &mut self,
        q: &Query<'_>,
        context_tokens: u32,
        max_items: u32,
    ) -> Result<(Vec<Hit<'_>, MAX_HITS>, u32, u64), Refusal> {
        if max_items == 0 {
            return Err(Refusal::BadCount);
        }
        let (hits, _) = self.search(q)?;
        let mut candidates: Vec<Candidate, MAX_HITS> = Vec::new();
        for h in &hits {
            // Scores are ≥ 0 and finite; saturate huge ones.
            let relevance = (h.score * RELEVANCE_ONE as f32).min(u32::MAX as f32) as u32;
            let _ = candidates.push(Candidate::text(h.id, relevance.max(1), h.tokens));
        }
        let budgets = Budgets {
            context_tokens,
            ram_bytes: 0,
            flash_bytes: 0,
            max_items,
        };
        let policy = Policy {
            promote_min_heat: None,
        };
        let plan = scheduler::plan::<MAX_HITS>(&mut candidates, budgets, policy)
            .map_err(|_| Refusal::BadCount)?;
        let mut items = Vec::new();
        for id in &plan.text {
            if let Some(h) = hits.iter().find(|h| h.id == *id) {
                let _ = items.push(*h);
            }
        }
        Ok((items, plan.tokens, plan.relevance))
    }

    /// Store and RAM figures.
    pub fn stats(&mut self) -> Result<DeviceStats, Refusal> {
        let s = self.store.stats().map_err(refusal)?;
        Ok(DeviceStats {
            protocol: PROTOCOL_VERSION,
            memories: self.count,
            flash_capacity: s.capacity_bytes,
            flash_used: s.used_bytes,
            flash_free: s.free_bytes,
            torn_records: s.records_torn,
            pages_repaired: u32::from(self.recovery.pages_half_erased)
                + u32::from(self.recovery.pages_dirty),
            compaction_interrupted: self.recovery.compaction_interrupted,
            erases: s.erases_since_open,
            ram_static: crate::ram::static_bytes(),
            stack_peak: crate::ram::stack_peak(),
            ram_total: crate::ram::total_bytes(),
            last_request_ticks: 0,
            tick_hz: 0,
        })
    }
}

/// Why a get or delete did not happen.
pub enum DeleteError {
    /// No such memory.
    NotFound,
    /// Governance said no.
    Denied(DenyReason),
    /// Flash trouble.
    Refused(Refusal),
}

fn as_i8(bytes: &[u8]) -> &[i8] {
    // SAFETY: u8 and i8 have the same size and alignment, every bit
    // pattern is valid for both, and the lifetime is carried over.
    unsafe { core::slice::from_raw_parts(bytes.as_ptr().cast::<i8>(), bytes.len()) }
}
