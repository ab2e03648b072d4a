//! LLM and activation-memory benchmark.
//!
//! ```sh
//! benches/llama-cpp/build.sh                                    # llama.cpp baseline, cached
//! cargo bench -p memkern-benches --bench llm                    # CPU (flex)
//! MEMKERN_BENCH_ONLY=speed cargo bench -p memkern-benches --bench llm   # the llama.cpp table only
//! cargo bench -p memkern-benches --bench llm --features wgpu    # + wgpu if an adapter exists
//! ```
//!
//! First, the native CPU path beside llama.cpp's `llama-bench` on the same
//! GGUF in the same run: pp128, pp512 and tg128 at 1 and 2 threads with
//! the ratio ours / llama.cpp per cell (rounds alternate the two, each
//! cell keeps its best; `MEMKERN_BENCH_ROUNDS`, default 2) (`LLAMA_CPP_BENCH` names the
//! binary; by default the one `benches/llama-cpp/build.sh` caches; absent,
//! our numbers print alone). Then, per backend: model load time; prefill
//! tok/s at 128 and 512 tokens; decode tok/s; time-to-first-token for a
//! ~1000-token memory prefix plus a ~20-token question, cold (prefill
//! everything) against warm (read the prefix's KV snapshot from a file,
//! restore it, prefill the question), with snapshot sizes and read times
//! for f32/f16/q8 and the warm/cold ratios; the quality effect of f16/q8
//! storage; the dense burn path as a baseline; a breakdown of where time
//! goes; peak RSS.
//!
//! Environment: `MEMKERN_BENCH_BACKENDS=cpu,wgpu` chooses backends;
//! `MEMKERN_BENCH_ONLY=speed` stops after the llama.cpp table;
//! `MEMKERN_BENCH_TESTS=pp512,tg128` narrows that table (for profiling);
//! `MEMKERN_MODEL_DIR` the model cache. Text comes from LoCoMo conversation
//! 26 (`../shared/data/locomo/26.json`).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use memkern_core::cube::KvDtype;
use memkern_models::fetch::{ModelCache, SMOLLM2_135M_Q4_1};
use memkern_models::llama::{Backend, KvCache, Logits};
use memkern_models::sampling::argmax;
use memkern_models::tokenizer::ChatMessage;
use memkern_models::{Llm, Sampler, Snapshot, SnapshotOptions};
use serde_json::Value;

mod common;
use common::peak_rss_mib;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    v[v.len() / 2]
}

fn shared_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../../shared")
}

/// LoCoMo conversation 26 as "Speaker: text" lines.
fn locomo_lines() -> Result<Vec<String>> {
    let path = shared_dir().join("data/locomo/26.json");
    let v: Value = serde_json::from_str(&std::fs::read_to_string(&path)?)?;
    let mut lines = Vec::new();
    for i in 1..=40 {
        if let Some(turns) = v.get(format!("session_{i}")).and_then(Value::as_array) {
            for t in turns {
                if let (Some(s), Some(x)) = (t["speaker"].as_str(), t["text"].as_str()) {
                    lines.push(format!("{s}: {x}"));
                }
            }
        }
    }
    Ok(lines)
}

struct Workload {
    /// Plain dialogue tokens for the prefill measurements.
    text: Vec<u32>,
    /// ChatML system turn with ~1000 tokens of memory.
    memory: Vec<u32>,
    /// ChatML user turn + assistant header (~20 tokens).
    query: Vec<u32>,
}

fn workload(llm: &Llm) -> Result<Workload> {
    let tok = llm.tokenizer();
    let lines = locomo_lines()?;
    let text = tok.encode_literal(&lines.join("\n"))?;
    let mut memory_text = String::from("Memories of earlier conversations:\n");
    let mut memory = Vec::new();
    for l in &lines {
        let mut next = memory_text.clone();
        next.push_str(l);
        next.push('\n');
        let ids = tok.encode_chat(&[ChatMessage::system(next.clone())], false)?;
        if ids.len() > 1000 {
            break;
        }
        memory_text = next;
        memory = ids;
    }
    let query = tok.encode_chat(
        &[ChatMessage::user(
            "What did Caroline research after the support group?",
        )],
        true,
    )?;
    Ok(Workload {
        text,
        memory,
        query,
    })
}

