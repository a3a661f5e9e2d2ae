//! The plugin platform, host side: hot reload under load, broken builds, manifests, instance
//! modes, the sandbox, and the plugin CLI.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use hookwall_testkit::{Hookwall, plugin_test, read_jsonl, wait_for, wait_for_lines, wasm};
use serde_json::json;

use crate::{
    BIN, build_kind, plugin_status, post_signed, send_signed, serve, start_demo, stored, workdir,
    write_manifest,
};

/// Replaces `plugins/NAME.wasm` the way deploy tools do: write a temp file, then rename.
fn swap_in(dir: &Path, name: &str, bytes: &[u8]) {
    let tmp = dir.join(format!("plugins/.{name}.wasm.tmp"));
    std::fs::write(&tmp, bytes).unwrap();
    std::fs::rename(&tmp, dir.join(format!("plugins/{name}.wasm"))).unwrap();
}

/// Replaces it the slow way: half the file, a pause, the rest (a slow copy).
fn slow_copy(dir: &Path, name: &str, bytes: &[u8]) {
    use std::io::Write;
    let mut f = std::fs::File::create(dir.join(format!("plugins/{name}.wasm"))).unwrap();
    let (a, b) = bytes.split_at(bytes.len() / 2);
    f.write_all(a).unwrap();
    f.flush().unwrap();
    std::thread::sleep(Duration::from_millis(60));
    f.write_all(b).unwrap();
}

#[test]
fn hot_swap_under_load_never_fails_a_request() {
    let (dir, hw) = start_demo("p", wasm::ECHO, None);
    let echo = std::fs::read(wasm::ECHO).unwrap();
    let upper = std::fs::read(wasm::UPPER).unwrap();

    let stop = Arc::new(AtomicBool::new(false));
    let sent = Arc::new(AtomicU64::new(0));
    let client = {
        let (stop, sent, addr) = (stop.clone(), sent.clone(), hw.addr);
        std::thread::spawn(move || {
            let mut failures = Vec::new();
            let mut i = 0u64;
            while !stop.load(Ordering::Relaxed) {
                i += 1;
                let body = serde_json::to_vec(&json!({"word": "swap", "n": i})).unwrap();
                let id = format!("s-{i}");
                match send_signed(addr, "demo", &id, &body, &[]) {
                    Ok(r) if r.status == 200 => {}
                    other => failures.push(format!("{id}: {other:?}")),
                }
                sent.fetch_add(1, Ordering::Relaxed);
            }
            failures
        })
    };

    let mut broken = 0;
    let mut reload_ms = Vec::new();
    for round in 0..20 {
        std::thread::sleep(Duration::from_millis(700));
        if [4, 11, 17].contains(&round) {
            // Broken builds: truncated component, then garbage. The live version must stay.
            let bad = if round == 11 {
                b"\0asm\x0d\0\x01\0garbage".to_vec()
            } else {
                upper[..upper.len() / 3].to_vec()
            };
            swap_in(dir.path(), "p", &bad);
            broken += 1;
            continue;
        }
        let (bytes, marker) = if round % 2 == 0 {
            (&upper, "x-upper")
        } else {
            (&echo, "x-echo-config")
        };
        let written = Instant::now();
        if round % 3 == 0 {
            slow_copy(dir.path(), "p", bytes)
        } else {
            swap_in(dir.path(), "p", bytes)
        }
        // Reload latency: time until a request is answered by the new version.
        let orders = dir.path().join("orders.jsonl");
        let seen = wait_for(Duration::from_secs(5), || {
            read_jsonl(&orders)
                .last()
                .is_some_and(|l| l["headers"].get(marker).is_some())
        });
        assert!(
            seen,
            "round {round}: new version not live within 5 s:\n{}",
            hw.log()
        );
        reload_ms.push(written.elapsed().as_secs_f64() * 1000.0);
    }
    stop.store(true, Ordering::Relaxed);
    let failures = client.join().unwrap();
    assert!(
        failures.is_empty(),
        "{} failed requests: {:?}",
        failures.len(),
        &failures[..failures.len().min(5)]
    );
    let total = sent.load(Ordering::Relaxed);
    assert!(total > 50, "only {total} requests were sent");

    // Every delivery was produced by one complete version: exactly one marker each.
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(
        &orders,
        total as usize,
        Duration::from_secs(10)
    ));
    let mut by_version = [0u64; 2];
    for line in read_jsonl(&orders) {
        let h = &line["headers"];
        match (h.get("x-upper").is_some(), h.get("x-echo-config").is_some()) {
            (true, false) => by_version[0] += 1,
            (false, true) => by_version[1] += 1,
            other => panic!("a delivery from no single version {other:?}: {line}"),
        }
    }
    assert!(by_version[0] > 0 && by_version[1] > 0, "{by_version:?}");
    let status = plugin_status(&hw, "p");
    assert!(
        status["load_errors"].as_u64().unwrap() >= broken,
        "{status}"
    );
    reload_ms.sort_by(f64::total_cmp);
    // Nearest rank; with 17 good swaps p99 is the slowest one.
    let rank = |q: f64| reload_ms[((reload_ms.len() as f64 * q).ceil() as usize).max(1) - 1];
    println!(
        "hot swap ({} build): {total} requests, {broken} broken builds, reload latency (write → \
         first delivery by the new version) over {} swaps: p50 {:.0} ms, p99 {:.0} ms",
        build_kind(),
        reload_ms.len(),
        rank(0.5),
        rank(0.99)
    );
}

