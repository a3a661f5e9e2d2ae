//! Unit tests of the delivery engine's pure parts: backoff, outcomes, grouping into units.
//! [`dispatch`] drives the worker's decisions without I/O.

mod dispatch;

use std::sync::Arc;
use std::time::Duration;

use super::unit::UnitLimits;
use super::worker::Worker;
use super::*;
use crate::clock::Clock;
use crate::config::RetryConfig;
use crate::event::Priority;
use crate::sink::{Sink, SinkError};
use crate::store::{Attempt, DeliveryRecord, DeliveryState, DeliveryUpdate};

fn retry() -> RetryConfig {
    RetryConfig {
        max_attempts: 10,
        initial: Duration::from_millis(100),
        max_delay: Duration::from_secs(2),
        max_age: Duration::from_secs(3600),
    }
}

#[test]
fn backoff_grows_and_is_capped() {
    let retry = retry();
    let mut rng = rand::rng();
    for attempt in 1..=20 {
        let d = backoff(&retry, attempt, &mut rng);
        let ceiling = (Duration::from_millis(100) * 2u32.pow(attempt.min(16) - 1))
            .min(Duration::from_secs(2));
        assert!(
            d >= retry.initial && d <= ceiling,
            "attempt {attempt}: {d:?}"
        );
    }
    // The mean of many draws grows with the attempt number until the cap.
    let mut mean = |attempt| {
        (0..2000)
            .map(|_| backoff(&retry, attempt, &mut rng).as_millis())
            .sum::<u128>()
            / 2000
    };
    assert!(mean(2) < mean(3) && mean(3) < mean(4) && mean(4) < mean(5));
}

struct Never;

#[async_trait::async_trait]
impl Sink for Never {
    async fn deliver(&self, _: &[DeliveryRecord]) -> Result<(), SinkError> {
        Err(SinkError::transient("unused"))
    }
}

fn worker() -> Worker {
    let dir = tempfile::tempdir().unwrap();
    Worker {
        name: "app".into(),
        sink: Arc::new(Never),
        retry: retry(),
        // The store is only needed by `attempt`; these tests call `outcomes`.
        store: Store::open(dir.path()).unwrap(),
        clock: Clock::system(),
    }
}

fn limits(unit: usize) -> UnitLimits {
    batching(unit, Duration::ZERO)
}

fn batching(unit: usize, max_wait: Duration) -> UnitLimits {
    UnitLimits {
        max_events: unit,
        max_bytes: 10,
        max_wait,
    }
}

fn delivery(seq: u64, attempts: usize, priority: Priority) -> DeliveryRecord {
    DeliveryRecord {
        seq,
        id: format!("e{seq}:app:0"),
        event_id: format!("e{seq}"),
        source: "s".into(),
        received_at_ms: 1_000,
        sink: "app".into(),
        headers: Vec::new(),
        body: b"1234".to_vec(),
        priority,
        attempts: (0..attempts)
            .map(|i| Attempt {
                at_ms: 1_000 + i as u64,
                error: Some("x".into()),
                status: Some(503),
            })
            .collect(),
        state: DeliveryState::Pending { due_ms: 1_000 },
    }
}

