//! Flow control of one sink's worker: per-key ordering, the circuit breaker and the rate.
//!
//! - **Ordering** (`order_key = "json:/order_id"`): deliveries with the same key go one at a
//!   time, oldest first. A key is *busy* while one of its deliveries is in flight, and *held*
//!   by its oldest pending delivery while that one waits for a retry, so a newer delivery of the
//!   same key cannot overtake it. Deliveries without the key (not JSON, pointer missing) are
//!   unordered. At start the worker rebuilds the held keys from the store's pending rows.
//! - **Circuit breaker**: after `failures` consecutive failed units the sink is *open*: nothing
//!   is sent for `cooldown` (doubling up to `max_cooldown` while probes keep failing); then one
//!   unit is sent as a probe, and only its success closes the circuit. A dead app costs one
//!   request per cooldown instead of a stream of retries. Gauge `hookwall_sink_circuit_open`.
//! - **Rate** (`rate = "50/s"`): units per second, a GCRA (governor) with a burst of the rate's
//!   count, read on the worker's [`Clock`] so a test can move it.

use std::collections::{HashMap, HashSet};
use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use governor::middleware::NoOpMiddleware;
use governor::state::{InMemoryState, NotKeyed};
use governor::{Quota, RateLimiter};
use tokio::time::Instant;

use crate::clock::Clock;
use crate::config::{CircuitConfig, Rate};
use crate::store::DeliveryRecord;

/// What the breaker lets through now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Admission {
    /// Closed: as many units as concurrency allows.
    Open,
    /// Half-open: one probe unit, if none is in flight.
    Probe,
    /// Open: nothing until then.
    WaitUntil(Instant),
}

/// One sink's circuit breaker: closed, open until a time, or half-open for one probe.
pub(super) struct Breaker {
    config: CircuitConfig,
    failures: u32,
    cooldown: Duration,
    open_until: Option<Instant>,
    sink: String,
    /// Shared with the admin API (`GET /api/v1/sinks`).
    open: Arc<AtomicBool>,
}

impl Breaker {
    /// Closed, with the gauge at 0.
    pub fn new(sink: &str, config: CircuitConfig, open: Arc<AtomicBool>) -> Breaker {
        metrics::gauge!("hookwall_sink_circuit_open", "sink" => sink.to_string()).set(0.0);
        Breaker {
            cooldown: config.cooldown,
            config,
            failures: 0,
            open_until: None,
            sink: sink.to_string(),
            open,
        }
    }

    /// What may go at `now`.
    pub fn admission(&self, now: Instant) -> Admission {
        match self.open_until {
            None => Admission::Open,
            Some(t) if now < t => Admission::WaitUntil(t),
            Some(_) => Admission::Probe,
        }
    }

    /// Records a unit's result.
    pub fn record(&mut self, success: bool, now: Instant) {
        if success {
            if self.open_until.take().is_some() {
                tracing::info!(sink = %self.sink, "circuit closed: the probe succeeded");
                self.set_gauge(false);
            }
            self.failures = 0;
            self.cooldown = self.config.cooldown;
            return;
        }
        self.failures += 1;
        if self.config.failures == 0 {
            return;
        }
        let probing = self.open_until.is_some_and(|t| now >= t);
        if probing {
            self.cooldown = (self.cooldown * 2).min(self.config.max_cooldown);
            self.open_until = Some(now + self.cooldown);
        } else if self.open_until.is_none() && self.failures >= self.config.failures {
            tracing::warn!(sink = %self.sink, failures = self.failures, cooldown = ?self.cooldown,
                "circuit open: pausing the sink, will probe after the cooldown");
            self.open_until = Some(now + self.cooldown);
            self.set_gauge(true);
        }
    }

    fn set_gauge(&self, open: bool) {
        self.open.store(open, Ordering::Relaxed);
        metrics::gauge!("hookwall_sink_circuit_open", "sink" => self.sink.clone()).set(if open {
            1.0
        } else {
            0.0
        });
    }
}

/// Per-key ordering state.
#[derive(Default)]
pub(super) struct Order {
    /// JSON pointer of `order_key = "json:/…"`.
    pointer: Option<String>,
    busy: HashSet<String>,
    /// key → seq of its oldest pending delivery, which waits for a retry.
    held: HashMap<String, u64>,
}

impl Order {
    /// Unordered without `order_key`; nothing busy or held yet.
    pub fn new(order_key: Option<&str>) -> Order {
        Order {
            pointer: order_key
                .and_then(|k| k.strip_prefix("json:"))
                .map(str::to_string),
            ..Order::default()
        }
    }

    /// `d`'s order key: the string or number at the pointer in its JSON body.
    pub fn key(&self, d: &DeliveryRecord) -> Option<String> {
        let pointer = self.pointer.as_ref()?;
        let body: serde_json::Value = serde_json::from_slice(&d.body).ok()?;
        match body.pointer(pointer)? {
            serde_json::Value::String(s) => Some(s.clone()),
            serde_json::Value::Number(n) => Some(n.to_string()),
            _ => None,
        }
    }

