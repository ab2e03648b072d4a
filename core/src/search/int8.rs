//! Int8 vectors: quantisation, dot products and exact top-k search.
//!
//! It exists because int8 embeddings with one scale per vector are 4×
//! smaller than f32, match the cube format ([`crate::cube::Embedding`]), and
//! let both an MCU and a host compute similarity with integer multiply-adds.
//! The inner loop is written on fixed 32-element chunks with `i32`
//! accumulators so LLVM turns it into SIMD multiply-add (SSE2/AVX2
//! `pmaddwd`, NEON `smlal`/`sdot` when enabled) without `unsafe`.

/// Lanes per chunk of the dot-product loop (32 i8 = one AVX2 register).
const LANES: usize = 32;

/// Exact dot product of two int8 vectors (over the shorter length).
///
/// Exact for lengths up to 131 072 (|a·b| ≤ 2^14 per component); longer
/// inputs wrap instead of panicking.
pub fn dot_i8(a: &[i8], b: &[i8]) -> i32 {
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0i32; LANES];
    let (ca, cb) = (a.chunks_exact(LANES), b.chunks_exact(LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..LANES {
            acc[i] = acc[i].wrapping_add(i32::from(x[i]) * i32::from(y[i]));
        }
    }
    let mut sum = acc.iter().fold(0i32, |s, &v| s.wrapping_add(v));
    for (&x, &y) in ra.iter().zip(rb) {
        sum = sum.wrapping_add(i32::from(x) * i32::from(y));
    }
    sum
}

/// Cosine similarity of two int8 vectors (scales cancel), or `None` when
/// the lengths differ or either vector is zero. Needs no heap or `std`: the
/// MCU's dense score.
pub fn cosine_i8(a: &[i8], b: &[i8]) -> Option<f32> {
    if a.len() != b.len() {
        return None;
    }
    let aa = f64::from(dot_i8(a, a));
    let bb = f64::from(dot_i8(b, b));
    if aa <= 0.0 || bb <= 0.0 {
        return None;
    }
    Some((f64::from(dot_i8(a, b)) / super::math::sqrt(aa * bb)) as f32)
}

/// Dot product of two f32 vectors (over the shorter length), chunked like
/// [`dot_i8`] so the compiler vectorises it; the f32 baseline of benches.
pub fn dot_f32(a: &[f32], b: &[f32]) -> f32 {
    const F_LANES: usize = 16;
    let n = a.len().min(b.len());
    let (a, b) = (&a[..n], &b[..n]);
    let mut acc = [0f32; F_LANES];
    let (ca, cb) = (a.chunks_exact(F_LANES), b.chunks_exact(F_LANES));
    let (ra, rb) = (ca.remainder(), cb.remainder());
    for (x, y) in ca.zip(cb) {
        for i in 0..F_LANES {
            acc[i] += x[i] * y[i];
        }
    }
    let mut sum: f32 = acc.iter().sum();
    for (&x, &y) in ra.iter().zip(rb) {
        sum += x * y;
    }
    sum
}

/// Rounds to the nearest integer, halves away from zero (`f32::round` is
/// `std`-only).
fn round_to_i32(x: f32) -> i32 {
    // `as` saturates; callers pass values within ±127.5.
    if x >= 0.0 {
        (x + 0.5) as i32
    } else {
        (x - 0.5) as i32
    }
}

/// Quantises `src` into `dst` symmetrically (`src[i] ≈ dst[i] · scale`,
/// `max |src|` ↦ 127) and returns the scale.
///
/// `None` when the lengths differ or a component is not finite. An all-zero
/// vector gets scale 1 (any positive scale represents it exactly).
pub fn quantize(src: &[f32], dst: &mut [i8]) -> Option<f32> {
    if src.len() != dst.len() || src.iter().any(|x| !x.is_finite()) {
        return None;
    }
    let max = src.iter().fold(0f32, |m, &x| m.max(x.abs()));
    if max == 0.0 {
        dst.fill(0);
        return Some(1.0);
    }
    let scale = max / 127.0;
    let inv = 127.0 / max;
    for (d, &s) in dst.iter_mut().zip(src) {
        // |s · inv| ≤ 127 (+ rounding), clamped to the i8 range anyway.
        *d = round_to_i32(s * inv).clamp(-127, 127) as i8;
    }
    Some(scale)
}

