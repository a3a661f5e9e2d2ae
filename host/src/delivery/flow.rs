//! Flow control of one sink's worker: the circuit breaker and the rate. (Per-key order is the
//! [`Schedule`](super::schedule::Schedule)'s.)
//!
//! - **Circuit breaker**: after `failures` consecutive failed units the sink is *open*: nothing
//!   is sent for `cooldown` (doubling up to `max_cooldown` while probes keep failing); then one
//!   unit is sent as a probe, and only its result moves the circuit: a success closes it, a
//!   failure doubles the cooldown. A unit sent before the circuit opened and failing later is
//!   not a probe and changes nothing; any success closes the circuit. Only failures of the sink
//!   count: a permanent refusal (a 4xx) proves the receiver is up. A dead app costs one
//!   request per cooldown instead of a stream of retries. Gauge `hookwall_sink_circuit_open`.
//! - **Rate** (`rate = "50/s"`): units per second, a GCRA (governor) with a burst of the rate's
//!   count, read on the worker's [`Clock`] so a test can move it.

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

    /// Records a unit's result: `up` if the sink took it or refused it for good, `probe` if it
    /// is the unit sent as the probe.
    pub fn record(&mut self, up: bool, probe: bool, now: Instant) {
        if up {
            if self.open_until.take().is_some() {
                tracing::info!(sink = %self.sink, "circuit closed: the sink answered");
                self.set_gauge(false);
            }
            self.failures = 0;
            self.cooldown = self.config.cooldown;
            return;
        }
        if self.config.failures == 0 {
            return;
        }
        if self.open_until.is_some() {
            // Open: only the probe's failure counts; a unit sent before the circuit opened
            // was already part of why it opened.
            if probe {
                self.cooldown = (self.cooldown * 2).min(self.config.max_cooldown);
                self.open_until = Some(now + self.cooldown);
            }
            return;
        }
        self.failures += 1;
        if self.failures >= self.config.failures {
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

    #[test]
    fn the_breaker_opens_probes_and_closes() {
        let cfg = CircuitConfig {
            failures: 3,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(4),
        };
        let mut b = Breaker::new("k", cfg, Arc::default());
        let t = Instant::now();
        b.record(false, false, t);
        b.record(false, false, t);
        assert_eq!(b.admission(t), Admission::Open);
        b.record(false, false, t);
        assert_eq!(
            b.admission(t),
            Admission::WaitUntil(t + Duration::from_secs(1))
        );
        let later = t + Duration::from_secs(1);
        assert_eq!(b.admission(later), Admission::Probe);
        b.record(false, false, later);
        assert_eq!(
            b.admission(later),
            Admission::Probe,
            "a unit sent before the circuit opened is not the probe"
        );
        b.record(false, true, later);
        assert_eq!(
            b.admission(later),
            Admission::WaitUntil(later + Duration::from_secs(2)),
            "a failed probe doubles the cooldown"
        );
        let probe = later + Duration::from_secs(2);
        b.record(true, true, probe);
        assert_eq!(b.admission(probe), Admission::Open);
    }
}
