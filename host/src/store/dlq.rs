//! The dead-letter queue and retention: reading dead letters, resolving them (replay with the
//! deliveries the current plugins route, or purge), and pruning settled events.
//!
//! A dead letter leaves the queue only by being replayed or purged, and in the same commit its
//! delivery becomes `Resolved` (or, for a plugin failure, its event gets its new status), so
//! the queue and the deliveries never disagree. Retention prunes an event only when nothing
//! about it is open: every delivery delivered or resolved, no dead letter left.

use std::collections::BTreeSet;

use redb::{ReadableDatabase, ReadableTable};

use super::records::{
    self, DeadLetter, DeliveryRecord, DeliveryState, EventRecord, EventStatus, NewDelivery,
};
use super::writer::{self, Op, Reply, Tables};
use super::{DEAD_LETTERS, DELIVERIES, Store, StoreError};

/// Which dead letters an operation applies to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LetterFilter {
    All,
    Seq(u64),
    Source(String),
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

/// A replay of one dead letter: the event's new status and routed deliveries, computed by
/// running the current plugins on the stored request.
#[derive(Debug, Clone)]
pub struct Replay {
    pub letter: u64,
    pub status: EventStatus,
    pub deliveries: Vec<NewDelivery>,
}

pub(super) enum DlqOp {
    Replay(Vec<Replay>),
    Purge(Vec<u64>),
    Prune { before_ms: u64, limit: usize },
}

impl Store {
    /// Dead letters matching `filter`, newest first, at most `limit`.
    pub fn dead_letters_matching(
        &self,
        filter: &LetterFilter,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let txn = self.inner.db.begin_read().map_err(StoreError::storage)?;
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
        let txn = self.inner.db.begin_read().map_err(StoreError::storage)?;
        let table = txn.open_table(DELIVERIES).map_err(StoreError::storage)?;
        table
            .get(seq)
            .map_err(StoreError::storage)?
            .map(|v| records::decode(v.value(), || format!("delivery {seq}")))
            .transpose()
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

    /// Deletes up to `limit` events received before `before_ms` whose deliveries are all
    /// settled and that have no dead letter, with their deliveries. Returns how many.
    pub async fn prune_settled(&self, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
        self.dlq(DlqOp::Prune { before_ms, limit }).await
    }

    async fn dlq(&self, op: DlqOp) -> Result<usize, StoreError> {
        match self.submit(Op::Dlq(op)).await? {
            Reply::Count(n) => Ok(n),
            _ => Err(StoreError::Storage(
                "unexpected writer reply to a dead-letter operation".into(),
            )),
        }
    }
}

/// Inside the writer's transaction.
pub(super) fn apply(
    t: &mut Tables,
    op: &DlqOp,
    next_seq: &mut u64,
    touched: &mut BTreeSet<String>,
) -> Result<usize, StoreError> {
    match op {
        DlqOp::Replay(replays) => {
            let mut n = 0;
            for r in replays {
                let Some((letter, mut event)) = take_letter(t, r.letter)? else {
                    continue;
                };
                if let Some(seq) = letter.delivery {
                    resolve_delivery(t, seq, format!("replayed (dead letter {})", r.letter))?;
                }
                event.status = r.status.clone();
                writer::insert_deliveries(t, &mut event, &r.deliveries, next_seq, touched)?;
                writer::plugin_letter(t, &event, crate::server::now_ms(), next_seq)?;
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
        DlqOp::Prune { before_ms, limit } => prune(t, *before_ms, *limit),
    }
}

/// Removes letter `seq` from the queue; `None` if it is gone (replayed or purged meanwhile)
/// or its event is.
fn take_letter(t: &mut Tables, seq: u64) -> Result<Option<(DeadLetter, EventRecord)>, StoreError> {
    let Some(bytes) = t.dead_letters.remove(seq).map_err(StoreError::storage)? else {
        return Ok(None);
    };
    let letter: DeadLetter = records::decode(bytes.value(), || format!("dead letter {seq}"))?;
    drop(bytes);
    let event = t
        .events
        .get(letter.event_id.as_str())
        .map_err(StoreError::storage)?
        .map(|v| records::decode(v.value(), || format!("event {}", letter.event_id)))
        .transpose()?;
    Ok(event.map(|e| (letter, e)))
}

fn put_event(t: &mut Tables, event: &EventRecord) -> Result<(), StoreError> {
    t.events
        .insert(event.id.as_str(), records::encode(event)?.as_slice())
        .map_err(StoreError::storage)?;
    Ok(())
}

fn resolve_delivery(t: &mut Tables, seq: u64, note: String) -> Result<(), StoreError> {
    let table = &mut t.deliveries;
    let record = table
        .get(seq)
        .map_err(StoreError::storage)?
        .map(|v| records::decode::<DeliveryRecord>(v.value(), || format!("delivery {seq}")))
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

fn prune(t: &mut Tables, before_ms: u64, limit: usize) -> Result<usize, StoreError> {
    let (times, events, deliveries) = (&mut t.event_times, &mut t.events, &mut t.deliveries);
    let candidates: Vec<(u64, String)> = times
        .range((0u64, "")..(before_ms, ""))
        .map_err(StoreError::storage)?
        // Bounded: events kept open (dead letters) must not make one prune read everything.
        .take(limit.saturating_mul(8))
        .map(|row| {
            row.map(|(k, _)| (k.value().0, k.value().1.to_string()))
                .map_err(StoreError::storage)
        })
        .collect::<Result<_, _>>()?;
    let mut pruned = 0;
    for (at, id) in candidates {
        if pruned >= limit {
            break;
        }
        let event: Option<EventRecord> = events
            .get(id.as_str())
            .map_err(StoreError::storage)?
            .map(|v| records::decode(v.value(), || format!("event {id}")))
            .transpose()?;
        let Some(event) = event else {
            times
                .remove((at, id.as_str()))
                .map_err(StoreError::storage)?;
            continue;
        };
        if matches!(event.status, EventStatus::DeadLettered { .. }) {
            continue;
        }
        let mut settled = true;
        for seq in &event.deliveries {
            if let Some(v) = deliveries.get(*seq).map_err(StoreError::storage)? {
                let d: DeliveryRecord = records::decode(v.value(), || format!("delivery {seq}"))?;
                if !matches!(
                    d.state,
                    DeliveryState::Delivered { .. } | DeliveryState::Resolved { .. }
                ) {
                    settled = false;
                    break;
                }
            }
        }
        if !settled {
            continue;
        }
        for seq in &event.deliveries {
            deliveries.remove(*seq).map_err(StoreError::storage)?;
        }
        events.remove(id.as_str()).map_err(StoreError::storage)?;
        times
            .remove((at, id.as_str()))
            .map_err(StoreError::storage)?;
        pruned += 1;
    }
    Ok(pruned)
}
