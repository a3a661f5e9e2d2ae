//! A simulated scheduler: [`Dispatch`] driven in-process through randomized time and faults,
//! at the scale of one sink (TigerBeetle's VOPR and FoundationDB's simulation tests, for one
//! component).
//!
//! Each run draws a sink configuration (concurrency, batching, order key, retry policy,
//! circuit breaker) and a stream of events (hot and cold order keys, unordered bodies, high
//! priority, a few items the receiver always refuses), then plays them against a fake store
//! (a [`Port`] over a map of records) and a fake receiver whose mood changes over time:
//! healthy, flaky, down, throttling with `Retry-After` (including 0), hanging until the
//! attempt's timeout. Faults on top: the disk fills (results cannot be recorded and wait, as
//! the worker's recording loop does), the worker crashes and restarts from the store. The
//! attempts' outcomes come from the real [`Policy`]. Time is a manual clock that jumps to the
//! next thing that happens.
//!
//! Checked after every step:
//! - a delivery is sent only while it is pending and due (backoff and `Retry-After` hold), and
//!   never while another delivery of its key is in flight or an older one of its key pending;
//! - no free delivery waits while a slot is free (no key starves behind a busy one);
//! - a round reads a number of records bounded by what it sends, never by the backlog, and the
//!   schedule holds no bodies: only in-flight units do;
//! - the schedule's own invariant, and that it knows exactly the pending deliveries;
//! - at the end, once the faults stop, every delivery is delivered or dead-lettered, and dead
//!   ones only as configured (attempts, age, or the refused item itself, never its batch).
//!
//! `HOOKWALL_SIM_RUNS` sets the number of runs (default 2,000), `HOOKWALL_SIM_SEED` replays one
//! run; a failure prints its seed and last steps. Seeds that once failed stay in
//! [`REGRESSIONS`].

use std::collections::{BTreeMap, BTreeSet, HashMap, HashSet, VecDeque};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};

use crate::clock::{Clock, ManualTime};
use crate::config::{CircuitConfig, RetryConfig};
use crate::delivery::attempt::{Policy, next_due};
use crate::delivery::dispatch::{Attempted, Dispatch, DispatchConfig, Done, Port, scheduled};
use crate::delivery::schedule::{Scheduled, order_key};
use crate::delivery::unit::UnitLimits;
use crate::event::Priority;
use crate::sink::SinkError;
use crate::store::{Attempt, DeliveryRecord, DeliveryState, DeliveryUpdate, StoreError};

/// Seeds that once failed, replayed first on every run of the suite.
const REGRESSIONS: &[u64] = &[];
const START_MS: u64 = 1_700_000_000_000;
/// An attempt that hangs fails after this long (the sink's timeout).
const TIMEOUT_MS: u64 = 30_000;
const KEYS: [&str; 4] = ["hot", "a", "b", "c"];

/// The fake store: every record, the feed not yet handed over, what was sent.
#[derive(Default)]
struct Model {
    records: BTreeMap<u64, DeliveryRecord>,
    /// The seqs of the pending records.
    pending: BTreeSet<u64>,
    feed: Vec<Scheduled>,
    writable: bool,
    /// Reads fail now and then (an I/O error).
    flaky_reads: bool,
    read_failures: u64,
    loaded: usize,
    sent: Vec<Vec<DeliveryRecord>>,
}

impl Port for Model {
    fn load(&mut self, seqs: &[u64]) -> Result<Vec<DeliveryRecord>, StoreError> {
        if self.flaky_reads {
            // A cheap deterministic coin: the run's rng is not reachable from here.
            self.read_failures = self
                .read_failures
                .wrapping_mul(6364136223846793005)
                .wrapping_add(1442695040888963407);
            if self.read_failures >> 60 == 0 {
                return Err(StoreError::Storage("read error".into()));
            }
        }
        let out: Vec<DeliveryRecord> = seqs
            .iter()
            .filter_map(|s| self.records.get(s))
            .filter(|r| matches!(r.state, DeliveryState::Pending { .. }))
            .cloned()
            .collect();
        self.loaded += out.len();
        Ok(out)
    }

