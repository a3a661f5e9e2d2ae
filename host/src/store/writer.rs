//! The single writer: turns queued jobs into one redb transaction per batch (group commit).
//!
//! With `fsync = false` commits skip the fsync, but not forever: the writer makes the state
//! durable at least every [`LAZY_SYNC_INTERVAL`] (and when it stops). Without that, a crash
//! would roll the store back to the last durable commit, possibly the start of the process,
//! and redb, which frees pages only at durable commits, would keep growing the file.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use redb::{Durability, ReadableTable, ReadableTableMetadata, Table, WriteTransaction};
use tokio::sync::{mpsc, oneshot};

use super::cell::DbCell;
use super::load::Gauges;
use super::log::{Appender, BodyRef, LogRef, PartRef};
use super::marks::{self, DedupeMark};
use super::records::{
    self, DeadLetter, DeliveryRow, DeliveryState, EventRow, EventStatus, NewDelivery, NewEvent,
};
use super::{
    AcceptOutcome, Arrivals, DEAD_LETTERS, DELIVERIES, EVENT_TIMES, EVENTS, Feeds, META, PENDING,
    PLUGIN_KV, Queued, SEGMENT_REFS, StoreError,
};

/// Jobs folded into one transaction at most; bounds the latency of the first job in a batch.
const MAX_BATCH: usize = 512;
/// With `fsync = false`, the longest a commit stays non-durable (what a crash can lose).
pub(super) const LAZY_SYNC_INTERVAL: Duration = Duration::from_secs(1);
/// After a failed commit, how often the writer tries to reopen the database while no job
/// comes (so `/readyz` turns ready again once space is back, even without traffic).
const RECOVER_INTERVAL: Duration = Duration::from_secs(1);
/// The process's exit status when the writer thread panics (`EX_SOFTWARE`): every
/// acknowledged event is already on disk, so the supervisor's restart loses nothing, while a
/// process without a writer would answer 503 forever.
pub const EXIT_WRITER_PANIC: i32 = 70;
/// `HOOKWALL_FAILPOINT=store-writer-panic` makes the writer panic at its first accept: how
/// the end-to-end tests check that a writer panic ends the process. Read once at start.
const FAILPOINT_ENV: &str = "HOOKWALL_FAILPOINT";
const FAILPOINT_WRITER_PANIC: &str = "store-writer-panic";

/// Where the writer answers a job: typed by what the job returns.
pub(super) type Responder<T> = oneshot::Sender<Result<T, StoreError>>;

/// One request to the writer, with a responder typed for its answer (the tokio tutorial's
/// `Command { …, resp }`), so a caller can only ever receive the type it asked for.
pub(super) enum Job {
    /// Commit a new event (and its mark); answers what happened.
    Accept {
        event: Box<NewEvent>,
        mark: Option<DedupeMark>,
        resp: Responder<AcceptOutcome>,
    },
    /// Record delivery attempts.
    Update {
        updates: Vec<DeliveryUpdate>,
        resp: Responder<()>,
    },
    /// Remove up to `limit` expired dedupe marks; answers how many.
    PurgeMarks {
        now_ms: u64,
        limit: usize,
        resp: Responder<usize>,
    },
    /// Dead-letter queue work ([`super::dlq`]); answers how many letters or events it touched.
    Dlq {
        op: super::dlq::DlqOp,
        resp: Responder<usize>,
    },
    /// A plugin key-value write; answers whether it changed something.
    Kv { op: KvOp, resp: Responder<bool> },
    /// Commit what is queued durably, then stop.
    Stop { resp: Responder<()> },
}

/// What applying a job produced inside the transaction, answered once the commit is durable.
enum Done {
    Accepted(AcceptOutcome),
    Count(usize),
    Kv(bool),
    Unit,
}

impl Job {
    fn is_stop(&self) -> bool {
        matches!(self, Job::Stop { .. })
    }

    fn is_accept(&self) -> bool {
        matches!(self, Job::Accept { .. })
    }

