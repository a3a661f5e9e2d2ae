//! Delivery: move pending deliveries from the store to their sinks, with retries.
//!
//! [`Workers`] runs one worker task per sink. Each keeps its sink's pending deliveries in an
//! in-memory schedule (seq, due time, priority, order key: no bodies), fed by the store as it
//! commits and rebuilt from the store's pending rows at start. It takes what is due (high
//! priority first, then by due time; of each order key only the oldest pending delivery),
//! reads just those records, groups them into units (one delivery, or a batch), and runs up to
//! `concurrency` units at once. With `batch.max_wait`, a partial batch of normal-priority
//! deliveries is left pending until its oldest delivery has been due that long (or it fills):
//! the worker only shortens its own sleep to that deadline, so waiting batches cost no timers
//! either. Each unit's result is recorded in the store as soon as it is known: confirmed →
//! delivered; failed → rescheduled with exponential backoff and full jitter (or the receiver's
//! `Retry-After`), or dead-lettered after the last attempt, past `max_age`, or at once for a
//! permanent error. Retries are entries in the schedule, not timers: the worker sleeps until
//! the next due time or until the store's feed brings new work. The store is the truth: the
//! schedule only indexes it, so a crash at any point loses nothing: undelivered rows are still
//! pending and go out again (at least once; every delivery carries its stable id). At start,
//! the pending deliveries of a sink no longer in the config are dead-lettered ("sink removed
//! from the config"), so they can be listed, purged, or replayed once the sink is back.
//! `docs/delivery-guarantees.md` states what a receiver may rely on.
//!
//! Files: `schedule` indexes the pending deliveries, `dispatch` decides what goes when (a
//! state machine without I/O, driven by the unit tests and the simulation in `tests/sim.rs`),
//! `worker` runs it against the store, the tasks and the timer, `attempt` sends one unit and
//! records its outcome, `unit` groups deliveries into units, `flow` keeps the circuit breaker
//! and the rate.

mod attempt;
#[doc(hidden)]
pub mod bench;
mod dispatch;
mod flow;
mod schedule;
mod shared;
mod unit;
mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;

use attempt::Policy;
pub use attempt::backoff;
use dispatch::{Dispatch, DispatchConfig};
use worker::Worker;

use crate::clock::Clock;
use crate::config::{ConfigError, SinkConfig};
use crate::sink;
use crate::store::postgres::Shared;
use crate::store::{Outbox, Store, StoreError};

/// The running delivery workers: one task per sink.
pub struct Workers {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    control: DeliveryControl,
}

/// Pause and resume sinks of running [`Workers`] (the admin API holds one). With the shared
/// store, a pause holds for every replica (it is kept in the database).
#[derive(Clone, Default)]
pub struct DeliveryControl {
    paused: Arc<BTreeMap<String, watch::Sender<bool>>>,
    circuits: Arc<BTreeMap<String, Arc<AtomicBool>>>,
    shared: Option<Shared>,
}

impl DeliveryControl {
    /// Pauses (`true`) or resumes sink `name` (on every replica, with the shared store);
    /// `None` if there is no such sink.
    pub async fn set_paused(&self, name: &str, paused: bool) -> Result<Option<()>, StoreError> {
        let Some(tx) = self.paused.get(name) else {
            return Ok(None);
        };
        match &self.shared {
            // The fleet's pause lives in the database; a resume also lifts this replica's own
            // (`paused = true` in its config).
            Some(shared) => {
                shared.set_paused(name, paused).await?;
                if !paused {
                    tx.send_replace(false);
                }
            }
            None => {
                tx.send_replace(paused);
            }
        }
        tracing::info!(sink = %name, paused, "sink pause state changed");
        Ok(Some(()))
    }

    /// Whether sink `name`'s circuit breaker is open; `None` if there is no such sink.
    pub fn is_circuit_open(&self, name: &str) -> Option<bool> {
        self.circuits.get(name).map(|o| o.load(Ordering::Relaxed))
    }

    /// Whether sink `name` is paused (here, or for every replica through the shared store);
    /// `None` if there is no such sink.
    pub async fn is_paused(&self, name: &str) -> Result<Option<bool>, StoreError> {
        let Some(here) = self.paused.get(name).map(|tx| *tx.borrow()) else {
            return Ok(None);
        };
        Ok(Some(match &self.shared {
            Some(shared) if !here => shared.is_paused(name).await?,
            _ => here,
        }))
    }
}

/// Why delivery could not start.
#[derive(Debug, thiserror::Error)]
pub enum DeliveryError {
    /// A sink could not be built from its config (a secret, a URL).
    #[error(transparent)]
    Config(#[from] ConfigError),
}

/// A sink's worker, built and not yet running.
struct Ready {
    worker: Worker,
    config: DispatchConfig,
    circuit_open: Arc<AtomicBool>,
    paused: watch::Receiver<bool>,
}

impl Workers {
    /// Starts one worker per configured sink (secrets resolved against `base_dir`); the
    /// workers read the system clock.
    pub fn start(
        store: &Store,
        sinks: &BTreeMap<String, SinkConfig>,
        base_dir: &Path,
    ) -> Result<Workers, DeliveryError> {
        Workers::start_with_clock(store, sinks, base_dir, Clock::system())
    }

