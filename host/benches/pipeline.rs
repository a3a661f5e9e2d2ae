//! The full in-process pipeline without sockets: verify → plugin (bundled router) → store
//! commit, 1 KiB body. `cargo bench --bench pipeline`.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bytes::Bytes;
use criterion::{Criterion, criterion_group, criterion_main};
use hookwall::pipeline::{Ingested, Pipeline};
use hookwall::plugin::PluginHost;
use hookwall::server::InboundRequest;
use hookwall::store::Store;
use hookwall::verify::Signed;
use hookwall::verify::Verifier;
use hookwall_testkit::wasm;

fn bench(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .unwrap();
    let mut group = c.benchmark_group("pipeline_in_process");
    for (label, plugins, fsync) in [
        ("verify + store (no fsync)", vec![], false),
        (
            "verify + router plugin + store (no fsync)",
            vec![("router", wasm::ROUTER)],
            false,
        ),
        (
            "verify + router plugin + store (fsync)",
            vec![("router", wasm::ROUTER)],
            true,
        ),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = common::config(dir.path(), &plugins, fsync);
        let store = Store::open_with(&config.storage.path, fsync).unwrap();
        let host = Arc::new(PluginHost::load(&config, None).unwrap());
        let pipeline = Pipeline::new(&config, host, store).unwrap();
        let source = pipeline.source_for_path("/hooks/bench").unwrap();
        let body = Bytes::from(common::body_1k());
        let verifier = Verifier::for_source(&config, "bench").unwrap();
        let unsigned = Signed {
            path: "/hooks/bench".into(),
            body: body.to_vec(),
            ..Signed::default()
        };
        let headers: Vec<(String, String)> = verifier.sign(unsigned, "", 0).headers;
        group.bench_function(label, |b| {
            b.iter_custom(|iters| {
                let start = Instant::now();
                rt.block_on(async {
                    for _ in 0..iters {
                        // No id header: each request gets a fresh id, as a new event would.
                        let headers = headers.clone();
                        let request = InboundRequest {
                            source: "bench".into(),
                            method: "POST".into(),
                            path: "/hooks/bench".into(),
                            query: String::new(),
                            headers,
                            body: body.clone(),
                            remote: SocketAddr::from(([127, 0, 0, 1], 1)),
                            received_at_ms: 0,
                        };
                        let out = pipeline.ingest(&source, request).await.unwrap();
                        assert!(matches!(out, Ingested::Accepted { .. }));
                    }
                });
                start.elapsed()
            })
        });
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