    /// Applies the job inside the batch's transaction.
    fn apply(
        &self,
        t: &mut Tables,
        next_seq: &mut u64,
        touched: &mut Arrivals,
    ) -> Result<Done, StoreError> {
        Ok(match self {
            Job::Accept { event, mark, .. } => {
                Done::Accepted(accept(t, event, mark.as_ref(), next_seq, touched)?)
            }
            Job::PurgeMarks { now_ms, limit, .. } => Done::Count(marks::purge(t, *now_ms, *limit)?),
            Job::Update { updates, .. } => {
                for u in updates {
                    update(t, u, next_seq)?;
                }
                Done::Unit
            }
            Job::Kv { op, .. } => Done::Kv(kv(t, op)?),
            Job::Dlq { op, .. } => Done::Count(super::dlq::apply(t, op, next_seq, touched)?),
            Job::Stop { .. } => Done::Unit,
        })
    }

    /// Answers the job with what [`Job::apply`] produced for it (after a durable commit), or
    /// with the error that failed the batch.
    fn answer(self, result: Result<Done, StoreError>) {
        fn send<T>(resp: Responder<T>, r: Result<T, StoreError>) {
            // The caller may have given up waiting; nothing to do then.
            let _ = resp.send(r);
        }
        match (self, result) {
            (Job::Accept { resp, .. }, Ok(Done::Accepted(outcome))) => send(resp, Ok(outcome)),
            (Job::PurgeMarks { resp, .. } | Job::Dlq { resp, .. }, Ok(Done::Count(n))) => {
                send(resp, Ok(n))
            }
            (Job::Kv { resp, .. }, Ok(Done::Kv(changed))) => send(resp, Ok(changed)),
            (Job::Update { resp, .. } | Job::Stop { resp }, Ok(Done::Unit)) => send(resp, Ok(())),
            (job, Ok(_)) => {
                // `apply` makes each job's own kind of `Done`; anything else is a bug here.
                debug_assert!(false, "a writer job got another job's answer");
                job.answer(Err(StoreError::Storage("writer answer mismatch".into())));
            }
            (Job::Accept { resp, .. }, Err(e)) => send(resp, Err(e)),
            (Job::PurgeMarks { resp, .. } | Job::Dlq { resp, .. }, Err(e)) => send(resp, Err(e)),
            (Job::Kv { resp, .. }, Err(e)) => send(resp, Err(e)),
            (Job::Update { resp, .. } | Job::Stop { resp }, Err(e)) => send(resp, Err(e)),
        }
    }
}

/// A write to the plugins' key-value store (`stored` is already encoded with its expiry).
pub(super) enum KvOp {
    Set {
        plugin: String,
        key: String,
        stored: Vec<u8>,
    },
    Delete {
        plugin: String,
        key: String,
    },
    CompareAndSwap {
        plugin: String,
        key: String,
        expected: Option<Vec<u8>>,
        stored: Vec<u8>,
        now_ms: u64,
    },
}

/// The result of one delivery attempt, to be recorded.
#[derive(Debug, Clone)]
pub enum DeliveryUpdate {
    /// The sink confirmed.
    Delivered {
        /// The delivery's sequence number.
        seq: u64,
        /// When the attempt ended, in milliseconds since the Unix epoch.
        at_ms: u64,
    },
    /// The attempt failed; try again at `due_ms`.
    Retry {
        /// The delivery's sequence number.
        seq: u64,
        /// When the attempt ended, in milliseconds since the Unix epoch.
        at_ms: u64,
        /// What went wrong.
        error: String,
        /// The receiver's answer, for sinks that have one (an HTTP status).
        status: Option<u16>,
        /// When the next attempt is due, in milliseconds since the Unix epoch.
        due_ms: u64,
    },
    /// The attempt failed for good; move the delivery to the dead-letter queue.
    Dead {
        /// The delivery's sequence number.
        seq: u64,
        /// When the attempt ended, in milliseconds since the Unix epoch.
        at_ms: u64,
        /// What went wrong, and why no retry follows.
        error: String,
        /// The receiver's answer, for sinks that have one (an HTTP status).
        status: Option<u16>,
    },
}