#[tokio::test]
async fn failures_are_classified() {
    let w = worker();
    let mut rng = rand::rng();
    let fresh = [delivery(1, 0, Priority::Normal)];
    let mut e = SinkError::transient("503");
    e.status = Some(503);
    let [DeliveryUpdate::Retry { due_ms, status, .. }] =
        w.outcomes(&fresh, &Err(e.clone()), 2_000, &mut rng)[..]
    else {
        panic!("a transient error is retried")
    };
    assert!((2_100..=2_100).contains(&due_ms), "{due_ms}");
    assert_eq!(status, Some(503));

    e.retry_after = Some(Duration::from_secs(7));
    let [DeliveryUpdate::Retry { due_ms, .. }] =
        w.outcomes(&fresh, &Err(e.clone()), 2_000, &mut rng)[..]
    else {
        panic!("retried")
    };
    assert_eq!(due_ms, 9_000, "Retry-After wins over the backoff");

    let last = [delivery(1, 9, Priority::Normal)];
    assert!(matches!(
        w.outcomes(&last, &Err(e.clone()), 2_000, &mut rng)[..],
        [DeliveryUpdate::Dead { .. }]
    ));
    let mut bad = SinkError::permanent("400");
    bad.status = Some(400);
    assert!(matches!(
        w.outcomes(&fresh, &Err(bad), 2_000, &mut rng)[..],
        [DeliveryUpdate::Dead {
            status: Some(400),
            ..
        }]
    ));
    // Past max_age: no further retry.
    let late = 1_000 + 3_600_000;
    assert!(matches!(
        w.outcomes(&fresh, &Err(SinkError::transient("down")), late, &mut rng)[..],
        [DeliveryUpdate::Dead { .. }]
    ));
    assert!(matches!(
        w.outcomes(&fresh, &Ok(()), 2_000, &mut rng)[..],
        [DeliveryUpdate::Delivered { .. }]
    ));
}

#[tokio::test]
async fn units_respect_limits_and_high_priority_goes_alone() {
    let w = limits(2);
    let due = vec![
        delivery(1, 0, Priority::High),
        delivery(2, 0, Priority::Normal),
        delivery(3, 0, Priority::Normal),
        delivery(4, 0, Priority::Normal),
    ];
    let units: Vec<Vec<u64>> = w
        .group(due)
        .iter()
        .map(|u| u.iter().map(|d| d.seq).collect())
        .collect();
    // max_events 2, max_bytes 10 (bodies are 4 bytes): [2,3] then [4].
    assert_eq!(units, vec![vec![1], vec![2, 3], vec![4]]);
}

#[tokio::test]
async fn a_partial_batch_waits_for_max_wait_from_its_oldest_due_time() {
    let w = batching(3, Duration::from_millis(200));
    let due_at = |seq, due_ms, priority| {
        let mut d = delivery(seq, 0, priority);
        d.state = DeliveryState::Pending { due_ms };
        d
    };
    let partial = [
        due_at(1, 1_050, Priority::Normal),
        due_at(2, 1_000, Priority::Normal),
    ];
    // Held until 200 ms after the oldest (seq 2) became due, and not a moment longer.
    assert_eq!(w.fill_deadline(&partial, 1_000), Some(1_200));
    assert_eq!(w.fill_deadline(&partial, 1_199), Some(1_200));
    assert_eq!(w.fill_deadline(&partial, 1_200), None);
    // Full by count (max_events 3) or by bytes (max_bytes 10; bodies are 4 bytes): at once.
    let full = [
        due_at(1, 1_000, Priority::Normal),
        due_at(2, 1_000, Priority::Normal),
        due_at(3, 1_000, Priority::Normal),
    ];
    assert_eq!(w.fill_deadline(&full, 1_000), None);
    let mut heavy = due_at(1, 1_000, Priority::Normal);
    heavy.body = vec![b'x'; 10];
    assert_eq!(w.fill_deadline(&[heavy], 1_000), None);
    // High priority never waits; without max_wait nothing does.
    assert_eq!(
        w.fill_deadline(&[due_at(1, 1_000, Priority::High)], 1_000),
        None
    );
    assert_eq!(
        batching(3, Duration::ZERO).fill_deadline(&partial, 1_000),
        None
    );

    // Grouping is unchanged by max_wait; the worker asks only about the last unit, since
    // `group` closed the others because the next delivery did not fit (here: 8 + 4 > 10 bytes).
    let due: Vec<_> = (1..=5)
        .map(|s| due_at(s, 1_000, Priority::Normal))
        .collect();
    let units = w.group(due);
    assert_eq!(
        units.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    assert_eq!(w.fill_deadline(&units[2], 1_000), Some(1_200));
}
