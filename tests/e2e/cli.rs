//! The CLI beside `serve`: `check`, `store check` and `send`.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use hookwall_testkit::{Hookwall, read_jsonl, run_ok, wait_for_lines, wasm};

use crate::{
    BIN, SECRET, base_config, file_sink, hmac_source, post_signed, run_config, run_config_ok,
    source, workdir, write_config,
};

/// No `[plugins]` section (the default directory), and a source without an id header.
fn config() -> String {
    let verify = format!(
        "{{ scheme = \"hmac\", header = \"X-Signature\", prefix = \"sha256=\", secrets = [\"{SECRET}\"] }}"
    );
    format!(
        "{}{}{}{}",
        base_config("", "", None, ""),
        source("demo", &verify, "\"rust-router\"", "orders", ""),
        file_sink("orders", "orders.jsonl", ""),
        file_sink("other", "other.jsonl", ""),
    )
}

/// Writes `config` for `check`, which binds nothing (any addresses do), into `dir`; its path.
fn check_config(dir: &Path, config: &str) -> PathBuf {
    write_config(dir, config, "127.0.0.1:1", "127.0.0.1:2")
}

#[test]
fn check_accepts_a_good_config_and_loads_its_plugins() {
    let dir = workdir(&[("rust-router", wasm::RUST_ROUTER)]);
    let path = check_config(dir.path(), &config());
    let out = run_config_ok("check", &path);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(stdout.contains("plugin rust-router"), "{stdout}");
}

#[test]
fn check_names_a_mistyped_key_and_exits_non_zero() {
    let dir = workdir(&[("rust-router", wasm::RUST_ROUTER)]);
    let mistyped = config().replace("prefix =", "prefx =");
    let out = run_config("check", &check_config(dir.path(), &mistyped));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(64), "{stderr}");
    assert!(stderr.contains("prefx"), "{stderr}");
    assert!(!stderr.contains(SECRET), "{stderr}");
}

#[test]
fn check_reports_a_plugin_that_is_not_a_component() {
    let dir = workdir(&[]);
    std::fs::write(
        dir.path().join("plugins/rust-router.wasm"),
        b"\0asm garbage",
    )
    .unwrap();
    let path = check_config(dir.path(), &config());
    let out = run_config("check", &path);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rust-router"), "{stderr}");
}

#[test]
fn send_signs_a_file_and_the_event_arrives() {
    let dir = workdir(&[("rust-router", wasm::RUST_ROUTER)]);
    let hw = Hookwall::start(BIN, dir.path(), &config());
    let event = dir.path().join("order.json");
    std::fs::write(&event, br#"{"id":"o-9","type":"order.created"}"#).unwrap();
    let (ok, stdout, stderr) = hw.cli(&["send", "--source", "demo", event.to_str().unwrap()]);
    assert!(ok, "{stdout}{stderr}");
    assert!(stdout.starts_with("200 "), "{stdout}");
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for_lines(&orders, 1, Duration::from_secs(10)));
    assert_eq!(read_jsonl(&orders)[0]["body"]["id"], "o-9");
}

#[test]
fn the_example_config_checks_out() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    run_config_ok("check", &root.join("examples/hookwall.toml"));
}

