//! One query over every signal a memory has: keywords, its embedding, the
//! dates it mentions, who said it and what was said around it.
//!
//! It exists so that the MCU and the Linux runtime rank memories with the
//! same code and the same tuned parameters ([`HybridParams::DEFAULT`]). The
//! pipeline for each query:
//!
//! 1. **base**: BM25 scores (max-normalised) and, when the query has a
//!    vector, int8 cosine scores (min-max-normalised), fused by a weighted
//!    sum or by reciprocal rank fusion ([`Fusion`]);
//! 2. **context**: each memory adds the larger of `context_before ×` the
//!    previous turn's and `context_after ×` the next turn's base score, in
//!    the same thread (a reply often answers the question before it);
//! 3. **boosts** (multiplicative): the question asks "when" and the memory
//!    mentions a resolved date (`time_boost`); the question names a period
//!    that overlaps the memory's dates or the day it was said
//!    (`period_boost`); the question names the memory's speaker
//!    (`speaker_boost`).

use alloc::vec;
use alloc::vec::Vec;

use super::bm25::{Bm25Index, Bm25Params};
use super::fusion::{max_normalise, min_max_normalise, rrf_accumulate};
use super::int8::Int8Index;
use super::temporal::{DateSpan, Day, QueryTime};
use super::text::Analyzer;
use super::topk::top_k_of;
use super::{DocId, Hit, SearchError};

/// How keyword and dense scores are combined.
#[derive(Clone, Copy, PartialEq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum Fusion {
    /// `keyword_weight · bm25/max + dense_weight · minmax(cosine)`.
    WeightedSum,
    /// Reciprocal rank fusion over the top `depth` of each ranker:
    /// `Σ weight / (k + rank)`.
    Rrf {
        /// RRF's rank offset (classically 60).
        k: f32,
        /// How many hits of each ranker take part.
        depth: u32,
    },
}

/// Every tunable of [`MemoryIndex::search`].
#[derive(Clone, Copy, PartialEq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct HybridParams {
    /// BM25 parameters.
    pub bm25: Bm25Params,
    /// Score combination.
    pub fusion: Fusion,
    /// Weight of the keyword ranker.
    pub keyword_weight: f32,
    /// Weight of the dense ranker (ignored when the query has no vector).
    pub dense_weight: f32,
    /// Share of the previous turn's base score a memory inherits (a reply
    /// answers the turn before it).
    pub context_before: f32,
    /// Share of the next turn's base score a memory inherits.
    pub context_after: f32,
    /// Boost for memories with a resolved date when the question asks "when".
    pub time_boost: f32,
    /// Boost for memories whose dates overlap the period the question names.
    pub period_boost: f32,
    /// Boost for memories said by a speaker the question names.
    pub speaker_boost: f32,
}

impl HybridParams {
    /// Plain BM25: no dense, no context, no boosts (the keyword baseline).
    pub const KEYWORD_ONLY: HybridParams = HybridParams {
        bm25: Bm25Params::DEFAULT,
        fusion: Fusion::WeightedSum,
        keyword_weight: 1.0,
        dense_weight: 0.0,
        context_before: 0.0,
        context_after: 0.0,
        time_boost: 0.0,
        period_boost: 0.0,
        speaker_boost: 0.0,
    };

    /// Plain dense similarity (the dense baseline).
    pub const DENSE_ONLY: HybridParams = HybridParams {
        keyword_weight: 0.0,
        dense_weight: 1.0,
        ..HybridParams::KEYWORD_ONLY
    };

    /// Keyword + time + speaker + context, no dense ranker: what a device
    /// without an embedder (the MCU) ranks with. Tuned on the shared LoCoMo
    /// conversations by coordinate ascent
    /// (`benches/eval/examples/locomo_tune.rs`); leave-one-conversation-out
    /// recall matches the in-sample recall (`benches/RESULTS.md`).
    pub const KEYWORD_SIGNALS: HybridParams = HybridParams {
        bm25: Bm25Params::DEFAULT,
        fusion: Fusion::WeightedSum,
        keyword_weight: 1.0,
        dense_weight: 0.0,
        context_before: 0.8,
        context_after: 0.8,
        time_boost: 0.25,
        period_boost: 1.0,
        speaker_boost: 1.0,
    };

