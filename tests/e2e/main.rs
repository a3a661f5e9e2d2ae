//! End-to-end tests: each starts the real `hookwall` binary in a temp dir on free loopback
//! ports, with plugins built from source by the test kit's build script.

#![allow(clippy::disallowed_methods)] // The tests sign as senders do, with the machine's clock.

mod bench_delivery;
mod bundled;
mod cli;
mod dashboard;
mod delivery;
mod edge_limits;
mod edge_secrets;
mod edge_tls;
mod hostile;
mod intake;
mod languages;
mod operate;
mod orders;
mod queues;
mod reload;
mod scaffold;
mod spine;
mod trust;
mod trust_admin;
mod trust_plugins;
mod trust_sinks;
mod verify;

use hookwall_testkit::{Hookwall, sign_sha256_hex};

/// The binary under test, built by cargo for this test target.
pub const BIN: &str = env!("CARGO_BIN_EXE_hookwall");
/// The demo source's development secret in every test config.
pub const SECRET: &str = "test-secret-not-for-production";

/// A temp dir with `plugins/NAME.wasm` copied from the test kit's builds.
pub fn workdir(plugins: &[(&str, &str)]) -> tempfile::TempDir {
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

/// A config with one HMAC source per entry of `sources` (`name`, `plugins`), every source
/// routing to the file sinks `orders` and `other` in the work dir.
pub fn config(sources: &[(&str, &str)], extra: &str) -> String {
    let base = base_config(
        "max_body_bytes = 4096",
        "",
        Some("deadline = \"100ms\"\nmax_memory_bytes = 8388608"),
        "",
    );
    let mut text = format!(
        r#"{base}
[sinks.orders]
type = "file"
path = "orders.jsonl"
retry = {{ max_attempts = 50, initial = "50ms", max_delay = "200ms" }}

[sinks.other]
type = "file"
path = "other.jsonl"
{extra}
"#
    );
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

/// `[sources.NAME]` at `/hooks/NAME`: HMAC-SHA256 with [`SECRET`] in `X-Signature`, the id in
/// `X-Event-Id`, running `plugins` (TOML list items, e.g. `"\"p\""`) and routing to `sink`.
pub fn hmac_source(name: &str, plugins: &str, sink: &str) -> String {
    format!(
        r#"
[sources.{name}]
path = "/hooks/{name}"
verify = {{ scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["{SECRET}"], id_header = "X-Event-Id" }}
plugins = [{plugins}]
sinks = ["{sink}"]
"#
    )
}

pub fn post_signed(
    hw: &Hookwall,
    source: &str,
    id: &str,
    body: &serde_json::Value,
) -> hookwall_testkit::Reply {
    let body = serde_json::to_vec(body).unwrap();
    let sig = sign_sha256_hex(SECRET, &body);
    hw.post(
        &format!("/hooks/{source}"),
        &[
            ("X-Signature", &sig),
            ("X-Event-Id", id),
            ("Content-Type", "application/json"),
        ],
        &body,
    )
}

/// The plugin `name` as `GET /api/v1/plugins` lists it (`null` when it is not listed).
pub fn plugin_status(hw: &Hookwall, name: &str) -> serde_json::Value {
    let all = hw.admin_get("/api/v1/plugins").json();
    all["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == name)
        .cloned()
        .unwrap_or(serde_json::Value::Null)
}

pub fn stored(hw: &Hookwall, id: &str) -> serde_json::Value {
    let r = hw.admin_get(&format!("/api/v1/events/{id}"));
    assert_eq!(
        r.status,
        200,
        "event {id}: {:?}",
        String::from_utf8_lossy(&r.body)
    );
    r.json()
}
