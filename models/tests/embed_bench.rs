//! Embedder speed (ignored by default; run with
//! `cargo test -p memkern-models --features embed --test embed_bench -- --ignored --nocapture`):
//! load time, one ~12-token query, batches of 32 LoCoMo dialogue turns —
//! for the shipped plan (symbolic batch and sequence dimensions) beside a
//! plan re-optimised for each concrete shape.
#![cfg(feature = "embed")]

use std::time::{Duration, Instant};

use memkern_models::embed::{Embedder, export_onnx_files};
use memkern_models::fetch::{MINILM_L6_V2, ModelCache};
use tract_onnx::prelude::*;

const QUERY: &str = "What did Caroline say about the LGBTQ support group?";

fn locomo_turns(n: usize) -> Vec<String> {
    let path = concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../../shared/data/locomo/26.json"
    );
    let doc: serde_json::Value = serde_json::from_slice(&std::fs::read(path).unwrap()).unwrap();
    let mut out = Vec::new();
    for s in 1.. {
        let Some(turns) = doc.get(format!("session_{s}")).and_then(|v| v.as_array()) else {
            break;
        };
        for t in turns {
            let speaker = t["speaker"].as_str().unwrap_or("");
            let text = t["text"].as_str().unwrap_or("");
            out.push(format!("{speaker}: {text}"));
        }
    }
    out.truncate(n);
    out
}

/// Resident set size of this process, from /proc (0 elsewhere).
fn rss_mib() -> f64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: f64 = statm
        .split(' ')
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0.0);
    pages * 4096.0 / (1024.0 * 1024.0)
}

fn median(mut v: Vec<Duration>) -> Duration {
    v.sort();
    v[v.len() / 2]
}

fn percentile(mut v: Vec<Duration>, p: f64) -> f64 {
    v.sort();
    let i = ((v.len() as f64 - 1.0) * p).round() as usize;
    v[i].as_secs_f64() * 1e3
}

/// One query and 64-turn batches on one thread and on the default pool,
/// interleaved so load from other processes hits both alike.
fn threads_side_by_side(files: &memkern_models::fetch::ModelFiles, q_tokens: usize) {
    use memkern_models::embed::EmbedderOptions;
    let one = Embedder::load_with(
        files,
        EmbedderOptions {
            threads: Some(1),
            ..Default::default()
        },
    )
    .unwrap();
    let many = Embedder::load(files).unwrap();
    let n = memkern_models::llama::native::Threads::default_count();
    assert_eq!(one.embed(&[QUERY]).unwrap(), many.embed(&[QUERY]).unwrap());
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..200 {
        let t = Instant::now();
        one.embed(&[QUERY]).unwrap();
        a.push(t.elapsed());
        let t = Instant::now();
        many.embed(&[QUERY]).unwrap();
        b.push(t.elapsed());
    }
    eprintln!(
        "one query ({q_tokens} tokens), 200 runs: 1 thread p50 {:.2} / p95 {:.2} ms; \
         {n} threads p50 {:.2} / p95 {:.2} ms",
        percentile(a.clone(), 0.5),
        percentile(a, 0.95),
        percentile(b.clone(), 0.5),
        percentile(b, 0.95)
    );
    let turns = locomo_turns(64);
    let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
    let (mut a, mut b) = (Vec::new(), Vec::new());
    for _ in 0..3 {
        let t = Instant::now();
        one.embed(&refs).unwrap();
        a.push(t.elapsed());
        let t = Instant::now();
        many.embed(&refs).unwrap();
        b.push(t.elapsed());
    }
    let rate = |d: Duration| refs.len() as f64 / d.as_secs_f64();
    eprintln!(
        "64 LoCoMo turns, best of 3: 1 thread {:.1} sentences/s; {n} threads {:.1} sentences/s",
        rate(*a.iter().min().unwrap()),
        rate(*b.iter().min().unwrap())
    );
}

