//! Approximate dense search: an HNSW graph over int8 vectors above a
//! measured store size, exact int8 search below it.
//!
//! It exists because exact int8 search ([`Int8Index`]) costs a fixed time
//! per memory (≈ 45 ns in a release build, ≈ 90 ns in the dev profile on
//! the project's contended 2-vCPU VM), so its latency grows with the store,
//! while a graph index visits a few thousand vectors whatever the store
//! size. Below [`THRESHOLD`] the exact scan is both
//! cheaper to keep and exact; above it [`DenseIndex`] answers from an HNSW
//! graph plus an exact scan of the vectors added since the graph was built.
//!
//! # Why `instant-distance`
//!
//! [`instant-distance`](https://docs.rs/instant-distance) (djc and
//! InstantDomain; it powers InstantDomainSearch.com's word-vector index) is
//! a small (≈ 1 000 lines), pure-Rust HNSW whose only distance hook is the
//! [`Point`] trait, so the graph works directly on our int8 vectors with
//! the same SIMD dot product as the exact scan ([`dot_i8`]) — no f32 copy,
//! no `unsafe`, no C++ build. Its dependencies (rayon, parking_lot, rand,
//! ordered-float, num_cpus) were already in the workspace's lock file.
//! Its limits, and how this module lives with them:
//!
//! - the graph is built once from a batch (no incremental insertion):
//!   inserts go to an exact tail ([`Int8Index`]) that every search also
//!   scans, and [`DenseIndex::rebuild`] folds the tail into a new graph when
//!   [`DenseIndex::needs_rebuild`] says so (tail ≥ `threshold`, so the tail
//!   scan never costs more than the exact search at the threshold);
//! - no deletion: removed vectors stay in the graph as tombstones, filtered
//!   out of results, until more than a quarter of the graph is dead;
//! - `M` (links per node: 32 on upper layers, 64 on layer 0) is a constant
//!   of the crate, and `ef_search` is fixed when the graph is built;
//! - the build runs on rayon's thread pool (all cores), so two builds of the
//!   same vectors may give slightly different graphs.
//!
//! Scores are those of [`Int8Index`] (`dot(q, d) · scale_q · scale_d`), so
//! the two paths are interchangeable in fusion; the graph itself is built on
//! cosine distance.

use std::collections::{BTreeMap, HashSet};
use std::fmt;

use instant_distance::{Builder, HnswMap, Point, Search};
use memkern_core::search::int8::{Int8Index, dot_i8};
use memkern_core::search::{DocId, Hit, SearchError, TopK};

/// Store size (vectors) from which [`DenseIndex`] answers from an HNSW
/// graph instead of the exact scan.
///
/// Measured with `memkern eval scale --sizes 10000,20000,50000,100000`
/// (dev profile, opt-level 2, contended 2-vCPU VM, clustered vectors;
/// `benches/RESULTS.md`, "Scale"): exact int8 top-10 p95 was 1.3 ms at 10k
/// and 2.1 ms at 20k (≤ 15 % of the 15 ms query budget, and exact), then
/// grows linearly (5.4 ms at 50k, 14 ms at 100k) while HNSW stays ≤ 1.1 ms.
/// Below 20k the graph saves ≤ 1 ms per query yet costs a 12–21 s build,
/// 7–14 MiB and a little recall. Above it the exact tail is capped at this
/// size too, so a query scans at most ≈ 2 ms exactly on top of the graph.
pub const THRESHOLD: usize = 20_000;

/// Build and search parameters of the HNSW graph.
///
/// It exists so that the recall/speed trade-off is set in one place and the
/// bench can vary it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AnnParams {
    /// Candidate list size while inserting (`efConstruction` of the HNSW
    /// paper): higher builds a better graph, slower. Default 40: the crate's
    /// 100 took 274 s to build 100k 384-d vectors on the 2-vCPU VM (recall@10
    /// 1.000); 40 takes 67–110 s for recall@10 0.97–0.98 at 100k, 0.995 at
    /// 50k, 1.000 at 20k, on clustered vectors (`benches/RESULTS.md`,
    /// "Scale").
    pub ef_construction: usize,
    /// Candidate list size while searching (`ef`): the graph returns this
    /// many candidates, so it bounds k (larger k falls back to an exact
    /// scan). Higher is better recall, slower. Default 128: with
    /// `ef_construction` 40 at 100k clustered vectors, 64 gave recall@10
    /// 0.946 and 128 gives 0.969–0.977 for ≈ 0.2 ms more per query.
    pub ef_search: usize,
    /// Store size from which a graph is built. Default [`THRESHOLD`].
    pub threshold: usize,
    /// Seed of the layer assignment. Default 0x5eed.
    pub seed: u64,
}

