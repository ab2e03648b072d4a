//! BM25 keyword scoring and an incremental inverted index.
//!
//! It exists because keyword match is the strongest single signal on
//! conversational memory (names, places, hobbies are rare words) and the
//! only one an MCU without an embedder has. The scoring functions need no
//! heap; [`Bm25Index`] (feature `alloc`) keeps postings per hashed term.
//!
//! Scoring (Robertson/Lucene form, IDF never negative):
//!
//! ```text
//! idf(t)      = ln(1 + (N − n_t + 0.5) / (n_t + 0.5))
//! score(d, q) = Σ_{t ∈ q, distinct} idf(t) · tf·(k1 + 1) / (tf + k1·(1 − b + b·|d|/avgdl))
//! ```
//!
//! where N is the number of documents, n_t those containing t, tf the count
//! of t in d and |d| the number of (non-stopword) tokens of d.

use super::math::ln;

/// BM25's two free parameters.
///
/// They exist as a value so the platform can tune them (LoCoMo) and the MCU
/// use the same numbers.
#[derive(Clone, Copy, PartialEq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Bm25Params {
    /// Term-frequency saturation (larger: repeated words count more).
    pub k1: f32,
    /// Length normalisation, 0 (none) to 1 (full).
    pub b: f32,
}

impl Bm25Params {
    /// The textbook values (k1 = 1.2, b = 0.75).
    pub const CLASSIC: Bm25Params = Bm25Params { k1: 1.2, b: 0.75 };
    /// memkern's default, tuned on the shared LoCoMo conversations: short
    /// dialogue turns favour weak length normalisation (b = 0.3 gives
    /// BM25-only R@10 0.622 there against 0.605 for b = 0.75).
    pub const DEFAULT: Bm25Params = Bm25Params { k1: 1.2, b: 0.3 };
}

impl Default for Bm25Params {
    fn default() -> Self {
        Bm25Params::DEFAULT
    }
}

/// Inverse document frequency of a term found in `doc_freq` of `n_docs`
/// documents (always ≥ 0).
pub fn idf(n_docs: u32, doc_freq: u32) -> f32 {
    let n = f64::from(n_docs);
    let df = f64::from(doc_freq.min(n_docs));
    ln(1.0 + (n - df + 0.5) / (df + 0.5)) as f32
}

/// One term's contribution to a document's score.
pub fn term_score(idf: f32, tf: u32, doc_len: u32, avg_doc_len: f32, p: Bm25Params) -> f32 {
    if tf == 0 {
        return 0.0;
    }
    let tf = tf as f32;
    let norm = if avg_doc_len > 0.0 {
        1.0 - p.b + p.b * doc_len as f32 / avg_doc_len
    } else {
        1.0
    };
    idf * tf * (p.k1 + 1.0) / (tf + p.k1 * norm)
}

#[cfg(feature = "alloc")]
pub use index::Bm25Index;

#[cfg(feature = "alloc")]
mod index {
    use alloc::collections::BTreeMap;
    use alloc::vec::Vec;

    use super::{Bm25Params, idf, term_score};
    use crate::search::text::{Analyzer, Term};
    use crate::search::topk::top_k_of;
    use crate::search::{DocId, Hit, SearchError};

    /// Marks an unused slot in `doc_len`.
    const ABSENT: u32 = u32::MAX;

    #[derive(Clone, Copy, Debug)]
    struct Posting {
        doc: u32,
        tf: u16,
    }

    /// An inverted index over hashed terms with incremental insert and
    /// remove.
    ///
    /// Memory: 4 bytes per doc-id slot plus, per distinct (term, doc) pair,
    /// 8 bytes, plus one `Vec` header per distinct term. Doc ids should be
    /// dense (see [`DocId`]).
    #[derive(Clone, Debug)]
    pub struct Bm25Index {
        analyzer: Analyzer,
        params: Bm25Params,
        postings: BTreeMap<Term, Vec<Posting>>,
        doc_len: Vec<u32>,
        n_docs: u32,
        total_len: u64,
    }

    impl Bm25Index {
        /// An empty index; `analyzer` is applied to documents and queries.
        pub fn new(analyzer: Analyzer, params: Bm25Params) -> Bm25Index {
            Bm25Index {
                analyzer,
                params,
                postings: BTreeMap::new(),
                doc_len: Vec::new(),
                n_docs: 0,
                total_len: 0,
            }
        }

        /// The analyzer documents and queries go through.
        pub fn analyzer(&self) -> Analyzer {
            self.analyzer
        }

