//! `hookwall store check`: an offline check of a stopped instance's store. redb's own
//! integrity check (page checksums, the allocator's state; it repairs what it can), then every
//! record decoded and every index row followed to what it points at. It reads and changes no
//! record: a record that does not decode is named with its table and key for the operator.

use std::path::{Path, PathBuf};

use redb::{
    Database, ReadTransaction, ReadableDatabase, ReadableTable, ReadableTableMetadata,
    TableDefinition,
};

use super::records::{self, DeadLetter, DeliveryRecord, DeliveryState, EventRecord, Stored};
use super::{DB_FILE, DEAD_LETTERS, DELIVERIES, EVENTS, PENDING, StoreError, cell, marks};

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
    /// Records that do not decode: `TABLE KEY: reason`.
    pub unreadable: Vec<String>,
    /// Index rows that point at nothing: a pending row without a pending delivery.
    pub dangling: Vec<String>,
}

impl CheckReport {
    /// Whether every record reads and every index row holds.
    pub fn ok(&self) -> bool {
        self.unreadable.is_empty() && self.dangling.is_empty()
    }
}

/// Checks the store in `dir`, which no running instance may hold open.
pub fn check(dir: &Path) -> Result<CheckReport, StoreError> {
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
    let mut report = CheckReport {
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
    let unreadable = &mut report.unreadable;
    report.events = read_all::<_, EventRecord>(&txn, EVENTS, "events", unreadable)?;
    report.deliveries = read_all::<_, DeliveryRecord>(&txn, DELIVERIES, "deliveries", unreadable)?;
    report.dead_letters =
        read_all::<_, DeadLetter>(&txn, DEAD_LETTERS, "dead_letters", unreadable)?;
    let deliveries = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
    let pending = txn.open_table(PENDING).map_err(StoreError::storage)?;
    for row in pending.iter().map_err(StoreError::storage)? {
        let (key, _) = row.map_err(StoreError::storage)?;
        report.pending += 1;
        let (sink, _, _, seq) = key.value();
        let delivery = deliveries.get(seq).map_err(StoreError::storage)?;
        let holds = delivery.is_some_and(|d| {
            records::decode::<DeliveryRecord>(d.value(), || seq.to_string())
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

/// Decodes every record of `table` as a `T`, adding each that does not read to
/// `unreadable` (`NAME KEY: reason`); how many records it holds.
fn read_all<K, T>(
    txn: &ReadTransaction,
    table: TableDefinition<'static, K, &'static [u8]>,
    name: &str,
    unreadable: &mut Vec<String>,
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
        if let Err(e) = records::decode::<T>(value.value(), || key.clone()) {
            unreadable.push(format!("{name} {key}: {e}"));
        }
    }
    Ok(count)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::tests::event;
    use crate::store::{DeliveryUpdate, Store};

    #[tokio::test]
    async fn a_healthy_store_checks_clean_and_a_bad_record_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
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
}
