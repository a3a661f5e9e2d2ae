//! One sink's worker on the shared store: deliveries are claimed, not scheduled in memory.
//!
//! Replicas share the queue, so no replica may keep its own schedule of it. Instead the worker
//! asks the database for due deliveries ([`Shared::claim`]): the claim leases them to this
//! replica and decides, for every replica at once, what may go (each order key's oldest
//! pending delivery only, at most `concurrency` units' worth leased across the fleet, the
//! sink's rate). The worker sends what it got in units, records each outcome (which ends the
//! lease), and renews the leases of the units still in flight every third of the lease. It
//! sleeps until a unit finishes, a commit on any replica rings the sink (`NOTIFY`), or
//! [`POLL`] passes (retries falling due, leases of a dead replica running out).
//!
//! Per replica: the circuit breaker (each replica learns the sink's health from its own
//! attempts) and the split of a batch refused for good.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::sync::atomic::AtomicBool;
use std::time::Duration;

use tokio::sync::watch;
use tokio::task::{self, JoinSet};

use super::dispatch::{Attempted, DispatchConfig, Health, STORE_ERROR_PAUSE};
use super::flow::{Admission, Breaker};
use super::worker::Worker;
use crate::store::postgres::{Claim, Shared};

/// Longest sleep between two claims: a retry falls due, or a dead replica's lease runs out,
/// at most this long before some replica looks.
pub(super) const POLL: Duration = Duration::from_millis(500);

/// A unit in flight: its deliveries, and whether it is the breaker's probe.
struct Flight {
    seqs: Vec<u64>,
    probe: bool,
}

/// Claims and sends the sink's deliveries until `stopped`, then lets the units in flight
/// finish (renewing their leases meanwhile).
pub(super) async fn run(
    worker: Arc<Worker>,
    store: Shared,
    config: DispatchConfig,
    circuit_open: Arc<AtomicBool>,
    mut stopped: watch::Receiver<bool>,
    mut paused: watch::Receiver<bool>,
) {
    let wake = store.wakeup(&worker.name);
    let mut breaker = Breaker::new(&config.sink, config.circuit, circuit_open);
    let per_unit = config.limits.max_events.max(1);
    let concurrency = config.concurrency.max(1);
    // Claims wait for this many free units (or an idle worker): one claim per finished unit
    // would cost a transaction per delivery.
    let batch = (concurrency / 4).max(1);
    let mut running: JoinSet<Attempted> = JoinSet::new();
    let mut flights: HashMap<task::Id, Flight> = HashMap::new();
    let mut alone: HashSet<u64> = HashSet::new();
    let mut renew = tokio::time::interval(store.lease() / 3);
    renew.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    while !*stopped.borrow() {
        let now = tokio::time::Instant::now();
        let free = concurrency.saturating_sub(running.len());
        let (units, probe, mut wait) = match breaker.admission(now) {
            Admission::Open => (free, false, POLL),
            Admission::Probe if running.is_empty() => (1, true, POLL),
            Admission::Probe => (0, false, POLL),
            Admission::WaitUntil(t) => (0, false, (t - now).min(POLL)),
        };
        if !*paused.borrow() && units > 0 && (units >= batch || running.is_empty() || probe) {
            let claim = Claim {
                max: units * per_unit,
                fleet: concurrency * per_unit,
                per_unit,
                rate: config.rate,
                now_ms: worker.clock.now_ms(),
            };
            match store.claim(&worker.name, claim).await {
                Ok(claimed) => {
                    let full = claimed.len() >= claim.max;
                    let mut groups = config.limits.group(claimed, |d| alone.contains(&d.seq));
                    if probe {
                        groups.truncate(1);
                    }
                    for unit in groups {
                        let seqs = unit.iter().map(|d| d.seq).collect();
                        let handle = running.spawn(worker.clone().attempt(unit));
                        flights.insert(handle.id(), Flight { seqs, probe });
                    }
                    if full && running.len() < concurrency {
                        wait = Duration::ZERO;
                    }
                }
                Err(e) => {
                    tracing::error!(sink = %worker.name, error = %e,
                        "cannot claim deliveries from the shared store; trying again");
                    wait = STORE_ERROR_PAUSE;
                }
            }
        }
        tokio::select! {
            Some(done) = running.join_next_with_id(), if !running.is_empty() => {
                settle(&worker.name, done, &mut flights, &mut alone, &mut breaker);
            }
            () = wake.notified() => {}
            () = tokio::time::sleep(wait) => {}
            _ = renew.tick() => renew_leases(&store, &worker.name, &flights).await,
            _ = stopped.changed() => {}
            _ = paused.changed() => {}
        }
    }
    while !running.is_empty() {
        tokio::select! {
            Some(done) = running.join_next_with_id() => {
                settle(&worker.name, done, &mut flights, &mut alone, &mut breaker);
            }
            _ = renew.tick() => renew_leases(&store, &worker.name, &flights).await,
        }
    }
}

/// Takes back a finished (or panicked) unit: the breaker learns from it, and a batch refused
/// for good goes alone from now on. Its outcome is already recorded (a panicked unit's
/// deliveries stay leased until the lease runs out, then go again).
fn settle(
    sink: &str,
    done: Result<(task::Id, Attempted), task::JoinError>,
    flights: &mut HashMap<task::Id, Flight>,
    alone: &mut HashSet<u64>,
    breaker: &mut Breaker,
) {
    let now = tokio::time::Instant::now();
    match done {
        Ok((id, attempted)) => {
            let flight = flights.remove(&id);
            let probe = flight.as_ref().is_some_and(|f| f.probe);
            breaker.record(attempted.health == Health::Up, probe, now);
            for (seq, due) in &attempted.results {
                if due.is_none() {
                    alone.remove(seq);
                }
            }
            if attempted.split
                && let Some(f) = flight
            {
                alone.extend(f.seqs);
            }
        }
        Err(e) => {
            let flight = flights.remove(&e.id());
            tracing::error!(sink = %sink, deliveries = ?flight.map(|f| f.seqs),
                "a delivery attempt panicked; its deliveries go again when their lease runs out");
        }
    }
}

/// Renews this replica's leases on the deliveries in flight.
async fn renew_leases(store: &Shared, sink: &str, flights: &HashMap<task::Id, Flight>) {
    let seqs: Vec<u64> = flights
        .values()
        .flat_map(|f| f.seqs.iter().copied())
        .collect();
    if seqs.is_empty() {
        return;
    }
    match store.renew(&seqs).await {
        Ok(held) if held < seqs.len() => tracing::warn!(sink = %sink, held, in_flight = seqs.len(),
            "some leases were lost while their attempt ran: another replica may send them again"),
        Ok(_) => {}
        Err(e) => tracing::warn!(sink = %sink, error = %e,
            "cannot renew the leases of the deliveries in flight"),
    }
}
