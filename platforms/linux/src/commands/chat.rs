//! `memkern chat`, `memkern stats` and `memkern demo`: the assistant on
//! top of the runtime.

use std::io::Write;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Instant;

use anyhow::{Context, Result, bail};
use indicatif::{ProgressBar, ProgressStyle};
use memkern_core::governance::Principal;
use memkern_eval::locomo;
use memkern_runtime::chat::{ChatStats, UsedAs};
use memkern_runtime::{
    AddAction, AddRequest, Assistant, ChatRequest, ChatResponse, Config, Runtime,
};

use super::ctx::Ctx;
use super::llm::load_llm;
use crate::cli::{ChatArgs, DemoArgs, LoadArgs, StatsArgs};

fn print_answer(out: &mut dyn Write, r: &ChatResponse) -> std::io::Result<()> {
    writeln!(out, "{}", r.answer)?;
    for m in &r.memories {
        let how = match m.used_as {
            UsedAs::Snapshot => "snapshot",
            UsedAs::Text => "text",
        };
        writeln!(out, "  [{how:>8}] {}  {}", m.id, m.text)?;
    }
    writeln!(
        out,
        "  ttft {:.0} ms (retrieval {:.0} ms), total {:.0} ms; {} prompt tokens, {} restored; {} snapshot(s) saved",
        r.ttft_ms, r.retrieval_ms, r.total_ms, r.prompt_tokens, r.restored_tokens, r.promoted
    )
}

/// `memkern chat`: one message, or an interactive session when none is
/// given (every turn remembered unless --forget, so it remembers across
/// restarts).
pub fn chat(args: &ChatArgs, cx: &mut Ctx<'_>) -> Result<()> {
    if args.vault.as_user.is_none() {
        bail!("a chat answers as a user: give --as USER");
    }
    let who = cx.who;
    let cube = args.cube.as_deref().unwrap_or("default");
    let ns = cx.rt.namespace_named(who.user, cube)?.id;
    let request = |message: String| {
        let mut req = ChatRequest::new(message);
        req.max_tokens = args.max_tokens as usize;
        req.snapshots = !args.no_snapshots;
        if args.cube.is_some() {
            req.namespaces = Some(vec![ns]);
        }
        req.remember = !args.forget;
        req.remember_in = Some(ns);
        req
    };
    let assistant = cx.assistant(&args.model)?;
    let answer = |out: &mut dyn Write, req: ChatRequest| -> Result<()> {
        let r = assistant.chat(&who, &req)?;
        if args.vault.json {
            // One line per answer: an interactive session is JSON lines.
            writeln!(out, "{}", serde_json::to_string(&r)?)?;
        } else {
            print_answer(out, &r)?;
        }
        out.flush()?;
        Ok(())
    };
    if let Some(message) = &args.message {
        return answer(cx.out, request(message.clone()));
    }
    writeln!(
        cx.err,
        "memkern chat: one message per line; /exit or end of input to stop"
    )?;
    let mut line = String::new();
    loop {
        write!(cx.err, "> ")?;
        cx.err.flush()?;
        line.clear();
        if cx
            .input
            .read_line(&mut line)
            .context("reading standard input")?
            == 0
        {
            return Ok(());
        }
        let message = line.trim();
        if message == "/exit" {
            return Ok(());
        }
        if message.is_empty() {
            continue;
        }
        // A bad turn (e.g. too long) is reported and the session goes on.
        if let Err(e) = answer(cx.out, request(message.to_owned())) {
            writeln!(cx.err, "error: {e:#}")?;
        }
    }
}

fn mean(sum: f64, n: u64) -> Option<f64> {
    (n > 0).then(|| sum / n as f64)
}

