//! `examples/order-lifecycle`: a stateful plugin replayed a shuffled, duplicated stream of
//! trading-order webhooks.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::{Duration, Instant};

use hookwall_testkit::{
    Hookwall, RedisServer, on_threads, read_jsonl, wait_for, wait_for_lines, wasm,
};
use serde_json::{Value, json};

use crate::{BIN, config, has_header, post_signed, workdir, write_manifest};

/// The broker's stream, in the order things happened.
fn stream() -> Vec<Value> {
    let mut events = vec![
        // o-1: accepted, two partial fills, the final fill: filled 10/10.
        json!({"type": "order.accepted", "order_id": "o-1", "seq": 1, "qty": 10}),
        json!({"type": "order.partially_filled", "order_id": "o-1", "seq": 2, "fill_id": "f1", "qty": 3}),
        json!({"type": "order.partially_filled", "order_id": "o-1", "seq": 3, "fill_id": "f2", "qty": 3}),
        json!({"type": "order.filled", "order_id": "o-1", "seq": 4, "fill_id": "f3", "qty": 4}),
        // o-2: a partial fill, then cancelled: cancelled with 2 filled.
        json!({"type": "order.accepted", "order_id": "o-2", "seq": 1, "qty": 5}),
        json!({"type": "order.partially_filled", "order_id": "o-2", "seq": 2, "fill_id": "g1", "qty": 2}),
        json!({"type": "order.cancelled", "order_id": "o-2", "seq": 3}),
        // o-3: partially filled 6/9.
        json!({"type": "order.accepted", "order_id": "o-3", "seq": 1, "qty": 9}),
        json!({"type": "order.partially_filled", "order_id": "o-3", "seq": 2, "fill_id": "h1", "qty": 1}),
        json!({"type": "order.partially_filled", "order_id": "o-3", "seq": 3, "fill_id": "h2", "qty": 5}),
        // o-4: only accepted.
        json!({"type": "order.accepted", "order_id": "o-4", "seq": 1, "qty": 1}),
        json!({"type": "margin.alert", "account": "acc-7", "level": 0.92}),
    ];
    // o-5: eight small fills that race each other (compare-and-swap must keep all of them).
    events.push(json!({"type": "order.accepted", "order_id": "o-5", "seq": 1, "qty": 8}));
    for i in 0..8 {
        events.push(json!({"type": "order.partially_filled", "order_id": "o-5", "seq": 2 + i, "fill_id": format!("k{i}"), "qty": 1}));
    }
    events
}

/// Every event once with its own id, a third of them again with a new id (the provider
/// resent them) and a few again with the same id, in a shuffled order (fixed seed).
fn shuffled_with_duplicates() -> Vec<(String, Value)> {
    let mut out = Vec::new();
    for (i, e) in stream().into_iter().enumerate() {
        out.push((format!("evt-{i}"), e.clone()));
        if i % 3 == 0 {
            out.push((format!("evt-{i}-resent"), e.clone()));
        }
        if i % 5 == 0 {
            out.push((format!("evt-{i}"), e));
        }
    }
    let mut seed: u64 = 0x5eed_0f04_de12;
    for i in (1..out.len()).rev() {
        seed = seed
            .wrapping_mul(6364136223846793005)
            .wrapping_add(1442695040888963407);
        out.swap(i, (seed >> 33) as usize % (i + 1));
    }
    out
}

/// Posts `events` from four threads at once, spread over `instances`; returns each answer.
fn replay(instances: &[&Hookwall], events: Vec<(String, Value)>) -> Vec<(u16, Value)> {
    let per_thread = on_threads(4, |t| {
        events
            .iter()
            .enumerate()
            .filter(|(i, _)| i % 4 == t)
            .map(|(i, (id, e))| {
                let r = post_signed(instances[i % instances.len()], "orders", id, e);
                (r.status, r.json())
            })
            .collect::<Vec<_>>()
    });
    per_thread.into_iter().flatten().collect()
}

/// Each order's newest state among the deliveries in `dirs`' `orders.jsonl`.
fn final_states(dirs: &[&Path]) -> BTreeMap<String, Value> {
    let mut states: BTreeMap<String, Value> = BTreeMap::new();
    for dir in dirs {
        for line in read_jsonl(&dir.join("orders.jsonl")) {
            let order = line["body"]["order"].clone();
            let id = order["order_id"].as_str().unwrap().to_owned();
            if states
                .get(&id)
                .is_none_or(|s| s["version"].as_u64() < order["version"].as_u64())
            {
                states.insert(id, order);
            }
        }
    }
    states
}

