//! Time, on the ground floor: every stage that reads the clock reads it here, so a test can
//! drive time instead of sleeping through it.
//!
//! Two readings: wall-clock milliseconds since the Unix epoch ([`now_ms`], what events and
//! deliveries record, due times in the store) and a monotonic instant (timeouts, backoff
//! schedules within one process). [`Clock`] bundles both behind one handle; [`Clock::system`]
//! reads the machine's clocks, [`Clock::manual`] a time a test moves with [`ManualTime`].

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

/// Milliseconds since the Unix epoch, from the system clock (0 before 1970).
#[allow(clippy::disallowed_methods)] // The one place the system's wall clock is read.
pub fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// An injectable clock: the system's, or a manual one for tests. Cheap to clone.
#[derive(Clone, Debug, Default)]
pub struct Clock {
    manual: Option<Arc<ManualTime>>,
}

impl Clock {
    /// The machine's clocks.
    pub fn system() -> Clock {
        Clock { manual: None }
    }

    /// A clock that stands still until `time` is advanced.
    pub fn manual(time: Arc<ManualTime>) -> Clock {
        Clock { manual: Some(time) }
    }

    /// Wall-clock milliseconds since the Unix epoch.
    pub fn now_ms(&self) -> u64 {
        match &self.manual {
            None => now_ms(),
            Some(t) => t.ms.load(Ordering::Relaxed),
        }
    }

    /// A monotonic instant (tokio's, so paused-time tests see it move too).
    pub fn instant(&self) -> tokio::time::Instant {
        match &self.manual {
            None => tokio::time::Instant::now(),
            Some(t) => t.origin + Duration::from_millis(t.ms.load(Ordering::Relaxed) - t.start_ms),
        }
    }
}

/// The time a manual [`Clock`] reads; tests move it forward.
#[derive(Debug)]
pub struct ManualTime {
    ms: AtomicU64,
    start_ms: u64,
    origin: tokio::time::Instant,
}

impl ManualTime {
    /// Starts at `start_ms` (wall-clock milliseconds).
    pub fn new(start_ms: u64) -> Arc<ManualTime> {
        Arc::new(ManualTime {
            ms: AtomicU64::new(start_ms),
            start_ms,
            origin: tokio::time::Instant::now(),
        })
    }

    /// Moves the time forward by `by`.
    pub fn advance(&self, by: Duration) {
        self.ms.fetch_add(by.as_millis() as u64, Ordering::Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_manual_clock_moves_only_when_told() {
        let time = ManualTime::new(1_000);
        let clock = Clock::manual(time.clone());
        let before = clock.instant();
        assert_eq!(clock.now_ms(), 1_000);
        time.advance(Duration::from_millis(250));
        assert_eq!(clock.now_ms(), 1_250);
        assert_eq!(clock.instant() - before, Duration::from_millis(250));
        assert!(Clock::system().now_ms() > 1_600_000_000_000);
    }
}
