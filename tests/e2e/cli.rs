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

/// `hookwall store check` on a stopped instance's store: counts what it holds and exits 0; on
/// a running instance's store it refuses (the file is held) and exits non-zero.
#[test]
fn store_check_reads_every_record_of_a_stopped_instance() {
    let dir = workdir(&[]);
    let config = format!(
        "{}{}{}",
        base_config("", "", None, ""),
        hmac_source("demo", "", "orders"),
        file_sink("orders", "orders.jsonl", ""),
    );
    let mut hw = Hookwall::start(BIN, dir.path(), &config);
    for i in 0..3 {
        let r = post_signed(
            &hw,
            "demo",
            &format!("chk-{i}"),
            &serde_json::json!({"n": i}),
        );
        assert_eq!(r.status, 200, "{}", String::from_utf8_lossy(&r.body));
    }
    assert!(wait_for_lines(
        &dir.path().join("orders.jsonl"),
        3,
        Duration::from_secs(10)
    ));
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

    let out = run_ok(
        Command::new(BIN)
            .args(["store", "--config"])
            .arg(&config_path)
            .args(["check", "--json"]),
    );
    let report: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(report["ok"], true, "{report}");
    assert_eq!(report["integrity"], "clean", "{report}");
    assert_eq!(report["events"], 3, "{report}");
    assert_eq!(report["deliveries"], 3, "{report}");
    assert_eq!(report["pending"], 0, "{report}");
}
