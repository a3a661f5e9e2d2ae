//! Store: the durable inbox and outbox. An event is acknowledged only after it is here.
//!
//! Two backends sit behind one seam ([`Backend`], held as a [`Store`]): the embedded store
//! described below (the default), and [`postgres`], the queue shared by replicas through
//! PostgreSQL (`[storage] backend = "postgres"`).
//!
//! Two parts: an append-only [`log`] of segment files holds what is large (each request's and
//! each routed message's headers and body, written once), and [redb] (an embedded, pure-Rust,
//! ACID B-tree store) holds small index rows that point into it. All writes go through one
//! writer thread that gathers whatever jobs are queued into one group: one `write` and one
//! `fdatasync` of the log, then one redb transaction, so concurrent requests share the cost
//! ("group commit") instead of paying it each. Reads run concurrently from any thread on MVCC
//! snapshots, and read headers and bodies from the log by offset, checksum verified.
//!
//! Tables:
//! - `events`: [`event_key`] (`SOURCE:ID`) → the event's row (what the plugins decided, where
//!   its request is in the log);
//! - `deliveries`: delivery seq → its row (one message for one sink, its attempts, where its
//!   headers and body are in the log); an outcome rewrites only this row;
//! - `pending`: (sink, priority rank, due ms, seq) → () — the delivery schedule. Retries are
//!   rows here, not sleeping tasks, so a million pending retries cost disk, not timers;
//! - `dead_letters`: seq → [`DeadLetter`] (plugin failures and deliveries that gave up);
//! - `event_times`: (received ms, event key) → () — the retention order ([`dlq`]);
//! - `dedupe`, `dedupe_expiry`: dedupe marks with their expiry ([`marks`]);
//! - `plugin_kv`: (plugin, key) → expiry + value, the plugins' key-value store (one replica;
//!   with `[storage] redis` the plugins' state lives in Redis instead, see
//!   [`crate::plugin::kv`]).
//!
//! - `segment_refs`: log segment → rows pointing into it; a segment at zero is deleted.
//!
//! Invariant: an event, all of its deliveries and its dedupe mark are committed in one
//! transaction, after the log records they point at are on disk.

mod backend;
mod cell;
mod check;
pub mod dlq;
mod kv;
mod listing;
mod load;
pub mod log;
pub mod marks;
mod migrate;
pub mod postgres;
mod records;
pub mod upkeep;

mod writer;

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use redb::{ReadableTable, TableDefinition};
use tokio::sync::{Notify, mpsc, oneshot};

pub use backend::{Backend, Outbox, Store};
pub use check::{CheckReport, Integrity, RepairReport, check, repair};
pub use dlq::{LetterFilter, PruneCursor, PruneStep, Replay};
pub use listing::{EventFilter, EventPage, Outcome};
pub use load::StoreLoad;
pub use marks::DedupeMark;
pub use records::{
    Attempt, DeadLetter, DeliveryRecord, DeliveryState, EventRecord, EventStatus, NewDelivery,
    NewEvent, Priority,
};
pub use writer::DeliveryUpdate;

const EVENTS: TableDefinition<&str, &[u8]> = TableDefinition::new("events");
const DELIVERIES: TableDefinition<u64, &[u8]> = TableDefinition::new("deliveries");
const PENDING: TableDefinition<(&str, u8, u64, u64), ()> = TableDefinition::new("pending");
const DEAD_LETTERS: TableDefinition<u64, &[u8]> = TableDefinition::new("dead_letters");
const EVENT_TIMES: TableDefinition<(u64, &str), ()> = TableDefinition::new("event_times");
const META: TableDefinition<&str, u64> = TableDefinition::new("meta");
const PLUGIN_KV: TableDefinition<(&str, &str), &[u8]> = TableDefinition::new("plugin_kv");
const SEGMENT_REFS: TableDefinition<u32, u64> = TableDefinition::new("segment_refs");
/// `meta` keys of the log's committed head: its segment and the end of its committed part.
const LOG_SEGMENT_KEY: &str = "log_segment";
const LOG_END_KEY: &str = "log_end";

