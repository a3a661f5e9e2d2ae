//! The spine: signed webhook in → WASM plugin → durable store → sink out.

use std::time::Duration;

use hookwall_testkit::{
    Hookwall, on_threads, read_jsonl, sign_sha256_hex, wait_for, wait_for_lines, wasm,
};
use serde_json::json;

use crate::{
    BIN, SECRET, config, dead_letters, post_signed, send_signed, serve, serve_each, start_demo,
    stored as event, workdir,
};

#[test]
fn signed_event_is_transformed_by_the_plugin_and_lands_in_the_sink() {
    let (dir, hw) = start_demo("rust-router", wasm::RUST_ROUTER, None);

    let order = json!({"id": "o-1", "type": "order.created", "qty": 3});
    let r = post_signed(&hw, "demo", "evt-1", &order);
    assert_eq!(r.status, 200, "{:?}", r);
    assert_eq!(r.json(), json!({"status": "accepted", "id": "evt-1"}));
    let refund = json!({"id": "r-1", "type": "refund.created"});
    let r = post_signed(&hw, "demo", "evt-2", &refund);
    assert_eq!(r.status, 200);

    let orders = dir.path().join("orders.jsonl");
    let other = dir.path().join("other.jsonl");
    assert!(
        wait_for(Duration::from_secs(10), || read_jsonl(&orders).len() == 1
            && read_jsonl(&other).len() == 1),
        "deliveries did not arrive:\n{}",
        hw.log()
    );
    let line = &read_jsonl(&orders)[0];
    assert_eq!(line["id"], "evt-1");
    assert_eq!(line["source"], "demo");
    assert_eq!(line["sink"], "orders");
    assert_eq!(line["body"]["qty"], 3);
    // The plugin's transformation: a header it adds.
    assert_eq!(line["headers"]["x-hookwall-plugin"], "rust-router");
    assert_eq!(read_jsonl(&other)[0]["id"], "evt-2");

    let stored = event(&hw, "evt-1");
    assert_eq!(stored["status"], "forwarded");
    assert!(wait_for(
        Duration::from_secs(5),
        || event(&hw, "evt-1")["deliveries"][0]["state"] == "delivered"
    ));

    // The same event id again is recognised and not delivered twice.
    let r = post_signed(&hw, "demo", "evt-1", &order);
    assert_eq!(r.json(), json!({"status": "duplicate", "id": "evt-1"}));
    std::thread::sleep(Duration::from_millis(300));
    assert_eq!(read_jsonl(&orders).len(), 1);
}

#[test]
fn bad_or_missing_signatures_get_401_and_nothing_is_stored() {
    let dir = workdir(&[]);
    let hw = serve(&dir, &[("demo", "")], "");
    let body = br#"{"type":"order.created"}"#;

    let r = hw.post("/hooks/demo", &[("X-Event-Id", "no-sig")], body);
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "signature_missing");

    let wrong = sign_sha256_hex("some-other-secret", body);
    let r = hw.post(
        "/hooks/demo",
        &[("X-Signature", &wrong), ("X-Event-Id", "bad-sig")],
        body,
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "signature_invalid");
    assert!(!String::from_utf8_lossy(&r.body).contains(SECRET));

    let r = hw.post(
        "/hooks/demo",
        &[("X-Signature", "sha256=xyz"), ("X-Event-Id", "garbled")],
        body,
    );
    assert_eq!(r.status, 401);
    assert_eq!(r.json()["error"], "signature_malformed");

    for id in ["no-sig", "bad-sig", "garbled"] {
        assert_eq!(hw.event(id).status, 404, "{id} was stored");
    }
    // A correctly signed request after them is the only thing that arrives.
    let good = sign_sha256_hex(SECRET, body);
    let r = hw.post(
        "/hooks/demo",
        &[("X-Signature", &good), ("X-Event-Id", "good")],
        body,
    );
    assert_eq!(r.status, 200);
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for(Duration::from_secs(10), || !read_jsonl(&orders).is_empty()));
    std::thread::sleep(Duration::from_millis(200));
    let lines = read_jsonl(&orders);
    assert_eq!(lines.len(), 1);
    assert_eq!(lines[0]["id"], "good");
    assert!(!hw.log().contains(SECRET), "the secret leaked into the log");
}

#[test]
fn plugin_rejection_is_answered_with_its_status_and_json_error() {
    let (_dir, hw) = start_demo("rust-router", wasm::RUST_ROUTER, None);

    let r = post_signed(&hw, "demo", "no-type", &json!({"id": "o-1"}));
    assert_eq!(r.status, 422, "{:?}", r);
    let err = r.json();
    assert_eq!(err["error"], "missing_field");
    assert_eq!(err["field"], "/type");
    assert!(err["message"].as_str().unwrap().contains("type"), "{err}");
    assert_eq!(hw.event("no-type").status, 404);

    let body = b"not json";
    let sig = sign_sha256_hex(SECRET, body);
    let r = hw.post("/hooks/demo", &[("X-Signature", &sig)], body);
    assert_eq!(r.status, 400);
    assert_eq!(r.json()["error"], "invalid_json");
}

