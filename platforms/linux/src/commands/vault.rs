//! Where a vault command runs: on a vault this process opens, or inside a
//! running `memkern serve`, which holds the vault (see `crate::control`).
//!
//! It exists so that the memory commands work the same with or without a
//! server: this module routes them, `ctx.rs` is what they run against.

use std::io;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result, bail};
use clap::Parser;
use memkern_runtime::{Assistant, Runtime};

use super::ctx::{Ctx, data_dir, open, principal};
use super::{chat, memory, modules};
use crate::cli::{Cli, Command, ModulesArgs, ModulesCommand, VaultArgs};
use crate::control::{self, Session};

/// The vault arguments of a command that runs through serve when one is
/// running; `None` for the others (serve itself, mcp, distill, demo, the
/// model commands), which need the vault to themselves or none at all.
fn vault_args(command: &Command) -> Option<&VaultArgs> {
    Some(match command {
        Command::User(a) => &a.vault,
        Command::Cube(a) => &a.vault,
        Command::Add(a) => &a.vault,
        Command::Ingest(a) => &a.vault,
        Command::Get(a) | Command::History(a) | Command::Delete(a) => &a.vault,
        Command::Search(a) => &a.vault,
        Command::Update(a) => &a.vault,
        Command::Rollback(a) => &a.vault,
        Command::Expire(a) => &a.vault,
        Command::Audit(a) => &a.vault,
        Command::Chat(a) => &a.vault,
        Command::Stats(a) => &a.vault,
        Command::Export(a) => &a.vault,
        Command::Import(a) => &a.vault,
        Command::Modules(a)
            if !matches!(
                a.command,
                ModulesCommand::Build(_)
                    | ModulesCommand::Seal { .. }
                    | ModulesCommand::Index { .. }
                    | ModulesCommand::Manual { .. }
            ) =>
        {
            &a.vault
        }
        _ => return None,
    })
}

/// Runs a vault command against `cx`.
fn execute(command: &Command, cx: &mut Ctx<'_>) -> Result<()> {
    match command {
        Command::User(a) => memory::user(a, cx),
        Command::Cube(a) => memory::cube(a, cx),
        Command::Add(a) => memory::add(a, cx),
        Command::Ingest(a) => memory::ingest(a, cx),
        Command::Get(a) => memory::get(a, cx),
        Command::Search(a) => memory::search(a, cx),
        Command::Update(a) => memory::update(a, cx),
        Command::History(a) => memory::history(a, cx),
        Command::Rollback(a) => memory::rollback(a, cx),
        Command::Delete(a) => memory::delete(a, cx),
        Command::Expire(a) => memory::expire(a, cx),
        Command::Audit(a) => memory::audit(a, cx),
        Command::Chat(a) => chat::chat(a, cx),
        Command::Stats(a) => chat::stats(a, cx),
        Command::Export(a) => memory::export(a, cx),
        Command::Import(a) => memory::import(a, cx),
        Command::Modules(a) => modules::run(a, cx),
        _ => bail!("this command does not run through a running memkern serve"),
    }
}

/// Whether a command reads standard input (`ingest -`, `chat` without a
/// message): the client then sends its standard input along.
fn reads_stdin(command: &Command) -> bool {
    match command {
        Command::Ingest(a) => a.file.as_os_str() == "-",
        Command::Chat(a) => a.message.is_none(),
        _ => false,
    }
}

/// Runs a vault command through the serve running on its data directory,
/// or, when none runs, on the vault opened here.
pub fn run(command: &Command) -> Result<()> {
    let v = vault_args(command).context("not a vault command")?;
    let dir = data_dir(v)?;
    if let Some(stream) = control::connect(&dir)? {
        tracing::info!(dir = %dir.display(), "through the running memkern serve");
        let argv = std::env::args_os()
            .map(|a| {
                a.into_string()
                    .map_err(|a| anyhow::anyhow!("argument {a:?} is not UTF-8"))
            })
            .collect::<Result<Vec<_>>>()?;
        return control::forward(stream, argv, reads_stdin(command));
    }
    let (rt, who) = open(v)?;
    let (mut out, mut err) = (io::stdout().lock(), io::stderr());
    let mut input = io::stdin().lock();
    execute(
        command,
        &mut Ctx {
            rt: Arc::new(rt),
            who,
            out: &mut out,
            err: &mut err,
            input: &mut input,
            served: None,
        },
    )
}

/// Inside serve: runs one control-socket client's command on serve's
/// runtime and assistant.
pub fn serve_session(
    rt: &Arc<Runtime>,
    assistant: Option<&Arc<Assistant>>,
    session: Session<'_>,
) -> Result<()> {
    let Session {
        request,
        input,
        out,
        err,
    } = session;
    // The client parsed the same arguments before sending them, so an
    // error here is a client of another build; it gets clap's first line.
    let mut cli = Cli::try_parse_from(&request.argv).map_err(|e| {
        let text = e.to_string();
        anyhow::anyhow!(
            "{}",
            text.lines()
                .next()
                .unwrap_or_default()
                .trim_start_matches("error: ")
        )
    })?;
    rebase(&mut cli.command, &request.cwd);
    let v = vault_args(&cli.command)
        .context("this command does not run through a running memkern serve")?;
    let who = principal(rt, v)?;
    execute(
        &cli.command,
        &mut Ctx {
            rt: rt.clone(),
            who,
            out,
            err,
            input,
            served: Some(assistant.cloned()),
        },
    )
}

/// Makes the relative paths of a client's command relative to its working
/// directory (serve has its own).
fn rebase(command: &mut Command, cwd: &Path) {
    let join = |p: &mut PathBuf| {
        if p.is_relative() && p.as_os_str() != "-" {
            *p = cwd.join(&*p);
        }
    };
    match command {
        Command::Ingest(a) => join(&mut a.file),
        Command::Export(a) => join(&mut a.out),
        Command::Import(a) => join(&mut a.file),
        Command::Modules(ModulesArgs {
            command: ModulesCommand::Install(a),
            ..
        }) => {
            // A file relative to the client's directory; an id stays one.
            let there = cwd.join(&a.module);
            if std::path::Path::new(&a.module).is_relative() && there.exists() {
                a.module = there.to_string_lossy().into_owned();
            }
        }
        Command::Modules(ModulesArgs {
            command: ModulesCommand::UserKey { export, import, .. },
            ..
        }) => {
            for f in [export, import].into_iter().flatten() {
                join(f);
            }
        }
        _ => {}
    }
}