/// The database file inside the store's directory.
const DB_FILE: &str = "hookwall.redb";

/// Jobs queued for the writer beyond this make callers wait: back-pressure instead of memory.
const WRITE_QUEUE_DEPTH: usize = 4096;

/// Why a store operation failed.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// The database could not be opened (missing permissions, locked by another process...).
    #[error("cannot open store at {path}: {reason}")]
    Open {
        /// The store's directory (`[storage] path`).
        path: PathBuf,
        /// Why it could not be opened.
        reason: String,
    },
    /// A read or write failed inside redb (disk full, I/O error).
    #[error("storage error: {0}")]
    Storage(String),
    /// A stored record could not be decoded (corruption or an incompatible version).
    #[error("corrupt record {what}: {reason}")]
    Corrupt {
        /// Which record: `event ID`, `delivery SEQ`, `dead letter SEQ`, ….
        what: String,
        /// The decoder's error.
        reason: String,
    },
    /// The store is shutting down and takes no more writes.
    #[error("store is closed")]
    Closed,
    /// The shared store's database cannot be used (unreachable, or its schema is newer).
    #[error("cannot use the PostgreSQL store: {0}")]
    Connect(String),
    /// The database is being reopened after a failed write (e.g. the disk was full).
    #[error("store is being reopened after a write failure")]
    Unavailable,
}

impl StoreError {
    fn storage(e: impl std::fmt::Display) -> StoreError {
        StoreError::Storage(e.to_string())
    }
}

/// The key an event is stored under: `SOURCE:ID`. An event's id is the sender's (from the
/// verify scheme) or a generated UUIDv7, and a sender's id is unique only within its source (two
/// in-house producers may both count from 1), so the store, the time index and the delivery ids
/// (`SOURCE:ID:SINK:N`) scope it by source. The event itself keeps the id as the sender gave it.
pub(crate) fn event_key(source: &str, id: &str) -> String {
    format!("{source}:{id}")
}

/// The event whose `events` row is `bytes`, its headers and body read from the log.
fn event_record(log: &log::Segments, bytes: &[u8], key: &str) -> Result<EventRecord, StoreError> {
    let row: records::EventRow = records::decode(bytes, || format!("event {key}"))?;
    event_from_row(log, row, key)
}

/// The event whose decoded `events` row is `row`, its headers and body read from the log.
fn event_from_row(
    log: &log::Segments,
    row: records::EventRow,
    key: &str,
) -> Result<EventRecord, StoreError> {
    let part = log.parts(row.payload)?.take(0, || format!("event {key}"))?;
    Ok(row.into_record(part.into_body()))
}

/// The delivery whose `deliveries` row is `bytes`, its headers and body read from the log.
fn delivery_record(
    log: &log::Segments,
    bytes: &[u8],
    seq: u64,
) -> Result<DeliveryRecord, StoreError> {
    let what = || format!("delivery {seq}");
    let row: records::DeliveryRow = records::decode(bytes, what)?;
    let part = log.parts(row.payload)?.take(row.part, what)?;
    Ok(row.into_record(part.into_body()))
}

/// Delivery `seq` decoded, or `None` (logged) if it cannot be: one corrupt record must not
/// stop its sink's other deliveries. It stays in the store, pending, for `hookwall` to report.
fn readable(log: &log::Segments, bytes: &[u8], seq: u64) -> Option<DeliveryRecord> {
    match delivery_record(log, bytes, seq) {
        Ok(record) => Some(record),
        Err(e) => {
            tracing::error!(delivery = seq, error = %e,
                "a pending delivery cannot be read; it is skipped (not sent)");
            None
        }
    }
}

/// What committing a new event did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum AcceptOutcome {
    /// The event and its deliveries are durable.
    Stored,
    /// An event with this id, or holding this dedupe mark, is already stored; nothing was
    /// written. `id` is the stored event's.
    Duplicate {
        /// The stored event's id.
        id: String,
    },
}

