//! Combining rankers: reciprocal rank fusion and score normalisation.
//!
//! It exists because BM25 scores (unbounded, query-dependent) and cosine
//! similarities (−1…1, compressed near 0.2–0.6) are not comparable as they
//! are: either ranks are fused (RRF, Cormack et al. 2009) or scores are put
//! on one scale first. [`super::hybrid`] uses both and the LoCoMo harness
//! measures which wins.

use alloc::vec::Vec;

use super::Hit;
use super::topk::top_k_of;

/// Adds `weight / (k + rank)` for each hit (rank 1 = first) into
/// `acc[doc]`; hits outside `acc` are ignored.
pub fn rrf_accumulate(hits: &[Hit], weight: f32, k: f32, acc: &mut [f32]) {
    for (rank, h) in hits.iter().enumerate() {
        if let Some(a) = acc.get_mut(h.doc.index()) {
            *a += weight / (k + rank as f32 + 1.0);
        }
    }
}

/// Reciprocal rank fusion of ranked lists, each with a weight; returns the
/// best `n`, best first. `k` (classically 60) flattens the head of each list.
pub fn rrf(lists: &[(&[Hit], f32)], k: f32, n: usize) -> Vec<Hit> {
    let space = lists
        .iter()
        .flat_map(|(l, _)| l.iter())
        .map(|h| h.doc.index() + 1)
        .max()
        .unwrap_or(0);
    let mut acc = alloc::vec![0f32; space];
    for (list, w) in lists {
        rrf_accumulate(list, *w, k, &mut acc);
    }
    top_k_of(&acc, n, |_, s| s > 0.0)
}

/// Scales finite scores linearly onto [0, 1] (min ↦ 0, max ↦ 1); non-finite
/// entries (absent documents) become 0. All-equal scores become 1 when
/// positive, 0 otherwise.
pub fn min_max_normalise(scores: &mut [f32]) {
    let (mut lo, mut hi) = (f32::INFINITY, f32::NEG_INFINITY);
    for &s in scores.iter().filter(|s| s.is_finite()) {
        lo = lo.min(s);
        hi = hi.max(s);
    }
    let span = hi - lo;
    for s in scores.iter_mut() {
        *s = if !s.is_finite() {
            0.0
        } else if span > 0.0 {
            (*s - lo) / span
        } else if *s > 0.0 {
            1.0
        } else {
            0.0
        };
    }
}

/// Divides every score by the largest (non-negative scores such as BM25:
/// zero stays zero, the best becomes 1). Non-finite entries become 0.
pub fn max_normalise(scores: &mut [f32]) {
    let hi = scores
        .iter()
        .filter(|s| s.is_finite())
        .fold(0f32, |m, &s| m.max(s));
    for s in scores.iter_mut() {
        *s = if s.is_finite() && hi > 0.0 {
            *s / hi
        } else {
            0.0
        };
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::search::DocId;

    fn hits(ids: &[u32]) -> Vec<Hit> {
        ids.iter()
            .map(|&d| Hit {
                doc: DocId(d),
                score: 1.0,
            })
            .collect()
    }

    #[test]
    fn rrf_prefers_documents_ranked_well_by_both() {
        let a = hits(&[1, 2, 3]);
        let b = hits(&[3, 1, 4]);
        let fused = rrf(&[(&a, 1.0), (&b, 1.0)], 60.0, 10);
        let order: Vec<u32> = fused.iter().map(|h| h.doc.0).collect();
        assert_eq!(order, [1, 3, 2, 4]);
        // 1: 1/61 + 1/62
        assert!((fused[0].score - (1.0 / 61.0 + 1.0 / 62.0)).abs() < 1e-7);
        // A heavier second list flips the head.
        let fused = rrf(&[(&a, 1.0), (&b, 3.0)], 60.0, 1);
        assert_eq!(fused[0].doc, DocId(3));
        assert!(rrf(&[], 60.0, 5).is_empty());
    }

    #[test]
    fn normalisation() {
        let mut s = [2.0, 4.0, f32::NEG_INFINITY, 3.0];
        min_max_normalise(&mut s);
        assert_eq!(s, [0.0, 1.0, 0.0, 0.5]);
        let mut s = [0.0, 4.0, 2.0];
        max_normalise(&mut s);
        assert_eq!(s, [0.0, 1.0, 0.5]);
        let mut s = [0.5, 0.5];
        min_max_normalise(&mut s);
        assert_eq!(s, [1.0, 1.0]);
        let mut z = [0.0f32; 3];
        max_normalise(&mut z);
        assert_eq!(z, [0.0; 3]);
    }
}
