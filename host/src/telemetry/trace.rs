//! Traces: one trace per webhook, exported over OTLP/HTTP when `[telemetry.otlp]` is set.
//!
//! The spans are ordinary `tracing` spans at `debug` level (`event` is `info`): with no
//! `[telemetry.otlp]` nothing subscribes to them at that level, so a disabled trace costs a
//! callsite check per span and no header is touched. With it, [`Traces::build`] makes the
//! OpenTelemetry layer that `telemetry::init` installs beside the log layer; it sees only
//! Hookwall's spans (never a log line, never a dependency's span), so what is exported is the
//! fields named below and nothing else: ids, names, counts and outcomes, never a header value,
//! a body, a URL or a secret.
//!
//! The shape of a trace:
//!
//! - `webhook` (server): one request to a source. An incoming W3C `traceparent` is its parent,
//!   so the sender's trace continues here; sampling follows the sender's decision, else
//!   `sampling`.
//!   - `verify`, `ratelimit`, then `event` (`id`, `source`) holding `dedupe`, one `plugin` per
//!     plugin call (`plugin.name`, `plugin.version`, `plugin.action`) and `commit`.
//! - `deliver` (client): one attempt to send a unit to a sink, recorded later, maybe by another
//!   replica. Its parent is the `event` span, carried with each stored delivery as its
//!   `traceparent` header ([`stamp`] at intake); the attempt then replaces that header with its
//!   own context, so the app's trace links to the attempt that reached it.
//!
//! Spans are batched and exported on a thread of their own by the OpenTelemetry SDK; the HTTP
//! requests themselves run on the runtime through the same hyper + rustls client stack as the
//! `http` sink. A full queue drops spans (the SDK logs it once) rather than slowing a request.

use std::collections::HashMap;
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full, Limited};
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use opentelemetry::propagation::{Extractor, Injector, TextMapPropagator};
use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_http::{HttpClient, HttpError, Request, Response};
use opentelemetry_otlp::{WithExportConfig, WithHttpConfig};
use opentelemetry_sdk::propagation::TraceContextPropagator;
use opentelemetry_sdk::trace::{
    BatchConfigBuilder, BatchSpanProcessor, Sampler, SdkTracerProvider,
};
use tracing::Span;
use tracing_opentelemetry::OpenTelemetrySpanExt;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::filter_fn;

use crate::config::{ConfigError, OtlpConfig};
use crate::tls::TlsError;

/// The W3C trace-context header that carries a trace across processes.
pub const TRACEPARENT: &str = "traceparent";

/// The queue of finished spans waiting for export, unless `OTEL_BSP_MAX_QUEUE_SIZE` says
/// otherwise: the SDK's 2,048 fills in well under a second at a few thousand events/s.
const QUEUE_SPANS: usize = 16_384;

/// How often spans are exported, unless `OTEL_BSP_SCHEDULE_DELAY` says otherwise (the SDK's
/// default is 5 s; a batch also leaves as soon as it is full).
const EXPORT_EVERY: Duration = Duration::from_secs(1);

/// The largest collector answer read back.
const MAX_ANSWER_BYTES: usize = 64 * 1024;

/// Set once traces are exported: only then are delivery headers stamped.
static ENABLED: AtomicBool = AtomicBool::new(false);

