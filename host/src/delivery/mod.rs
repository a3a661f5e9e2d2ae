//! Delivery: move pending deliveries from the store to their sinks, with retries.
//!
//! [`Workers`] runs one worker task per sink. It asks the store for what is due (high priority
//! first, then by due time), groups it into units (one delivery, or a batch), and runs up to
//! `concurrency` units at once. With `batch.max_wait`, a partial batch of normal-priority
//! deliveries is left pending until its oldest delivery has been due that long (or it fills):
//! the worker only shortens its own sleep to that deadline, so waiting batches cost no timers
//! either. Each unit's result is recorded in the store as soon as it is known: confirmed →
//! delivered; failed → rescheduled with exponential backoff and full jitter (or the receiver's
//! `Retry-After`), or dead-lettered after the last attempt, past `max_age`, or at once for a
//! permanent error. Retries are rows in the store's schedule, not timers: the worker sleeps
//! until the next due time or until the store's writer wakes it with new work, so a million
//! pending retries cost disk, not memory. Nothing is held in memory that the store does not
//! also have, so a crash at any point loses nothing: undelivered rows are still pending and go
//! out again (at least once; every delivery carries its stable id).
//!
//! Files: `dispatch` decides what goes when (a state machine without I/O, driven by the unit
//! tests), `worker` runs it against the store, the tasks and the timer, `attempt` sends one
//! unit and records its outcome, `unit` groups deliveries into units, `flow` keeps per-key
//! order, the circuit breaker and the rate.

mod attempt;
mod dispatch;
mod flow;
mod unit;
mod worker;

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use attempt::backoff;
use dispatch::{Dispatch, DispatchConfig};
use worker::Worker;

use crate::clock::Clock;
use crate::config::{ConfigError, SinkConfig};
use crate::sink;
use crate::store::Store;

/// The running delivery workers: one task per sink.
pub struct Workers {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    control: DeliveryControl,
}

/// Pause and resume sinks of running [`Workers`] (the admin API holds one).
#[derive(Clone, Default)]
pub struct DeliveryControl {
    paused: Arc<BTreeMap<String, watch::Sender<bool>>>,
    circuits: Arc<BTreeMap<String, Arc<AtomicBool>>>,
}

impl DeliveryControl {
    /// Pauses (`true`) or resumes sink `name`; `None` if there is no such sink.
    pub fn set_paused(&self, name: &str, paused: bool) -> Option<()> {
        let tx = self.paused.get(name)?;
        tx.send_replace(paused);
        tracing::info!(sink = %name, paused, "sink pause state changed");
        Some(())
    }

    /// Whether sink `name`'s circuit breaker is open; `None` if there is no such sink.
    pub fn is_circuit_open(&self, name: &str) -> Option<bool> {
        self.circuits.get(name).map(|o| o.load(Ordering::Relaxed))
    }

    /// Whether sink `name` is paused; `None` if there is no such sink.
    pub fn is_paused(&self, name: &str) -> Option<bool> {
        self.paused.get(name).map(|tx| *tx.borrow())
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
    dispatch: Dispatch,
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
                retry: config.retry.clone(),
                store: store.clone(),
                clock: clock.clone(),
            };
            let dispatch =
                Dispatch::new(DispatchConfig::for_sink(name, config), open, clock.clone());
            ready.push(Ready {
                worker,
                dispatch,
                paused: rx,
            });
        }
        let workers = ready
            .into_iter()
            .map(|r| {
                let run = Arc::new(r.worker).run(r.dispatch, stopped.clone(), r.paused);
                tokio::spawn(run)
            })
            .collect();
        Ok(Workers {
            stop,
            workers,
            control: DeliveryControl {
                paused: Arc::new(paused),
                circuits: Arc::new(circuits),
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

/// Counts a dead letter made by a failed plugin (`sink="none"`, `reason="plugin"`).
pub fn count_plugin_dead_letter() {
    metrics::counter!("hookwall_dead_letters_total", "sink" => "none", "reason" => "plugin")
        .increment(1);
}

#[cfg(test)]
mod tests;
