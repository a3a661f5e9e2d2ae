//! [`Dispatch`] driven without I/O: a fake [`Port`] stands for the store's pending rows and
//! records what is sent, a manual clock stands for time. Each test plays rounds and
//! completions and checks what goes out and how long the worker would sleep.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use crate::clock::{Clock, ManualTime};
use crate::config::{CircuitConfig, Rate};
use crate::delivery::dispatch::{
    Attempted, Dispatch, DispatchConfig, Done, Health, IDLE_POLL, Port, STORE_ERROR_PAUSE, Wait,
};
use crate::delivery::schedule::Scheduled;
use crate::delivery::unit::UnitLimits;
use crate::event::Priority;
use crate::store::{Attempt, DeliveryRecord, DeliveryState, StoreError};

const START_MS: u64 = 1_000_000;

/// The sink's pending rows (as the store keeps them), what the store's feed has not handed
/// over yet, and the units sent.
#[derive(Default)]
struct FakePort {
    pending: Vec<DeliveryRecord>,
    arrivals: Vec<Scheduled>,
    sent: Vec<Vec<u64>>,
    broken: bool,
    /// Records read so far.
    loaded: usize,
}

impl Port for FakePort {
    fn load(&mut self, seqs: &[u64]) -> Result<Vec<DeliveryRecord>, StoreError> {
        if self.broken {
            return Err(StoreError::Storage("disk on fire".into()));
        }
        let wanted: std::collections::HashSet<u64> = seqs.iter().copied().collect();
        let found: Vec<DeliveryRecord> = self
            .pending
            .iter()
            .filter(|d| wanted.contains(&d.seq))
            .cloned()
            .collect();
        self.loaded += found.len();
        Ok(found)
    }

    fn writable(&mut self) -> bool {
        true
    }

    fn send(&mut self, unit: Vec<DeliveryRecord>) {
        self.sent.push(unit.iter().map(|d| d.seq).collect());
    }
}

/// A dispatch with its fake port, its manual time and its circuit flag.
struct Rig {
    dispatch: Dispatch,
    port: FakePort,
    time: Arc<ManualTime>,
    circuit_open: Arc<AtomicBool>,
}

fn config() -> DispatchConfig {
    DispatchConfig::simple("app")
}

fn ms(ms: u64) -> Duration {
    Duration::from_millis(ms)
}

impl Rig {
    fn new(config: DispatchConfig) -> Rig {
        let time = ManualTime::new(START_MS);
        let circuit_open = Arc::new(AtomicBool::new(false));
        Rig {
            dispatch: Dispatch::new(config, circuit_open.clone(), Clock::manual(time.clone())),
            port: FakePort::default(),
            time,
            circuit_open,
        }
    }

    fn now_ms(&self) -> u64 {
        Clock::manual(self.time.clone()).now_ms()
    }

    /// Adds a pending delivery due `in_ms` from now, with `body`.
    fn add(&mut self, seq: u64, in_ms: u64, body: &str) {
        let due_ms = self.now_ms() + in_ms;
        self.port.pending.push(DeliveryRecord::pending_for_test(
            seq,
            "app",
            body.as_bytes().to_vec(),
            Priority::Normal,
            due_ms,
        ));
        self.port.arrivals.push(Scheduled {
            seq,
            due_ms,
            priority: Priority::Normal,
        });
    }

    /// One round; the units it sent and how long the worker would sleep.
    fn round(&mut self) -> (Vec<Vec<u64>>, Wait) {
        self.round_paused(false)
    }

    fn round_paused(&mut self, paused: bool) -> (Vec<Vec<u64>>, Wait) {
        let arrivals = std::mem::take(&mut self.port.arrivals);
        self.dispatch.arrive(&mut self.port, arrivals);
        let wait = self.dispatch.dispatch_round(&mut self.port, paused);
        (std::mem::take(&mut self.port.sent), wait)
    }

    fn advance(&self, by: Duration) {
        self.time.advance(by);
    }

    /// The unit of `seqs` was delivered: the store drops the rows, dispatch settles it.
    fn delivered(&mut self, seqs: &[u64]) {
        self.port.pending.retain(|d| !seqs.contains(&d.seq));
        self.dispatch.settle(Done::Attempted(Attempted {
            results: seqs.iter().map(|s| (*s, None)).collect(),
            health: Health::Up,
            split: false,
        }));
    }

