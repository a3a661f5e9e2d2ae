//! The fuzz entry point over the whole request path: raw bytes, as a client would send them,
//! go through the same connection code ([`edge::serve_connection`]: hyper's HTTP/1 and HTTP/2
//! parsers, the limits, [`edge::GuardedBody`]) and the same handler ([`handle_webhook`]:
//! verify, rate limit, dedupe, store) as the real listener, over an in-memory pipe instead of
//! a socket. Used by `host/fuzz/fuzz_targets/raw_request.rs` and by the test that replays
//! its corpus (`host/fuzz/corpus/raw_request/`) in every `cargo test`.
//!
//! What must hold for every input: no panic anywhere (the handler turns a pipeline panic into
//! a 500, so a 500 is a finding too), and the connection ends by itself once the client has
//! sent its bytes and closed its side.

use std::net::SocketAddr;
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::config::{Config, LimitsConfig};
use crate::pipeline::Pipeline;
use crate::plugin::PluginHost;
use crate::server::edge;
use crate::store::Store;

/// An input whose connection has not ended after this long hangs: a finding.
const HANG: Duration = Duration::from_secs(10);
/// Most of a response the client reads.
const MAX_RESPONSE: u64 = 1024 * 1024;

/// Sources the fuzzer can reach: one that needs a signature, one open to anyone (so inputs get
/// past verification to dedupe and the store), rate limited so a long run keeps the store small.
const CONFIG: &str = r#"
[server]
max_body_bytes = 4096

[storage]
path = "data"
fsync = false

[sources.signed]
path = "/hooks/signed"
verify = { scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["fuzz-secret"], id_header = "X-Event-Id" }
sinks = ["out"]

[sources.open]
path = "/hooks/open"
verify = { scheme = "none", id_header = "X-Event-Id" }
sinks = ["out"]
dedupe = { key = "json:/id" }
rate_limit = { rate = "200/s", burst = 50 }

[sinks.out]
type = "stdout"
"#;

struct Harness {
    runtime: tokio::runtime::Runtime,
    pipeline: Arc<Pipeline>,
    limits: LimitsConfig,
    builder: hyper_util::server::conn::auto::Builder<hyper_util::rt::TokioExecutor>,
    /// Keeps the store's directory for the life of the process.
    _dir: tempfile::TempDir,
}

fn harness() -> &'static Harness {
    static H: OnceLock<Harness> = OnceLock::new();
    H.get_or_init(|| {
        let dir = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir(dir.path().join("plugins")).expect("plugins dir");
        let config = Config::parse(CONFIG, dir.path()).expect("fuzz config is valid");
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .expect("runtime");
        let pipeline = runtime.block_on(async {
            let store =
                Store::open_with(&config.storage.path, config.storage.fsync).expect("store");
            let plugins = Arc::new(PluginHost::load(&config, None).expect("no plugins"));
            Arc::new(Pipeline::new(&config, plugins, store).expect("pipeline"))
        });
        let limits = config.server.limits.clone();
        Harness {
            builder: edge::builder(&limits),
            runtime,
            pipeline,
            limits,
            _dir: dir,
        }
    })
}

/// The fuzz target: [`exchange`], and a finding is a panic.
pub fn raw_request(data: &[u8]) {
    let answer = exchange(data);
    assert!(
        !answer.starts_with(b"HTTP/1.1 500"),
        "the handler answered 500: {}",
        String::from_utf8_lossy(&answer)
    );
}

/// Sends `data` as one client connection's bytes, then closes the client's write side, and
/// returns what the server answered. Panics if the connection hangs.
pub fn exchange(data: &[u8]) -> Vec<u8> {
    let h = harness();
    let remote = SocketAddr::from(([127, 0, 0, 1], 40_000));
    h.runtime.block_on(async {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
        let pipeline = h.pipeline.clone();
        let handler =
            move |req, remote| crate::server::handle_webhook(pipeline.clone(), remote, req);
        let conn = edge::serve_connection(
            server,
            remote,
            &h.builder,
            &h.limits,
            handler,
            stop_rx,
            Duration::from_secs(1),
        );
        let talk = async {
            // The server may close before reading everything (a refused head): not an error.
            let _ = client.write_all(data).await;
            let _ = client.shutdown().await;
            let mut answer = Vec::new();
            let _ = (&mut client)
                .take(MAX_RESPONSE)
                .read_to_end(&mut answer)
                .await;
            answer
        };
        let (_, answer) = tokio::time::timeout(HANG, async { tokio::join!(conn, talk) })
            .await
            .unwrap_or_else(|_| panic!("connection hangs on {} input bytes", data.len()));
        answer
    })
}

#[cfg(test)]
mod tests {
    use std::path::Path;

    /// Replays the committed corpus (`host/fuzz/corpus/raw_request/`), so every `cargo test`
    /// re-checks what the fuzzer found interesting.
    #[test]
    fn raw_request_corpus_replays_cleanly() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("fuzz/corpus/raw_request");
        let mut files: Vec<_> = std::fs::read_dir(&dir)
            .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
            .map(|e| e.unwrap().path())
            .collect();
        files.sort();
        assert!(files.len() >= 10, "too few seeds in {}", dir.display());
        for file in files {
            let data = std::fs::read(&file).unwrap();
            let outcome = std::panic::catch_unwind(|| super::raw_request(&data));
            assert!(outcome.is_ok(), "{} fails", file.display());
        }
    }

    /// A well-formed signed request really reaches the store through this path (so the
    /// fuzzer is not just exercising the 404 branch).
    #[test]
    fn a_valid_request_is_stored_and_a_bad_chunk_refused() {
        let body = br#"{"id":"fuzz-probe-1"}"#;
        let raw = format!(
            "POST /hooks/open HTTP/1.1\r\nHost: x\r\nX-Event-Id: probe-1\r\nContent-Length: {}\r\n\r\n{}",
            body.len(),
            String::from_utf8_lossy(body)
        );
        let answer = String::from_utf8_lossy(&super::exchange(raw.as_bytes())).into_owned();
        assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
        assert!(answer.contains(r#""status":"accepted""#), "{answer}");
        // And a bad chunk is refused by the same path.
        let bad =
            b"POST /hooks/open HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nZZ\r\n";
        let answer = String::from_utf8_lossy(&super::exchange(bad)).into_owned();
        assert!(
            answer.is_empty() || answer.starts_with("HTTP/1.1 4"),
            "{answer}"
        );
    }
}
