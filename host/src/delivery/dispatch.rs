//! Dispatch: the decisions of one sink's worker, as a state machine without I/O.
//!
//! The worker alternates two steps. [`Dispatch::dispatch_round`] takes what is due from the
//! sink's [`Schedule`] and starts as many units as the sink allows now (concurrency, the
//! circuit breaker, the rate, a batch left to fill), then says how long to [`Wait`] at most.
//! [`Dispatch::settle`] takes back a finished (or panicked) unit, freeing its keys and its slot
//! and feeding the breaker. New pending deliveries come in through [`Dispatch::arrive`] (the
//! store's feed) and, at start, [`Dispatch::add`] (the store's pending rows). Everything
//! outside (the records' bodies, the attempts) goes through a [`Port`], and time through the
//! worker's [`Clock`], so tests drive the whole loop with a fake port and a manual clock
//! (`tests/sim.rs` runs thousands of randomized schedules that way).
//!
//! Cost: a round reads from the store only the records it is about to send; deliveries that
//! cannot go (their key busy or waiting, not yet due) are never looked at, so a round with
//! nothing due does no work however long the backlog is.
//!
//! Invariant: `running` counts the units started through [`Port::send`] and not yet settled,
//! and the schedule's taken deliveries are exactly theirs (between rounds).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::time::Instant;

use super::flow::{self, Admission};
use super::schedule::{self, Schedule, Scheduled};
use super::unit::UnitLimits;
use crate::clock::Clock;
use crate::config::{CircuitConfig, Rate, SinkConfig};
use crate::store::{DeliveryRecord, DeliveryState, StoreError};

/// An idle worker still looks at the store this often, in case a wake-up was missed.
pub(super) const IDLE_POLL: Duration = Duration::from_secs(30);
/// Due deliveries read from the store at once, however many units would fit.
const MAX_FETCH: usize = 10_000;
/// Records read at once to learn the order keys of new deliveries.
const KEY_READ_CHUNK: usize = 1024;
/// After a store error, wait this long before trying again.
pub(super) const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// What dispatch reaches outside itself: the store's records of the sink's deliveries, and
/// the attempts it starts. The worker plugs in the store and its task set; tests a fake.
pub(super) trait Port {
    /// The records of `seqs` that are still pending, in any order; a seq settled or removed
    /// meanwhile is left out.
    fn load(&mut self, seqs: &[u64]) -> Result<Vec<DeliveryRecord>, StoreError>;

    /// Whether the store takes writes now: results sent while it does not could not be
    /// recorded, so nothing new goes.
    fn writable(&mut self) -> bool;

    /// Starts an attempt at `unit`; its result comes back through [`Dispatch::settle`].
    fn send(&mut self, unit: Vec<DeliveryRecord>);
}

/// How long the worker sleeps after a round, at most: a finished unit, the store's wake-up,
/// stop or a pause change end the sleep sooner.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) struct Wait(pub Duration);

/// What one attempt did.
#[derive(Debug)]
pub(super) struct Attempted {
    /// Each delivery's seq and, if it is still pending (a retry), when it is due again.
    pub results: Vec<(u64, Option<u64>)>,
    /// What the circuit breaker learns from it.
    pub health: Health,
    /// The sink refused the whole batch for good: its deliveries go alone from now on, so only
    /// the bad one ends in the dead-letter queue.
    pub split: bool,
}

/// What an attempt says about the sink itself.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Health {
    /// The sink took the unit, or answered a permanent refusal: it is up.
    Up,
    /// The sink failed (an error, a timeout, a 5xx, a 429).
    Failing,
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
    /// Sink `sink` sending one delivery per unit, 4 at once, without order key, rate or
    /// batching, with the default breaker (the benchmark's and the tests' base).
    pub fn simple(sink: &str) -> DispatchConfig {
        DispatchConfig {
            sink: sink.to_string(),
            concurrency: 4,
            limits: UnitLimits {
                max_events: 1,
                max_bytes: usize::MAX,
                max_wait: Duration::ZERO,
            },
            order_key: None,
            circuit: CircuitConfig::default(),
            rate: None,
        }
    }

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

/// The dispatch state of one sink's worker: its schedule, what is in flight, the flow
/// controls.
pub(super) struct Dispatch {
    config: DispatchConfig,
    /// The JSON pointer of `order_key`.
    pointer: Option<String>,
    clock: Clock,
    schedule: Schedule,
    breaker: flow::Breaker,
    pace: Option<flow::Pace>,
    /// Units being sent.
    running: usize,
    /// The first seq of the unit sent as the breaker's probe, while it is out.
    probe: Option<u64>,
    /// Arrivals whose order keys could not be read yet (a store error): tried again first.
    unkeyed: Vec<Scheduled>,
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
    /// A store read failed, or the store takes no writes.
    store_error: bool,
}