    fn writable(&mut self) -> bool {
        self.writable
    }

    fn send(&mut self, unit: Vec<DeliveryRecord>) {
        self.sent.push(unit);
    }
}

/// The receiver's state of mind, until a time.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Mood {
    Healthy,
    Flaky,
    Down,
    Throttling,
    Hanging,
}

/// A unit out at the receiver: its result is known when it comes back.
struct Flight {
    unit: Vec<DeliveryRecord>,
    back_at_ms: u64,
    result: Result<(), SinkError>,
}

struct Sim {
    rng: StdRng,
    /// Each delivery's order key (read once, at arrival).
    keys: HashMap<u64, Option<String>>,
    time: Arc<ManualTime>,
    config: DispatchConfig,
    policy: Policy,
    dispatch: Dispatch,
    circuit: Arc<AtomicBool>,
    model: Model,
    flights: Vec<Flight>,
    next_seq: u64,
    arrivals_left: usize,
    next_arrival_ms: u64,
    mood: Mood,
    mood_until_ms: u64,
    disk_full_until_ms: Option<u64>,
    /// Items the receiver always refuses (a permanent 4xx).
    bad: HashSet<u64>,
    /// Faults stopped: the receiver heals, the disk and the worker stay up.
    calm: bool,
    wait_ms: u64,
    /// The worker's start-up read of the pending rows has not succeeded yet.
    restoring: bool,
    trace: VecDeque<String>,
}

fn now_ms(time: &Arc<ManualTime>) -> u64 {
    Clock::manual(time.clone()).now_ms()
}

impl Sim {
    fn new(seed: u64) -> Sim {
        let mut rng = StdRng::seed_from_u64(seed);
        let max_events = if rng.random_bool(0.5) {
            1
        } else {
            rng.random_range(2..=8)
        };
        let config = DispatchConfig {
            sink: "app".into(),
            concurrency: rng.random_range(1..=4),
            limits: UnitLimits {
                max_events,
                max_bytes: usize::MAX,
                max_wait: if max_events > 1 && rng.random_bool(0.3) {
                    Duration::from_millis(rng.random_range(1..=300))
                } else {
                    Duration::ZERO
                },
            },
            order_key: rng.random_bool(0.7).then(|| "json:/k".to_string()),
            circuit: CircuitConfig {
                failures: if rng.random_bool(0.3) {
                    0
                } else {
                    rng.random_range(2..=5)
                },
                cooldown: Duration::from_secs(1),
                max_cooldown: Duration::from_secs(8),
            },
            rate: None,
        };
        let retry = RetryConfig {
            max_attempts: rng.random_range(2..=8),
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(5),
            max_age: if rng.random_bool(0.2) {
                Duration::from_secs(20)
            } else {
                Duration::from_secs(3600)
            },
        };
        let time = ManualTime::new(START_MS);
        let circuit = Arc::new(AtomicBool::new(false));
        let dispatch = Dispatch::new(config.clone(), circuit.clone(), Clock::manual(time.clone()));
        let arrivals_left = rng.random_range(1..=250);
        Sim {
            rng,
            keys: HashMap::new(),
            time,
            policy: Policy {
                sink: "app".into(),
                retry,
            },
            config,
            dispatch,
            circuit,
            model: Model {
                writable: true,
                ..Model::default()
            },
            flights: Vec::new(),
            next_seq: 1,
            arrivals_left,
            next_arrival_ms: START_MS,
            mood: Mood::Healthy,
            mood_until_ms: START_MS,
            disk_full_until_ms: None,
            bad: HashSet::new(),
            calm: false,
            wait_ms: 0,
            restoring: false,
            trace: VecDeque::new(),
        }
    }

    fn now(&self) -> u64 {
        now_ms(&self.time)
    }

    fn note(&mut self, line: String) {
        if self.trace.len() == 40 {
            self.trace.pop_front();
        }
        self.trace
            .push_back(format!("t+{} {line}", self.now() - START_MS));
    }

    fn key(&self, r: &DeliveryRecord) -> Option<&String> {
        self.keys.get(&r.seq)?.as_ref()
    }

