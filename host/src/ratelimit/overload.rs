//! Overload protection: refuse new work with 503 while the store is falling behind, instead of
//! holding ever more request bodies in memory.
//!
//! `[server] overload = { max_pending = N, max_commit_latency = "2s" }`. The check runs before a
//! request's body is read and costs a few atomic loads ([`crate::store::StoreLoad`]): the
//! pending-delivery backlog and the latency of recent (or still running) store commits. Nothing
//! already accepted is touched: shedding only refuses new events, and the sender retries after
//! `Retry-After`.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

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
}

/// The configured bounds and how often they tripped.
#[derive(Debug, Default)]
pub struct Overload {
    max_pending: Option<u64>,
    max_commit_latency: Option<Duration>,
    shed: AtomicU64,
    /// Whether the last check refused; logs once per overload episode, not per request.
    tripped: AtomicBool,
}

impl Overload {
    /// Bounds from `[server] overload`; an unset bound never trips.
    pub fn new(config: &OverloadConfig) -> Overload {
        Overload {
            max_pending: config.max_pending,
            max_commit_latency: config.max_commit_latency,
            shed: AtomicU64::new(0),
            tripped: AtomicBool::new(false),
        }
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
