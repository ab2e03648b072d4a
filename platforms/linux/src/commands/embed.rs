//! `memkern embed [--json] TEXT…`: the token ids and sentence embedding of
//! each text, for debugging and for independent checks of the embedder.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context, Result};
use memkern_models::embed::{Embedder, EmbedderOptions};
use memkern_models::fetch::{MINILM_L6_V2, ModelCache};
use serde_json::json;

use crate::cli::EmbedArgs;

/// Runs `memkern embed`: loads all-MiniLM-L6-v2 (fetching and converting it
/// on first use), embeds every text in one batch and prints the results.
pub fn embed(args: &EmbedArgs) -> Result<()> {
    let embedder = match &args.model_dir {
        Some(dir) => Embedder::from_dir(dir, EmbedderOptions::default())
            .with_context(|| format!("cannot load the embedder from {}", dir.display()))?,
        None => {
            let files = ModelCache::from_env()
                .and_then(|c| c.ensure(&MINILM_L6_V2))
                .context("cannot fetch all-MiniLM-L6-v2")?;
            Embedder::load(&files).context("cannot load the embedder")?
        }
    };
    let ids = args
        .texts
        .iter()
        .map(|t| embedder.tokenize(t))
        .collect::<Result<Vec<_>, _>>()
        .context("tokenizing failed")?;
    let refs: Vec<&[u32]> = ids.iter().map(Vec::as_slice).collect();
    let vectors = embedder
        .embed_token_ids(&refs)
        .context("embedding failed")?;

    let out = if args.json {
        let results: Vec<_> = args
            .texts
            .iter()
            .zip(&ids)
            .zip(&vectors)
            .map(|((text, ids), v)| json!({ "text": text, "token_ids": ids, "embedding": v }))
            .collect();
        let doc = json!({
            "model": "all-MiniLM-L6-v2",
            "fingerprint": embedder.fingerprint().to_string(),
            "dim": embedder.dim(),
            "results": results,
        });
        format!("{doc}\n")
    } else {
        let mut s = String::new();
        for ((text, ids), v) in args.texts.iter().zip(&ids).zip(&vectors) {
            // Writing to a String cannot fail.
            let _ = writeln!(s, "text: {text:?}");
            let ids: Vec<String> = ids.iter().map(u32::to_string).collect();
            let _ = writeln!(s, "token_ids ({}): {}", ids.len(), ids.join(" "));
            let v: Vec<String> = v.iter().map(|x| format!("{x:.6}")).collect();
            let _ = writeln!(s, "embedding ({}): {}", v.len(), v.join(" "));
        }
        s
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write standard output")
}
