//! Retrieval over plaintext memory: keyword (BM25), dense (int8 dot
//! product), time and fusion of the three.
//!
//! It exists because the same search must run on a Cortex-M (keyword + int8,
//! a few hundred memories) and on a Raspberry Pi (tens of thousands), and
//! give the same ranking on both. Everything here is integer or `f32`
//! arithmetic without `std`.
//!
//! Pieces and what they need:
//!
//! | module | heap? | what |
//! |--------|-------|------|
//! | [`text`] | no | tokenizer: lowercase, alphanumeric split, stopwords, light stemming, 32-bit term hashes |
//! | [`bm25`] | index: `alloc` | BM25 scoring; incremental inverted index keyed by [`DocId`] |
//! | [`df`] | no | [`df::TermStats`]: hashed document frequencies in a fixed table, for BM25 over a streamed flash log (MCU) |
//! | [`int8`] | index: `alloc` | i8·i8→i32 dot products, quantisation; exact top-k over int8 vectors |
//! | [`temporal`] | no | civil date math; "yesterday", "last Saturday", "two weeks ago"… resolved to dates; temporal questions |
//! | [`topk`] | `alloc` | bounded heap of the best k hits |
//! | [`fusion`] | `alloc` | reciprocal rank fusion and min-max normalisation |
//! | [`hybrid`] | `alloc` | [`hybrid::MemoryIndex`]: keyword + dense + time + speaker + dialogue context in one query |
//!
//! ```
//! # #[cfg(feature = "alloc")] {
//! use memkern_core::search::bm25::{Bm25Index, Bm25Params};
//! use memkern_core::search::text::Analyzer;
//! use memkern_core::search::DocId;
//!
//! let mut index = Bm25Index::new(Analyzer::DEFAULT, Bm25Params::DEFAULT);
//! index.insert(DocId(0), "My dog is called Biscuit.").expect("test input is valid");
//! index.insert(DocId(1), "I painted a sunrise last week.").expect("test input is valid");
//! let hits = index.search("what is the dog's name?", 5);
//! assert_eq!(hits[0].doc, DocId(0));
//! # }
//! ```

pub mod bm25;
pub mod df;
#[cfg(feature = "alloc")]
pub mod fusion;
#[cfg(feature = "alloc")]
pub mod hybrid;
pub mod int8;
mod math;
pub mod temporal;
pub mod text;
#[cfg(feature = "alloc")]
pub mod topk;

use core::fmt;

#[cfg(feature = "alloc")]
pub use topk::TopK;

/// A document (memory) number inside one index: small and dense, so per-doc
/// data can live in plain arrays indexed by it.
///
/// It exists so that indexes need not store 16-byte cube ids; the platform
/// maps cube ids to doc ids.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Debug, Default)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct DocId(pub u32);

impl DocId {
    /// Largest doc id an index accepts (per-doc arrays are sized by the
    /// largest id, so ids must stay small).
    pub const MAX: DocId = DocId((1 << 24) - 1);

    /// The id as an array index.
    pub fn index(self) -> usize {
        self.0 as usize
    }
}

impl fmt::Display for DocId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "doc:{}", self.0)
    }
}

/// One search result: a document and its score (higher is better).
///
/// It exists as the common currency of every ranker and of fusion.
#[derive(Clone, Copy, PartialEq, Debug)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub struct Hit {
    /// The document.
    pub doc: DocId,
    /// Its score under the ranker that produced the hit.
    pub score: f32,
}

/// Why a document could not be added to an index.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[cfg_attr(feature = "defmt", derive(defmt::Format))]
pub enum SearchError {
    /// The id is already in the index (remove it first to replace it).
    #[error("{0} is already indexed")]
    DuplicateDoc(DocId),
    /// The id is above [`DocId::MAX`].
    #[error("{0} is above the largest doc id {max}", max = DocId::MAX.0)]
    DocIdTooLarge(DocId),
    /// A vector's length differs from the index dimension.
    #[error("vector has {got} components, the index expects {expected}")]
    DimensionMismatch {
        /// The index dimension.
        expected: usize,
        /// The vector's length.
        got: usize,
    },
    /// A vector scale is not finite and positive, or a float vector holds a
    /// NaN or infinity.
    #[error("vector scale or component is not a finite number")]
    NotFinite,
}
