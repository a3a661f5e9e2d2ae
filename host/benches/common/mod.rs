//! Shared set-up for the benchmarks: a temp dir with config, plugins and store.

use std::path::Path;

use hookwall::config::Config;
use hookwall::plugin::Event;

pub const SECRET: &str = "bench-secret";

/// A config with one HMAC source `bench` running `plugins` (copied from the test kit's
/// builds), with a paused file sink so nothing is delivered while measuring.
pub fn config(dir: &Path, plugins: &[(&str, &str)], fsync: bool) -> Config {
    config_with(dir, plugins, fsync, "")
}

/// [`config`] with `source_extra` lines in the `bench` source.
pub fn config_with(
    dir: &Path,
    plugins: &[(&str, &str)],
    fsync: bool,
    source_extra: &str,
) -> Config {
    std::fs::create_dir_all(dir.join("plugins")).unwrap();
    for (name, built) in plugins {
        std::fs::copy(built, dir.join("plugins").join(format!("{name}.wasm"))).unwrap();
    }
    let list: Vec<String> = plugins.iter().map(|(n, _)| format!("\"{n}\"")).collect();
    let text = format!(
        r#"
[storage]
path = "data"
fsync = {fsync}

[sources.bench]
path = "/hooks/bench"
verify = {{ scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["{SECRET}"] }}
plugins = [{}]
sinks = ["bench"]
{source_extra}

[sinks.bench]
type = "file"
path = "events.jsonl"
paused = true
"#,
        list.join(", ")
    );
    Config::parse(&text, dir).unwrap()
}

/// A POST of `body` to the `bench` source as a plugin sees it (JSON content type, id `evt-1`).
#[allow(dead_code)] // each bench compiles this module; not all of them call plugins
pub fn plugin_event(body: Vec<u8>) -> Event {
    Event {
        id: "evt-1".into(),
        source: "bench".into(),
        received_at_ms: 0,
        method: "POST".into(),
        path: "/hooks/bench".into(),
        query: String::new(),
        headers: vec![("content-type".into(), "application/json".into())],
        body,
    }
}

/// A 1 KiB JSON body.
pub fn body_1k() -> Vec<u8> {
    let head = br#"{"id":"o-1","type":"order.created","pad":""#;
    let mut body = head.to_vec();
    body.resize(1024 - 2, b'x');
    body.extend_from_slice(b"\"}");
    body
}

/// A one-thread runtime to drive plugin calls on (they are async: a request's task drives them
/// in the server), with the timer their deadline needs.
#[allow(dead_code)] // not every bench calls plugins
pub fn call_runtime() -> tokio::runtime::Runtime {
    tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .unwrap()
}
