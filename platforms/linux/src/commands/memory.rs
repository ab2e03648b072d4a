//! The runtime subcommands: users, cubes and memories, over
//! [`memkern_runtime::Runtime`].

use std::io::{BufRead, Write};

use anyhow::{Context, Result, bail};
use memkern_core::time::Timestamp;
use memkern_runtime::input::{parse_duration_ms, parse_time};
use memkern_runtime::{
    AddAction, AddRequest, MemoryId, MemoryView, Runtime, SearchRequest, ShareAccess,
};
use serde::Serialize;

use super::ctx::Ctx;
use crate::cli::{
    AccessArg, AddArgs, AuditArgs, CubeArgs, CubeCommand, CubeRef, ExpireArgs, ExportArgs,
    ImportArgs, IngestArgs, MemoryArgs, RollbackArgs, SearchArgs, UpdateArgs, UserArgs,
    UserCommand,
};

/// Prints one result: pretty JSON with `--json`, else its text form.
pub(super) fn print<T: Serialize>(
    out: &mut dyn Write,
    json: bool,
    value: &T,
    text: impl FnOnce(&T) -> String,
) -> Result<()> {
    if json {
        writeln!(out, "{}", serde_json::to_string_pretty(value)?)?;
    } else {
        writeln!(out, "{}", text(value))?;
    }
    Ok(())
}

fn time_text(t: Timestamp) -> String {
    chrono::DateTime::from_timestamp_millis(t.0).map_or_else(
        || t.0.to_string(),
        |d| d.format("%Y-%m-%d %H:%M").to_string(),
    )
}

fn memory_line(m: &MemoryView) -> String {
    let tags = if m.tags.is_empty() {
        String::new()
    } else {
        format!(" [{}]", m.tags.join(", "))
    };
    let cube = match (&m.module, &m.source) {
        (Some(module), Some(source)) => format!("module {module} ({source})"),
        (Some(module), None) => format!("module {module}"),
        (None, _) => format!("cube {}", m.namespace),
    };
    format!(
        "{}  v{}  {}  {}{}\n  {}",
        m.id,
        m.version,
        cube,
        time_text(m.time),
        tags,
        m.text
    )
}

fn namespace_of(rt: &Runtime, cube: &CubeRef) -> Result<memkern_core::ids::NamespaceId> {
    let owner = rt.user(&cube.user)?;
    Ok(rt.namespace_named(owner.id, &cube.cube)?.id)
}

/// A user and their (new) API key: what `user add` and `user rotate-key`
/// print.
#[derive(Serialize)]
struct UserKey<'a> {
    user: &'a memkern_runtime::UserInfo,
    api_key: &'a str,
}

/// `memkern user …`.
pub fn user(args: &UserArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let json = args.vault.json;
    match &args.command {
        UserCommand::Add { name } => {
            let (user, key) = rt.create_user(&who, name)?;
            let out = UserKey {
                user: &user,
                api_key: &key.0,
            };
            print(cx.out, json, &out, |o| {
                format!(
                    "user {} (id {})\napi key: {}",
                    o.user.name, o.user.id, o.api_key
                )
            })
        }
        UserCommand::List => print(cx.out, json, &rt.users(&who)?, |users| {
            users
                .iter()
                .map(|u| {
                    format!(
                        "{:>4}  {}{}",
                        u.id,
                        u.name,
                        if u.admin { "  (admin)" } else { "" }
                    )
                })
                .collect::<Vec<_>>()
                .join("\n")
        }),
        UserCommand::RotateKey { name } => {
            let key = rt.rotate_key(&who, name)?;
            let user = rt.user(name)?;
            let out = UserKey {
                user: &user,
                api_key: &key.0,
            };
            print(cx.out, json, &out, |o| {
                format!("api key of {}: {}", o.user.name, o.api_key)
            })
        }
    }
}

/// `memkern cube …`.
pub fn cube(args: &CubeArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let json = args.vault.json;
    let line = |n: &memkern_runtime::NamespaceInfo| {
        format!(
            "{:>4}  owner {}  {}  readers {:?}  writers {:?}",
            n.id, n.owner, n.name, n.readers, n.writers
        )
    };
    match &args.command {
        CubeCommand::Create { user, name } => {
            let owner = rt.user(user)?;
            let ns = rt.create_namespace(&who, owner.id, name)?;
            print(cx.out, json, &ns, line)
        }
        CubeCommand::List => print(cx.out, json, &rt.namespaces(&who)?, |all| {
            all.iter().map(line).collect::<Vec<_>>().join("\n")
        }),
        CubeCommand::Share {
            user,
            name,
            with,
            access,
        } => {
            let ns = namespace_of(
                rt,
                &CubeRef {
                    user: user.clone(),
                    cube: name.clone(),
                },
            )?;
            let with = rt.user(with)?.id;
            let access = match access {
                AccessArg::Read => ShareAccess::Read,
                AccessArg::ReadWrite => ShareAccess::ReadWrite,
                AccessArg::None => ShareAccess::None,
            };
            print(cx.out, json, &rt.share(&who, ns, with, access)?, line)
        }
    }
}