#[test]
#[ignore = "benchmark: prints timings"]
fn embedder_speed() {
    let files = ModelCache::from_env()
        .unwrap()
        .ensure(&MINILM_L6_V2)
        .unwrap();
    // First use in a fresh directory: export to ONNX, cache it, load.
    let dir = std::env::temp_dir().join(format!("memkern-embed-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    for name in ["model.safetensors", "config.json", "tokenizer.json"] {
        std::fs::copy(files.path(name).unwrap(), dir.join(name)).unwrap();
    }
    let t = Instant::now();
    drop(Embedder::from_dir(&dir, Default::default()).unwrap());
    eprintln!(
        "first load (export + cache write + load, files hashed): {:.2} s",
        t.elapsed().as_secs_f64()
    );
    let _ = std::fs::remove_dir_all(&dir);

    let t = Instant::now();
    let e = Embedder::load(&files).unwrap();
    eprintln!("load (ONNX cached): {:.2} s", t.elapsed().as_secs_f64());

    let q_tokens = e.tokenize(QUERY).unwrap().len();
    threads_side_by_side(&files, q_tokens);
    let _ = e.embed(&[QUERY]).unwrap();
    let runs: Vec<Duration> = (0..30)
        .map(|_| {
            let t = Instant::now();
            e.embed(&[QUERY]).unwrap();
            t.elapsed()
        })
        .collect();
    eprintln!(
        "dynamic plan: one query ({q_tokens} tokens): median {:.2} ms",
        median(runs).as_secs_f64() * 1e3
    );

    let turns = locomo_turns(32 * 8);
    let refs: Vec<&str> = turns.iter().map(String::as_str).collect();
    let tokens: usize = refs.iter().map(|t| e.tokenize(t).unwrap().len()).sum();
    let _ = e.embed(&refs[..32]).unwrap();
    let t = Instant::now();
    for chunk in refs.chunks(32) {
        e.embed(chunk).unwrap();
    }
    let secs = t.elapsed().as_secs_f64();
    eprintln!(
        "dynamic plan: {} LoCoMo turns ({:.1} tokens avg) in batches of 32: {:.1} sentences/s",
        refs.len(),
        tokens as f64 / refs.len() as f64,
        refs.len() as f64 / secs
    );

    let t = Instant::now();
    e.embed(&refs).unwrap();
    eprintln!(
        "dynamic plan: the same {} turns in one call (sorted by length, then batches of 32): \
         {:.1} sentences/s",
        refs.len(),
        refs.len() as f64 / t.elapsed().as_secs_f64()
    );

    // The alternative: re-optimise the graph for each concrete shape.
    let bytes = export_onnx_files(
        files.path("model.safetensors").unwrap(),
        files.path("config.json").unwrap(),
    )
    .unwrap();
    let onnx = tract_onnx::onnx();
    let proto = onnx.proto_model_for_read(&mut &bytes[..]).unwrap();
    let typed = onnx
        .model_for_proto_model(&proto)
        .unwrap()
        .into_typed()
        .unwrap();
    let typed = typed.into_decluttered().unwrap();
    let batch = typed.sym("batch");
    let seq = typed.sym("sequence");
    let plan_for = |b: usize, s: usize| {
        let mut subs = std::collections::HashMap::new();
        subs.insert(batch.clone(), TDim::from(b as i64));
        subs.insert(seq.clone(), TDim::from(s as i64));
        typed
            .set_symbols(&subs)
            .unwrap()
            .into_optimized()
            .unwrap()
            .into_runnable()
            .unwrap()
    };
    let inputs = |b: usize, s: usize| -> TVec<TValue> {
        let ids = Tensor::from_shape(&[b, s], &vec![1000i64; b * s]).unwrap();
        let mask = Tensor::from_shape(&[b, s], &vec![1i64; b * s]).unwrap();
        tvec!(ids.into(), mask.into())
    };
    let rss_before = rss_mib();
    let t = Instant::now();
    let plan = plan_for(1, q_tokens);
    let optimise = t.elapsed();
    let rss_after = rss_mib();
    let _ = plan.run(inputs(1, q_tokens)).unwrap();
    let q_ids = e.tokenize(QUERY).unwrap();
    // Interleaved, so load from other processes hits both plans alike.
    let (mut dynamic, mut fixed) = (Vec::new(), Vec::new());
    for _ in 0..40 {
        let t = Instant::now();
        e.embed_token_ids(&[&q_ids]).unwrap();
        dynamic.push(t.elapsed());
        let t = Instant::now();
        plan.run(inputs(1, q_tokens)).unwrap();
        fixed.push(t.elapsed());
    }
    eprintln!(
        "one query ({q_tokens} tokens), interleaved: dynamic plan median {:.2} ms; per-shape plan \
         median {:.2} ms after {:.0} ms of optimisation and +{:.0} MiB RSS per shape",
        median(dynamic).as_secs_f64() * 1e3,
        median(fixed).as_secs_f64() * 1e3,
        optimise.as_secs_f64() * 1e3,
        rss_after - rss_before
    );
    let s = 32;
    let t = Instant::now();
    let plan = plan_for(32, s);
    let optimise = t.elapsed();
    let _ = plan.run(inputs(32, s)).unwrap();
    let t = Instant::now();
    for _ in 0..4 {
        plan.run(inputs(32, s)).unwrap();
    }
    let per = t.elapsed().as_secs_f64() / 4.0;
    let dyn_t = Instant::now();
    let fixed: Vec<Vec<u32>> = (0..32).map(|_| vec![1000u32; s]).collect();
    let fixed_refs: Vec<&[u32]> = fixed.iter().map(Vec::as_slice).collect();
    for _ in 0..4 {
        e.embed_token_ids(&fixed_refs).unwrap();
    }
    let dyn_per = dyn_t.elapsed().as_secs_f64() / 4.0;
    eprintln!(
        "batch 32×{s} tokens: per-shape plan {:.1} ms (+{:.0} ms optimise), dynamic plan {:.1} ms",
        per * 1e3,
        optimise.as_secs_f64() * 1e3,
        dyn_per * 1e3
    );
}