#[test]
fn runaway_plugins_are_stopped_and_their_events_dead_lettered() {
    let dir = workdir(&[
        ("spin", wasm::SPIN),
        ("hog", wasm::HOG),
        ("panic", wasm::PANIC),
        ("fail", wasm::FAIL),
        ("echo", wasm::ECHO),
    ]);
    let hw = serve_each(&dir, &["spin", "hog", "panic", "fail"], "echo");
    let cases = [
        ("spin", "deadline exceeded"),
        ("hog", "memory limit exceeded"),
        ("panic", "trapped"),
        ("fail", "fail plugin always fails"),
    ];
    for (i, (source, reason)) in cases.iter().enumerate() {
        let id = format!("{source}-1");
        let r = post_signed(&hw, source, &id, &json!({"n": i}));
        // on_plugin_error defaults to "accept": the provider must not retry into the same bug.
        assert_eq!(r.status, 202, "{source}: {r:?}");
        assert_eq!(r.json()["status"], "accepted");
        let stored = event(&hw, &id);
        assert_eq!(stored["status"], "dead_lettered", "{source}: {stored}");
        let why = stored["reason"].as_str().unwrap();
        assert!(
            why.contains(source) && why.contains(reason),
            "{source}: {why}"
        );

        // The host keeps serving: the next event on a healthy source goes through.
        let r = post_signed(&hw, "ok", &format!("after-{source}"), &json!({"n": i}));
        assert_eq!(r.status, 200, "after {source}: {r:?}");
    }
    assert_eq!(dead_letters(&hw).len(), cases.len());
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(
        &orders,
        cases.len(),
        Duration::from_secs(10)
    ));
    // The panic message from the guest is kept for the operator.
    assert!(
        event(&hw, "panic-1")["reason"]
            .as_str()
            .unwrap()
            .contains("panicked")
    );
}

#[test]
fn plugin_error_can_be_answered_500_by_config() {
    let dir = workdir(&[("fail", wasm::FAIL)]);
    let text = config(&[("demo", "\"fail\"")], "").replace(
        "sinks = [\"orders\"]\n",
        "sinks = [\"orders\"]\non_plugin_error = \"reject\"\n",
    );
    let hw = Hookwall::start(BIN, dir.path(), &text);
    let r = post_signed(&hw, "demo", "f-1", &json!({}));
    assert_eq!(r.status, 500);
    assert_eq!(r.json()["error"], "plugin_failed");
    // The failed copy is a dead letter under the id the answer names (not the sender's id,
    // which stays free for the retry).
    let id = r.json()["id"].as_str().unwrap().to_string();
    assert_eq!(event(&hw, &id)["status"], "dead_lettered");
}

#[test]
fn chained_plugins_see_the_previous_output() {
    let dir = workdir(&[("upper", wasm::UPPER), ("echo", wasm::ECHO)]);
    let extra = "[plugins.config.echo]\ngreeting = \"hi\"\n";
    let hw = serve(&dir, &[("demo", "\"upper\", \"echo\"")], extra);
    let r = post_signed(&hw, "demo", "c-1", &json!({"word": "quiet"}));
    assert_eq!(r.status, 200, "{r:?}");
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, 1, Duration::from_secs(10)));
    let line = &read_jsonl(&orders)[0];
    assert_eq!(line["body"]["WORD"], "QUIET");
    assert_eq!(line["headers"]["x-upper"], "1");
    assert_eq!(line["headers"]["x-echo-config"], "hi");
}

#[test]
fn ingress_errors_are_json() {
    let dir = workdir(&[]);
    let hw = serve(&dir, &[("demo", "")], "");

    let r = hw.post("/hooks/demo", &[], &vec![b'a'; 5000]);
    assert_eq!(r.status, 413);
    assert_eq!(r.json()["error"], "body_too_large");

    let r = hw.post("/nowhere", &[], b"{}");
    assert_eq!(r.status, 404);
    assert_eq!(r.json()["error"], "not_found");

    let r = hookwall_testkit::http(hw.addr, "GET", "/hooks/demo", &[], b"").unwrap();
    assert_eq!(r.status, 405);
    assert_eq!(r.json()["error"], "method_not_allowed");
    assert_eq!(r.header("allow"), Some("POST"));
}