/// The embedded store (redb + the log): one process's inbox and outbox on local disk. A cheap,
/// cloneable handle; [`Store`] wraps it as one [`Backend`].
#[derive(Clone)]
pub struct Embedded {
    inner: Arc<Inner>,
}

struct Inner {
    db: Arc<cell::DbCell>,
    log: Arc<log::Segments>,
    jobs: mpsc::Sender<writer::Job>,
    feeds: Arc<Feeds>,
    gauges: Arc<load::Gauges>,
    writer: Mutex<Option<std::thread::JoinHandle<()>>>,
}

/// A delivery the writer queued, as a sink's schedule needs it: no body, no headers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Queued {
    /// The delivery's sequence number.
    pub seq: u64,
    /// When it is due, in milliseconds since the Unix epoch.
    pub due_ms: u64,
    /// Its priority within the sink.
    pub priority: Priority,
}

/// One sink's feed: the deliveries committed for it since its worker last looked, and a
/// wake-up. The writer fills it after each commit; the worker drains it.
#[derive(Default)]
pub struct Feed {
    queued: Mutex<Vec<Queued>>,
    notify: Notify,
}

impl Feed {
    /// What was queued since the last call, oldest first.
    pub fn drain(&self) -> Vec<Queued> {
        std::mem::take(&mut *self.queued.lock().unwrap_or_else(|e| e.into_inner()))
    }

    /// Resolves when something new was queued (at once if it was since the last wait).
    pub async fn notified(&self) {
        self.notify.notified().await;
    }
}

/// The feeds of the sinks that have a worker: only those are filled.
#[derive(Default)]
pub(crate) struct Feeds(Mutex<HashMap<String, Arc<Feed>>>);

impl Feeds {
    fn get(&self, sink: &str) -> Arc<Feed> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(sink.to_string()).or_default().clone()
    }

    fn publish(&self, arrivals: Arrivals) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for (sink, queued) in arrivals.0 {
            if let Some(feed) = map.get(&sink) {
                feed.queued
                    .lock()
                    .unwrap_or_else(|e| e.into_inner())
                    .extend(queued);
                feed.notify.notify_one();
            }
        }
    }
}

/// What one commit queued, per sink (published once it is durable).
#[derive(Default)]
pub(crate) struct Arrivals(HashMap<String, Vec<Queued>>);

impl Arrivals {
    fn add(&mut self, sink: &str, queued: Queued) {
        match self.0.get_mut(sink) {
            Some(list) => list.push(queued),
            None => {
                self.0.insert(sink.to_string(), vec![queued]);
            }
        }
    }
}

impl Embedded {
    /// Opens (or creates) the store in directory `dir`, fsyncing every commit.
    pub fn open(dir: &Path) -> Result<Embedded, StoreError> {
        Embedded::open_with(dir, true)
    }

