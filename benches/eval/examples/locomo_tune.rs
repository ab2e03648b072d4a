//! Tunes the retrieval parameters on the shared LoCoMo conversations
//! (coordinate ascent on overall recall) and prints the analyzer ablation.
//!
//! It exists so that `HybridParams::{KEYWORD_SIGNALS, DEFAULT}` and
//! `Analyzer::DEFAULT` are reproducible:
//! `cargo run --release -p memkern-eval --example locomo_tune -- ../shared/data/locomo`
//! tunes the keyword + signals ranker; with `DENSE=1` in the environment it
//! embeds every turn with all-MiniLM-L6-v2 and tunes the hybrid ranker
//! (dense weight, RRF comparison) instead. Both end with a
//! leave-one-conversation-out check.

use std::path::PathBuf;

use anyhow::{Context, Result};
use memkern_core::search::bm25::Bm25Params;
use memkern_core::search::hybrid::{Fusion, HybridParams};
use memkern_core::search::text::{Analyzer, Stemmer};
use memkern_eval::locomo::{self, Method, PreparedQuestion};
use memkern_runtime::embed;

const KS: [usize; 4] = [1, 5, 10, 20];

struct Prepared {
    store: locomo::ConversationStore,
    questions: Vec<PreparedQuestion>,
}

fn prepare(
    convs: &[locomo::Conversation],
    analyzer: Analyzer,
    dense: bool,
) -> Result<Vec<Prepared>> {
    let embedder = if dense {
        embed::load_default().ok()
    } else {
        None
    };
    convs
        .iter()
        .map(|c| {
            let store = locomo::ingest(
                c,
                analyzer,
                embedder
                    .as_deref()
                    .map(|e| e as &dyn memkern_runtime::embed::DenseEmbedder),
                || {},
            )?;
            let questions = locomo::prepare_questions(
                c,
                &store,
                embedder
                    .as_deref()
                    .map(|e| e as &dyn memkern_runtime::embed::DenseEmbedder),
            )?
            .questions;
            Ok(Prepared { store, questions })
        })
        .collect()
}

/// Overall recall at KS.
fn score(all: &[&Prepared], params: HybridParams, dense: bool) -> [f64; 4] {
    let method = Method {
        name: "tune".to_owned(),
        params,
        dense,
        exact_f32: false,
    };
    let mut outcomes = Vec::new();
    for p in all.iter() {
        for o in locomo::run_methods(
            &p.store,
            &p.questions,
            std::slice::from_ref(&method),
            &KS,
            || {},
        ) {
            outcomes.extend(o);
        }
    }
    let rows = locomo::aggregate(&outcomes, &KS);
    let overall = &rows[rows.len() - 1];
    KS.map(|k| overall.recall_at.get(&k).copied().unwrap_or(0.0))
}

fn objective(r: [f64; 4]) -> f64 {
    0.25 * r[1] + 0.5 * r[2] + 0.25 * r[3]
}

fn show(name: &str, r: [f64; 4]) {
    println!(
        "{name:<44} R@1 {:.3}  R@5 {:.3}  R@10 {:.3}  R@20 {:.3}",
        r[0], r[1], r[2], r[3]
    );
}

fn start_params(dense: bool) -> HybridParams {
    if dense {
        HybridParams::DEFAULT
    } else {
        HybridParams::KEYWORD_SIGNALS
    }
}