/// `memkern add`.
pub fn add(args: &AddArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let req = AddRequest {
        namespace: namespace_of(rt, &args.cube)?,
        text: args.text.clone(),
        time: args.time.as_deref().map(parse_time).transpose()?,
        tags: args.tags.clone(),
        ttl_ms: args.ttl.as_deref().map(parse_duration_ms).transpose()?,
        dedup: args.dedup.map(Into::into),
    };
    let out = rt.add(&who, &req)?;
    print(cx.out, args.vault.json, &out, |o| {
        let similarity = o.similarity.unwrap_or(1.0);
        let mut s = match o.action {
            AddAction::Stored => format!("added {}", o.id),
            AddAction::Merged => format!(
                "duplicate of {} (similarity {similarity:.3}); its usage was bumped",
                o.id
            ),
            AddAction::Updated => format!(
                "updated {} to version {} (near-duplicate, similarity {similarity:.3}); was: {}",
                o.id,
                o.version,
                o.previous_text.as_deref().unwrap_or_default()
            ),
        };
        if !o.redacted.is_empty() {
            let kinds: Vec<_> = o.redacted.iter().map(|k| k.label()).collect();
            s.push_str(&format!("\nredacted: {}", kinds.join(", ")));
        }
        s
    })
}

/// `memkern ingest`: one memory per line, `ack <line> <id>` per durable
/// write (flushed at once, so a supervisor can trust it).
pub fn ingest(args: &IngestArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let namespace = namespace_of(rt, &args.cube)?;
    let local = cx.local();
    let mut file;
    let reader: &mut dyn BufRead = if args.file.as_os_str() == "-" {
        &mut *cx.input
    } else {
        let f = std::fs::File::open(&args.file)
            .with_context(|| format!("cannot open {}", args.file.display()))?;
        file = std::io::BufReader::new(f);
        &mut file
    };
    let json = args.vault.json;
    // Progress on stderr (hidden when it is not a terminal, and inside
    // serve); the acks on stdout stay machine-readable.
    let bar = if local {
        indicatif::ProgressBar::new_spinner().with_style(
            indicatif::ProgressStyle::with_template(
                "{spinner} {pos} memories ({per_sec}) {elapsed}",
            )
            .unwrap_or_else(|_| indicatif::ProgressStyle::default_spinner()),
        )
    } else {
        indicatif::ProgressBar::hidden()
    };
    let mut counts = IngestCounts::default();
    for (n, line) in reader.split(b'\n').enumerate() {
        let line = line.with_context(|| format!("reading line {}", n + 1))?;
        let line = line.strip_suffix(b"\r").unwrap_or(&line);
        // A line that is not UTF-8 is reported and skipped; the others go on.
        let Ok(text) = std::str::from_utf8(line) else {
            bar.suspend(|| writeln!(cx.err, "line {}: not valid UTF-8, skipped", n + 1))?;
            counts.invalid += 1;
            continue;
        };
        if text.trim().is_empty() {
            counts.empty += 1;
            continue;
        }
        let req = AddRequest {
            namespace,
            text: text.to_owned(),
            dedup: args.dedup.map(Into::into),
            ..AddRequest::default()
        };
        let o = rt
            .add(&who, &req)
            .with_context(|| format!("line {}", n + 1))?;
        let tag = match o.action {
            AddAction::Stored => {
                counts.stored += 1;
                ""
            }
            AddAction::Merged => {
                counts.merged += 1;
                " duplicate"
            }
            AddAction::Updated => {
                counts.updated += 1;
                " updated"
            }
        };
        if json {
            let ack = serde_json::json!({ "line": n + 1, "id": o.id, "action": o.action });
            writeln!(cx.out, "{ack}")?;
        } else {
            writeln!(cx.out, "ack {} {}{tag}", n + 1, o.id)?;
        }
        cx.out.flush()?;
        bar.inc(1);
    }
    bar.finish_and_clear();
    if json {
        writeln!(cx.out, "{}", serde_json::to_string(&counts)?)?;
    } else {
        let IngestCounts {
            stored,
            merged,
            updated,
            empty,
            invalid,
        } = counts;
        writeln!(
            cx.err,
            "{stored} stored, {merged} merged, {updated} updated; skipped {empty} empty and {invalid} non-UTF-8 lines"
        )?;
    }
    Ok(())
}

/// What `ingest` did with a file's lines (its last JSON line).
#[derive(Default, Serialize)]
struct IngestCounts {
    stored: u64,
    merged: u64,
    updated: u64,
    empty: u64,
    invalid: u64,
}

fn memory_id(s: &str) -> Result<MemoryId> {
    Ok(s.parse()?)
}

/// `memkern get`.
pub fn get(args: &MemoryArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let m = rt.get(&who, memory_id(&args.id)?)?;
    print(cx.out, args.vault.json, &m, memory_line)
}

