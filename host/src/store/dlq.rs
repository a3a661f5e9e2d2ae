//! The dead-letter queue and retention: reading dead letters, resolving them (replay with the
//! deliveries the current plugins route, or purge), and pruning settled events.
//!
//! A dead letter leaves the queue only by being replayed or purged, and in the same commit its
//! delivery becomes `Resolved` (or, for a plugin failure, its event gets its new status), so
//! the queue and the deliveries never disagree. Retention prunes an event only when nothing
//! about it is open: every delivery delivered or resolved, no dead letter left.
//!
//! Pruning walks `event_times` oldest first in bounded steps that resume where the previous
//! one stopped ([`PruneCursor`]), so old events kept open (dead letters nobody purges, a paused
//! sink's backlog) are stepped over instead of hiding every closed event behind them. A step
//! finds candidates in a read transaction (which never holds up the writer) and the writer
//! re-checks each before deleting it.

use redb::ReadableTable;

use super::records::{
    self, DeadLetter, DeliveryRecord, DeliveryRow, DeliveryState, EventRow, EventStatus,
    NewDelivery,
};
use super::writer::{self, Job, Tables};
use super::{DEAD_LETTERS, DELIVERIES, EVENT_TIMES, EVENTS, Embedded, StoreError};

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LetterFilter {
    /// Every dead letter.
    All,
    /// The one with this number.
    Seq(u64),
    /// Those of this source.
    Source(String),
    /// Those of deliveries to this sink (never a plugin failure's).
    Sink(String),
}

impl LetterFilter {
    fn matches(&self, seq: u64, letter: &DeadLetter) -> bool {
        match self {
            LetterFilter::All => true,
            LetterFilter::Seq(s) => *s == seq,
            LetterFilter::Source(s) => letter.source == *s,
            LetterFilter::Sink(s) => letter.sink.as_deref() == Some(s.as_str()),
        }
    }
}

/// A replay of one dead letter.
#[derive(Debug, Clone)]
pub enum Replay {
    /// A plugin failure's letter: the event's new status and routed deliveries, computed by
    /// running the current plugins on the stored request.
    Rerouted {
        /// The dead letter's number.
        letter: u64,
        /// The event's status after this run of the plugins.
        status: EventStatus,
        /// The deliveries they routed, queued when the replay commits.
        deliveries: Vec<NewDelivery>,
    },
    /// A delivery's letter: exactly the dead delivery is queued again (same id, headers and
    /// body), due now, with a fresh retry budget. Its delivered siblings are not touched.
    Resend {
        /// The dead letter's number.
        letter: u64,
    },
}

pub(super) enum DlqOp {
    Replay(Vec<Replay>),
    /// Dead-letter up to `limit` pending deliveries of a sink that is no longer configured.
    Orphan {
        sink: String,
        reason: String,
        limit: usize,
    },
    Purge(Vec<u64>),
    /// `event_times` keys whose events looked settled (re-checked before deleting).
    Prune(Vec<PruneCursor>),
}

/// An `event_times` key (received ms, event id): where a prune step starts.
pub type PruneCursor = (u64, String);

/// What one prune step did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PruneStep {
    /// Events deleted.
    pub pruned: usize,
    /// Events looked at (open ones included).
    pub examined: usize,
    /// Where the next step resumes; `None` once every event received before the cutoff was
    /// looked at.
    pub next: Option<PruneCursor>,
}

