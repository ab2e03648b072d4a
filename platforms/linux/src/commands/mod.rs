//! One module per subcommand; [`run`] dispatches.
//!
//! Commands own the user-facing side (progress bars, tables, `anyhow`
//! context); the work itself is in the libraries: `memkern_runtime` (the
//! memory OS), `memkern_server` (HTTP), `memkern_eval` (benchmarks) and
//! `memkern_models` (the models).

mod answers;
mod chat;
mod ctx;
mod distill;
#[cfg(feature = "embed")]
mod embed;
mod eval;
mod generate;
mod llm;
mod memory;
mod modules;
mod quantize;
mod serve;
mod snapshot;
mod vault;

use anyhow::Result;

use crate::cli::{Command, EvalCommand, SnapshotCommand};

/// Runs a parsed command.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Eval(EvalCommand::Locomo(args)) if args.answers => answers::run(&args),
        Command::Eval(EvalCommand::Locomo(args)) => eval::locomo(&args),
        Command::Eval(EvalCommand::Scale(args)) => eval::scale(&args),
        Command::Eval(EvalCommand::Load(args)) => chat::load(&args),
        Command::Generate(args) => generate::generate(&args),
        Command::Snapshot(SnapshotCommand::Save(args)) => snapshot::save(&args),
        Command::Snapshot(SnapshotCommand::Info(args)) => snapshot::info(&args),
        #[cfg(feature = "embed")]
        Command::Embed(args) => embed::embed(&args),
        #[cfg(not(feature = "embed"))]
        Command::Embed(_) => anyhow::bail!("memkern was built without the `embed` feature"),
        Command::Distill(args) => distill::distill(&args),
        Command::Serve(args) => serve::serve(&args),
        Command::Mcp(args) => serve::mcp(&args),
        Command::Models(crate::cli::ModelsCommand::Fetch { json }) => llm::fetch_all(json),
        Command::Models(crate::cli::ModelsCommand::Quantize(args)) => quantize::run(&args),
        Command::Models(crate::cli::ModelsCommand::Pull { name, json }) => llm::pull(&name, json),
        Command::Models(crate::cli::ModelsCommand::List { json }) => llm::list(json),
        Command::Models(crate::cli::ModelsCommand::Rm { name }) => llm::remove(&name),
        Command::Demo(args) => chat::demo(&args),
        Command::Keys(c) => modules::keys(&c),
        Command::Modules(crate::cli::ModulesArgs {
            command: crate::cli::ModulesCommand::Build(args),
            vault,
        }) => modules::build(&args, vault.no_embed, vault.json),
        Command::Modules(crate::cli::ModulesArgs {
            command: crate::cli::ModulesCommand::Seal { module, to, out },
            ..
        }) => modules::seal(&module, &to, &out),
        Command::Modules(crate::cli::ModulesArgs {
            command:
                crate::cli::ModulesCommand::Index {
                    files,
                    base_url,
                    key,
                    out,
                },
            ..
        }) => modules::index(&files, &base_url, &key, &out),
        Command::Modules(crate::cli::ModulesArgs {
            command:
                crate::cli::ModulesCommand::Manual {
                    key,
                    out,
                    no_vectors,
                },
            vault,
        }) => modules::manual(&key, &out, no_vectors || vault.no_embed),
        // Vault commands: through a running serve, or on the vault here.
        ref c @ (Command::User(_)
        | Command::Cube(_)
        | Command::Add(_)
        | Command::Ingest(_)
        | Command::Get(_)
        | Command::Search(_)
        | Command::Update(_)
        | Command::History(_)
        | Command::Rollback(_)
        | Command::Delete(_)
        | Command::Expire(_)
        | Command::Audit(_)
        | Command::Chat(_)
        | Command::Stats(_)
        | Command::Export(_)
        | Command::Import(_)
        | Command::Modules(_)) => vault::run(c),
        Command::Pack(crate::cli::PackCommand::Keygen { file }) => {
            let public = memkern_runtime::pack::generate_key(&file)?;
            println!("public key: {public}");
            Ok(())
        }
    }
}