#[cfg(feature = "alloc")]
pub use index::Int8Index;

#[cfg(feature = "alloc")]
mod index {
    use alloc::vec;
    use alloc::vec::Vec;

    use super::{dot_i8, quantize};
    use crate::search::topk::TopK;
    use crate::search::{DocId, Hit, SearchError};

    const ABSENT: u32 = u32::MAX;

    /// Exact (brute-force) int8 similarity search over vectors of one
    /// dimension, stored contiguously for streaming.
    ///
    /// Score of a document = `dot(q, d) · scale_q · scale_d`, i.e. the dot
    /// product of the dequantised vectors (the cosine when both were
    /// L2-normalised before quantisation).
    #[derive(Clone, Debug)]
    pub struct Int8Index {
        dim: usize,
        values: Vec<i8>,
        scales: Vec<f32>,
        docs: Vec<DocId>,
        slot_of: Vec<u32>,
    }

    impl Int8Index {
        /// An empty index of `dim`-component vectors.
        pub fn new(dim: usize) -> Int8Index {
            Int8Index {
                dim,
                values: Vec::new(),
                scales: Vec::new(),
                docs: Vec::new(),
                slot_of: Vec::new(),
            }
        }

        /// Vector dimension.
        pub fn dim(&self) -> usize {
            self.dim
        }

        /// Number of vectors.
        pub fn len(&self) -> usize {
            self.docs.len()
        }

        /// True when empty.
        pub fn is_empty(&self) -> bool {
            self.docs.is_empty()
        }

        /// Whether `doc` has a vector here.
        pub fn contains(&self, doc: DocId) -> bool {
            self.slot_of.get(doc.index()).is_some_and(|&s| s != ABSENT)
        }

        /// Adds an already quantised vector (`values[i] · scale`).
        pub fn insert(&mut self, doc: DocId, values: &[i8], scale: f32) -> Result<(), SearchError> {
            if doc > DocId::MAX {
                return Err(SearchError::DocIdTooLarge(doc));
            }
            if values.len() != self.dim {
                return Err(SearchError::DimensionMismatch {
                    expected: self.dim,
                    got: values.len(),
                });
            }
            if !(scale.is_finite() && scale > 0.0) {
                return Err(SearchError::NotFinite);
            }
            if self.contains(doc) {
                return Err(SearchError::DuplicateDoc(doc));
            }
            if self.slot_of.len() <= doc.index() {
                self.slot_of.resize(doc.index() + 1, ABSENT);
            }
            // At most DocId::MAX + 1 < 2^24 vectors, so the slot fits a u32.
            self.slot_of[doc.index()] = self.docs.len() as u32;
            self.values.extend_from_slice(values);
            self.scales.push(scale);
            self.docs.push(doc);
            Ok(())
        }

        /// Quantises and adds an f32 vector.
        pub fn insert_f32(&mut self, doc: DocId, v: &[f32]) -> Result<(), SearchError> {
            if v.len() != self.dim {
                return Err(SearchError::DimensionMismatch {
                    expected: self.dim,
                    got: v.len(),
                });
            }
            let mut q = vec![0i8; v.len()];
            let scale = quantize(v, &mut q).ok_or(SearchError::NotFinite)?;
            self.insert(doc, &q, scale)
        }

        /// Removes `doc`'s vector (the last vector moves into its slot);
        /// returns whether it was present.
        pub fn remove(&mut self, doc: DocId) -> bool {
            let Some(slot) = self
                .slot_of
                .get(doc.index())
                .copied()
                .filter(|&s| s != ABSENT)
            else {
                return false;
            };
            let slot = slot as usize;
            let last = self.docs.len() - 1;
            if slot != last {
                let (head, tail) = self.values.split_at_mut(last * self.dim);
                head[slot * self.dim..(slot + 1) * self.dim].copy_from_slice(&tail[..self.dim]);
                self.scales[slot] = self.scales[last];
                self.docs[slot] = self.docs[last];
                let moved = self.docs[slot];
                // `slot` < len ≤ 2^24.
                self.slot_of[moved.index()] = slot as u32;
            }
            self.values.truncate(last * self.dim);
            self.scales.pop();
            self.docs.pop();
            self.slot_of[doc.index()] = ABSENT;
            true
        }