/// A running instance with one HMAC source `demo` and a file sink `orders.jsonl`, which has
/// accepted and delivered three events `PREFIX-0..2`; its work dir and config text.
fn three_delivered(prefix: &str) -> (tempfile::TempDir, String, Hookwall) {
    let dir = workdir(&[]);
    let config = format!(
        "{}{}{}",
        base_config("", "", None, ""),
        hmac_source("demo", "", "orders"),
        file_sink("orders", "orders.jsonl", ""),
    );
    let hw = Hookwall::start(BIN, dir.path(), &config);
    for i in 0..3 {
        let r = post_signed(
            &hw,
            "demo",
            &format!("{prefix}-{i}"),
            &serde_json::json!({"n": i}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(wait_for_lines(
        &dir.path().join("orders.jsonl"),
        3,
        Duration::from_secs(10)
    ));
    (dir, config, hw)
}

/// `hookwall store check --json` on the store of the config at `path`, asserted to succeed
/// and find nothing wrong; its report.
fn store_checks_clean(path: &Path) -> serde_json::Value {
    let out = run_ok(
        Command::new(BIN)
            .args(["store", "--config"])
            .arg(path)
            .args(["check", "--json"]),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    report
}

/// `hookwall store check` on a stopped instance's store: counts what it holds and exits 0; on
/// a running instance's store it refuses (the file is held) and exits non-zero.
#[test]
fn store_check_reads_every_record_of_a_stopped_instance() {
    let (dir, _, mut hw) = three_delivered("chk");
    let config_path = dir.path().join("hookwall.toml");
    let busy = Command::new(BIN)
        .args(["store", "--config"])
        .arg(&config_path)
        .arg("check")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&busy.stderr);
    assert!(!busy.status.success(), "{stderr}");
    assert!(stderr.contains("stop it first"), "{stderr}");
    hw.stop();

    let report = store_checks_clean(&config_path);
    assert_eq!(report["integrity"], "clean", "{report}");
    assert_eq!(report["events"], 3, "{report}");
    assert_eq!(report["deliveries"], 3, "{report}");
    assert_eq!(report["pending"], 0, "{report}");
}

/// The offsets of the records in log segment `bytes` (`u32 len | u32 crc | payload`).
fn log_records(bytes: &[u8]) -> Vec<usize> {
    let mut at = 0;
    let mut out = Vec::new();
    while at + 8 <= bytes.len() {
        out.push(at);
        let len = u32::from_le_bytes(bytes[at..at + 4].try_into().unwrap()) as usize;
        at += 8 + len;
    }
    out
}

/// A byte flipped inside a log record of a stopped instance: start-up refuses, naming the
/// segment file and the record's offset; `store check` names it too; `store repair` keeps every
/// intact event, lists the lost one, and the instance starts and takes events again.
#[test]
fn a_corrupt_log_record_is_refused_at_start_and_repair_keeps_every_intact_event() {
    let (dir, config, mut hw) = three_delivered("rep");
    let orders = dir.path().join("orders.jsonl");
    hw.stop();

    let segment = dir.path().join("data/log/0000000001.log");
    let mut bytes = std::fs::read(&segment).unwrap();
    let records = log_records(&bytes);
    assert_eq!(records.len(), 3, "one record per event");
    let bad = records[1];
    bytes[bad + 20] ^= 0x40;
    std::fs::write(&segment, &bytes).unwrap();

    let config_path = dir.path().join("hookwall.toml");
    let refused = run_config("serve", &config_path);
    let stderr = String::from_utf8_lossy(&refused.stderr);
    assert!(!refused.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("0000000001.log at offset {bad}")),
        "{stderr}"
    );
    assert!(stderr.contains("hookwall store repair"), "{stderr}");

    let store = |args: &[&str]| {
        Command::new(BIN)
            .args(["store", "--config"])
            .arg(&config_path)
            .args(args)
            .output()
            .unwrap()
    };
    let checked = store(&["check", "--json"]);
    assert!(!checked.status.success());
    let report: serde_json::Value = serde_json::from_slice(&checked.stdout).unwrap();
    assert_eq!(report["ok"], false, "{report}");
    let damage = report["log_damage"][0].as_str().unwrap();
    assert!(
        damage.contains(&format!("at offset {bad}: checksum mismatch")),
        "{report}"
    );

    let repaired = store(&["repair", "--json"]);
    assert!(
        repaired.status.success(),
        "{}",
        String::from_utf8_lossy(&repaired.stderr)
    );
    let report: serde_json::Value = serde_json::from_slice(&repaired.stdout).unwrap();
    assert_eq!(report["padded"].as_array().unwrap().len(), 1, "{report}");
    let lost: Vec<&str> = report["lost"]
        .as_array()
        .unwrap()
        .iter()
        .map(|l| l.as_str().unwrap())
        .collect();
    assert!(
        lost.iter().any(|l| l.starts_with("event demo:rep-1 ")),
        "{lost:?}"
    );
    assert!(
        lost.iter().all(|l| l.contains("rep-1")),
        "only rep-1 is lost: {lost:?}"
    );

    let report = store_checks_clean(&config_path);
    assert_eq!(report["events"], 2, "{report}");

    let hw = Hookwall::start(BIN, dir.path(), &config);
    for id in ["rep-0", "rep-2"] {
        let r = post_signed(&hw, "demo", id, &serde_json::json!({"again": id}));
        assert_eq!(r.status, 200);
        let body: serde_json::Value = serde_json::from_slice(&r.body).unwrap();
        assert_eq!(body["status"], "duplicate", "{id} is still stored: {body}");
    }
    let r = post_signed(&hw, "demo", "rep-3", &serde_json::json!({"n": 3}));
    assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    assert!(wait_for_lines(&orders, 4, Duration::from_secs(10)));
}
