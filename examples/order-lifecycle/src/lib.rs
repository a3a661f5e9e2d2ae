//! # order-lifecycle: a stateful Hookwall plugin
//!
//! Tracks trading orders across the broker's webhooks, keeping each order's state in the
//! plugin key-value store (Hookwall's embedded store, or Redis when replicas share state):
//!
//! | `type` | body fields |
//! |---|---|
//! | `order.accepted` | `order_id`, `seq`, `qty` |
//! | `order.partially_filled` | `order_id`, `seq`, `fill_id`, `qty` (this fill's quantity) |
//! | `order.filled` | `order_id`, `seq`, `fill_id`, `qty` (the last fill's quantity) |
//! | `order.cancelled` | `order_id`, `seq` |
//! | `margin.alert` | `account`, `level` |
//!
//! `seq` is the broker's per-order sequence number: it says in which order things happened,
//! whatever order the webhooks arrive in. So the plugin
//!
//! - **accumulates partial fills** (the filled quantity is the sum of distinct fills);
//! - **tolerates duplicates**: a fill id, accept or cancel it has already applied is dropped
//!   (`200 dropped`, nothing delivered twice), even when the provider resends it with a new
//!   delivery id;
//! - **tolerates out-of-order arrival**: a fill before its accept is kept (status `pending`
//!   until the accept arrives), and the status is derived from everything seen so far;
//! - **rejects impossible transitions** with a structured 4xx naming the field: a fill or a
//!   cancel sequenced after the order was cancelled or completely filled, anything sequenced
//!   before its accept, an accept that contradicts the known one (409 `invalid_transition`),
//!   fills beyond the order's quantity (422 `overfill`), malformed events (422);
//! - **routes `margin.alert`** to the priority sink with high priority, so it overtakes the
//!   backlog of order updates.
//!
//! Each applied event is forwarded to the `sink` with `x-order-status` and a body
//! `{"event": <the webhook>, "order": <the order's state after it>}`. The state has a
//! `version` that grows with each applied event, so consumers can ignore stale snapshots.
//!
//! Updates use compare-and-swap, so concurrent events for one order (on one replica or many)
//! never lose a fill.
//!
//! Config: `sink` (default `orders`), `priority_sink` (default `priority`), `state_ttl_days`
//! (default 30).

use std::collections::BTreeMap;

use hookwall_guest::{
    Action, Delivery, Event, Plugin, config, kv, log, metrics,
    serde_json::{self, Value, json},
};
use serde::{Deserialize, Serialize};

/// Compare-and-swap attempts before giving up (the event is then dead-lettered and replayable).
const CAS_ATTEMPTS: usize = 16;

struct OrderLifecycle;

/// One order's state, as kept in the key-value store under `order:<id>`.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
pub struct Order {
    pub order_id: String,
    /// Bumped by every applied event.
    pub version: u64,
    pub status: Status,
    /// From `order.accepted`: (seq, qty).
    pub accepted: Option<(u64, u64)>,
    /// Distinct fills by id: (seq, qty).
    pub fills: BTreeMap<String, (u64, u64)>,
    /// Seq of the `order.filled` event, once seen.
    pub final_fill_seq: Option<u64>,
    pub cancelled_seq: Option<u64>,
    pub filled_qty: u64,
}

#[derive(Debug, Default, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Status {
    /// Fills seen, but not the accept yet.
    #[default]
    Pending,
    Accepted,
    PartiallyFilled,
    Filled,
    Cancelled,
}

/// A webhook, parsed.
#[derive(Debug, Clone, PartialEq)]
pub enum OrderEvent {
    Accepted {
        seq: u64,
        qty: u64,
    },
    Fill {
        seq: u64,
        fill_id: String,
        qty: u64,
        last: bool,
    },
    Cancelled {
        seq: u64,
    },
}

/// Why an event cannot apply: becomes a 4xx rejection.
#[derive(Debug, PartialEq)]
pub struct Refusal {
    pub status: u16,
    pub code: &'static str,
    pub message: String,
    pub field: &'static str,
}

fn refuse(status: u16, code: &'static str, field: &'static str, message: String) -> Refusal {
    Refusal {
        status,
        code,
        message,
        field,
    }
}

