//! Sinks: where deliveries go. One trait, one file per kind; adding a kind touches this
//! folder and its config in `config/sink.rs`.
//!
//! A sink confirms a unit (one delivery, or a batch) only when the receiving side has it (for
//! `file`: written and fsynced, each checked; for `stdout`: written to the descriptor without
//! error; for `http`: a 2xx answer; for `redis`: an entry id per `XADD`; for `nats`: a
//! JetStream publish ack per message), never when the bytes were merely handed to a buffer. Until it confirms, the deliveries
//! stay pending in the store and are retried, so a sink outage never loses an acknowledged
//! event; the price is at-least-once delivery, which every delivery's stable id makes safe.

mod file;
mod http;
mod nats;
mod redis;
mod stdout;

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::config::{ConfigError, SinkConfig, SinkKind};
use crate::store::DeliveryRecord;

pub use file::FileSink;
pub use http::HttpSink;
pub use nats::NatsSink;
pub use redis::RedisSink;
pub use stdout::StdoutSink;

/// Why a sink did not confirm a unit.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct SinkError {
    /// What went wrong (the error's `Display`).
    pub message: String,
    /// Retrying cannot help (e.g. the receiver refused the content).
    pub permanent: bool,
    /// The receiver asked us to wait this long before trying again.
    pub retry_after: Option<Duration>,
    /// The receiver's answer, for sinks that have one (an HTTP status).
    pub status: Option<u16>,
}

impl SinkError {
    /// A failure worth retrying (I/O error, receiver down).
    pub fn transient(message: impl Into<String>) -> SinkError {
        SinkError {
            message: message.into(),
            permanent: false,
            retry_after: None,
            status: None,
        }
    }

    /// A failure retrying cannot fix.
    pub fn permanent(message: impl Into<String>) -> SinkError {
        SinkError {
            permanent: true,
            ..SinkError::transient(message)
        }
    }
}

/// A destination for deliveries.
#[async_trait::async_trait]
pub trait Sink: Send + Sync {
    /// Hands over one unit: a single delivery, or several as one batch; `Ok` means every
    /// one is confirmed, an error that none is (the unit is retried as a whole).
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError>;
}

/// Builds the sink `name` described by `config` (secrets are resolved against `base_dir`).
pub fn build(
    name: &str,
    config: &SinkConfig,
    base_dir: &Path,
) -> Result<Arc<dyn Sink>, ConfigError> {
    Ok(match &config.kind {
        SinkKind::File(c) => Arc::new(FileSink::new(c.path.clone())),
        SinkKind::Stdout(_) => Arc::new(StdoutSink::default()),
        SinkKind::Http(c) => Arc::new(HttpSink::new(name, c, base_dir)?),
        SinkKind::Redis(c) => {
            let key = format!("sinks.{name}.url");
            let url = c.url.resolve(base_dir, &key)?;
            Arc::new(
                RedisSink::new(&url, c.stream.clone(), c.maxlen)
                    .map_err(|reason| ConfigError::Invalid { key, reason })?,
            )
        }
        SinkKind::Nats(c) => {
            let key = format!("sinks.{name}.url");
            let url = c.url.resolve(base_dir, &key)?;
            Arc::new(
                NatsSink::new(&url, &c.subject)
                    .map_err(|reason| ConfigError::Invalid { key, reason })?,
            )
        }
    })
}

/// The JSON line written by the `file` and `stdout` sinks, and the element of an `http`
/// batch: `{"id","delivery","delivery_id","source","sink","received_at","headers":{…},"body":…}`.
/// `id` is the event's id, `delivery_id` the delivery's stable id. The body is embedded as JSON when it parses as JSON,
/// else given as `body_base64`.
pub fn json_line(d: &DeliveryRecord) -> Vec<u8> {
    let mut bytes = serde_json::to_vec(&envelope(d)).unwrap_or_default();
    bytes.push(b'\n');
    bytes
}

/// One delivery as a JSON object (see [`json_line`]).
pub fn envelope(d: &DeliveryRecord) -> Value {
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
        "delivery_id": d.id,
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
    line
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    use crate::config::Config;

    /// Builds sink `app` described by `sink`, as `serve` and `check` do before binding.
    fn built(sink: &str) -> Result<(), String> {
        let text = format!(
            "[sources.s]\npath = \"/s\"\nverify = {{ scheme = \"none\" }}\nsinks = [\"app\"]\n\n[sinks.app]\n{sink}\n"
        );
        let c = Config::parse(&text, Path::new("/")).map_err(|e| e.to_string())?;
        c.check_secrets().map_err(|e| e.to_string())?;
        super::build("app", &c.sinks["app"], Path::new("/"))
            .map(|_| ())
            .map_err(|e| e.to_string())
    }

    #[test]
    fn a_bad_nats_url_is_named_by_key_never_printed() {
        built("type = \"nats\"\nurl = \"nats://127.0.0.1:4222\"\nsubject = \"hw.events\"").unwrap();
        let e =
            built("type = \"nats\"\nurl = \"redis://u:hunter2@h/\"\nsubject = \"a\"").unwrap_err();
        assert!(e.contains("sinks.app.url") && !e.contains("hunter2"), "{e}");
    }

    #[test]
    fn the_http_url_is_a_secret_checked_without_being_printed() {
        let checked = |url: &str| built(&format!("type = \"http\"\nurl = \"{url}\""));
        for bad in [
            "ftp://x/hook-XSECRET",
            "not a url XSECRET",
            "/only/a/path/XSECRET",
        ] {
            let e = checked(bad).unwrap_err();
            assert!(
                e.contains("sinks.app.url") && !e.contains("XSECRET"),
                "{bad}: {e}"
            );
        }
        checked("https://hooks.example.com/services/T0/B0/XSECRET").unwrap();
        let e = checked("env:HOOKWALL_TEST_SURELY_UNSET_URL").unwrap_err();
        assert!(e.contains("HOOKWALL_TEST_SURELY_UNSET_URL"), "{e}");
        let c = Config::parse(
            "[sources.s]\npath = \"/s\"\nverify = { scheme = \"none\" }\nsinks = [\"app\"]\n\n[sinks.app]\ntype = \"http\"\nurl = \"https://h/services/XSECRET\"\n",
            Path::new("/"),
        )
        .unwrap();
        assert!(!format!("{:?}", c.sinks["app"]).contains("XSECRET"));
    }
}