        /// Calls `f(doc, score)` for every vector.
        pub fn for_each_score(
            &self,
            query: &[i8],
            query_scale: f32,
            mut f: impl FnMut(DocId, f32),
        ) {
            if query.len() != self.dim || self.dim == 0 {
                return;
            }
            for ((v, &s), &doc) in self
                .values
                .chunks_exact(self.dim)
                .zip(&self.scales)
                .zip(&self.docs)
            {
                f(doc, dot_i8(query, v) as f32 * s * query_scale);
            }
        }

        /// Scores every vector into `scores` indexed by doc id (resized to
        /// cover every id; `f32::NEG_INFINITY` where a doc has no vector).
        pub fn score_all(&self, query: &[i8], query_scale: f32, scores: &mut Vec<f32>) {
            scores.clear();
            scores.resize(self.slot_of.len(), f32::NEG_INFINITY);
            self.for_each_score(query, query_scale, |doc, s| {
                if let Some(x) = scores.get_mut(doc.index()) {
                    *x = s;
                }
            });
        }

        /// The `k` most similar vectors, best first (empty when the query
        /// dimension is wrong).
        pub fn search(&self, query: &[i8], query_scale: f32, k: usize) -> Vec<Hit> {
            let mut top = TopK::new(k);
            self.for_each_score(query, query_scale, |doc, s| top.push(doc, s));
            top.into_sorted_vec()
        }