/// What applying an event did.
#[derive(Debug, PartialEq)]
pub enum Applied {
    Changed(Order),
    /// Already applied before: nothing to do.
    Duplicate(String),
}

impl Order {
    /// Applies `event` to a copy of this state, checking that it is possible.
    pub fn apply(&self, event: &OrderEvent) -> Result<Applied, Refusal> {
        let mut next = self.clone();
        match event {
            OrderEvent::Accepted { seq, qty } => match self.accepted {
                Some(known) if known == (*seq, *qty) => {
                    return Ok(Applied::Duplicate(format!(
                        "order {} already accepted",
                        self.order_id
                    )));
                }
                Some((known_seq, known_qty)) => {
                    return Err(refuse(
                        409,
                        "invalid_transition",
                        "/qty",
                        format!(
                            "order {} was accepted at seq {known_seq} for {known_qty}; a second accept (seq {seq}, qty {qty}) is impossible",
                            self.order_id
                        ),
                    ));
                }
                None => next.accepted = Some((*seq, *qty)),
            },
            OrderEvent::Fill {
                seq,
                fill_id,
                qty,
                last,
            } => {
                if let Some(&known) = self.fills.get(fill_id) {
                    if known == (*seq, *qty) {
                        return Ok(Applied::Duplicate(format!(
                            "fill {fill_id} of order {} already applied",
                            self.order_id
                        )));
                    }
                    return Err(refuse(
                        409,
                        "invalid_transition",
                        "/fill_id",
                        format!(
                            "fill {fill_id} of order {} was already applied with seq {} qty {}",
                            self.order_id, known.0, known.1
                        ),
                    ));
                }
                next.fills.insert(fill_id.clone(), (*seq, *qty));
                if *last {
                    next.final_fill_seq = Some(*seq);
                }
            }
            OrderEvent::Cancelled { seq } => match self.cancelled_seq {
                Some(known) if known == *seq => {
                    return Ok(Applied::Duplicate(format!(
                        "order {} already cancelled",
                        self.order_id
                    )));
                }
                Some(known) => {
                    return Err(refuse(
                        409,
                        "invalid_transition",
                        "/seq",
                        format!(
                            "order {} was already cancelled at seq {known}",
                            self.order_id
                        ),
                    ));
                }
                None => next.cancelled_seq = Some(*seq),
            },
        }
        next.check()?;
        next.filled_qty = next.fills.values().map(|&(_, q)| q).sum();
        next.status = next.derive_status();
        next.version += 1;
        Ok(Applied::Changed(next))
    }

    /// The rules every state must satisfy, in the broker's sequence order.
    fn check(&self) -> Result<(), Refusal> {
        let id = &self.order_id;
        let filled: u64 = self.fills.values().map(|&(_, q)| q).sum();
        let last_fill = self.fills.values().map(|&(s, _)| s).max();
        if let Some((accept_seq, qty)) = self.accepted {
            let earliest = self
                .fills
                .values()
                .map(|&(s, _)| s)
                .chain(self.cancelled_seq)
                .min();
            if earliest.is_some_and(|s| s <= accept_seq) {
                return Err(refuse(
                    409,
                    "invalid_transition",
                    "/seq",
                    format!(
                        "order {id}: an event sequenced at or before its accept (seq {accept_seq}) is impossible"
                    ),
                ));
            }
            if filled > qty {
                return Err(refuse(
                    422,
                    "overfill",
                    "/qty",
                    format!(
                        "order {id}: fills total {filled}, more than the order's quantity {qty}"
                    ),
                ));
            }
        }
        if let (Some(cancelled), Some(fill)) = (self.cancelled_seq, last_fill)
            && fill > cancelled
        {
            return Err(refuse(
                409,
                "invalid_transition",
                "/seq",
                format!(
                    "order {id} was cancelled at seq {cancelled}; a fill at seq {fill} is impossible"
                ),
            ));
        }
        if let Some(final_seq) = self.final_fill_seq {
            if last_fill.is_some_and(|s| s > final_seq) {
                return Err(refuse(
                    409,
                    "invalid_transition",
                    "/seq",
                    format!(
                        "order {id} was completely filled at seq {final_seq}; a later fill is impossible"
                    ),
                ));
            }
            if let Some(cancelled) = self.cancelled_seq.filter(|&c| c > final_seq) {
                return Err(refuse(
                    409,
                    "invalid_transition",
                    "/seq",
                    format!(
                        "order {id} was completely filled at seq {final_seq}; a cancel at seq {cancelled} is impossible"
                    ),
                ));
            }
        }
        Ok(())
    }

