//! Overload protection: refuse new work with 503 while the store is falling behind, or while
//! the request bodies in memory would pass their budget, instead of holding ever more bodies.
//!
//! `[server] overload = { max_pending = N, max_commit_latency = "2s",
//! max_body_bytes_in_flight = B }`. The checks run before a request's body is read. The store's
//! bounds cost a few atomic loads ([`crate::store::StoreLoad`]): the pending-delivery backlog and
//! the latency of recent (or still running) store commits. The body budget (on by default) is a
//! semaphore of bytes: a request reserves its `Content-Length` (or its source's `max_body_bytes`
//! without one) before its body is read and holds the reservation until it is answered, so the
//! bodies in memory never pass the budget, however many connections send at once. Nothing
//! already accepted is touched: shedding only refuses new events, and the sender retries after
//! `Retry-After`.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use crate::config::OverloadConfig;
use crate::store::StoreLoad;

/// `Retry-After` on a shed request: long enough for a backlog to drain a little.
pub const RETRY_AFTER: Duration = Duration::from_secs(5);

/// Why the server is refusing new work.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Overloaded {
    /// Too many deliveries are waiting.
    #[error("{pending} deliveries are pending (limit {max})")]
    Backlog {
        /// Deliveries pending in the store.
        pending: u64,
        /// `[server] overload.max_pending`.
        max: u64,
    },
    /// Store commits are too slow.
    #[error("store commits take {latency:?} (limit {max:?})")]
    CommitLatency {
        /// How long recent (or still running) store commits took.
        latency: Duration,
        /// `[server] overload.max_commit_latency`.
        max: Duration,
    },
    /// The bodies in memory would pass their budget.
    #[error("{requested} more body bytes would pass the budget of {max} in flight")]
    BodyBudget {
        /// What this request would hold.
        requested: u64,
        /// `[server] overload.max_body_bytes_in_flight`.
        max: u64,
    },
}

impl Overloaded {
    /// How long the sender should wait: a body budget frees within a request's time, a backlog
    /// or a slow disk takes longer.
    pub fn retry_after(&self) -> Duration {
        match self {
            Overloaded::BodyBudget { .. } => Duration::from_secs(1),
            _ => RETRY_AFTER,
        }
    }
}

/// A request body's share of the budget, given back when dropped (once it is answered).
#[derive(Debug)]
pub struct BodyPermit {
    held: Option<OwnedSemaphorePermit>,
}

impl Drop for BodyPermit {
    fn drop(&mut self) {
        if let Some(held) = &self.held {
            crate::telemetry::metrics::body_bytes_in_flight(-(held.num_permits() as f64));
        }
    }
}

/// The configured bounds and how often they tripped.
#[derive(Debug, Default)]
pub struct Overload {
    max_pending: Option<u64>,
    max_commit_latency: Option<Duration>,
    shed: AtomicU64,
    /// Whether the last check refused; logs once per overload episode, not per request.
    tripped: AtomicBool,
    /// The body budget in bytes (`None`: off) and what is left of it.
    bodies: Option<(u64, Arc<Semaphore>)>,
}

impl Overload {
    /// Bounds from `[server] overload`; an unset bound never trips.
    pub fn new(config: &OverloadConfig) -> Overload {
        Overload {
            max_pending: config.max_pending,
            max_commit_latency: config.max_commit_latency,
            shed: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
            bodies: (config.max_body_bytes_in_flight > 0).then(|| {
                let max = config
                    .max_body_bytes_in_flight
                    .min(Semaphore::MAX_PERMITS as u64);
                (max, Arc::new(Semaphore::new(max as usize)))
            }),
        }
    }