impl Embedded {
    /// Dead letters matching `filter`, newest first, at most `limit`.
    pub fn dead_letters_matching(
        &self,
        filter: &LetterFilter,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DEAD_LETTERS).map_err(StoreError::storage)?;
        if let LetterFilter::Seq(seq) = filter {
            return Ok(match table.get(*seq).map_err(StoreError::storage)? {
                Some(v) => vec![(
                    *seq,
                    records::decode(v.value(), || format!("dead letter {seq}"))?,
                )],
                None => Vec::new(),
            });
        }
        let mut out = Vec::new();
        for row in table.iter().map_err(StoreError::storage)?.rev() {
            if out.len() >= limit {
                break;
            }
            let (k, v) = row.map_err(StoreError::storage)?;
            let seq = k.value();
            let letter: DeadLetter = records::decode(v.value(), || format!("dead letter {seq}"))?;
            if filter.matches(seq, &letter) {
                out.push((seq, letter));
            }
        }
        Ok(out)
    }

    /// One delivery by its seq.
    pub fn delivery(&self, seq: u64) -> Result<Option<DeliveryRecord>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
        table
            .get(seq)
            .map_err(StoreError::storage)?
            .map(|v| super::delivery_record(&self.inner.log, v.value(), seq))
            .transpose()
    }

    /// Dead-letters every pending delivery of `sink` (one that is no longer in the config,
    /// whose deliveries nothing would ever send) with `reason`, so they are listed, purgeable
    /// and replayable once the sink is back. Returns how many; commits in steps of 10,000.
    pub async fn dead_letter_sink(&self, sink: &str, reason: &str) -> Result<usize, StoreError> {
        const STEP: usize = 10_000;
        let mut total = 0;
        loop {
            let n = self
                .dlq(DlqOp::Orphan {
                    sink: sink.to_string(),
                    reason: reason.to_string(),
                    limit: STEP,
                })
                .await?;
            total += n;
            if n < STEP {
                return Ok(total);
            }
        }
    }

    /// Commits replays: each letter still queued is removed, its delivery resolved, and the
    /// new deliveries queued with the event's id. Returns how many letters were replayed.
    pub async fn replay(&self, replays: Vec<Replay>) -> Result<usize, StoreError> {
        self.dlq(DlqOp::Replay(replays)).await
    }

    /// Removes dead letters without delivering them. Returns how many were removed.
    pub async fn purge_letters(&self, letters: Vec<u64>) -> Result<usize, StoreError> {
        self.dlq(DlqOp::Purge(letters)).await
    }

    /// One retention step: looks at the events received before `before_ms`, oldest first from
    /// `from` (the oldest when `None`), at most `scan` of them, and deletes up to `limit` that
    /// are settled (every delivery delivered or resolved, no dead letter) with their deliveries.
    /// Open events are stepped over, never waited for.
    pub async fn prune_settled(
        &self,
        before_ms: u64,
        from: Option<&PruneCursor>,
        limit: usize,
        scan: usize,
    ) -> Result<PruneStep, StoreError> {
        let (candidates, examined, next) = self.prune_candidates(before_ms, from, limit, scan)?;
        let pruned = if candidates.is_empty() {
            0
        } else {
            self.dlq(DlqOp::Prune(candidates)).await?
        };
        Ok(PruneStep {
            pruned,
            examined,
            next,
        })
    }

    /// The read half of [`Store::prune_settled`]: the keys of settled (or orphaned) events, how
    /// many events were looked at, and the key to resume from.
    fn prune_candidates(
        &self,
        before_ms: u64,
        from: Option<&PruneCursor>,
        limit: usize,
        scan: usize,
    ) -> Result<(Vec<PruneCursor>, usize, Option<PruneCursor>), StoreError> {
        let txn = self.inner.db.begin_read()?;
        let times = txn.open_table(EVENT_TIMES).map_err(StoreError::storage)?;
        let events = txn.open_table(EVENTS).map_err(StoreError::storage)?;
        let deliveries = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
        let start = from.map_or((0, ""), |(at, id)| (*at, id.as_str()));
        let mut candidates = Vec::new();
        let mut examined = 0;
        for row in times
            .range(start..(before_ms, ""))
            .map_err(StoreError::storage)?
        {
            let (key, _) = row.map_err(StoreError::storage)?;
            let (at, id) = key.value();
            if examined >= scan.max(1) || candidates.len() >= limit.max(1) {
                return Ok((candidates, examined, Some((at, id.to_string()))));
            }
            examined += 1;
            let closed = match load_event(&events, id)? {
                None => true,
                Some(event) => settled(&event, &deliveries)?,
            };
            if closed {
                candidates.push((at, id.to_string()));
            }
        }
        Ok((candidates, examined, None))
    }

    async fn dlq(&self, op: DlqOp) -> Result<usize, StoreError> {
        self.ask(|resp| Job::Dlq { op, resp }).await
    }
}

