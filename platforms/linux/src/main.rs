//! `memkern`: the Linux runtime's command-line entry point.
//!
//! It exists to parse arguments, set up logging (RUST_LOG, to standard
//! error) and dispatch to `commands/`; an error becomes one `error: …` line
//! and exit status 1.

use std::process::ExitCode;

use clap::Parser;
use tracing_subscriber::EnvFilter;

mod cli;
mod commands;

fn main() -> ExitCode {
    let cli = cli::Cli::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("warn"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr)
        .init();
    match commands::run(cli.command) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // `{:#}` puts the whole context chain on one line.
            eprintln!("error: {e:#}");
            ExitCode::from(1)
        }
    }
}
