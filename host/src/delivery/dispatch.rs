//! Dispatch: the decisions of one sink's worker, as a state machine without I/O.
//!
//! The worker alternates two steps. [`Dispatch::dispatch_round`] looks at what is due and
//! starts as many units as the sink allows now (concurrency, the circuit breaker, per-key
//! order, the rate, a batch left to fill), then says how long to [`Wait`] at most.
//! [`Dispatch::settle`] takes back a finished (or panicked) unit, freeing its keys and its slot
//! and feeding the breaker. Everything outside — the store's pending rows and the attempts —
//! goes through a [`Port`], and time through the worker's [`Clock`], so a unit test drives the
//! whole loop with a fake port and a manual clock.
//!
//! Invariant: `running` counts the units started through [`Port::send`] and not yet settled,
//! and `in_flight` holds exactly their seqs.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::time::Instant;

use super::flow::{self, Admission};
use super::unit::UnitLimits;
use crate::clock::Clock;
use crate::config::{CircuitConfig, Rate, SinkConfig};
use crate::store::{DeliveryRecord, StoreError};

/// An idle worker still looks at the store this often, in case a wake-up was missed.
pub(super) const IDLE_POLL: Duration = Duration::from_secs(30);
/// Pending deliveries read at start to restore per-key order (beyond this, keys whose head is
/// further back start unheld).
const MAX_ORDER_RESTORE: usize = 100_000;
/// Due deliveries passed over in one dispatch round (their keys busy) before the worker waits.
pub(super) const MAX_SKIPPED: usize = 10_000;
/// Due deliveries read from the store at once, however many units would fit.
const MAX_FETCH: usize = 10_000;
/// After a store error, wait this long before trying again.
pub(super) const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What a dispatch round reaches outside itself: the sink's pending deliveries in the store,
/// and the attempts it starts. The worker plugs in the store and its task set; tests a fake.
pub(super) trait Port {
    /// Up to `limit` deliveries due at `now_ms`, high priority first, then by due time,
    /// skipping the seqs in `except`.
    fn due(
        &mut self,
        now_ms: u64,
        limit: usize,
        except: &HashSet<u64>,
    ) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// When the next pending delivery not in `except` falls due, if any.
    fn next_due_ms(&mut self, except: &HashSet<u64>) -> Result<Option<u64>, StoreError>;

    /// Starts an attempt at `unit`; its result comes back through [`Dispatch::settle`].
    fn send(&mut self, unit: Vec<DeliveryRecord>);
}

/// How long the worker sleeps after a round, at most: a finished unit, the store's wake-up,
/// stop or a pause change end the sleep sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wait(pub Duration);

/// What one attempt did: each delivery's seq and whether it is still pending (a retry).
#[derive(Debug)]
pub(super) struct Attempted {
    /// `(seq, still pending)` for each delivery of the unit.
    pub results: Vec<(u64, bool)>,
    /// Whether the sink took the unit (the circuit breaker counts this).
    pub success: bool,
}

/// A unit that came back.
#[derive(Debug)]
pub(super) enum Done {
    /// Its attempt finished and recorded its results.
    Attempted(Attempted),
    /// Its attempt panicked: these deliveries are still pending in the store.
    Panicked(Vec<u64>),
}

/// How one sink's worker dispatches (from the sink's config).
#[derive(Debug, Clone)]
pub(super) struct DispatchConfig {
    /// The sink's name (logs and metrics).
    pub sink: String,
    /// Units in flight at once.
    pub concurrency: usize,
    /// How deliveries are grouped into units.
    pub limits: UnitLimits,
    /// `order_key = "json:/…"`.
    pub order_key: Option<String>,
    /// The circuit breaker's thresholds.
    pub circuit: CircuitConfig,
    /// `rate = "50/s"`: units per time.
    pub rate: Option<Rate>,
}

impl DispatchConfig {
    /// The dispatch settings of sink `name`.
    pub fn for_sink(name: &str, config: &SinkConfig) -> DispatchConfig {
        DispatchConfig {
            sink: name.to_string(),
            concurrency: config.concurrency,
            limits: UnitLimits::for_sink(config),
            order_key: config.order_key.clone(),
            circuit: config.circuit,
            rate: config.rate,
        }
    }
}

