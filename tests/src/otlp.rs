//! An OpenTelemetry collector for tests: an [`Upstream`] answering OTLP/HTTP exports as a
//! collector does (200, an empty `ExportTraceServiceResponse`), and the spans it received,
//! decoded from the real protocol with `opentelemetry-proto`.

use std::collections::BTreeMap;

use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{AnyValue, KeyValue, any_value};
use prost::Message;

use crate::upstream::{Answer, Received, Upstream};

/// `SPAN_KIND_SERVER` in the protocol.
pub const KIND_SERVER: i32 = 2;
/// `SPAN_KIND_CLIENT` in the protocol.
pub const KIND_CLIENT: i32 = 3;
/// `STATUS_CODE_ERROR` in the protocol.
pub const STATUS_ERROR: i32 = 2;

/// One exported span, flattened; ids are lowercase hex as in a `traceparent`.
#[derive(Debug, Clone)]
pub struct Span {
    /// `service.name` of the resource that exported it.
    pub service: String,
    pub name: String,
    pub trace_id: String,
    pub span_id: String,
    /// Empty for a root span.
    pub parent_span_id: String,
    pub kind: i32,
    pub attributes: BTreeMap<String, String>,
    /// (trace id, span id) of each link.
    pub links: Vec<(String, String)>,
    pub status_code: i32,
}

impl Span {
    /// The attribute `key`, as text.
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

/// The running collector; stops when dropped.
pub struct Collector {
    upstream: Upstream,
}

impl Collector {
    /// Starts on a free port.
    pub fn start() -> Collector {
        let upstream = Upstream::start();
        upstream.answer(Answer::Body(200, Vec::new()));
        Collector { upstream }
    }

    /// The base URL to configure as `[telemetry.otlp] endpoint` (`/v1/traces` is added).
    pub fn endpoint(&self) -> String {
        format!("http://{}", self.upstream.addr)
    }

    /// Every export request received.
    pub fn requests(&self) -> Vec<Received> {
        self.upstream.received()
    }

    /// Every span received so far, in arrival order.
    pub fn spans(&self) -> Vec<Span> {
        self.requests().iter().flat_map(decode).collect()
    }
}

/// The spans of one export request (`POST /v1/traces`, protobuf).
pub fn decode(request: &Received) -> Vec<Span> {
    assert_eq!(
        request.path, "/v1/traces",
        "an export goes to the traces path"
    );
    assert_eq!(
        request.header("content-type"),
        Some("application/x-protobuf"),
        "OTLP/HTTP with protobuf"
    );
    let export = ExportTraceServiceRequest::decode(request.body.as_slice())
        .expect("an ExportTraceServiceRequest");
    let mut spans = Vec::new();
    for resource in export.resource_spans {
        let service = resource
            .resource
            .as_ref()
            .and_then(|r| attributes(&r.attributes).remove("service.name"))
            .unwrap_or_default();
        for scope in resource.scope_spans {
            for span in scope.spans {
                spans.push(Span {
                    service: service.clone(),
                    name: span.name,
                    trace_id: hex::encode(&span.trace_id),
                    span_id: hex::encode(&span.span_id),
                    parent_span_id: hex::encode(&span.parent_span_id),
                    kind: span.kind,
                    attributes: attributes(&span.attributes),
                    links: span
                        .links
                        .iter()
                        .map(|l| (hex::encode(&l.trace_id), hex::encode(&l.span_id)))
                        .collect(),
                    status_code: span.status.map(|s| s.code).unwrap_or_default(),
                });
            }
        }
    }
    spans
}

fn attributes(kvs: &[KeyValue]) -> BTreeMap<String, String> {
    kvs.iter()
        .map(|kv| (kv.key.clone(), text(kv.value.as_ref())))
        .collect()
}

fn text(value: Option<&AnyValue>) -> String {
    match value.and_then(|v| v.value.as_ref()) {
        Some(any_value::Value::StringValue(s)) => s.clone(),
        Some(any_value::Value::IntValue(i)) => i.to_string(),
        Some(any_value::Value::DoubleValue(d)) => d.to_string(),
        Some(any_value::Value::BoolValue(b)) => b.to_string(),
        Some(other) => format!("{other:?}"),
        None => String::new(),
    }
}