/// Why the trace exporter could not be built.
#[derive(Debug, thiserror::Error)]
pub enum TraceError {
    /// A header secret could not be resolved.
    #[error(transparent)]
    Config(#[from] ConfigError),
    /// `ca_file` could not be read.
    #[error("telemetry.otlp.ca_file: {0}")]
    Tls(#[from] TlsError),
    /// The OTLP exporter refused its settings.
    #[error("telemetry.otlp: {0}")]
    Exporter(String),
}

/// The layer that turns Hookwall's spans into OpenTelemetry spans, for `telemetry::init`.
pub type TraceLayer = Box<dyn Layer<tracing_subscriber::Registry> + Send + Sync>;

/// The running exporter: flushes what is queued on [`Traces::shutdown`].
pub struct Traces {
    provider: SdkTracerProvider,
}

impl Traces {
    /// Builds the exporter of `config` (headers resolved against `base_dir`) and the layer
    /// that feeds it. Spawns the export requests on the current runtime.
    pub fn build(config: &OtlpConfig, base_dir: &Path) -> Result<(Traces, TraceLayer), TraceError> {
        let mut headers = HashMap::new();
        for (name, secret) in &config.headers {
            let value = secret.resolve(base_dir, &format!("telemetry.otlp.headers.{name}"))?;
            let value = String::from_utf8(value.expose().to_vec()).map_err(|_| {
                TraceError::Exporter(format!("headers.{name}: the value is not UTF-8 text"))
            })?;
            headers.insert(name.clone(), value);
        }
        let client = ExportClient::new(config.ca_file.as_deref(), config.timeout)?;
        let exporter = opentelemetry_otlp::SpanExporter::builder()
            .with_http()
            .with_http_client(client)
            .with_endpoint(config.traces_url())
            .with_headers(headers)
            .with_timeout(config.timeout)
            .build()
            .map_err(|e| TraceError::Exporter(e.to_string()))?;
        let mut batch = BatchConfigBuilder::default();
        if std::env::var_os("OTEL_BSP_MAX_QUEUE_SIZE").is_none() {
            batch = batch.with_max_queue_size(QUEUE_SPANS);
        }
        if std::env::var_os("OTEL_BSP_SCHEDULE_DELAY").is_none() {
            batch = batch.with_scheduled_delay(EXPORT_EVERY);
        }
        let processor = BatchSpanProcessor::builder(exporter)
            .with_batch_config(batch.build())
            .build();
        let resource = opentelemetry_sdk::Resource::builder_empty()
            .with_service_name(config.service_name.clone())
            .with_attribute(opentelemetry::KeyValue::new(
                "service.version",
                env!("CARGO_PKG_VERSION"),
            ))
            .build();
        let provider = SdkTracerProvider::builder()
            .with_span_processor(processor)
            .with_sampler(Sampler::ParentBased(Box::new(Sampler::TraceIdRatioBased(
                config.sampling,
            ))))
            .with_resource(resource)
            .build();
        let layer = tracing_opentelemetry::layer()
            .with_tracer(provider.tracer("hookwall"))
            .with_location(false)
            .with_target(false)
            .with_threads(false)
            .with_tracked_inactivity(false)
            .with_context_activation(false)
            .with_filter(filter_fn(|meta| {
                meta.is_span()
                    && meta.target().starts_with("hookwall")
                    && meta.target() != super::LOG_ONLY
            }))
            .boxed();
        Ok((Traces { provider }, layer))
    }

    /// Marks traces as exported: from now on deliveries carry their trace context.
    pub fn start(&self) {
        ENABLED.store(true, Ordering::Relaxed);
    }

    /// Exports what is still queued (bounded by the exporter's timeout), then stops.
    pub async fn shutdown(self) {
        ENABLED.store(false, Ordering::Relaxed);
        let provider = self.provider;
        // The SDK blocks until its export thread is done; that thread's requests run on this
        // runtime, so wait off its workers.
        let done = tokio::task::spawn_blocking(move || provider.shutdown()).await;
        if let Ok(Err(e)) = done {
            tracing::warn!(error = %e, "traces not all exported at shutdown");
        }
    }
}

/// Whether traces are exported (and deliveries carry their context).
pub fn enabled() -> bool {
    ENABLED.load(Ordering::Relaxed)
}

/// The span of one webhook request to `source`, continuing the trace of its `traceparent`
/// header when it has one.
pub fn webhook_span(source: &str, method: &str, headers: &[(String, String)]) -> Span {
    let span = tracing::debug_span!("webhook",
        otel.name = %format_args!("webhook {source}"), otel.kind = "server",
        hookwall.source = %source, http.request.method = %method,
        http.response.status_code = tracing::field::Empty);
    continue_trace(&span, headers);
    span
}

/// The span of one attempt to send `deliveries` deliveries to `sink`, a child of the span
/// that stored the first of them (`headers` are its stored headers).
pub fn deliver_span(
    sink: &str,
    delivery_id: &str,
    deliveries: usize,
    attempt: usize,
    headers: &[(String, String)],
) -> Span {
    let span = tracing::debug_span!("deliver",
        otel.name = %format_args!("deliver {sink}"), otel.kind = "client",
        hookwall.sink = %sink, hookwall.delivery_id = %delivery_id,
        hookwall.deliveries = deliveries, hookwall.attempt = attempt,
        hookwall.result = tracing::field::Empty, otel.status_code = tracing::field::Empty);
    continue_trace(&span, headers);
    span
}

/// Links `span` to the trace context in `headers` (another delivery of the same batch).
pub fn link(span: &Span, headers: &[(String, String)]) {
    if span.is_disabled() {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    span.add_link(cx.span().span_context().clone());
}

/// Makes the `traceparent` in `headers`, if any, the parent of `span`.
fn continue_trace(span: &Span, headers: &[(String, String)]) {
    if span.is_disabled() || !headers.iter().any(|(k, _)| k == TRACEPARENT) {
        return;
    }
    let cx = TraceContextPropagator::new().extract(&Headers(headers));
    // Fails only without the OpenTelemetry layer, when the span records nothing anyway.
    let _ = span.set_parent(cx);
}

/// Sets `headers`' `traceparent` (and `tracestate`) to the context of `span`: what a stored
/// delivery carries to the attempt that sends it, and what the attempt sends to the sink. No
/// change when traces are off or `span` is not recorded.
pub fn stamp(span: &Span, headers: &mut Vec<(String, String)>) {
    if !enabled() || span.is_disabled() {
        return;
    }
    let cx = span.context();
    if !cx.span().span_context().is_valid() {
        return;
    }
    let mut fields = HashMap::new();
    TraceContextPropagator::new().inject_context(&cx, &mut Fields(&mut fields));
    headers.retain(|(k, _)| k != TRACEPARENT && k != "tracestate");
    headers.extend(fields);
}

/// Header pairs (lowercase names) as the propagator reads them.
struct Headers<'a>(&'a [(String, String)]);

impl Extractor for Headers<'_> {
    fn get(&self, key: &str) -> Option<&str> {
        self.0
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, v)| v.as_str())
    }

    fn keys(&self) -> Vec<&str> {
        self.0.iter().map(|(k, _)| k.as_str()).collect()
    }
}