    fn derive_status(&self) -> Status {
        let complete = match self.accepted {
            Some((_, qty)) => self.filled_qty >= qty,
            None => false,
        };
        if self.cancelled_seq.is_some() {
            Status::Cancelled
        } else if complete {
            Status::Filled
        } else if self.accepted.is_none() {
            Status::Pending
        } else if self.filled_qty > 0 {
            Status::PartiallyFilled
        } else {
            Status::Accepted
        }
    }
}

/// Parses an order webhook: `(order_id, event)`.
pub fn parse(kind: &str, body: &Value) -> Result<(String, OrderEvent), Refusal> {
    let text = |field: &'static str| -> Result<String, Refusal> {
        body.get(&field[1..])
            .and_then(Value::as_str)
            .filter(|s| !s.is_empty())
            .map(str::to_owned)
            .ok_or_else(|| {
                refuse(
                    422,
                    "missing_field",
                    field,
                    format!("`{}` (a non-empty string) is required", &field[1..]),
                )
            })
    };
    let number = |field: &'static str| -> Result<u64, Refusal> {
        body.get(&field[1..])
            .and_then(Value::as_u64)
            .ok_or_else(|| {
                refuse(
                    422,
                    "missing_field",
                    field,
                    format!("`{}` (a whole number) is required", &field[1..]),
                )
            })
    };
    let order_id = text("/order_id")?;
    let seq = number("/seq")?;
    let event = match kind {
        "order.accepted" => OrderEvent::Accepted {
            seq,
            qty: number("/qty")?,
        },
        "order.partially_filled" | "order.filled" => OrderEvent::Fill {
            seq,
            fill_id: text("/fill_id")?,
            qty: number("/qty")?,
            last: kind == "order.filled",
        },
        "order.cancelled" => OrderEvent::Cancelled { seq },
        other => {
            return Err(refuse(
                422,
                "unknown_type",
                "/type",
                format!("unknown event type `{other}`"),
            ));
        }
    };
    Ok((order_id, event))
}

impl Plugin for OrderLifecycle {
    fn handle(event: Event) -> Result<Action, String> {
        let body: Value = match event.json() {
            Ok(body) => body,
            Err(e) => return Ok(Action::reject(422, "invalid_json", e.to_string())),
        };
        let Some(kind) = body.get("type").and_then(Value::as_str) else {
            return Ok(Action::reject(422, "missing_field", "`type` is required").field("/type"));
        };
        if kind == "margin.alert" {
            let sink = config("priority_sink").unwrap_or_else(|| "priority".to_owned());
            metrics::counter_add("margin_alerts", 1);
            return Ok(Action::forward([Delivery::to(sink)
                .headers(event.headers)
                .high_priority()
                .body(event.body)]));
        }
        let (order_id, order_event) = match parse(kind, &body) {
            Ok(parsed) => parsed,
            Err(r) => return Ok(rejection(r)),
        };
        let key = format!("order:{order_id}");
        let ttl_days: u64 = config("state_ttl_days")
            .map_or(Ok(30), |d| d.parse())
            .map_err(|e| format!("order-lifecycle: `state_ttl_days`: {e}"))?;
        let ttl_ms = Some(ttl_days * 24 * 3600 * 1000);
        for _ in 0..CAS_ATTEMPTS {
            let stored = kv::get(&key)?;
            let current = match &stored {
                Some(bytes) => {
                    serde_json::from_slice(bytes).map_err(|e| format!("state of {key}: {e}"))?
                }
                None => Order {
                    order_id: order_id.clone(),
                    ..Order::default()
                },
            };
            let next = match current.apply(&order_event) {
                Ok(Applied::Changed(next)) => next,
                Ok(Applied::Duplicate(why)) => {
                    metrics::counter_add("duplicates", 1);
                    return Ok(Action::drop(why));
                }
                Err(r) => return Ok(rejection(r)),
            };
            let bytes = serde_json::to_vec(&next).map_err(|e| e.to_string())?;
            if kv::compare_and_swap(&key, stored.as_deref(), &bytes, ttl_ms)? {
                log::debug!("order {order_id} -> {:?} (v{})", next.status, next.version);
                let status = serde_json::to_value(next.status).map_err(|e| e.to_string())?;
                let sink = config("sink").unwrap_or_else(|| "orders".to_owned());
                let delivery = Delivery::to(sink)
                    .header("content-type", "application/json")
                    .header("x-order-status", status.as_str().unwrap_or_default())
                    .json(&json!({"event": body, "order": next}))?;
                return Ok(Action::forward([delivery]));
            }
            // Another event for this order won the race: re-read and re-apply.
        }
        Err(format!(
            "order {order_id}: state kept changing under {CAS_ATTEMPTS} attempts"
        ))
    }
}

