//! One sink's worker task: the I/O around [`Dispatch`].
//!
//! The worker owns the sink, the store handle and the attempts in flight (a `JoinSet`). Its
//! loop asks [`Dispatch`] for a round, which reads the store and starts attempts through
//! [`WorkerPort`], then sleeps until a unit finishes, the store wakes it with new work, the
//! round's [`Wait`](super::dispatch::Wait) runs out, or stop or pause changes. All decisions are
//! in [`Dispatch`]; this file only connects it to tasks, the store and the timer.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use tokio::sync::watch;
use tokio::task::{self, JoinSet};

use super::dispatch::{Attempted, Dispatch, Done, Port};
use crate::clock::Clock;
use crate::config::RetryConfig;
use crate::sink::Sink;
use crate::store::{DeliveryRecord, Store, StoreError};

/// What one sink's attempts need: the sink, its retry policy, the store and the clock.
pub(super) struct Worker {
    /// The sink's name (logs, metrics, its rows in the store).
    pub name: String,
    pub sink: Arc<dyn Sink>,
    /// `retry = { … }`: when a failed delivery goes again, and when it is dead-lettered.
    pub retry: RetryConfig,
    pub store: Store,
    /// Stamps the outcomes; the same clock as the worker's [`Dispatch`].
    pub clock: Clock,
}

impl Worker {
    /// Dispatches until `stopped`, then lets the units in flight finish.
    pub async fn run(
        self: Arc<Self>,
        mut dispatch: Dispatch,
        mut stopped: watch::Receiver<bool>,
        mut paused: watch::Receiver<bool>,
    ) {
        let wake = self.store.waker(&self.name);
        let mut running = Running::default();
        dispatch.restore_order(&mut self.port(&mut running));
        while !*stopped.borrow() {
            let is_paused = *paused.borrow();
            let wait = dispatch.dispatch_round(&mut self.port(&mut running), is_paused);
            debug_assert_eq!(dispatch.running(), running.set.len());
            tokio::select! {
                Some(done) = running.next(&self.name), if !running.set.is_empty() => {
                    dispatch.settle(done);
                }
                () = wake.notified() => {}
                () = tokio::time::sleep(wait.0) => {}
                _ = stopped.changed() => {}
                _ = paused.changed() => {}
            }
        }
        while running.set.join_next().await.is_some() {}
    }

    fn port<'a>(self: &'a Arc<Self>, running: &'a mut Running) -> WorkerPort<'a> {
        WorkerPort {
            worker: self,
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

/// [`Port`] onto the store (the sink's pending rows) and the worker's tasks.
struct WorkerPort<'a> {
    worker: &'a Arc<Worker>,
    running: &'a mut Running,
}

impl Port for WorkerPort<'_> {
    fn due(
        &mut self,
        now_ms: u64,
        limit: usize,
        except: &HashSet<u64>,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let w = self.worker;
        w.store
            .due_deliveries_except(&w.name, now_ms, limit, except)
    }

    fn next_due_ms(&mut self, except: &HashSet<u64>) -> Result<Option<u64>, StoreError> {
        self.worker
            .store
            .next_due_ms_except(&self.worker.name, except)
    }

    fn send(&mut self, unit: Vec<DeliveryRecord>) {
        let seqs = unit.iter().map(|d| d.seq).collect();
        let handle = self.running.set.spawn(self.worker.clone().attempt(unit));
        self.running.seqs.insert(handle.id(), seqs);
    }
}
