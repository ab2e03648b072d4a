//! One module per subcommand; [`run`] dispatches.
//!
//! Commands own the user-facing side (progress bars, tables, `anyhow`
//! context); the work itself is in the `memkern_linux` library.

#[cfg(feature = "embed")]
mod embed;
mod eval;
mod generate;
mod llm;
mod snapshot;

use anyhow::Result;

use crate::cli::{Command, EvalCommand, SnapshotCommand};

/// Runs a parsed command.
pub fn run(command: Command) -> Result<()> {
    match command {
        Command::Eval(EvalCommand::Locomo(args)) => eval::locomo(&args),
        Command::Eval(EvalCommand::Scale(args)) => eval::scale(&args),
        Command::Generate(args) => generate::generate(&args),
        Command::Snapshot(SnapshotCommand::Save(args)) => snapshot::save(&args),
        Command::Snapshot(SnapshotCommand::Info(args)) => snapshot::info(&args),
        #[cfg(feature = "embed")]
        Command::Embed(args) => embed::embed(&args),
        #[cfg(not(feature = "embed"))]
        Command::Embed(_) => anyhow::bail!("memkern was built without the `embed` feature"),
    }
}
