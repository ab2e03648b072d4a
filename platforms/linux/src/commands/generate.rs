//! `memkern generate`: run the on-device LLM on a prompt, streaming tokens
//! to stdout, optionally after restoring a KV snapshot (activation memory).

use std::io::Write as _;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use memkern_models::tokenizer::ChatMessage;
use memkern_models::{Llm, Sampler, SamplingConfig, Snapshot, StopReason};
use serde_json::json;

use super::llm::load_llm;
use crate::cli::GenerateArgs;

/// The sampling parameters the flags describe; the repetition penalty
/// the flags leave open comes from the model file (`general.sampling.*`).
fn sampling(args: &GenerateArgs, llm: &Llm) -> Result<Sampler> {
    let greedy = args.greedy || args.temperature.is_none_or(|t| t == 0.0);
    let (penalty, last_n) = llm.sampling_defaults().penalty();
    let repetition_penalty = args.repeat_penalty.unwrap_or(penalty);
    let config = if greedy {
        SamplingConfig {
            repetition_penalty,
            repeat_last_n: last_n,
            no_repeat_ngram: args.no_repeat_ngram,
            ..SamplingConfig::greedy()
        }
    } else {
        SamplingConfig {
            temperature: args.temperature.unwrap_or(0.0),
            top_k: args.top_k,
            top_p: args.top_p,
            repetition_penalty,
            repeat_last_n: last_n,
            no_repeat_ngram: args.no_repeat_ngram,
            seed: args.seed,
        }
    };
    Sampler::new(config).context("invalid sampling flags")
}

/// The prompt's token ids: a user turn in the model's chat format plus
/// the opened assistant turn with `--chat`, the raw text (special tokens
/// parsed) otherwise; BOS first where the model asks for it.
fn prompt_ids(llm: &Llm, args: &GenerateArgs) -> Result<Vec<u32>> {
    let tok = llm.tokenizer();
    let ids = if args.chat {
        let mut messages = Vec::new();
        if let Some(system) = &args.system {
            messages.push(ChatMessage::system(system.clone()));
        }
        messages.push(ChatMessage::user(args.prompt.clone()));
        tok.encode_chat(&messages, true)?
    } else {
        tok.encode(&args.prompt)?
    };
    if ids.is_empty() {
        bail!("the prompt is empty");
    }
    // BOS first where the model's metadata asks for it (Gemma), unless a
    // restored snapshot already holds the start of the sequence.
    match tok.bos_id() {
        Some(bos) if tok.add_bos() && args.snapshot.is_none() && ids.first() != Some(&bos) => {
            Ok(std::iter::once(bos).chain(ids).collect())
        }
        _ => Ok(ids),
    }
}

/// Runs `memkern generate`.
pub fn generate(args: &GenerateArgs) -> Result<()> {
    let llm = load_llm(args.model.model.as_deref(), &args.model.backend)?;
    let mut sampler = Some(sampling(args, &llm)?);
    let ids = prompt_ids(&llm, args)?;
    let mut session = llm.session();

    let start = Instant::now();
    let mut restored = 0;
    if let Some(path) = &args.snapshot {
        let snap = Snapshot::read(path)
            .with_context(|| format!("cannot use snapshot {}", path.display()))?;
        session
            .restore(&snap)
            .with_context(|| format!("cannot restore snapshot {}", path.display()))?;
        restored = snap.token_count();
    }
    session.prefill(&ids).context("prefill failed")?;

    let mut out = std::io::stdout().lock();
    let mut first_token_ms = None;
    let mut n = 0usize;
    let sampler = sampler.take().context("sampler")?;
    let generation = session.generate_with(sampler, args.max_tokens, |t| {
        first_token_ms.get_or_insert_with(|| start.elapsed().as_secs_f64() * 1e3);
        n += 1;
        if !args.json {
            // A closed stdout (e.g. `| head`) ends generation quietly.
            return out
                .write_all(t.text.as_bytes())
                .and_then(|()| out.flush())
                .is_ok();
        }
        true
    })?;
    let total = start.elapsed().as_secs_f64();
    let stop = match generation.stop {
        StopReason::EndOfGeneration(_) => "end_of_generation",
        StopReason::MaxTokens => "max_tokens",
        StopReason::ContextFull => "context_full",
        StopReason::Stopped => "stopped",
    };
    if args.json {
        let v = json!({
            "prompt_ids": ids,
            "generated_ids": generation.ids,
            "text": generation.text,
            "stop": stop,
            "snapshot_tokens": restored,
            "backend": llm.backend().name(),
            "ttft_ms": first_token_ms,
            "total_ms": total * 1e3,
        });
        writeln!(out, "{v}")?;
    } else {
        writeln!(out)?;
        tracing::info!(
            tokens = n,
            ttft_ms = first_token_ms,
            tok_per_s = n as f64 / total,
            stop,
            "generation finished"
        );
    }
    Ok(())
}