fn check_final_states(states: &BTreeMap<String, Value>) {
    let summary: BTreeMap<&str, (&str, u64)> = states
        .iter()
        .map(|(id, s)| {
            (
                id.as_str(),
                (
                    s["status"].as_str().unwrap(),
                    s["filled_qty"].as_u64().unwrap(),
                ),
            )
        })
        .collect();
    assert_eq!(
        summary,
        BTreeMap::from([
            ("o-1", ("filled", 10)),
            ("o-2", ("cancelled", 2)),
            ("o-3", ("partially_filled", 6)),
            ("o-4", ("accepted", 0)),
            ("o-5", ("filled", 8)),
        ]),
        "{states:#?}"
    );
    // Each distinct applied event bumps the version once: duplicates applied nothing.
    assert_eq!(states["o-1"]["version"], 4);
    assert_eq!(states["o-5"]["version"], 9);
}

const PLUGIN_SETTINGS: &str = r#"
[sinks.priority]
type = "file"
path = "priority.jsonl"

[plugins.config.order-lifecycle]
sink = "orders"
priority_sink = "priority"
"#;

fn setup() -> tempfile::TempDir {
    let dir = workdir(&[("order-lifecycle", wasm::ORDER_LIFECYCLE)]);
    // Each key-value write waits for a durable commit and the deadline is wall-clock: give the
    // stateful plugin room, as its manifest would in production.
    write_manifest(
        dir.path(),
        "order-lifecycle",
        "[limits]\ndeadline = \"5s\"\n",
    );
    dir
}

fn answers_are_consistent(answers: &[(u16, Value)], total: usize) {
    assert_eq!(answers.len(), total);
    for (status, body) in answers {
        assert_eq!(*status, 200, "{body}");
        assert!(
            ["accepted", "dropped", "duplicate"].contains(&body["status"].as_str().unwrap()),
            "{body}"
        );
    }
    let accepted = answers
        .iter()
        .filter(|(_, b)| b["status"] == "accepted")
        .count();
    assert_eq!(
        accepted,
        stream().len(),
        "each distinct event is applied once"
    );
}

#[test]
fn order_lifecycle_survives_a_shuffled_duplicated_stream() {
    let dir = setup();
    let hw = Hookwall::start(BIN, dir.path(), &lifecycle_config());
    let events = shuffled_with_duplicates();
    let total = events.len();
    let answers = replay(&[&hw], events);
    answers_are_consistent(&answers, total);

    let orders = dir.path().join("orders.jsonl");
    let expected = stream().len() - 1; // all but the margin alert
    assert!(
        wait_for(Duration::from_secs(10), || read_jsonl(&orders).len()
            == expected),
        "{} deliveries\n{}",
        read_jsonl(&orders).len(),
        hw.log()
    );
    check_final_states(&final_states(&[dir.path()]));
    let status = read_jsonl(&orders)
        .into_iter()
        .find(|l| l["body"]["order"]["version"] == 4 && l["body"]["order"]["order_id"] == "o-1")
        .unwrap();
    assert_eq!(status["headers"]["x-order-status"], "filled");

    // The margin alert went to the priority sink only.
    let priority = dir.path().join("priority.jsonl");
    assert!(wait_for_lines(&priority, 1, Duration::from_secs(5)));
    assert_eq!(read_jsonl(&priority)[0]["body"]["account"], "acc-7");

    // Impossible transitions: structured 4xx, nothing stored, state unchanged.
    let reject = |id: &str, event: Value, status: u16, code: &str, field: &str| {
        let r = post_signed(&hw, "orders", id, &event);
        assert_eq!(r.status, status, "{id}: {:?}", r.json());
        let body = r.json();
        assert_eq!(body["error"], code, "{body}");
        assert_eq!(body["field"], field, "{body}");
        assert!(
            body["message"].as_str().unwrap().contains("order o-"),
            "{body}"
        );
        assert_eq!(hw.event(id).status, 404);
    };
    let late_fill = json!({"type": "order.partially_filled", "order_id": "o-2", "seq": 4, "fill_id": "g9", "qty": 1});
    reject("late-fill", late_fill, 409, "invalid_transition", "/seq");
    let cancel_filled = json!({"type": "order.cancelled", "order_id": "o-1", "seq": 5});
    reject(
        "cancel-filled",
        cancel_filled,
        409,
        "invalid_transition",
        "/seq",
    );
    let overfill = json!({"type": "order.partially_filled", "order_id": "o-3", "seq": 4, "fill_id": "h3", "qty": 4});
    reject("overfill", overfill, 422, "overfill", "/qty");
    let re_accept = json!({"type": "order.accepted", "order_id": "o-4", "seq": 1, "qty": 2});
    reject("re-accept", re_accept, 409, "invalid_transition", "/qty");
    let r = post_signed(
        &hw,
        "orders",
        "no-seq",
        &json!({"type": "order.cancelled", "order_id": "o-4"}),
    );
    assert_eq!((r.status, r.json()["field"].clone()), (422, json!("/seq")));
    // The last fill of o-3 still fits after the refused overfill.
    let r = post_signed(
        &hw,
        "orders",
        "fits",
        &json!({"type": "order.filled", "order_id": "o-3", "seq": 4, "fill_id": "h3", "qty": 3}),
    );
    assert_eq!(r.json()["status"], "accepted");
    assert!(wait_for(Duration::from_secs(5), || final_states(&[
        dir.path()
    ])["o-3"]["status"]
        == "filled"));
}

