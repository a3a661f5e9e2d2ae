//! One sink's worker task: the I/O around [`Dispatch`].
//!
//! The worker owns the sink, the store handle and the attempts in flight (a `JoinSet`). At
//! start it registers the sink's feed with the store, then reads the sink's pending rows into
//! the schedule (the feed catches whatever commits meanwhile). Its loop hands the feed's new
//! deliveries to [`Dispatch`], asks it for a round, which starts attempts through
//! [`WorkerPort`], then sleeps until a unit finishes, the feed has new work, the round's
//! [`Wait`](super::dispatch::Wait) runs out, or stop or pause changes. All decisions are in
//! [`Dispatch`]; this file only connects it to tasks, the store and the timer.

use std::collections::HashMap;
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::{self, JoinSet};

use super::attempt::Policy;
use super::dispatch::{Attempted, Dispatch, Done, Port, STORE_ERROR_PAUSE, Wait};
use crate::clock::Clock;
use crate::sink::Sink;
use crate::store::{DeliveryRecord, Embedded, Store, StoreError};

/// What one sink's attempts need: the sink, its retry policy, the store and the clock.
pub(super) struct Worker {
    /// The sink's name (logs, metrics, its rows in the store).
    pub name: String,
    pub sink: Arc<dyn Sink>,
    /// `retry = { … }`: when a failed delivery goes again, and when it is dead-lettered.
    pub policy: Policy,
    pub store: Store,
    /// Stamps the outcomes; the same clock as the worker's [`Dispatch`].
    pub clock: Clock,
    /// Set when the workers stop: an attempt holding results it cannot record gives up then
    /// (its deliveries stay pending and go again after the restart).
    pub stopped: watch::Receiver<bool>,
}

impl Worker {
    /// Dispatches until `stopped`, then lets the units in flight finish.
    pub async fn run(
        self: Arc<Self>,
        store: Embedded,
        mut dispatch: Dispatch,
        mut stopped: watch::Receiver<bool>,
        mut paused: watch::Receiver<bool>,
    ) {
        let feed = store.feed(&self.name);
        let mut running = Running::default();
        let mut restored = false;
        while !*stopped.borrow() {
            restored = restored || self.restore(&store, &mut dispatch);
            let wait = if restored {
                let is_paused = *paused.borrow();
                let mut port = self.port(&store, &mut running);
                dispatch.arrive(&mut port, feed.drain());
                dispatch.dispatch_round(&mut port, is_paused)
            } else {
                // Nothing goes before every pending row was read: a partial schedule could
                // send a newer delivery of a key ahead of an older one not read yet.
                Wait(STORE_ERROR_PAUSE)
            };
            debug_assert_eq!(dispatch.running(), running.set.len());
            tokio::select! {
                Some(done) = running.next(&self.name), if !running.set.is_empty() => {
                    dispatch.settle(done);
                }
                () = feed.notified(), if restored => {}
                () = tokio::time::sleep(wait.0) => {}
                _ = stopped.changed() => {}
                _ = paused.changed() => {}
            }
        }
        while running.set.join_next().await.is_some() {}
    }

    /// Reads the sink's pending deliveries into the schedule; if the read fails part way, the
    /// schedule is emptied to be read again whole. False if the store could not be read.
    fn restore(&self, store: &Embedded, dispatch: &mut Dispatch) -> bool {
        let with_bodies = dispatch.needs_bodies();
        let read = store.scan_pending(&self.name, with_bodies, |q, body| dispatch.add(q, body));
        match read {
            Ok(n) => {
                tracing::debug!(sink = %self.name, pending = n, "schedule restored");
                true
            }
            Err(e) => {
                tracing::error!(sink = %self.name, error = %e,
                    "cannot read the pending deliveries; trying again");
                dispatch.forget_pending();
                false
            }
        }
    }

    fn port<'a>(
        self: &'a Arc<Self>,
        store: &'a Embedded,
        running: &'a mut Running,
    ) -> WorkerPort<'a> {
        WorkerPort {
            worker: self,
            store,
            running,
        }
    }
}

/// The attempts in flight, and each task's seqs (to clean up after a panic).
#[derive(Default)]
struct Running {
    set: JoinSet<Attempted>,
    seqs: HashMap<task::Id, Vec<u64>>,
}

impl Running {
    /// The next unit to come back (`None` when none is in flight).
    async fn next(&mut self, sink: &str) -> Option<Done> {
        Some(match self.set.join_next_with_id().await? {
            Ok((id, attempted)) => {
                self.seqs.remove(&id);
                Done::Attempted(attempted)
            }
            Err(e) => {
                tracing::error!(sink = %sink, "a delivery attempt panicked");
                Done::Panicked(self.seqs.remove(&e.id()).unwrap_or_default())
            }
        })
    }
}

/// [`Port`] onto the store (the sink's records) and the worker's tasks.
struct WorkerPort<'a> {
    worker: &'a Arc<Worker>,
    store: &'a Embedded,
    running: &'a mut Running,
}

impl Port for WorkerPort<'_> {
    fn load(&mut self, seqs: &[u64]) -> Result<Vec<DeliveryRecord>, StoreError> {
        self.store.pending_records(seqs)
    }

    fn writable(&mut self) -> bool {
        self.store.write_error().is_none()
    }

    fn send(&mut self, unit: Vec<DeliveryRecord>) {
        let seqs = unit.iter().map(|d| d.seq).collect();
        let handle = self.running.set.spawn(self.worker.clone().attempt(unit));
        self.running.seqs.insert(handle.id(), seqs);
    }
}