/// Every table a commit writes, opened once per transaction. Opening a table looks it up in
/// redb's table tree and closing it writes its root back; done per event, that was ~8 % of the
/// writer's time.
pub(super) struct Tables<'t> {
    pub events: Table<'t, &'static str, &'static [u8]>,
    pub deliveries: Table<'t, u64, &'static [u8]>,
    pub pending: Table<'t, (&'static str, u8, u64, u64), ()>,
    pub dead_letters: Table<'t, u64, &'static [u8]>,
    pub event_times: Table<'t, (u64, &'static str), ()>,
    pub dedupe: Table<'t, (&'static str, &'static str), (u64, &'static str)>,
    pub dedupe_expiry: Table<'t, (u64, &'static str, &'static str), ()>,
    pub plugin_kv: Table<'t, (&'static str, &'static str), &'static [u8]>,
    meta: Table<'t, &'static str, u64>,
    segment_refs: Table<'t, u32, u64>,
    /// Where this transaction's headers and bodies go.
    pub log: &'t mut Appender,
    /// Rows added (+) and removed (−) per log segment in this transaction.
    refs: HashMap<u32, i64>,
}

impl<'t> Tables<'t> {
    pub(super) fn open(
        txn: &'t WriteTransaction,
        log: &'t mut Appender,
    ) -> Result<Tables<'t>, StoreError> {
        let e = StoreError::storage;
        Ok(Tables {
            segment_refs: txn.open_table(SEGMENT_REFS).map_err(e)?,
            log,
            refs: HashMap::new(),
            events: txn.open_table(EVENTS).map_err(e)?,
            deliveries: txn.open_table(DELIVERIES).map_err(e)?,
            pending: txn.open_table(PENDING).map_err(e)?,
            dead_letters: txn.open_table(DEAD_LETTERS).map_err(e)?,
            event_times: txn.open_table(EVENT_TIMES).map_err(e)?,
            dedupe: txn.open_table(marks::DEDUPE).map_err(e)?,
            dedupe_expiry: txn.open_table(marks::DEDUPE_EXPIRY).map_err(e)?,
            plugin_kv: txn.open_table(PLUGIN_KV).map_err(e)?,
            meta: txn.open_table(META).map_err(e)?,
        })
    }

    /// Counts a row that points at `at` (`delta` +1) or no longer does (−1).
    pub(super) fn refer(&mut self, at: LogRef, delta: i64) {
        *self.refs.entry(at.segment).or_default() += delta;
    }

    /// Writes the segment counts this transaction changed and where the log will end; returns
    /// the segments (other than the head) that no row points into any more, `left` (the
    /// segment the log just rolled over from) among them if nothing points into it.
    pub(super) fn settle_log(&mut self, left: Option<u32>) -> Result<Vec<u32>, StoreError> {
        let e = StoreError::storage;
        let head = self.log.next_head();
        let mut released = Vec::new();
        for (segment, delta) in std::mem::take(&mut self.refs) {
            if delta == 0 {
                continue;
            }
            let now = self
                .segment_refs
                .get(segment)
                .map_err(e)?
                .map_or(0, |v| v.value());
            let next = now.saturating_add_signed(delta);
            if next == 0 {
                self.segment_refs.remove(segment).map_err(e)?;
                if segment != head.segment {
                    released.push(segment);
                }
            } else {
                self.segment_refs.insert(segment, next).map_err(e)?;
            }
        }
        if let Some(old) = left
            && self.segment_refs.get(old).map_err(e)?.is_none()
            && !released.contains(&old)
        {
            released.push(old);
        }
        self.meta
            .insert(super::LOG_SEGMENT_KEY, u64::from(head.segment))
            .map_err(e)?;
        self.meta.insert(super::LOG_END_KEY, head.end).map_err(e)?;
        Ok(released)
    }
}