/// Inside the writer's transaction.
pub(super) fn apply(
    t: &mut Tables,
    op: &DlqOp,
    next_seq: &mut u64,
    touched: &mut super::Arrivals,
) -> Result<usize, StoreError> {
    match op {
        DlqOp::Replay(replays) => {
            let now_ms = crate::clock::now_ms();
            let mut n = 0;
            for r in replays {
                let (Replay::Rerouted { letter: no, .. } | Replay::Resend { letter: no }) = r;
                let Some((letter, mut event)) = take_letter(t, *no)? else {
                    continue;
                };
                match (r, letter.delivery) {
                    (Replay::Resend { .. }, Some(seq)) => {
                        if !resend(t, &mut event, (*no, seq), now_ms, next_seq, touched)? {
                            // Its delivery is gone or no longer dead: the letter was stale.
                            continue;
                        }
                    }
                    (
                        Replay::Rerouted {
                            status, deliveries, ..
                        },
                        delivery,
                    ) => {
                        if let Some(seq) = delivery {
                            resolve_delivery(t, seq, format!("replayed (dead letter {no})"))?;
                        }
                        event.status = status.clone();
                        if !deliveries.is_empty() {
                            let placed = writer::log_deliveries(t, deliveries)?;
                            writer::insert_deliveries(
                                t, &mut event, deliveries, placed, now_ms, next_seq, touched,
                            )?;
                        }
                        writer::plugin_letter(t, &event, now_ms, next_seq)?;
                    }
                    (Replay::Resend { .. }, None) => {
                        // A plugin failure's letter is replayed by running the plugins, not
                        // resent: it stays queued (an error here would fail the whole commit).
                        t.dead_letters
                            .insert(*no, records::encode(&letter)?.as_slice())
                            .map_err(StoreError::storage)?;
                        continue;
                    }
                }
                put_event(t, &event)?;
                n += 1;
            }
            Ok(n)
        }
        DlqOp::Purge(letters) => {
            let mut n = 0;
            for seq in letters {
                let Some((letter, mut event)) = take_letter(t, *seq)? else {
                    continue;
                };
                match letter.delivery {
                    Some(d) => resolve_delivery(t, d, format!("purged (dead letter {seq})"))?,
                    None => {
                        event.status = EventStatus::Dropped {
                            reason: format!("dead letter {seq} purged: {}", letter.reason),
                        };
                        put_event(t, &event)?;
                    }
                }
                n += 1;
            }
            Ok(n)
        }
        DlqOp::Prune(candidates) => prune(t, candidates),
        DlqOp::Orphan {
            sink,
            reason,
            limit,
        } => orphan(t, sink, reason, *limit, next_seq),
    }
}

/// Moves up to `limit` pending deliveries of `sink` to the dead-letter queue.
fn orphan(
    t: &mut Tables,
    sink: &str,
    reason: &str,
    limit: usize,
    next_seq: &mut u64,
) -> Result<usize, StoreError> {
    let rows: Vec<(u8, u64, u64)> = t
        .pending
        .range((sink, 0u8, 0u64, 0u64)..=(sink, u8::MAX, u64::MAX, u64::MAX))
        .map_err(StoreError::storage)?
        .take(limit)
        .map(|row| {
            row.map(|(k, _)| {
                let (_, rank, due, seq) = k.value();
                (rank, due, seq)
            })
        })
        .collect::<Result<_, _>>()
        .map_err(StoreError::storage)?;
    let at_ms = crate::clock::now_ms();
    for &(rank, due, seq) in &rows {
        t.pending
            .remove((sink, rank, due, seq))
            .map_err(StoreError::storage)?;
        let Some(bytes) = t.deliveries.get(seq).map_err(StoreError::storage)? else {
            continue;
        };
        let mut record: DeliveryRow = records::decode(bytes.value(), || format!("delivery {seq}"))?;
        drop(bytes);
        record.state = DeliveryState::Dead {
            reason: reason.to_string(),
        };
        t.deliveries
            .insert(seq, records::encode(&record)?.as_slice())
            .map_err(StoreError::storage)?;
        let letter = DeadLetter {
            event_id: record.event_id.clone(),
            source: record.source.clone(),
            delivery: Some(seq),
            sink: Some(sink.to_string()),
            reason: reason.to_string(),
            at_ms,
        };
        t.dead_letters
            .insert(
                writer::take_seq(next_seq),
                records::encode(&letter)?.as_slice(),
            )
            .map_err(StoreError::storage)?;
    }
    Ok(rows.len())
}

/// Removes letter `seq` from the queue; `None` if it is gone (replayed or purged meanwhile)
/// or its event is.
fn take_letter(t: &mut Tables, seq: u64) -> Result<Option<(DeadLetter, EventRow)>, StoreError> {
    let Some(bytes) = t.dead_letters.remove(seq).map_err(StoreError::storage)? else {
        return Ok(None);
    };
    let letter: DeadLetter = records::decode(bytes.value(), || format!("dead letter {seq}"))?;
    drop(bytes);
    let key = super::event_key(&letter.source, &letter.event_id);
    let event = load_event(&t.events, &key)?;
    Ok(event.map(|e| (letter, e)))
}

