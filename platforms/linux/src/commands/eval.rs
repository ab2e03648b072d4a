//! `memkern eval locomo`: LoCoMo evidence recall with baselines, ingest rate
//! and query latency.

use std::fmt::Write as _;
use std::io::Write as _;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use memkern_eval::locomo::{self, EvalOptions, Method, Report};
use memkern_eval::scale::{self, ScaleOptions, ScaleReport, Vectors};
use memkern_runtime::ann::AnnParams;
use memkern_runtime::embed;

use crate::cli::{DenseMode, LocomoArgs, ScaleArgs, VectorsArg};

/// The embedder `mode` asks for: `Err(why not)` when there is none and
/// that is allowed.
fn embedder_for(mode: DenseMode) -> Result<Result<Box<dyn embed::DenseEmbedder>, String>> {
    let embedder = match mode {
        DenseMode::Off => Err("disabled with --dense off".to_owned()),
        DenseMode::Auto => embed::load_default().map(|e| e as Box<dyn embed::DenseEmbedder>),
        DenseMode::On => Ok(embed::load_default()
            .map_err(anyhow::Error::msg)
            .context("--dense on: no sentence embedder")?
            as Box<dyn embed::DenseEmbedder>),
    };
    if let Err(why) = &embedder {
        tracing::warn!("dense retrieval unavailable: {why}");
    }
    Ok(embedder)
}

/// Runs the LoCoMo evaluation and prints the report.
pub fn locomo(args: &LocomoArgs) -> Result<()> {
    let conversations = locomo::load_dir(&args.data, args.conversations.as_deref())
        .with_context(|| format!("cannot load LoCoMo data from {}", args.data.display()))?;
    let mut ks: Vec<usize> = args.k.iter().map(|&k| k as usize).collect();
    ks.sort_unstable();
    ks.dedup();
    let embedder = embedder_for(args.dense)?;
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

/// Runs the scale benchmark and prints the report.
pub fn scale(args: &ScaleArgs) -> Result<()> {
    let embedder = embedder_for(args.dense)?;
    let opts = ScaleOptions {
        sizes: args.sizes.iter().map(|&n| n as usize).collect(),
        queries: args.queries as usize,
        dim: 384,
        seed: 0x6d65_6d6b_6572_6e21,
        vectors: match args.vectors {
            VectorsArg::Clustered => Vectors::Clustered,
            VectorsArg::Uniform => Vectors::Uniform,
        },
        ann: AnnParams {
            ef_construction: args.ef_construction as usize,
            ef_search: args.ef_search as usize,
            ..AnnParams::DEFAULT
        },
    };
    let spinner = ProgressBar::new_spinner();
    let report = scale::run(&opts, embedder.as_deref().ok(), |msg| {
        spinner.set_message(msg.to_owned());
        spinner.tick();
    })
    .context("scale benchmark failed")?;
    spinner.finish_and_clear();
    let out = if args.json {
        let mut s = serde_json::to_string(&report).context("cannot render the report as JSON")?;
        s.push('\n');
        s
    } else {
        render_scale(&report, embedder.as_ref().err())
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write standard output")
}

fn render_scale(r: &ScaleReport, no_embedder: Option<&String>) -> String {
    let mut s = String::new();
    match (&r.embedder, no_embedder) {
        (Some(e), _) => {
            let _ = writeln!(s, "search at scale, one thread; query embedding: {e}");
        }
        (None, why) => {
            let _ = writeln!(
                s,
                "search at scale, one thread; query embedding not measured ({})",
                why.map_or("no embedder", String::as_str)
            );
        }
    }
    let _ = writeln!(
        s,
        "{:>9} {:>8} {:>8} {:>16} {:>14} {:>14} {:>14} {:>20} {:>7}",
        "memories",
        "fill s",
        "RSS MiB",
        "bm25+sig p50/95",
        "int8 p50/95",
        "f32 p50/95",
        "embed p50/95",
        "hybrid total p50/95",
        "ns/mem"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:>9} {:>8.2} {:>8.1} {:>16} {:>14} {:>14} {:>14} {:>20} {:>7.1}",
            row.memories,
            row.fill_seconds,
            row.rss_mib,
            pair(&row.keyword),
            pair(&row.dense),
            pair(&row.dense_f32),
            pair(&row.embed),
            pair(&row.hybrid_total),
            row.dense_ns_per_memory
        );
    }
    let _ = writeln!(s, "(latencies in ms)");
    let _ = writeln!(
        s,
        "\nHNSW (instant-distance, ef_construction {}, ef_search {}) against exact int8, top-10",
        r.ef_construction, r.ef_search
    );
    let _ = writeln!(s, "memory vectors: {}", r.vectors);
    let _ = writeln!(
        s,
        "{:>9} {:>8} {:>8} {:>14} {:>14} {:>10} {:>24}",
        "memories",
        "build s",
        "HNSW MiB",
        "HNSW p50/95",
        "exact p50/95",
        "recall@10",
        "hybrid+HNSW total p50/95"
    );
    for row in &r.rows {
        let _ = writeln!(
            s,
            "{:>9} {:>8.1} {:>8.1} {:>14} {:>14} {:>10.3} {:>24}",
            row.memories,
            row.ann_build_seconds,
            row.ann_mib,
            pair(&row.ann),
            pair(&row.exact),
            row.ann_recall_at_10,
            pair(&row.hybrid_ann_total)
        );
    }
    let _ = writeln!(
        s,
        "(HNSW and exact timed on queries drawn from the memory vectors' distribution; \
         hybrid+HNSW = analysis + embedding + bm25+signals + HNSW, weighted-sum fusion)"
    );
    s
}

/// A latency as `p50/p95` in milliseconds.
fn pair(l: &memkern_eval::stats::Latency) -> String {
    format!("{:.2}/{:.2}", l.p50_ms, l.p95_ms)
}