pub(super) fn spawn(
    db: Arc<DbCell>,
    log: Appender,
    rx: mpsc::Receiver<Job>,
    next_seq: u64,
    feeds: Arc<Feeds>,
    gauges: Arc<Gauges>,
    fsync: bool,
) -> std::io::Result<std::thread::JoinHandle<()>> {
    let panic_at_accept = std::env::var(FAILPOINT_ENV).is_ok_and(|v| v == FAILPOINT_WRITER_PANIC);
    std::thread::Builder::new()
        .name("hookwall-store-writer".into())
        .spawn(move || {
            let writer = Writer {
                db: &db,
                feeds: &feeds,
                gauges: &gauges,
                panic_at_accept,
            };
            let ran = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
                writer.run(rx, log, next_seq, fsync)
            }));
            if ran.is_err() {
                tracing::error!(
                    exit = EXIT_WRITER_PANIC,
                    "the store writer panicked; exiting so that the supervisor restarts the \
                     process (every acknowledged event is on disk)"
                );
                std::process::exit(EXIT_WRITER_PANIC);
            }
        })
}

/// What the writer thread works with.
struct Writer<'a> {
    db: &'a DbCell,
    feeds: &'a Feeds,
    gauges: &'a Gauges,
    panic_at_accept: bool,
}

impl Writer<'_> {
    /// After a failed commit: reopens the database and proves it writable with an empty
    /// durable commit; true when the store takes writes again.
    fn recover(&self) -> bool {
        let recovered = self
            .db
            .reopen()
            .and_then(|()| self.db.begin_write()?.commit().map_err(StoreError::storage));
        match recovered {
            Ok(()) => {
                tracing::info!("store is writable again");
                self.gauges.set_write_error(None);
                true
            }
            Err(e) => {
                tracing::debug!(error = %e, "store still not writable");
                false
            }
        }
    }

    fn run(&self, mut rx: mpsc::Receiver<Job>, log: Appender, next_seq: u64, fsync: bool) {
        // Only to wait for the next job with a timeout while a lazy sync or a recovery is due.
        let timer = match tokio::runtime::Builder::new_current_thread()
            .enable_time()
            .build()
        {
            Ok(rt) => Some(rt),
            Err(e) => {
                tracing::warn!(error = %e, "no timer for lazy syncs: every commit is made durable");
                None
            }
        };
        let mut state = State {
            log,
            released: Vec::new(),
            next_seq,
            fsync: fsync || timer.is_none(),
            unsynced_since: None,
            broken: false,
        };
        loop {
            let first = match (state.wait(), &timer) {
                (Some(left), Some(timer)) => {
                    // The timeout is built inside `block_on`: it needs the runtime's timer.
                    match timer.block_on(async { tokio::time::timeout(left, rx.recv()).await }) {
                        Ok(job) => job,
                        Err(_) => {
                            self.idle(&mut state);
                            continue;
                        }
                    }
                }
                _ => rx.blocking_recv(),
            };
            let Some(first) = first else {
                break;
            };
            let batch = take_batch(first, &mut rx);
            let stop = batch.iter().any(Job::is_stop);
            if self.panic_at_accept && batch.iter().any(Job::is_accept) {
                panic!("{FAILPOINT_ENV}={FAILPOINT_WRITER_PANIC}: the store writer panics");
            }
            if state.broken {
                state.broken = !self.recover();
            }
            self.write(&mut state, batch, stop);
            if stop {
                rx.close();
                // Anything still queued after Stop is refused rather than silently dropped.
                while let Ok(job) = rx.try_recv() {
                    job.answer(Err(StoreError::Closed));
                }
                return;
            }
        }
        // Every handle is gone without a Stop: still leave the store durable.
        if state.unsynced_since.is_some() {
            sync(self.db, &mut state);
        }
    }

    /// No job came within the wait: reopen a broken store, or make lazy commits durable.
    fn idle(&self, state: &mut State) {
        if state.broken {
            state.broken = !self.recover();
        } else if sync(self.db, state) {
            state.unsynced_since = None;
        }
    }

    /// Commits `batch` as one transaction and answers every job in it.
    fn write(&self, state: &mut State, batch: Vec<Job>, stop: bool) {
        let mut touched = Arrivals::default();
        let seq_before = state.next_seq;
        // The last commit before stopping is always durable, so `fsync = false` loses data
        // only on a crash, and then at most LAZY_SYNC_INTERVAL of it.
        let durable = state.fsync
            || stop
            || state
                .unsynced_since
                .is_some_and(|s| s.elapsed() >= LAZY_SYNC_INTERVAL);
        self.gauges.commit_started();
        let committed = if state.broken {
            Err(StoreError::Unavailable)
        } else {
            commit(self.db, &batch, state, &mut touched, durable)
        };
        self.gauges
            .commit_ended(committed.as_ref().ok().map(|(_, pending)| *pending));
        match committed {
            Ok((replies, _)) => {
                if durable {
                    state.unsynced_since = None;
                    state.delete_released();
                } else {
                    state.unsynced_since.get_or_insert_with(Instant::now);
                }
                // Published before the answers: whoever hears the commit finds its work queued.
                self.feeds.publish(touched);
                debug_assert_eq!(replies.len(), batch.len(), "one answer per job");
                for (job, done) in batch.into_iter().zip(replies) {
                    job.answer(Ok(done));
                }
            }
            Err(e) => {
                state.next_seq = seq_before;
                if !state.broken {
                    tracing::error!(error = %e, jobs = batch.len(),
                        "store commit failed; the store is reopened once it can be written");
                    self.gauges.set_write_error(Some(e.to_string()));
                    state.broken = true;
                }
                for job in batch {
                    job.answer(Err(match &e {
                        StoreError::Unavailable => StoreError::Unavailable,
                        other => StoreError::Storage(other.to_string()),
                    }));
                }
            }
        }
    }
}