struct Sizes {
    prefill: Vec<usize>,
    decode: usize,
    repeats: usize,
}

fn sizes(backend: Backend) -> Sizes {
    match backend {
        Backend::Cpu => Sizes {
            prefill: vec![128, 512],
            decode: 64,
            repeats: 3,
        },
        // Software Vulkan (lavapipe) is slow: fewer tokens, one run.
        Backend::Wgpu => Sizes {
            prefill: vec![128, 512],
            decode: 16,
            repeats: 1,
        },
    }
}

#[derive(Default)]
struct Measured {
    prefill_tps: Vec<(usize, f64)>,
    decode_tps: f64,
}

fn bench_backend(backend: Backend, gguf: &Path, dir: &Path) -> Result<Measured> {
    println!("\n## backend: {backend}\n");
    let t = Instant::now();
    let mut llm = Llm::load(gguf, backend)?;
    println!(
        "model load: {:.0} ms (GGUF map, dequantise to f32, tokenizer, fingerprint)",
        ms(t.elapsed())
    );
    let w = workload(&llm)?;
    let sz = sizes(backend);
    let m = speed(&llm, &w, &sz)?;
    let cold = ttft(&llm, &w, dir)?;
    if backend == Backend::Cpu {
        // The baseline in the same process: the same numerics on burn's
        // dense f32 matmuls over dequantised weights (the path wgpu and
        // LoRA training take), instead of the native ggml-exact kernels.
        llm.set_native_kernels(false);
        println!("\n## backend: {backend}, dense burn path (baseline: native kernels off)\n");
        let dense = speed(&llm, &w, &sz)?;
        let dense_cold = ttft(&llm, &w, dir)?;
        profile(&llm, &w)?;
        llm.set_native_kernels(true);
        println!("\n### native kernels / dense burn path (same process)\n");
        println!("| measure | native | dense | native speed-up |");
        println!("|---|---:|---:|---:|");
        for ((n, a), (_, b)) in m.prefill_tps.iter().zip(&dense.prefill_tps) {
            println!("| prefill {n} tok/s | {a:.1} | {b:.1} | {:.2}× |", a / b);
        }
        println!(
            "| decode tok/s | {:.1} | {:.1} | {:.2}× |",
            m.decode_tps,
            dense.decode_tps,
            m.decode_tps / dense.decode_tps
        );
        println!(
            "| cold TTFT ms | {cold:.0} | {dense_cold:.0} | {:.2}× |",
            dense_cold / cold
        );
    }
    if let Some(rss) = peak_rss_mib() {
        println!("\npeak RSS so far: {rss:.0} MiB");
    }
    Ok(m)
}

/// Prefill tok/s at each size and decode tok/s.
fn speed(llm: &Llm, w: &Workload, sz: &Sizes) -> Result<Measured> {
    let mut m = Measured::default();
    // Warm-up: thread pools, allocator, shader compilation on wgpu.
    for &n in &sz.prefill {
        llm.session().prefill(&w.text[..n])?;
    }
    println!(
        "| prefill tokens | time (ms, median of {}) | tok/s |",
        sz.repeats
    );
    println!("|---:|---:|---:|");
    for &n in &sz.prefill {
        let runs: Vec<f64> = (0..sz.repeats)
            .map(|_| {
                let mut s = llm.session();
                let t = Instant::now();
                s.prefill(&w.text[..n]).map(|_| ms(t.elapsed()))
            })
            .collect::<std::result::Result<_, _>>()?;
        let t = median(runs);
        let tps = n as f64 / (t / 1e3);
        println!("| {n} | {t:.1} | {tps:.1} |");
        m.prefill_tps.push((n, tps));
    }
    let mut s = llm.session();
    s.prefill(&w.text[..128])?;
    let mut sampler = Sampler::greedy();
    s.step(&mut sampler)?; // warm-up step
    let t = Instant::now();
    for _ in 0..sz.decode {
        s.step(&mut sampler)?;
    }
    let per = ms(t.elapsed()) / sz.decode as f64;
    m.decode_tps = 1e3 / per;
    println!(
        "\ndecode: {:.1} tok/s ({per:.1} ms/token, {} greedy tokens after a 128-token prompt)",
        m.decode_tps, sz.decode
    );
    Ok(m)
}

