//! Delivery: move pending deliveries from the store to their sinks, with retries.
//!
//! One worker task per sink. It asks the store for what is due (high priority first, then by
//! due time), groups it into units (one delivery, or a batch), and runs up to `concurrency`
//! units at once. With `batch.max_wait`, a partial batch of normal-priority deliveries is left
//! pending until its oldest delivery has been due that long (or it fills): the worker only
//! shortens its own sleep to that deadline, so waiting batches cost no timers either.
//! Each unit's result is recorded in the store as soon as it is known: confirmed → delivered;
//! failed → rescheduled with exponential backoff and full jitter (or the receiver's
//! `Retry-After`), or dead-lettered after the last attempt, past `max_age`, or at once for a
//! permanent error. Retries are rows in the store's schedule, not timers: the
//! worker sleeps until the next due time or until the store's writer wakes it with new work,
//! so a million pending retries cost disk, not memory. Nothing is held in memory that the
//! store does not also have, so a crash at any point loses nothing: undelivered rows are
//! still pending and go out again (at least once; every delivery carries its stable id).
//!
//! [`flow`] keeps per-key order, the circuit breaker and the rate limit.
//! [`replay`] re-runs the current plugins on dead-lettered events; [`retention`] prunes
//! settled events.

mod flow;
pub mod replay;
pub mod retention;

use std::collections::{BTreeMap, HashMap, HashSet};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use flow::Admission;

use rand::Rng;
use tokio::sync::watch;
use tokio::task::{JoinHandle, JoinSet};

use crate::clock::now_ms;
use crate::config::{CircuitConfig, ConfigError, Rate, RetryConfig, SinkConfig, SinkKind};
use crate::sink::{self, Sink, SinkError};
use crate::store::{DeliveryRecord, DeliveryState, DeliveryUpdate, Priority, Store};

/// Deliveries per unit for sinks without `batch` that write many at once cheaply and in order
/// (`file`, `stdout`: one write and one fsync for the lot; `redis`: one pipeline; `nats`: one
/// flush, then the acks).
const IMPLICIT_BATCH: usize = 64;
/// An idle worker still looks at the store this often, in case a wake-up was missed.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// Pending deliveries read at start to restore per-key order (beyond this, keys whose head is
/// further back start unheld).
const MAX_ORDER_RESTORE: usize = 100_000;
/// Due deliveries passed over in one dispatch round (their keys busy) before the worker waits.
const MAX_SKIPPED: usize = 10_000;
/// After a store error, wait this long before trying again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The running delivery workers.
pub struct Delivery {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
    control: DeliveryControl,
    retention: Option<JoinHandle<()>>,
}

/// Pause and resume sinks of a running [`Delivery`] (the admin API holds one).
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

impl Delivery {
    /// Starts one worker per configured sink (secrets resolved against `base_dir`), and the
    /// retention task when `retention` is set.
    pub fn start(
        store: &Store,
        sinks: &BTreeMap<String, SinkConfig>,
        base_dir: &Path,
        retention: Option<Duration>,
    ) -> Result<Delivery, DeliveryError> {
        let (stop, stopped) = watch::channel(false);
        let mut paused = BTreeMap::new();
        let mut circuits = BTreeMap::new();
        let mut workers = Vec::new();
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
                concurrency: config.concurrency,
                unit: match (&config.batch, &config.kind) {
                    (Some(b), _) => Unit {
                        max_events: b.max_events,
                        max_bytes: b.max_bytes,
                        max_wait: b.max_wait,
                    },
                    (
                        None,
                        SinkKind::File(_)
                        | SinkKind::Stdout(_)
                        | SinkKind::Redis(_)
                        | SinkKind::Nats(_),
                    ) => Unit {
                        max_events: IMPLICIT_BATCH,
                        max_bytes: usize::MAX,
                        max_wait: Duration::ZERO,
                    },
                    (None, _) => Unit {
                        max_events: 1,
                        max_bytes: usize::MAX,
                        max_wait: Duration::ZERO,
                    },
                },
                order_key: config.order_key.clone(),
                circuit: config.circuit,
                circuit_open: open.clone(),
                rate: config.rate,
                store: store.clone(),
            };
            workers.push(tokio::spawn(Arc::new(worker).run(stopped.clone(), rx)));
        }
        let retention = retention
            .map(|keep| tokio::spawn(retention::run(store.clone(), keep, stopped.clone())));
        Ok(Delivery {
            stop,
            workers,
            control: DeliveryControl {
                paused: Arc::new(paused),
                circuits: Arc::new(circuits),
            },
            retention,
        })
    }

    pub fn control(&self) -> DeliveryControl {
        self.control.clone()
    }

    /// Lets each worker finish the units in flight, then stops it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.await;
        }
        if let Some(r) = self.retention {
            let _ = r.await;
        }
    }
}

