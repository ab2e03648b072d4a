//! Memory-module benchmark: a module of N memories (default 10 000) built
//! with all-MiniLM-L6-v2 vectors, installed on a fresh vault, and searched
//! through the runtime (query embedding included) — beside the same
//! memories imported as the user's own cube in the same run, the baseline
//! a module must not be slower than.
//!
//! ```sh
//! cargo bench -p memkern-benches --bench modules
//! MODULE_MEMORIES=2000 MODULE_QUERIES=100 cargo bench -p memkern-benches --bench modules
//! ```
//!
//! Prints: build time and file size (bytes per memory), install time
//! (module) beside import time (pack into a cube), search p50/p95 over the
//! module beside over the cube, and peak RSS. Then (`MODULE_KV_QUESTIONS`,
//! default 12; 0 skips it) chat TTFT over a module of README chunks that
//! ships a KV block per memory for SmolLM2 (`--kv-model`), beside the same
//! module without them, alternating, promotion off in both: what shipped
//! blocks save on turns whose memories were never asked about before.

use std::time::Instant;

use memkern_core::governance::Principal;
use memkern_core::time::Timestamp;
use memkern_runtime::modules::{self, Item, Manifest, Scope};
use memkern_runtime::pack::{self, PackBody, PackedMemory};
use memkern_runtime::{Config, Runtime, SearchRequest};

mod common;
use common::peak_rss_mib;

type Result<T> = std::result::Result<T, Box<dyn std::error::Error>>;

const ADJ: [&str; 16] = [
    "red", "quiet", "coastal", "northern", "wooden", "early", "bright", "narrow", "ancient",
    "shallow", "hidden", "seasonal", "broad", "rocky", "muddy", "sunny",
];
const NOUN: [&str; 16] = [
    "harbour",
    "lighthouse",
    "ferry",
    "marina",
    "buoy",
    "channel",
    "reef",
    "jetty",
    "estuary",
    "lagoon",
    "pier",
    "anchorage",
    "sandbar",
    "breakwater",
    "mooring",
    "slipway",
];
const FACT: [&str; 8] = [
    "is closed to small boats after sunset",
    "has a depth of about four metres at low tide",
    "charges a mooring fee in the summer months",
    "is marked with a green light on the starboard side",
    "floods when a strong westerly meets a spring tide",
    "offers fresh water and diesel at the fuel dock",
    "requires a radio call on channel 16 before entry",
    "has strong currents around the northern point",
];

/// A small deterministic generator (xorshift64*).
struct Rng(u64);

impl Rng {
    fn below(&mut self, n: usize) -> usize {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        (self.0.wrapping_mul(0x2545_F491_4F6C_DD1D) % n as u64) as usize
    }
}

fn texts(n: usize) -> Vec<String> {
    let mut rng = Rng(0x6d6f_6475_6c65_7321);
    (0..n)
        .map(|i| {
            format!(
                "The {} {} number {i} {}.",
                ADJ[rng.below(ADJ.len())],
                NOUN[rng.below(NOUN.len())],
                FACT[rng.below(FACT.len())]
            )
        })
        .collect()
}

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// One search's latency (ms) as `who`.
fn search_ms(rt: &Runtime, who: &Principal, q: &str) -> Result<f64> {
    let t = Instant::now();
    let hits = rt.search(who, &SearchRequest::new(q, 10))?;
    let ms = t.elapsed().as_secs_f64() * 1e3;
    if hits.is_empty() {
        return Err(format!("no hit for {q:?}").into());
    }
    Ok(ms)
}

