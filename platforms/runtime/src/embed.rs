//! The seam between retrieval and sentence embedders.
//!
//! It exists so that the evaluation and the runtime do not depend on one
//! model: anything that turns texts into vectors (all-MiniLM-L6-v2 on tract
//! from `memkern-models`, a test double) implements [`DenseEmbedder`], and
//! [`load_default`] picks the one this build offers.

use memkern_core::ids::Fingerprint;

/// An error from an embedder, whatever its library.
pub type EmbedError = Box<dyn std::error::Error + Send + Sync + 'static>;

/// Turns texts into fixed-size vectors whose dot product measures semantic
/// similarity (L2-normalised sentence embeddings).
pub trait DenseEmbedder {
    /// A short name for reports ("all-MiniLM-L6-v2").
    fn name(&self) -> &str;

    /// The vector dimension.
    fn dim(&self) -> usize;

    /// Identity of the model, stamped on the cubes it embeds (`None`: the
    /// caller derives one from [`Self::name`]).
    fn fingerprint(&self) -> Option<Fingerprint> {
        None
    }

    /// One vector of [`Self::dim`] components per text, in order.
    fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError>;
}

/// Loads the embedder this build offers: all-MiniLM-L6-v2 (fetched into
/// the model cache on first use) with the `embed` feature, none without.
/// The error says why there is none, for reports.
pub fn load_default() -> Result<Box<dyn DenseEmbedder + Send + Sync>, String> {
    #[cfg(feature = "embed")]
    {
        minilm::MiniLm::load().map(|m| Box::new(m) as Box<dyn DenseEmbedder + Send + Sync>)
    }
    #[cfg(not(feature = "embed"))]
    {
        Err("memkern was built without the `embed` feature".to_owned())
    }
}

#[cfg(feature = "embed")]
pub use minilm::MiniLm;

#[cfg(feature = "embed")]
mod minilm {
    use memkern_core::ids::Fingerprint;
    use memkern_models::embed::Embedder;
    use memkern_models::fetch::{MINILM_L6_V2, ModelCache};

    use super::{DenseEmbedder, EmbedError};

    /// all-MiniLM-L6-v2 on tract (`memkern_models::embed::Embedder`).
    pub struct MiniLm {
        inner: Embedder,
    }

    impl MiniLm {
        /// Fetches (first use) and loads the model from memkern's model
        /// cache (`MEMKERN_MODEL_DIR` overrides its place).
        pub fn load() -> Result<MiniLm, String> {
            let files = ModelCache::from_env()
                .and_then(|c| c.ensure(&MINILM_L6_V2))
                .map_err(|e| format!("cannot fetch all-MiniLM-L6-v2: {e}"))?;
            let inner =
                Embedder::load(&files).map_err(|e| format!("cannot load all-MiniLM-L6-v2: {e}"))?;
            Ok(MiniLm { inner })
        }

        /// Wraps an embedder loaded elsewhere.
        pub fn new(inner: Embedder) -> MiniLm {
            MiniLm { inner }
        }
    }

    impl DenseEmbedder for MiniLm {
        fn name(&self) -> &str {
            "all-MiniLM-L6-v2"
        }

        fn dim(&self) -> usize {
            self.inner.dim()
        }

        fn fingerprint(&self) -> Option<Fingerprint> {
            Some(self.inner.fingerprint())
        }

        fn embed(&self, texts: &[&str]) -> Result<Vec<Vec<f32>>, EmbedError> {
            self.inner
                .embed(texts)
                .map_err(|e| Box::new(e) as EmbedError)
        }
    }
}