/// Cold vs warm time-to-first-token, snapshot sizes and read times, and
/// the quality effect of the snapshot dtype. Returns the cold TTFT (ms).
fn ttft(llm: &Llm, w: &Workload, dir: &Path) -> Result<f64> {
    let (mem, q) = (&w.memory, &w.query);
    println!(
        "\n### TTFT: {}-token memory prefix + {}-token question\n",
        mem.len(),
        q.len()
    );
    let prompt: Vec<u32> = mem.iter().chain(q).copied().collect();
    let mut sampler = Sampler::greedy();

    // Cold: prefill everything, sample the first token. Warm-up once.
    llm.session().prefill(&prompt)?;
    let mut cold_runs = Vec::new();
    let mut cold_logits = Vec::new();
    for _ in 0..2 {
        let mut s = llm.session();
        let t = Instant::now();
        s.prefill(&prompt)?;
        s.sample(&mut sampler)?;
        cold_runs.push(ms(t.elapsed()));
        cold_logits = s.logits().map(<[f32]>::to_vec).unwrap_or_default();
    }
    let cold = median(cold_runs);
    println!(
        "cold TTFT (prefill {} tokens): {cold:.1} ms\n",
        prompt.len()
    );

    // Build the memory snapshots once (not timed as TTFT).
    let mut base = llm.session();
    base.prefill(mem)?;
    println!(
        "| KV dtype | snapshot bytes | read+verify (ms) | restore (ms) | question prefill (ms) | warm TTFT (ms) | warm/cold |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    let mut results = Vec::new();
    for dtype in [KvDtype::F32, KvDtype::F16, KvDtype::Q8] {
        let path = dir.join(format!("memory-{dtype:?}.mkv"));
        let snap = base.snapshot(
            0..mem.len(),
            SnapshotOptions {
                dtype,
                include_logits: false,
            },
        )?;
        snap.write(&path)?;
        let size = snap.bytes().len();
        drop(snap);
        let mut best: Option<(f64, f64, f64, f64)> = None;
        let mut logits = Vec::new();
        let mut ids = Vec::new();
        for _ in 0..3 {
            let mut s = llm.session();
            let t0 = Instant::now();
            let snap = Snapshot::read(&path)?;
            let t1 = Instant::now();
            s.restore(&snap)?;
            let t2 = Instant::now();
            s.prefill(q)?;
            let first = s.sample(&mut sampler)?;
            let t3 = Instant::now();
            let total = ms(t3 - t0);
            if best.is_none_or(|b| total < b.3) {
                best = Some((ms(t1 - t0), ms(t2 - t1), ms(t3 - t2), total));
            }
            logits = s.logits().map(<[f32]>::to_vec).unwrap_or_default();
            ids = vec![first];
        }
        let (read, restore, prefill, total) = best.unwrap_or_default();
        println!(
            "| {dtype:?} | {size} | {read:.1} | {restore:.1} | {prefill:.1} | {total:.1} | {:.2} % |",
            100.0 * total / cold
        );
        // Continue greedily for the quality comparison.
        let mut s = llm.session();
        s.restore(&Snapshot::read(&path)?)?;
        s.prefill(q)?;
        ids.clear();
        for _ in 0..32 {
            ids.push(s.step(&mut sampler)?);
        }
        results.push((dtype, logits, ids));
    }

    // Quality: each dtype against the exact (f32) restore, and f32 against
    // the one-batch cold prefill.
    println!("\n| KV dtype | max abs logit diff vs f32 | greedy agreement vs f32 (32 tokens) |");
    println!("|---|---:|---:|");
    let (_, ref_logits, ref_ids) = &results[0];
    for (dtype, logits, ids) in &results {
        let diff = logits
            .iter()
            .zip(ref_logits)
            .map(|(a, b)| (a - b).abs())
            .fold(0f32, f32::max);
        let agree = ids.iter().zip(ref_ids).take_while(|(a, b)| a == b).count();
        println!("| {dtype:?} | {diff:.4} | {agree}/32 |");
    }
    let diff = cold_logits
        .iter()
        .zip(ref_logits)
        .map(|(a, b)| (a - b).abs())
        .fold(0f32, f32::max);
    println!(
        "\nf32 restore + question vs one-batch cold prefill: max |Δlogit| {diff:.2e}, same first token: {}",
        argmax(&cold_logits) == argmax(ref_logits)
    );
    Ok(cold)
}

/// Where the time goes on the CPU: rounding of matmul inputs to Q8
/// blocks, the seven projections of all layers and the LM head, each timed
/// alone with the model's own weights, against a whole decode step and a
/// whole 512-token prefill.
fn profile(llm: &Llm, w: &Workload) -> Result<()> {
    use burn::tensor::{Tensor, TensorData};
    let model = llm.model();
    let c = llm.config();
    let nx = model.numerics;
    println!("\n### CPU profile ({nx:?} numerics)\n");
    println!(
        "| phase | rows | input rounding (ms) | projections (ms) | LM head (ms) | whole forward (ms) | rest: attention, norms, RoPE, glue (ms) |"
    );
    println!("|---|---:|---:|---:|---:|---:|---:|");
    for rows in [1usize, 512] {
        let x = |d: usize| {
            let v: Vec<f32> = (0..rows * d)
                .map(|i| ((i % 97) as f32 - 48.0) / 97.0)
                .collect();
            Tensor::<2>::from_data(TensorData::new(v, [rows, d]), llm.device())
        };
        let (xh, xf, xq) = (x(c.hidden), x(c.ffn), x(c.heads * c.head_dim));
        let reps = if rows == 1 { 20 } else { 2 };
        // Four rounded inputs per layer: attention in, attention out, MLP
        // in, MLP down-projection in.
        let t = Instant::now();
        let mut rounded = None;
        for _ in 0..reps {
            for _ in &model.blocks {
                for input in [&xh, &xq, &xh, &xf] {
                    let r = nx.quantize(input.clone());
                    let _ = r.0.clone().into_data();
                    rounded = Some(r);
                }
            }
        }
        let rounding = ms(t.elapsed()) / reps as f64;
        drop(rounded);
        let (qh, qf, qq) = (
            nx.quantize(xh.clone()),
            nx.quantize(xf.clone()),
            nx.quantize(xq.clone()),
        );
        let t = Instant::now();
        for _ in 0..reps {
            for b in &model.blocks {
                let a = &b.attn;
                for out in [
                    a.q.forward_quantized(&qh),
                    a.k.forward_quantized(&qh),
                    a.v.forward_quantized(&qh),
                    a.o.forward_quantized(&qq),
                    b.mlp.gate.forward_quantized(&qh),
                    b.mlp.up.forward_quantized(&qh),
                    b.mlp.down.forward_quantized(&qf),
                ] {
                    let _ = out.into_data();
                }
            }
        }
        let proj = ms(t.elapsed()) / reps as f64;
        let t = Instant::now();
        for _ in 0..reps {
            let last = qh.0.clone().slice([0..1, 0..c.hidden]);
            let _ = last.matmul(model.token_embd.val().transpose()).into_data();
        }
        let head = ms(t.elapsed()) / reps as f64;
        // The whole forward at the same size (KV cache empty for prefill,
        // 128 cached tokens for decode).
        let mut cache = KvCache::new(c, llm.device());
        let whole = if rows == 1 {
            model.forward(&w.text[..128], &mut cache, Logits::Last)?;
            let t = Instant::now();
            for i in 0..reps {
                let _ = model
                    .forward(&w.text[128 + i..129 + i], &mut cache, Logits::Last)?
                    .into_data();
            }
            ms(t.elapsed()) / reps as f64
        } else {
            let t = Instant::now();
            let _ = model
                .forward(&w.text[..rows], &mut cache, Logits::Last)?
                .into_data();
            ms(t.elapsed())
        };
        println!(
            "| {} | {rows} | {rounding:.1} | {proj:.1} | {head:.1} | {whole:.1} | {:.1} |",
            if rows == 1 { "decode" } else { "prefill" },
            (whole - proj - head - rounding).max(0.0)
        );
    }
    Ok(())
}

/// One cell of the speed table: a llama-bench test name and its size.
#[derive(Clone, Copy)]
enum Test {
    /// Prefill of `n` prompt tokens in one batch.
    Pp(usize),
    /// `n` decoded tokens, one at a time, from an empty context.
    Tg(usize),
}

impl Test {
    fn name(self) -> String {
        match self {
            Test::Pp(n) => format!("pp{n}"),
            Test::Tg(n) => format!("tg{n}"),
        }
    }
}

/// Our tok/s for `test` on the native CPU path (best of `reps`, as
/// llama-bench reports the mean of its repetitions after a warm-up; the
/// best is the less noisy on a shared VM).
fn ours(llm: &Llm, w: &Workload, test: Test, reps: usize) -> Result<f64> {
    let mut best = f64::MAX;
    for rep in 0..=reps {
        let mut s = llm.session();
        let t = Instant::now();
        match test {
            Test::Pp(n) => {
                s.prefill(&w.text[..n])?;
            }
            Test::Tg(n) => {
                // llama-bench's tg: one token after another from position
                // 0, each through the whole model and the LM head.
                let mut sampler = Sampler::greedy();
                s.prefill(&w.text[..1])?;
                for _ in 1..n {
                    s.step(&mut sampler)?;
                }
            }
        }
        if rep > 0 {
            best = best.min(t.elapsed().as_secs_f64());
        }
    }
    let n = match test {
        Test::Pp(n) | Test::Tg(n) => n,
    };
    Ok(n as f64 / best)
}

/// llama.cpp's `llama-bench`: the one given by `LLAMA_CPP_BENCH`, else
/// the one `benches/llama-cpp/build.sh` caches under `target/llama.cpp`.
fn llama_bench() -> Option<PathBuf> {
    if let Some(p) = std::env::var_os("LLAMA_CPP_BENCH") {
        return Some(PathBuf::from(p));
    }
    let cached =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../target/llama.cpp/build/bin/llama-bench");
    cached.is_file().then_some(cached)
}

/// llama.cpp's tok/s for `tests` on `gguf` with `threads` threads (best
/// of 3 repetitions), keyed by test name.
fn theirs(bin: &Path, gguf: &Path, threads: usize, tests: &[Test]) -> Result<Vec<(String, f64)>> {
    // llama-bench's -p and -n lists: the sizes of each kind of test.
    let sizes = |decode: bool| -> String {
        let n: Vec<String> = tests
            .iter()
            .filter_map(|t| match (t, decode) {
                (Test::Pp(n), false) | (Test::Tg(n), true) => Some(n.to_string()),
                _ => None,
            })
            .collect();
        n.join(",")
    };
    let (pp, tg) = (sizes(false), sizes(true));
    let out = Command::new(bin)
        .arg("-m")
        .arg(gguf)
        .args(["-p", &pp, "-n", &tg, "-t"])
        .arg(threads.to_string())
        .args(["-r", "3", "-o", "json"])
        .output()?;
    if !out.status.success() {
        return Err(format!(
            "llama-bench failed: {}",
            String::from_utf8_lossy(&out.stderr)
        )
        .into());
    }
    let v: Value = serde_json::from_slice(&out.stdout)?;
    let mut rows = Vec::new();
    for r in v.as_array().into_iter().flatten() {
        let (np, ng) = (
            r["n_prompt"].as_u64().unwrap_or(0),
            r["n_gen"].as_u64().unwrap_or(0),
        );
        let name = if ng > 0 {
            format!("tg{ng}")
        } else {
            format!("pp{np}")
        };
        // The best repetition, as ours is reported (a shared VM's noise
        // only ever slows a run down).
        let best = r["samples_ts"]
            .as_array()
            .into_iter()
            .flatten()
            .filter_map(Value::as_f64)
            .fold(None, |m: Option<f64>, v| Some(m.map_or(v, |m| m.max(v))));
        rows.push((name, best.or(r["avg_ts"].as_f64()).unwrap_or(0.0)));
    }
    Ok(rows)
}

/// The table issue 19 asks for: pp128, pp512 and tg128 at 1 and 2
/// threads, ours beside llama.cpp's on the same GGUF in the same run.
fn versus_llama_cpp(gguf: &Path) -> Result<()> {
    // `MEMKERN_BENCH_TESTS=pp512` narrows the table (for profiling).
    let only = std::env::var("MEMKERN_BENCH_TESTS").unwrap_or_default();
    let tests: Vec<Test> = [Test::Pp(128), Test::Pp(512), Test::Tg(128)]
        .into_iter()
        .filter(|t| only.is_empty() || only.split(',').any(|n| n.trim() == t.name()))
        .collect();
    let bin = llama_bench();
    println!("\n## Native CPU path beside llama.cpp (same GGUF, same threads, this run)\n");
    match &bin {
        Some(b) => println!("llama.cpp: {}", b.display()),
        None => println!(
            "llama.cpp's llama-bench not found (set LLAMA_CPP_BENCH or run benches/llama-cpp/build.sh): our numbers alone"
        ),
    }
    println!("\n| threads | test | memkern tok/s | llama.cpp tok/s | memkern / llama.cpp |");
    println!("|---:|---|---:|---:|---:|");
    let mut llm = Llm::load(gguf, Backend::Cpu)?;
    let w = workload(&llm)?;
    let cpus = std::thread::available_parallelism().map_or(1, |n| n.get());
    // Rounds alternate llama.cpp and memkern; each cell keeps its best, so
    // a burst of load on a shared VM does not decide a ratio.
    let rounds: usize = std::env::var("MEMKERN_BENCH_ROUNDS")
        .ok()
        .and_then(|v| v.parse().ok())
        .filter(|&r| r > 0)
        .unwrap_or(2);
    for threads in [1, 2].into_iter().filter(|&t| t <= cpus.max(2)) {
        llm.set_threads(threads)?;
        let mut reference: Vec<(String, f64)> = Vec::new();
        let mut mine_best = vec![0f64; tests.len()];
        for _ in 0..rounds {
            if let Some(b) = &bin {
                match theirs(b, gguf, threads, &tests) {
                    Ok(rows) => {
                        for (name, v) in rows {
                            match reference.iter_mut().find(|(n, _)| *n == name) {
                                Some(cell) => cell.1 = cell.1.max(v),
                                None => reference.push((name, v)),
                            }
                        }
                    }
                    Err(e) => println!("({e})"),
                }
            }
            for (best, &test) in mine_best.iter_mut().zip(&tests) {
                *best = best.max(ours(&llm, &w, test, 3)?);
            }
        }
        for (&mine, &test) in mine_best.iter().zip(&tests) {
            let name = test.name();
            match reference.iter().find(|(n, _)| *n == name) {
                Some((_, t)) => println!(
                    "| {threads} | {name} | {mine:.1} | {t:.1} | **{:.2}** |",
                    mine / t
                ),
                None => println!("| {threads} | {name} | {mine:.1} | – | – |"),
            }
        }
    }
    Ok(())
}

/// Resident set size now (`VmRSS`), MiB.
fn rss_mib() -> Option<f64> {
    let s = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = s.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: f64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb / 1024.0)
}

