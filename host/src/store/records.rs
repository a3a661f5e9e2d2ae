//! What the store keeps, encoded with postcard (compact, serde-based, stable across versions
//! as long as fields are only appended).

use serde::{Deserialize, Serialize, de::DeserializeOwned};

use super::StoreError;
use super::log::LogRef;

use crate::event::Event;
pub use crate::event::Priority;

/// What happened to an accepted event.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum EventStatus {
    /// The plugins produced deliveries (possibly none).
    Forwarded,
    /// A plugin dropped the event on purpose.
    Dropped {
        /// The reason the plugin gave.
        reason: String,
    },
    /// A plugin failed; the event waits in the dead-letter queue.
    DeadLettered {
        /// Which plugin failed, and how.
        reason: String,
    },
}

/// A received, verified event as stored.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EventRecord {
    /// The event's id: the sender's (from the verify scheme) or a generated UUIDv7, unique
    /// only within its source.
    pub id: String,
    /// The source's name (`[sources.NAME]`).
    pub source: String,
    /// When it was received, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The request's HTTP method.
    pub method: String,
    /// The request's URI path.
    pub path: String,
    /// The request's raw query string, without `?`.
    pub query: String,
    /// The request's headers, names lowercase.
    pub headers: Vec<(String, String)>,
    /// Encoded as one byte string (postcard writes the same bytes as for a `Vec<u8>`,
    /// length then content, but without a call per byte).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// What the plugins made of it.
    pub status: EventStatus,
    /// Sequence numbers of this event's deliveries, assigned at commit.
    pub deliveries: Vec<u64>,
}

/// A stored event as its plugins see it again (a replay re-runs the current chain on it).
impl From<&EventRecord> for Event {
    fn from(record: &EventRecord) -> Event {
        Event {
            id: record.id.clone(),
            source: record.source.clone(),
            received_at_ms: record.received_at_ms,
            method: record.method.clone(),
            path: record.path.clone(),
            query: record.query.clone(),
            headers: record.headers.clone(),
            body: record.body.clone(),
        }
    }
}

/// An event about to be committed, with the deliveries its plugins routed.
#[derive(Debug, Clone)]
pub struct NewEvent {
    /// `deliveries` is ignored here; the writer fills it.
    pub record: EventRecord,
    /// The deliveries to queue with it, one per routed message.
    pub deliveries: Vec<NewDelivery>,
}

#[cfg(test)]
impl NewEvent {
    /// A forwarded `{}` event of `source` with one delivery to each of `sinks` (for tests).
    pub(crate) fn for_test(
        id: &str,
        source: &str,
        received_at_ms: u64,
        sinks: &[&str],
    ) -> NewEvent {
        NewEvent {
            record: EventRecord {
                id: id.into(),
                source: source.into(),
                received_at_ms,
                method: "POST".into(),
                path: format!("/hooks/{source}"),
                query: String::new(),
                headers: Vec::new(),
                body: b"{}".to_vec(),
                status: EventStatus::Forwarded,
                deliveries: Vec::new(),
            },
            deliveries: sinks
                .iter()
                .map(|sink| NewDelivery {
                    sink: sink.to_string(),
                    headers: Vec::new(),
                    body: b"{}".to_vec(),
                    priority: Priority::Normal,
                })
                .collect(),
        }
    }
}

/// One routed message before it has a sequence number.
#[derive(Debug, Clone)]
pub struct NewDelivery {
    /// The sink's name (`[sinks.NAME]`).
    pub sink: String,
    /// The headers routed with the message.
    pub headers: Vec<(String, String)>,
    /// The body to deliver.
    pub body: Vec<u8>,
    /// Its dispatch priority within the sink.
    pub priority: Priority,
}

/// One try at handing a delivery to its sink.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Attempt {
    /// When the attempt ended, in milliseconds since the Unix epoch.
    pub at_ms: u64,
    /// `None` when the sink confirmed.
    pub error: Option<String>,
    /// The receiver's answer, for sinks that have one (an HTTP status).
    pub status: Option<u16>,
}

/// Where a delivery stands.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub enum DeliveryState {
    /// Waiting for its first attempt or a retry.
    Pending {
        /// When the next attempt is due, in milliseconds since the Unix epoch.
        due_ms: u64,
    },
    /// The sink confirmed it.
    Delivered {
        /// When, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// It gave up (a permanent failure, attempts exhausted or too old) and waits in the
    /// dead-letter queue.
    Dead {
        /// The last attempt's error, and why it was the last.
        reason: String,
    },
    /// Its dead letter was replayed (into new deliveries) or purged; nothing more happens.
    Resolved {
        /// What resolved it: `replayed (dead letter N)` or `purged (dead letter N)`.
        note: String,
    },
}

