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
//! [`metrics`] holds the metric names and the Prometheus recorder; [`trace`] the spans of a
//! webhook's way through and their export over OTLP.

pub mod metrics;
pub mod trace;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{EnvFilter, Layer};

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

/// Installs the global subscriber. Call once, early in `main`. With `traces` (the layer of
/// [`trace::Traces::build`]), Hookwall's spans are exported too, whatever the log level.
pub fn init(format: LogFormat, traces: Option<trace::TraceLayer>) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    // Colours only on a terminal: a log file or collector gets plain text.
    let ansi = std::io::IsTerminal::is_terminal(&std::io::stderr());
    let Some(traces) = traces else {
        // The common case, as it has always been: one layer, one global filter, so spans the
        // filter turns off cost a callsite check.
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
        return;
    };
    // Logs keep their own filter; the trace layer filters for itself.
    let logs = tracing_subscriber::fmt::layer()
        .with_ansi(ansi)
        .with_writer(std::io::stderr);
    let logs = match format {
        LogFormat::Human => logs.with_filter(filter).boxed(),
        LogFormat::Json => logs
            .json()
            .flatten_event(true)
            .with_current_span(true)
            .with_span_list(false)
            .with_filter(filter)
            .boxed(),
    };
    tracing_subscriber::registry()
        .with(vec![logs, traces])
        .init();
}

/// The span of one event: every log line inside it carries the event's id and source. It is
/// also the `event` span of the event's trace.
pub fn event_span(id: &str, source: &str) -> tracing::Span {
    tracing::info_span!("event", id = %id, source = %source)
}

/// The target of spans that only label log lines and are never exported as traces.
pub const LOG_ONLY: &str = "hookwall::log";

/// [`event_span`] for log lines written away from the event's trace (the store recording an
/// attempt's outcome): the same fields in the logs, no span in a trace.
pub fn event_log_span(id: &str, source: &str) -> tracing::Span {
    tracing::info_span!(target: "hookwall::log", "event", id = %id, source = %source)
}