#[test]
fn a_broken_plugin_keeps_the_previous_version_and_says_why() {
    let (dir, hw) = start_demo("p", wasm::ECHO, None);
    let before = plugin_status(&hw, "p");
    swap_in(dir.path(), "p", b"definitely not wasm");
    assert!(wait_for(Duration::from_secs(5), || !plugin_status(
        &hw, "p"
    )["last_error"]
        .is_null()));
    let status = plugin_status(&hw, "p");
    assert_eq!(
        status["version"], before["version"],
        "the old version must stay live"
    );
    let error = status["last_error"].as_str().unwrap();
    assert!(error.contains("`p`"), "{error}");
    assert!(
        hw.log().contains("plugin reload failed"),
        "the error is logged"
    );

    let r = post_signed(&hw, "demo", "after-broken", &json!({"a": 1}));
    assert_eq!(r.status, 200);
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, 1, Duration::from_secs(5)));
    assert_eq!(read_jsonl(&orders)[0]["headers"]["x-echo-config"], "none");

    // The CLI shows the same, through the admin API.
    let (ok, text, err) = hw.cli(&["plugins"]);
    assert!(ok, "{text}{err}");
    assert!(text.contains("not a valid component"), "{text}");
}

#[test]
fn a_manifest_attaches_a_dropped_in_plugin_without_restart() {
    let dir = workdir(&[]);
    let hw = serve(&dir, &[("demo", "")], "");
    assert_eq!(post_signed(&hw, "demo", "m-0", &json!({})).status, 200);
    let manifest = "sources = [\"demo\"]\n[config]\ngreeting = \"from-manifest\"\n";
    write_manifest(dir.path(), "tagger", manifest);
    swap_in(dir.path(), "tagger", &std::fs::read(wasm::ECHO).unwrap());
    assert!(wait_for(Duration::from_secs(5), || plugin_status(
        &hw, "tagger"
    )["sources"]
        == json!(["demo"])));
    assert_eq!(post_signed(&hw, "demo", "m-1", &json!({})).status, 200);
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, 2, Duration::from_secs(5)));
    let lines = read_jsonl(&orders);
    let tagged: Vec<_> = lines
        .iter()
        .map(|l| l["headers"].get("x-echo-config").cloned())
        .collect();
    assert!(
        tagged.contains(&None) && tagged.contains(&Some(json!("from-manifest"))),
        "{tagged:?}"
    );

    // Removing the plugin detaches it again.
    std::fs::remove_file(dir.path().join("plugins/tagger.wasm")).unwrap();
    assert!(wait_for(Duration::from_secs(5), || plugin_status(
        &hw, "tagger"
    )
    .is_null()));
    assert_eq!(post_signed(&hw, "demo", "m-2", &json!({})).status, 200);
    assert!(wait_for_lines(&orders, 3, Duration::from_secs(5)));
    assert!(
        read_jsonl(&orders)[2]["headers"]
            .get("x-echo-config")
            .is_none()
    );
}