    /// Rebuilds the held keys from the sink's pending deliveries (oldest first): a key whose
    /// pending deliveries include a retried one is held by its oldest.
    pub fn restore(&mut self, pending: &[DeliveryRecord]) {
        if self.pointer.is_none() {
            return;
        }
        let mut oldest: HashMap<String, u64> = HashMap::new();
        let mut retried: HashSet<String> = HashSet::new();
        for d in pending {
            if let Some(k) = self.key(d) {
                let seq = oldest.entry(k.clone()).or_insert(d.seq);
                *seq = (*seq).min(d.seq);
                if !d.attempts.is_empty() {
                    retried.insert(k);
                }
            }
        }
        self.held = oldest
            .into_iter()
            .filter(|(k, _)| retried.contains(k))
            .collect();
    }

    /// Whether `d` (with `key`) may be sent now; if so its key becomes busy.
    pub fn admit(&mut self, d: &DeliveryRecord, key: Option<&String>) -> bool {
        let Some(k) = key else {
            return true;
        };
        if self.busy.contains(k) || self.held.get(k).is_some_and(|seq| *seq != d.seq) {
            return false;
        }
        self.busy.insert(k.clone());
        true
    }

    /// A delivery admitted with `key` was not sent after all.
    pub fn release(&mut self, key: &str) {
        self.busy.remove(key);
    }

    /// A delivery with `key` finished an attempt; `retrying` if it is still pending.
    pub fn settle(&mut self, seq: u64, key: &str, retrying: bool) {
        self.busy.remove(key);
        if retrying {
            self.held.insert(key.to_string(), seq);
        } else if self.held.get(key) == Some(&seq) {
            self.held.remove(key);
        }
    }
}

/// Units per time for one sink.
pub(super) struct Pace(RateLimiter<NotKeyed, InMemoryState, PaceClock, NoOpMiddleware<Duration>>);

impl Pace {
    /// At most `rate`, with a burst of its count, on `clock`.
    pub fn new(rate: Rate, clock: Clock) -> Pace {
        let quota = Quota::with_period(rate.interval())
            .unwrap_or_else(|| Quota::per_hour(NonZeroU32::MIN))
            .allow_burst(NonZeroU32::new(rate.count).unwrap_or(NonZeroU32::MIN));
        let clock = PaceClock {
            origin: clock.instant(),
            clock,
        };
        Pace(RateLimiter::direct_with_clock(quota, clock))
    }

    /// `None` if a unit may go now (and takes its cell), else how long to wait.
    pub fn check(&self) -> Option<Duration> {
        use governor::clock::Clock as _;
        self.0
            .check()
            .err()
            .map(|not_until| not_until.wait_time_from(self.0.clock().now()))
    }
}

/// The worker's [`Clock`] as governor reads it: the time since the [`Pace`] was made.
#[derive(Clone)]
struct PaceClock {
    clock: Clock,
    origin: Instant,
}

impl governor::clock::Clock for PaceClock {
    type Instant = Duration;

    fn now(&self) -> Duration {
        self.clock.instant().saturating_duration_since(self.origin)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::event::Priority;
    use crate::store::DeliveryState;

    fn d(seq: u64, body: &str) -> DeliveryRecord {
        DeliveryRecord {
            seq,
            id: format!("e{seq}"),
            event_id: format!("e{seq}"),
            source: "s".into(),
            received_at_ms: 0,
            sink: "k".into(),
            headers: Vec::new(),
            body: body.as_bytes().to_vec(),
            priority: Priority::Normal,
            attempts: Vec::new(),
            state: DeliveryState::Pending { due_ms: 0 },
        }
    }

    #[test]
    fn one_at_a_time_per_key_and_a_retry_holds_its_key() {
        let mut o = Order::new(Some("json:/order_id"));
        let (a1, a2, b1) = (
            d(1, r#"{"order_id":"a"}"#),
            d(2, r#"{"order_id":"a"}"#),
            d(3, r#"{"order_id":7}"#),
        );
        let (ka, kb) = (o.key(&a1), o.key(&b1));
        assert_eq!(kb.as_deref(), Some("7"));
        assert!(o.admit(&a1, ka.as_ref()));
        assert!(!o.admit(&a2, ka.as_ref()), "same key, one in flight");
        assert!(o.admit(&b1, kb.as_ref()), "other keys go in parallel");
        o.settle(1, "a", true);
        assert!(
            !o.admit(&a2, ka.as_ref()),
            "a1 waits for a retry: a2 may not overtake"
        );
        assert!(o.admit(&a1, ka.as_ref()), "the held delivery itself may go");
        o.settle(1, "a", false);
        assert!(o.admit(&a2, ka.as_ref()));
        assert!(o.admit(&d(4, "not json"), None));
    }

    #[test]
    fn the_breaker_opens_probes_and_closes() {
        let cfg = CircuitConfig {
            failures: 3,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(4),
        };
        let mut b = Breaker::new("k", cfg, Arc::default());
        let t = Instant::now();
        b.record(false, t);
        b.record(false, t);
        assert_eq!(b.admission(t), Admission::Open);
        b.record(false, t);
        assert_eq!(
            b.admission(t),
            Admission::WaitUntil(t + Duration::from_secs(1))
        );
        let later = t + Duration::from_secs(1);
        assert_eq!(b.admission(later), Admission::Probe);
        b.record(false, later);
        assert_eq!(
            b.admission(later),
            Admission::WaitUntil(later + Duration::from_secs(2)),
            "a failed probe doubles the cooldown"
        );
        let probe = later + Duration::from_secs(2);
        b.record(true, probe);
        assert_eq!(b.admission(probe), Admission::Open);
    }
}
