//! `memkern`: the Linux runtime's command-line entry point.
//!
//! It exists to parse arguments, set up logging (RUST_LOG, to standard
//! error) and dispatch to `commands/`; an error becomes one `error: …` line
//! and exit status 1.

use std::process::ExitCode;

use clap::Parser;
use clap::error::{ContextKind, ErrorKind};
use tracing_subscriber::EnvFilter;

mod cli;
mod commands;
mod control;

fn main() -> ExitCode {
    let cli = match cli::Cli::try_parse() {
        Ok(cli) => cli,
        Err(e) => return usage_error(&e),
    };
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

/// `--help` and `--version` print as clap writes them; an argument error
/// keeps the one-line promise: `error: …` with where to look, status 2.
fn usage_error(e: &clap::Error) -> ExitCode {
    match e.kind() {
        ErrorKind::DisplayHelp | ErrorKind::DisplayVersion => {
            let _ = e.print();
            return ExitCode::SUCCESS;
        }
        // `memkern` or `memkern eval` alone: the help, as a usage error.
        ErrorKind::DisplayHelpOnMissingArgumentOrSubcommand => {
            let _ = e.print();
            return ExitCode::from(2);
        }
        _ => {}
    }
    // The first paragraph, joined: "…not provided: <QUERY>".
    let text = e.render().to_string();
    let first = text
        .lines()
        .take_while(|l| !l.trim().is_empty())
        .map(str::trim)
        .collect::<Vec<_>>()
        .join(" ");
    let first = first.strip_prefix("error: ").unwrap_or(&first);
    // clap's own suggestion ("a similar argument exists: …"), if any.
    let tip = match e.get(ContextKind::SuggestedArg) {
        Some(s) => format!("; did you mean {s}?"),
        None => String::new(),
    };
    eprintln!("error: {first}{tip} (see --help)");
    ExitCode::from(2)
}
