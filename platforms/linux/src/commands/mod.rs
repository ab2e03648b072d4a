//! One module per subcommand; [`run`] dispatches.
//!
//! Commands own the user-facing side (progress bars, tables, `anyhow`
//! context); the work itself is in the libraries: `memkern_runtime` (the
//! memory OS), `memkern_server` (HTTP), `memkern_eval` (benchmarks) and
//! `memkern_models` (the models).

mod chat;
mod distill;
#[cfg(feature = "embed")]
mod embed;
mod eval;
mod generate;
mod llm;
mod memory;
mod snapshot;

use anyhow::Result;

use crate::cli::{Command, EvalCommand, SnapshotCommand};

/// Runs a parsed command.
pub fn run(command: Command) -> Result<()> {
    match command {
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
        Command::User(args) => memory::user(&args),
        Command::Cube(args) => memory::cube(&args),
        Command::Add(args) => memory::add(&args),
        Command::Ingest(args) => memory::ingest(&args),
        Command::Get(args) => memory::get(&args),
        Command::Search(args) => memory::search(&args),
        Command::Update(args) => memory::update(&args),
        Command::History(args) => memory::history(&args),
        Command::Rollback(args) => memory::rollback(&args),
        Command::Delete(args) => memory::delete(&args),
        Command::Expire(args) => memory::expire(&args),
        Command::Audit(args) => memory::audit(&args),
        Command::Chat(args) => chat::chat(&args),
        Command::Stats(args) => chat::stats(&args),
        Command::Distill(args) => distill::distill(&args),
        Command::Serve(args) => chat::serve(&args),
        Command::Mcp(args) => chat::mcp(&args),
        Command::Models(crate::cli::ModelsCommand::Fetch { json }) => llm::fetch_all(json),
        Command::Demo(args) => chat::demo(&args),
        Command::Export(args) => memory::export(&args),
        Command::Import(args) => memory::import(&args),
        Command::Pack(crate::cli::PackCommand::Keygen { file }) => {
            let public = memkern_runtime::pack::generate_key(&file)?;
            println!("public key: {public}");
            Ok(())
        }
    }
}
