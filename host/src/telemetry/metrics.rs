//! Metrics: names, the Prometheus recorder, and the few helpers the stages call.
//!
//! Every stage emits through the [`metrics`] facade macros, so a stage never knows whether a
//! recorder is installed: without one (metrics disabled, `hookwall check`, unit tests) the
//! macros cost a branch. `serve` installs the Prometheus recorder ([`install`]) and the admin
//! listener renders it at `/metrics`.
//!
//! Labels are low-cardinality by construction: source, sink and plugin names come from the
//! config or the plugins directory, outcomes and reasons are fixed vocabularies. No event id,
//! path or free-form text ever becomes a label. The README's metrics table lists every name.

use std::time::Duration;

use metrics_exporter_prometheus::{BuildError, Matcher, PrometheusBuilder, PrometheusHandle};

/// `hookwall_requests_total{source,outcome}`: every request that reached a source.
pub const REQUESTS: &str = "hookwall_requests_total";
/// `hookwall_requests_rejected_total{source,reason}`: the `rejected` outcome, by reason.
pub const REJECTED: &str = "hookwall_requests_rejected_total";
/// `hookwall_verify_failures_total{source,reason}`: verification failures by error code.
pub const VERIFY_FAILURES: &str = "hookwall_verify_failures_total";
/// `hookwall_plugin_call_seconds{plugin}`: one plugin call, including instantiation.
pub const PLUGIN_CALL: &str = "hookwall_plugin_call_seconds";
/// `hookwall_plugin_failures_total{plugin,kind}`: `trap`, `timeout`, `memory`, `error`,
/// `invalid_output`.
pub const PLUGIN_FAILURES: &str = "hookwall_plugin_failures_total";
/// `hookwall_plugin_load_errors_total{plugin}`: a plugin file that failed to (re)load.
pub const PLUGIN_LOAD_ERRORS: &str = "hookwall_plugin_load_errors_total";
/// `hookwall_store_commit_seconds`: one group commit of the store's writer.
pub const STORE_COMMIT: &str = "hookwall_store_commit_seconds";
/// `hookwall_store_writable`: 1 while the store takes writes, 0 after a failed commit until
/// the database is reopened (e.g. the disk was full and space is back).
pub const STORE_WRITABLE: &str = "hookwall_store_writable";
/// `hookwall_sink_backlog{sink}`: deliveries pending for a sink, sampled at scrape.
pub const SINK_BACKLOG: &str = "hookwall_sink_backlog";
/// `hookwall_dead_letters`: entries in the dead-letter queue, sampled at scrape.
pub const DEAD_LETTERS_QUEUED: &str = "hookwall_dead_letters";
/// `hookwall_queue_oldest_pending_seconds{sink}`: with the shared (PostgreSQL) store, the age
/// of the sink's oldest pending delivery across every replica, read from the database.
pub const QUEUE_OLDEST_PENDING: &str = "hookwall_queue_oldest_pending_seconds";
/// Gauge: bytes of request bodies held under `[server] overload.max_body_bytes_in_flight`.
pub const BODY_BYTES_IN_FLIGHT: &str = "hookwall_body_bytes_in_flight";

/// Histogram buckets (seconds) for the fast in-process paths: plugin calls, commits.
const FAST_BUCKETS: &[f64] = &[
    0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0,
];
/// Histogram buckets (seconds) for received → delivered, which includes retries.
const DELIVERY_BUCKETS: &[f64] = &[
    0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0, 900.0, 3600.0,
];

/// Installs the process-wide Prometheus recorder; the handle renders the text format.
/// Histograms get real buckets (not summaries) so `histogram_quantile` works across replicas.
pub fn install() -> Result<PrometheusHandle, BuildError> {
    let handle = PrometheusBuilder::new()
        .set_buckets_for_metric(Matcher::Full(PLUGIN_CALL.into()), FAST_BUCKETS)?
        .set_buckets_for_metric(Matcher::Full(STORE_COMMIT.into()), FAST_BUCKETS)?
        .set_buckets_for_metric(Matcher::Suffix("_latency_seconds".into()), DELIVERY_BUCKETS)?
        .install_recorder()?;
    describe();
    Ok(handle)
}