fn rejection(r: Refusal) -> Action {
    Action::reject(r.status, r.code, r.message).field(r.field)
}

hookwall_guest::export!(OrderLifecycle);

#[cfg(test)]
mod tests {
    use super::*;

    fn fill(seq: u64, id: &str, qty: u64) -> OrderEvent {
        OrderEvent::Fill {
            seq,
            fill_id: id.into(),
            qty,
            last: false,
        }
    }

    fn run(events: &[OrderEvent]) -> Order {
        let mut order = Order {
            order_id: "o".into(),
            ..Order::default()
        };
        for e in events {
            if let Applied::Changed(next) = order.apply(e).unwrap() {
                order = next;
            }
        }
        order
    }

    #[test]
    fn any_arrival_order_gives_the_same_state() {
        let events = [
            OrderEvent::Accepted { seq: 1, qty: 10 },
            fill(2, "a", 3),
            fill(3, "b", 3),
            OrderEvent::Fill {
                seq: 4,
                fill_id: "c".into(),
                qty: 4,
                last: true,
            },
        ];
        let forward = run(&events);
        assert_eq!(forward.status, Status::Filled);
        assert_eq!(forward.filled_qty, 10);
        let mut reversed = events.to_vec();
        reversed.reverse();
        reversed.push(fill(2, "a", 3)); // a duplicate
        let backward = run(&reversed);
        assert_eq!(
            (backward.status, backward.filled_qty, backward.version),
            (Status::Filled, 10, 4)
        );
    }

    #[test]
    fn a_fill_before_its_accept_is_pending() {
        let order = run(&[fill(2, "a", 3)]);
        assert_eq!(order.status, Status::Pending);
        let order = run(&[fill(2, "a", 3), OrderEvent::Accepted { seq: 1, qty: 5 }]);
        assert_eq!(order.status, Status::PartiallyFilled);
    }

    #[test]
    fn impossible_transitions_are_refused() {
        let cancelled = run(&[
            OrderEvent::Accepted { seq: 1, qty: 10 },
            OrderEvent::Cancelled { seq: 2 },
        ]);
        let r = cancelled.apply(&fill(3, "late", 1)).unwrap_err();
        assert_eq!((r.status, r.code), (409, "invalid_transition"));
        let filled = run(&[
            OrderEvent::Accepted { seq: 1, qty: 2 },
            OrderEvent::Fill {
                seq: 2,
                fill_id: "a".into(),
                qty: 2,
                last: true,
            },
        ]);
        assert_eq!(
            filled
                .apply(&OrderEvent::Cancelled { seq: 3 })
                .unwrap_err()
                .code,
            "invalid_transition"
        );
        let accepted = run(&[OrderEvent::Accepted { seq: 1, qty: 2 }]);
        assert_eq!(
            accepted.apply(&fill(2, "a", 3)).unwrap_err().code,
            "overfill"
        );
        assert_eq!(
            accepted
                .apply(&OrderEvent::Accepted { seq: 1, qty: 3 })
                .unwrap_err()
                .status,
            409
        );
        assert_eq!(accepted.apply(&fill(1, "a", 1)).unwrap_err().field, "/seq");
    }
}