impl AnnParams {
    /// The measured defaults (`benches/RESULTS.md`, "Scale").
    pub const DEFAULT: AnnParams = AnnParams {
        ef_construction: 40,
        ef_search: 128,
        threshold: THRESHOLD,
        seed: 0x5eed,
    };
}

impl Default for AnnParams {
    fn default() -> Self {
        AnnParams::DEFAULT
    }
}

/// One int8 vector with its scale and inverse norm: a point of the graph.
///
/// It exists to give [`instant_distance`] a distance on our quantised
/// vectors: `1 − cosine`, computed from the int8 dot product (scales cancel
/// in a cosine; the inverse norm is precomputed).
#[derive(Clone, Debug)]
pub struct Int8Point {
    values: Box<[i8]>,
    scale: f32,
    inv_norm: f32,
}

impl Int8Point {
    /// A point for `values · scale`.
    pub fn new(values: &[i8], scale: f32) -> Int8Point {
        let sq = dot_i8(values, values);
        let inv_norm = if sq > 0 {
            1.0 / (sq as f32).sqrt()
        } else {
            0.0
        };
        Int8Point {
            values: values.into(),
            scale,
            inv_norm,
        }
    }

    /// The int8 components.
    pub fn values(&self) -> &[i8] {
        &self.values
    }

    /// The scale (`component ≈ value · scale`).
    pub fn scale(&self) -> f32 {
        self.scale
    }

    /// The score [`Int8Index`] gives this vector for a query:
    /// `dot(q, self) · scale_q · scale`.
    pub fn score(&self, query: &[i8], query_scale: f32) -> f32 {
        dot_i8(query, &self.values) as f32 * self.scale * query_scale
    }
}

impl Point for Int8Point {
    fn distance(&self, other: &Self) -> f32 {
        1.0 - dot_i8(&self.values, &other.values) as f32 * self.inv_norm * other.inv_norm
    }
}

/// The HNSW part of a [`DenseIndex`].
struct Graph {
    map: HnswMap<Int8Point, DocId>,
    /// Docs whose graph vector is current (the others are tombstones).
    live: HashSet<DocId>,
}

impl Graph {
    fn points(&self) -> usize {
        self.map.values.len()
    }
}

/// Dense top-k search that is exact for small stores and approximate
/// (HNSW) above [`AnnParams::threshold`] vectors.
///
/// It exists so that callers get one dense index whose latency stays flat
/// as the store grows, without deciding themselves when to switch.
///
/// Vectors inserted after the last build go to an exact tail; call
/// [`rebuild`](Self::rebuild) when [`needs_rebuild`](Self::needs_rebuild)
/// is true (a build takes 12–100 s for 10k–100k vectors on 2 cores, so it
/// is never done inside [`insert`](Self::insert)). Results stay correct
/// without it, only slower.
pub struct DenseIndex {
    dim: usize,
    params: AnnParams,
    /// Vectors not in the graph (all of them when there is no graph).
    exact: Int8Index,
    /// Copies of `exact`'s vectors, for the next build ([`Int8Index`] does
    /// not hand its vectors out).
    pending: BTreeMap<DocId, Int8Point>,
    graph: Option<Graph>,
}

impl fmt::Debug for DenseIndex {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DenseIndex")
            .field("dim", &self.dim)
            .field("params", &self.params)
            .field("exact", &self.exact.len())
            .field("graph_live", &self.graph.as_ref().map(|g| g.live.len()))
            .field("graph_points", &self.graph.as_ref().map(Graph::points))
            .finish()
    }
}