fn describe() {
    use metrics::{Unit, describe_counter, describe_gauge, describe_histogram};
    describe_counter!(
        REQUESTS,
        "Webhook requests that reached a source, by outcome."
    );
    describe_counter!(REJECTED, "Requests answered with a 4xx refusal, by reason.");
    describe_counter!(
        VERIFY_FAILURES,
        "Sender verification failures, by error code."
    );
    describe_histogram!(PLUGIN_CALL, Unit::Seconds, "Duration of one plugin call.");
    describe_counter!(PLUGIN_FAILURES, "Plugin calls that failed, by kind.");
    describe_counter!(PLUGIN_LOAD_ERRORS, "Plugin files that failed to load.");
    describe_histogram!(STORE_COMMIT, Unit::Seconds, "Duration of one store commit.");
    describe_gauge!(
        SINK_BACKLOG,
        "Deliveries pending for a sink (due now or later)."
    );
    describe_gauge!(DEAD_LETTERS_QUEUED, "Entries in the dead-letter queue.");
    describe_gauge!(
        QUEUE_OLDEST_PENDING,
        Unit::Seconds,
        "Shared store: age of a sink's oldest pending delivery, across every replica."
    );
    describe_gauge!(
        BODY_BYTES_IN_FLIGHT,
        Unit::Bytes,
        "Bytes of request bodies reserved against the body budget (held until answered)."
    );
    describe_gauge!(
        STORE_WRITABLE,
        "1 while the store takes writes, 0 while a failed write keeps it read-only."
    );
}

/// Sets sink `sink`'s oldest pending age (the shared store reads it from the database).
pub fn queue_oldest_pending(sink: &str, age: Duration) {
    metrics::gauge!(QUEUE_OLDEST_PENDING, "sink" => sink.to_string()).set(age.as_secs_f64());
}

/// Moves the bytes of request bodies held under the body budget by `delta`.
pub fn body_bytes_in_flight(delta: f64) {
    metrics::gauge!(BODY_BYTES_IN_FLIGHT).increment(delta);
}

/// Counts one failed verification of a request to `source`, by error `code`.
pub fn verify_failure(source: &str, code: &'static str) {
    metrics::counter!(VERIFY_FAILURES, "source" => source.to_string(), "reason" => code)
        .increment(1);
}

/// Counts a request of `source` refused before the pipeline (or by a plugin) with a 4xx.
/// `reason` is one of a fixed set: `plugin`, `body_too_large`, `body_unreadable`,
/// `method_not_allowed`.
pub fn request_rejected(source: &str, reason: &'static str) {
    request(source, "rejected");
    metrics::counter!(REJECTED, "source" => source.to_string(), "reason" => reason).increment(1);
}

/// Counts one request of `source` with `outcome`.
pub fn request(source: &str, outcome: &'static str) {
    metrics::counter!(REQUESTS, "source" => source.to_string(), "outcome" => outcome).increment(1);
}

/// Records one plugin call: its duration and, if it failed, its failure `kind` (`trap`,
/// `timeout`, `memory`, `error`, `invalid_output`).
pub fn plugin_call(plugin: &str, elapsed: Duration, failure: Option<&'static str>) {
    metrics::histogram!(PLUGIN_CALL, "plugin" => plugin.to_string()).record(elapsed);
    if let Some(kind) = failure {
        metrics::counter!(PLUGIN_FAILURES, "plugin" => plugin.to_string(), "kind" => kind)
            .increment(1);
    }
}

/// Counts a plugin file that failed to load.
pub fn plugin_load_error(plugin: &str) {
    metrics::counter!(PLUGIN_LOAD_ERRORS, "plugin" => plugin.to_string()).increment(1);
}

/// Whether the store takes writes (see [`STORE_WRITABLE`]).
pub fn store_writable(writable: bool) {
    metrics::gauge!(STORE_WRITABLE).set(if writable { 1.0 } else { 0.0 });
}

/// Records one store commit's duration.
pub fn store_commit(elapsed: Duration) {
    metrics::histogram!(STORE_COMMIT).record(elapsed);
}
