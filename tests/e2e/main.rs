//! End-to-end tests: each starts the real `hookwall` binary in a temp dir on free loopback
//! ports, with plugins built from source by the test kit's build script.

#![allow(clippy::disallowed_methods)] // The tests sign as senders do, with the machine's clock.

mod bench_delivery;
mod bundled;
mod cli;
mod dashboard;
mod delivery;
mod deploy;
mod docs;
mod edge_limits;
mod edge_secrets;
mod edge_tls;
mod guarantees;
mod guarantees_sinks;
mod hostile;
mod intake;
mod languages;
mod operate;
mod orders;
mod queues;
mod reload;
mod scaffold;
mod shared_queue;
mod spine;
mod traces;
mod trust;
mod trust_admin;
mod trust_plugins;
mod trust_sinks;
mod verify;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use hookwall_testkit::{Hookwall, Reply, http, run_ok, sign_sha256_hex};
use serde_json::Value;
use tempfile::TempDir;

/// The binary under test, built by cargo for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_hookwall");
/// The demo source's development secret in every test config.
pub const SECRET: &str = "test-secret-not-for-production";

// Work dirs and start-up.

/// A temp dir with `plugins/NAME.wasm` copied from the test kit's builds.
pub fn workdir(plugins: &[(&str, &str)]) -> TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    std::fs::create_dir(dir.path().join("plugins")).unwrap();
    for (name, built) in plugins {
        std::fs::copy(
            built,
            dir.path().join("plugins").join(format!("{name}.wasm")),
        )
        .unwrap_or_else(|e| panic!("copy {built}: {e}"));
    }
    dir
}

/// Writes the manifest `plugins/PLUGIN.toml` in the work dir `dir`.
pub fn write_manifest(dir: &Path, plugin: &str, text: &str) {
    std::fs::write(dir.join(format!("plugins/{plugin}.toml")), text).unwrap();
}

/// Hookwall serving [`config`]`(sources, extra)` in `dir`.
pub fn serve(dir: &TempDir, sources: &[(&str, &str)], extra: &str) -> Hookwall {
    Hookwall::start(BIN, dir.path(), &config(sources, extra))
}

/// [`serve`] with one source per plugin of `plugins`, named after it and running only it, and
/// the source `ok` running `healthy`: broken plugins next to a working one.
pub fn serve_each(dir: &TempDir, plugins: &[&str], healthy: &str) -> Hookwall {
    let lists: Vec<String> = plugins
        .iter()
        .chain([&healthy])
        .map(|p| format!("\"{p}\""))
        .collect();
    let names = plugins.iter().copied().chain(["ok"]);
    let sources: Vec<(&str, &str)> = names.zip(lists.iter().map(String::as_str)).collect();
    serve(dir, &sources, "")
}

/// The plugin `name` (built at `wasm`, with the manifest `manifest` if given) as the only
/// plugin of the source `demo`, served by [`serve`] in a new work dir.
pub fn start_demo(name: &str, wasm: &str, manifest: Option<&str>) -> (TempDir, Hookwall) {
    let dir = workdir(&[(name, wasm)]);
    if let Some(manifest) = manifest {
        write_manifest(dir.path(), name, manifest);
    }
    let hw = serve(&dir, &[("demo", &format!("\"{name}\""))], "");
    (dir, hw)
}

/// Writes the config `template` to `dir/hookwall.toml` with `{listen}` and `{admin}` set to
/// these addresses, for a command run without the harness; returns its path.
pub fn write_config(dir: &Path, template: &str, listen: &str, admin: &str) -> PathBuf {
    let path = dir.join("hookwall.toml");
    let text = template
        .replace("{listen}", listen)
        .replace("{admin}", admin);
    std::fs::write(&path, text).unwrap();
    path
}

/// Runs `hookwall COMMAND --config CONFIG` to completion (`check`, or a `serve` that is
/// expected to fail); its output.
pub fn run_config(command: &str, config: &Path) -> Output {
    Command::new(BIN)
        .args([command, "--config"])
        .arg(config)
        .output()
        .expect("run hookwall")
}

/// [`run_config`], asserted to succeed (the failure message is its output).
pub fn run_config_ok(command: &str, config: &Path) -> Output {
    run_ok(Command::new(BIN).args([command, "--config"]).arg(config))
}

// Config text.

/// A config with one HMAC source per entry of `sources` (`name`, `plugins`), every source
/// routing to the file sinks `orders` and `other` in the work dir.
pub fn config(sources: &[(&str, &str)], extra: &str) -> String {
    let base = base_config(
        "max_body_bytes = 4096",
        "",
        Some("deadline = \"100ms\"\nmax_memory_bytes = 8388608"),
        "",
    );
    let orders = file_sink(
        "orders",
        "orders.jsonl",
        "retry = { max_attempts = 50, initial = \"50ms\", max_delay = \"200ms\" }",
    );
    let other = file_sink("other", "other.jsonl", "");
    let mut text = format!("{base}{orders}{other}{extra}\n");
    for (name, plugins) in sources {
        text.push_str(&hmac_source(name, plugins, "orders"));
    }
    text
}

