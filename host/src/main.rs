//! The `hookwall` binary: parse the command line, start the runtime, run the subcommand
//! ([`hookwall::cli`]), shut the runtime down within a bound, and turn the outcome into an exit
//! status.

#![allow(clippy::disallowed_types)] // anyhow is the binary's edge (clippy.toml).

use std::process::ExitCode;
use std::time::Duration;

use clap::Parser;

use hookwall::app::AppError;
use hookwall::cli::Cli;
use hookwall::config::ConfigError;

/// Exit code for a bad config or command line (sysexits' EX_USAGE).
const EXIT_USAGE: u8 = 64;

/// How long the runtime's shutdown waits for blocking tasks still running once the command is
/// done. Dropping the runtime would wait for them forever, and a sink write stuck on a hung disk
/// or a stdout pipe nobody reads never returns (its unit already failed at the sink's timeout
/// and stays pending: it is sent again after the restart).
const BLOCKING_SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

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
    shut_down(runtime);
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

/// Stops the runtime, abandoning blocking tasks (a stuck sink write) after
/// [`BLOCKING_SHUTDOWN_GRACE`], and says so.
fn shut_down(runtime: tokio::runtime::Runtime) {
    let stuck = hookwall::sink::writes_in_progress();
    if stuck > 0 {
        tracing::warn!(writes = stuck, grace = ?BLOCKING_SHUTDOWN_GRACE,
            "a sink write is still blocked (a hung disk, or a stdout nobody reads); waiting for it at most this long");
    }
    runtime.shutdown_timeout(BLOCKING_SHUTDOWN_GRACE);
    let stuck = hookwall::sink::writes_in_progress();
    if stuck > 0 {
        tracing::warn!(
            writes = stuck,
            "abandoned a blocked sink write at exit; its deliveries were not confirmed and stay pending"
        );
    }
}

/// A bad config (or a secret it names that cannot be read): the operator's to fix.
fn is_usage_error(e: &anyhow::Error) -> bool {
    e.downcast_ref::<ConfigError>().is_some()
        || matches!(e.downcast_ref::<AppError>(), Some(AppError::Config(_)))
}