/// One message for one sink, and its history.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeliveryRecord {
    /// Its sequence number: its key in the store, assigned at commit.
    pub seq: u64,
    /// Stable across retries, restarts and replays (`SOURCE:EVENT:SINK:N`, N counting the event's
    /// deliveries to that sink): the `webhook-id` / `Idempotency-Key` a receiver dedupes on.
    pub id: String,
    /// Its event's id.
    pub event_id: String,
    /// Its event's source.
    pub source: String,
    /// When its event was received, in milliseconds since the Unix epoch.
    pub received_at_ms: u64,
    /// The sink's name (`[sinks.NAME]`).
    pub sink: String,
    /// The headers routed with the message.
    pub headers: Vec<(String, String)>,
    /// Encoded as one byte string (postcard writes the same bytes as for a `Vec<u8>`,
    /// length then content, but without a call per byte).
    #[serde(with = "serde_bytes")]
    pub body: Vec<u8>,
    /// Its dispatch priority within the sink.
    pub priority: Priority,
    /// Every attempt so far, oldest first.
    pub attempts: Vec<Attempt>,
    /// Where it stands now.
    pub state: DeliveryState,
    /// When it was queued, in milliseconds since the Unix epoch: its event's receipt, or the
    /// replay that queued it again. `retry.max_age` counts from here.
    pub queued_at_ms: u64,
}

impl DeliveryRecord {
    /// A new pending delivery `seq` of event `e{seq}` of source `s` to `sink`, received, queued
    /// and due at `at_ms`, for tests and benchmarks that stand in for the store.
    #[doc(hidden)]
    pub fn pending_for_test(
        seq: u64,
        sink: &str,
        body: Vec<u8>,
        priority: Priority,
        at_ms: u64,
    ) -> DeliveryRecord {
        DeliveryRecord {
            seq,
            id: format!("s:e{seq}:{sink}:0"),
            event_id: format!("e{seq}"),
            source: "s".into(),
            received_at_ms: at_ms,
            sink: sink.into(),
            headers: Vec::new(),
            body,
            priority,
            attempts: Vec::new(),
            state: DeliveryState::Pending { due_ms: at_ms },
            queued_at_ms: at_ms,
        }
    }
}

/// A delivery as stored before `queued_at_ms` was appended: read with the event's receipt
/// as its queue time.
#[derive(Deserialize)]
#[cfg_attr(test, derive(Serialize))]
struct DeliveryRecordV1 {
    seq: u64,
    id: String,
    event_id: String,
    source: String,
    received_at_ms: u64,
    sink: String,
    headers: Vec<(String, String)>,
    #[serde(with = "serde_bytes")]
    body: Vec<u8>,
    priority: Priority,
    attempts: Vec<Attempt>,
    state: DeliveryState,
}

impl From<DeliveryRecordV1> for DeliveryRecord {
    fn from(v1: DeliveryRecordV1) -> DeliveryRecord {
        DeliveryRecord {
            seq: v1.seq,
            id: v1.id,
            event_id: v1.event_id,
            source: v1.source,
            queued_at_ms: v1.received_at_ms,
            received_at_ms: v1.received_at_ms,
            sink: v1.sink,
            headers: v1.headers,
            body: v1.body,
            priority: v1.priority,
            attempts: v1.attempts,
            state: v1.state,
        }
    }
}

/// A record type the store decodes, and how to read its older layouts. Postcard is not
/// self-describing: a field appended to a struct makes older records end early, which the
/// current layout refuses and [`Stored::legacy`] reads.
pub(super) trait Stored: DeserializeOwned {
    /// `bytes` in an older layout, if they are one.
    fn legacy(_bytes: &[u8]) -> Option<Self> {
        None
    }
}

impl Stored for EventRecord {}
impl Stored for DeadLetter {}

impl Stored for DeliveryRecord {
    fn legacy(bytes: &[u8]) -> Option<Self> {
        postcard::from_bytes::<DeliveryRecordV1>(bytes)
            .ok()
            .map(DeliveryRecord::from)
    }
}

/// An event as its `events` row holds it: everything but the request's headers and body,
/// which sit in the log at `payload` (part 0).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct EventRow {
    pub id: String,
    pub source: String,
    pub received_at_ms: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub status: EventStatus,
    pub deliveries: Vec<u64>,
    pub payload: LogRef,
}

impl EventRow {
    /// `record`'s row, its headers and body being at `payload`.
    pub fn of(record: &EventRecord, payload: LogRef) -> EventRow {
        EventRow {
            id: record.id.clone(),
            source: record.source.clone(),
            received_at_ms: record.received_at_ms,
            method: record.method.clone(),
            path: record.path.clone(),
            query: record.query.clone(),
            status: record.status.clone(),
            deliveries: record.deliveries.clone(),
            payload,
        }
    }