/// Coordinate ascent on the objective from the defaults.
fn ascent(all: &[&Prepared], dense: bool, verbose: bool) -> HybridParams {
    let mut best = start_params(dense);
    let mut best_score = objective(score(all, best, dense));
    type Knob = (
        &'static str,
        fn(&mut HybridParams) -> &mut f32,
        &'static [f32],
    );
    let knobs: Vec<Knob> = {
        let mut v: Vec<Knob> = vec![
            (
                "k1",
                |p| &mut p.bm25.k1,
                &[0.3, 0.45, 0.6, 0.8, 1.0, 1.2, 1.5],
            ),
            ("b", |p| &mut p.bm25.b, &[0.2, 0.3, 0.4, 0.5, 0.6, 0.75]),
            (
                "context_before",
                |p| &mut p.context_before,
                &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6],
            ),
            (
                "context_after",
                |p| &mut p.context_after,
                &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6],
            ),
            (
                "time_boost",
                |p| &mut p.time_boost,
                &[0.0, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 3.0],
            ),
            (
                "period_boost",
                |p| &mut p.period_boost,
                &[0.0, 0.3, 0.6, 1.0, 1.5, 2.0, 3.0],
            ),
            (
                "speaker_boost",
                |p| &mut p.speaker_boost,
                &[0.0, 0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0],
            ),
        ];
        if dense {
            v.push((
                "dense_weight",
                |p| &mut p.dense_weight,
                &[0.2, 0.4, 0.6, 0.8, 1.0, 1.3, 1.6, 2.0],
            ));
        }
        v
    };
    for round in 0..4 {
        let mut changed = false;
        for (name, field, values) in &knobs {
            for &v in *values {
                let mut p = best;
                *field(&mut p) = v;
                let s = objective(score(all, p, dense));
                if s > best_score + 1e-6 {
                    best_score = s;
                    best = p;
                    changed = true;
                    if verbose {
                        println!("round {round}: {name} = {v} -> objective {s:.4}");
                    }
                }
            }
        }
        if !changed {
            break;
        }
    }
    best
}

fn main() -> Result<()> {
    let dir = std::env::args()
        .nth(1)
        .map(PathBuf::from)
        .unwrap_or_else(|| {
            PathBuf::from(concat!(
                env!("CARGO_MANIFEST_DIR"),
                "/../../../shared/data/locomo"
            ))
        });
    let convs = locomo::load_dir(&dir, None).context("load LoCoMo")?;
    let dense = std::env::var_os("DENSE").is_some();

    println!("== analyzer ablation (BM25 only / BM25 + signals at defaults)");
    for stemmer in [Stemmer::None, Stemmer::Plural, Stemmer::Light] {
        for drop_stopwords in [false, true] {
            let a = Analyzer {
                stemmer,
                drop_stopwords,
            };
            let all = prepare(&convs, a, false)?;
            let all: Vec<&Prepared> = all.iter().collect();
            let name = format!("{stemmer:?} stopwords={drop_stopwords}");
            show(
                &format!("{name} bm25"),
                score(&all, HybridParams::KEYWORD_ONLY, false),
            );
            let sig = HybridParams::KEYWORD_SIGNALS;
            show(&format!("{name} bm25+signals"), score(&all, sig, false));
        }
    }

    let all = prepare(&convs, Analyzer::DEFAULT, dense)?;
    println!("== BM25 k1/b grid (keyword only)");
    for k1 in [0.6f32, 0.9, 1.2, 1.5, 2.0] {
        for b in [0.3f32, 0.5, 0.75, 0.9] {
            let p = HybridParams {
                bm25: Bm25Params { k1, b },
                ..HybridParams::KEYWORD_ONLY
            };
            show(
                &format!("k1={k1} b={b}"),
                score(&all.iter().collect::<Vec<_>>(), p, false),
            );
        }
    }

    println!("== coordinate ascent (dense: {dense})");
    let refs: Vec<&Prepared> = all.iter().collect();
    let best = ascent(&refs, dense, true);
    if dense {
        for k in [10.0f32, 30.0, 60.0] {
            for depth in [50u32, 100, 300] {
                let p = HybridParams {
                    fusion: Fusion::Rrf { k, depth },
                    ..best
                };
                show(&format!("rrf k={k} depth={depth}"), score(&refs, p, true));
            }
        }
    }
    println!("best: {best:?}");
    show("best", score(&refs, best, dense));
    show("DEFAULT", score(&refs, start_params(dense), dense));

    println!("== leave-one-conversation-out: tune on five, test on the sixth");
    let mut held = Vec::new();
    for (i, test) in all.iter().enumerate() {
        let train: Vec<&Prepared> = all
            .iter()
            .enumerate()
            .filter(|&(j, _)| j != i)
            .map(|(_, p)| p)
            .collect();
        let p = ascent(&train, dense, false);
        let r = score(&[test], p, dense);
        show(&format!("held out {}", convs[i].id), r);
        held.push((test.questions.len() as f64, r));
    }
    let n: f64 = held.iter().map(|h| h.0).sum();
    let mut avg = [0.0; 4];
    for (w, r) in &held {
        for (a, x) in avg.iter_mut().zip(r) {
            *a += w * x / n;
        }
    }
    show("held-out average (question-weighted)", avg);
    Ok(())
}
