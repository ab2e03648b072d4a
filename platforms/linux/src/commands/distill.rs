//! `memkern distill`: parametric memory from the shell.

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use memkern_runtime::DistillRequest;

use super::ctx::open;
use super::llm::{chosen_model, load_llm};
use crate::cli::DistillArgs;

/// Distils the user's eligible memories into their adapter, with a
/// progress bar showing the loss; prints what was distilled.
pub fn distill(args: &DistillArgs) -> Result<()> {
    let (rt, who) = open(&args.vault)?;
    let user = match (&args.user, &args.vault.as_user) {
        (Some(name), _) => rt.user(name)?.id,
        (None, Some(_)) => who.user,
        (None, None) => bail!("whose memories? give --user USER (or --as USER)"),
    };
    let namespace = match &args.cube {
        Some(c) => Some(rt.namespace_named(user, c)?.id),
        None => None,
    };
    let chosen = chosen_model(args.model.model.as_deref(), rt.config());
    let llm = load_llm(chosen.as_deref(), &args.model.backend)?;
    let req = DistillRequest {
        namespace,
        steps: args.steps,
        rank: args.rank,
        resume: args.resume,
    };
    let bar = ProgressBar::new(u64::from(
        args.steps.unwrap_or(rt.config().parametric.steps),
    ));
    bar.set_style(
        ProgressStyle::with_template(
            "distilling {bar:30} {pos}/{len} steps, loss {msg} [{elapsed} < {eta}]",
        )
        .context("progress template")?,
    );
    // Until the first step: the base model answers the anchor questions.
    bar.set_message("– (preparing anchors)");
    let report = rt.distill(&who, user, &llm, &req, |p| {
        bar.set_length(p.steps as u64);
        bar.set_position(p.step as u64);
        bar.set_message(match p.anchor_kl {
            Some(kl) => format!("{:.3}, drift {kl:.4}", p.loss),
            None => format!("{:.3}", p.loss),
        });
    });
    bar.finish_and_clear();
    let report = report?;
    if args.export_gguf.is_some() || args.export_adapter.is_some() {
        let (_, adapter) = rt
            .user_adapter(user, &llm)?
            .context("the adapter just distilled is gone")?;
        if let Some(path) = &args.export_gguf {
            let bytes = adapter
                .to_gguf(llm.config(), llm.config().arch.name())
                .context("GGUF export")?;
            std::fs::write(path, bytes).with_context(|| format!("writing {}", path.display()))?;
        }
        if let Some(path) = &args.export_adapter {
            adapter
                .save(path, llm.config())
                .with_context(|| format!("writing {}", path.display()))?;
        }
    }
    if args.vault.json {
        println!("{}", serde_json::to_string_pretty(&report)?);
        return Ok(());
    }
    println!(
        "adapter {}: {} memories ({} not chosen), {} pairs, {} steps{} in {:.1} s; loss {:.3} -> {:.3}{}; {} KiB",
        report.adapter,
        report.memories.len(),
        report.skipped,
        report.pairs,
        report.steps,
        if report.resumed {
            format!(" (resumed, {} run now)", report.steps_run)
        } else {
            String::new()
        },
        report.train_seconds,
        report.loss_first,
        report.loss_last,
        match report.anchor_kl_last {
            Some(kl) => format!(", drift {kl:.4} on {} anchors", report.anchors),
            None => String::new(),
        },
        report.bytes / 1024
    );
    for m in &report.memories {
        println!("  merged {m}");
    }
    Ok(())
}