/// `memkern search`.
pub fn search(args: &SearchArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let namespaces = match (&args.user, &args.cube) {
        (Some(user), Some(cube)) => Some(vec![namespace_of(
            rt,
            &CubeRef {
                user: user.clone(),
                cube: cube.clone(),
            },
        )?]),
        (Some(user), None) => {
            let owner = rt.user(user)?.id;
            Some(
                rt.namespaces(&who)?
                    .into_iter()
                    .filter(|n| n.owner == owner)
                    .map(|n| n.id)
                    .collect(),
            )
        }
        _ => None,
    };
    let req = SearchRequest {
        query: args.query.clone(),
        namespaces,
        since: args.since.as_deref().map(parse_time).transpose()?,
        until: args.until.as_deref().map(parse_time).transpose()?,
        tags: args.tags.clone(),
        k: args.k as usize,
    };
    let hits = rt.search(&who, &req)?;
    print(cx.out, args.vault.json, &hits, |hits| {
        if hits.is_empty() {
            return "no memories found".to_owned();
        }
        hits.iter()
            .map(|h| format!("{:.3}  {}", h.score, memory_line(&h.memory)))
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// `memkern update`.
pub fn update(args: &UpdateArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let m = rt.update(&who, memory_id(&args.id)?, &args.text)?;
    print(cx.out, args.vault.json, &m, memory_line)
}

/// `memkern history`.
pub fn history(args: &MemoryArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let all = rt.history(&who, memory_id(&args.id)?)?;
    print(cx.out, args.vault.json, &all, |all| {
        all.iter().map(memory_line).collect::<Vec<_>>().join("\n")
    })
}

/// `memkern rollback`.
pub fn rollback(args: &RollbackArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let m = rt.rollback(&who, memory_id(&args.id)?, args.to)?;
    print(cx.out, args.vault.json, &m, memory_line)
}

/// `memkern delete`.
pub fn delete(args: &MemoryArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let r = rt.delete(&who, memory_id(&args.id)?)?;
    print(cx.out, args.vault.json, &r, |r| {
        format!(
            "deleted {} version(s) and {} derived snapshot(s)",
            r.versions, r.derived
        )
    })
}

/// `memkern expire`.
pub fn expire(args: &ExpireArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let at = match (&args.ttl, &args.at) {
        (Some(ttl), _) => {
            let ms = parse_duration_ms(ttl)?;
            memkern_runtime::now().saturating_add_millis(i64::try_from(ms)?)
        }
        (None, Some(at)) => parse_time(at)?,
        (None, None) => bail!("give --ttl or --at"),
    };
    let id = memory_id(&args.id)?;
    rt.expire(&who, id, at)?;
    #[derive(Serialize)]
    struct Out {
        id: MemoryId,
        expires_at: Timestamp,
    }
    print(cx.out, args.vault.json, &Out { id, expires_at: at }, |o| {
        format!("{} expires at {}", o.id, time_text(o.expires_at))
    })
}

/// `memkern audit`.
pub fn audit(args: &AuditArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let log = rt.audit_log(&who, args.from, args.limit)?;
    print(cx.out, args.vault.json, &log, |log| {
        log.iter()
            .map(|e| {
                format!(
                    "{:>6}  {}  user {}{}  {:<12} {}  {}{}",
                    e.seq,
                    time_text(e.at),
                    e.actor,
                    if e.admin { " (admin)" } else { "" },
                    e.action,
                    if e.allowed { "allowed" } else { "DENIED" },
                    e.target.as_deref().unwrap_or("-"),
                    if e.detail.is_empty() {
                        String::new()
                    } else {
                        format!("  ({})", e.detail)
                    }
                )
            })
            .collect::<Vec<_>>()
            .join("\n")
    })
}

/// `memkern export`.
pub fn export(args: &ExportArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let ns = namespace_of(rt, &args.cube)?;
    let key = match &rt.config().packs.signing_key {
        Some(path) => Some(memkern_runtime::pack::load_key(path)?),
        None => None,
    };
    let (bytes, report) = rt.export(&who, ns, key.as_ref())?;
    let tmp = args.out.with_extension("tmp");
    std::fs::write(&tmp, &bytes)
        .and_then(|()| std::fs::rename(&tmp, &args.out))
        .with_context(|| format!("cannot write {}", args.out.display()))?;
    print(cx.out, args.vault.json, &report, |r| {
        format!(
            "exported {} memories ({} secret skipped), {} snapshot(s), {} bytes{}",
            r.memories,
            r.skipped,
            r.derived,
            bytes.len(),
            r.signed_by
                .as_ref()
                .map_or(String::new(), |k| format!(", signed by {k}"))
        )
    })
}

/// `memkern import`.
pub fn import(args: &ImportArgs, cx: &mut Ctx<'_>) -> Result<()> {
    let (rt, who) = (&*cx.rt, cx.who);
    let ns = namespace_of(rt, &args.cube)?;
    let bytes = std::fs::read(&args.file)
        .with_context(|| format!("cannot read {}", args.file.display()))?;
    let report = rt.import(&who, ns, &bytes, &rt.config().packs.trusted_keys)?;
    print(cx.out, args.vault.json, &report, |r| {
        format!(
            "imported {} memories ({} already present), {} snapshot(s){}",
            r.memories,
            r.skipped,
            r.derived,
            r.signed_by
                .as_ref()
                .map_or(", unsigned".to_owned(), |k| format!(", signed by {k}"))
        )
    })
}
