//! `hookwall store check` and `hookwall store repair`: offline work on a stopped instance's
//! store.
//!
//! The check runs redb's own integrity check (page checksums, the allocator's state; it
//! repairs what it can), reads every log segment record by record (checksums), decodes every
//! row and reads the log record each event and delivery points at, and follows every index
//! row to what it points at. It changes no record: what does not read is named (table and key,
//! or segment file and offset) for the operator.
//!
//! The repair keeps every intact record: each span of a segment that does not read is
//! overwritten with one padding record (up to the next record a row points at), so the log
//! reads clean again, and the rows whose record was in such a span (their headers and body
//! are gone) are deleted with their index rows, each named in the report.

use std::collections::{BTreeSet, HashMap};
use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition, WriteTransaction,
};

use super::log::{self, LogRef, Segments};
use super::records::{self, DeadLetter, DeliveryRow, DeliveryState, EventRow, Stored};
use super::{
    DB_FILE, DEAD_LETTERS, DELIVERIES, EVENT_TIMES, EVENTS, PENDING, SEGMENT_REFS, StoreError,
    cell, marks,
};

/// What redb's integrity check found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Integrity {
    /// Every page's checksum and the allocator's state were right.
    Clean,
    /// Something was wrong and redb repaired it (e.g. after an unclean shutdown).
    Repaired,
}

/// What a check of a store found.
#[derive(Debug)]
pub struct CheckReport {
    /// The database file checked.
    pub file: PathBuf,
    /// redb's own check.
    pub integrity: Integrity,
    /// Stored events.
    pub events: u64,
    /// Deliveries, in any state.
    pub deliveries: u64,
    /// Rows of the pending index (one per delivery waiting for an attempt).
    pub pending: u64,
    /// Entries in the dead-letter queue.
    pub dead_letters: u64,
    /// Live and expired dedupe marks not yet purged.
    pub dedupe_marks: u64,
    /// Log segments read.
    pub segments: u64,
    /// Records in them.
    pub log_records: u64,
    /// Spans of the log that do not read: `FILE at offset N: reason`.
    pub log_damage: Vec<String>,
    /// Records that do not decode, or whose log record does not read: `TABLE KEY: reason`.
    pub unreadable: Vec<String>,
    /// Index rows that point at nothing: a pending row without a pending delivery.
    pub dangling: Vec<String>,
}

impl CheckReport {
    /// Whether every record reads and every index row holds.
    pub fn ok(&self) -> bool {
        self.unreadable.is_empty() && self.dangling.is_empty() && self.log_damage.is_empty()
    }
}

/// Opens the database of the stopped store in `dir`, and runs redb's integrity check.
fn open_stopped(dir: &Path) -> Result<(Database, Integrity, PathBuf), StoreError> {
    let file = dir.join(DB_FILE);
    let open_err = |reason: String| StoreError::Open {
        path: file.clone(),
        reason,
    };
    if !file.exists() {
        return Err(open_err("no store here (nothing was ever stored?)".into()));
    }
    let mut db = Database::builder()
        .set_cache_size(cell::CACHE_BYTES)
        .open(&file)
        .map_err(|e| match e {
            redb::DatabaseError::DatabaseAlreadyOpen => open_err(
                "a running hookwall holds it: stop it first (the check needs the file alone)"
                    .into(),
            ),
            e => open_err(e.to_string()),
        })?;
    let integrity = match db.check_integrity() {
        Ok(true) => Integrity::Clean,
        Ok(false) => Integrity::Repaired,
        Err(e) => return Err(open_err(format!("redb's integrity check failed: {e}"))),
    };
    Ok((db, integrity, file))
}