/// The dispatch state of one sink's worker: what is in flight and the flow controls.
pub(super) struct Dispatch {
    config: DispatchConfig,
    clock: Clock,
    order: flow::Order,
    breaker: flow::Breaker,
    pace: Option<flow::Pace>,
    /// Seqs of the deliveries in units being sent.
    in_flight: HashSet<u64>,
    /// In-flight seq → its order key.
    keys: HashMap<u64, String>,
    /// Units being sent.
    running: usize,
}

/// What one round has learned so far; dropped when the round ends.
struct Round {
    /// Units allowed in flight: the concurrency, or one while the breaker probes.
    cap: usize,
    /// Nothing more goes before then: the circuit is open or the rate is spent.
    hold_until: Option<Instant>,
    /// A partial batch left to fill (`batch.max_wait`): until when, and its seqs.
    fill_until: Option<Instant>,
    filling: HashSet<u64>,
    /// Due deliveries passed over because their keys are busy or held.
    skipped: HashSet<u64>,
    /// A store read failed.
    store_error: bool,
}

impl Dispatch {
    /// Nothing in flight; the breaker shares its state through `circuit_open`.
    pub fn new(config: DispatchConfig, circuit_open: Arc<AtomicBool>, clock: Clock) -> Dispatch {
        Dispatch {
            order: flow::Order::new(config.order_key.as_deref()),
            breaker: flow::Breaker::new(&config.sink, config.circuit, circuit_open),
            pace: config.rate.map(|r| flow::Pace::new(r, clock.clone())),
            config,
            clock,
            in_flight: HashSet::new(),
            keys: HashMap::new(),
            running: 0,
        }
    }

    /// Units started and not yet settled.
    pub fn running(&self) -> usize {
        self.running
    }

    /// With an order key, rebuilds the held keys from the sink's pending deliveries (at start).
    pub fn restore_order(&mut self, port: &mut impl Port) {
        if self.config.order_key.is_none() {
            return;
        }
        match port.due(u64::MAX, MAX_ORDER_RESTORE, &HashSet::new()) {
            Ok(pending) => self.order.restore(&pending),
            Err(e) => tracing::error!(sink = %self.config.sink, error = %e,
                "cannot read pending deliveries to restore key order"),
        }
    }

    /// Starts what may go now (nothing while `paused`) and says how long to wait at most.
    pub fn dispatch_round(&mut self, port: &mut impl Port, paused: bool) -> Wait {
        let mut round = Round {
            cap: self.config.concurrency,
            hold_until: None,
            fill_until: None,
            filling: HashSet::new(),
            skipped: HashSet::new(),
            store_error: false,
        };
        while !paused && round.skipped.len() < MAX_SKIPPED && self.step(port, &mut round) {}
        self.wait(port, &round, paused)
    }

    /// Takes back a unit that came back from its attempt.
    pub fn settle(&mut self, done: Done) {
        debug_assert!(self.running > 0, "settled a unit that was not sent");
        self.running -= 1;
        match done {
            Done::Attempted(attempted) => {
                self.breaker.record(attempted.success, self.clock.instant());
                for (seq, retrying) in attempted.results {
                    self.in_flight.remove(&seq);
                    if let Some(k) = self.keys.remove(&seq) {
                        self.order.settle(seq, &k, retrying);
                    }
                }
            }
            Done::Panicked(seqs) => {
                for seq in seqs {
                    self.in_flight.remove(&seq);
                    if let Some(k) = self.keys.remove(&seq) {
                        self.order.release(&k);
                    }
                }
            }
        }
    }

