use super::*;
use crate::store::{Attempt, DeliveryState};

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

fn worker(unit: usize) -> Worker {
    let dir = tempfile::tempdir().unwrap();
    Worker {
        name: "app".into(),
        sink: Arc::new(Never),
        retry: retry(),
        concurrency: 4,
        unit: Unit {
            max_events: unit,
            max_bytes: 10,
        },
        order_key: None,
        circuit: CircuitConfig::default(),
        circuit_open: Arc::default(),
        rate: None,
        // The store is only needed by `attempt`; these tests call `outcomes` and `units`.
        store: Store::open(dir.path()).unwrap(),
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
    let w = worker(1);
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
    let w = worker(2);
    let due = vec![
        delivery(1, 0, Priority::High),
        delivery(2, 0, Priority::Normal),
        delivery(3, 0, Priority::Normal),
        delivery(4, 0, Priority::Normal),
    ];
    let units: Vec<Vec<u64>> = w
        .units(due)
        .iter()
        .map(|u| u.iter().map(|d| d.seq).collect())
        .collect();
    // max_events 2, max_bytes 10 (bodies are 4 bytes): [2,3] then [4].
    assert_eq!(units, vec![vec![1], vec![2, 3], vec![4]]);
}