/// Checks the store in `dir`, which no running instance may hold open.
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
    let (db, integrity, file) = open_stopped(dir)?;
    let mut report = CheckReport {
        segments: 0,
        log_records: 0,
        log_damage: Vec::new(),
        file: file.clone(),
        integrity,
        events: 0,
        deliveries: 0,
        pending: 0,
        dead_letters: 0,
        dedupe_marks: 0,
        unreadable: Vec::new(),
        dangling: Vec::new(),
    };
    let txn = db.begin_read().map_err(StoreError::storage)?;
    let segments = Segments::new(dir);
    let head = head(&txn)?;
    for n in log::list(segments.dir()).map_err(StoreError::storage)? {
        let path = segments.path(n);
        if n > head.segment {
            report.log_damage.push(format!(
                "{}: no commit reached it (removed at the next start)",
                path.display()
            ));
            continue;
        }
        report.segments += 1;
        let end = (n == head.segment).then_some(head.end);
        let records = &mut report.log_records;
        if let Err(damage) = log::scan(&path, end, |_, _, _| *records += 1)? {
            report.log_damage.push(damage.to_string());
        }
    }
    let unreadable = &mut report.unreadable;
    report.events = read_all::<_, EventRow>(&txn, EVENTS, "events", unreadable, |row| {
        segments
            .parts(row.payload)
            .and_then(|mut p| p.take(0, String::new).map(drop))
    })?;
    report.deliveries =
        read_all::<_, DeliveryRow>(&txn, DELIVERIES, "deliveries", unreadable, |row| {
            segments
                .parts(row.payload)
                .and_then(|mut p| p.take(row.part, String::new).map(drop))
        })?;
    report.dead_letters =
        read_all::<_, DeadLetter>(&txn, DEAD_LETTERS, "dead_letters", unreadable, |_| Ok(()))?;
    let deliveries = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
    let pending = txn.open_table(PENDING).map_err(StoreError::storage)?;
    for row in pending.iter().map_err(StoreError::storage)? {
        let (key, _) = row.map_err(StoreError::storage)?;
        report.pending += 1;
        let (sink, _, _, seq) = key.value();
        let delivery = deliveries.get(seq).map_err(StoreError::storage)?;
        let holds = delivery.is_some_and(|d| {
            records::decode::<DeliveryRow>(d.value(), || seq.to_string())
                .is_ok_and(|d| d.sink == sink && matches!(d.state, DeliveryState::Pending { .. }))
        });
        if !holds {
            report.dangling.push(format!(
                "pending {sink:?} {seq}: no pending delivery {seq} to {sink}"
            ));
        }
    }
    let marks = txn.open_table(marks::DEDUPE).map_err(StoreError::storage)?;
    report.dedupe_marks = marks.len().map_err(StoreError::storage)?;
    Ok(report)
}

/// Where the log ended at the last commit.
fn head(txn: &ReadTransaction) -> Result<log::Head, StoreError> {
    super::log_head(&txn.open_table(super::META).map_err(StoreError::storage)?)
}

/// Decodes every record of `table` as a `T` and runs `follow` on it (reading what it points
/// at), adding each that fails to `unreadable` (`NAME KEY: reason`); how many records it holds.
fn read_all<K, T>(
    txn: &ReadTransaction,
    table: TableDefinition<'static, K, &'static [u8]>,
    name: &str,
    unreadable: &mut Vec<String>,
    follow: impl Fn(&T) -> Result<(), StoreError>,
) -> Result<u64, StoreError>
where
    K: redb::Key + 'static,
    for<'a> K::SelfType<'a>: std::fmt::Debug,
    T: Stored,
{
    let table = txn.open_table(table).map_err(StoreError::storage)?;
    let mut count = 0;
    for row in table.iter().map_err(StoreError::storage)? {
        let (key, value) = row.map_err(StoreError::storage)?;
        count += 1;
        let key = format!("{:?}", key.value());
        if let Err(e) = records::decode::<T>(value.value(), || key.clone()).and_then(|r| follow(&r))
        {
            unreadable.push(format!("{name} {key}: {e}"));
        }
    }
    Ok(count)
}

/// What a repair did.
#[derive(Debug, Default)]
pub struct RepairReport {
    /// Spans of the log overwritten with padding: `FILE at offset N: reason (M bytes)`.
    pub padded: Vec<String>,
    /// Events and deliveries deleted because their record was lost: `event SOURCE:ID` or
    /// `delivery SEQ`, with the record's place.
    pub lost: Vec<String>,
}