    /// memkern's defaults with an embedder: [`Self::KEYWORD_SIGNALS`] plus
    /// min-max-normalised int8 cosine at weight 0.8, fused by weighted sum
    /// (which beat reciprocal rank fusion by 2–7 points of R@10 on LoCoMo);
    /// the speaker boost drops to 0.4 as the dense ranker already favours
    /// the named speaker's turns.
    pub const DEFAULT: HybridParams = HybridParams {
        dense_weight: 0.8,
        speaker_boost: 0.4,
        ..HybridParams::KEYWORD_SIGNALS
    };
}

impl Default for HybridParams {
    fn default() -> Self {
        HybridParams::DEFAULT
    }
}

/// What the index needs to know about one memory.
#[derive(Clone, Copy, Debug)]
pub struct MemoryRecord<'a> {
    /// Text for keyword search (for a dialogue turn: speaker, words, image
    /// caption).
    pub text: &'a str,
    /// The day it was said or written.
    pub said: Day,
    /// Who said it (platform-assigned; 0 = unknown).
    pub speaker: u16,
    /// The dialogue (session) it belongs to; neighbours are the adjacent doc
    /// ids of the same thread.
    pub thread: u32,
    /// Dates its text mentions, resolved at write time
    /// ([`super::temporal::resolve_relative`]).
    pub dates: &'a [DateSpan],
    /// Its int8 embedding and scale, if any.
    pub vector: Option<(&'a [i8], f32)>,
}

/// One question, with what the platform derived from it.
#[derive(Clone, Copy, Debug)]
pub struct MemoryQuery<'a> {
    /// The question text (for keywords).
    pub text: &'a str,
    /// Its int8 embedding and scale, if an embedder is available.
    pub vector: Option<(&'a [i8], f32)>,
    /// Speakers the question names.
    pub speakers: &'a [u16],
    /// Whether it asks "when", and which period it names.
    pub time: QueryTime,
}

#[derive(Clone, Debug)]
struct DocInfo {
    said: Day,
    speaker: u16,
    thread: u32,
    dates: Vec<DateSpan>,
}

/// Keyword + dense + time + speaker + context retrieval over memories.
#[derive(Clone, Debug)]
pub struct MemoryIndex {
    keyword: Bm25Index,
    dense: Option<Int8Index>,
    docs: Vec<Option<DocInfo>>,
}

impl MemoryIndex {
    /// An empty index; `dim` is the embedding dimension (`None`: keyword
    /// and time only, as on an MCU without an embedder).
    pub fn new(analyzer: Analyzer, dim: Option<usize>) -> MemoryIndex {
        MemoryIndex {
            keyword: Bm25Index::new(analyzer, Bm25Params::DEFAULT),
            dense: dim.map(Int8Index::new),
            docs: Vec::new(),
        }
    }

    /// Number of memories.
    pub fn len(&self) -> usize {
        self.keyword.len()
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.keyword.is_empty()
    }

    /// The keyword index (for keyword-only queries and statistics).
    pub fn keyword(&self) -> &Bm25Index {
        &self.keyword
    }

    /// The dense index, if the index has a dimension.
    pub fn dense(&self) -> Option<&Int8Index> {
        self.dense.as_ref()
    }

    /// Adds a memory. On error nothing is added.
    pub fn insert(&mut self, doc: DocId, rec: &MemoryRecord<'_>) -> Result<(), SearchError> {
        if let (Some(dense), Some((v, scale))) = (&self.dense, rec.vector) {
            if v.len() != dense.dim() {
                return Err(SearchError::DimensionMismatch {
                    expected: dense.dim(),
                    got: v.len(),
                });
            }
            if !(scale.is_finite() && scale > 0.0) {
                return Err(SearchError::NotFinite);
            }
        }
        self.keyword.insert(doc, rec.text)?;
        if let (Some(dense), Some((v, scale))) = (&mut self.dense, rec.vector)
            && let Err(e) = dense.insert(doc, v, scale)
        {
            self.keyword.remove(doc);
            return Err(e);
        }
        if self.docs.len() <= doc.index() {
            self.docs.resize(doc.index() + 1, None);
        }
        self.docs[doc.index()] = Some(DocInfo {
            said: rec.said,
            speaker: rec.speaker,
            thread: rec.thread,
            dates: rec.dates.to_vec(),
        });
        Ok(())
    }

