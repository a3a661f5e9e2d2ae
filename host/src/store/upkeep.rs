//! Store upkeep, started from one place ([`run`]): expired dedupe marks are purged, and
//! settled events are pruned once older than `[storage] retention`.
//!
//! Marks: every [`PURGE_INTERVAL`], expired marks go in batches of [`PURGE_BATCH`] per commit,
//! so the disk they use is bounded by the events of one dedupe `ttl`.
//!
//! Retention: only settled events go (every delivery delivered, or its dead letter replayed or purged);
//! dead letters and anything pending are kept however old, until replayed or purged, and are
//! stepped over: a pass walks the old events oldest first in bounded steps, and a pass that
//! reaches its budget leaves a cursor the next one resumes from, so no number of old open
//! events can stop the pruning of closed ones behind them. Each step deletes a bounded number
//! per commit so it never holds the store's writer for long.

use std::time::Duration;

use tokio::sync::watch;

use crate::clock::now_ms;
use crate::store::dlq::PruneCursor;
use crate::store::{Store, StoreError};

/// How often the purge looks for expired dedupe marks.
pub const PURGE_INTERVAL: Duration = Duration::from_secs(60);
/// Marks removed per commit by the purge, so it never holds the writer for long.
pub const PURGE_BATCH: usize = 1000;
/// Pause between purge batches, letting accepts in between.
const PURGE_PAUSE: Duration = Duration::from_millis(20);

/// Events deleted per commit.
const PRUNE_BATCH: usize = 1000;
/// Events looked at per step (one read transaction): open ones cost a read each, so a step
/// over a long run of them stays short.
const PRUNE_SCAN: usize = 8 * PRUNE_BATCH;
/// Events looked at per pass at most; a pass that stops here leaves a cursor and the next
/// resumes from it. Bounds one pass's work however many old events are kept open: a debug
/// build looks at 8,100 open events in 0.13 s (the unit test below), so a full pass is a few
/// seconds there and well under that in release.
const MAX_SCAN_PER_PASS: usize = 200_000;
/// The longest pause between passes.
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Runs the store's upkeep until `stopped`: the mark purge always, retention when `retention`
/// is set (`[storage] retention`, 0 = keep everything).
pub async fn run(store: Store, retention: Option<Duration>, stopped: watch::Receiver<bool>) {
    let prune = async {
        if let Some(keep) = retention {
            prune(store.clone(), keep, stopped.clone()).await;
        }
    };
    tokio::join!(purge_marks(store.clone(), stopped.clone()), prune);
}

/// Removes expired dedupe marks in bounded batches, every [`PURGE_INTERVAL`], until `stopped`.
async fn purge_marks(store: Store, mut stopped: watch::Receiver<bool>) {
    let mut tick = tokio::time::interval(PURGE_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = stopped.changed() => return,
        }
        let mut removed = 0;
        loop {
            match store.purge_expired_marks(now_ms(), PURGE_BATCH).await {
                Ok(n) => {
                    removed += n;
                    if n < PURGE_BATCH {
                        break;
                    }
                    tokio::time::sleep(PURGE_PAUSE).await;
                }
                Err(StoreError::Closed) => return,
                Err(e) => {
                    tracing::warn!(error = %e, "dedupe purge failed; trying again later");
                    break;
                }
            }
        }
        if removed > 0 {
            tracing::debug!(removed, "expired dedupe marks purged");
        }
    }
}

/// Prunes every `min(keep / 2, 60 s)` until `stopped`.
async fn prune(store: Store, keep: Duration, mut stopped: watch::Receiver<bool>) {
    let interval = (keep / 2).clamp(Duration::from_secs(1), MAX_INTERVAL);
    let mut cursor = None;
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
        let before_ms = now_ms().saturating_sub(keep.as_millis() as u64);
        let total = pass(&store, before_ms, &mut cursor, MAX_SCAN_PER_PASS).await;
        if total > 0 {
            tracing::info!(pruned = total, "retention: settled events pruned");
        }
    }
}