    /// [`Workers::start`] with the workers reading `clock`. Every sink is built before any
    /// worker starts, so a sink that cannot be built leaves nothing running.
    pub fn start_with_clock(
        store: &Store,
        sinks: &BTreeMap<String, SinkConfig>,
        base_dir: &Path,
        clock: Clock,
    ) -> Result<Workers, DeliveryError> {
        let (stop, stopped) = watch::channel(false);
        let mut paused = BTreeMap::new();
        let mut circuits = BTreeMap::new();
        let mut ready = Vec::new();
        for (name, config) in sinks {
            if config.paused {
                tracing::info!(sink = %name, "sink is paused: deliveries are stored, not sent");
            }
            let (tx, rx) = watch::channel(config.paused);
            paused.insert(name.clone(), tx);
            let open = Arc::new(AtomicBool::new(false));
            circuits.insert(name.clone(), open.clone());
            let worker = Worker {
                name: name.clone(),
                sink: sink::build(name, config, base_dir)?,
                policy: Policy {
                    sink: name.clone(),
                    retry: config.retry.clone(),
                },
                store: store.clone(),
                clock: clock.clone(),
                stopped: stopped.clone(),
            };
            ready.push(Ready {
                worker,
                config: DispatchConfig::for_sink(name, config),
                circuit_open: open,
                paused: rx,
            });
        }
        tokio::spawn(dead_letter_removed_sinks(
            store.clone(),
            sinks.keys().cloned().collect(),
        ));
        let workers = ready
            .into_iter()
            .map(|r| {
                let worker = Arc::new(r.worker);
                match store.outbox() {
                    Outbox::Local(embedded) => {
                        let dispatch = Dispatch::new(r.config, r.circuit_open, clock.clone());
                        let run = worker.run(embedded.clone(), dispatch, stopped.clone(), r.paused);
                        tokio::spawn(run)
                    }
                    Outbox::Shared(queue) => tokio::spawn(shared::run(
                        worker,
                        queue.clone(),
                        r.config,
                        r.circuit_open,
                        stopped.clone(),
                        r.paused,
                    )),
                }
            })
            .collect();
        Ok(Workers {
            stop,
            workers,
            control: DeliveryControl {
                paused: Arc::new(paused),
                circuits: Arc::new(circuits),
                shared: match store.outbox() {
                    Outbox::Shared(shared) => Some(shared.clone()),
                    Outbox::Local(_) => None,
                },
            },
        })
    }

    /// A handle to pause and resume the sinks (for the admin API).
    pub fn control(&self) -> DeliveryControl {
        self.control.clone()
    }

    /// Lets each worker finish the units in flight, then stops it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.await;
        }
    }
}

/// The reason given to the pending deliveries of a sink that is no longer configured.
pub const REMOVED_SINK: &str = "sink removed from the config";

/// Dead-letters the pending deliveries of every sink not in `configured`: nothing would ever
/// send them, and in the dead-letter queue they are listed, purgeable, and replayable once
/// the sink is back.
async fn dead_letter_removed_sinks(store: Store, configured: std::collections::BTreeSet<String>) {
    let pending = match store.pending_sinks().await {
        Ok(sinks) => sinks,
        Err(e) => {
            tracing::error!(error = %e, "cannot list the sinks with pending deliveries");
            return;
        }
    };
    for sink in pending.iter().filter(|s| !configured.contains(*s)) {
        if let Outbox::Shared(_) = store.outbox() {
            // Another replica may run a config that has the sink (a rolling change): its
            // deliveries stay pending for it, never dead-lettered from here.
            tracing::warn!(sink = %sink,
                "the shared queue holds pending deliveries for a sink this replica does not \
                 configure; a replica that has it delivers them (dead-letter them through the \
                 admin API if no replica will)");
            continue;
        }
        match store.dead_letter_sink(sink, REMOVED_SINK).await {
            Ok(n) => tracing::warn!(sink = %sink, deliveries = n,
                "pending deliveries of a sink no longer in the config were dead-lettered; \
                 replay them once the sink is back, or purge them"),
            Err(e) => tracing::error!(sink = %sink, error = %e,
                "cannot dead-letter the deliveries of a removed sink"),
        }
    }
}

/// Counts a dead letter made by a failed plugin (`sink="none"`, `reason="plugin"`).
pub fn count_plugin_dead_letter() {
    metrics::counter!("hookwall_dead_letters_total", "sink" => "none", "reason" => "plugin")
        .increment(1);
}

#[cfg(test)]
mod tests;