/// What the writer loop carries from one batch to the next.
struct State {
    /// The log's head segment and the group being built.
    log: Appender,
    /// Segments no row points into, deleted once the commit that released them is durable.
    released: Vec<u32>,
    next_seq: u64,
    /// Every commit durable (`fsync = true`, or no timer for lazy syncs).
    fsync: bool,
    /// When the oldest commit that is not yet durable was made.
    unsynced_since: Option<Instant>,
    /// A commit failed: the database must be reopened before it takes writes again.
    broken: bool,
}

impl State {
    fn delete_released(&mut self) {
        for segment in self.released.drain(..) {
            self.log.delete(segment);
        }
    }

    /// How long to wait for a job before doing idle work (`None`: no idle work is due).
    fn wait(&self) -> Option<Duration> {
        if self.broken {
            Some(RECOVER_INTERVAL)
        } else {
            self.unsynced_since
                .map(|since| LAZY_SYNC_INTERVAL.saturating_sub(since.elapsed()))
        }
    }
}

/// `first` and whatever else is queued, up to [`MAX_BATCH`] jobs: one transaction's worth.
fn take_batch(first: Job, rx: &mut mpsc::Receiver<Job>) -> Vec<Job> {
    let mut batch = vec![first];
    while batch.len() < MAX_BATCH {
        match rx.try_recv() {
            Ok(job) => batch.push(job),
            Err(_) => break,
        }
    }
    batch
}

/// Makes every earlier non-durable commit durable (the log synced, then an empty durable
/// commit); false if it failed.
fn sync(db: &DbCell, state: &mut State) -> bool {
    let commit = || -> Result<(), StoreError> {
        state.log.sync().map_err(StoreError::storage)?;
        db.begin_write()?.commit().map_err(StoreError::storage)
    };
    let result = commit();
    match &result {
        Ok(()) => state.delete_released(),
        Err(e) => tracing::error!(error = %e, "store sync failed"),
    }
    result.is_ok()
}

/// Applies `batch` in one transaction: its headers and bodies are written to the log (and
/// synced if `durable`) before the transaction that points at them commits.
fn commit(
    db: &DbCell,
    batch: &[Job],
    state: &mut State,
    touched: &mut Arrivals,
    durable: bool,
) -> Result<(Vec<Done>, u64), StoreError> {
    let before = state.log.head();
    let committed = commit_logged(db, batch, state, touched, durable);
    if committed.is_err() {
        state.log.reset(before);
    }
    committed
}

