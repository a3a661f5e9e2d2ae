//! Operator queries: events listed by time, and queue sizes for metrics and readiness.
//!
//! Event ids are whatever the sender's scheme provides (or a UUIDv7), so the `events` table's
//! key order is not time order. `event_times` is an index, (received ms, id) → (), written
//! in the same transaction as the event; listing walks it newest first. [`rebuild_index`] runs
//! at open and rebuilds it whenever its length disagrees with `events` (a store from before
//! the index, or events pruned without it), so the index never has to be trusted blindly:
//! entries whose event is gone are skipped.

use redb::{ReadableTable, ReadableTableMetadata, WriteTransaction};

use super::records::{self, DeliveryRecord, DeliveryState, EventRecord, EventRow, EventStatus};
use super::{
    DEAD_LETTERS, DELIVERIES, EVENT_TIMES as EVENTS_BY_TIME, EVENTS, Embedded, StoreError,
};

/// Rows of the index examined per listing call at most, so a filter that matches nothing
/// cannot turn one admin request into a full scan; the caller gets a cursor to go on.
const MAX_SCAN: usize = 10_000;

/// An event's overall state, as operators filter by it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    /// Every delivery confirmed (or the event had none to make).
    Delivered,
    /// Some delivery is still waiting (first try or a retry).
    Pending,
    /// A sink's newest delivery gave up, or the plugins failed: it is in the dead-letter queue.
    Failed,
    /// A plugin dropped it on purpose.
    Dropped,
}

impl Outcome {
    /// Its name in the admin API and the CLI: `delivered`, `pending`, `failed` or `dropped`.
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Delivered => "delivered",
            Outcome::Pending => "pending",
            Outcome::Failed => "failed",
            Outcome::Dropped => "dropped",
        }
    }

    /// The outcome named `s` (as [`Outcome::as_str`] names it), if any.
    pub fn parse(s: &str) -> Option<Outcome> {
        [
            Outcome::Delivered,
            Outcome::Pending,
            Outcome::Failed,
            Outcome::Dropped,
        ]
        .into_iter()
        .find(|o| o.as_str() == s)
    }

    /// The state of `event` given its deliveries.
    pub fn of(event: &EventRecord, deliveries: &[DeliveryRecord]) -> Outcome {
        match event.status {
            EventStatus::Dropped { .. } => return Outcome::Dropped,
            EventStatus::DeadLettered { .. } => return Outcome::Failed,
            EventStatus::Forwarded => {}
        }
        // A replay adds new deliveries under the same event: per sink, the newest one counts.
        let mut newest: std::collections::BTreeMap<&str, &DeliveryRecord> = Default::default();
        for d in deliveries {
            let slot = newest.entry(d.sink.as_str()).or_insert(d);
            if d.seq > slot.seq {
                *slot = d;
            }
        }
        let any = |f: fn(&DeliveryState) -> bool| newest.values().any(|d| f(&d.state));
        if any(|s| matches!(s, DeliveryState::Dead { .. })) {
            Outcome::Failed
        } else if any(|s| matches!(s, DeliveryState::Pending { .. })) {
            Outcome::Pending
        } else {
            Outcome::Delivered
        }
    }
}

/// What to list: all optional, combined with AND.
#[derive(Debug, Clone, Default)]
pub struct EventFilter {
    /// Only events of this source.
    pub source: Option<String>,
    /// Only events in this state.
    pub outcome: Option<Outcome>,
    /// Received at or after (ms since the epoch).
    pub since_ms: Option<u64>,
    /// Received before (ms since the epoch).
    pub until_ms: Option<u64>,
}

/// A page of events, newest first.
#[derive(Debug)]
pub struct EventPage {
    /// Each event with its deliveries and overall state.
    pub events: Vec<(EventRecord, Vec<DeliveryRecord>, Outcome)>,
    /// Where the next (older) page starts; `None` at the end.
    pub next: Option<(u64, String)>,
}