        /// The scoring parameters.
        pub fn params(&self) -> Bm25Params {
            self.params
        }

        /// Changes the scoring parameters (no re-indexing needed).
        pub fn set_params(&mut self, params: Bm25Params) {
            self.params = params;
        }

        /// Number of documents indexed.
        pub fn len(&self) -> usize {
            self.n_docs as usize
        }

        /// True when no document is indexed.
        pub fn is_empty(&self) -> bool {
            self.n_docs == 0
        }

        /// Number of distinct terms.
        pub fn term_count(&self) -> usize {
            self.postings.len()
        }

        /// Number of (term, document) postings held.
        pub fn posting_count(&self) -> usize {
            self.postings.values().map(Vec::len).sum()
        }

        /// One past the largest doc id slot in use (the length of score arrays).
        pub fn id_space(&self) -> usize {
            self.doc_len.len()
        }

        /// Whether `doc` is indexed.
        pub fn contains(&self, doc: DocId) -> bool {
            self.doc_len.get(doc.index()).is_some_and(|&l| l != ABSENT)
        }

        /// Average document length in tokens (0 when empty).
        pub fn avg_doc_len(&self) -> f32 {
            if self.n_docs == 0 {
                0.0
            } else {
                (self.total_len as f64 / f64::from(self.n_docs)) as f32
            }
        }

        /// Indexes `text` as document `doc`.
        pub fn insert(&mut self, doc: DocId, text: &str) -> Result<(), SearchError> {
            if doc > DocId::MAX {
                return Err(SearchError::DocIdTooLarge(doc));
            }
            if self.contains(doc) {
                return Err(SearchError::DuplicateDoc(doc));
            }
            let mut terms: Vec<Term> = self.analyzer.terms(text).collect();
            let len = u32::try_from(terms.len()).unwrap_or(u32::MAX - 1);
            terms.sort_unstable();
            let mut i = 0;
            while let Some(&t) = terms.get(i) {
                let run = terms[i..].iter().take_while(|&&x| x == t).count();
                let tf = u16::try_from(run).unwrap_or(u16::MAX);
                let list = self.postings.entry(t).or_default();
                let at = list.partition_point(|p| p.doc < doc.0);
                list.insert(at, Posting { doc: doc.0, tf });
                i += run;
            }
            if self.doc_len.len() <= doc.index() {
                self.doc_len.resize(doc.index() + 1, ABSENT);
            }
            self.doc_len[doc.index()] = len;
            self.n_docs += 1;
            self.total_len += u64::from(len);
            Ok(())
        }

        /// Removes `doc`; returns whether it was indexed. Walks every posting
        /// list (O(total postings)), so no per-document term list is kept.
        pub fn remove(&mut self, doc: DocId) -> bool {
            let Some(len) = self
                .doc_len
                .get(doc.index())
                .copied()
                .filter(|&l| l != ABSENT)
            else {
                return false;
            };
            self.postings.retain(|_, list| {
                if let Ok(at) = list.binary_search_by_key(&doc.0, |p| p.doc) {
                    list.remove(at);
                }
                !list.is_empty()
            });
            self.doc_len[doc.index()] = ABSENT;
            while self.doc_len.last() == Some(&ABSENT) {
                self.doc_len.pop();
            }
            self.n_docs -= 1;
            self.total_len -= u64::from(len);
            true
        }

        /// Writes the BM25 score of every doc-id slot for `query` into
        /// `scores` (resized to [`Self::id_space`]; 0 for non-matching or
        /// absent documents).
        pub fn score_all(&self, query: &str, scores: &mut Vec<f32>) {
            self.score_all_with(query, self.params, scores);
        }

        /// [`Self::score_all`] with other parameters (for tuning and for
        /// callers that keep their own).
        pub fn score_all_with(&self, query: &str, params: Bm25Params, scores: &mut Vec<f32>) {
            scores.clear();
            scores.resize(self.doc_len.len(), 0.0);
            let mut terms: Vec<Term> = self.analyzer.terms(query).collect();
            terms.sort_unstable();
            terms.dedup();
            let avg = self.avg_doc_len();
            for t in terms {
                let Some(list) = self.postings.get(&t) else {
                    continue;
                };
                let df = u32::try_from(list.len()).unwrap_or(u32::MAX);
                let w = idf(self.n_docs, df);
                for p in list {
                    let dl = self.doc_len.get(p.doc as usize).copied().unwrap_or(0);
                    if let Some(s) = scores.get_mut(p.doc as usize) {
                        *s += term_score(w, u32::from(p.tf), dl, avg, params);
                    }
                }
            }
        }

