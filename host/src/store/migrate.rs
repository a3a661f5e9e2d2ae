//! One-time upgrades of a store written by an earlier version, run at open inside the same
//! write transaction that creates the tables (so a crash mid-way leaves the old store intact).
//!
//! Schema 2 keys events by source: before it, the `events` table and the time index were keyed
//! by the event's id alone, so two sources that both numbered their events collided, and the
//! second source's event was answered `duplicate` and never stored. Since schema 2 an event is
//! stored under [`super::event_key`] (`SOURCE:ID`). The upgrade moves every event to its new key
//! and rewrites the time index; the records themselves (ids, deliveries, dead letters, dedupe
//! marks) keep the sender's id and are untouched, and so are the delivery ids already handed
//! out (a receiver may have seen them; they must stay stable across retries).

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::records::{self, EventRecord};
use super::{EVENT_TIMES, EVENTS, META, StoreError};

/// The current schema, kept in `meta` under [`SCHEMA_KEY`].
pub(super) const SCHEMA: u64 = 2;
const SCHEMA_KEY: &str = "schema";

/// Brings the store in `txn` up to [`SCHEMA`].
pub(super) fn upgrade(txn: &WriteTransaction) -> Result<(), StoreError> {
    let mut meta = txn.open_table(META).map_err(StoreError::storage)?;
    let schema = meta
        .get(SCHEMA_KEY)
        .map_err(StoreError::storage)?
        .map(|v| v.value());
    if schema.is_some_and(|s| s >= SCHEMA) {
        return Ok(());
    }
    let moved = key_events_by_source(txn)?;
    meta.insert(SCHEMA_KEY, SCHEMA)
        .map_err(StoreError::storage)?;
    if moved > 0 {
        tracing::info!(
            moved,
            "store upgraded: events are now keyed by source and id"
        );
    }
    Ok(())
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
