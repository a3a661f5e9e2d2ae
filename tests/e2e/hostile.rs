//! Hostile plugins: each attempt is denied or bounded, the event is dead-lettered with a clear
//! reason, and other requests are unaffected.

use std::time::Duration;

use hookwall_testkit::{Hookwall, read_jsonl, wait_for_lines, wasm};
use serde_json::json;

use crate::{post_signed, serve_each, stored, workdir, write_manifest};

fn dead_letter_reason(hw: &Hookwall, source: &str, id: &str, body: serde_json::Value) -> String {
    let r = post_signed(hw, source, id, &body);
    assert_eq!(r.status, 202, "{id}: {r:?}");
    let event = stored(hw, id);
    assert_eq!(event["status"], "dead_lettered", "{event}");
    event["reason"].as_str().unwrap().to_string()
}

#[test]
fn hostile_plugins_are_bounded_and_others_are_unaffected() {
    let dir = workdir(&[
        ("recurse", wasm::RECURSE),
        ("flood", wasm::FLOOD),
        ("chatty", wasm::CHATTY),
        ("chatty-kv", wasm::CHATTY),
        ("snoop", wasm::SNOOP),
    ]);
    // `big` needs room to build 20 MiB of output, so the host's output limit is what stops it.
    let flood = "[limits]\nmax_memory_bytes = 67108864\ndeadline = \"10s\"\n";
    write_manifest(dir.path(), "flood", flood);
    // A long deadline, so the key-value budget (not the clock) is what stops the write loop.
    write_manifest(dir.path(), "chatty-kv", "[limits]\ndeadline = \"60s\"\n");
    let hw = serve_each(&dir, &["recurse", "flood", "chatty", "chatty-kv"], "snoop");
    let cases = [
        ("recurse", json!({}), "trapped"),
        (
            "flood",
            json!({"mode": "many"}),
            "10000 deliveries (limit 100)",
        ),
        (
            "flood",
            json!({"mode": "big"}),
            "bytes of output (limit 16777216)",
        ),
        (
            "flood",
            json!({"mode": "headers"}),
            "headers over the limits",
        ),
        ("flood", json!({"mode": "huge"}), "memory limit exceeded"),
        ("chatty", json!({"mode": "log"}), "deadline exceeded"),
        (
            "chatty-kv",
            json!({"mode": "kv"}),
            "key-value budget exhausted",
        ),
    ];
    for (i, (source, body, expected)) in cases.iter().enumerate() {
        let why = dead_letter_reason(&hw, source, &format!("h-{i}"), body.clone());
        assert!(why.contains(expected), "{source} {body}: {why}");
        // A healthy plugin next to it keeps working.
        assert_eq!(
            post_signed(&hw, "ok", &format!("ok-{i}"), &json!({})).status,
            200
        );
    }
    // The log flood was cut at the per-call cap.
    let log = hw.log();
    assert!(
        log.matches("line ").count() <= 64 * 2,
        "chatty flooded the log"
    );

    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(
        &orders,
        cases.len(),
        Duration::from_secs(10)
    ));
    // The WASI wall clock reads zero: the `clock` import is the only time source.
    assert_eq!(read_jsonl(&orders)[0]["headers"]["x-snoop-clock"], "0");
}