fn pct(sorted: &[f64], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn main() -> Result<()> {
    let n = env("MODULE_MEMORIES", 10_000);
    let nq = env("MODULE_QUERIES", 200);
    let dir = std::env::temp_dir().join(format!("memkern-bench-modules-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir)?;
    let embedder = memkern_runtime::embed::load_default()?;
    let key_path = dir.join("publisher.key");
    let public = pack::generate_key(&key_path)?;
    let key = pack::load_key(&key_path)?;
    let items: Vec<Item> = texts(n)
        .into_iter()
        .map(|text| Item {
            text,
            source: Some("harbours.md".to_owned()),
            tags: Vec::new(),
        })
        .collect();
    let manifest = Manifest {
        id: "harbours".to_owned(),
        name: "Harbour guide".to_owned(),
        version: "1.0.0".to_owned(),
        publisher: public.clone(),
        licence: "CC-BY-4.0".to_owned(),
        description: "Synthetic harbour facts".to_owned(),
        language: "en".to_owned(),
    };
    eprintln!("building a module of {n} memories (embedding each)…");
    let t = Instant::now();
    let (file, report) = modules::build_module(
        &manifest,
        Timestamp(1_700_000_000_000),
        &items,
        Some(&*embedder),
        &modules::Extras::default(),
        &key,
        |_| {},
    )?;
    let build_s = t.elapsed().as_secs_f64();

    // The module, installed for alice.
    let open = |name: &str, embedder| -> Result<(Runtime, Principal)> {
        let (rt, _) = Runtime::open(dir.join(name), Config::default(), Some(embedder))?;
        let (alice, _) = rt.create_user(&rt.admin(), "alice")?;
        Ok((rt, Principal::user(alice.id)))
    };
    let (rt, alice) = open("module", embedder)?;
    rt.trust_publisher(&rt.admin(), &public, "bench")?;
    let t = Instant::now();
    let installed = rt.install_module(&rt.admin(), &file, &Scope::Users(vec![alice.user]))?;
    let install_s = t.elapsed().as_secs_f64();
    assert_eq!(installed.memories as usize, n);
    let mut rng = Rng(7);
    let queries: Vec<String> = (0..nq)
        .map(|_| {
            format!(
                "Which {} {} {}?",
                ADJ[rng.below(ADJ.len())],
                NOUN[rng.below(NOUN.len())],
                FACT[rng.below(FACT.len())]
            )
        })
        .collect();
    let (module_rt, module_alice) = (rt, alice);

    // Baseline: the same cubes as alice's own memories (a pack import).
    let (rt, alice) = open("cube", memkern_runtime::embed::load_default()?)?;
    let body = modules::decode_module(&file)?;
    let pack_file = pack::encode_pack(
        &PackBody {
            namespace: "default".to_owned(),
            created_ms: 0,
            memories: body
                .memories
                .into_iter()
                .map(|c| PackedMemory { versions: vec![c] })
                .collect(),
            derived: Vec::new(),
            blobs: Vec::new(),
        },
        None,
    )?;
    let ns = rt.namespace_named(alice.user, "default")?.id;
    let t = Instant::now();
    let imported = rt.import(&alice, ns, &pack_file, &[])?;
    let import_s = t.elapsed().as_secs_f64();
    assert_eq!(imported.memories, n);
    // Alternate the two, so drift on a shared machine hits both alike.
    let (mut module_ms, mut cube_ms) = (Vec::new(), Vec::new());
    for q in &queries {
        module_ms.push(search_ms(&module_rt, &module_alice, q)?);
        cube_ms.push(search_ms(&rt, &alice, q)?);
    }
    module_ms.sort_by(f64::total_cmp);
    cube_ms.sort_by(f64::total_cmp);
    drop(rt);
    drop(module_rt);

    println!(
        "memory modules, {n} memories, {nq} searches each, alternating (k = 10, query embedding included)"
    );
    println!(
        "build (embedding included): {build_s:.1} s; file {} bytes = {:.0} B per memory",
        report.bytes,
        report.bytes as f64 / n as f64
    );
    println!(
        "install (module) {install_s:.2} s   vs import (pack into a cube) {import_s:.2} s   ratio {:.2}",
        install_s / import_s
    );
    let (m50, m95, c50, c95) = (
        pct(&module_ms, 0.5),
        pct(&module_ms, 0.95),
        pct(&cube_ms, 0.5),
        pct(&cube_ms, 0.95),
    );
    println!(
        "search p50/p95: module {m50:.2}/{m95:.2} ms   vs own cube {c50:.2}/{c95:.2} ms   p95 ratio {:.2}",
        m95 / c95
    );
    if let Some(rss) = peak_rss_mib() {
        println!("peak RSS {rss:.0} MiB");
    }
    let questions = env("MODULE_KV_QUESTIONS", 12);
    if questions > 0 {
        shipped_blocks(&dir, &key_path, &public, questions)?;
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

/// First-turn TTFT with and without the module's shipped KV blocks.
fn shipped_blocks(
    dir: &std::path::Path,
    key_path: &std::path::Path,
    public: &str,
    questions: usize,
) -> Result<()> {
    let key = &pack::load_key(key_path)?;
    use memkern_models::fetch::{ModelCache, SMOLLM2_135M_Q4_1};
    use memkern_models::{Llm, llama::Backend};
    use memkern_runtime::{Assistant, ChatRequest};
    let files = ModelCache::from_env()?.ensure(&SMOLLM2_135M_Q4_1)?;
    let gguf = files.gguf().ok_or("no GGUF")?;
    let items: Vec<Item> = modules::chunk_file("README.md", include_str!("../../README.md"))
        .into_iter()
        .take(questions)
        .collect();
    let manifest = Manifest {
        id: "readme".to_owned(),
        name: "README".to_owned(),
        version: "1.0.0".to_owned(),
        publisher: public.to_owned(),
        licence: "MIT".to_owned(),
        description: String::new(),
        language: "en".to_owned(),
    };
    let embedder = memkern_runtime::embed::load_default()?;
    let llm = Llm::load(gguf, Backend::Cpu)?;
    let t = Instant::now();
    let extras = modules::Extras {
        kv_models: vec![&llm],
        adapters: Vec::new(),
    };
    let released = Timestamp(1_700_000_000_000);
    let (with_kv, r) = modules::build_module(
        &manifest,
        released,
        &items,
        Some(&*embedder),
        &extras,
        key,
        |_| {},
    )?;
    let kv_build_s = t.elapsed().as_secs_f64();
    let (plain, plain_r) = modules::build_module(
        &manifest,
        released,
        &items,
        Some(&*embedder),
        &modules::Extras::default(),
        key,
        |_| {},
    )?;
    drop(llm);
    let assistant = |name: &str, file: &[u8]| -> Result<(Assistant, Principal)> {
        let mut config = Config::default();
        config.scheduler.promote_min_uses = 1e9; // first turns only
        let (rt, _) = Runtime::open(
            dir.join(name),
            config,
            Some(memkern_runtime::embed::load_default()?),
        )?;
        let (alice, _) = rt.create_user(&rt.admin(), "alice")?;
        rt.trust_publisher(&rt.admin(), public, "bench")?;
        rt.install_module(&rt.admin(), file, &Scope::Users(vec![alice.id]))?;
        let llm = Llm::load(gguf, Backend::Cpu)?;
        Ok((
            Assistant::new(std::sync::Arc::new(rt), llm)?,
            Principal::user(alice.id),
        ))
    };
    let (kv, alice) = assistant("kv", &with_kv)?;
    let (text, alice2) = assistant("text", &plain)?;
    let (mut kv_ms, mut text_ms, mut restored) = (Vec::new(), Vec::new(), 0);
    for item in &items {
        let q: String = item
            .text
            .split_whitespace()
            .take(12)
            .collect::<Vec<_>>()
            .join(" ");
        let mut req = ChatRequest::new(format!("What does this say: {q}?"));
        req.remember = false;
        req.max_tokens = 1;
        let a = kv.chat(&alice, &req)?;
        restored += a.restored_tokens;
        kv_ms.push(a.ttft_ms);
        text_ms.push(text.chat(&alice2, &req)?.ttft_ms);
    }
    kv_ms.sort_by(f64::total_cmp);
    text_ms.sort_by(f64::total_cmp);
    println!(
        "shipped KV blocks, {} README chunks, SmolLM2-135M Q4_1: build {kv_build_s:.1} s, file {} bytes vs {} without ({} blocks)",
        items.len(),
        r.bytes,
        plain_r.bytes,
        r.kv_blocks
    );
    println!(
        "first-turn TTFT p50: with shipped blocks {:.0} ms vs text only {:.0} ms   ratio {:.2}   ({} tokens restored in {} turns)",
        pct(&kv_ms, 0.5),
        pct(&text_ms, 0.5),
        pct(&kv_ms, 0.5) / pct(&text_ms, 0.5),
        restored,
        items.len()
    );
    Ok(())
}