fn calls_header(dir: &Path, n: usize) -> Vec<String> {
    let orders = dir.join("orders.jsonl");
    assert!(wait_for_lines(&orders, n, Duration::from_secs(5)));
    read_jsonl(&orders)
        .iter()
        .map(|l| l["headers"]["x-calls"].as_str().unwrap().to_string())
        .collect()
}

/// Sends events `PREFIX-0` .. `PREFIX-2` (each acknowledged with a 200): the plugin's call
/// counts they were delivered with.
fn post_three(hw: &Hookwall, dir: &Path, prefix: &str) -> Vec<String> {
    for i in 0..3 {
        assert_eq!(
            post_signed(hw, "demo", &format!("{prefix}-{i}"), &json!({})).status,
            200
        );
    }
    calls_header(dir, 3)
}

#[test]
fn pooled_instances_are_reused_and_a_trapped_one_is_discarded() {
    let manifest = "instances = \"pooled\"\npool_size = 1\n";
    let (dir, hw) = start_demo("statics", wasm::STATICS, Some(manifest));
    assert_eq!(plugin_status(&hw, "statics")["instances"], "pooled");
    assert_eq!(post_three(&hw, dir.path(), "p"), ["1", "2", "3"]);
    assert_eq!(
        post_signed(&hw, "demo", "boom", &json!({"panic": true})).status,
        202
    );
    assert_eq!(stored(&hw, "boom")["status"], "dead_lettered");
    assert_eq!(post_signed(&hw, "demo", "p-after", &json!({})).status, 200);
    assert_eq!(
        calls_header(dir.path(), 4)[3],
        "1",
        "a trapped instance must not be reused"
    );
}

#[test]
fn fresh_instances_share_nothing_between_events() {
    let (dir, hw) = start_demo("statics", wasm::STATICS, None);
    assert_eq!(plugin_status(&hw, "statics")["instances"], "fresh");
    assert_eq!(post_three(&hw, dir.path(), "f"), ["1", "1", "1"]);
}

#[test]
fn the_sandbox_gives_a_plugin_no_files_environment_or_network() {
    let (dir, hw) = start_demo("snoop", wasm::SNOOP, None);
    assert_eq!(post_signed(&hw, "demo", "snoop-1", &json!({})).status, 200);
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, 1, Duration::from_secs(5)));
    let h = &read_jsonl(&orders)[0]["headers"];
    for key in ["x-snoop-file", "x-snoop-dir", "x-snoop-socket"] {
        assert!(
            h[key].as_str().unwrap().starts_with("denied"),
            "{key}: {}",
            h[key]
        );
    }
    assert_eq!(h["x-snoop-env"], "0 variables");
}

#[test]
fn plugin_test_runs_a_plugin_once_and_prints_its_action() {
    let dir = tempfile::tempdir().unwrap();
    let plugin = dir.path().join("rust-router.wasm");
    std::fs::copy(wasm::RUST_ROUTER, &plugin).unwrap();
    let event = dir.path().join("event.json");
    std::fs::write(&event, br#"{"id":"o-1","type":"order.created"}"#).unwrap();
    let action = plugin_test(BIN, &plugin, &event, &["orders_sink=fills"]);
    assert_eq!(action["action"], "forward");
    assert_eq!(action["deliveries"][0]["sink"], "fills");
    assert_eq!(action["deliveries"][0]["body"]["id"], "o-1");

    std::fs::write(&event, br#"{"id":"o-1"}"#).unwrap();
    let out = std::process::Command::new(BIN)
        .args(["plugin", "test"])
        .arg(&plugin)
        .arg("--event")
        .arg(&event)
        .output()
        .unwrap();
    let action: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(action["action"], "reject");
    assert_eq!(action["field"], "/type");
}