    /// The whole record, with `headers` and `body` read from the log.
    pub fn into_record(self, (headers, body): (Vec<(String, String)>, Vec<u8>)) -> EventRecord {
        EventRecord {
            id: self.id,
            source: self.source,
            received_at_ms: self.received_at_ms,
            method: self.method,
            path: self.path,
            query: self.query,
            headers,
            body,
            status: self.status,
            deliveries: self.deliveries,
        }
    }
}

/// A delivery as its `deliveries` row holds it: everything but its headers and body, which
/// sit in the log at `payload`, part `part`. An outcome rewrites only this row.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub(super) struct DeliveryRow {
    pub seq: u64,
    pub id: String,
    pub event_id: String,
    pub source: String,
    pub received_at_ms: u64,
    pub sink: String,
    pub priority: Priority,
    pub attempts: Vec<Attempt>,
    pub state: DeliveryState,
    pub queued_at_ms: u64,
    pub payload: LogRef,
    pub part: u32,
}

impl DeliveryRow {
    /// The whole record, with `headers` and `body` read from the log.
    pub fn into_record(self, (headers, body): (Vec<(String, String)>, Vec<u8>)) -> DeliveryRecord {
        DeliveryRecord {
            seq: self.seq,
            id: self.id,
            event_id: self.event_id,
            source: self.source,
            received_at_ms: self.received_at_ms,
            sink: self.sink,
            headers,
            body,
            priority: self.priority,
            attempts: self.attempts,
            state: self.state,
            queued_at_ms: self.queued_at_ms,
        }
    }
}

impl Stored for EventRow {}
impl Stored for DeliveryRow {}

/// An entry of the dead-letter queue: a failed plugin run or a delivery that gave up.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The event's id.
    pub event_id: String,
    /// The event's source.
    pub source: String,
    /// The delivery that gave up; `None` when the plugins failed before routing.
    pub delivery: Option<u64>,
    /// That delivery's sink; `None` when the plugins failed.
    pub sink: Option<String>,
    /// The plugin failure, or the delivery's last error and why it was the last.
    pub reason: String,
    /// When it was dead-lettered, in milliseconds since the Unix epoch.
    pub at_ms: u64,
}

pub(super) fn encode<T: Serialize>(value: &T) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(value).map_err(StoreError::storage)
}

pub(super) fn decode<T: Stored>(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<T, StoreError> {
    postcard::from_bytes(bytes).or_else(|e| {
        T::legacy(bytes).ok_or_else(|| StoreError::Corrupt {
            what: what(),
            reason: e.to_string(),
        })
    })
}

#[cfg(test)]
mod tests {
    use serde::Serialize;

    /// Stores written before bodies were encoded as byte strings must still decode.
    #[test]
    fn a_delivery_stored_before_queued_at_ms_reads_with_its_receipt_time() {
        let old = postcard::to_stdvec(&super::DeliveryRecordV1 {
            seq: 7,
            id: "s:e:k:0".into(),
            event_id: "e".into(),
            source: "s".into(),
            received_at_ms: 1234,
            sink: "k".into(),
            headers: vec![("a".into(), "b".into())],
            body: b"{}".to_vec(),
            priority: super::Priority::High,
            attempts: Vec::new(),
            state: super::DeliveryState::Pending { due_ms: 1234 },
        })
        .unwrap();
        let d: super::DeliveryRecord = super::decode(&old, || "delivery 7".into()).unwrap();
        assert_eq!(
            (d.seq, d.queued_at_ms, d.body.as_slice()),
            (7, 1234, &b"{}"[..])
        );
        let again: super::DeliveryRecord =
            super::decode(&super::encode(&d).unwrap(), || "delivery 7".into()).unwrap();
        assert_eq!(again.queued_at_ms, 1234);
        assert!(super::decode::<super::DeliveryRecord>(b"\xff", || "x".into()).is_err());
    }

    #[test]
    fn a_byte_string_body_encodes_like_the_old_byte_sequence() {
        #[derive(Serialize)]
        struct Old {
            body: Vec<u8>,
        }
        #[derive(Serialize)]
        struct New {
            #[serde(with = "serde_bytes")]
            body: Vec<u8>,
        }
        let body: Vec<u8> = (0..=255u8).cycle().take(1000).collect();
        assert_eq!(
            postcard::to_stdvec(&Old { body: body.clone() }).unwrap(),
            postcard::to_stdvec(&New { body }).unwrap()
        );
    }
}