    /// The unit of `seqs` failed: the store reschedules the rows `in_ms` from now.
    fn failed(&mut self, seqs: &[u64], in_ms: u64) {
        let (now_ms, due_ms) = (self.now_ms(), self.now_ms() + in_ms);
        for d in self
            .port
            .pending
            .iter_mut()
            .filter(|d| seqs.contains(&d.seq))
        {
            d.attempts.push(Attempt {
                at_ms: now_ms,
                error: Some("503".into()),
                status: Some(503),
            });
            d.state = DeliveryState::Pending { due_ms };
        }
        self.dispatch.settle(Done::Attempted(Attempted {
            results: seqs.iter().map(|s| (*s, Some(due_ms))).collect(),
            health: Health::Failing,
            split: false,
        }));
    }
}

#[test]
fn a_round_fills_the_concurrency_and_a_settled_unit_frees_a_slot() {
    let mut rig = Rig::new(DispatchConfig {
        concurrency: 2,
        ..config()
    });
    for seq in 1..=3 {
        rig.add(seq, 0, "{}");
    }
    assert_eq!(
        rig.round(),
        (vec![vec![1], vec![2]], Wait(IDLE_POLL)),
        "two slots: the third waits for one to free"
    );
    assert_eq!(rig.dispatch.running(), 2);
    rig.delivered(&[1]);
    assert_eq!(rig.round(), (vec![vec![3]], Wait(IDLE_POLL)));
    rig.delivered(&[2]);
    rig.delivered(&[3]);
    assert_eq!(rig.round(), (vec![], Wait(IDLE_POLL)), "nothing pending");
    assert_eq!(rig.dispatch.running(), 0);
}

#[test]
fn it_sleeps_until_the_next_due_delivery_and_sends_it_then() {
    let mut rig = Rig::new(config());
    rig.add(1, 250, "{}");
    assert_eq!(rig.round(), (vec![], Wait(ms(250))));
    rig.advance(ms(100));
    assert_eq!(rig.round(), (vec![], Wait(ms(150))));
    rig.advance(ms(150));
    assert_eq!(rig.round(), (vec![vec![1]], Wait(IDLE_POLL)));
    // Far-off retries are looked at again after the idle poll at most.
    rig.failed(&[1], 3_600_000);
    assert_eq!(rig.round(), (vec![], Wait(IDLE_POLL)));
}

#[test]
fn a_paused_sink_sends_nothing_and_a_store_error_backs_off() {
    let mut rig = Rig::new(config());
    rig.add(1, 0, "{}");
    assert_eq!(rig.round_paused(true), (vec![], Wait(IDLE_POLL)));
    rig.port.broken = true;
    assert_eq!(rig.round(), (vec![], Wait(STORE_ERROR_PAUSE)));
    rig.port.broken = false;
    assert_eq!(rig.round(), (vec![vec![1]], Wait(IDLE_POLL)));
}