    /// Reserves `bytes` of the body budget for one request (a body larger than the whole
    /// budget reserves all of it), or says it would pass the budget.
    pub fn reserve_body(&self, bytes: u64) -> Result<BodyPermit, Overloaded> {
        let Some((max, budget)) = &self.bodies else {
            return Ok(BodyPermit { held: None });
        };
        let wanted = bytes.min(*max).min(u64::from(u32::MAX)) as u32;
        let verdict = budget
            .clone()
            .try_acquire_many_owned(wanted)
            .map(|p| {
                crate::telemetry::metrics::body_bytes_in_flight(f64::from(wanted));
                BodyPermit { held: Some(p) }
            })
            .map_err(|_| Overloaded::BodyBudget {
                requested: bytes,
                max: *max,
            });
        self.count(verdict.as_ref().map(|_| ()).map_err(Clone::clone))?;
        verdict
    }

    /// Whether a new request may be read, given the store's `load`.
    pub fn check(&self, load: StoreLoad) -> Result<(), Overloaded> {
        let verdict = if let Some(max) = self.max_pending
            && load.pending >= max
        {
            Err(Overloaded::Backlog {
                pending: load.pending,
                max,
            })
        } else if let Some(max) = self.max_commit_latency
            && load.commit_latency > max
        {
            Err(Overloaded::CommitLatency {
                latency: load.commit_latency,
                max,
            })
        } else {
            Ok(())
        };
        self.count(verdict)
    }

    /// Counts and logs a refusal (once per episode), and passes the verdict on.
    fn count(&self, verdict: Result<(), Overloaded>) -> Result<(), Overloaded> {
        match &verdict {
            Err(reason) => {
                self.shed.fetch_add(1, Ordering::Relaxed);
                if !self.tripped.swap(true, Ordering::Relaxed) {
                    tracing::warn!(%reason, "overloaded: refusing new events with 503 until the store catches up");
                }
            }
            Ok(()) => {
                if self.tripped.swap(false, Ordering::Relaxed) {
                    tracing::info!("no longer overloaded: taking new events again");
                }
            }
        }
        verdict
    }

    /// Requests refused so far.
    pub fn shed(&self) -> u64 {
        self.shed.load(Ordering::Relaxed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(pending: u64, latency_ms: u64) -> StoreLoad {
        StoreLoad {
            pending,
            commit_latency: Duration::from_millis(latency_ms),
        }
    }

    #[test]
    fn each_bound_trips_on_its_own_and_unset_bounds_never_do() {
        let off = Overload::new(&OverloadConfig::default());
        assert_eq!(off.check(load(u64::MAX, 60_000)), Ok(()));

        let on = Overload::new(&OverloadConfig {
            max_pending: Some(10),
            max_commit_latency: Some(Duration::from_millis(500)),
            ..OverloadConfig::default()
        });
        assert_eq!(on.check(load(9, 500)), Ok(()));
        assert_eq!(
            on.check(load(10, 0)),
            Err(Overloaded::Backlog {
                pending: 10,
                max: 10
            })
        );
        assert!(matches!(
            on.check(load(0, 501)),
            Err(Overloaded::CommitLatency { .. })
        ));
        assert_eq!(on.shed(), 2);
    }
}

#[cfg(test)]
mod body_tests {
    use super::*;

    #[test]
    fn bodies_reserve_their_bytes_until_answered() {
        let o = Overload::new(&OverloadConfig {
            max_body_bytes_in_flight: 1000,
            ..OverloadConfig::default()
        });
        let a = o.reserve_body(600).unwrap();
        assert!(matches!(
            o.reserve_body(500),
            Err(Overloaded::BodyBudget {
                requested: 500,
                max: 1000
            })
        ));
        let b = o.reserve_body(400).unwrap();
        drop(a);
        let huge = o.reserve_body(5_000);
        assert!(huge.is_err(), "the whole budget, while 400 bytes are held");
        drop(b);
        let _all = o
            .reserve_body(5_000)
            .expect("larger than the budget: takes all of it");
        assert_eq!(o.shed(), 2);
        let off = Overload::new(&OverloadConfig {
            max_body_bytes_in_flight: 0,
            ..OverloadConfig::default()
        });
        let _held: Vec<_> = (0..10)
            .map(|_| off.reserve_body(u64::MAX).unwrap())
            .collect();
    }
}