/// What the propagator writes.
struct Fields<'a>(&'a mut HashMap<String, String>);

impl Injector for Fields<'_> {
    fn set(&mut self, key: &str, value: String) {
        self.0.insert(key.to_string(), value);
    }
}

/// The exporter's HTTP client: hyper with rustls (system roots or `ca_file`), each request
/// run as a task on the runtime that built it, because the SDK calls it from its own thread.
#[derive(Debug, Clone)]
struct ExportClient {
    client: Client<hyper_rustls::HttpsConnector<HttpConnector>, Full<Bytes>>,
    runtime: tokio::runtime::Handle,
    timeout: Duration,
}

impl ExportClient {
    fn new(ca_file: Option<&Path>, timeout: Duration) -> Result<ExportClient, TraceError> {
        let mut tls = crate::tls::client_config(ca_file, None, b"")?;
        // hyper-rustls offers the protocols it was built with.
        tls.alpn_protocols.clear();
        let mut http = HttpConnector::new();
        http.enforce_http(false);
        let connector = hyper_rustls::HttpsConnectorBuilder::new()
            .with_tls_config(tls)
            .https_or_http()
            .enable_http1()
            .wrap_connector(http);
        let runtime = tokio::runtime::Handle::try_current()
            .map_err(|e| TraceError::Exporter(format!("no async runtime: {e}")))?;
        Ok(ExportClient {
            client: Client::builder(TokioExecutor::new()).build(connector),
            runtime,
            timeout,
        })
    }
}

#[async_trait::async_trait]
impl HttpClient for ExportClient {
    async fn send_bytes(&self, request: Request<Bytes>) -> Result<Response<Bytes>, HttpError> {
        let client = self.client.clone();
        let timeout = self.timeout;
        let task = self.runtime.spawn(async move {
            let (parts, body) = request.into_parts();
            let exchange = async {
                let answer = client
                    .request(http::Request::from_parts(parts, Full::new(body)))
                    .await?;
                let (parts, body) = answer.into_parts();
                let body = Limited::new(body, MAX_ANSWER_BYTES)
                    .collect()
                    .await?
                    .to_bytes();
                Ok::<_, HttpError>(Response::from_parts(parts, body))
            };
            match tokio::time::timeout(timeout, exchange).await {
                Ok(answer) => answer,
                Err(_) => Err(format!("no answer within {timeout:?}").into()),
            }
        });
        task.await?
    }
}