    /// Opens the store; with `fsync = false` commits skip the fsync (a crash can lose
    /// acknowledged events), except the final one at [`Embedded::close`].
    pub fn open_with(dir: &Path, fsync: bool) -> Result<Embedded, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        std::fs::create_dir_all(dir).map_err(|e| open_err(e.to_string()))?;
        let path = dir.join(DB_FILE);
        if !path.exists() {
            cell::create_new(&path).map_err(|e| open_err(e.to_string()))?;
        }
        let db = cell::create(&path).map_err(|e| open_err(e.to_string()))?;
        Embedded::start(dir, db, fsync)
    }

    /// Makes the tables, brings the log to its committed end, reads the next sequence number
    /// and starts the writer on `db` (the crash model, `crash_tests.rs`, starts it on an
    /// in-memory disk).
    fn start(dir: &Path, db: redb::Database, fsync: bool) -> Result<Embedded, StoreError> {
        Embedded::start_with(dir, db, fsync, log::SEGMENT_BYTES)
    }

    /// [`Embedded::start`] with log segments of `segment_bytes` (tests make them small).
    fn start_with(
        dir: &Path,
        db: redb::Database,
        fsync: bool,
        segment_bytes: u64,
    ) -> Result<Embedded, StoreError> {
        let open_err = |reason: String| StoreError::Open {
            path: dir.to_path_buf(),
            reason,
        };
        let segments = Arc::new(log::Segments::new(dir));
        let (next_seq, pending, appender) = {
            let txn = db.begin_write().map_err(|e| open_err(e.to_string()))?;
            let head = log_head(&txn.open_table(META).map_err(StoreError::storage)?)?;
            let kept = log::recover(&segments, head)?;
            let mut appender = log::Appender::open(segments.clone(), head)
                .map_err(StoreError::storage)?
                .limited(segment_bytes);
            let next = {
                // Creating every table up front lets readers open them without a write.
                txn.open_table(EVENTS).map_err(StoreError::storage)?;
                txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
                txn.open_table(PENDING).map_err(StoreError::storage)?;
                txn.open_table(DEAD_LETTERS).map_err(StoreError::storage)?;
                txn.open_table(EVENT_TIMES).map_err(StoreError::storage)?;
                txn.open_table(marks::DEDUPE).map_err(StoreError::storage)?;
                txn.open_table(marks::DEDUPE_EXPIRY)
                    .map_err(StoreError::storage)?;
                txn.open_table(PLUGIN_KV).map_err(StoreError::storage)?;
                txn.open_table(SEGMENT_REFS).map_err(StoreError::storage)?;
                migrate::upgrade(&txn, &mut appender)?;
                listing::rebuild_index(&txn)?;
                unreferenced(&txn, &kept, head.segment, &appender)?;
                let meta = txn.open_table(META).map_err(StoreError::storage)?;
                meta.get("next_seq")
                    .map_err(StoreError::storage)?
                    .map(|v| v.value())
                    .unwrap_or(1)
            };
            let pending = {
                use redb::ReadableTableMetadata as _;
                let table = txn.open_table(PENDING).map_err(StoreError::storage)?;
                table.len().map_err(StoreError::storage)?
            };
            txn.commit().map_err(StoreError::storage)?;
            (next, pending, appender)
        };
        let db = Arc::new(cell::DbCell::new(&dir.join(DB_FILE), db));
        let feeds = Arc::new(Feeds::default());
        let gauges = Arc::new(load::Gauges::new(pending));
        let (jobs, rx) = mpsc::channel(WRITE_QUEUE_DEPTH);
        let handle = writer::spawn(
            db.clone(),
            appender,
            rx,
            next_seq,
            feeds.clone(),
            gauges.clone(),
            fsync,
        )
        .map_err(|e| open_err(e.to_string()))?;
        Ok(Embedded {
            inner: Arc::new(Inner {
                db,
                log: segments,
                jobs,
                feeds,
                gauges,
                writer: Mutex::new(Some(handle)),
            }),
        })
    }

    /// Queues the job `make` builds around a typed responder and waits for its answer.
    async fn ask<T>(
        &self,
        make: impl FnOnce(writer::Responder<T>) -> writer::Job,
    ) -> Result<T, StoreError> {
        let (resp, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(make(resp))
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    /// Durably stores an event with its deliveries (and dead letter, if its plugins failed).
    /// Returns once the commit is on disk.
    pub async fn accept(&self, event: NewEvent) -> Result<AcceptOutcome, StoreError> {
        self.accept_marked(event, None).await
    }

    /// Like [`Embedded::accept`], and also commits `mark` in the same transaction. If a live mark
    /// for the same (source, key) exists (checked at the event's `received_at_ms`), nothing is
    /// written and the answer is the marked event's id as a duplicate.
    pub async fn accept_marked(
        &self,
        event: NewEvent,
        mark: Option<DedupeMark>,
    ) -> Result<AcceptOutcome, StoreError> {
        self.ask(|resp| writer::Job::Accept {
            event: Box::new(event),
            mark,
            resp,
        })
        .await
    }

    /// Records the results of delivery attempts in one commit.
    pub async fn update_deliveries(&self, updates: Vec<DeliveryUpdate>) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        self.ask(|resp| writer::Job::Update { updates, resp }).await
    }

    /// Sink `sink`'s feed of newly queued deliveries; from this call on, every commit that
    /// queues a delivery for it is published there (a worker registers before it reads the
    /// pending rows, so nothing falls between the two).
    pub fn feed(&self, sink: &str) -> Arc<Feed> {
        self.inner.feeds.get(sink)
    }

    /// Up to `limit` deliveries for `sink` that are due at `now_ms`, high priority first.
    pub fn due_deliveries(
        &self,
        sink: &str,
        now_ms: u64,
        limit: usize,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut seqs = Vec::new();
        self.scan_pending(sink, false, |q, _| {
            if q.due_ms <= now_ms {
                seqs.push((q.priority.rank(), q.due_ms, q.seq));
            }
        })?;
        seqs.sort_unstable();
        seqs.truncate(limit);
        let seqs: Vec<u64> = seqs.into_iter().map(|(_, _, seq)| seq).collect();
        let mut out = self.pending_records(&seqs)?;
        out.sort_by_key(|d| seqs.iter().position(|s| *s == d.seq));
        Ok(out)
    }

    /// When the next delivery for `sink` falls due, if any is pending.
    pub fn next_due_ms(&self, sink: &str) -> Result<Option<u64>, StoreError> {
        let mut next: Option<u64> = None;
        self.scan_pending(sink, false, |q, _| {
            next = Some(next.map_or(q.due_ms, |n| n.min(q.due_ms)));
        })?;
        Ok(next)
    }

    /// The records of `seqs` that are still pending, in the order given (a seq settled or
    /// pruned meanwhile, or whose record cannot be decoded, is left out). One read transaction.
    pub fn pending_records(&self, seqs: &[u64]) -> Result<Vec<DeliveryRecord>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let deliveries = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
        let mut out = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            if let Some(bytes) = deliveries.get(seq).map_err(StoreError::storage)?
                && let Some(record) = readable(&self.inner.log, bytes.value(), seq)
                && matches!(record.state, DeliveryState::Pending { .. })
            {
                out.push(record);
            }
        }
        Ok(out)
    }

    /// Calls `each` with every pending delivery of `sink` (high priority first, then by due
    /// time), and with its body if `with_bodies` (one record decoded at a time, so memory stays
    /// bounded however large the backlog). Returns how many there were.
    pub fn scan_pending(
        &self,
        sink: &str,
        with_bodies: bool,
        mut each: impl FnMut(Queued, Option<&[u8]>),
    ) -> Result<usize, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let pending = txn.open_table(PENDING).map_err(StoreError::storage)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
        let range = pending
            .range((sink, 0u8, 0u64, 0u64)..=(sink, u8::MAX, u64::MAX, u64::MAX))
            .map_err(StoreError::storage)?;
        let mut n = 0;
        for row in range {
            let (_, rank, due_ms, seq) = row.map_err(StoreError::storage)?.0.value();
            let queued = Queued {
                seq,
                due_ms,
                priority: Priority::from_rank(rank),
            };
            n += 1;
            if !with_bodies {
                each(queued, None);
                continue;
            }
            if let Some(bytes) = deliveries.get(seq).map_err(StoreError::storage)?
                && let Some(record) = readable(&self.inner.log, bytes.value(), seq)
            {
                each(queued, Some(&record.body));
            }
        }
        Ok(n)
    }

    /// The sinks that have pending deliveries (a sink removed from the config may be among
    /// them).
    pub fn pending_sinks(&self) -> Result<Vec<String>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let pending = txn.open_table(PENDING).map_err(StoreError::storage)?;
        let mut sinks: Vec<String> = Vec::new();
        let mut row = pending.first().map_err(StoreError::storage)?;
        while let Some((key, _)) = row {
            let sink = key.value().0.to_string();
            // Skip to the first row after this sink's: sinks are few, rows may be many.
            let next = pending
                .range((sink.as_str(), u8::MAX, u64::MAX, u64::MAX)..)
                .map_err(StoreError::storage)?
                .find(|r| match r {
                    Ok((k, _)) => k.value().0 != sink,
                    Err(_) => true,
                })
                .transpose()
                .map_err(StoreError::storage)?;
            sinks.push(sink);
            row = next;
        }
        Ok(sinks)
    }

    /// Number of deliveries waiting for `sink` (due now or later).
    pub fn pending_count(&self, sink: &str) -> Result<u64, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let pending = txn.open_table(PENDING).map_err(StoreError::storage)?;
        let range = pending
            .range((sink, 0u8, 0u64, 0u64)..=(sink, u8::MAX, u64::MAX, u64::MAX))
            .map_err(StoreError::storage)?;
        Ok(range.count() as u64)
    }

    /// The event `id` of `source`, and its deliveries.
    pub fn event(
        &self,
        source: &str,
        id: &str,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let events = txn.open_table(EVENTS).map_err(StoreError::storage)?;
        let key = event_key(source, id);
        let Some(bytes) = events.get(key.as_str()).map_err(StoreError::storage)? else {
            return Ok(None);
        };
        let event = event_record(&self.inner.log, bytes.value(), &key)?;
        let deliveries_table = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
        let mut deliveries = Vec::new();
        for seq in &event.deliveries {
            if let Some(bytes) = deliveries_table.get(*seq).map_err(StoreError::storage)? {
                deliveries.push(delivery_record(&self.inner.log, bytes.value(), *seq)?);
            }
        }
        Ok(Some((event, deliveries)))
    }

    /// The newest `limit` dead letters, newest first.
    pub fn dead_letters(&self, limit: usize) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DEAD_LETTERS).map_err(StoreError::storage)?;
        let mut out = Vec::new();
        for row in table.iter().map_err(StoreError::storage)?.rev().take(limit) {
            let (k, v) = row.map_err(StoreError::storage)?;
            let seq = k.value();
            out.push((
                seq,
                records::decode(v.value(), || format!("dead letter {seq}"))?,
            ));
        }
        Ok(out)
    }

    /// Stops taking writes, lets the writer finish what is queued, and waits for it.
    pub async fn close(&self) {
        let handle = self
            .inner
            .writer
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .take();
        if let Some(handle) = handle {
            let _ = self.ask(|resp| writer::Job::Stop { resp }).await;
            let _ = tokio::task::spawn_blocking(move || handle.join()).await;
        }
    }
}

