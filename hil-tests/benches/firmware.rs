//! Firmware bench under QEMU: flash per memory, add and query cost at
//! 1 000 and 10 000 memories, RAM (static + peak stack).
//!
//! Memories are the shared LoCoMo dialogue turns (cycled to reach 10 000),
//! stored text-only and with a 384-dimension int8 vector (synthetic values:
//! the harness has no embedder; the cost depends only on the dimension).
//! QEMU runs with `-icount shift=0`, so the firmware's SysTick ticks (25 MHz
//! virtual) count instructions: 40 per tick. Baseline in the same run: the
//! cost of a `Stats` request (one read-only pass over the flash log).
//!
//! `cargo bench -p memkern-hil --bench firmware [-- N...]` (flash image:
//! 8 MiB text-only, 16 MiB with vectors; `HIL_FLASH_KIB` overrides).

use std::time::Instant;

use memkern_core::ids::{Fingerprint, UserId};
use memkern_core::protocol::{DeviceStats, MAX_TEXT, Query, Request, Response, Vector};
use memkern_core::time::Timestamp;
use memkern_hil::{Board, Session, qemu_or_skip};

const USER: UserId = UserId(1);
const NOW: Timestamp = Timestamp(1_750_000_000_000);
const INSN_PER_TICK: f64 = 40.0;

fn turns() -> Vec<String> {
    let dir = memkern_hil::workspace_root().join("../shared/data/locomo");
    let mut out = Vec::new();
    let mut files: Vec<_> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .flatten()
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|x| x == "json"))
        .collect();
    files.sort();
    for f in files {
        let v: serde_json::Value =
            serde_json::from_slice(&std::fs::read(&f).expect("read locomo")).expect("json");
        let Some(obj) = v.as_object() else { continue };
        for (k, session) in obj {
            if !k.starts_with("session_") {
                continue;
            }
            for turn in session.as_array().into_iter().flatten() {
                if let (Some(who), Some(text)) = (turn["speaker"].as_str(), turn["text"].as_str()) {
                    let t = format!("{who}: {text}");
                    if t.len() <= MAX_TEXT {
                        out.push(t);
                    }
                }
            }
        }
    }
    out
}

/// The vector sent with a memory or query (one synthetic embedder).
fn host_vector(values: &[u8]) -> Vector<'_> {
    Vector {
        embedder: Fingerprint([1; 16]),
        scale: 0.01,
        values,
    }
}

fn stats(s: &mut Session) -> DeviceStats {
    match s
        .call(&Request::Stats)
        .expect("stats")
        .response()
        .expect("decode")
    {
        Response::Stats(st) => st,
        other => panic!("{other:?}"),
    }
}

/// Ticks of the request just before this call.
fn last_ticks(s: &mut Session) -> u64 {
    stats(s).last_request_ticks
}

fn run(n: usize, with_vectors: bool, texts: &[String]) {
    let flash = std::env::var("HIL_FLASH_KIB")
        .ok()
        .and_then(|v| v.parse::<usize>().ok())
        .map_or(if with_vectors { 16 << 20 } else { 8 << 20 }, |k| k << 10);
    let board = Board::new(flash).expect("board");
    let mut s = board.boot_with(&["-icount", "shift=0"], &[]).expect("boot");
    let mut vector = [0u8; 384];
    let start = Instant::now();
    let mut add_ticks = 0u64;
    for i in 0..n {
        let text = &texts[i % texts.len()];
        for (k, v) in vector.iter_mut().enumerate() {
            *v = ((i * 31 + k * 17) % 251) as u8;
        }
        let req = Request::Add {
            user: USER,
            text,
            public: false,
            at: NOW,
            vector: with_vectors.then(|| host_vector(&vector)),
        };
        match s.call(&req).expect("add").response().expect("decode") {
            Response::Added { .. } => {}
            other => panic!("add {i}: {other:?}"),
        }
        if i + 1 == n {
            add_ticks = last_ticks(&mut s);
        }
    }
    let add_wall = start.elapsed();
    let before = stats(&mut s);
    let baseline = last_ticks(&mut s); // the Stats pass itself
    let questions = [
        "When did Caroline go to the LGBTQ support group?",
        "What did Melanie paint recently?",
        "What is Caroline's identity?",
        "Where did they go camping?",
        "What books does Melanie read to her kids?",
    ];
    let mut query_ticks = Vec::new();
    let q_start = Instant::now();
    for q in questions {
        let query = Query {
            user: USER,
            text: q,
            vector: with_vectors.then(|| host_vector(&vector)),
            k: 8,
            now: NOW,
        };
        match s
            .call(&Request::Search(query))
            .expect("search")
            .response()
            .expect("decode")
        {
            Response::Hits { hits, scanned } => {
                assert_eq!(scanned as usize, n);
                assert!(!hits.is_empty());
            }
            other => panic!("{other:?}"),
        }
        query_ticks.push(last_ticks(&mut s));
    }
    let q_wall = q_start.elapsed() / questions.len() as u32;
    let after = stats(&mut s);
    let mean = query_ticks.iter().sum::<u64>() as f64 / query_ticks.len() as f64;
    let insn = |t: f64| t * INSN_PER_TICK / 1e6;
    println!(
        "| {n} | {} | {:.0} | {:.2} | {:.1} | {:.1} M | {:.1} M | {:.2} | {:.0} ms | {} + {} |",
        if with_vectors {
            "text + 384-d int8"
        } else {
            "text"
        },
        f64::from(before.flash_used) / n as f64,
        n as f64 / (f64::from(before.flash_used) / 1024.0),
        n as f64 / add_wall.as_secs_f64(),
        insn(add_ticks as f64),
        insn(mean),
        mean / baseline.max(1) as f64,
        q_wall.as_secs_f64() * 1e3,
        after.ram_static,
        after.stack_peak,
    );
    drop(s);
}

fn main() {
    if !qemu_or_skip() {
        return;
    }
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|a| a.parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        vec![1_000, 10_000]
    } else {
        sizes
    };
    let texts = turns();
    println!("{} LoCoMo turns as memories (cycled)", texts.len());
    println!(
        "| memories | stored | flash B/memory | memories/KiB | adds/s (wall) | add (M insn, last) | query (M insn) | query / log pass | query wall | RAM static + stack B |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|");
    for &n in &sizes {
        for with_vectors in [false, true] {
            run(n, with_vectors, &texts);
        }
    }
}