/// `memkern stats`.
pub fn stats(args: &StatsArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who, out) = (&*cx.rt, cx.who, &mut *cx.out);
    let s = rt.stats()?;
    // Parametric adapters the caller may see: their own, or everyone's
    // for the administrator.
    let mut adapters = Vec::new();
    for u in rt.users(&who)? {
        if let Some(a) = rt.adapter_info(&who, u.id)? {
            adapters.push((u.name, a));
        }
    }
    if args.vault.json {
        let mut v = serde_json::to_value(&s)?;
        v["parametric"] = serde_json::to_value(
            adapters
                .iter()
                .map(|(name, a)| serde_json::json!({ "user": name, "adapter": a }))
                .collect::<Vec<_>>(),
        )?;
        writeln!(out, "{}", serde_json::to_string_pretty(&v)?)?;
        return Ok(());
    }
    let c: ChatStats = s.chat;
    let mib = |b: u64| b as f64 / (1 << 20) as f64;
    writeln!(
        out,
        "users {}  cubes {}  memories {} ({} versions)",
        s.users, s.cubes, s.memories, s.versions
    )?;
    writeln!(
        out,
        "plaintext   {:>10.2} MiB in cubes",
        mib(s.plaintext_bytes)
    )?;
    writeln!(
        out,
        "snapshots   {:>10.2} MiB in {} KV block(s) (flash tier)",
        mib(s.snapshot_bytes),
        s.snapshots
    )?;
    writeln!(
        out,
        "adapters    {:>10.2} MiB in {}",
        mib(s.adapter_bytes),
        s.adapters
    )?;
    writeln!(
        out,
        "database    {:>10.2} MiB; audit log {} entries",
        mib(s.database_bytes),
        s.audit_entries
    )?;
    for (name, a) in &adapters {
        let state = match (&a.cube, &a.stale) {
            (Some(c), _) => format!("cube {c}"),
            (None, Some(why)) => format!("dropped: {why}"),
            (None, None) => "dropped".to_owned(),
        };
        writeln!(
            out,
            "adapter of {name}: {:.1} KiB, {} s old, covers {} memories, rank {}, {} pairs, {} steps, loss {:.3} -> {:.3}; {state}",
            a.bytes as f64 / 1024.0,
            a.age_seconds,
            a.covers.len(),
            a.rank,
            a.pairs,
            a.steps,
            a.loss_first,
            a.loss_last
        )?;
        for m in &a.covers {
            writeln!(out, "  covers {m}")?;
        }
    }
    let turns_with = c.snapshot_hits + c.snapshot_misses;
    writeln!(
        out,
        "chat turns {}; snapshot hit rate {}; TTFT warm {} / cold {}",
        c.turns,
        if turns_with > 0 {
            format!(
                "{:.0} % ({}/{})",
                100.0 * c.snapshot_hits as f64 / turns_with as f64,
                c.snapshot_hits,
                turns_with
            )
        } else {
            "-".to_owned()
        },
        mean(c.ttft_warm_ms_sum, c.snapshot_hits).map_or("-".to_owned(), |m| format!("{m:.0} ms")),
        mean(c.ttft_cold_ms_sum, c.snapshot_misses)
            .map_or("-".to_owned(), |m| format!("{m:.0} ms")),
    )?;
    writeln!(
        out,
        "snapshots promoted {}, evicted {}",
        c.promoted, c.evicted
    )?;
    Ok(())
}

/// `memkern demo`: ingest a LoCoMo conversation as Caroline's memories,
/// restart the runtime, then answer questions twice each — cold (no
/// snapshot yet) and warm (restoring the KV block saved after the first
/// answer).
pub fn demo(args: &DemoArgs) -> Result<()> {
    let data = args
        .locomo
        .clone()
        .or_else(|| std::env::var_os("MEMKERN_LOCOMO").map(PathBuf::from))
        .unwrap_or_else(|| PathBuf::from("../shared/data/locomo"));
    let conversations = locomo::load_dir(&data, Some(std::slice::from_ref(&args.conversation)))
        .with_context(|| format!("cannot load LoCoMo data from {}", data.display()))?;
    let conv = conversations.first().with_context(|| {
        format!(
            "conversation {} not found in {}",
            args.conversation,
            data.display()
        )
    })?;
    let (dir, temporary) = match &args.data_dir {
        Some(d) => (d.clone(), false),
        None => (
            std::env::temp_dir().join(format!("memkern-demo-{}", std::process::id())),
            true,
        ),
    };
    let _ = std::fs::remove_dir_all(&dir);
    let mut config = Config::default();
    // Promote every memory a chat uses, so the second ask is warm.
    config.scheduler.promote_min_uses = 0.0;
    let embedder = memkern_runtime::embed::load_default().map_err(anyhow::Error::msg)?;

    let user = conv.speakers[0].to_lowercase();
    println!(
        "==> ingesting LoCoMo conversation {} as {user}'s memories",
        conv.id
    );
    {
        let (rt, _) = Runtime::open(&dir, config.clone(), Some(embedder))?;
        let (info, _key) = rt.create_user(&rt.admin(), &user)?;
        let ns = rt.namespace_named(info.id, "default")?.id;
        let who = Principal::user(info.id);
        let turns: usize = conv.sessions.iter().map(|s| s.turns.len()).sum();
        let bar = ProgressBar::new(turns as u64).with_style(
            ProgressStyle::with_template("{bar:40} {pos}/{len} turns {per_sec} eta {eta}")
                .unwrap_or_else(|_| ProgressStyle::default_bar()),
        );
        let t = Instant::now();
        let (mut merged, mut updated) = (0, 0);
        for s in &conv.sessions {
            for turn in &s.turns {
                // As the answer benchmark stores a turn.
                let text = memkern_eval::answers::turn_text(turn);
                let out = rt.add(
                    &who,
                    &AddRequest {
                        namespace: ns,
                        text,
                        time: Some(s.time),
                        ..AddRequest::default()
                    },
                )?;
                merged += usize::from(out.action == AddAction::Merged);
                updated += usize::from(out.action == AddAction::Updated);
                bar.inc(1);
            }
        }
        bar.finish_and_clear();
        let secs = t.elapsed().as_secs_f64();
        println!(
            "    {turns} turns in {secs:.1} s ({:.0}/s, embedding included); {merged} repeats merged, {updated} near-duplicates kept as new versions",
            turns as f64 / secs
        );
    }
    println!("==> restarting the runtime (vault reopened, index rebuilt from disk)");
    let t = Instant::now();
    let embedder = memkern_runtime::embed::load_default().map_err(anyhow::Error::msg)?;
    let (rt, report) = Runtime::open(&dir, config, Some(embedder))?;
    println!(
        "    {} memories indexed in {:.0} ms",
        report.memories,
        t.elapsed().as_secs_f64() * 1e3
    );
    let who = Principal::user(rt.user(&user)?.id);
    let llm = load_llm(args.model.model.as_deref(), &args.model.backend)?;
    let assistant = Assistant::new(Arc::new(rt), llm)?;
    for q in conv.questions.iter().take(args.questions as usize) {
        println!("\n==> Q: {}", q.text);
        for round in ["cold", "warm"] {
            // The questions are not stored, so both rounds see the same
            // memories (chat stores the user's turn by default).
            let mut req = ChatRequest::new(q.text.clone());
            req.remember = false;
            let r = assistant.chat(&who, &req)?;
            println!("--- {round}:");
            print_answer(&mut std::io::stdout().lock(), &r)?;
        }
    }
    let s = assistant.stats();
    println!(
        "\n==> TTFT: cold {} ms, warm {} ms (mean over {} / {} turns)",
        mean(s.ttft_cold_ms_sum, s.snapshot_misses).map_or("-".to_owned(), |m| format!("{m:.0}")),
        mean(s.ttft_warm_ms_sum, s.snapshot_hits).map_or("-".to_owned(), |m| format!("{m:.0}")),
        s.snapshot_misses,
        s.snapshot_hits
    );
    drop(assistant);
    if temporary {
        let _ = std::fs::remove_dir_all(&dir);
    }
    Ok(())
}

