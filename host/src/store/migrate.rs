//! One-time upgrades of a store written by an earlier version, run at open inside the same
//! write transaction that creates the tables (so a crash mid-way leaves the old store intact).
//! A store written by a newer version (a higher schema) is refused, not guessed at.
//!
//! Schema 3 moves headers and bodies out of redb into the [`super::log`]: every event and
//! delivery record is rewritten as a row pointing at a log record holding its headers and
//! body. The log records are written and synced before the transaction commits; a crash
//! before the commit leaves the old store as it was (and an uncommitted log tail, cut off at
//! the next start, which upgrades again).
//!
//! Schema 2 keys events by source: before it, the `events` table and the time index were keyed
//! by the event's id alone, so two sources that both numbered their events collided, and the
//! second source's event was answered `duplicate` and never stored. Since schema 2 an event is
//! stored under [`super::event_key`] (`SOURCE:ID`). The upgrade moves every event to its new key
//! and rewrites the time index; the records themselves (ids, deliveries, dead letters, dedupe
//! marks) keep the sender's id and are untouched, and so are the delivery ids already handed
//! out (a receiver may have seen them; they must stay stable across retries).

use std::collections::HashMap;

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::log::{Appender, BodyRef, LogRef, PartRef};
use super::records::{self, DeliveryRecord, DeliveryRow, EventRecord, EventRow};
use super::{
    DELIVERIES, EVENT_TIMES, EVENTS, LOG_END_KEY, LOG_SEGMENT_KEY, META, SEGMENT_REFS, StoreError,
};

/// The current schema, kept in `meta` under [`SCHEMA_KEY`].
pub(super) const SCHEMA: u64 = 3;
const SCHEMA_KEY: &str = "schema";

/// Brings the store in `txn` up to [`SCHEMA`], writing to the log through `log`.
pub(super) fn upgrade(txn: &WriteTransaction, log: &mut Appender) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::storage)?;
    let schema = meta
        .get(SCHEMA_KEY)
        .map_err(StoreError::storage)?
        .map(|v| v.value());
    match schema {
        Some(s) if s == SCHEMA => return Ok(()),
        Some(s) if s > SCHEMA => {
            return Err(StoreError::Storage(format!(
                "the store was written by a newer hookwall (schema {s}; this one knows up to                  {SCHEMA}): run that version, or restore a backup made for this one"
            )));
        }
        _ => {}
    }
    if schema.is_none_or(|s| s < 2) {
        let moved = key_events_by_source(txn)?;
        if moved > 0 {
            tracing::info!(
                moved,
                "store upgraded: events are now keyed by source and id"
            );
        }
    }
    let (events, deliveries) = bodies_to_log(txn, log)?;
    let head = log.next_head();
    log.write(true).map_err(StoreError::storage)?;
    meta.insert(LOG_SEGMENT_KEY, u64::from(head.segment))
        .map_err(StoreError::storage)?;
    meta.insert(LOG_END_KEY, head.end)
        .map_err(StoreError::storage)?;
    meta.insert(SCHEMA_KEY, SCHEMA)
        .map_err(StoreError::storage)?;
    if events + deliveries > 0 {
        tracing::info!(
            events,
            deliveries,
            "store upgraded: headers and bodies moved to the log"
        );
    }
    Ok(())
}

/// Writes what the upgrade has put in the log so far once it passes 8 MiB (not synced: the
/// upgrade syncs once at the end), and rolls to a new segment when the head is full, so a
/// large store is not held in memory.
fn spill(log: &mut Appender) -> Result<(), StoreError> {
    if log.next_head().end - log.head().end >= 8 << 20 {
        log.write(false).map_err(StoreError::storage)?;
        log.roll_if_full().map_err(StoreError::storage)?;
    }
    Ok(())
}

