//! The k best hits of a stream of scores, in O(n log k).
//!
//! It exists because every ranker (BM25, int8, fusion) ends with "keep the
//! best k", and the tie-break must be the same everywhere so that results are
//! deterministic: higher score first, then lower doc id.

use alloc::collections::BinaryHeap;
use alloc::vec::Vec;
use core::cmp::Ordering;

use super::{DocId, Hit};

/// Heap entry ordered so that the heap's top is the *worst* kept hit.
#[derive(Clone, Copy)]
struct Worst(Hit);

impl Worst {
    /// `Greater` when `self` ranks below `other` (lower score, or equal score
    /// and higher doc id).
    fn cmp_rank(&self, other: &Self) -> Ordering {
        other
            .0
            .score
            .total_cmp(&self.0.score)
            .then(self.0.doc.cmp(&other.0.doc))
    }
}

impl PartialEq for Worst {
    fn eq(&self, other: &Self) -> bool {
        self.cmp_rank(other) == Ordering::Equal
    }
}
impl Eq for Worst {}
impl PartialOrd for Worst {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}
impl Ord for Worst {
    fn cmp(&self, other: &Self) -> Ordering {
        self.cmp_rank(other)
    }
}

/// Keeps the `k` best hits pushed into it.
///
/// NaN scores are ignored, so a broken score can never displace a real hit.
pub struct TopK {
    k: usize,
    heap: BinaryHeap<Worst>,
}

impl TopK {
    /// An empty collector for the best `k` hits.
    pub fn new(k: usize) -> TopK {
        TopK {
            k,
            heap: BinaryHeap::with_capacity(k.min(4096) + 1),
        }
    }

    /// The score a new hit must beat to enter (−∞ while fewer than k are held).
    pub fn threshold(&self) -> f32 {
        if self.heap.len() < self.k {
            f32::NEG_INFINITY
        } else {
            self.heap.peek().map_or(f32::NEG_INFINITY, |w| w.0.score)
        }
    }

    /// Offers one hit.
    pub fn push(&mut self, doc: DocId, score: f32) {
        if self.k == 0 || score.is_nan() {
            return;
        }
        let hit = Worst(Hit { doc, score });
        if self.heap.len() < self.k {
            self.heap.push(hit);
        } else if let Some(mut worst) = self.heap.peek_mut()
            && hit.cmp_rank(&worst) == Ordering::Less
        {
            *worst = hit;
        }
    }

    /// The kept hits, best first.
    pub fn into_sorted_vec(self) -> Vec<Hit> {
        // `into_sorted_vec` is ascending by `Ord`, i.e. best first here.
        self.heap
            .into_sorted_vec()
            .into_iter()
            .map(|w| w.0)
            .collect()
    }
}

/// The best `k` entries of `scores` (indexed by doc id) for which `keep`
/// holds, best first.
pub fn top_k_of(scores: &[f32], k: usize, mut keep: impl FnMut(usize, f32) -> bool) -> Vec<Hit> {
    let mut top = TopK::new(k);
    for (i, &s) in scores.iter().enumerate() {
        if s >= top.threshold() && keep(i, s) {
            // Callers size score arrays by doc id, so `i` ≤ DocId::MAX fits a u32.
            top.push(DocId(i as u32), s);
        }
    }
    top.into_sorted_vec()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_best_k_with_deterministic_ties() {
        let mut t = TopK::new(3);
        for (d, s) in [
            (5, 1.0),
            (1, 3.0),
            (2, 2.0),
            (3, 3.0),
            (4, f32::NAN),
            (0, 2.0),
        ] {
            t.push(DocId(d), s);
        }
        let v: Vec<(u32, f32)> = t
            .into_sorted_vec()
            .iter()
            .map(|h| (h.doc.0, h.score))
            .collect();
        assert_eq!(v, [(1, 3.0), (3, 3.0), (0, 2.0)]);
    }

    #[test]
    fn k_zero_and_short_input() {
        let mut t = TopK::new(0);
        t.push(DocId(1), 1.0);
        assert!(t.into_sorted_vec().is_empty());
        let v = top_k_of(&[0.5, 0.1], 10, |_, _| true);
        assert_eq!(v.len(), 2);
        assert_eq!(v[0].doc, DocId(0));
        let v = top_k_of(&[0.5, 0.1, 0.9], 10, |i, _| i != 2);
        assert_eq!(v.len(), 2);
    }
}