    /// Removes a memory; returns whether it was present.
    pub fn remove(&mut self, doc: DocId) -> bool {
        let present = self.keyword.remove(doc);
        if let Some(dense) = &mut self.dense {
            dense.remove(doc);
        }
        if let Some(slot) = self.docs.get_mut(doc.index()) {
            *slot = None;
        }
        present
    }

    /// The `k` best memories for `q`, best first.
    pub fn search(&self, q: &MemoryQuery<'_>, p: &HybridParams, k: usize) -> Vec<Hit> {
        let n = self.docs.len();
        let mut base = vec![0f32; n];
        let mut kw = Vec::new();
        if p.keyword_weight != 0.0 {
            self.keyword.score_all_with(q.text, p.bm25, &mut kw);
            kw.resize(n, 0.0);
        }
        let mut dn = Vec::new();
        let use_dense = p.dense_weight != 0.0;
        if let (true, Some(dense), Some((v, s))) = (use_dense, &self.dense, q.vector) {
            dense.score_all(v, s, &mut dn);
            dn.resize(n, f32::NEG_INFINITY);
        }
        match p.fusion {
            Fusion::WeightedSum => {
                max_normalise(&mut kw);
                min_max_normalise(&mut dn);
                for (b, &x) in base.iter_mut().zip(&kw) {
                    *b += p.keyword_weight * x;
                }
                for (b, &x) in base.iter_mut().zip(&dn) {
                    *b += p.dense_weight * x;
                }
            }
            Fusion::Rrf { k: rk, depth } => {
                let depth = depth as usize;
                let kw_top = top_k_of(&kw, depth, |_, s| s > 0.0);
                rrf_accumulate(&kw_top, p.keyword_weight, rk, &mut base);
                let dn_top = top_k_of(&dn, depth, |_, s| s.is_finite());
                rrf_accumulate(&dn_top, p.dense_weight, rk, &mut base);
            }
        }
        let mut score = base.clone();
        for (i, s) in score.iter_mut().enumerate() {
            let Some(info) = self.docs.get(i).and_then(Option::as_ref) else {
                *s = 0.0;
                continue;
            };
            if p.context_before != 0.0 || p.context_after != 0.0 {
                let neighbour = |j: Option<usize>| -> f32 {
                    j.and_then(|j| Some((j, self.docs.get(j)?.as_ref()?)))
                        .filter(|(_, o)| o.thread == info.thread)
                        .map_or(0.0, |(j, _)| base.get(j).copied().unwrap_or(0.0))
                };
                let before = p.context_before * neighbour(i.checked_sub(1));
                let after = p.context_after * neighbour(Some(i + 1));
                *s += before.max(after);
            }
            if *s <= 0.0 {
                continue;
            }
            let mut boost = 1.0;
            if q.time.asks_time && !info.dates.is_empty() {
                boost *= 1.0 + p.time_boost;
            }
            if let Some(span) = q.time.span
                && (span.contains(info.said) || info.dates.iter().any(|d| d.overlaps(&span)))
            {
                boost *= 1.0 + p.period_boost;
            }
            if info.speaker != 0 && q.speakers.contains(&info.speaker) {
                boost *= 1.0 + p.speaker_boost;
            }
            *s *= boost;
        }
        top_k_of(&score, k, |_, s| s > 0.0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::temporal::resolve_relative;

    fn rec<'a>(
        text: &'a str,
        said: Day,
        speaker: u16,
        thread: u32,
        dates: &'a [DateSpan],
    ) -> MemoryRecord<'a> {
        MemoryRecord {
            text,
            said,
            speaker,
            thread,
            dates,
            vector: None,
        }
    }

    fn query<'a>(text: &'a str, speakers: &'a [u16]) -> MemoryQuery<'a> {
        MemoryQuery {
            text,
            vector: None,
            speakers,
            time: QueryTime::of(text, None),
        }
    }

