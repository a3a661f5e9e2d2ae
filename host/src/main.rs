//! The `hookwall` binary: parse the command line, start the runtime, run the subcommand
//! ([`hookwall::cli`]), and turn its outcome into an exit status.

#![allow(clippy::disallowed_types)] // anyhow is the binary's edge (clippy.toml).

use std::process::ExitCode;

use clap::Parser;

use hookwall::app::AppError;
use hookwall::cli::Cli;
use hookwall::config::ConfigError;

/// Exit code for a bad config or command line (sysexits' EX_USAGE).
const EXIT_USAGE: u8 = 64;

fn main() -> ExitCode {
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(hookwall::cli::run(cli.command));
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e:#}");
            if is_usage_error(&e) {
                ExitCode::from(EXIT_USAGE)
            } else {
                ExitCode::FAILURE
            }
        }
    }
}

/// A bad config (or a secret it names that cannot be read): the operator's to fix.
fn is_usage_error(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConfigError>().is_some()
        || matches!(e.downcast_ref::<AppError>(), Some(AppError::Config(_)))
}
