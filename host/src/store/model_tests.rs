//! The store against a model (issue #18, after Vector's `disk_v2/tests/model/`): seeded runs
//! of random operations (accept, with duplicates; a delivery attempt that succeeds, is retried
//! or gives up; replay and purge of dead letters; close and reopen) on the real store and on an
//! in-memory model of what it must hold. After every operation the two must agree on each
//! sink's pending deliveries (and their due times), the dead-letter queue and which events are
//! stored. `HOOKWALL_STORE_MODEL_SEED=N` replays one run.

use std::collections::{BTreeMap, BTreeSet};

use rand::rngs::StdRng;
use rand::seq::IndexedRandom;
use rand::{Rng, SeedableRng};

use super::dlq::Replay;
use super::tests::event;
use super::*;

const SINKS: [&str; 2] = ["a", "b"];
const RUNS: u64 = 12;
const OPS_PER_RUN: usize = 80;

/// Where the model says one delivery (an event's delivery to a sink) stands.
#[derive(Debug, Clone, Copy, PartialEq)]
enum Expected {
    /// Pending; due then, or `None` after a replay (due "now", by the wall clock).
    Pending(Option<u64>),
    Delivered,
    /// Given up, with its letter in the queue.
    Dead,
    /// Given up, its letter purged.
    Purged,
}

#[derive(Debug, Default)]
struct Model {
    /// Stored events.
    events: BTreeSet<String>,
    /// By (event id, sink).
    deliveries: BTreeMap<(String, String), Expected>,
}

impl Model {
    fn pending(&self, sink: &str) -> BTreeMap<String, Option<u64>> {
        self.deliveries
            .iter()
            .filter_map(|((id, s), e)| match e {
                Expected::Pending(due) if s == sink => Some((id.clone(), *due)),
                _ => None,
            })
            .collect()
    }

    fn letters(&self) -> BTreeSet<(String, String)> {
        self.deliveries
            .iter()
            .filter(|(_, e)| **e == Expected::Dead)
            .map(|(k, _)| k.clone())
            .collect()
    }
}

/// The pending delivery of `id` to `sink` (after replays an event has older, settled ones).
fn pending_seq(store: &Embedded, id: &str, sink: &str) -> u64 {
    let (_, deliveries) = store.event("demo", id).unwrap().unwrap();
    deliveries
        .iter()
        .find(|d| d.sink == sink && matches!(d.state, DeliveryState::Pending { .. }))
        .unwrap_or_else(|| panic!("{id} has no pending delivery to {sink}: {deliveries:?}"))
        .seq
}

/// Checks that `store` holds what `model` says, after operation `op` of run `seed`.
fn check(store: &Embedded, model: &Model, seed: u64, op: &str) {
    let at = || format!("seed {seed}, after {op}");
    for sink in SINKS {
        let stored: BTreeMap<String, u64> = store
            .due_deliveries(sink, u64::MAX, 10_000)
            .unwrap()
            .into_iter()
            .map(|d| match d.state {
                DeliveryState::Pending { due_ms } => (d.event_id, due_ms),
                other => panic!("{}: a due delivery that is not pending: {other:?}", at()),
            })
            .collect();
        let expected = model.pending(sink);
        assert_eq!(
            stored.keys().collect::<Vec<_>>(),
            expected.keys().collect::<Vec<_>>(),
            "{}: pending deliveries to {sink}",
            at()
        );
        for (id, due) in expected {
            if let Some(due) = due {
                assert_eq!(stored[&id], due, "{}: due time of {id} to {sink}", at());
            }
        }
        assert_eq!(
            store.pending_count(sink).unwrap(),
            stored.len() as u64,
            "{}: pending count of {sink}",
            at()
        );
    }
    let letters: BTreeSet<(String, String)> = store
        .dead_letters(10_000)
        .unwrap()
        .into_iter()
        .map(|(_, l)| {
            (
                l.event_id,
                l.sink.expect("a delivery's letter names its sink"),
            )
        })
        .collect();
    assert_eq!(letters, model.letters(), "{}: dead letters", at());
    for id in &model.events {
        assert!(
            store.event("demo", id).unwrap().is_some(),
            "{}: {id} missing",
            at()
        );
    }
}