    #[test]
    fn signals_reorder_keyword_ties() {
        let said = Day::from_civil(2023, 5, 8).expect("test input is valid");
        let mut dates = Vec::new();
        resolve_relative("I went hiking yesterday", said, |m| dates.push(m.span));
        let mut ix = MemoryIndex::new(Analyzer::DEFAULT, None);
        ix.insert(DocId(0), &rec("Mel: hiking is my thing", said, 2, 1, &[]))
            .expect("test input is valid");
        ix.insert(
            DocId(1),
            &rec("Caroline: I went hiking yesterday", said, 1, 1, &dates),
        )
        .expect("test input is valid");
        ix.insert(DocId(2), &rec("Mel: hiking is fun", said, 2, 1, &[]))
            .expect("test input is valid");
        ix.insert(DocId(3), &rec("Mel: cool!", said, 2, 2, &[]))
            .expect("test input is valid");

        let q = query("When did Caroline go hiking?", &[1]);
        let plain = ix.search(&q, &HybridParams::KEYWORD_ONLY, 3);
        assert_eq!(plain.len(), 3);
        let tuned = ix.search(&q, &HybridParams::DEFAULT, 4);
        assert_eq!(tuned[0].doc, DocId(1));

        // Context lifts a keyword-less reply next to a match in the same thread.
        ix.insert(
            DocId(4),
            &rec("Mel: the garden was lovely", said, 2, 3, &[]),
        )
        .expect("test input is valid");
        ix.insert(
            DocId(5),
            &rec("Caroline: yes, roses everywhere", said, 1, 3, &[]),
        )
        .expect("test input is valid");
        let q = query("garden", &[]);
        assert_eq!(ix.search(&q, &HybridParams::KEYWORD_ONLY, 5).len(), 1);
        let p = HybridParams {
            context_before: 0.5,
            ..HybridParams::KEYWORD_ONLY
        };
        let hits = ix.search(&q, &p, 5);
        assert_eq!(hits.iter().map(|h| h.doc.0).collect::<Vec<_>>(), [4, 5]);
        assert!(ix.remove(DocId(5)));
        assert_eq!(ix.search(&q, &p, 5).len(), 1);
    }

    #[test]
    fn dense_and_rrf_fusion() {
        let said = Day(0);
        let mut ix = MemoryIndex::new(Analyzer::DEFAULT, Some(2));
        let mut r = rec("apple pie recipe", said, 0, 0, &[]);
        r.vector = Some((&[127, 0], 1.0 / 127.0));
        ix.insert(DocId(0), &r).expect("test input is valid");
        let mut r = rec("banana bread", said, 0, 0, &[]);
        r.vector = Some((&[0, 127], 1.0 / 127.0));
        ix.insert(DocId(1), &r).expect("test input is valid");
        let mut bad = rec("x", said, 0, 0, &[]);
        bad.vector = Some((&[1, 2, 3], 1.0));
        assert!(ix.insert(DocId(2), &bad).is_err());
        assert_eq!(ix.len(), 2);

        let mut q = query("apple", &[]);
        q.vector = Some((&[0, 127], 1.0 / 127.0));
        let dense = ix.search(&q, &HybridParams::DENSE_ONLY, 1);
        assert_eq!(dense[0].doc, DocId(1));
        let kw = ix.search(&q, &HybridParams::KEYWORD_ONLY, 1);
        assert_eq!(kw[0].doc, DocId(0));
        let p = HybridParams {
            fusion: Fusion::Rrf { k: 60.0, depth: 10 },
            keyword_weight: 1.0,
            dense_weight: 2.0,
            ..HybridParams::KEYWORD_ONLY
        };
        // Doc 0 is in both lists (1/61 + 2/62) and beats doc 1 (2/61)…
        assert_eq!(ix.search(&q, &p, 2)[0].doc, DocId(0));
        // …unless only each ranker's best takes part.
        let p = HybridParams {
            fusion: Fusion::Rrf { k: 60.0, depth: 1 },
            ..p
        };
        assert_eq!(ix.search(&q, &p, 2)[0].doc, DocId(1));
    }
}