impl DenseIndex {
    /// An empty index of `dim`-component vectors.
    pub fn new(dim: usize, params: AnnParams) -> DenseIndex {
        DenseIndex {
            dim,
            params,
            exact: Int8Index::new(dim),
            pending: BTreeMap::new(),
            graph: None,
        }
    }

    /// An index of `items` (`(doc, values, scale)`), with a graph when there
    /// are at least `params.threshold` of them. On error nothing is built.
    pub fn build<'a>(
        dim: usize,
        params: AnnParams,
        items: impl IntoIterator<Item = (DocId, &'a [i8], f32)>,
    ) -> Result<DenseIndex, SearchError> {
        let mut seen = HashSet::new();
        let mut points = Vec::new();
        for (doc, values, scale) in items {
            check(dim, doc, values, scale)?;
            if !seen.insert(doc) {
                return Err(SearchError::DuplicateDoc(doc));
            }
            points.push((doc, Int8Point::new(values, scale)));
        }
        let mut index = DenseIndex::new(dim, params);
        index.install(points)?;
        Ok(index)
    }

    /// Vector dimension.
    pub fn dim(&self) -> usize {
        self.dim
    }

    /// The parameters it was made with.
    pub fn params(&self) -> &AnnParams {
        &self.params
    }

    /// Number of (live) vectors.
    pub fn len(&self) -> usize {
        self.exact.len() + self.graph.as_ref().map_or(0, |g| g.live.len())
    }

    /// True when empty.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Whether searches go through an HNSW graph (false: exact scan only).
    pub fn is_approximate(&self) -> bool {
        self.graph.is_some()
    }

    /// Vectors searched exactly (not in the graph).
    pub fn exact_len(&self) -> usize {
        self.exact.len()
    }

    /// Whether `doc` has a vector here.
    pub fn contains(&self, doc: DocId) -> bool {
        self.exact.contains(doc) || self.graph.as_ref().is_some_and(|g| g.live.contains(&doc))
    }

    /// Approximate heap bytes held (vectors, scales, graph links).
    pub fn heap_bytes(&self) -> usize {
        let point = std::mem::size_of::<Int8Point>() + self.dim;
        let exact = self.exact.len() * (self.dim + 8) + self.pending.len() * (point + 32);
        let graph = self.graph.as_ref().map_or(0, |g| {
            // Layer 0 holds 2·M = 64 links of 4 bytes per point; upper layers
            // hold a shrinking fraction (1/ln 32 per layer) of 32 links.
            g.points() * (point + 4 + 64 * 4 + 32 * 4 / 3) + g.live.len() * 8
        });
        exact + graph
    }

    /// Adds an already quantised vector (`values[i] · scale`) to the exact
    /// tail. On error nothing is added.
    pub fn insert(&mut self, doc: DocId, values: &[i8], scale: f32) -> Result<(), SearchError> {
        check(self.dim, doc, values, scale)?;
        if self.contains(doc) {
            return Err(SearchError::DuplicateDoc(doc));
        }
        self.exact.insert(doc, values, scale)?;
        self.pending.insert(doc, Int8Point::new(values, scale));
        Ok(())
    }

    /// Removes `doc`'s vector; returns whether it was present.
    pub fn remove(&mut self, doc: DocId) -> bool {
        if self.exact.remove(doc) {
            self.pending.remove(&doc);
            return true;
        }
        self.graph.as_mut().is_some_and(|g| g.live.remove(&doc))
    }

    /// Whether [`rebuild`](Self::rebuild) would change the layout: the exact
    /// part reached the threshold, or more than a quarter of the graph is
    /// tombstones.
    pub fn needs_rebuild(&self) -> bool {
        let threshold = self.params.threshold.max(1);
        match &self.graph {
            None => self.exact.len() >= threshold,
            Some(g) => {
                self.exact.len() >= threshold || (g.points() - g.live.len()) * 4 > g.points()
            }
        }
    }