/// How many deliveries one unit may hold, and how long a partial one may wait to fill.
#[derive(Debug, Clone, Copy)]
struct Unit {
    max_events: usize,
    max_bytes: usize,
    /// `batch.max_wait`: zero sends what is due at once.
    max_wait: Duration,
}

struct Worker {
    name: String,
    sink: Arc<dyn Sink>,
    retry: RetryConfig,
    concurrency: usize,
    unit: Unit,
    order_key: Option<String>,
    circuit: CircuitConfig,
    circuit_open: Arc<AtomicBool>,
    rate: Option<Rate>,
    store: Store,
}

/// What one attempt did: each delivery's seq and whether it is still pending (a retry).
struct Attempted {
    results: Vec<(u64, bool)>,
    success: bool,
}

impl Worker {
    async fn run(
        self: Arc<Self>,
        mut stopped: watch::Receiver<bool>,
        mut paused: watch::Receiver<bool>,
    ) {
        let wake = self.store.waker(&self.name);
        let mut in_flight: HashSet<u64> = HashSet::new();
        // In-flight seq → its order key; task → its seqs (to clean up after a panic).
        let mut keys: HashMap<u64, String> = HashMap::new();
        let mut tasks: HashMap<tokio::task::Id, Vec<u64>> = HashMap::new();
        let mut running: JoinSet<Attempted> = JoinSet::new();
        let mut order = flow::Order::new(self.order_key.as_deref());
        if self.order_key.is_some() {
            match self
                .store
                .due_deliveries(&self.name, u64::MAX, MAX_ORDER_RESTORE)
            {
                Ok(pending) => order.restore(&pending),
                Err(e) => tracing::error!(sink = %self.name, error = %e,
                    "cannot read pending deliveries to restore key order"),
            }
        }
        let mut breaker = flow::Breaker::new(&self.name, self.circuit, self.circuit_open.clone());
        let pace = self.rate.map(flow::Pace::new);
        loop {
            if *stopped.borrow() {
                break;
            }
            let is_paused = *paused.borrow();
            let mut store_error = false;
            let mut hold_until: Option<Instant> = None;
            // A partial batch left to fill (`batch.max_wait`): until when, and its seqs.
            let mut fill_until: Option<Instant> = None;
            let mut filling: HashSet<u64> = HashSet::new();
            let mut skipped: HashSet<u64> = HashSet::new();
            let mut cap = self.concurrency;
            while !is_paused && skipped.len() < MAX_SKIPPED {
                let now = Instant::now();
                cap = match breaker.admission(now) {
                    Admission::Open => self.concurrency,
                    Admission::Probe => 1,
                    Admission::WaitUntil(t) => {
                        hold_until = Some(t);
                        break;
                    }
                };
                if running.len() >= cap {
                    break;
                }
                let room = cap - running.len();
                let limit = room.saturating_mul(self.unit.max_events).min(10_000);
                let except: HashSet<u64> = in_flight.union(&skipped).copied().collect();
                let due =
                    match self
                        .store
                        .due_deliveries_except(&self.name, now_ms(), limit, &except)
                    {
                        Ok(due) => due,
                        Err(e) => {
                            tracing::error!(sink = %self.name, error = %e,
                            "cannot read pending deliveries");
                            store_error = true;
                            break;
                        }
                    };
                if due.is_empty() {
                    break;
                }
                // A fetch cut short by `limit` may leave more due behind its last unit, so that
                // unit is not partial for want of deliveries: it is not held.
                let truncated = due.len() >= limit;
                let mut admitted = Vec::new();
                for d in due {
                    let key = order.key(&d);
                    if order.admit(&d, key.as_ref()) {
                        if let Some(k) = key {
                            keys.insert(d.seq, k);
                        }
                        admitted.push(d);
                    } else {
                        skipped.insert(d.seq);
                    }
                }
                let units = self.units(admitted);
                let last = units.len().saturating_sub(1);
                for (i, unit) in units.into_iter().enumerate() {
                    let blocked = running.len() >= cap || hold_until.is_some();
                    // Only the last unit can be partial: `units` closed the others when full.
                    let fill_by = (!blocked && !truncated && i == last)
                        .then(|| self.fill_deadline(&unit, now_ms()))
                        .flatten();
                    let wait = if blocked || fill_by.is_some() {
                        None
                    } else {
                        pace.as_ref().and_then(flow::Pace::check)
                    };
                    if blocked || wait.is_some() || fill_by.is_some() {
                        // Not sent this round: its keys are free again, it stays pending.
                        for d in &unit {
                            if let Some(k) = keys.remove(&d.seq) {
                                order.release(&k);
                            }
                        }
                        if let Some(w) = wait {
                            hold_until = Some(now + w);
                        }
                        if let Some(at_ms) = fill_by {
                            fill_until =
                                Some(now + Duration::from_millis(at_ms.saturating_sub(now_ms())));
                            filling.extend(unit.iter().map(|d| d.seq));
                        }
                        continue;
                    }
                    let seqs: Vec<u64> = unit.iter().map(|d| d.seq).collect();
                    in_flight.extend(&seqs);
                    let handle = running.spawn(self.clone().attempt(unit));
                    tasks.insert(handle.id(), seqs);
                }
                // Fetching again would return the held deliveries again.
                if hold_until.is_some() || fill_until.is_some() {
                    break;
                }
            }
            let wait = if store_error {
                STORE_ERROR_PAUSE
            } else if let Some(t) = hold_until {
                t.saturating_duration_since(Instant::now())
            } else if is_paused || running.len() >= cap {
                IDLE_POLL
            } else {
                let except: HashSet<u64> = in_flight
                    .iter()
                    .chain(&skipped)
                    .chain(&filling)
                    .copied()
                    .collect();
                match self.store.next_due_ms_except(&self.name, &except) {
                    Ok(Some(at)) => {
                        Duration::from_millis(at.saturating_sub(now_ms())).min(IDLE_POLL)
                    }
                    Ok(None) => IDLE_POLL,
                    Err(_) => STORE_ERROR_PAUSE,
                }
            };
            // A batch being filled goes at its deadline at the latest; new deliveries (the
            // store's wake-up) or a finished unit re-run the grouping before that.
            let wait = match fill_until {
                Some(t) => wait.min(t.saturating_duration_since(Instant::now())),
                None => wait,
            };
            tokio::select! {
                Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                    match done {
                        Ok((id, attempted)) => {
                            tasks.remove(&id);
                            breaker.record(attempted.success, Instant::now());
                            for (seq, retrying) in attempted.results {
                                in_flight.remove(&seq);
                                if let Some(k) = keys.remove(&seq) {
                                    order.settle(seq, &k, retrying);
                                }
                            }
                        }
                        Err(e) => {
                            // A panicked attempt: its deliveries are still pending in the store.
                            tracing::error!(sink = %self.name, "a delivery attempt panicked");
                            for seq in tasks.remove(&e.id()).unwrap_or_default() {
                                in_flight.remove(&seq);
                                if let Some(k) = keys.remove(&seq) {
                                    order.release(&k);
                                }
                            }
                        }
                    }
                }
                () = wake.notified() => {}
                () = tokio::time::sleep(wait) => {}
                _ = stopped.changed() => {}
                _ = paused.changed() => {}
            }
        }
        while running.join_next().await.is_some() {}
    }

    /// Groups due deliveries into units, in order. A high-priority delivery always goes alone,
    /// so it never waits for a batch to fill or ride behind one.
    fn units(&self, due: Vec<DeliveryRecord>) -> Vec<Vec<DeliveryRecord>> {
        let mut units: Vec<Vec<DeliveryRecord>> = Vec::new();
        let mut current: Vec<DeliveryRecord> = Vec::new();
        let mut bytes = 0usize;
        for d in due {
            if d.priority == Priority::High || self.unit.max_events == 1 {
                units.push(vec![d]);
                continue;
            }
            let full = current.len() >= self.unit.max_events
                || (!current.is_empty()
                    && bytes.saturating_add(d.body.len()) > self.unit.max_bytes);
            if full {
                units.push(std::mem::take(&mut current));
                bytes = 0;
            }
            bytes = bytes.saturating_add(d.body.len());
            current.push(d);
        }
        if !current.is_empty() {
            units.push(current);
        }
        units
    }

    /// When a partial unit must go at the latest (ms since the epoch): `batch.max_wait` after
    /// its oldest delivery became due. `None` when it goes now: there is no `max_wait`, the unit
    /// is full (`max_events` or `max_bytes`), it is high priority, or its time has come.
    fn fill_deadline(&self, unit: &[DeliveryRecord], now_ms: u64) -> Option<u64> {
        if self.unit.max_wait.is_zero()
            || unit.len() >= self.unit.max_events
            || unit.iter().any(|d| d.priority == Priority::High)
        {
            return None;
        }
        let bytes = unit
            .iter()
            .fold(0usize, |sum, d| sum.saturating_add(d.body.len()));
        if bytes >= self.unit.max_bytes {
            return None;
        }
        let oldest = unit
            .iter()
            .map(|d| match d.state {
                DeliveryState::Pending { due_ms } => due_ms,
                _ => now_ms,
            })
            .min()?;
        let deadline = oldest.saturating_add(self.unit.max_wait.as_millis() as u64);
        (deadline > now_ms).then_some(deadline)
    }

    /// Sends one unit and records the outcome.
    async fn attempt(self: Arc<Self>, unit: Vec<DeliveryRecord>) -> Attempted {
        let result = self.sink.deliver(&unit).await;
        let sink = self.name.clone();
        let result_label = if result.is_ok() { "success" } else { "failure" };
        metrics::counter!("hookwall_delivery_attempts_total", "sink" => sink.clone(), "result" => result_label)
            .increment(unit.len() as u64);
        let first = unit.iter().filter(|d| d.attempts.is_empty()).count() as u64;
        if first > 0 {
            metrics::counter!("hookwall_delivery_first_attempt_total", "sink" => sink.clone(), "result" => result_label)
                .increment(first);
        }
        match &result {
            Ok(()) => tracing::debug!(sink = %self.name, deliveries = unit.len(), "delivered"),
            Err(e) => tracing::warn!(sink = %self.name, deliveries = unit.len(),
                first_id = %unit[0].id, status = ?e.status, error = %e, "delivery attempt failed"),
        }
        let updates = self.outcomes(&unit, &result, now_ms(), &mut rand::rng());
        let results = updates
            .iter()
            .map(|u| match u {
                DeliveryUpdate::Retry { seq, .. } => (*seq, true),
                DeliveryUpdate::Delivered { seq, .. } | DeliveryUpdate::Dead { seq, .. } => {
                    (*seq, false)
                }
            })
            .collect();
        if let Err(e) = self.store.update_deliveries(updates).await {
            // The sink may have the unit already; it stays pending and is sent again
            // (at-least-once), which is safe because every delivery carries its stable id.
            tracing::error!(sink = %self.name, error = %e, "cannot record delivery results");
            tokio::time::sleep(STORE_ERROR_PAUSE).await;
        }
        Attempted {
            results,
            success: result.is_ok(),
        }
    }

    fn outcomes(
        &self,
        unit: &[DeliveryRecord],
        result: &Result<(), SinkError>,
        at_ms: u64,
        rng: &mut impl Rng,
    ) -> Vec<DeliveryUpdate> {
        unit.iter()
            .map(|d| {
                let seq = d.seq;
                let Err(e) = result else {
                    metrics::histogram!("hookwall_delivery_latency_seconds", "sink" => self.name.clone())
                        .record(at_ms.saturating_sub(d.received_at_ms) as f64 / 1000.0);
                    return DeliveryUpdate::Delivered { seq, at_ms };
                };
                let attempt = d.attempts.len() as u32 + 1;
                let max = self.retry.max_attempts;
                let delay = e
                    .retry_after
                    .unwrap_or_else(|| backoff(&self.retry, attempt, rng));
                let age_at_retry = Duration::from_millis(
                    (at_ms + delay.as_millis() as u64).saturating_sub(d.received_at_ms),
                );
                let dead = if e.permanent {
                    Some(("permanent", format!("permanent failure: {e}")))
                } else if attempt >= max {
                    Some(("exhausted", format!("{e} (attempt {attempt} of {max})")))
                } else if age_at_retry > self.retry.max_age {
                    Some((
                        "expired",
                        format!("{e} (attempt {attempt}; the next would be past max_age {:?})",
                            self.retry.max_age),
                    ))
                } else {
                    None
                };
                if let Some((reason, error)) = dead {
                    metrics::counter!("hookwall_dead_letters_total", "sink" => self.name.clone(), "reason" => reason)
                        .increment(1);
                    tracing::warn!(sink = %self.name, delivery = %d.id, %error, "dead-lettered");
                    return DeliveryUpdate::Dead {
                        seq,
                        at_ms,
                        error,
                        status: e.status,
                    };
                }
                DeliveryUpdate::Retry {
                    seq,
                    at_ms,
                    error: e.message.clone(),
                    status: e.status,
                    due_ms: at_ms + delay.as_millis() as u64,
                }
            })
            .collect()
    }
}

/// Counts a dead letter made by a failed plugin (`sink="none"`, `reason="plugin"`).
pub fn count_plugin_dead_letter() {
    metrics::counter!("hookwall_dead_letters_total", "sink" => "none", "reason" => "plugin")
        .increment(1);
}

/// Delay before retry number `attempt` (1-based): exponential growth from `initial`, capped at
/// `max_delay`, with full jitter above a floor of `initial` so that many deliveries failing
/// together do not retry together.
pub fn backoff(retry: &RetryConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exp = retry
        .initial
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let ceiling = exp.min(retry.max_delay);
    if ceiling <= retry.initial {
        return ceiling;
    }
    let span = (ceiling - retry.initial).as_millis() as u64;
    retry.initial + Duration::from_millis(rng.random_range(0..=span))
}

#[cfg(test)]
mod tests;