#[test]
fn one_delivery_per_key_at_a_time_and_a_retry_holds_its_key() {
    let mut rig = Rig::new(DispatchConfig {
        order_key: Some("json:/k".into()),
        ..config()
    });
    rig.add(1, 0, r#"{"k":"a"}"#);
    rig.add(2, 0, r#"{"k":"a"}"#);
    rig.add(3, 0, r#"{"k":"b"}"#);
    let (sent, _) = rig.round();
    assert_eq!(sent, vec![vec![1], vec![3]], "2 waits for its key");
    rig.delivered(&[3]);
    rig.failed(&[1], 100);
    assert_eq!(
        rig.round(),
        (vec![], Wait(ms(100))),
        "2 may not overtake 1, which waits for its retry"
    );
    rig.advance(ms(100));
    assert_eq!(rig.round(), (vec![vec![1]], Wait(IDLE_POLL)));
    rig.delivered(&[1]);
    assert_eq!(rig.round(), (vec![vec![2]], Wait(IDLE_POLL)));
}

#[test]
fn a_panicked_unit_frees_its_keys_and_goes_again() {
    let mut rig = Rig::new(DispatchConfig {
        order_key: Some("json:/k".into()),
        ..config()
    });
    rig.add(1, 0, r#"{"k":"a"}"#);
    rig.add(2, 0, r#"{"k":"a"}"#);
    assert_eq!(rig.round().0, vec![vec![1]]);
    rig.dispatch.settle(Done::Panicked(vec![1]));
    assert_eq!(rig.dispatch.running(), 0);
    assert_eq!(rig.round().0, vec![vec![1]], "still pending: sent again");
}

#[test]
fn an_open_circuit_holds_everything_until_one_probe_succeeds() {
    let mut rig = Rig::new(DispatchConfig {
        concurrency: 3,
        circuit: CircuitConfig {
            failures: 2,
            cooldown: Duration::from_secs(1),
            max_cooldown: Duration::from_secs(4),
        },
        ..config()
    });
    for seq in 1..=3 {
        rig.add(seq, 0, "{}");
    }
    assert_eq!(rig.round().0, vec![vec![1], vec![2], vec![3]]);
    rig.failed(&[1], 0);
    rig.failed(&[2], 0);
    assert!(rig.circuit_open.load(Ordering::Relaxed));
    assert_eq!(
        rig.round(),
        (vec![], Wait(Duration::from_secs(1))),
        "open: nothing goes for the cooldown"
    );
    rig.failed(&[3], 0);
    rig.advance(Duration::from_secs(1));
    assert_eq!(
        rig.round(),
        (vec![vec![1]], Wait(IDLE_POLL)),
        "half-open: one probe, and the rest wait for it"
    );
    rig.delivered(&[1]);
    assert!(!rig.circuit_open.load(Ordering::Relaxed));
    assert_eq!(rig.round().0, vec![vec![2], vec![3]], "closed again");
}

#[test]
fn the_rate_spaces_units_on_the_workers_clock() {
    let mut rig = Rig::new(DispatchConfig {
        rate: Some(Rate {
            count: 1,
            per: Duration::from_secs(1),
        }),
        ..config()
    });
    for seq in 1..=2 {
        rig.add(seq, 0, "{}");
    }
    assert_eq!(rig.round(), (vec![vec![1]], Wait(Duration::from_secs(1))));
    rig.advance(ms(400));
    assert_eq!(rig.round(), (vec![], Wait(ms(600))));
    rig.advance(ms(600));
    assert_eq!(rig.round(), (vec![vec![2]], Wait(IDLE_POLL)));
}

#[test]
fn a_partial_batch_waits_to_fill_and_goes_full_or_at_its_deadline() {
    let batch = |max_events| DispatchConfig {
        limits: UnitLimits {
            max_events,
            max_bytes: usize::MAX,
            max_wait: ms(200),
        },
        ..config()
    };
    let mut rig = Rig::new(batch(3));
    rig.add(1, 0, "{}");
    rig.add(2, 0, "{}");
    assert_eq!(rig.round(), (vec![], Wait(ms(200))), "left to fill");
    rig.add(3, 0, "{}");
    assert_eq!(rig.round().0, vec![vec![1, 2, 3]], "full: at once");

    let mut rig = Rig::new(batch(3));
    rig.add(1, 0, "{}");
    rig.add(2, 50, "{}");
    rig.advance(ms(50));
    assert_eq!(
        rig.round(),
        (vec![], Wait(ms(150))),
        "max_wait counts from the oldest due time"
    );
    rig.advance(ms(150));
    assert_eq!(rig.round().0, vec![vec![1, 2]], "its deadline: partial");
}

#[test]
fn a_waiting_key_neither_starves_other_keys_nor_costs_a_read() {
    let mut rig = Rig::new(DispatchConfig {
        order_key: Some("json:/k".into()),
        ..config()
    });
    rig.add(1, 0, r#"{"k":"hot"}"#);
    assert_eq!(rig.round().0, vec![vec![1]]);
    rig.failed(&[1], 600_000);
    for seq in 2..=10_001 {
        rig.add(seq, 0, r#"{"k":"hot"}"#);
    }
    rig.add(20_000, 0, r#"{"k":"cold"}"#);
    rig.add(20_001, 0, r#"{"k":"cold2"}"#);
    let (sent, wait) = rig.round();
    assert_eq!(
        sent,
        vec![vec![20_000], vec![20_001]],
        "free keys go at once"
    );
    assert_eq!(
        wait,
        Wait(IDLE_POLL),
        "all slots but the free keys' are idle"
    );
    rig.delivered(&[20_000]);
    rig.delivered(&[20_001]);
    let before = rig.port.loaded;
    assert_eq!(
        rig.round(),
        (vec![], Wait(IDLE_POLL)),
        "the hot key waits ten minutes; nothing else is due"
    );
    assert_eq!(
        rig.port.loaded, before,
        "a round with nothing due reads nothing"
    );
    assert_eq!(rig.dispatch.pending(), 10_001);
}