    /// Rebuilds from every live vector: one graph when there are at least
    /// `threshold` of them, else exact only. Takes the time of a build.
    pub fn rebuild(&mut self) {
        let mut points: Vec<(DocId, Int8Point)> = Vec::with_capacity(self.len());
        if let Some(g) = self.graph.take() {
            let Graph { map, live } = g;
            for ((_, p), doc) in map.iter().zip(&map.values) {
                if live.contains(doc) {
                    points.push((*doc, p.clone()));
                }
            }
        }
        points.extend(std::mem::take(&mut self.pending));
        self.exact = Int8Index::new(self.dim);
        // Every point was accepted by `check` and is unique, so `install`
        // cannot fail; were it to, the index would be left empty rather than
        // inconsistent.
        if self.install(points).is_err() {
            self.exact = Int8Index::new(self.dim);
            self.pending.clear();
            self.graph = None;
        }
    }

    /// Lays `points` (checked, unique) out into an empty exact part and,
    /// when there are enough, a graph.
    fn install(&mut self, mut points: Vec<(DocId, Int8Point)>) -> Result<(), SearchError> {
        if points.is_empty() || points.len() < self.params.threshold {
            for (doc, p) in points {
                self.exact.insert(doc, p.values(), p.scale())?;
                self.pending.insert(doc, p);
            }
            self.graph = None;
            return Ok(());
        }
        // A stable input order makes the layer assignment depend on the seed
        // only.
        points.sort_unstable_by_key(|(doc, _)| *doc);
        let live = points.iter().map(|(doc, _)| *doc).collect();
        let (docs, pts): (Vec<DocId>, Vec<Int8Point>) = points.into_iter().unzip();
        let map = Builder::default()
            .ef_construction(self.params.ef_construction.max(1))
            .ef_search(self.params.ef_search.max(1))
            .seed(self.params.seed)
            .build(pts, docs);
        self.graph = Some(Graph { map, live });
        Ok(())
    }

    /// The `k` most similar vectors to `query · query_scale`, best first,
    /// scored like [`Int8Index::search`] (empty when the query dimension is
    /// wrong). Approximate when there is a graph.
    pub fn search(&self, query: &[i8], query_scale: f32, k: usize) -> Vec<Hit> {
        if k == 0 || query.len() != self.dim {
            return Vec::new();
        }
        let mut top = TopK::new(k);
        self.exact
            .for_each_score(query, query_scale, |doc, s| top.push(doc, s));
        let Some(g) = &self.graph else {
            return top.into_sorted_vec();
        };
        let want = k.min(g.live.len());
        let mut candidates = Vec::new();
        if k <= self.params.ef_search {
            let q = Int8Point::new(query, query_scale);
            let mut search = Search::default();
            for item in g.map.search(&q, &mut search) {
                if g.live.contains(item.value) {
                    candidates.push((*item.value, item.point.score(query, query_scale)));
                }
            }
        }
        if candidates.len() >= want {
            for (doc, s) in candidates {
                top.push(doc, s);
            }
        } else {
            // k above ef_search, or tombstones crowded the candidate list:
            // scan the graph's vectors exactly.
            for ((_, p), doc) in g.map.iter().zip(&g.map.values) {
                if g.live.contains(doc) {
                    top.push(*doc, p.score(query, query_scale));
                }
            }
        }
        top.into_sorted_vec()
    }
}

