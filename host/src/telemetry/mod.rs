//! Telemetry: structured logs with `tracing`, human-readable or JSON, and Prometheus metrics.
//!
//! Logs go to stderr (stdout belongs to the `stdout` sink). The level comes from `RUST_LOG`,
//! default `info`. Secrets never reach a log line: config types redact them in `Debug`, and
//! signatures are never put in a field. Request bodies are logged only at `trace` level and
//! only with `[telemetry] log_bodies = true`.
//!
//! Each event gets one span, `event{id, source}` ([`event_span`]), entered from the moment
//! its id is known through its plugin chain and commit, and again around each delivery
//! attempt, so every line about an event carries its id.
//!
//! [`metrics`] holds the metric names and the Prometheus recorder.

pub mod metrics;

use tracing_subscriber::EnvFilter;

/// Log line format, chosen with `--log-format`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, clap::ValueEnum)]
pub enum LogFormat {
    /// Plain text lines, coloured on a terminal.
    #[default]
    Human,
    /// One JSON object per line, with the event span's fields (its id and source).
    Json,
}

pub use crate::config::TelemetryConfig;

/// Installs the global subscriber. Call once, early in `main`.
pub fn init(format: LogFormat) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    match format {
        LogFormat::Human => builder.init(),
        // Span fields (the event id) go on every line, so one event's lines can be grepped.
        LogFormat::Json => builder
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .init(),
    }
}

/// The span of one event: every log line inside it carries the event's id and source.
pub fn event_span(id: &str, source: &str) -> tracing::Span {
    tracing::info_span!("event", id = %id, source = %source)
}