    /// Plays the run: events and faults, then calm until everything is settled.
    fn run(&mut self) -> Result<(), String> {
        for _ in 0..600 {
            self.step()?;
        }
        self.calm = true;
        self.model.flaky_reads = false;
        self.mood = Mood::Healthy;
        self.disk_full_until_ms = Some(self.now());
        for _ in 0..20_000 {
            if self.settled() {
                return self.check_end();
            }
            self.step()?;
        }
        Err(format!(
            "not settled after the faults stopped: {} pending, {} in flight",
            self.pending().count(),
            self.flights.len()
        ))
    }

    fn settled(&self) -> bool {
        self.arrivals_left == 0 && self.flights.is_empty() && self.pending().next().is_none()
    }

    fn pending(&self) -> impl Iterator<Item = &DeliveryRecord> {
        self.model.pending.iter().map(|s| &self.model.records[s])
    }

    /// Jumps to the next thing that happens, plays it, runs a round, checks.
    fn step(&mut self) -> Result<(), String> {
        let now = self.now();
        let mut next = now + self.wait_ms;
        if self.arrivals_left > 0 {
            next = next.min(self.next_arrival_ms);
        }
        // While the disk is full, units that are back wait for it (their results cannot be
        // recorded): the next thing that happens is then the disk's recovery.
        if self.model.writable
            && let Some(back) = self.flights.iter().map(|f| f.back_at_ms).min()
        {
            next = next.min(back);
        }
        if let Some(t) = self.disk_full_until_ms {
            next = next.min(t.max(now));
        }
        self.time
            .advance(Duration::from_millis(next.saturating_sub(now)));
        self.faults();
        self.come_back();
        self.arrive();
        self.round()
    }

    fn faults(&mut self) {
        let now = self.now();
        if self.disk_full_until_ms.is_some_and(|t| t <= now) {
            self.disk_full_until_ms = None;
            self.model.writable = true;
        }
        if self.calm {
            return;
        }
        if now >= self.mood_until_ms {
            self.mood = match self.rng.random_range(0..10) {
                0..=4 => Mood::Healthy,
                5 => Mood::Flaky,
                6 => Mood::Down,
                7 | 8 => Mood::Throttling,
                _ => Mood::Hanging,
            };
            self.mood_until_ms = now + self.rng.random_range(100..=20_000);
            let mood = self.mood;
            self.note(format!("receiver {mood:?}"));
        }
        if self.model.writable && self.rng.random_bool(0.01) {
            self.model.writable = false;
            self.disk_full_until_ms = Some(now + self.rng.random_range(1..=5_000));
            self.note("disk full".into());
        }
        if self.rng.random_bool(0.005) {
            self.crash();
        }
        if self.rng.random_bool(0.01) {
            self.model.flaky_reads = !self.model.flaky_reads;
            let flaky = self.model.flaky_reads;
            self.note(format!("flaky reads {flaky}"));
        }
    }

    /// The worker dies with its units in flight (their results never recorded) and starts
    /// again from the store's pending rows.
    fn crash(&mut self) {
        self.note(format!("crash with {} units out", self.flights.len()));
        self.flights.clear();
        self.model.feed.clear();
        self.circuit = Arc::new(AtomicBool::new(false));
        self.dispatch = Dispatch::new(
            self.config.clone(),
            self.circuit.clone(),
            Clock::manual(self.time.clone()),
        );
        self.restoring = true;
    }

    /// The worker's start-up read of the pending rows, in the store's index order (priority,
    /// due time, seq), which can fail part way like any read; the worker then empties its
    /// schedule and reads again later, sending nothing meanwhile.
    fn restore(&mut self) -> bool {
        let mut pending: Vec<Scheduled> = self.pending().filter_map(scheduled).collect();
        pending.sort_by_key(|q| (q.priority.rank(), q.due_ms, q.seq));
        let fail_at = (self.model.flaky_reads && self.rng.random_bool(0.3))
            .then(|| self.rng.random_range(0..=pending.len()));
        for (i, q) in pending.into_iter().enumerate() {
            if fail_at == Some(i) {
                self.note(format!("restore failed after {i} rows"));
                self.dispatch.forget_pending();
                return false;
            }
            let body = self.model.records[&q.seq].body.clone();
            let body = self.dispatch.needs_bodies().then_some(body.as_slice());
            self.dispatch.add(q, body);
        }
        true
    }

