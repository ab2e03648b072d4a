//! The in-RAM search index over every live memory's head version.
//!
//! Exists to answer hybrid queries in milliseconds: keyword (BM25), int8
//! dense and time signals from [`memkern_core::search::hybrid`], plus the
//! per-memory facts the runtime filters on (cube, tags, time) before it
//! runs the governance check on the survivors.

use std::collections::HashMap;

use memkern_core::cube::OwnedCube;
use memkern_core::cube::Payload;
use memkern_core::search::hybrid::{HybridParams, MemoryIndex, MemoryQuery, MemoryRecord};
use memkern_core::search::int8;
use memkern_core::search::temporal::{self, Day};
use memkern_core::search::text::Analyzer;
use memkern_core::search::{DocId, Hit};

/// What the runtime filters a hit on.
#[derive(Clone, Debug)]
pub(crate) struct DocMeta {
    /// The memory (its first version's id, as a table key).
    pub memory: u128,
    pub namespace: u64,
    /// Event time, ms.
    pub event_ms: i64,
    pub tags: Vec<String>,
}

/// Keyword + dense + time index with doc-id bookkeeping.
pub(crate) struct SearchIndex {
    index: MemoryIndex,
    docs: Vec<Option<DocMeta>>,
    by_memory: HashMap<u128, DocId>,
}

impl SearchIndex {
    /// An empty index (`dim`: the embedder's dimension, if any).
    pub fn new(dim: Option<usize>) -> SearchIndex {
        SearchIndex {
            index: MemoryIndex::new(Analyzer::DEFAULT, dim),
            docs: Vec::new(),
            by_memory: HashMap::new(),
        }
    }

    /// Number of indexed memories.
    pub fn len(&self) -> usize {
        self.by_memory.len()
    }

    /// Indexes (or re-indexes) memory `memory` with its head cube.
    pub fn upsert(&mut self, memory: u128, head: &OwnedCube) {
        self.remove(memory);
        let Payload::Plaintext(p) = &head.payload else {
            return;
        };
        let said = Day::of(head.meta.time.event_time);
        let mut dates = Vec::new();
        temporal::resolve_relative(&p.text, said, |m| dates.push(m.span));
        let vector = p
            .embedding
            .as_ref()
            .filter(|e| Some(e.values.0.len()) == self.index.dense().map(|d| d.dim()))
            .map(|e| (e.values.as_i8(), e.scale));
        // Doc ids are never reused: a new memory goes after the last one,
        // not into a deleted memory's place among unrelated neighbours
        // (the holes cost a slot each until the next open).
        let Ok(doc) = u32::try_from(self.docs.len()).map(DocId) else {
            return;
        };
        let record = MemoryRecord {
            text: &p.text,
            said,
            speaker: 0,
            thread: head.meta.namespace.0 as u32,
            dates: &dates,
            vector,
        };
        if self.index.insert(doc, &record).is_err() {
            // A vector of another embedder or a non-finite scale: index the
            // text alone rather than lose the memory from search.
            let text_only = MemoryRecord {
                vector: None,
                ..record
            };
            if self.index.insert(doc, &text_only).is_err() {
                return;
            }
        }
        if self.docs.len() <= doc.index() {
            self.docs.resize(doc.index() + 1, None);
        }
        self.docs[doc.index()] = Some(DocMeta {
            memory,
            namespace: head.meta.namespace.0,
            event_ms: head.meta.time.event_time.0,
            tags: head.meta.tags.iter().cloned().collect(),
        });
        self.by_memory.insert(memory, doc);
    }

    /// Drops memory `memory` from every index; true if it was there.
    pub fn remove(&mut self, memory: u128) -> bool {
        let Some(doc) = self.by_memory.remove(&memory) else {
            return false;
        };
        self.index.remove(doc);
        if let Some(slot) = self.docs.get_mut(doc.index()) {
            *slot = None;
        }
        true
    }

    /// Ranked candidates (best first) passing `keep`, at most `k`.
    pub fn search(
        &self,
        query: &MemoryQuery<'_>,
        params: &HybridParams,
        k: usize,
        keep: impl Fn(&DocMeta) -> bool,
    ) -> Vec<(DocMeta, f32)> {
        // Rank a generous top first; only when the filters leave too few
        // of them (other users' or cubes' memories ranked higher) rank
        // everything.
        let filtered = |depth: usize| -> (Vec<(DocMeta, f32)>, bool) {
            let hits: Vec<Hit> = self.index.search(query, params, depth);
            let exhausted = hits.len() < depth;
            let kept = hits
                .into_iter()
                .filter_map(|h| {
                    let meta = self.docs.get(h.doc.index())?.as_ref()?;
                    keep(meta).then(|| (meta.clone(), h.score))
                })
                .take(k)
                .collect();
            (kept, exhausted)
        };
        let first = (k * 8).max(64);
        let (kept, exhausted) = filtered(first);
        if kept.len() >= k || exhausted {
            return kept;
        }
        filtered(self.docs.len().max(1)).0
    }

    /// The most similar memory passing `keep` by int8 cosine, with the
    /// similarity.
    pub fn nearest(
        &self,
        vector: &[i8],
        scale: f32,
        keep: impl Fn(&DocMeta) -> bool,
    ) -> Option<(u128, f32)> {
        let dense = self.index.dense()?;
        let mut best: Option<(u128, f32)> = None;
        dense.for_each_score(vector, scale, |doc, score| {
            let Some(meta) = self.docs.get(doc.index()).and_then(Option::as_ref) else {
                return;
            };
            if keep(meta) && best.is_none_or(|(_, b)| score > b) {
                best = Some((meta.memory, score));
            }
        });
        best
    }
}

/// Quantises an f32 embedding to int8 with its scale (`None`: not finite
/// or all zero).
pub(crate) fn quantize(v: &[f32]) -> Option<(Vec<i8>, f32)> {
    let mut q = vec![0i8; v.len()];
    let scale = int8::quantize(v, &mut q)?;
    Some((q, scale))
}