/// Repairs the stopped store in `dir`: pads every span of the log that does not read and
/// deletes the rows whose record is lost (see the module's documentation).
pub fn repair(dir: &Path) -> Result<RepairReport, StoreError> {
    let (db, _, _) = open_stopped(dir)?;
    let segments = Segments::new(dir);
    let mut report = RepairReport::default();
    let txn = db.begin_write().map_err(StoreError::storage)?;
    let head = {
        let read = db.begin_read().map_err(StoreError::storage)?;
        head(&read)?
    };
    let starts = record_starts(&txn)?;
    for n in log::list(segments.dir()).map_err(StoreError::storage)? {
        if n > head.segment {
            continue;
        }
        let path = segments.path(n);
        let end = if n == head.segment {
            head.end
        } else {
            std::fs::metadata(&path).map_err(StoreError::storage)?.len()
        };
        // Each pass pads the first bad span; a segment is done when it reads to its end.
        while let Err(damage) = log::scan(&path, Some(end), |_, _, _| {})? {
            let next = starts
                .get(&n)
                .and_then(|s| s.range(damage.offset + 1..).next().copied())
                .unwrap_or(end)
                .min(end);
            if next - damage.offset < log::MIN_RECORD {
                return Err(StoreError::Corrupt {
                    what: damage.to_string(),
                    reason: "too short a span to pad; restore a backup".into(),
                });
            }
            log::pad(&path, damage.offset, next).map_err(StoreError::storage)?;
            report
                .padded
                .push(format!("{damage} ({} bytes)", next - damage.offset));
        }
    }
    let head_path = segments.path(head.segment);
    if head.end > 0 && !head_path.exists() {
        // The segment the last commit wrote to is gone: the log starts it again, empty.
        let mut meta = txn.open_table(super::META).map_err(StoreError::storage)?;
        meta.insert(super::LOG_END_KEY, 0)
            .map_err(StoreError::storage)?;
        report.padded.push(format!(
            "{}: missing; the log starts it again, empty",
            head_path.display()
        ));
    }
    drop_lost(&txn, &segments, &mut report)?;
    txn.commit().map_err(StoreError::storage)?;
    Ok(report)
}

/// The offsets of the records rows point at, per segment: where the next intact record after
/// a bad span starts.
fn record_starts(txn: &WriteTransaction) -> Result<HashMap<u32, BTreeSet<u64>>, StoreError> {
    let mut starts: HashMap<u32, BTreeSet<u64>> = HashMap::new();
    let mut add = |at: LogRef| {
        starts.entry(at.segment).or_default().insert(at.offset);
    };
    let events = txn.open_table(EVENTS).map_err(StoreError::storage)?;
    for row in events.iter().map_err(StoreError::storage)? {
        let (_, v) = row.map_err(StoreError::storage)?;
        if let Ok(row) = records::decode::<EventRow>(v.value(), String::new) {
            add(row.payload);
        }
    }
    let deliveries = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
    for row in deliveries.iter().map_err(StoreError::storage)? {
        let (_, v) = row.map_err(StoreError::storage)?;
        if let Ok(row) = records::decode::<DeliveryRow>(v.value(), String::new) {
            add(row.payload);
        }
    }
    Ok(starts)
}

