//! `memkern snapshot …`: activation memory from the shell — save the KV
//! cache of a text prefix to a file, or describe a snapshot file.

use std::io::Write as _;

use anyhow::{Context, Result, bail};
use memkern_core::cube::KvDtype;
use memkern_models::tokenizer::ChatMessage;
use memkern_models::{Snapshot, SnapshotOptions};
use serde_json::json;

use super::llm::load_llm;
use crate::cli::{SnapshotInfoArgs, SnapshotSaveArgs};

/// Parses `f32`, `f16` or `q8`.
pub fn parse_dtype(s: &str) -> Result<KvDtype> {
    match s.to_ascii_lowercase().as_str() {
        "f32" => Ok(KvDtype::F32),
        "f16" => Ok(KvDtype::F16),
        "q8" => Ok(KvDtype::Q8),
        other => bail!("unknown KV dtype {other:?} (use f32, f16 or q8)"),
    }
}

/// Runs `memkern snapshot save`: prefill the prefix, write its KV cache.
pub fn save(args: &SnapshotSaveArgs) -> Result<()> {
    let dtype = parse_dtype(&args.dtype)?;
    let llm = load_llm(args.model.model.as_deref(), &args.model.backend)?;
    let tok = llm.tokenizer();
    let ids = if args.chat {
        tok.encode_chat(&[ChatMessage::system(args.prefix.clone())], false)?
    } else {
        tok.encode(&args.prefix)?
    };
    if ids.is_empty() {
        bail!("the prefix is empty");
    }
    let mut session = llm.session();
    let t = std::time::Instant::now();
    session.prefill(&ids).context("prefill failed")?;
    let prefill_ms = t.elapsed().as_secs_f64() * 1e3;
    let snap = session.snapshot(0..ids.len(), SnapshotOptions::dtype(dtype))?;
    snap.write(&args.out)
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    print_info(&snap, Some(prefill_ms))
}

/// Runs `memkern snapshot info`: validate a file and print its identity.
pub fn info(args: &SnapshotInfoArgs) -> Result<()> {
    let snap = Snapshot::read(&args.file)
        .with_context(|| format!("cannot use snapshot {}", args.file.display()))?;
    print_info(&snap, None)
}

fn print_info(snap: &Snapshot, prefill_ms: Option<f64>) -> Result<()> {
    let a = snap.activation_payload();
    let h = snap.header();
    let v = json!({
        "model": h.model.to_hex(),
        "tokenizer": h.tokenizer.to_hex(),
        "token_count": a.token_count,
        "first_position": a.first_position,
        "layout": a.layout,
        "kv_bytes": a.kv_bytes,
        "has_logits": h.has_logits,
        "file_bytes": a.blob.size,
        "sha256": a.blob.digest.to_string(),
        "prefill_ms": prefill_ms,
    });
    writeln!(std::io::stdout().lock(), "{v}")?;
    Ok(())
}