/// Resident set size of this process, from /proc (Linux), bytes.
fn rss_bytes() -> Option<u64> {
    let status = std::fs::read_to_string("/proc/self/status").ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

/// `memkern eval load`.
pub fn load(args: &LoadArgs) -> Result<()> {
    use memkern_eval::load::{self, LoadOptions, LoadUser, Op};
    let dir = std::env::temp_dir().join(format!("memkern-load-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    let embedder = memkern_runtime::embed::load_default().map_err(anyhow::Error::msg)?;
    let (rt, _) = Runtime::open(&dir, Config::default(), Some(embedder))?;
    let rt = Arc::new(rt);
    let mut users = Vec::new();
    for i in 0..args.users {
        let (info, key) = rt.create_user(&rt.admin(), &format!("load{i}"))?;
        let ns = rt.namespace_named(info.id, "default")?.id;
        users.push(LoadUser {
            api_key: key.0,
            namespace: ns,
        });
    }
    let with_chat = args.mix.get(2).copied().unwrap_or(0) > 0;
    let assistant = if with_chat {
        let llm = load_llm(None, "cpu")?;
        Some(Arc::new(Assistant::new(rt.clone(), llm)?))
    } else {
        None
    };
    let rss_loaded = rss_bytes();
    let server =
        memkern_server::Server::start_with(rt.clone(), assistant, "127.0.0.1:0", 64 * 1024)?;
    let weights = [Op::Add, Op::Search, Op::Chat];
    let opts = LoadOptions {
        clients: args.clients as usize,
        duration: std::time::Duration::from_secs(u64::from(args.seconds)),
        mix: weights
            .iter()
            .zip(&args.mix)
            .filter(|(_, w)| **w > 0)
            .map(|(op, w)| (*op, *w))
            .collect(),
        timeout: std::time::Duration::from_secs(600),
        ..LoadOptions::default()
    };
    let report = load::run(server.addr(), &users, &opts)?;
    let rss_after = rss_bytes();
    server.shutdown()?;
    drop(rt);
    let _ = std::fs::remove_dir_all(&dir);
    if args.json {
        let v = serde_json::json!({
            "report": report,
            "rss_models_loaded_bytes": rss_loaded,
            "rss_after_bytes": rss_after,
        });
        println!("{v}");
    } else {
        println!("{report}");
        let mib = |b: Option<u64>| {
            b.map_or("-".to_owned(), |b| {
                format!("{:.0} MiB", b as f64 / (1 << 20) as f64)
            })
        };
        println!(
            "RSS: {} with models loaded, {} after the run",
            mib(rss_loaded),
            mib(rss_after)
        );
    }
    Ok(())
}
