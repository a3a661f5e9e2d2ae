//! Sinks: where deliveries go. One trait, one file per kind; adding a kind touches this
//! folder and its config in `config/sink.rs`.
//!
//! A sink confirms a unit (one delivery, or a batch) only when the receiving side has it (for
//! `file`: written and fsynced, each checked; for `stdout`: written to the descriptor without
//! error; for `http`: a 2xx answer; for `redis`: an entry id per `XADD`; for `nats`: a
//! JetStream publish ack per message; for `amqp`: a broker confirm per message, routed to a queue), never when the bytes were merely handed to a buffer. Until it confirms, the deliveries
//! stay pending in the store and are retried, so a sink outage never loses an acknowledged
//! event; the price is at-least-once delivery, which every delivery's stable id makes safe.
//!
//! Every kind bounds each attempt by the sink's `timeout` (shared key, default per kind:
//! [`SinkKind::default_timeout`]); a unit not confirmed by then is a transient failure, retried
//! with backoff, so a hung receiver, disk or pipe never holds a unit (or shutdown, which waits
//! for the units in flight) forever. `file` and `stdout` write through blocking calls on
//! tokio's blocking pool, which cannot be interrupted: a write that outlives its attempt keeps
//! the sink's lock until it returns, so the next unit waits for it (within its own timeout)
//! instead of writing next to it. [`writes_in_progress`] counts those calls, so the binary can
//! tell, at exit, that it abandons one (`main.rs` bounds the runtime's shutdown).

mod amqp;
mod file;
mod http;
mod nats;
mod redis;
mod stdout;

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use base64::Engine as _;
use serde_json::{Map, Value, json};

use crate::config::{ConfigError, SinkConfig, SinkKind};
use crate::store::DeliveryRecord;

pub use amqp::AmqpSink;
pub use file::FileSink;
pub use http::{HttpSink, batch_id};
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
    let timeout = config.timeout;
    Ok(match &config.kind {
        SinkKind::File(c) => Arc::new(FileSink::new(c.path.clone(), timeout)),
        SinkKind::Stdout(_) => Arc::new(StdoutSink::new(timeout)),
        SinkKind::Http(c) => Arc::new(HttpSink::new(name, c, timeout, base_dir)?),
        SinkKind::Redis(c) => {
            let key = format!("sinks.{name}.url");
            let url = c.url.resolve(base_dir, &key)?;
            Arc::new(
                RedisSink::new(&url, c.stream.clone(), c.maxlen, timeout)
                    .map_err(|reason| ConfigError::Invalid { key, reason })?,
            )
        }
        SinkKind::Amqp(c) => {
            let key = format!("sinks.{name}.url");
            let url = c.url.resolve(base_dir, &key)?;
            Arc::new(
                AmqpSink::new(&url, &c.exchange, &c.routing_key, timeout)
                    .map_err(|reason| ConfigError::Invalid { key, reason })?,
            )
        }
        SinkKind::Nats(c) => {
            let key = format!("sinks.{name}.url");
            let url = c.url.resolve(base_dir, &key)?;
            Arc::new(
                NatsSink::new(&url, &c.subject, timeout)
                    .map_err(|reason| ConfigError::Invalid { key, reason })?,
            )
        }
    })
}

/// Blocking sink writes (`file`, `stdout`) running now, in the whole process.
static WRITES_IN_PROGRESS: AtomicUsize = AtomicUsize::new(0);

/// How many blocking sink writes (`file`, `stdout`) are running now. Once the delivery workers
/// have stopped, any left is stuck (a hung disk, a pipe nobody reads) and its unit already
/// failed: the runtime's shutdown abandons it rather than wait for it forever.
pub fn writes_in_progress() -> usize {
    WRITES_IN_PROGRESS.load(Ordering::SeqCst)
}

/// Counts one blocking write in [`writes_in_progress`] while it lives.
struct WriteInProgress;

impl WriteInProgress {
    fn start() -> WriteInProgress {
        WRITES_IN_PROGRESS.fetch_add(1, Ordering::SeqCst);
        WriteInProgress
    }
}

impl Drop for WriteInProgress {
    fn drop(&mut self) {
        WRITES_IN_PROGRESS.fetch_sub(1, Ordering::SeqCst);
    }
}

/// Who decides a blocking write's fate: the attempt that waits for it, or, once that attempt
/// gave up (its timeout, or its future was dropped), nobody (the write is abandoned). Settled
/// once, by whichever side gets there first, so a write that finishes just as its attempt times
/// out is either reported or treated as abandoned, never both.
#[derive(Clone, Default)]
struct Claim(Arc<std::sync::atomic::AtomicU8>);

impl Claim {
    const PENDING: u8 = 0;
    const DONE: u8 = 1;
    const ABANDONED: u8 = 2;

    /// The write finished: `true` if its attempt is still waiting for the result, `false` if it
    /// was abandoned.
    fn finish(&self) -> bool {
        self.settle(Claim::DONE)
    }

    /// The attempt gives up: `true` if the write had not finished yet (it is abandoned now),
    /// `false` if it had (its result is ready).
    fn abandon(&self) -> bool {
        self.settle(Claim::ABANDONED)
    }

    fn settle(&self, to: u8) -> bool {
        self.0
            .compare_exchange(Claim::PENDING, to, Ordering::SeqCst, Ordering::SeqCst)
            .is_ok()
    }
}

/// Abandons the write of an attempt whose future is dropped before it took the result (a
/// caller's own timeout, a shutdown): the write then knows nobody will count it.
struct AbandonOnDrop(Option<Claim>);

impl AbandonOnDrop {
    fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for AbandonOnDrop {
    fn drop(&mut self) {
        if let Some(claim) = self.0.take() {
            claim.abandon();
        }
    }
}

/// Runs `write` on the blocking pool and waits for it until `deadline`. `write` gets the
/// [`Claim`] to call [`Claim::finish`] on once its bytes are out, before it releases the sink's
/// lock (which it owns). `Ok(None)` means the deadline passed and the write was abandoned; it
/// goes on in the background, still holding the lock.
async fn blocking_write<T: Send + 'static>(
    deadline: tokio::time::Instant,
    write: impl FnOnce(&Claim) -> T + Send + 'static,
) -> Result<Option<T>, SinkError> {
    let claim = Claim::default();
    let mut guard = AbandonOnDrop(Some(claim.clone()));
    let task_claim = claim.clone();
    let mut task = tokio::task::spawn_blocking(move || {
        let _counted = WriteInProgress::start();
        write(&task_claim)
    });
    let joined = match tokio::time::timeout_at(deadline, &mut task).await {
        Ok(joined) => joined,
        Err(_) if claim.abandon() => {
            guard.disarm();
            return Ok(None);
        }
        // It finished just now: its result is the attempt's.
        Err(_) => task.await,
    };
    guard.disarm();
    joined
        .map(Some)
        .map_err(|e| SinkError::transient(format!("write task failed: {e}")))
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

/// A pending normal-priority delivery `id` of `body` to sink `app`, for the sinks' unit tests.
#[cfg(test)]
pub(crate) fn test_record(id: &str, body: &[u8]) -> DeliveryRecord {
    DeliveryRecord {
        seq: 1,
        id: id.into(),
        event_id: id.into(),
        source: "shop".into(),
        received_at_ms: 0,
        sink: "app".into(),
        headers: Vec::new(),
        body: body.to_vec(),
        priority: crate::event::Priority::Normal,
        attempts: Vec::new(),
        state: crate::store::DeliveryState::Pending { due_ms: 0 },
        queued_at_ms: 0,
    }
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