async fn run(seed: u64, dir: &Path) {
    let mut rng = StdRng::seed_from_u64(seed);
    let mut store = Embedded::open_with(dir, false).unwrap();
    let mut model = Model::default();
    for step in 0..OPS_PER_RUN {
        let roll = rng.random_range(0..100);
        let op = if roll < 35 {
            // Ids from a small pool, so duplicates come up.
            let id = format!("e{}", rng.random_range(0..30));
            let sinks: Vec<&str> = match rng.random_range(0..3) {
                0 => vec!["a"],
                1 => vec!["b"],
                _ => vec!["a", "b"],
            };
            let outcome = store.accept(event(&id, &sinks)).await.unwrap();
            if model.events.insert(id.clone()) {
                assert_eq!(outcome, AcceptOutcome::Stored, "seed {seed}: accept {id}");
                for sink in &sinks {
                    // `event()` is received at 1 000 ms: its deliveries are due then.
                    let pending = Expected::Pending(Some(1_000));
                    model
                        .deliveries
                        .insert((id.clone(), sink.to_string()), pending);
                }
            } else {
                let duplicate = AcceptOutcome::Duplicate { id: id.clone() };
                assert_eq!(outcome, duplicate, "seed {seed}: accept {id} again");
            }
            format!("accept {id} to {sinks:?}")
        } else if roll < 70 {
            let pending: Vec<(String, String)> = model
                .deliveries
                .iter()
                .filter(|(_, e)| matches!(e, Expected::Pending(_)))
                .map(|(k, _)| k.clone())
                .collect();
            let Some((id, sink)) = pending.choose(&mut rng).cloned() else {
                continue;
            };
            let seq = pending_seq(&store, &id, &sink);
            let at_ms = 2_000 + step as u64;
            let (update, expected, what) = match rng.random_range(0..3) {
                0 => (
                    DeliveryUpdate::Delivered { seq, at_ms },
                    Expected::Delivered,
                    "delivered",
                ),
                1 => {
                    let due_ms = at_ms + rng.random_range(1..10_000);
                    let retry = DeliveryUpdate::Retry {
                        seq,
                        at_ms,
                        error: "503".into(),
                        status: Some(503),
                        due_ms,
                    };
                    (retry, Expected::Pending(Some(due_ms)), "retried")
                }
                _ => {
                    let dead = DeliveryUpdate::Dead {
                        seq,
                        at_ms,
                        error: "410 gone".into(),
                        status: Some(410),
                    };
                    (dead, Expected::Dead, "dead")
                }
            };
            store.update_deliveries(vec![update]).await.unwrap();
            model
                .deliveries
                .insert((id.clone(), sink.clone()), expected);
            format!("{id} to {sink} {what}")
        } else if roll < 90 {
            let letters = store.dead_letters(10_000).unwrap();
            let Some((letter, dead)) = letters.choose(&mut rng).cloned() else {
                continue;
            };
            let key = (dead.event_id.clone(), dead.sink.clone().unwrap());
            if rng.random_bool(0.6) {
                let replayed = store.replay(vec![Replay::Resend { letter }]).await.unwrap();
                assert_eq!(replayed, 1, "seed {seed}: replay of letter {letter}");
                model
                    .deliveries
                    .insert(key.clone(), Expected::Pending(None));
                format!("replay {key:?}")
            } else {
                let purged = store.purge_letters(vec![letter]).await.unwrap();
                assert_eq!(purged, 1, "seed {seed}: purge of letter {letter}");
                model.deliveries.insert(key.clone(), Expected::Purged);
                format!("purge {key:?}")
            }
        } else {
            store.close().await;
            drop(store);
            store = Embedded::open_with(dir, false).unwrap();
            "close and reopen".to_string()
        };
        check(&store, &model, seed, &op);
    }
    store.close().await;
}

#[tokio::test]
async fn the_store_agrees_with_its_model_over_random_operations() {
    let seeds: Vec<u64> = match std::env::var("HOOKWALL_STORE_MODEL_SEED") {
        Ok(seed) => vec![seed.parse().expect("HOOKWALL_STORE_MODEL_SEED is a number")],
        Err(_) => (0..RUNS).collect(),
    };
    for seed in seeds {
        let dir = tempfile::tempdir().unwrap();
        run(seed, dir.path()).await;
    }
}
