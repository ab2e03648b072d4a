//! Document frequencies in a fixed table: the BM25 statistics a
//! microcontroller can keep for ten thousand memories in a few KiB.
//!
//! It exists because an inverted index does not fit a small MCU's RAM, while
//! BM25 needs, for every query term, the number of documents containing it.
//! [`TermStats`] hashes terms into `B` buckets of 16-bit counters, updated on
//! every add and delete and rebuilt from the log at boot; the documents
//! themselves are scored while streaming them from flash.
//!
//! A bucket shared by two terms reports the sum of their document
//! frequencies, so `doc_freq` is an upper bound: a colliding term looks a
//! little more common (lower IDF) than it is. With `B` = 4096 buckets and a
//! few thousand distinct terms most terms own their bucket; the effect on
//! ranking is small and deterministic. Counts saturate at 65 535 documents
//! per bucket.

use super::text::Term;

/// Corpus statistics for BM25 in `2 * B + 12` bytes, without a heap.
///
/// A document's terms are given as an iterator that can be replayed
/// (`Clone`), so a term repeated in one document counts once and no scratch
/// buffer is needed.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct TermStats<const B: usize> {
    docs: u32,
    total_len: u64,
    df: [u16; B],
}

impl<const B: usize> Default for TermStats<B> {
    fn default() -> Self {
        Self::new()
    }
}

impl<const B: usize> TermStats<B> {
    /// Empty statistics (usable in a `static`).
    pub const fn new() -> Self {
        TermStats {
            docs: 0,
            total_len: 0,
            df: [0; B],
        }
    }

    fn bucket(term: Term) -> Option<usize> {
        if B == 0 {
            return None;
        }
        Some(term.0 as usize % B)
    }

    /// Visits each distinct bucket of `terms` once, and returns the number
    /// of terms (the document length).
    fn for_each_bucket<I>(terms: I, mut f: impl FnMut(usize)) -> u32
    where
        I: Iterator<Item = Term> + Clone,
    {
        let mut len = 0u32;
        for (i, term) in terms.clone().enumerate() {
            len = len.saturating_add(1);
            let Some(b) = Self::bucket(term) else {
                continue;
            };
            // Counted already if an earlier term of this document fell into
            // the same bucket. Quadratic, but memories are short (a few
            // dozen terms) and it needs no memory.
            let seen = terms
                .clone()
                .take(i)
                .any(|earlier| Self::bucket(earlier) == Some(b));
            if !seen {
                f(b);
            }
        }
        len
    }

    /// Counts one document with these terms.
    pub fn add<I>(&mut self, terms: I)
    where
        I: Iterator<Item = Term> + Clone,
    {
        let df = &mut self.df;
        let len = Self::for_each_bucket(terms, |b| {
            if let Some(c) = df.get_mut(b) {
                *c = c.saturating_add(1);
            }
        });
        self.docs = self.docs.saturating_add(1);
        self.total_len = self.total_len.saturating_add(u64::from(len));
    }

    /// Uncounts a document previously passed to [`Self::add`] with the same
    /// terms.
    pub fn remove<I>(&mut self, terms: I)
    where
        I: Iterator<Item = Term> + Clone,
    {
        let df = &mut self.df;
        let len = Self::for_each_bucket(terms, |b| {
            if let Some(c) = df.get_mut(b) {
                *c = c.saturating_sub(1);
            }
        });
        self.docs = self.docs.saturating_sub(1);
        self.total_len = self.total_len.saturating_sub(u64::from(len));
    }

    /// Documents counted.
    pub fn docs(&self) -> u32 {
        self.docs
    }

    /// Mean document length in terms (0 when empty).
    pub fn avg_len(&self) -> f32 {
        if self.docs == 0 {
            0.0
        } else {
            (self.total_len as f64 / f64::from(self.docs)) as f32
        }
    }

    /// Documents containing `term` (or a term sharing its bucket).
    pub fn doc_freq(&self, term: Term) -> u32 {
        Self::bucket(term)
            .and_then(|b| self.df.get(b))
            .map_or(0, |&c| u32::from(c))
    }

    /// Forgets everything (before a rebuild).
    pub fn clear(&mut self) {
        *self = Self::new();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::text::Analyzer;

    fn terms(text: &str) -> impl Iterator<Item = Term> + Clone + '_ {
        Analyzer::DEFAULT.terms(text)
    }

    #[test]
    fn counts_each_document_once_per_term() {
        let mut s = TermStats::<4096>::new();
        s.add(terms("Biscuit the dog chased another dog"));
        s.add(terms("my dog sleeps"));
        let dog = Analyzer::DEFAULT.terms("dog").next().unwrap();
        let cat = Analyzer::DEFAULT.terms("cat").next().unwrap();
        assert_eq!(s.doc_freq(dog), 2);
        assert_eq!(s.doc_freq(cat), 0);
        assert_eq!(s.docs(), 2);
        assert!(s.avg_len() > 1.0);
    }

    #[test]
    fn remove_undoes_add() {
        let mut s = TermStats::<64>::new();
        let before = s.clone();
        s.add(terms("peanuts make me ill"));
        s.add(terms("I love peanut butter"));
        s.remove(terms("peanuts make me ill"));
        s.remove(terms("I love peanut butter"));
        assert_eq!(s, before);
    }

    #[test]
    fn collisions_only_overestimate() {
        // One bucket: every term collides, so df is the number of documents
        // with at least one term.
        let mut s = TermStats::<1>::new();
        s.add(terms("alpha beta"));
        s.add(terms("gamma"));
        let alpha = Analyzer::DEFAULT.terms("alpha").next().unwrap();
        assert_eq!(s.doc_freq(alpha), 2);
        let empty = TermStats::<0>::new();
        assert_eq!(empty.doc_freq(alpha), 0);
    }
}