fn commit_logged(
    db: &DbCell,
    batch: &[Job],
    state: &mut State,
    touched: &mut Arrivals,
    durable: bool,
) -> Result<(Vec<Done>, u64), StoreError> {
    let mut txn = db.begin_write()?;
    if !durable {
        txn.set_durability(Durability::None)
            .map_err(StoreError::storage)?;
    }
    let left = state.log.roll_if_full().map_err(StoreError::storage)?;
    let next_seq = &mut state.next_seq;
    let mut replies = Vec::with_capacity(batch.len());
    let (pending, released) = {
        let t = &mut Tables::open(&txn, &mut state.log)?;
        for job in batch {
            // The one-transaction rule: every job of the batch is applied to this one
            // transaction, and none is answered before it commits.
            let reply = job.apply(t, next_seq, touched)?;
            replies.push(reply);
        }
        t.meta
            .insert("next_seq", *next_seq)
            .map_err(StoreError::storage)?;
        let released = t.settle_log(left)?;
        // O(1): redb keeps each table's length in its header.
        (t.pending.len().map_err(StoreError::storage)?, released)
    };
    // Write-ahead: the records are on disk before any row that points at them is.
    state.log.write(durable).map_err(StoreError::storage)?;
    txn.commit().map_err(StoreError::storage)?;
    state.released.extend(released);
    Ok((replies, pending))
}

pub(super) fn take_seq(next_seq: &mut u64) -> u64 {
    let seq = *next_seq;
    *next_seq += 1;
    seq
}

fn accept(
    t: &mut Tables,
    event: &NewEvent,
    mark: Option<&DedupeMark>,
    next_seq: &mut u64,
    touched: &mut Arrivals,
) -> Result<AcceptOutcome, StoreError> {
    if let Some(mark) = mark
        && let Some(id) = marks::live_mark(t, mark, event.record.received_at_ms)?
    {
        return Ok(AcceptOutcome::Duplicate { id });
    }
    let key = super::event_key(&event.record.source, &event.record.id);
    if t.events
        .get(key.as_str())
        .map_err(StoreError::storage)?
        .is_some()
    {
        return Ok(AcceptOutcome::Duplicate {
            id: event.record.id.clone(),
        });
    }
    if let Some(mark) = mark {
        marks::put_mark(t, mark, &event.record.id)?;
    }
    let request = &event.record;
    // Part 0 is the request; part 1 + i is delivery i, its body shared with the request's
    // when the plugins did not change it.
    let mut parts = Vec::with_capacity(1 + event.deliveries.len());
    parts.push(PartRef {
        headers: &request.headers,
        body: BodyRef::Bytes(&request.body),
    });
    parts.extend(event.deliveries.iter().map(|d| PartRef {
        headers: &d.headers,
        body: if d.body == request.body {
            BodyRef::SameAs(0)
        } else {
            BodyRef::Bytes(&d.body)
        },
    }));
    let payload = t.log.push_parts(&parts)?;
    let mut row = EventRow::of(request, payload);
    row.deliveries.clear();
    let queued_at_ms = row.received_at_ms;
    insert_deliveries(
        t,
        &mut row,
        &event.deliveries,
        (payload, 1),
        queued_at_ms,
        next_seq,
        touched,
    )?;
    plugin_letter(t, &row, row.received_at_ms, next_seq)?;
    t.events
        .insert(key.as_str(), records::encode(&row)?.as_slice())
        .map_err(StoreError::storage)?;
    t.refer(payload, 1);
    t.event_times
        .insert((row.received_at_ms, key.as_str()), ())
        .map_err(StoreError::storage)?;
    Ok(AcceptOutcome::Stored)
}

/// Writes `new`'s headers and bodies to the log as one record of their own (a replay's
/// deliveries): where it is, and the part of the first.
pub(super) fn log_deliveries(
    t: &mut Tables,
    new: &[NewDelivery],
) -> Result<(LogRef, u32), StoreError> {
    let parts: Vec<PartRef<'_>> = new
        .iter()
        .map(|d| PartRef {
            headers: &d.headers,
            body: BodyRef::Bytes(&d.body),
        })
        .collect();
    Ok((t.log.push_parts(&parts)?, 0))
}