    /// Units whose answer is in come back: their outcomes are recorded (or wait for the disk,
    /// holding their slot, as the worker's recording loop does) and dispatch settles them.
    fn come_back(&mut self) {
        let now = self.now();
        if !self.model.writable {
            return;
        }
        let (back, out): (Vec<Flight>, Vec<Flight>) =
            self.flights.drain(..).partition(|f| f.back_at_ms <= now);
        self.flights = out;
        for f in back {
            let outcomes = self.policy.outcomes(&f.unit, &f.result, now, &mut self.rng);
            for u in &outcomes.updates {
                self.record(u);
            }
            let seqs: Vec<u64> = f.unit.iter().map(|d| d.seq).collect();
            self.note(format!("back {seqs:?} ok={}", f.result.is_ok()));
            self.dispatch.settle(Done::Attempted(Attempted {
                results: outcomes.updates.iter().map(next_due).collect(),
                health: outcomes.health,
                split: outcomes.split,
            }));
        }
    }

    /// The store's side of an update (first outcome wins).
    fn record(&mut self, u: &DeliveryUpdate) {
        let (seq, _) = next_due(u);
        let Some(r) = self.model.records.get_mut(&seq) else {
            return;
        };
        if !matches!(r.state, DeliveryState::Pending { .. }) {
            return;
        }
        let (at_ms, error, status, state) = match u {
            DeliveryUpdate::Delivered { at_ms, .. } => (
                *at_ms,
                None,
                None,
                DeliveryState::Delivered { at_ms: *at_ms },
            ),
            DeliveryUpdate::Retry {
                at_ms,
                error,
                status,
                due_ms,
                ..
            } => (
                *at_ms,
                Some(error.clone()),
                *status,
                DeliveryState::Pending { due_ms: *due_ms },
            ),
            DeliveryUpdate::Dead {
                at_ms,
                error,
                status,
                ..
            } => (
                *at_ms,
                Some(error.clone()),
                *status,
                DeliveryState::Dead {
                    reason: error.clone(),
                },
            ),
        };
        r.attempts.push(Attempt {
            at_ms,
            error,
            status,
        });
        if !matches!(state, DeliveryState::Pending { .. }) {
            self.model.pending.remove(&seq);
        }
        r.state = state;
    }