fn main() -> Result<()> {
    let threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    println!("# memkern LLM benchmark (SmolLM2-135M-Instruct Q4_1, {threads} CPU threads)");
    let files = ModelCache::from_env()?.ensure(&SMOLLM2_135M_Q4_1)?;
    let gguf = files.gguf().ok_or("no gguf")?.to_path_buf();
    let dir = std::env::temp_dir().join(format!("memkern-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    versus_llama_cpp(&gguf)?;
    // The same table for K-quant variants made by `memkern models
    // quantize` (byte for byte llama-quantize's files), issue 15's
    // "each model × quant": `MEMKERN_BENCH_QUANTS=Q4_K_M,Q6_K` (default
    // Q4_K_M; `none` skips).
    let quants = std::env::var("MEMKERN_BENCH_QUANTS").unwrap_or_else(|_| "Q4_K_M".into());
    for q in quants
        .split(',')
        .map(str::trim)
        .filter(|q| !q.is_empty() && *q != "none")
    {
        let ftype: memkern_models::quantize::FileType = q.parse()?;
        let path = dir.join(format!("smollm2-{ftype}.gguf"));
        let t = std::time::Instant::now();
        memkern_models::quantize::quantize_file(&gguf, &path, ftype, true, &mut |_, _| {})?;
        let bytes = std::fs::metadata(&path)?.len();
        println!(
            "\n### SmolLM2-135M-Instruct {ftype} ({bytes} bytes, quantised in {:.1} s)",
            t.elapsed().as_secs_f64()
        );
        let t = std::time::Instant::now();
        let llm = Llm::load(&path, Backend::Cpu)?;
        println!(
            "load {:.0} ms, native path: {}",
            t.elapsed().as_secs_f64() * 1000.0,
            llm.runs_native()
        );
        drop(llm);
        versus_llama_cpp(&path)?;
        std::fs::remove_file(&path)?;
    }
    // Other architectures from the pull catalog: `MEMKERN_BENCH_MODELS`
    // (default Gemma 3 270M Q4_K_M; `none` skips).
    let models =
        std::env::var("MEMKERN_BENCH_MODELS").unwrap_or_else(|_| "gemma3-270m-q4-k-m".into());
    for name in models
        .split(',')
        .map(str::trim)
        .filter(|m| !m.is_empty() && *m != "none")
    {
        let entry = memkern_models::fetch::find(name).ok_or("not in the pull catalog")?;
        let files = ModelCache::from_env()?.ensure_catalog(entry)?;
        let path = files.gguf().ok_or("no gguf")?.to_path_buf();
        let bytes = std::fs::metadata(&path)?.len();
        let before = rss_mib().unwrap_or(f64::NAN);
        let t = std::time::Instant::now();
        let llm = Llm::load(&path, Backend::Cpu)?;
        let load_ms = t.elapsed().as_secs_f64() * 1000.0;
        let after = rss_mib().unwrap_or(f64::NAN);
        println!(
            "\n### {name} ({} MiB GGUF, architecture {})\n\nload {load_ms:.0} ms, native path: {}, \
             RSS +{:.0} MiB for the loaded model ({:.2}× the file)",
            bytes / (1 << 20),
            llm.config().arch,
            llm.runs_native(),
            after - before,
            (after - before) / (bytes as f64 / f64::from(1 << 20))
        );
        drop(llm);
        versus_llama_cpp(&path)?;
    }
    if std::env::var("MEMKERN_BENCH_ONLY").is_ok_and(|v| v == "speed") {
        return Ok(());
    }

    let wanted = std::env::var("MEMKERN_BENCH_BACKENDS").unwrap_or_else(|_| "cpu,wgpu".into());
    for name in wanted.split(',').map(str::trim).filter(|s| !s.is_empty()) {
        let backend: Backend = name.parse()?;
        if !backend.compiled() {
            println!("\n({backend}: not compiled in; build with --features {backend})");
            continue;
        }
        if let Err(e) = backend.device() {
            println!("\n({backend}: skipped, {e})");
            continue;
        }
        bench_backend(backend, &gguf, &dir)?;
    }
    if let Some(rss) = peak_rss_mib() {
        println!("\npeak RSS: {rss:.0} MiB");
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