/// Where the log ended at the last commit, from the `meta` table (a new store's: segment 1,
/// empty).
fn log_head(meta: &impl ReadableTable<&'static str, u64>) -> Result<log::Head, StoreError> {
    let get = |key: &str| -> Result<Option<u64>, StoreError> {
        Ok(meta
            .get(key)
            .map_err(StoreError::storage)?
            .map(|v| v.value()))
    };
    Ok(log::Head {
        segment: get(LOG_SEGMENT_KEY)?.map_or(1, |s| s as u32),
        end: get(LOG_END_KEY)?.unwrap_or(0),
    })
}

/// Deletes the segments in `kept` before `head` that no row points into (a crash came between
/// the commit that released one and its deletion).
fn unreferenced(
    txn: &redb::WriteTransaction,
    kept: &[u32],
    head: u32,
    log: &log::Appender,
) -> Result<(), StoreError> {
    let refs = txn.open_table(SEGMENT_REFS).map_err(StoreError::storage)?;
    for &segment in kept.iter().filter(|s| **s < head) {
        if refs.get(segment).map_err(StoreError::storage)?.is_none() {
            log.delete(segment);
        }
    }
    Ok(())
}

#[cfg(test)]
mod crash_tests;
#[cfg(test)]
mod model_tests;
#[cfg(test)]
mod tests;
