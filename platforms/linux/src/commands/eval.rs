//! `memkern eval locomo`: LoCoMo evidence recall with baselines, ingest rate
//! and query latency.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use memkern_linux::embed;
use memkern_linux::eval::locomo::{self, EvalOptions, Method, Report};

use crate::cli::LocomoArgs;

/// Runs the LoCoMo evaluation and prints the report.
pub fn locomo(args: &LocomoArgs) -> Result<()> {
    let conversations = locomo::load_dir(&args.data, args.conversations.as_deref())
        .with_context(|| format!("cannot load LoCoMo data from {}", args.data.display()))?;
    let mut ks: Vec<usize> = args.k.iter().map(|&k| k as usize).collect();
    ks.sort_unstable();
    ks.dedup();
    let embedder = embed::available();
    let opts = EvalOptions {
        ks,
        methods: Method::standard(embedder.is_ok()),
    };
    tracing::info!(
        conversations = conversations.len(),
        dense = embedder.is_ok(),
        "evaluating LoCoMo"
    );
    let bar = ProgressBar::new(0);
    bar.set_style(
        ProgressStyle::with_template("{msg} [{bar:40}] {pos}/{len} ({eta})")
            .context("progress bar template")?
            .progress_chars("=> "),
    );
    bar.set_message("LoCoMo");
    let report = locomo::evaluate(
        &conversations,
        &opts,
        embedder.as_deref().map_err(String::as_str),
        |p| {
            bar.set_length(p.total);
            bar.set_position(p.done);
        },
    )
    .context("LoCoMo evaluation failed")?;
    bar.finish_and_clear();
    let out = if args.json {
        let mut s = serde_json::to_string(&report).context("cannot render the report as JSON")?;
        s.push('\n');
        s
    } else {
        render(&report)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write standard output")
}

/// The human-readable report: one recall table, then speed.
fn render(r: &Report) -> String {
    let mut s = String::new();
    let _ = writeln!(
        s,
        "LoCoMo evidence recall: conversations {}; {} memories, {} questions (categories 1-4)",
        r.conversations.join(", "),
        r.ingest.memories,
        r.questions
    );
    if r.skipped_questions > 0 || r.dropped_evidence > 0 {
        let _ = writeln!(
            s,
            "  ({} questions skipped for lack of known evidence; {} evidence ids name no turn)",
            r.skipped_questions, r.dropped_evidence
        );
    }
    match (&r.embedder, &r.dense_unavailable) {
        (Some(e), _) => {
            let _ = writeln!(s, "dense: {e}, int8 vectors");
        }
        (None, Some(why)) => {
            let _ = writeln!(s, "dense and hybrid: unavailable ({why})");
        }
        (None, None) => {}
    }
    let _ = writeln!(s);
    let _ = write!(s, "{:<14} {:<12} {:>4}", "method", "category", "n");
    for k in &r.ks {
        let _ = write!(s, " {:>6}", format!("R@{k}"));
    }
    let _ = writeln!(s);
    for m in &r.methods {
        for (i, c) in m.recall.iter().enumerate() {
            let name = if i == 0 { m.name.as_str() } else { "" };
            let _ = write!(s, "{:<14} {:<12} {:>4}", name, c.category, c.questions);
            for k in &r.ks {
                let v = c.recall_at.get(k).copied().unwrap_or(0.0);
                let _ = write!(s, " {v:>6.3}");
            }
            let _ = writeln!(s);
        }
    }
    let _ = writeln!(s);
    let _ = writeln!(
        s,
        "ingest: {} memories in {:.3} s = {:.0} memories/s (embedding {:.3} s)",
        r.ingest.memories, r.ingest.seconds, r.ingest.per_second, r.ingest.embed_seconds
    );
    let _ = writeln!(
        s,
        "query latency (analysis + embedding + search, one thread):"
    );
    for m in &r.methods {
        let _ = writeln!(
            s,
            "  {:<14} p50 {:.3} ms   p95 {:.3} ms",
            m.name, m.latency.p50_ms, m.latency.p95_ms
        );
    }
    s
}