/// Deletes every event and delivery whose log record does not read (with their index rows).
fn drop_lost(
    txn: &WriteTransaction,
    segments: &Segments,
    report: &mut RepairReport,
) -> Result<(), StoreError> {
    fn e(err: impl std::fmt::Display) -> StoreError {
        StoreError::storage(err)
    }
    let mut events = txn.open_table(EVENTS).map_err(e)?;
    let mut deliveries = txn.open_table(DELIVERIES).map_err(e)?;
    let mut pending = txn.open_table(PENDING).map_err(e)?;
    let mut times = txn.open_table(EVENT_TIMES).map_err(e)?;
    let mut refs = txn.open_table(SEGMENT_REFS).map_err(e)?;
    let mut released: HashMap<u32, u64> = HashMap::new();
    let place = |at: LogRef| {
        format!(
            "{} at offset {}",
            segments.path(at.segment).display(),
            at.offset
        )
    };

    let mut lost_events = Vec::new();
    for row in events.iter().map_err(e)? {
        let (k, v) = row.map_err(e)?;
        let Ok(row) = records::decode::<EventRow>(v.value(), String::new) else {
            continue;
        };
        if segments
            .parts(row.payload)
            .and_then(|mut p| p.take(0, String::new))
            .is_err()
        {
            lost_events.push((k.value().to_string(), row));
        }
    }
    let mut lost_deliveries = Vec::new();
    for row in deliveries.iter().map_err(e)? {
        let (_, v) = row.map_err(e)?;
        let Ok(row) = records::decode::<DeliveryRow>(v.value(), String::new) else {
            continue;
        };
        let reads = segments
            .parts(row.payload)
            .and_then(|mut p| p.take(row.part, String::new));
        if reads.is_err()
            || lost_events
                .iter()
                .any(|(_, ev)| ev.deliveries.contains(&row.seq))
        {
            lost_deliveries.push(row);
        }
    }
    for (key, row) in &lost_events {
        events.remove(key.as_str()).map_err(e)?;
        times
            .remove((row.received_at_ms, key.as_str()))
            .map_err(e)?;
        *released.entry(row.payload.segment).or_default() += 1;
        report
            .lost
            .push(format!("event {key} ({})", place(row.payload)));
    }
    for d in &lost_deliveries {
        deliveries.remove(d.seq).map_err(e)?;
        if let DeliveryState::Pending { due_ms } = d.state {
            pending
                .remove((d.sink.as_str(), d.priority.rank(), due_ms, d.seq))
                .map_err(e)?;
        }
        *released.entry(d.payload.segment).or_default() += 1;
        report.lost.push(format!(
            "delivery {} of event {}:{} ({})",
            d.seq,
            d.source,
            d.event_id,
            place(d.payload)
        ));
    }
    for (segment, n) in released {
        let now = refs.get(segment).map_err(e)?.map_or(0, |v| v.value());
        match now.saturating_sub(n) {
            0 => refs.remove(segment).map_err(e)?,
            left => refs.insert(segment, left).map_err(e)?,
        };
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::event;
    use crate::store::{DeliveryUpdate, Embedded};

    #[tokio::test]
    async fn a_healthy_store_checks_clean_and_a_bad_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        store.accept(event("e1", &["a", "b"])).await.unwrap();
        store.accept(event("e2", &["a"])).await.unwrap();
        let (_, deliveries) = store.event("demo", "e1").unwrap().unwrap();
        let dead = DeliveryUpdate::Dead {
            seq: deliveries[0].seq,
            at_ms: 2_000,
            error: "410".into(),
            status: Some(410),
        };
        store.update_deliveries(vec![dead]).await.unwrap();
        // Open: the check refuses to share the file with a running store.
        let in_use = check(dir.path()).unwrap_err().to_string();
        assert!(in_use.contains("stop it first"), "{in_use}");
        store.close().await;
        drop(store);

        let report = check(dir.path()).unwrap();
        assert!(report.ok(), "{report:?}");
        assert_eq!(report.integrity, Integrity::Clean);
        assert_eq!(
            (
                report.events,
                report.deliveries,
                report.pending,
                report.dead_letters
            ),
            (2, 3, 2, 1)
        );
        // `accept` without a dedupe key writes no mark (the event's own key dedupes it).
        assert_eq!(report.dedupe_marks, 0);

        // A record that does not decode, and a pending row left pointing at nothing.
        {
            let db = Database::create(dir.path().join(DB_FILE)).unwrap();
            let txn = db.begin_write().unwrap();
            txn.open_table(EVENTS)
                .unwrap()
                .insert("demo\0broken", &[0xff_u8, 0xff, 0xff][..])
                .unwrap();
            txn.open_table(PENDING)
                .unwrap()
                .insert(("a", 1, 0, 999_999), ())
                .unwrap();
            txn.commit().unwrap();
        }
        let report = check(dir.path()).unwrap();
        assert!(!report.ok());
        assert_eq!(report.unreadable.len(), 1, "{report:?}");
        assert!(report.unreadable[0].starts_with("events \"demo\\0broken\""));
        assert_eq!(report.dangling.len(), 1, "{report:?}");
        assert!(report.dangling[0].contains("999999"), "{report:?}");
    }

    /// A log segment deleted by hand: start-up refuses naming it; repair drops the events
    /// stored in it, restarts the log, and the store takes events again.
    #[tokio::test]
    async fn a_missing_segment_is_refused_and_repair_starts_the_log_again() {
        let dir = tempfile::tempdir().unwrap();
        let store = Embedded::open(dir.path()).unwrap();
        store.accept(event("e1", &["a"])).await.unwrap();
        store.close().await;
        drop(store);
        std::fs::remove_file(Segments::new(dir.path()).path(1)).unwrap();

        let refused = Embedded::open(dir.path()).err().unwrap().to_string();
        assert!(
            refused.contains("0000000001.log") && refused.contains("missing"),
            "{refused}"
        );
        let report = repair(dir.path()).unwrap();
        assert!(report.padded[0].contains("missing"), "{report:?}");
        assert!(
            report.lost.iter().any(|l| l.starts_with("event demo:e1 ")),
            "{report:?}"
        );

        let store = Embedded::open(dir.path()).unwrap();
        assert!(store.event("demo", "e1").unwrap().is_none());
        assert_eq!(store.pending_count("a").unwrap(), 0);
        store.accept(event("e2", &["a"])).await.unwrap();
        assert!(store.event("demo", "e2").unwrap().is_some());
        store.close().await;
        drop(store);
        assert!(check(dir.path()).unwrap().ok());
    }
}
