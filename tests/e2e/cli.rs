//! The CLI beside `serve`: `check` and `send`.

use std::path::Path;
use std::process::Command;
use std::time::Duration;

use hookwall_testkit::{Hookwall, read_jsonl, wait_for, wasm};

use crate::{BIN, SECRET, workdir};

const CONFIG: &str = r#"
[server]
listen = "{listen}"

[storage]
path = "data"

[admin]
listen = "{admin}"

[sources.demo]
path = "/hooks/demo"
verify = { scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["SECRET"] }
plugins = ["rust-router"]
sinks = ["orders"]

[sinks.orders]
type = "file"
path = "orders.jsonl"

[sinks.other]
type = "file"
path = "other.jsonl"
"#;

/// The config for `check`, which binds nothing: any addresses do.
fn check_config() -> String {
    CONFIG
        .replace("SECRET", SECRET)
        .replace("{listen}", "127.0.0.1:1")
        .replace("{admin}", "127.0.0.1:2")
}

fn hookwall(args: &[&str]) -> std::process::Output {
    Command::new(BIN).args(args).output().expect("run hookwall")
}

#[test]
fn check_accepts_a_good_config_and_loads_its_plugins() {
    let dir = workdir(&[("rust-router", wasm::RUST_ROUTER)]);
    let path = dir.path().join("hookwall.toml");
    std::fs::write(&path, check_config()).unwrap();
    let out = hookwall(&["check", "--config", path.to_str().unwrap()]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.contains("plugin rust-router"), "{stdout}");
}

#[test]
fn check_names_a_mistyped_key_and_exits_non_zero() {
    let dir = workdir(&[("rust-router", wasm::RUST_ROUTER)]);
    let path = dir.path().join("hookwall.toml");
    std::fs::write(&path, check_config().replace("prefix =", "prefx =")).unwrap();
    let out = hookwall(&["check", "--config", path.to_str().unwrap()]);
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
    let path = dir.path().join("hookwall.toml");
    std::fs::write(&path, check_config()).unwrap();
    let out = hookwall(&["check", "--config", path.to_str().unwrap()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success());
    assert!(stderr.contains("rust-router"), "{stderr}");
}

#[test]
fn send_signs_a_file_and_the_event_arrives() {
    let dir = workdir(&[("rust-router", wasm::RUST_ROUTER)]);
    let text = CONFIG.replace("SECRET", SECRET);
    let hw = Hookwall::start(BIN, dir.path(), &text);
    let event = dir.path().join("order.json");
    std::fs::write(&event, br#"{"id":"o-9","type":"order.created"}"#).unwrap();
    let out = hookwall(&[
        "send",
        "--config",
        hw.config_path.to_str().unwrap(),
        "--source",
        "demo",
        event.to_str().unwrap(),
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    assert!(
        out.status.success(),
        "{stdout}{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(stdout.starts_with("200 "), "{stdout}");
    let orders = dir.path().join("orders.jsonl");
    assert!(wait_for(Duration::from_secs(10), || read_jsonl(&orders)
        .len()
        == 1));
    assert_eq!(read_jsonl(&orders)[0]["body"]["id"], "o-9");
}

#[test]
fn the_example_config_checks_out() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().unwrap();
    let out = Command::new(BIN)
        .args(["check", "--config"])
        .arg(root.join("examples/hookwall.toml"))
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
}