/// Queues dead delivery `seq` (of letter `no`) again as a new delivery of `event`: same id,
/// headers, body and priority, no attempts, due and queued at `now_ms`. The dead one is
/// resolved, pointing at its successor. False if it is gone or not dead (nothing queued).
fn resend(
    t: &mut Tables,
    event: &mut EventRow,
    (no, seq): (u64, u64),
    now_ms: u64,
    next_seq: &mut u64,
    touched: &mut super::Arrivals,
) -> Result<bool, StoreError> {
    let Some(bytes) = t.deliveries.get(seq).map_err(StoreError::storage)? else {
        return Ok(false);
    };
    let dead: DeliveryRow = records::decode(bytes.value(), || format!("delivery {seq}"))?;
    drop(bytes);
    if !matches!(dead.state, DeliveryState::Dead { .. }) {
        return Ok(false);
    }
    let new_seq = writer::take_seq(next_seq);
    let again = DeliveryRow {
        seq: new_seq,
        attempts: Vec::new(),
        state: DeliveryState::Pending { due_ms: now_ms },
        queued_at_ms: now_ms,
        ..dead
    };
    writer::queue_delivery(t, &again, touched)?;
    event.deliveries.push(new_seq);
    resolve_delivery(
        t,
        seq,
        format!("replayed (dead letter {no}) as delivery {new_seq}"),
    )?;
    Ok(true)
}

fn put_event(t: &mut Tables, event: &EventRow) -> Result<(), StoreError> {
    let key = super::event_key(&event.source, &event.id);
    t.events
        .insert(key.as_str(), records::encode(event)?.as_slice())
        .map_err(StoreError::storage)?;
    Ok(())
}

fn resolve_delivery(t: &mut Tables, seq: u64, note: String) -> Result<(), StoreError> {
    let table = &mut t.deliveries;
    let record = table
        .get(seq)
        .map_err(StoreError::storage)?
        .map(|v| records::decode::<DeliveryRow>(v.value(), || format!("delivery {seq}")))
        .transpose()?;
    if let Some(mut record) = record
        && matches!(record.state, DeliveryState::Dead { .. })
    {
        record.state = DeliveryState::Resolved { note };
        table
            .insert(seq, records::encode(&record)?.as_slice())
            .map_err(StoreError::storage)?;
    }
    Ok(())
}

/// An event's row by its key ([`super::event_key`]), decoded.
fn load_event(
    events: &impl ReadableTable<&'static str, &'static [u8]>,
    id: &str,
) -> Result<Option<EventRow>, StoreError> {
    events
        .get(id)
        .map_err(StoreError::storage)?
        .map(|v| records::decode(v.value(), || format!("event {id}")))
        .transpose()
}

/// Whether nothing about `event` is open: no plugin dead letter, every delivery delivered or
/// resolved.
fn settled(
    event: &EventRow,
    deliveries: &impl ReadableTable<u64, &'static [u8]>,
) -> Result<bool, StoreError> {
    if matches!(event.status, EventStatus::DeadLettered { .. }) {
        return Ok(false);
    }
    for seq in &event.deliveries {
        if let Some(v) = deliveries.get(*seq).map_err(StoreError::storage)? {
            let d: DeliveryRow = records::decode(v.value(), || format!("delivery {seq}"))?;
            if !matches!(
                d.state,
                DeliveryState::Delivered { .. } | DeliveryState::Resolved { .. }
            ) {
                return Ok(false);
            }
        }
    }
    Ok(true)
}

/// Deletes the candidates that are still settled (a replay or a new attempt may have changed
/// one since it was read), with their deliveries; drops index rows whose event is gone.
fn prune(t: &mut Tables, candidates: &[PruneCursor]) -> Result<usize, StoreError> {
    let mut pruned = 0;
    for (at, id) in candidates {
        let key = (*at, id.as_str());
        let Some(event) = load_event(&t.events, id)? else {
            t.event_times.remove(key).map_err(StoreError::storage)?;
            continue;
        };
        if !settled(&event, &t.deliveries)? {
            continue;
        }
        for seq in &event.deliveries {
            let removed = t
                .deliveries
                .remove(*seq)
                .map_err(StoreError::storage)?
                .map(|bytes| {
                    records::decode::<DeliveryRow>(bytes.value(), || format!("delivery {seq}"))
                })
                .transpose()?;
            if let Some(d) = removed {
                t.refer(d.payload, -1);
            }
        }
        t.events.remove(id.as_str()).map_err(StoreError::storage)?;
        t.refer(event.payload, -1);
        t.event_times.remove(key).map_err(StoreError::storage)?;
        pruned += 1;
    }
    Ok(pruned)
}