        /// The `k` best documents for `query` (only documents sharing a
        /// term with it), best first.
        pub fn search(&self, query: &str, k: usize) -> Vec<Hit> {
            let mut scores = Vec::new();
            self.score_all(query, &mut scores);
            top_k_of(&scores, k, |_, s| s > 0.0)
        }
    }
}

#[cfg(all(test, feature = "alloc"))]
mod tests {
    use super::*;
    use crate::search::text::{Analyzer, Stemmer};
    use crate::search::{DocId, SearchError};

    const RAW: Analyzer = Analyzer {
        stemmer: Stemmer::None,
        drop_stopwords: false,
    };

    fn close(a: f32, b: f64) -> bool {
        (f64::from(a) - b).abs() < 1e-5
    }

    /// Corpus: d0 = "cat sat" (2 tokens), d1 = "cat cat dog" (3), d2 = "bird" (1).
    /// N = 3, avgdl = 2, k1 = 1.2, b = 0.75.
    ///
    /// idf(cat) = ln(1 + (3−2+0.5)/(2+0.5)) = ln 1.6
    /// idf(dog) = ln(1 + 2.5/1.5)           = ln(8/3)
    ///
    /// query "cat dog":
    ///   d0: tf=1, norm = 0.25 + 0.75·2/2 = 1     → ln1.6 · 2.2/2.2           = ln 1.6
    ///   d1: tf(cat)=2, norm = 0.25 + 0.75·1.5 = 1.375
    ///       cat: ln1.6 · 2·2.2/(2 + 1.65)  = ln1.6 · 4.4/3.65
    ///       dog: ln(8/3) · 2.2/(1 + 1.65)  = ln(8/3) · 2.2/2.65
    #[test]
    fn scores_match_hand_computed_values() {
        let mut ix = Bm25Index::new(RAW, Bm25Params::CLASSIC);
        ix.insert(DocId(0), "cat sat").expect("test input is valid");
        ix.insert(DocId(1), "Cat cat, dog!")
            .expect("test input is valid");
        ix.insert(DocId(2), "bird").expect("test input is valid");
        assert!(close(ix.avg_doc_len(), 2.0));
        let mut s = std::vec::Vec::new();
        ix.score_all("cat dog", &mut s);
        let ln16 = 1.6f64.ln();
        let ln83 = (8.0f64 / 3.0).ln();
        assert!(close(s[0], ln16), "{}", s[0]);
        assert!(
            close(s[1], ln16 * 4.4 / 3.65 + ln83 * 2.2 / 2.65),
            "{}",
            s[1]
        );
        assert_eq!(s[2], 0.0);
        let hits = ix.search("dog cat cat", 10);
        assert_eq!(hits.len(), 2);
        assert_eq!(hits[0].doc, DocId(1));
        assert!(close(hits[0].score, f64::from(s[1])));
    }

    #[test]
    fn idf_is_never_negative() {
        assert!(idf(10, 10) > 0.0);
        assert!(idf(10, 20) > 0.0);
        assert!(close(idf(0, 0), 2.0f64.ln()));
        assert!(idf(1000, 1) > idf(1000, 100));
    }

    #[test]
    fn insert_remove_round_trip() {
        let mut ix = Bm25Index::new(Analyzer::DEFAULT, Bm25Params::DEFAULT);
        ix.insert(DocId(3), "Melanie painted a sunset")
            .expect("test input is valid");
        ix.insert(DocId(1), "Caroline went to a support group")
            .expect("test input is valid");
        assert_eq!(
            ix.insert(DocId(1), "again"),
            Err(SearchError::DuplicateDoc(DocId(1)))
        );
        assert_eq!(
            ix.insert(DocId(1 << 24), "x"),
            Err(SearchError::DocIdTooLarge(DocId(1 << 24)))
        );
        let before = ix.clone();
        ix.insert(DocId(7), "a sunset painting by the lake")
            .expect("test input is valid");
        assert_eq!(ix.search("sunset", 5).len(), 2);
        assert!(ix.remove(DocId(7)));
        assert!(!ix.remove(DocId(7)));
        assert_eq!(ix.len(), 2);
        assert_eq!(ix.term_count(), before.term_count());
        assert_eq!(ix.id_space(), 4);
        let hits = ix.search("who painted the sunset", 5);
        assert_eq!(hits.len(), 1);
        assert_eq!(hits[0].doc, DocId(3));
        assert!(ix.search("", 5).is_empty());
        assert!(ix.search("the of and", 5).is_empty());
    }
}
