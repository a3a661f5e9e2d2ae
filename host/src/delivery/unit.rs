//! Units: how one sink's due deliveries are grouped into what one attempt sends.
//!
//! A unit is one delivery or a batch. [`UnitLimits`] holds the sink's bounds (from `batch`, or
//! the implicit batch of sinks that write many at once cheaply) and two pure functions over
//! them: [`UnitLimits::group`] cuts due deliveries into units, and [`UnitLimits::fill_deadline`]
//! says how long a partial batch may wait to fill (`batch.max_wait`). Dispatch calls both; no
//! I/O happens here.

use std::time::Duration;

use crate::config::{SinkConfig, SinkKind};
use crate::event::Priority;
use crate::store::{DeliveryRecord, DeliveryState};

/// Deliveries per unit for sinks without `batch` that write many at once cheaply and in order
/// (`file`, `stdout`: one write and one fsync for the lot; `redis`: one pipeline; `nats`: one
/// flush, then the acks).
const IMPLICIT_BATCH: usize = 64;

/// How many deliveries one unit may hold, and how long a partial one may wait to fill.
#[derive(Debug, Clone, Copy)]
pub(super) struct UnitLimits {
    /// Deliveries per unit at most.
    pub max_events: usize,
    /// Body bytes per unit at most (a single larger delivery still goes, alone).
    pub max_bytes: usize,
    /// `batch.max_wait`: zero sends what is due at once.
    pub max_wait: Duration,
}

impl UnitLimits {
    /// The limits of a sink: its `batch` table, else [`IMPLICIT_BATCH`] for the kinds that
    /// write many at once, else one delivery per unit.
    pub fn for_sink(config: &SinkConfig) -> UnitLimits {
        match (&config.batch, &config.kind) {
            (Some(b), _) => UnitLimits {
                max_events: b.max_events,
                max_bytes: b.max_bytes,
                max_wait: b.max_wait,
            },
            (
                None,
                SinkKind::File(_)
                | SinkKind::Stdout(_)
                | SinkKind::Redis(_)
                | SinkKind::Nats(_)
                | SinkKind::Amqp(_),
            ) => UnitLimits {
                max_events: IMPLICIT_BATCH,
                max_bytes: usize::MAX,
                max_wait: Duration::ZERO,
            },
            (None, _) => UnitLimits {
                max_events: 1,
                max_bytes: usize::MAX,
                max_wait: Duration::ZERO,
            },
        }
    }

    /// Groups due deliveries into units, in order. A high-priority delivery always goes alone,
    /// so it never waits for a batch to fill or ride behind one; so does one that `alone` names
    /// (a batch holding it was refused for good).
    pub fn group(
        &self,
        due: Vec<DeliveryRecord>,
        alone: impl Fn(&DeliveryRecord) -> bool,
    ) -> Vec<Vec<DeliveryRecord>> {
        let mut units: Vec<Vec<DeliveryRecord>> = Vec::new();
        let mut current: Vec<DeliveryRecord> = Vec::new();
        let mut bytes = 0usize;
        for d in due {
            if d.priority == Priority::High || self.max_events == 1 || alone(&d) {
                units.push(vec![d]);
                continue;
            }
            let full = current.len() >= self.max_events
                || (!current.is_empty() && bytes.saturating_add(d.body.len()) > self.max_bytes);
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
    pub fn fill_deadline(&self, unit: &[DeliveryRecord], now_ms: u64) -> Option<u64> {
        if self.max_wait.is_zero()
            || unit.len() >= self.max_events
            || unit.iter().any(|d| d.priority == Priority::High)
        {
            return None;
        }
        let bytes = unit
            .iter()
            .fold(0usize, |sum, d| sum.saturating_add(d.body.len()));
        if bytes >= self.max_bytes {
            return None;
        }
        let oldest = unit
            .iter()
            .map(|d| match d.state {
                DeliveryState::Pending { due_ms } => due_ms,
                _ => now_ms,
            })
            .min()?;
        let deadline = oldest.saturating_add(self.max_wait.as_millis() as u64);
        (deadline > now_ms).then_some(deadline)
    }
}
