//! `memkern eval locomo --answers`: the answer benchmark, on a fresh
//! temporary vault, with progress bars and a table (or `--json`).

use std::fmt::Write as _;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result};
use indicatif::{ProgressBar, ProgressStyle};
use memkern_eval::answers::{self, AnswerOptions, AnswerReport};
use memkern_eval::locomo::{self, Category};
use memkern_runtime::{Assistant, Config, Runtime};

use super::llm::load_llm;
use crate::cli::{DenseMode, LocomoArgs};

fn bar(len: u64, what: &str) -> ProgressBar {
    let style = ProgressStyle::with_template(&format!(
        "{{msg}} [{{bar:40}}] {{pos}}/{{len}} {what} ({{eta}})"
    ))
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    ProgressBar::new(len).with_style(style)
}

/// Runs the answer benchmark and prints its report.
pub fn run(args: &LocomoArgs) -> Result<()> {
    let start = Instant::now();
    let conversations = locomo::load_dir(&args.data, args.conversations.as_deref())
        .with_context(|| format!("cannot load LoCoMo data from {}", args.data.display()))?;
    let opts = AnswerOptions {
        baselines: args.baselines.iter().map(|&b| b.into()).collect(),
        limit: args.limit.map(|n| n as usize),
        max_tokens: args.max_tokens as usize,
        full_context_tokens: args.full_context_tokens.map(|n| n as usize),
    };
    let dir = std::env::temp_dir().join(format!("memkern-answers-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let embedder = match args.dense {
        DenseMode::Off => None,
        DenseMode::Auto => memkern_runtime::embed::load_default()
            .inspect_err(|why| tracing::warn!("keyword search only: {why}"))
            .ok(),
        DenseMode::On => Some(
            memkern_runtime::embed::load_default()
                .map_err(anyhow::Error::msg)
                .context("--dense on")?,
        ),
    };
    let mut config = Config::default();
    // Every memory a chat uses is promoted, so the second ask is warm.
    config.scheduler.promote_min_uses = 0.0;
    let (rt, _) = Runtime::open(&dir, config, embedder).context("temporary vault")?;
    let rt = Arc::new(rt);
    let llm = load_llm(args.model.model.as_deref(), &args.model.backend)?;
    let assistant = Assistant::new(rt.clone(), llm)?;
    let mut results = Vec::new();
    for conv in &conversations {
        let b = bar(conv.turn_count() as u64, "turns");
        b.set_message(format!("ingest {}", conv.id));
        let ing = answers::ingest(&rt, conv, || b.inc(1))?;
        b.finish_and_clear();
        let questions: Vec<_> = conv
            .questions
            .iter()
            .take(opts.limit.unwrap_or(usize::MAX))
            .collect();
        let b = bar(questions.len() as u64, "questions");
        b.set_message(format!("answer {}", conv.id));
        for q in questions {
            results.push(
                answers::answer(&assistant, &ing, &conv.id, q, &opts)
                    .with_context(|| format!("conversation {}: {:?}", conv.id, q.text))?,
            );
            b.inc(1);
        }
        b.finish_and_clear();
    }
    drop(assistant);
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
    let report = answers::summarise(
        conversations.iter().map(|c| c.id.clone()).collect(),
        results,
        start.elapsed(),
    );
    let out = if args.json {
        let mut s = serde_json::to_string(&report).context("cannot render the report as JSON")?;
        s.push('\n');
        s
    } else {
        render(&report, args.verbose)
    };
    let mut stdout = std::io::stdout().lock();
    stdout
        .write_all(out.as_bytes())
        .and_then(|()| stdout.flush())
        .context("cannot write standard output")
}

/// The table: per baseline, overall and per category F1 / BLEU-1, exact
/// match and contains, adversarial declines, tokens and latency.
fn render(r: &AnswerReport, verbose: bool) -> String {
    let mut s = String::new();
    let scored = r
        .questions
        .iter()
        .filter(|q| q.category != Category::Adversarial)
        .count();
    let _ = writeln!(
        s,
        "LoCoMo answers: conversations {}; {} questions (categories 1-4) + {} adversarial; {:.0} s",
        r.conversations.join(", "),
        scored,
        r.questions.len() - scored,
        r.wall_s
    );
    let _ = writeln!(
        s,
        "F1 / BLEU-1 as mem0's evaluation computes them; EM exact match; has = contains the gold answer\n"
    );
    let _ = write!(
        s,
        "{:<13} {:>11} {:>5} {:>5}",
        "baseline", "overall", "EM", "has"
    );
    for c in Category::SCORED {
        let _ = write!(s, " {:>11}", c.name());
    }
    let _ = writeln!(
        s,
        " {:>8} {:>4} {:>6} {:>5} {:>13} {:>13}",
        "declined", "rep", "tokens", "mem", "ttft p50/95", "total p50/95"
    );
    for b in &r.baselines {
        let _ = write!(
            s,
            "{:<13} {:>11} {:>5.2} {:>5.2}",
            b.baseline.name(),
            format!("{:.3}/{:.3}", b.overall.f1, b.overall.bleu1),
            b.overall.exact,
            b.overall.contains
        );
        for c in Category::SCORED {
            let v = b.categories.get(c.name()).cloned().unwrap_or_default();
            let _ = write!(s, " {:>11}", format!("{:.3}/{:.3}", v.f1, v.bleu1));
        }
        let _ = writeln!(
            s,
            " {:>8} {:>4} {:>6.0} {:>5.1} {:>13} {:>13}",
            format!("{:.2}", b.adversarial_declined),
            b.repeats,
            b.prompt_tokens,
            b.memories,
            format!("{:.0}/{:.0}", b.ttft_ms[0], b.ttft_ms[1]),
            format!("{:.0}/{:.0}", b.total_ms[0], b.total_ms[1]),
        );
    }
    if let Some([equal, of]) = r.warm_equal {
        let _ = writeln!(s, "\nmemkern_warm answers equal to memkern's: {equal}/{of}");
    }
    if verbose {
        for q in &r.questions {
            let _ = writeln!(
                s,
                "\n[{}] {} ({})\n  gold: {}",
                q.conversation,
                q.question,
                q.category.name(),
                q.gold
            );
            for a in &q.answers {
                let _ = writeln!(
                    s,
                    "  {:<13} f1 {:.2}  {}",
                    a.baseline.name(),
                    a.f1,
                    a.text.replace('\n', " ")
                );
            }
        }
    }
    s
}