    /// New events accepted by the store (and published to the feed).
    fn arrive(&mut self) {
        let now = self.now();
        while self.arrivals_left > 0 && self.next_arrival_ms <= now {
            self.arrivals_left -= 1;
            let seq = self.next_seq;
            self.next_seq += 1;
            let body = match self.rng.random_range(0..10) {
                0 => "not json".to_string(),
                1 => r#"{"no":"key"}"#.to_string(),
                2..=5 => r#"{"k":"hot"}"#.to_string(),
                n => format!(r#"{{"k":"{}"}}"#, KEYS[n % KEYS.len()]),
            };
            let priority = if self.rng.random_bool(0.1) {
                Priority::High
            } else {
                Priority::Normal
            };
            if self.rng.random_bool(0.02) {
                self.bad.insert(seq);
            }
            let record =
                DeliveryRecord::pending_for_test(seq, "app", body.into_bytes(), priority, now);
            let key = self
                .config
                .order_key
                .as_deref()
                .and_then(|k| k.strip_prefix("json:"))
                .and_then(|p| order_key(p, &record.body));
            self.keys.insert(seq, key);
            self.model.feed.push(scheduled(&record).expect("pending"));
            self.model.records.insert(seq, record);
            self.model.pending.insert(seq);
            let gap = if self.rng.random_bool(0.3) {
                0
            } else {
                self.rng.random_range(1..=500)
            };
            self.next_arrival_ms = now + gap;
        }
    }

    /// What the receiver does with a unit: when it answers, and what.
    fn answer(&mut self, unit: &[DeliveryRecord]) -> (u64, Result<(), SinkError>) {
        let latency = self.rng.random_range(1..=300);
        let refused = unit.iter().any(|d| self.bad.contains(&d.seq));
        match self.mood {
            Mood::Down => (1, Err(SinkError::transient("connection refused"))),
            Mood::Hanging => (TIMEOUT_MS, Err(SinkError::transient("timed out"))),
            _ if refused => (latency, Err(SinkError::permanent("422"))),
            Mood::Throttling => {
                let mut e = SinkError::transient("429");
                e.retry_after = Some(Duration::from_millis(
                    [0, 0, 500, 1_000, 5_000, 60_000][self.rng.random_range(0..6)],
                ));
                (latency, Err(e))
            }
            Mood::Flaky if self.rng.random_bool(0.5) => (latency, Err(SinkError::transient("503"))),
            _ => (latency, Ok(())),
        }
    }

    /// A dispatch round, with the checks of what it sent and of the state after it.
    fn round(&mut self) -> Result<(), String> {
        if self.restoring {
            self.restoring = !self.restore();
            if self.restoring {
                self.wait_ms = 1_000;
                return Ok(());
            }
        }
        let feed = std::mem::take(&mut self.model.feed);
        self.dispatch.arrive(&mut self.model, feed);
        let loaded = self.model.loaded;
        let wait = self.dispatch.dispatch_round(&mut self.model, false);
        self.wait_ms = wait.0.as_millis() as u64;
        let loaded = self.model.loaded - loaded;
        let units = std::mem::take(&mut self.model.sent);
        let sent: usize = units.iter().map(Vec::len).sum();
        // What a round reads beyond what it sends is at most one batch left to fill.
        let bound = sent + self.config.limits.max_events;
        if loaded > bound {
            return Err(format!("a round read {loaded} records to send {sent}"));
        }
        for unit in units {
            self.check_send(&unit)?;
            let (latency, result) = self.answer(&unit);
            let seqs: Vec<u64> = unit.iter().map(|d| d.seq).collect();
            self.note(format!("send {seqs:?} -> {:?}", result.as_ref().err()));
            self.flights.push(Flight {
                unit,
                back_at_ms: self.now() + latency,
                result,
            });
        }
        self.check_state()
    }

    fn in_flight(&self) -> impl Iterator<Item = &DeliveryRecord> {
        self.flights.iter().flat_map(|f| f.unit.iter())
    }

    /// A unit about to go: every delivery pending, due, and first of its key.
    fn check_send(&self, unit: &[DeliveryRecord]) -> Result<(), String> {
        let now = self.now();
        if unit.is_empty() || unit.len() > self.config.limits.max_events {
            return Err(format!("a unit of {} deliveries", unit.len()));
        }
        for d in unit {
            let stored = &self.model.records[&d.seq];
            let DeliveryState::Pending { due_ms } = stored.state else {
                return Err(format!("sent {} which is {:?}", d.seq, stored.state));
            };
            if due_ms > now {
                return Err(format!(
                    "sent {} {} ms before it is due",
                    d.seq,
                    due_ms - now
                ));
            }
            if self.in_flight().any(|f| f.seq == d.seq) {
                return Err(format!("sent {} while it is in flight", d.seq));
            }
            let Some(key) = self.key(d) else {
                continue;
            };
            if let Some(busy) = self
                .in_flight()
                .chain(unit.iter().filter(|o| o.seq != d.seq))
                .find(|o| self.key(o) == Some(key))
            {
                return Err(format!(
                    "sent {} while {} of key {key} is in flight",
                    d.seq, busy.seq
                ));
            }
            if let Some(older) = self
                .pending()
                .find(|o| o.seq < d.seq && self.key(o) == Some(key))
            {
                return Err(format!(
                    "sent {} while {} of key {key} is older and pending",
                    d.seq, older.seq
                ));
            }
        }
        Ok(())
    }

    /// After a round: the schedule is sound and complete, bodies are held only by units out,
    /// and no free delivery waits while a slot is free.
    fn check_state(&self) -> Result<(), String> {
        if self.restoring {
            return Ok(());
        }
        let schedule = self.dispatch.schedule();
        schedule.check()?;
        let pending = self.pending().count();
        if schedule.len() + self.dispatch.unread() != pending {
            return Err(format!(
                "the schedule knows {} deliveries (and {} wait to be read), the store has \
                 {pending} pending",
                schedule.len(),
                self.dispatch.unread()
            ));
        }
        let out: usize = self.flights.iter().map(|f| f.unit.len()).sum();
        if schedule.taken() != out {
            return Err(format!(
                "{} taken between rounds, {out} in flight",
                schedule.taken()
            ));
        }
        let idle = self.flights.len() < self.config.concurrency
            && self.model.writable
            && !self.model.flaky_reads
            && !self.circuit.load(Ordering::Relaxed)
            && self.config.limits.max_wait.is_zero();
        if !idle {
            return Ok(());
        }
        let now = self.now();
        let flying: HashSet<u64> = self.in_flight().map(|d| d.seq).collect();
        let busy: HashSet<&String> = self.in_flight().filter_map(|d| self.key(d)).collect();
        let mut heads: HashMap<&String, u64> = HashMap::new();
        for r in self.pending() {
            if let Some(k) = self.key(r) {
                heads.entry(k).or_insert(r.seq);
            }
        }
        for r in self.pending() {
            let DeliveryState::Pending { due_ms } = r.state else {
                continue;
            };
            let free = match self.key(r) {
                None => true,
                Some(k) => !busy.contains(k) && heads[k] == r.seq,
            };
            if due_ms <= now && free && !flying.contains(&r.seq) {
                return Err(format!(
                    "{} is due and free but waits while a slot is free",
                    r.seq
                ));
            }
        }
        Ok(())
    }

    /// Once calm: everything settled, and dead-lettered only as configured.
    fn check_end(&self) -> Result<(), String> {
        let retry = &self.policy.retry;
        for r in self.model.records.values() {
            match &r.state {
                DeliveryState::Delivered { .. } => {
                    if self.bad.contains(&r.seq) {
                        return Err(format!("{} was refused yet delivered", r.seq));
                    }
                }
                DeliveryState::Dead { reason } => {
                    let exhausted = r.attempts.len() as u32 >= retry.max_attempts;
                    let last = r.attempts.last().map_or(0, |a| a.at_ms);
                    let expired = last + retry.max_delay.as_millis() as u64 + 60_000
                        > r.queued_at_ms + retry.max_age.as_millis() as u64;
                    let refused = reason.starts_with("permanent");
                    if refused && !self.bad.contains(&r.seq) {
                        return Err(format!("{} dead-lettered for its batch: {reason}", r.seq));
                    }
                    if !refused && !exhausted && !expired {
                        return Err(format!(
                            "{} dead-lettered after {} attempts: {reason}",
                            r.seq,
                            r.attempts.len()
                        ));
                    }
                }
                other => return Err(format!("{} ended {other:?}", r.seq)),
            }
        }
        Ok(())
    }
}

fn play(seed: u64) {
    let mut sim = Sim::new(seed);
    if let Err(e) = sim.run() {
        let trace: Vec<String> = sim.trace.iter().cloned().collect();
        panic!(
            "simulation seed {seed} failed: {e}\n\
             replay it with HOOKWALL_SIM_SEED={seed}; config {:?}, retry {:?}\n\
             last steps:\n  {}",
            sim.config,
            sim.policy.retry,
            trace.join("\n  ")
        );
    }
}

#[test]
fn randomized_schedules_keep_every_delivery_guarantee() {
    if let Some(seed) = std::env::var("HOOKWALL_SIM_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
    {
        play(seed);
        return;
    }
    for &seed in REGRESSIONS {
        play(seed);
    }
    let runs: u64 = std::env::var("HOOKWALL_SIM_RUNS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2_000);
    for seed in 0..runs {
        play(seed);
    }
}
