//! Telemetry: structured logs with `tracing`, human-readable or JSON.
//!
//! Logs go to stderr (stdout belongs to the `stdout` sink). The level comes from `RUST_LOG`,
//! default `info`. Secrets never reach a log line: config types redact them in `Debug`.

use tracing_subscriber::EnvFilter;

/// Log line format, chosen with `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    #[default]
    Human,
    Json,
}

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        LogFormat::Json => builder.json().flatten_event(true).init(),
    }
}
