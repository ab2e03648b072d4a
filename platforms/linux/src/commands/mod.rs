//! One module per subcommand; [`run`] dispatches.
//!
//! Commands own the user-facing side (progress bars, tables, `anyhow`
//! context); the work itself is in the `memkern_linux` library.

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
        Command::Generate(args) => generate::generate(&args),
        Command::Snapshot(SnapshotCommand::Save(args)) => snapshot::save(&args),
        Command::Snapshot(SnapshotCommand::Info(args)) => snapshot::info(&args),
    }
}
