//! Unit tests of the delivery engine's pure parts: backoff, outcomes, grouping into units.
//! [`dispatch`] drives the worker's decisions without I/O; [`sim`] drives them through
//! thousands of randomized schedules of time and faults.

mod dispatch;
mod sim;

use std::time::Duration;

use super::attempt::Policy;
use super::dispatch::Health;
use super::unit::UnitLimits;
use super::*;
use crate::config::RetryConfig;
use crate::event::Priority;
use crate::sink::SinkError;
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

fn worker() -> Policy {
    Policy {
        sink: "app".into(),
        retry: retry(),
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
        queued_at_ms: 1_000,
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
        w.outcomes(&fresh, &Err(e.clone()), 2_000, &mut rng).updates[..]
    else {
        panic!("a transient error is retried")
    };
    assert!((2_100..=2_100).contains(&due_ms), "{due_ms}");
    assert_eq!(status, Some(503));

    e.retry_after = Some(Duration::from_secs(7));
    let [DeliveryUpdate::Retry { due_ms, .. }] =
        w.outcomes(&fresh, &Err(e.clone()), 2_000, &mut rng).updates[..]
    else {
        panic!("retried")
    };
    assert_eq!(due_ms, 9_000, "Retry-After wins over the backoff");

    let last = [delivery(1, 9, Priority::Normal)];
    assert!(matches!(
        w.outcomes(&last, &Err(e.clone()), 2_000, &mut rng).updates[..],
        [DeliveryUpdate::Dead { .. }]
    ));
    let mut bad = SinkError::permanent("400");
    bad.status = Some(400);
    assert!(matches!(
        w.outcomes(&fresh, &Err(bad.clone()), 2_000, &mut rng)
            .updates[..],
        [DeliveryUpdate::Dead {
            status: Some(400),
            ..
        }]
    ));
    // Past max_age: no further retry.
    let late = 1_000 + 3_600_000;
    assert!(matches!(
        w.outcomes(&fresh, &Err(SinkError::transient("down")), late, &mut rng)
            .updates[..],
        [DeliveryUpdate::Dead { .. }]
    ));
    assert!(matches!(
        w.outcomes(&fresh, &Ok(()), 2_000, &mut rng).updates[..],
        [DeliveryUpdate::Delivered { .. }]
    ));
}

#[test]
fn retry_after_has_a_floor_and_a_refused_batch_splits() {
    let w = worker();
    let mut rng = rand::rng();
    let fresh = [delivery(1, 0, Priority::Normal)];
    let mut e = SinkError::transient("429");
    e.retry_after = Some(Duration::ZERO);
    let o = w.outcomes(&fresh, &Err(e), 2_000, &mut rng);
    let [DeliveryUpdate::Retry { due_ms, .. }] = o.updates[..] else {
        panic!("retried")
    };
    assert_eq!(due_ms, 2_100, "Retry-After: 0 waits retry.initial");
    assert_eq!(o.health, Health::Failing);

    // A permanent refusal proves the sink is up; of a batch, nobody knows which item was bad:
    // each goes again alone, now, and none is dead-lettered yet.
    let batch = [
        delivery(1, 0, Priority::Normal),
        delivery(2, 0, Priority::Normal),
    ];
    let o = w.outcomes(&batch, &Err(SinkError::permanent("422")), 2_000, &mut rng);
    assert!(o.split);
    assert_eq!(o.health, Health::Up);
    assert!(
        o.updates
            .iter()
            .all(|u| matches!(u, DeliveryUpdate::Retry { due_ms: 2_000, .. }))
    );
    let o = w.outcomes(&fresh, &Err(SinkError::permanent("422")), 2_000, &mut rng);
    assert!(!o.split);
    assert!(matches!(o.updates[..], [DeliveryUpdate::Dead { .. }]));
}

#[test]
fn max_age_counts_from_the_replay_that_queued_it_again() {
    let w = worker();
    let mut rng = rand::rng();
    let mut replayed = delivery(1, 0, Priority::Normal);
    let late = 1_000 + 3_600_000;
    replayed.queued_at_ms = late - 10_000;
    assert!(matches!(
        w.outcomes(
            &[replayed],
            &Err(SinkError::transient("down")),
            late,
            &mut rng
        )
        .updates[..],
        [DeliveryUpdate::Retry { .. }]
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
        .group(due, |_| false)
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
    let units = w.group(due, |_| false);
    assert_eq!(
        units.iter().map(Vec::len).collect::<Vec<_>>(),
        vec![2, 2, 1]
    );
    assert_eq!(w.fill_deadline(&units[2], 1_000), Some(1_200));
}