/// Adds `new` as pending deliveries of `record` (appending their seqs to it), their headers and
/// bodies being in the log at `payload`, parts `first`, `first + 1`, …. Each gets the
/// stable id `SOURCE:EVENT:SINK:N`, N counting `new`'s deliveries to that sink, so routing the
/// same event the same way again (a replay) yields the same ids, and two sources' events with
/// the same id never share one (a receiver dedupes on it). `retry.max_age` counts from
/// `queued_at_ms`.
pub(super) fn insert_deliveries(
    t: &mut Tables,
    record: &mut EventRow,
    new: &[NewDelivery],
    (payload, first): (LogRef, u32),
    queued_at_ms: u64,
    next_seq: &mut u64,
    touched: &mut Arrivals,
) -> Result<(), StoreError> {
    let mut per_sink: HashMap<&str, usize> = HashMap::new();
    // Due at receipt: a new event's place in its sink's order; a replayed one is due at once
    // and keeps its place among the events of its time.
    let due_ms = record.received_at_ms;
    let key = super::event_key(&record.source, &record.id);
    for (i, d) in new.iter().enumerate() {
        let seq = take_seq(next_seq);
        let n = per_sink.entry(d.sink.as_str()).or_default();
        let delivery = DeliveryRow {
            seq,
            id: format!("{key}:{}:{n}", d.sink),
            event_id: record.id.clone(),
            source: record.source.clone(),
            received_at_ms: record.received_at_ms,
            sink: d.sink.clone(),
            priority: d.priority,
            attempts: Vec::new(),
            state: DeliveryState::Pending { due_ms },
            queued_at_ms,
            payload,
            part: first + i as u32,
        };
        *n += 1;
        queue_delivery(t, &delivery, touched)?;
        record.deliveries.push(seq);
    }
    Ok(())
}

/// Writes `delivery` (pending) with its row in the schedule, and publishes it to its sink.
pub(super) fn queue_delivery(
    t: &mut Tables,
    delivery: &DeliveryRow,
    touched: &mut Arrivals,
) -> Result<(), StoreError> {
    let DeliveryState::Pending { due_ms } = delivery.state else {
        return Err(StoreError::Storage(format!(
            "delivery {} queued while not pending",
            delivery.seq
        )));
    };
    let (seq, priority) = (delivery.seq, delivery.priority);
    t.deliveries
        .insert(seq, records::encode(delivery)?.as_slice())
        .map_err(StoreError::storage)?;
    t.refer(delivery.payload, 1);
    t.pending
        .insert((delivery.sink.as_str(), priority.rank(), due_ms, seq), ())
        .map_err(StoreError::storage)?;
    touched.add(
        &delivery.sink,
        Queued {
            seq,
            due_ms,
            priority,
        },
    );
    Ok(())
}

/// Queues a dead letter for `record` if its plugins failed.
pub(super) fn plugin_letter(
    t: &mut Tables,
    record: &EventRow,
    at_ms: u64,
    next_seq: &mut u64,
) -> Result<(), StoreError> {
    if let EventStatus::DeadLettered { reason } = &record.status {
        let letter = DeadLetter {
            event_id: record.id.clone(),
            source: record.source.clone(),
            delivery: None,
            sink: None,
            reason: reason.clone(),
            at_ms,
        };
        t.dead_letters
            .insert(take_seq(next_seq), records::encode(&letter)?.as_slice())
            .map_err(StoreError::storage)?;
    }
    Ok(())
}

fn kv(t: &mut Tables, op: &KvOp) -> Result<bool, StoreError> {
    let table = &mut t.plugin_kv;
    match op {
        KvOp::Set {
            plugin,
            key,
            stored,
        } => {
            table
                .insert((plugin.as_str(), key.as_str()), stored.as_slice())
                .map_err(StoreError::storage)?;
            Ok(true)
        }
        KvOp::Delete { plugin, key } => Ok(table
            .remove((plugin.as_str(), key.as_str()))
            .map_err(StoreError::storage)?
            .is_some()),
        KvOp::CompareAndSwap {
            plugin,
            key,
            expected,
            stored,
            now_ms,
        } => {
            let current = table
                .get((plugin.as_str(), key.as_str()))
                .map_err(StoreError::storage)?
                .and_then(|v| super::kv::live(v.value(), *now_ms).map(<[u8]>::to_vec));
            if current != *expected {
                return Ok(false);
            }
            table
                .insert((plugin.as_str(), key.as_str()), stored.as_slice())
                .map_err(StoreError::storage)?;
            Ok(true)
        }
    }
}

