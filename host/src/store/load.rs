//! How far behind the store is, readable per request without touching the database.
//!
//! The writer thread publishes two numbers after every commit: the number of pending deliveries
//! (redb keeps each table's length in its header, so this costs nothing) and how long the commit
//! took. It also marks when a commit starts, so a commit that hangs (a stalled disk) shows up
//! as latency while it is still running, not only once it ends.

use std::sync::Mutex;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use super::Embedded;

/// A commit's latency counts as "recent" for this long; after that a quiet store is assumed
/// fast again, so one slow commit cannot shed load forever (shed requests commit nothing).
const LATENCY_MEMORY: Duration = Duration::from_secs(5);

/// A snapshot of the store's backlog and commit latency.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreLoad {
    /// Deliveries waiting for every sink together (due now or later).
    pub pending: u64,
    /// The slower of the last commit (if recent) and the one running now (if any).
    pub commit_latency: Duration,
}

/// Written by the writer thread, read by request handlers.
pub(super) struct Gauges {
    epoch: Instant,
    pending: AtomicU64,
    /// µs since `epoch` when the running commit began; 0 when idle.
    started_us: AtomicU64,
    last_latency_us: AtomicU64,
    /// µs since `epoch` when the last commit ended.
    last_end_us: AtomicU64,
    /// Why the store cannot be written, while it cannot (a failed commit, until a reopen
    /// succeeds).
    write_error: Mutex<Option<String>>,
}

impl Gauges {
    pub(super) fn new(pending: u64) -> Gauges {
        Gauges {
            epoch: Instant::now(),
            pending: AtomicU64::new(pending),
            started_us: AtomicU64::new(0),
            last_latency_us: AtomicU64::new(0),
            last_end_us: AtomicU64::new(0),
            write_error: Mutex::new(None),
        }
    }

    fn now_us(&self) -> u64 {
        // +1 so that 0 keeps meaning "idle" even in the first microsecond.
        self.epoch.elapsed().as_micros() as u64 + 1
    }

    pub(super) fn commit_started(&self) {
        self.started_us.store(self.now_us(), Ordering::Relaxed);
    }

    /// Records a finished commit (successful or not) and, if it succeeded, the new backlog.
    pub(super) fn commit_ended(&self, pending: Option<u64>) {
        let now = self.now_us();
        let started = self.started_us.swap(0, Ordering::Relaxed);
        if started != 0 {
            crate::telemetry::metrics::store_commit(Duration::from_micros(
                now.saturating_sub(started),
            ));
            self.last_latency_us
                .store(now.saturating_sub(started), Ordering::Relaxed);
            self.last_end_us.store(now, Ordering::Relaxed);
        }
        if let Some(p) = pending {
            self.pending.store(p, Ordering::Relaxed);
        }
    }

    /// Records whether the store takes writes (`None`) or why not.
    pub(super) fn set_write_error(&self, error: Option<String>) {
        crate::telemetry::metrics::store_writable(error.is_none());
        *self.write_error.lock().unwrap_or_else(|e| e.into_inner()) = error;
    }

    /// Sets the backlog (the shared store reads it from the database).
    pub(super) fn set_pending(&self, pending: u64) {
        self.pending.store(pending, Ordering::Relaxed);
    }

    /// Why the store cannot be written now, if it cannot.
    pub(super) fn write_error(&self) -> Option<String> {
        self.write_error
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub(super) fn snapshot(&self) -> StoreLoad {
        let now = self.now_us();
        let running = match self.started_us.load(Ordering::Relaxed) {
            0 => 0,
            started => now.saturating_sub(started),
        };
        let last_end = self.last_end_us.load(Ordering::Relaxed);
        let last = if now.saturating_sub(last_end) <= LATENCY_MEMORY.as_micros() as u64 {
            self.last_latency_us.load(Ordering::Relaxed)
        } else {
            0
        };
        StoreLoad {
            pending: self.pending.load(Ordering::Relaxed),
            commit_latency: Duration::from_micros(running.max(last)),
        }
    }
}

impl Embedded {
    /// The current backlog and commit latency; a few atomic loads.
    pub fn load(&self) -> StoreLoad {
        self.inner.gauges.snapshot()
    }

    /// Why the store cannot take writes right now (the last commit failed and the database
    /// could not be reopened yet), or `None` when it can.
    pub fn write_error(&self) -> Option<String> {
        self.inner.gauges.write_error()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_running_commit_counts_as_latency_and_an_old_one_is_forgotten() {
        let g = Gauges::new(7);
        assert_eq!(g.snapshot().pending, 7);
        assert_eq!(g.snapshot().commit_latency, Duration::ZERO);
        g.commit_started();
        std::thread::sleep(Duration::from_millis(20));
        assert!(g.snapshot().commit_latency >= Duration::from_millis(20));
        g.commit_ended(Some(9));
        let after = g.snapshot();
        assert_eq!(after.pending, 9);
        assert!(after.commit_latency >= Duration::from_millis(20));
        // A slow commit that ended long ago: a quiet store is not "slow".
        let later = Gauges {
            epoch: g.epoch - LATENCY_MEMORY - Duration::from_secs(1),
            ..Gauges::new(0)
        };
        later.last_end_us.store(1, Ordering::Relaxed);
        later.last_latency_us.store(10_000_000, Ordering::Relaxed);
        assert_eq!(later.snapshot().commit_latency, Duration::ZERO);
    }
}