/// Source `orders` running the example, with [`PLUGIN_SETTINGS`].
fn lifecycle_config() -> String {
    config(&[("orders", "\"order-lifecycle\"")], PLUGIN_SETTINGS)
}

/// [`lifecycle_config`] with `[storage] redis` pointing at `redis`.
fn shared_config(redis: &RedisServer) -> String {
    let text = lifecycle_config();
    let storage = "[storage]\npath = \"data\"\n";
    assert!(text.contains(storage));
    text.replace(storage, &format!("{storage}redis = \"{}\"\n", redis.url()))
}

/// Two replicas sharing one Redis: the plugin's state follows an order across them, as if one
/// replica had seen every event. Without the shared key-value store each replica would build
/// its own partial state (and accept a duplicate fill resent to the other replica).
#[test]
fn two_replicas_share_order_state_through_redis() {
    let mut redis = RedisServer::start();
    let (dir_a, dir_b) = (setup(), setup());
    let a = Hookwall::start(BIN, dir_a.path(), &shared_config(&redis));
    let b = Hookwall::start(BIN, dir_b.path(), &shared_config(&redis));

    // One order, step by step: accept on A, partial fills on B, the final fill on A.
    let fill = |seq: u64, id: &str, qty: u64, last: bool| {
        let kind = if last {
            "order.filled"
        } else {
            "order.partially_filled"
        };
        json!({"type": kind, "order_id": "x-1", "seq": seq, "fill_id": id, "qty": qty})
    };
    let steps = [
        (
            &a,
            "x-accept",
            json!({"type": "order.accepted", "order_id": "x-1", "seq": 1, "qty": 10}),
        ),
        (&b, "x-f1", fill(2, "f1", 3, false)),
        (&b, "x-f2", fill(3, "f2", 3, false)),
        (&a, "x-f3", fill(4, "f3", 4, true)),
    ];
    for (hw, id, event) in &steps {
        let r = post_signed(hw, "orders", id, event);
        assert_eq!(
            (r.status, r.json()["status"].clone()),
            (200, json!("accepted")),
            "{id}: {r:?}"
        );
    }
    // A fill applied on B, resent to A with a new delivery id: A knows it through Redis.
    let r = post_signed(&a, "orders", "x-f1-resent", &fill(2, "f1", 3, false));
    assert_eq!(r.json()["status"], "dropped", "{r:?}");
    // A cancel on B after the final fill on A: impossible, and B knows it.
    let r = post_signed(
        &b,
        "orders",
        "x-cancel",
        &json!({"type": "order.cancelled", "order_id": "x-1", "seq": 5}),
    );
    assert_eq!(
        (r.status, r.json()["error"].clone()),
        (409, json!("invalid_transition")),
        "{r:?}"
    );

    let (orders_a, orders_b) = (
        dir_a.path().join("orders.jsonl"),
        dir_b.path().join("orders.jsonl"),
    );
    assert!(
        wait_for(Duration::from_secs(10), || read_jsonl(&orders_a).len() == 2
            && read_jsonl(&orders_b).len() == 2),
        "A: {:?}\nB: {:?}",
        read_jsonl(&orders_a),
        read_jsonl(&orders_b)
    );
    // B's fills were applied on top of A's accept: partially filled 3 then 6 of 10.
    let on_b: Vec<(Value, Value)> = read_jsonl(&orders_b)
        .iter()
        .map(|l| {
            (
                l["body"]["order"]["status"].clone(),
                l["body"]["order"]["filled_qty"].clone(),
            )
        })
        .collect();
    assert_eq!(
        on_b,
        [
            (json!("partially_filled"), json!(3)),
            (json!("partially_filled"), json!(6))
        ]
    );
    let mut states = final_states(&[dir_a.path(), dir_b.path()]);
    let x1 = states.remove("x-1").unwrap();
    assert_eq!(
        (
            x1["status"].clone(),
            x1["filled_qty"].clone(),
            x1["version"].clone()
        ),
        (json!("filled"), json!(10), json!(4)),
        "{x1}"
    );
    assert!(states.is_empty(), "{states:?}");

    // The shuffled, duplicated stream, spread over both replicas by four concurrent clients:
    // the same final states as on one replica.
    let events = shuffled_with_duplicates();
    let total = events.len();
    let answers = replay(&[&a, &b], events);
    answers_are_consistent(&answers, total);
    let expected = stream().len() - 1 + 4; // all but the margin alert, plus x-1's four
    let delivered = || read_jsonl(&orders_a).len() + read_jsonl(&orders_b).len();
    assert!(
        wait_for(Duration::from_secs(20), || delivered() == expected),
        "{} deliveries, want {expected}",
        delivered()
    );
    let mut states = final_states(&[dir_a.path(), dir_b.path()]);
    states.remove("x-1");
    check_final_states(&states);
    // Both replicas applied events.
    assert!(read_jsonl(&orders_a).len() > 2 && read_jsonl(&orders_b).len() > 2);

    // Redis down: the plugin's key-value call fails promptly (no hang), the plugin fails, and
    // the source's on_plugin_error policy (default: accept) answers; the event is dead-lettered
    // with the reason, replayable once Redis is back.
    redis.kill();
    let asked = Instant::now();
    let r = post_signed(
        &a,
        "orders",
        "during-outage",
        &json!({"type": "order.accepted", "order_id": "o-9", "seq": 1, "qty": 1}),
    );
    assert_eq!(r.status, 202, "{r:?}");
    assert!(
        asked.elapsed() < Duration::from_secs(15),
        "answered after {:?}",
        asked.elapsed()
    );
    let stored = crate::stored(&a, "during-outage");
    assert_eq!(stored["status"], "dead_lettered", "{stored}");
    let why = stored["reason"].as_str().unwrap();
    assert!(
        why.contains("order-lifecycle") && why.contains("key-value store unavailable"),
        "{why}"
    );
}

/// `hookwall plugin test` on the example with `event` (and `--config` values): the action.
fn plugin_test(event: &Value, values: &[&str]) -> Value {
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("event.json");
    std::fs::write(&file, event.to_string()).unwrap();
    hookwall_testkit::plugin_test(BIN, Path::new(wasm::ORDER_LIFECYCLE), &file, values)
}

/// `margin.alert` leaves with high priority (shown by `hookwall plugin test`, which prints
/// the action the plugin returned); an order event runs there too, on a scratch key-value store.
#[test]
fn margin_alerts_are_high_priority() {
    let action = plugin_test(
        &json!({"type": "margin.alert", "account": "a", "level": 0.95}),
        &["priority_sink=out"],
    );
    let delivery = &action["deliveries"][0];
    assert_eq!(delivery["sink"], "out", "{action}");
    assert_eq!(delivery["priority"], "high", "{action}");

    let action = plugin_test(
        &json!({"type": "order.accepted", "order_id": "o-1", "seq": 1, "qty": 3}),
        &[],
    );
    let delivery = &action["deliveries"][0];
    assert_eq!(delivery["sink"], "orders", "{action}");
    assert!(
        has_header(delivery, "x-order-status", "accepted"),
        "{action}"
    );
}