    /// One fetch of due deliveries, and the units made of them started or held back. `false`
    /// when the round is over: no room, nothing due, something held, or a store error.
    fn step(&mut self, port: &mut impl Port, round: &mut Round) -> bool {
        let now = self.clock.instant();
        round.cap = match self.breaker.admission(now) {
            Admission::Open => self.config.concurrency,
            Admission::Probe => 1,
            Admission::WaitUntil(t) => {
                round.hold_until = Some(t);
                return false;
            }
        };
        if self.running >= round.cap {
            return false;
        }
        let room = round.cap - self.running;
        let limit = room
            .saturating_mul(self.config.limits.max_events)
            .min(MAX_FETCH);
        let except: HashSet<u64> = self.in_flight.union(&round.skipped).copied().collect();
        let now_ms = self.clock.now_ms();
        let due = match port.due(now_ms, limit, &except) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(sink = %self.config.sink, error = %e,
                    "cannot read pending deliveries");
                round.store_error = true;
                return false;
            }
        };
        if due.is_empty() {
            return false;
        }
        // A fetch cut short by `limit` may leave more due behind its last unit, so that unit is
        // not partial for want of deliveries: it is not held.
        let truncated = due.len() >= limit;
        let admitted = self.admit(due, &mut round.skipped);
        let units = self.config.limits.group(admitted);
        let last = units.len().saturating_sub(1);
        for (i, unit) in units.into_iter().enumerate() {
            // Only the last unit can be partial: `group` closed the others when full.
            let may_fill = !truncated && i == last;
            self.place(port, round, unit, may_fill, (now, now_ms));
        }
        // Fetching again would return the held deliveries again.
        round.hold_until.is_none() && round.fill_until.is_none()
    }

    /// The due deliveries whose keys are free (their keys now busy); the others are skipped.
    fn admit(
        &mut self,
        due: Vec<DeliveryRecord>,
        skipped: &mut HashSet<u64>,
    ) -> Vec<DeliveryRecord> {
        let mut admitted = Vec::new();
        for d in due {
            let key = self.order.key(&d);
            if self.order.admit(&d, key.as_ref()) {
                if let Some(k) = key {
                    self.keys.insert(d.seq, k);
                }
                admitted.push(d);
            } else {
                skipped.insert(d.seq);
            }
        }
        admitted
    }

    /// Sends `unit`, or holds it back (full, circuit or rate held, or a batch left to fill:
    /// `may_fill` for the last unit of a fetch that was not cut short).
    fn place(
        &mut self,
        port: &mut impl Port,
        round: &mut Round,
        unit: Vec<DeliveryRecord>,
        may_fill: bool,
        (now, now_ms): (Instant, u64),
    ) {
        let blocked = self.running >= round.cap || round.hold_until.is_some();
        let fill_by = (!blocked && may_fill)
            .then(|| self.config.limits.fill_deadline(&unit, now_ms))
            .flatten();
        let pace_wait = if blocked || fill_by.is_some() {
            None
        } else {
            self.pace.as_ref().and_then(flow::Pace::check)
        };
        if blocked || pace_wait.is_some() || fill_by.is_some() {
            // Not sent this round: its keys are free again, it stays pending.
            for d in &unit {
                if let Some(k) = self.keys.remove(&d.seq) {
                    self.order.release(&k);
                }
            }
            if let Some(w) = pace_wait {
                round.hold_until = Some(now + w);
            }
            if let Some(at_ms) = fill_by {
                round.fill_until = Some(now + Duration::from_millis(at_ms.saturating_sub(now_ms)));
                round.filling.extend(unit.iter().map(|d| d.seq));
            }
            return;
        }
        self.in_flight.extend(unit.iter().map(|d| d.seq));
        self.running += 1;
        port.send(unit);
    }

    /// How long to sleep after `round`: until what held it, or the next due delivery, or a
    /// batch's fill deadline, whichever comes first; [`IDLE_POLL`] at most.
    fn wait(&self, port: &mut impl Port, round: &Round, paused: bool) -> Wait {
        let now = self.clock.instant();
        let wait = if round.store_error {
            STORE_ERROR_PAUSE
        } else if let Some(t) = round.hold_until {
            t.saturating_duration_since(now)
        } else if paused || self.running >= round.cap {
            IDLE_POLL
        } else {
            let except: HashSet<u64> = self
                .in_flight
                .iter()
                .chain(&round.skipped)
                .chain(&round.filling)
                .copied()
                .collect();
            match port.next_due_ms(&except) {
                Ok(Some(at)) => {
                    Duration::from_millis(at.saturating_sub(self.clock.now_ms())).min(IDLE_POLL)
                }
                Ok(None) => IDLE_POLL,
                Err(_) => STORE_ERROR_PAUSE,
            }
        };
        // A batch being filled goes at its deadline at the latest; new deliveries (the store's
        // wake-up) or a finished unit re-run the grouping before that.
        Wait(match round.fill_until {
            Some(t) => wait.min(t.saturating_duration_since(now)),
            None => wait,
        })
    }
}