impl Dispatch {
    /// Nothing known or in flight; the breaker shares its state through `circuit_open`.
    pub fn new(config: DispatchConfig, circuit_open: Arc<AtomicBool>, clock: Clock) -> Dispatch {
        Dispatch {
            pointer: config
                .order_key
                .as_deref()
                .and_then(|k| k.strip_prefix("json:"))
                .map(str::to_string),
            breaker: flow::Breaker::new(&config.sink, config.circuit, circuit_open),
            pace: config.rate.map(|r| flow::Pace::new(r, clock.clone())),
            config,
            clock,
            schedule: Schedule::default(),
            running: 0,
            probe: None,
            unkeyed: Vec::new(),
        }
    }

    /// Units started and not yet settled.
    pub fn running(&self) -> usize {
        self.running
    }

    /// The sink's pending deliveries known to the schedule.
    #[cfg(test)]
    pub fn pending(&self) -> usize {
        self.schedule.len()
    }

    /// Whether [`Dispatch::add`] needs each delivery's body (to read its order key).
    pub fn needs_bodies(&self) -> bool {
        self.pointer.is_some()
    }

    /// Adds a pending delivery (at start, from the store's rows); `body` gives its order key.
    pub fn add(&mut self, s: Scheduled, body: Option<&[u8]>) {
        let key = self
            .pointer
            .as_deref()
            .zip(body)
            .and_then(|(p, b)| schedule::order_key(p, b));
        self.schedule.insert(s, key);
    }

    /// Takes in deliveries the store queued since the last round. Without an order key this
    /// is bookkeeping only; with one, the new records are read for their keys (in chunks, so
    /// memory stays bounded whatever the bodies' size).
    pub fn arrive(&mut self, port: &mut impl Port, arrivals: Vec<Scheduled>) {
        if self.pointer.is_none() {
            for s in arrivals {
                self.schedule.insert(s, None);
            }
            return;
        }
        let mut new = std::mem::take(&mut self.unkeyed);
        new.extend(
            arrivals
                .into_iter()
                .filter(|s| !self.schedule.contains(s.seq)),
        );
        for (i, chunk) in new.chunks(KEY_READ_CHUNK).enumerate() {
            let seqs: Vec<u64> = chunk.iter().map(|s| s.seq).collect();
            match port.load(&seqs) {
                Ok(records) => {
                    for r in records {
                        if let Some(s) = scheduled(&r) {
                            self.add(s, Some(&r.body));
                        }
                    }
                }
                Err(e) => {
                    // This chunk and every later one wait, so no newer delivery of a key gets
                    // ahead of an older one not read yet.
                    tracing::error!(sink = %self.config.sink, error = %e,
                        "cannot read new deliveries for their order keys; trying again");
                    self.unkeyed = new[i * KEY_READ_CHUNK..].to_vec();
                    return;
                }
            }
        }
    }

    /// Forgets every pending delivery (a start-up read of the pending rows failed part way:
    /// they are read again whole before anything is sent). Only before the first round.
    pub fn forget_pending(&mut self) {
        debug_assert_eq!(self.running, 0, "forgot the schedule with units out");
        self.schedule = Schedule::default();
        self.unkeyed.clear();
    }

    /// Starts what may go now (nothing while `paused`) and says how long to wait at most.
    pub fn dispatch_round(&mut self, port: &mut impl Port, paused: bool) -> Wait {
        let mut round = Round {
            cap: self.config.concurrency,
            hold_until: None,
            fill_until: None,
            filling: HashSet::new(),
            store_error: false,
        };
        if !paused {
            if port.writable() {
                while self.step(port, &mut round) {}
            } else {
                round.store_error = true;
            }
        }
        self.wait(&round, paused)
    }

    /// Takes back a unit that came back from its attempt.
    pub fn settle(&mut self, done: Done) {
        debug_assert!(self.running > 0, "settled a unit that was not sent");
        self.running -= 1;
        match done {
            Done::Attempted(attempted) => {
                let first = attempted.results.first().map(|(seq, _)| *seq);
                let probe = first.is_some() && self.probe == first;
                if probe {
                    self.probe = None;
                }
                self.breaker
                    .record(attempted.health == Health::Up, probe, self.clock.instant());
                for (seq, retry_at) in attempted.results {
                    if attempted.split {
                        self.schedule.set_solo(seq);
                    }
                    self.schedule.settle(seq, retry_at);
                }
            }
            Done::Panicked(seqs) => {
                if seqs.first().is_some_and(|s| self.probe == Some(*s)) {
                    self.probe = None;
                }
                for seq in seqs {
                    self.schedule.give_back(seq, None);
                }
            }
        }
    }