/// Schema 3: rewrites every event and delivery record (with its headers and body inline) as
/// a row pointing at a log record of its own. Returns how many events and deliveries moved.
fn bodies_to_log(txn: &WriteTransaction, log: &mut Appender) -> Result<(u64, u64), StoreError> {
    let mut refs: HashMap<u32, u64> = HashMap::new();
    let mut count = |at: LogRef| *refs.entry(at.segment).or_default() += 1;
    let mut events = txn.open_table(EVENTS).map_err(StoreError::storage)?;
    let mut rows = Vec::new();
    for row in events.iter().map_err(StoreError::storage)? {
        let (k, v) = row.map_err(StoreError::storage)?;
        let key = k.value().to_string();
        let record: EventRecord = records::decode(v.value(), || format!("event {key}"))?;
        let at = log.push_parts(&[PartRef {
            headers: &record.headers,
            body: BodyRef::Bytes(&record.body),
        }])?;
        count(at);
        rows.push((key, records::encode(&EventRow::of(&record, at))?));
        spill(log)?;
    }
    let moved_events = rows.len() as u64;
    for (key, row) in rows {
        events
            .insert(key.as_str(), row.as_slice())
            .map_err(StoreError::storage)?;
    }
    let mut deliveries = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
    let mut rows = Vec::new();
    for row in deliveries.iter().map_err(StoreError::storage)? {
        let (k, v) = row.map_err(StoreError::storage)?;
        let seq = k.value();
        let d: DeliveryRecord = records::decode(v.value(), || format!("delivery {seq}"))?;
        let at = log.push_parts(&[PartRef {
            headers: &d.headers,
            body: BodyRef::Bytes(&d.body),
        }])?;
        count(at);
        spill(log)?;
        let row = DeliveryRow {
            seq: d.seq,
            id: d.id,
            event_id: d.event_id,
            source: d.source,
            received_at_ms: d.received_at_ms,
            sink: d.sink,
            priority: d.priority,
            attempts: d.attempts,
            state: d.state,
            queued_at_ms: d.queued_at_ms,
            payload: at,
            part: 0,
        };
        rows.push((seq, records::encode(&row)?));
    }
    let moved_deliveries = rows.len() as u64;
    for (seq, row) in rows {
        deliveries
            .insert(seq, row.as_slice())
            .map_err(StoreError::storage)?;
    }
    let mut table = txn.open_table(SEGMENT_REFS).map_err(StoreError::storage)?;
    for (segment, n) in refs {
        let before = table
            .get(segment)
            .map_err(StoreError::storage)?
            .map_or(0, |v| v.value());
        table
            .insert(segment, before + n)
            .map_err(StoreError::storage)?;
    }
    Ok((moved_events, moved_deliveries))
}

/// Moves every event stored under its bare id to `SOURCE:ID`; returns how many moved.
fn key_events_by_source(txn: &WriteTransaction) -> Result<usize, StoreError> {
    let mut events = txn.open_table(EVENTS).map_err(StoreError::storage)?;
    if events.len().map_err(StoreError::storage)? == 0 {
        return Ok(0);
    }
    let mut moves: Vec<(String, String, u64, Vec<u8>)> = Vec::new();
    for row in events.iter().map_err(StoreError::storage)? {
        let (k, v) = row.map_err(StoreError::storage)?;
        let record: EventRecord = records::decode(v.value(), || format!("event {}", k.value()))?;
        let key = super::event_key(&record.source, &record.id);
        if key != k.value() {
            moves.push((
                k.value().to_string(),
                key,
                record.received_at_ms,
                v.value().to_vec(),
            ));
        }
    }
    let mut times = txn.open_table(EVENT_TIMES).map_err(StoreError::storage)?;
    for (old, new, at, bytes) in &moves {
        events.remove(old.as_str()).map_err(StoreError::storage)?;
        events
            .insert(new.as_str(), bytes.as_slice())
            .map_err(StoreError::storage)?;
        times
            .remove((*at, old.as_str()))
            .map_err(StoreError::storage)?;
        times
            .insert((*at, new.as_str()), ())
            .map_err(StoreError::storage)?;
    }
    Ok(moves.len())
}