        /// Quantises an f32 query and searches.
        pub fn search_f32(&self, query: &[f32], k: usize) -> Vec<Hit> {
            let mut q = vec![0i8; query.len()];
            match quantize(query, &mut q) {
                Some(scale) => self.search(&q, scale, k),
                None => Vec::new(),
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cosine_ignores_scale_and_rejects_zero() {
        let a = [10i8, 0, -20, 5];
        let b = [20i8, 0, -40, 10];
        assert!((cosine_i8(&a, &b).unwrap() - 1.0).abs() < 1e-6);
        let c = [0i8, 7, 0, 0];
        assert_eq!(cosine_i8(&a, &c), Some(0.0));
        assert_eq!(cosine_i8(&a, &[0; 4]), None);
        assert_eq!(cosine_i8(&a, &[1; 3]), None);
    }

    #[test]
    fn dot_i8_is_exact_at_every_length() {
        for n in [0usize, 1, 5, 31, 32, 33, 64, 100, 384] {
            let a: std::vec::Vec<i8> = (0..n)
                .map(|i| ((i * 37 % 255) as i32 - 127) as i8)
                .collect();
            let b: std::vec::Vec<i8> = (0..n)
                .map(|i| ((i * 91 % 256) as i32 - 128) as i8)
                .collect();
            let want: i64 = a
                .iter()
                .zip(&b)
                .map(|(&x, &y)| i64::from(x) * i64::from(y))
                .sum();
            assert_eq!(i64::from(dot_i8(&a, &b)), want, "n={n}");
        }
        let extreme = [-128i8; 4096];
        assert_eq!(dot_i8(&extreme, &extreme), 4096 * 16384);
        // Mismatched lengths use the shorter one.
        assert_eq!(dot_i8(&[1, 2, 3], &[1, 1]), 3);
    }

    #[test]
    fn dot_f32_matches_naive() {
        let a: std::vec::Vec<f32> = (0..100).map(|i| i as f32 * 0.5).collect();
        let b: std::vec::Vec<f32> = (0..100).map(|i| 1.0 - i as f32 * 0.01).collect();
        let want: f32 = a.iter().zip(&b).map(|(x, y)| x * y).sum();
        assert!((dot_f32(&a, &b) - want).abs() < 1e-2);
    }

    #[test]
    fn quantize_round_trips_within_half_a_step() {
        let src = [0.5f32, -1.0, 0.25, 0.0, 0.999];
        let mut q = [0i8; 5];
        let scale = quantize(&src, &mut q).expect("test input is valid");
        assert_eq!(q[1], -127);
        for (&s, &v) in src.iter().zip(&q) {
            assert!((f32::from(v) * scale - s).abs() <= scale / 2.0 + 1e-6);
        }
        assert_eq!(quantize(&[0.0; 3], &mut [1i8; 3]), Some(1.0));
        assert_eq!(quantize(&[f32::NAN], &mut [0i8; 1]), None);
        assert_eq!(quantize(&[1.0], &mut [0i8; 2]), None);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn int8_ranking_equals_f32_ranking_on_an_easy_case() {
        use crate::search::DocId;
        // Docs are basis vectors; the query's components fall off linearly, so
        // the f32 ranking is 0, 1, 2, 3, 4 with gaps far above int8 error.
        let mut ix = Int8Index::new(8);
        for i in 0..5u32 {
            let mut v = [0f32; 8];
            v[i as usize] = 1.0;
            ix.insert_f32(DocId(i), &v).expect("test input is valid");
        }
        let q = [1.0, 0.8, 0.6, 0.4, 0.2, 0.0, 0.0, 0.0];
        let order: std::vec::Vec<u32> = ix.search_f32(&q, 5).iter().map(|h| h.doc.0).collect();
        assert_eq!(order, [0, 1, 2, 3, 4]);
    }

    #[cfg(feature = "alloc")]
    #[test]
    fn int8_scores_track_f32_scores() {
        use crate::search::{DocId, SearchError};
        use std::vec::Vec;
        // Deterministic pseudo-random unit vectors; the query is a noisy copy of
        // doc 7, and the rest are far from it.
        let dim = 64;
        let mut seed = 0x1234_5678u32;
        let mut rnd = || {
            seed ^= seed << 13;
            seed ^= seed >> 17;
            seed ^= seed << 5;
            (seed as f32 / u32::MAX as f32) * 2.0 - 1.0
        };
        let docs: Vec<Vec<f32>> = (0..50)
            .map(|_| {
                let v: Vec<f32> = (0..dim).map(|_| rnd()).collect();
                let n = dot_f32(&v, &v).sqrt();
                v.iter().map(|x| x / n).collect()
            })
            .collect();
        let mut ix = Int8Index::new(dim);
        for (i, d) in docs.iter().enumerate() {
            ix.insert_f32(DocId(i as u32), d)
                .expect("test input is valid");
        }
        let query: Vec<f32> = docs[7].iter().map(|x| x + 0.01 * rnd()).collect();
        let mut f32_rank: Vec<(u32, f32)> = docs
            .iter()
            .enumerate()
            .map(|(i, d)| (i as u32, dot_f32(&query, d)))
            .collect();
        f32_rank.sort_by(|a, b| b.1.total_cmp(&a.1));
        let hits = ix.search_f32(&query, 5);
        assert_eq!(hits[0].doc, DocId(7));
        assert!((hits[0].score - f32_rank[0].1).abs() < 0.02);
        // Every int8 score is within quantisation error of its f32 score.
        for h in &hits {
            let (_, f) = f32_rank
                .iter()
                .find(|(d, _)| *d == h.doc.0)
                .expect("test input is valid");
            assert!((h.score - f).abs() < 0.02, "{h:?} vs {f}");
        }
        assert!(ix.remove(DocId(7)));
        assert_ne!(ix.search_f32(&query, 1)[0].doc, DocId(7));
        assert_eq!(ix.len(), 49);
        assert!(ix.contains(DocId(49)));
        assert_eq!(
            ix.insert(DocId(1), &[0; 3], 1.0),
            Err(SearchError::DimensionMismatch {
                expected: 64,
                got: 3
            })
        );
        assert_eq!(
            ix.insert(DocId(100), &[0; 64], f32::NAN),
            Err(SearchError::NotFinite)
        );
    }
}