fn update(t: &mut Tables, update: &DeliveryUpdate, next_seq: &mut u64) -> Result<(), StoreError> {
    let seq = match update {
        DeliveryUpdate::Delivered { seq, .. }
        | DeliveryUpdate::Retry { seq, .. }
        | DeliveryUpdate::Dead { seq, .. } => *seq,
    };
    let mut record: DeliveryRow = {
        let Some(bytes) = t.deliveries.get(seq).map_err(StoreError::storage)? else {
            // Updates for deliveries that no longer exist are harmless: nothing to record.
            return Ok(());
        };
        records::decode(bytes.value(), || format!("delivery {seq}"))?
    };
    let DeliveryState::Pending { due_ms: old_due } = record.state else {
        // Already settled by an earlier update: keep the first outcome.
        return Ok(());
    };
    t.pending
        .remove((record.sink.as_str(), record.priority.rank(), old_due, seq))
        .map_err(StoreError::storage)?;
    log_attempt(&record, update);
    match update {
        DeliveryUpdate::Delivered { at_ms, .. } => {
            record.attempts.push(records::Attempt {
                at_ms: *at_ms,
                error: None,
                status: None,
            });
            record.state = DeliveryState::Delivered { at_ms: *at_ms };
        }
        DeliveryUpdate::Retry {
            at_ms,
            error,
            status,
            due_ms,
            ..
        } => {
            record.attempts.push(records::Attempt {
                at_ms: *at_ms,
                error: Some(error.clone()),
                status: *status,
            });
            record.state = DeliveryState::Pending { due_ms: *due_ms };
            t.pending
                .insert(
                    (record.sink.as_str(), record.priority.rank(), *due_ms, seq),
                    (),
                )
                .map_err(StoreError::storage)?;
            // Not published: the worker that recorded this retry has it in its schedule.
        }
        DeliveryUpdate::Dead {
            at_ms,
            error,
            status,
            ..
        } => {
            record.attempts.push(records::Attempt {
                at_ms: *at_ms,
                error: Some(error.clone()),
                status: *status,
            });
            record.state = DeliveryState::Dead {
                reason: error.clone(),
            };
            let letter = DeadLetter {
                event_id: record.event_id.clone(),
                source: record.source.clone(),
                delivery: Some(seq),
                sink: Some(record.sink.clone()),
                reason: error.clone(),
                at_ms: *at_ms,
            };
            t.dead_letters
                .insert(take_seq(next_seq), records::encode(&letter)?.as_slice())
                .map_err(StoreError::storage)?;
        }
    }
    t.deliveries
        .insert(seq, records::encode(&record)?.as_slice())
        .map_err(StoreError::storage)?;
    Ok(())
}

/// One line per delivery attempt, inside the event's span (so it carries the event id), as
/// the attempt's outcome is recorded.
fn log_attempt(record: &DeliveryRow, update: &DeliveryUpdate) {
    let _span = crate::telemetry::event_log_span(&record.event_id, &record.source).entered();
    let attempt = record.attempts.len() + 1;
    let (sink, delivery) = (record.sink.as_str(), record.seq);
    match update {
        DeliveryUpdate::Delivered { .. } => {
            tracing::debug!(sink, delivery, attempt, "delivery confirmed");
        }
        DeliveryUpdate::Retry { error, due_ms, .. } => {
            tracing::debug!(sink, delivery, attempt, %error, due_ms, "delivery attempt failed; retry scheduled");
        }
        DeliveryUpdate::Dead { error, .. } => {
            tracing::warn!(sink, delivery, attempt, %error, "delivery dead-lettered");
        }
    }
}
