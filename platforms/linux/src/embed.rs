//! The seam between retrieval and sentence embedders.
//!
//! It exists so that the evaluation and the runtime do not depend on one
//! model: anything that turns texts into vectors (all-MiniLM-L6-v2 on tract
//! from `memkern-models`, a test double) implements [`DenseEmbedder`], and
//! plugging it in is a few lines in [`available`].

/// An error from an embedder, whatever its library.
pub type EmbedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns texts into fixed-size vectors whose dot product measures semantic
/// similarity (L2-normalised sentence embeddings).
pub trait DenseEmbedder {
    /// A short name for reports ("all-MiniLM-L6-v2").
    fn name(&self) -> &str;

    /// The vector dimension.
    fn dim(&self) -> usize;

    /// One vector of [`Self::dim`] components per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// The embedder this build can offer, if any, or why there is none.
///
/// No sentence embedder is built into memkern yet (the MiniLM embedder in
/// `memkern-models` is still to come), so dense retrieval is reported as
/// unavailable rather than approximated.
pub fn available() -> Result<Box<dyn DenseEmbedder>, String> {
    Err(
        "no sentence embedder in this build (all-MiniLM-L6-v2 on tract is not wired in yet)"
            .to_owned(),
    )
}
