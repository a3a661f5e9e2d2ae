//! What dedupe + rate limiting cost per request, embedded and through Redis, against the same
//! pipeline without them: verify → [ratelimit → dedupe] → store commit, no plugins, 1 KiB body,
//! a paused sink. `cargo bench -p hookwall --bench intake` (needs `redis-server` on the machine;
//! the bench starts a private one on a free port).
//!
//! Each scenario runs two ways: one request at a time (the latency each check adds, Redis
//! round trips included) and 64 in flight (throughput, where round trips overlap and commits
//! are grouped). Compare the `checks` rows with `baseline` for the ratio.

// Shared with the other benches; this one uses only the config, the secret and the body.
#[allow(dead_code)]
mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hookwall::config::{Config, Secret};
use hookwall::pipeline::{Ingested, Pipeline};
use hookwall::plugin::PluginHost;
use hookwall::redis::SharedRedis;
use hookwall::server::InboundRequest;
use hookwall::store::Store;
use hookwall::verify::Verifier;
use hookwall_testkit::RedisServer;

/// Requests in flight in the concurrent runs.
const IN_FLIGHT: u64 = 64;

/// One HMAC source; `checks` adds a per-delivery-id dedupe key and a rate limit too high to
/// refuse anything (so every request pays for the check and none is turned away).
fn config(dir: &std::path::Path, checks: bool, fsync: bool) -> Config {
    let intake = if checks {
        r#"dedupe = { key = "header:X-Delivery" }
rate_limit = { rate = "1000000/s", burst = 1000000, by = "client_ip" }"#
    } else {
        ""
    };
    common::config_with(dir, &[], fsync, intake)
}

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let redis_server = RedisServer::start();
    let redis = rt.block_on(async {
        SharedRedis::connect(&Secret::new(redis_server.url()), "bench")
            .await
            .unwrap()
    });
    let mut group = c.benchmark_group("intake");
    for fsync in [false, true] {
        for (label, checks, shared) in [
            ("baseline", false, false),
            ("checks embedded", true, false),
            ("checks redis", true, true),
        ] {
            let dir = tempfile::tempdir().unwrap();
            let config = config(dir.path(), checks, fsync);
            let store = Store::open_with(&config.storage.path, fsync).unwrap();
            let host = Arc::new(PluginHost::load(&config, None).unwrap());
            let shared = shared.then(|| redis.clone());
            let pipeline = Arc::new(Pipeline::with_redis(&config, host, store, shared).unwrap());
            let body = Bytes::from(common::body_1k());
            let unsigned = hookwall::verify::Signed {
                path: "/hooks/bench".into(),
                body: body.to_vec(),
                ..hookwall::verify::Signed::default()
            };
            let signed: Vec<(String, String)> = Verifier::for_source(&config, "bench")
                .unwrap()
                .sign(unsigned, "", hookwall::clock::now_ms())
                .headers;
            let next = Arc::new(AtomicU64::new(0));
            let request = {
                let next = next.clone();
                move || {
                    let mut headers = signed.clone();
                    // A fresh delivery id per request: every one is a new event.
                    let n = next.fetch_add(1, Ordering::Relaxed);
                    headers.push(("x-delivery".into(), format!("d-{n}")));
                    InboundRequest {
                        source: "bench".into(),
                        method: "POST".into(),
                        path: "/hooks/bench".into(),
                        query: String::new(),
                        headers,
                        body: body.clone(),
                        remote: SocketAddr::from(([127, 0, 0, 1], 1)),
                        received_at_ms: hookwall::clock::now_ms(),
                    }
                }
            };
            let request = Arc::new(request);
            let fsync_label = if fsync { "fsync" } else { "no fsync" };
            let source = pipeline.source_for_path("/hooks/bench").unwrap();
            group.bench_function(format!("{label}, sequential, {fsync_label}"), |b| {
                b.iter_custom(|iters| {
                    let start = Instant::now();
                    rt.block_on(async {
                        for _ in 0..iters {
                            let out = pipeline.ingest(&source, request()).await.unwrap();
                            assert!(matches!(out, Ingested::Accepted { .. }), "{out:?}");
                        }
                    });
                    start.elapsed()
                })
            });
            group.bench_function(
                format!("{label}, {IN_FLIGHT} in flight, {fsync_label}"),
                |b| {
                    b.iter_custom(|iters| {
                        let start = Instant::now();
                        rt.block_on(async {
                            let tasks: Vec<_> = (0..IN_FLIGHT)
                                .map(|t| {
                                    let (pipeline, request) = (pipeline.clone(), request.clone());
                                    // Spread `iters` over the tasks.
                                    let n = iters / IN_FLIGHT + u64::from(t < iters % IN_FLIGHT);
                                    tokio::spawn(async move {
                                        let source =
                                            pipeline.source_for_path("/hooks/bench").unwrap();
                                        for _ in 0..n {
                                            let out =
                                                pipeline.ingest(&source, request()).await.unwrap();
                                            assert!(matches!(out, Ingested::Accepted { .. }));
                                        }
                                    })
                                })
                                .collect();
                            for t in tasks {
                                t.await.unwrap();
                            }
                        });
                        start.elapsed()
                    })
                },
            );
        }
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