/// One pass: steps from `cursor` until every event before `before_ms` was looked at (the
/// cursor is then cleared: the next pass starts again from the oldest, whose open events may
/// have closed) or `budget` events were (the cursor is where the next pass resumes). Returns
/// how many events were pruned.
pub async fn pass(
    store: &Store,
    before_ms: u64,
    cursor: &mut Option<PruneCursor>,
    budget: usize,
) -> usize {
    let (mut pruned, mut examined) = (0, 0);
    loop {
        match store
            .prune_settled(before_ms, cursor.as_ref(), PRUNE_BATCH, PRUNE_SCAN)
            .await
        {
            Ok(step) => {
                pruned += step.pruned;
                examined += step.examined;
                *cursor = step.next;
            }
            Err(e) => {
                tracing::error!(error = %e, "retention: cannot prune settled events");
                return pruned;
            }
        }
        if cursor.is_none() || examined >= budget {
            return pruned;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::{DeliveryUpdate, NewEvent};

    fn event(id: &str, received_at_ms: u64) -> NewEvent {
        NewEvent::for_test(id, "s", received_at_ms, &["a"])
    }

    async fn accept_all(store: &Store, events: Vec<NewEvent>) {
        for chunk in events.chunks(500) {
            let commits = chunk.iter().map(|e| store.accept(e.clone()));
            for outcome in futures_util::future::join_all(commits).await {
                outcome.unwrap();
            }
        }
    }

    async fn deliver(store: &Store, id: &str) {
        let (record, _) = store.event("s", id).await.unwrap().unwrap();
        let updates = record
            .deliveries
            .iter()
            .map(|&seq| DeliveryUpdate::Delivered { seq, at_ms: 1 })
            .collect();
        store.update_deliveries(updates).await.unwrap();
    }

    /// More old open events than one step looks at (a paused sink's backlog), then closed
    /// ones: the closed ones are pruned anyway, across passes when the budget is short.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn old_open_events_do_not_stop_pruning_the_closed_ones_behind_them() {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open_with(dir.path(), false).unwrap();
        let open = PRUNE_SCAN + 100;
        let old = (0..open).map(|i| event(&format!("open-{i}"), 1_000 + i as u64));
        accept_all(&store, old.collect()).await;
        let closed: Vec<String> = (0..20).map(|i| format!("closed-{i}")).collect();
        let newer = closed.iter().enumerate();
        accept_all(
            &store,
            newer.map(|(i, id)| event(id, 100_000 + i as u64)).collect(),
        )
        .await;
        for id in &closed {
            deliver(&store, id).await;
        }
        let before_ms = 1_000_000;

        // A budget of one step's scan: the first pass sees only open events and leaves a
        // cursor; the next resumes there and reaches the closed ones.
        let mut cursor = None;
        assert_eq!(pass(&store, before_ms, &mut cursor, PRUNE_SCAN).await, 0);
        assert!(cursor.is_some(), "the pass stopped at its budget");
        assert_eq!(pass(&store, before_ms, &mut cursor, PRUNE_SCAN).await, 20);
        assert_eq!(cursor, None, "the range was walked to its end");
        for id in &closed {
            assert!(store.event("s", id).await.unwrap().is_none());
        }
        assert!(store.event("s", "open-0").await.unwrap().is_some());
        assert!(
            store
                .event("s", &format!("open-{}", open - 1))
                .await
                .unwrap()
                .is_some()
        );

        // An open event that closes later goes on a later pass (the cursor wrapped).
        deliver(&store, "open-7").await;
        let started = tokio::time::Instant::now();
        assert_eq!(
            pass(&store, before_ms, &mut cursor, MAX_SCAN_PER_PASS).await,
            1
        );
        eprintln!(
            "a pass over {open} open events took {:?}",
            started.elapsed()
        );
        assert!(store.event("s", "open-7").await.unwrap().is_none());
        assert_eq!(store.pending_count("a").await.unwrap(), open as u64 - 1);
        // Nothing newer than the cutoff goes.
        deliver(&store, "open-8").await;
        assert_eq!(pass(&store, 1_000, &mut None, MAX_SCAN_PER_PASS).await, 0);
    }
}