#[test]
fn acknowledged_event_survives_a_crash_while_the_sink_is_down() {
    let dir = workdir(&[]);
    // The sink writes into a directory that does not exist yet: every attempt fails.
    let text = config(&[("demo", "")], "")
        .replace("path = \"orders.jsonl\"", "path = \"mnt/orders.jsonl\"");
    let mut hw = Hookwall::start(BIN, dir.path(), &text);
    let r = post_signed(&hw, "demo", "crash-1", &json!({"type": "order.created"}));
    assert_eq!(r.status, 200);
    assert!(
        wait_for(Duration::from_secs(10), || {
            event(&hw, "crash-1")["deliveries"][0]["attempts"]
                .as_array()
                .is_some_and(|a| !a.is_empty())
        }),
        "no failed attempt was recorded:\n{}",
        hw.log()
    );
    hw.kill();

    std::fs::create_dir(dir.path().join("mnt")).unwrap();
    hw.restart();
    let sink = dir.path().join("mnt/orders.jsonl");
    assert!(
        wait_for(Duration::from_secs(15), || read_jsonl(&sink).len() == 1),
        "not delivered after restart:\n{}",
        hw.log()
    );
    assert_eq!(read_jsonl(&sink)[0]["id"], "crash-1");
    // The sink confirms before the store records it: wait for the record.
    assert!(wait_for(Duration::from_secs(5), || {
        event(&hw, "crash-1")["deliveries"][0]["state"] == "delivered"
    }));
    let stored = event(&hw, "crash-1");
    let attempts = stored["deliveries"][0]["attempts"].as_array().unwrap();
    assert!(attempts.len() >= 2, "{stored}");
    assert!(
        attempts[0]["error"]
            .as_str()
            .unwrap()
            .contains("mnt/orders.jsonl")
    );
}

#[test]
fn sigterm_drains_and_exits_cleanly() {
    let dir = workdir(&[]);
    let mut hw = serve(&dir, &[("demo", "")], "");
    let r = post_signed(&hw, "demo", "t-1", &json!({"a": 1}));
    assert_eq!(r.status, 200);
    let status = hw.stop();
    assert!(status.success(), "exit status {status}:\n{}", hw.log());
    assert!(hw.log().contains("stopped"));
    hw.restart();
    assert_eq!(event(&hw, "t-1")["id"], "t-1");
}

#[test]
fn a_plugin_can_answer_a_handshake_directly() {
    let (_dir, hw) = start_demo("handshake", wasm::HANDSHAKE, None);
    let challenge = json!({"type": "challenge", "challenge": "abc123"});
    let r = post_signed(&hw, "demo", "hs-1", &challenge);
    assert_eq!(r.status, 200, "{r:?}");
    assert_eq!(r.json(), json!({"challenge": "abc123"}));
    assert_eq!(r.header("content-type"), Some("application/json"));
    // A handshake is not an event: nothing stored, nothing delivered.
    assert_eq!(hw.event("hs-1").status, 404);
    let r = post_signed(&hw, "demo", "ev-1", &json!({"type": "order.created"}));
    assert_eq!(r.json()["status"], "accepted");
}

#[test]
fn stateful_plugins_keep_state_across_events_and_restarts() {
    // Each key-value write waits for a durable commit, and the deadline is wall-clock: give a
    // stateful plugin room (as an operator would, in its manifest).
    let manifest = "[limits]\ndeadline = \"5s\"\n";
    let (dir, mut hw) = start_demo("counter", wasm::COUNTER, Some(manifest));
    // Concurrent events on one key: compare-and-swap must not lose a count.
    let addr = hw.addr;
    let statuses = on_threads(8, |i| {
        let body = serde_json::to_vec(&json!({"type": "order.created"})).unwrap();
        let id = format!("k-{i}");
        send_signed(addr, "demo", &id, &body, &[]).unwrap().status
    });
    for status in statuses {
        assert_eq!(status, 200);
    }
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, 8, Duration::from_secs(10)));
    let mut counts: Vec<u64> = read_jsonl(&orders)
        .iter()
        .map(|l| l["headers"]["x-count"].as_str().unwrap().parse().unwrap())
        .collect();
    counts.sort();
    assert_eq!(counts, (1..=8).collect::<Vec<_>>());
    let clock: u64 = read_jsonl(&orders)[0]["headers"]["x-clock-ms"]
        .as_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(clock > 1_700_000_000_000, "{clock}");

    hw.stop();
    hw.restart();
    assert_eq!(
        post_signed(&hw, "demo", "k-after", &json!({"type": "order.created"})).status,
        200
    );
    assert!(wait_for_lines(&orders, 9, Duration::from_secs(10)));
    assert_eq!(read_jsonl(&orders)[8]["headers"]["x-count"], "9");
}
