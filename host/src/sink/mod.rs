//! Sinks: where deliveries go. One trait, one folder per kind.
//!
//! A sink confirms a batch only when the receiving side has it (for `file`: written and
//! fsynced). Until it confirms, the delivery stays pending in the store and is retried, so a
//! sink outage never loses an acknowledged event; the price is at-least-once delivery.

mod file;
mod stdout;

use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::config::SinkConfig;
use crate::store::DeliveryRecord;

pub use file::FileSink;
pub use stdout::StdoutSink;

/// Why a sink did not confirm a batch.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    pub message: String,
    /// Retrying cannot help (e.g. the receiver refused the content).
    pub permanent: bool,
    /// The receiver asked us to wait this long before trying again.
    pub retry_after: Option<Duration>,
}

impl SinkError {
    /// A failure worth retrying (I/O error, receiver down).
    pub fn transient(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            permanent: false,
            retry_after: None,
        }
    }
}

/// A destination for deliveries.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Hands over `batch` (all for this sink); `Ok` means every one is confirmed.
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError>;
}

/// Builds the sink described by `config`.
pub fn build(config: &SinkConfig) -> Arc<dyn Sink> {
    match config {
        SinkConfig::File(c) => Arc::new(FileSink::new(c.path.clone())),
        SinkConfig::Stdout(_) => Arc::new(StdoutSink),
    }
}

/// The JSON line written by the `file` and `stdout` sinks:
/// `{"id","delivery","source","sink","received_at","headers":{…},"body":…}`. The body is
/// embedded as JSON when it parses as JSON, else given as `body_base64`.
pub fn json_line(d: &DeliveryRecord) -> Vec<u8> {
    let mut headers = Map::new();
    for (name, value) in &d.headers {
        match headers.get_mut(name) {
            // Repeated headers are joined as HTTP allows.
            Some(Value::String(existing)) => {
                existing.push_str(", ");
                existing.push_str(value);
            }
            _ => {
                headers.insert(name.clone(), Value::String(value.clone()));
            }
        }
    }
    let received_at = std::time::UNIX_EPOCH + Duration::from_millis(d.received_at_ms);
    let mut line = json!({
        "id": d.event_id,
        "delivery": d.seq,
        "source": d.source,
        "sink": d.sink,
        "received_at": humantime::format_rfc3339_millis(received_at).to_string(),
        "headers": headers,
    });
    match serde_json::from_slice::<Value>(&d.body) {
        Ok(body) => line["body"] = body,
        Err(_) => {
            line["body_base64"] =
                Value::String(base64::engine::general_purpose::STANDARD.encode(&d.body))
        }
    }
    let mut bytes = serde_json::to_vec(&line).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}