/// The checks [`Int8Index::insert`] makes, done before anything is stored.
fn check(dim: usize, doc: DocId, values: &[i8], scale: f32) -> Result<(), SearchError> {
    if doc > DocId::MAX {
        return Err(SearchError::DocIdTooLarge(doc));
    }
    if values.len() != dim {
        return Err(SearchError::DimensionMismatch {
            expected: dim,
            got: values.len(),
        });
    }
    if !(scale.is_finite() && scale > 0.0) {
        return Err(SearchError::NotFinite);
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use std::time::Instant;

    use memkern_core::search::int8::quantize;

    use super::*;

    /// Seeded clustered unit vectors, like sentence embeddings: a mixture of
    /// Gaussian clusters around random centres.
    struct Clusters {
        state: u64,
        centres: Vec<Vec<f32>>,
        dim: usize,
    }

    impl Clusters {
        fn new(seed: u64, clusters: usize, dim: usize) -> Clusters {
            let mut c = Clusters {
                state: seed | 1,
                centres: Vec::new(),
                dim,
            };
            c.centres = (0..clusters).map(|_| c.gaussian_unit(None, 1.0)).collect();
            c
        }
        fn next(&mut self) -> u64 {
            self.state ^= self.state >> 12;
            self.state ^= self.state << 25;
            self.state ^= self.state >> 27;
            self.state.wrapping_mul(0x2545_f491_4f6c_dd1d)
        }
        fn uniform(&mut self) -> f32 {
            ((self.next() >> 40) as f32 + 0.5) / (1u32 << 24) as f32
        }
        fn normal(&mut self) -> f32 {
            let (u, v) = (self.uniform(), self.uniform());
            (-2.0 * u.ln()).sqrt() * (std::f32::consts::TAU * v).cos()
        }
        /// `normalise(centre + spread · N(0, I/dim))`.
        fn gaussian_unit(&mut self, centre: Option<usize>, spread: f32) -> Vec<f32> {
            let s = spread / (self.dim as f32).sqrt();
            let mut v: Vec<f32> = (0..self.dim).map(|_| self.normal() * s).collect();
            if let Some(c) = centre.and_then(|c| self.centres.get(c)) {
                for (x, m) in v.iter_mut().zip(c) {
                    *x += m;
                }
            }
            let n = v.iter().map(|x| x * x).sum::<f32>().sqrt().max(1e-6);
            v.into_iter().map(|x| x / n).collect()
        }
        fn sample(&mut self) -> (Vec<i8>, f32) {
            let c = (self.next() % self.centres.len() as u64) as usize;
            let v = self.gaussian_unit(Some(c), 1.0);
            let mut q = vec![0i8; self.dim];
            let s = quantize(&v, &mut q).expect("finite by construction");
            (q, s)
        }
    }

    fn vectors(seed: u64, n: usize, dim: usize) -> (Clusters, Vec<(Vec<i8>, f32)>) {
        let mut c = Clusters::new(seed, 64, dim);
        let v = (0..n).map(|_| c.sample()).collect();
        (c, v)
    }

    fn small(threshold: usize) -> AnnParams {
        AnnParams {
            threshold,
            ..AnnParams::DEFAULT
        }
    }

    #[test]
    fn hnsw_recall_at_10_is_at_least_0_9_on_clustered_vectors() {
        let (dim, n) = (64, 3000);
        let (mut clusters, data) = vectors(7, n, dim);
        let t = Instant::now();
        let ann = DenseIndex::build(
            dim,
            small(1000),
            data.iter()
                .enumerate()
                .map(|(i, (v, s))| (DocId(i as u32), v.as_slice(), *s)),
        )
        .expect("test input is valid");
        let build = t.elapsed();
        assert!(ann.is_approximate());
        assert_eq!(ann.exact_len(), 0);
        let mut exact = Int8Index::new(dim);
        for (i, (v, s)) in data.iter().enumerate() {
            exact
                .insert(DocId(i as u32), v, *s)
                .expect("test input is valid");
        }
        let queries = 200;
        let mut found = 0usize;
        for _ in 0..queries {
            let (q, qs) = clusters.sample();
            let truth: HashSet<DocId> = exact.search(&q, qs, 10).iter().map(|h| h.doc).collect();
            let got = ann.search(&q, qs, 10);
            assert_eq!(got.len(), 10);
            assert!(got.windows(2).all(|w| w[0].score >= w[1].score));
            found += got.iter().filter(|h| truth.contains(&h.doc)).count();
        }
        let recall = found as f64 / (queries * 10) as f64;
        eprintln!("recall@10 {recall:.3}, build {build:?}");
        assert!(recall >= 0.9, "recall@10 {recall}");
    }

    #[test]
    fn empty_index_finds_nothing() {
        let ix = DenseIndex::new(8, AnnParams::DEFAULT);
        assert!(ix.is_empty());
        assert!(ix.search(&[1; 8], 0.1, 10).is_empty());
        let built = DenseIndex::build(8, small(0), std::iter::empty()).expect("empty is valid");
        assert!(built.is_empty());
        assert!(!built.is_approximate());
        assert!(built.search(&[1; 8], 0.1, 10).is_empty());
        // A wrong query dimension and k = 0 find nothing either.
        assert!(built.search(&[1; 3], 0.1, 10).is_empty());
        assert!(ix.search(&[1; 8], 0.1, 0).is_empty());
    }

    #[test]
    fn k_larger_than_n_returns_every_vector_in_both_modes() {
        let (dim, n) = (32, 300);
        let (mut clusters, data) = vectors(11, n, dim);
        let items = || {
            data.iter()
                .enumerate()
                .map(|(i, (v, s))| (DocId(i as u32), v.as_slice(), *s))
        };
        let exact = DenseIndex::build(dim, small(10_000), items()).expect("valid");
        let ann = DenseIndex::build(dim, small(100), items()).expect("valid");
        assert!(!exact.is_approximate() && ann.is_approximate());
        let (q, qs) = clusters.sample();
        // k ≤ n but above ef_search (128): the graph falls back to a scan.
        for k in [n, n + 50] {
            let a = exact.search(&q, qs, k);
            let b = ann.search(&q, qs, k);
            assert_eq!(a.len(), n);
            assert_eq!(a, b);
        }
    }

    #[test]
    fn switches_to_the_graph_at_the_threshold_and_keeps_answers_live() {
        let (dim, threshold) = (32, 200);
        let (mut clusters, data) = vectors(3, 2 * threshold + 50, dim);
        let mut ix = DenseIndex::new(dim, small(threshold));
        for (i, (v, s)) in data.iter().take(threshold - 1).enumerate() {
            ix.insert(DocId(i as u32), v, *s).expect("valid");
        }
        assert!(!ix.needs_rebuild());
        let last = threshold - 1;
        ix.insert(DocId(last as u32), &data[last].0, data[last].1)
            .expect("valid");
        assert!(ix.needs_rebuild());
        assert!(!ix.is_approximate());
        ix.rebuild();
        assert!(ix.is_approximate());
        assert_eq!((ix.len(), ix.exact_len()), (threshold, 0));
        assert!(!ix.needs_rebuild());

        // New vectors go to the exact tail and are found at once.
        let (v, s) = &data[threshold];
        ix.insert(DocId(threshold as u32), v, *s).expect("valid");
        assert_eq!(ix.exact_len(), 1);
        assert_eq!(ix.search(v, *s, 1)[0].doc, DocId(threshold as u32));
        assert_eq!(
            ix.insert(DocId(0), v, *s),
            Err(SearchError::DuplicateDoc(DocId(0)))
        );

        // A removed graph vector is never returned, and its id can be reused.
        let (v0, s0) = &data[0];
        assert_eq!(ix.search(v0, *s0, 1)[0].doc, DocId(0));
        assert!(ix.remove(DocId(0)));
        assert!(!ix.remove(DocId(0)));
        assert!(ix.search(v0, *s0, 10).iter().all(|h| h.doc != DocId(0)));
        let (q, qs) = clusters.sample();
        ix.insert(DocId(0), &q, qs).expect("valid");
        assert_eq!(ix.search(&q, qs, 1)[0].doc, DocId(0));

        // Removing most of the graph asks for a rebuild, which goes back to
        // exact search below the threshold.
        for i in 1..threshold / 2 {
            assert!(ix.remove(DocId(i as u32)));
        }
        assert!(ix.needs_rebuild());
        let before = ix.len();
        ix.rebuild();
        assert_eq!(ix.len(), before);
        assert!(!ix.is_approximate());
        assert!(ix.search(v0, *s0, 10).iter().all(|h| h.doc != DocId(1)));

        // Bad input is refused as by Int8Index.
        assert_eq!(
            ix.insert(DocId(9999), &[0; 3], 1.0),
            Err(SearchError::DimensionMismatch {
                expected: dim,
                got: 3
            })
        );
        assert_eq!(
            ix.insert(DocId(9999), &vec![0; dim], f32::NAN),
            Err(SearchError::NotFinite)
        );
        assert!(matches!(
            DenseIndex::build(dim, small(1), [(DocId(1), v.as_slice(), *s); 2]),
            Err(SearchError::DuplicateDoc(DocId(1)))
        ));
    }
}