impl Embedded {
    /// Up to `limit` events matching `filter`, newest first, starting strictly before `after`
    /// (a previous page's `next`).
    pub fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let index = txn
            .open_table(EVENTS_BY_TIME)
            .map_err(StoreError::storage)?;
        let events = txn.open_table(EVENTS).map_err(StoreError::storage)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
        let lower = filter.since_ms.unwrap_or(0);
        // The range's upper end is exclusive: before the cursor, or before `until`.
        let until = filter.until_ms.unwrap_or(u64::MAX);
        let rows = match &after {
            Some((ms, id)) if *ms < until => index.range((lower, "")..(*ms, id.as_str())),
            _ => index.range((lower, "")..(until, "")),
        }
        .map_err(StoreError::storage)?;
        let mut page = EventPage {
            events: Vec::new(),
            next: None,
        };
        for (scanned, row) in rows.rev().enumerate() {
            let (key, _) = row.map_err(StoreError::storage)?;
            let (ms, id) = key.value();
            if page.events.len() >= limit {
                // The index is keyed by `SOURCE:ID` ([`super::event_key`]), not the bare id.
                page.next = page
                    .events
                    .last()
                    .map(|(e, _, _)| (e.received_at_ms, super::event_key(&e.source, &e.id)));
                break;
            }
            if scanned >= MAX_SCAN {
                page.next = Some(resume_above(ms, id));
                break;
            }
            let Some(bytes) = events.get(id).map_err(StoreError::storage)? else {
                continue;
            };
            let row: EventRow = records::decode(bytes.value(), || format!("event {id}"))?;
            if filter.source.as_ref().is_some_and(|s| *s != row.source) {
                continue;
            }
            let mut ds = Vec::with_capacity(row.deliveries.len());
            for seq in &row.deliveries {
                if let Some(b) = deliveries.get(*seq).map_err(StoreError::storage)? {
                    ds.push(super::delivery_record(&self.inner.log, b.value(), *seq)?);
                }
            }
            let event = super::event_from_row(&self.inner.log, row, id)?;
            let outcome = Outcome::of(&event, &ds);
            if filter.outcome.is_some_and(|o| o != outcome) {
                continue;
            }
            page.events.push((event, ds, outcome));
        }
        Ok(page)
    }

    /// Entries in the dead-letter queue (redb keeps table lengths: no scan).
    pub fn dead_letter_count(&self) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DEAD_LETTERS).map_err(StoreError::storage)?;
        table.len().map_err(StoreError::storage)
    }
}

/// The exclusive cursor that resumes at (and including) row `(ms, id)`: the smallest key
/// greater than it.
fn resume_above(ms: u64, id: &str) -> (u64, String) {
    (ms, format!("{id}\0"))
}

/// Rebuilds the time index if its length differs from the events table's.
pub(super) fn rebuild_index(txn: &WriteTransaction) -> Result<(), StoreError> {
    let events = txn.open_table(EVENTS).map_err(StoreError::storage)?;
    let mut index = txn
        .open_table(EVENTS_BY_TIME)
        .map_err(StoreError::storage)?;
    if index.len().map_err(StoreError::storage)? == events.len().map_err(StoreError::storage)? {
        return Ok(());
    }
    index.retain(|_, _| false).map_err(StoreError::storage)?;
    for row in events.iter().map_err(StoreError::storage)? {
        let (k, v) = row.map_err(StoreError::storage)?;
        let event: EventRow = records::decode(v.value(), || format!("event {}", k.value()))?;
        index
            .insert((event.received_at_ms, k.value()), ())
            .map_err(StoreError::storage)?;
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::super::NewEvent;
    use super::*;

    fn event(id: &str, source: &str, at: u64) -> NewEvent {
        NewEvent::for_test(id, source, at, &["s"])
    }

    fn ids(page: &EventPage) -> Vec<&str> {
        page.events.iter().map(|(e, _, _)| e.id.as_str()).collect()
    }

    #[tokio::test]
    async fn lists_by_time_not_by_id_pages_and_survives_a_lost_index() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        // Ids in the opposite order of time; two at the same millisecond.
        for (id, source, at) in [("z", "a", 1), ("y", "b", 2), ("x", "a", 3), ("w", "a", 3)] {
            store.accept(event(id, source, at)).await.unwrap();
        }
        let all = EventFilter::default();
        let first = store.list_events(&all, None, 3).unwrap();
        assert_eq!(ids(&first), ["x", "w", "y"]);
        assert_eq!(first.events[0].2, Outcome::Pending);
        let rest = store.list_events(&all, first.next, 3).unwrap();
        assert_eq!(ids(&rest), ["z"]);
        assert_eq!(rest.next, None);
        let a = EventFilter {
            source: Some("a".into()),
            since_ms: Some(2),
            ..EventFilter::default()
        };
        assert_eq!(ids(&store.list_events(&a, None, 10).unwrap()), ["x", "w"]);
        let until = EventFilter {
            until_ms: Some(3),
            ..EventFilter::default()
        };
        assert_eq!(
            ids(&store.list_events(&until, None, 10).unwrap()),
            ["y", "z"]
        );
        store.close().await;
        drop(store);

        // A store whose index is gone (older version, or pruned without it) gets it rebuilt.
        {
            let db = redb::Database::create(dir.path().join("hookwall.redb")).unwrap();
            let txn = db.begin_write().unwrap();
            txn.delete_table(EVENTS_BY_TIME).unwrap();
            txn.commit().unwrap();
        }
        let store = Embedded::open(dir.path()).unwrap();
        assert_eq!(
            ids(&store.list_events(&all, None, 10).unwrap()),
            ["x", "w", "y", "z"]
        );
        assert_eq!(store.dead_letter_count().unwrap(), 0);
    }
}