/// The sections every e2e config starts with, each followed by its `*_extra` lines: `[server]`
/// on the harness's `{listen}` with a 2 s shutdown grace, `[storage]` in `data`, `[plugins]`
/// from `plugins/` with the `plugins` lines (no such section when `None`), `[admin]` on the
/// harness's `{admin}`.
pub fn base_config(
    server_extra: &str,
    storage_extra: &str,
    plugins: Option<&str>,
    admin_extra: &str,
) -> String {
    let plugins = plugins
        .map(|lines| format!("\n[plugins]\ndir = \"plugins\"\n{lines}\n"))
        .unwrap_or_default();
    format!(
        r#"
[server]
listen = "{{listen}}"
shutdown_grace = "2s"
{server_extra}

[storage]
path = "data"
{storage_extra}
{plugins}
[admin]
listen = "{{admin}}"
{admin_extra}
"#
    )
}

/// `[sinks.NAME]`: a file sink writing `path` (relative to the work dir), with `extra` lines.
pub fn file_sink(name: &str, path: &str, extra: &str) -> String {
    format!("\n[sinks.{name}]\ntype = \"file\"\npath = \"{path}\"\n{extra}\n")
}

/// `[sources.NAME]` at `/hooks/NAME` checking requests with `verify` (an inline TOML table),
/// running `plugins` (TOML list items, e.g. `"\"p\""`), routing to `sink`, then `extra` lines.
pub fn source(name: &str, verify: &str, plugins: &str, sink: &str, extra: &str) -> String {
    format!(
        "\n[sources.{name}]\npath = \"/hooks/{name}\"\nverify = {verify}\nplugins = [{plugins}]\n\
         sinks = [\"{sink}\"]\n{extra}\n"
    )
}

/// A [`source`] with HMAC-SHA256 over the body with [`SECRET`] in `X-Signature` and the id in
/// `X-Event-Id`.
pub fn hmac_source(name: &str, plugins: &str, sink: &str) -> String {
    let verify = format!(
        "{{ scheme = \"hmac\", header = \"X-Signature\", prefix = \"sha256=\", \
         secrets = [\"{SECRET}\"], id_header = \"X-Event-Id\" }}"
    );
    source(name, &verify, plugins, sink, "")
}

/// A [`source`] without verification or plugins (`verify_extra` goes inside its
/// `verify = { scheme = "none"… }`, e.g. `, id_header = "X-Id"`).
pub fn open_source(name: &str, verify_extra: &str, sink: &str, extra: &str) -> String {
    let verify = format!("{{ scheme = \"none\"{verify_extra} }}");
    source(name, &verify, "", sink, extra)
}

// Sending.

/// POSTs `body` to `/hooks/SOURCE` at `addr` as a sender to an [`hmac_source`] does: signed
/// with [`SECRET`] in `X-Signature`, `id` in `X-Event-Id`, then the `extra` headers. An error
/// when the request fails (a sender on its own thread may count those).
pub fn send_signed(
    addr: SocketAddr,
    source: &str,
    id: &str,
    body: &[u8],
    extra: &[(&str, &str)],
) -> std::io::Result<Reply> {
    let sig = sign_sha256_hex(SECRET, body);
    let mut headers = vec![("X-Signature", sig.as_str()), ("X-Event-Id", id)];
    headers.extend_from_slice(extra);
    http(addr, "POST", &format!("/hooks/{source}"), &headers, body)
}

/// [`send_signed`] of the JSON `body` to `hw`, as `application/json`.
pub fn post_signed(hw: &Hookwall, source: &str, id: &str, body: &Value) -> Reply {
    let body = serde_json::to_vec(body).unwrap();
    let json = [("Content-Type", "application/json")];
    send_signed(hw.addr, source, id, &body, &json).expect("request to hookwall")
}

/// Whether a delivery of an action printed by `hookwall plugin test` carries the header
/// `name: value`.
pub fn has_header(delivery: &Value, name: &str, value: &str) -> bool {
    let pair = Value::from(vec![name, value]);
    delivery["headers"].as_array().unwrap().contains(&pair)
}

/// Per `order_id` of the JSON bodies the app accepted, their `step`s in the order it accepted
/// them (the `order_key` tests send `{"order_id": …, "step": …}`).
pub fn steps_per_order(
    up: &hookwall_testkit::upstream::Upstream,
) -> std::collections::BTreeMap<String, Vec<u64>> {
    let mut per_order: std::collections::BTreeMap<String, Vec<u64>> = Default::default();
    for r in up.accepted() {
        let body = r.json();
        per_order
            .entry(body["order_id"].as_str().unwrap().to_string())
            .or_default()
            .push(body["step"].as_u64().unwrap());
    }
    per_order
}

// Reading through the admin API.

/// The plugin `name` as `GET /api/v1/plugins` lists it (`null` when it is not listed).
pub fn plugin_status(hw: &Hookwall, name: &str) -> Value {
    let all = hw.admin_get("/api/v1/plugins").json();
    all["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(Value::Null)
}

/// `GET /api/v1/events/{id}`, asserted to be found.
pub fn stored(hw: &Hookwall, id: &str) -> Value {
    let r = hw.event(id);
    assert_eq!(
        r.status,
        200,
        "event {id}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}

/// The dead letters `GET /api/v1/dead-letters` lists (asserted to answer 200).
pub fn dead_letters(hw: &Hookwall) -> Vec<Value> {
    let r = hw.admin_get("/api/v1/dead-letters");
    assert_eq!(r.status, 200, "{r:?}");
    r.json()["dead_letters"].as_array().unwrap().clone()
}

/// `debug` or `release`: which build printed numbers come from.
pub fn build_kind() -> &'static str {
    if cfg!(debug_assertions) {
        "debug"
    } else {
        "release"
    }
}
