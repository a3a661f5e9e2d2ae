//! A dispatch over an in-memory store, for `benches/dispatch.rs`: what one delivery costs the
//! scheduler (arrive, round, load, send, settle) with a given backlog. Not part of the API.

use std::collections::HashMap;
use std::sync::Arc;
use std::sync::atomic::AtomicBool;

use super::dispatch::{Attempted, Dispatch, DispatchConfig, Done, Health, Port};
use super::schedule::Scheduled;
use crate::clock::{Clock, ManualTime};
use crate::event::Priority;
use crate::store::{DeliveryRecord, DeliveryState, StoreError};

const NOW_MS: u64 = 1_700_000_000_000;

/// The sink's records in a map; the units sent.
#[derive(Default)]
struct MemPort {
    records: HashMap<u64, DeliveryRecord>,
    sent: Vec<Vec<DeliveryRecord>>,
}

impl Port for MemPort {
    fn load(&mut self, seqs: &[u64]) -> Result<Vec<DeliveryRecord>, StoreError> {
        Ok(seqs
            .iter()
            .filter_map(|s| self.records.get(s).cloned())
            .collect())
    }

    fn writable(&mut self) -> bool {
        true
    }

    fn send(&mut self, unit: Vec<DeliveryRecord>) {
        self.sent.push(unit);
    }
}

/// One sink's dispatch (order key `json:/k`, concurrency 4) with a backlog that cannot go:
/// one hot key whose head waits ten minutes for a retry, half the backlog queued behind it,
/// and the other half spread over 10,000 cold keys, due in an hour.
pub struct DispatchBench {
    dispatch: Dispatch,
    port: MemPort,
    next_seq: u64,
    _time: Arc<ManualTime>,
}

fn record(seq: u64, key: &str, due_ms: u64) -> DeliveryRecord {
    let body = format!(r#"{{"k":"{key}"}}"#).into_bytes();
    let mut r = DeliveryRecord::pending_for_test(seq, "app", body, Priority::Normal, NOW_MS);
    r.state = DeliveryState::Pending { due_ms };
    r
}

impl DispatchBench {
    /// A dispatch with `pending` deliveries waiting as described above.
    pub fn new(pending: u64) -> DispatchBench {
        let time = ManualTime::new(NOW_MS);
        let config = DispatchConfig {
            order_key: Some("json:/k".into()),
            ..DispatchConfig::simple("app")
        };
        let mut dispatch = Dispatch::new(
            config,
            Arc::new(AtomicBool::new(false)),
            Clock::manual(time.clone()),
        );
        let mut port = MemPort::default();
        for seq in 1..=pending {
            let (key, due) = if seq == 1 {
                ("hot".to_string(), NOW_MS + 600_000)
            } else if seq % 2 == 0 {
                ("hot".to_string(), NOW_MS)
            } else {
                (format!("cold-{}", seq % 10_000), NOW_MS + 3_600_000)
            };
            let r = record(seq, &key, due);
            dispatch.add(
                Scheduled {
                    seq,
                    due_ms: due,
                    priority: Priority::Normal,
                },
                Some(&r.body),
            );
            port.records.insert(seq, r);
        }
        DispatchBench {
            dispatch,
            port,
            next_seq: pending + 1,
            _time: time,
        }
    }

    /// One new delivery of a free key, due now, through the whole cycle: it arrives, a round
    /// sends it (and nothing else), it comes back delivered. Returns how many were sent.
    pub fn deliver_one(&mut self) -> usize {
        let seq = self.next_seq;
        self.next_seq += 1;
        let r = record(seq, &format!("new-{seq}"), NOW_MS);
        let s = Scheduled {
            seq,
            due_ms: NOW_MS,
            priority: Priority::Normal,
        };
        self.port.records.insert(seq, r);
        self.dispatch.arrive(&mut self.port, vec![s]);
        self.dispatch.dispatch_round(&mut self.port, false);
        let units = std::mem::take(&mut self.port.sent);
        let sent = units.iter().map(Vec::len).sum();
        for unit in units {
            for d in &unit {
                self.port.records.remove(&d.seq);
            }
            self.dispatch.settle(Done::Attempted(Attempted {
                results: unit.iter().map(|d| (d.seq, None)).collect(),
                health: Health::Up,
                split: false,
            }));
        }
        sent
    }
}