    /// One take of due deliveries, and the units made of them started or held back. `false`
    /// when the round is over: no room, nothing due, something held, or a store error.
    fn step(&mut self, port: &mut impl Port, round: &mut Round) -> bool {
        let now = self.clock.instant();
        let admission = self.breaker.admission(now);
        round.cap = match admission {
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
        // With a rate, one unit per take: the pace is asked unit by unit, and what it holds
        // back would have been read for nothing.
        let units = if self.pace.is_some() {
            1
        } else {
            round.cap - self.running
        };
        let now_ms = self.clock.now_ms();
        let (seqs, truncated) =
            self.schedule
                .take_due(now_ms, units, self.config.limits.max_events, MAX_FETCH);
        if seqs.is_empty() {
            return false;
        }
        let due = match self.load_due(port, &seqs, now_ms) {
            Ok(due) => due,
            Err(e) => {
                tracing::error!(sink = %self.config.sink, error = %e,
                    "cannot read pending deliveries");
                for seq in seqs {
                    self.schedule.give_back(seq, None);
                }
                round.store_error = true;
                return false;
            }
        };
        // A take cut short for room may leave more due behind its last unit, so that unit is
        // not partial for want of deliveries: it is not held.
        let units = self
            .config
            .limits
            .group(due, |d| self.schedule.is_solo(d.seq));
        let last = units.len().saturating_sub(1);
        for (i, unit) in units.into_iter().enumerate() {
            // Only the last unit can be partial: `group` closed the others when full.
            let may_fill = !truncated && i == last;
            let probe = admission == Admission::Probe;
            self.place(port, round, unit, (may_fill, probe), (now, now_ms));
        }
        // Taking again would return the held deliveries again.
        round.hold_until.is_none() && round.fill_until.is_none()
    }

    /// The records of the taken `seqs`, in the order taken. Seqs no longer pending leave the
    /// schedule; records due later than the schedule thought go back at their due time.
    fn load_due(
        &mut self,
        port: &mut impl Port,
        seqs: &[u64],
        now_ms: u64,
    ) -> Result<Vec<DeliveryRecord>, StoreError> {
        let mut by_seq: HashMap<u64, DeliveryRecord> =
            port.load(seqs)?.into_iter().map(|r| (r.seq, r)).collect();
        let mut due = Vec::with_capacity(seqs.len());
        for &seq in seqs {
            match by_seq.remove(&seq) {
                None => self.schedule.remove(seq),
                Some(r) => match r.state {
                    DeliveryState::Pending { due_ms } if due_ms > now_ms => {
                        self.schedule.give_back(seq, Some(due_ms));
                    }
                    _ => due.push(r),
                },
            }
        }
        Ok(due)
    }

    /// Sends `unit`, or holds it back (full, circuit or rate held, or a batch left to fill:
    /// `may_fill` for the last unit of a take that was not cut short).
    fn place(
        &mut self,
        port: &mut impl Port,
        round: &mut Round,
        unit: Vec<DeliveryRecord>,
        (may_fill, probe): (bool, bool),
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
            // Not sent this round: ready again, it stays pending.
            for d in &unit {
                self.schedule.give_back(d.seq, None);
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
        if probe {
            self.probe = unit.first().map(|d| d.seq);
        }
        self.running += 1;
        port.send(unit);
    }

    /// How long to sleep after `round`: until what held it, or the next due delivery, or a
    /// batch's fill deadline, whichever comes first; [`IDLE_POLL`] at most.
    fn wait(&self, round: &Round, paused: bool) -> Wait {
        let now = self.clock.instant();
        let wait = if round.store_error || !self.unkeyed.is_empty() {
            STORE_ERROR_PAUSE
        } else if let Some(t) = round.hold_until {
            t.saturating_duration_since(now)
        } else if paused || self.running >= round.cap {
            IDLE_POLL
        } else {
            match self.schedule.next_due_ms_except(&round.filling) {
                Some(at) => {
                    Duration::from_millis(at.saturating_sub(self.clock.now_ms())).min(IDLE_POLL)
                }
                None => IDLE_POLL,
            }
        };
        // A batch being filled goes at its deadline at the latest; new deliveries (the store's
        // wake-up) or a finished unit re-run the grouping before that.
        Wait(match round.fill_until {
            Some(t) => wait.min(t.saturating_duration_since(now)),
            None => wait,
        })
    }

    /// Arrivals whose order keys wait to be read (tests).
    #[cfg(test)]
    pub fn unread(&self) -> usize {
        self.unkeyed.len()
    }

    /// The schedule (tests check its invariant and its size).
    #[cfg(test)]
    pub fn schedule(&self) -> &Schedule {
        &self.schedule
    }
}

/// A stored record's place in the schedule, if it is pending.
pub(super) fn scheduled(r: &DeliveryRecord) -> Option<Scheduled> {
    match r.state {
        DeliveryState::Pending { due_ms } => Some(Scheduled {
            seq: r.seq,
            due_ms,
            priority: r.priority,
        }),
        _ => None,
    }
}
