//! The plugin platform's numbers (issue 6's note): reload latency, compile and cached start-up
//! time of each bundled plugin, per-call cost of each language's example plugin with fresh
//! and pooled instances, and the stateful example's per-call cost with its key-value state
//! embedded or in Redis (a private `redis-server`). Prints a table; no criterion runs.
//! `cargo bench --bench plugin_platform` (the JS and Python examples are built with their
//! toolchains first, as in the e2e tests).

mod common;

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use hookwall::config::Secret;
use hookwall::plugin::kv::{RedisKv, StoreKv};
use hookwall::plugin::{PluginHost, PluginKv};
use hookwall::redis::SharedRedis;
use hookwall::store::Store;
use hookwall_testkit::{RedisServer, guests, wasm};

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// (median, p99) of `samples`, in the samples' unit.
fn p50_p99(mut samples: Vec<f64>) -> (f64, f64) {
    samples.sort_by(|a, b| a.total_cmp(b));
    let at = |q: f64| samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)];
    (at(0.5), at(0.99))
}

/// A plugins dir with `name` alone, plus `manifest` if given.
fn setup(dir: &Path, name: &str, wasm: &str, manifest: Option<&str>) -> hookwall::config::Config {
    let mut config = common::config(dir, &[(name, wasm)], false);
    if let Some(m) = manifest {
        std::fs::write(dir.join("plugins").join(format!("{name}.toml")), m).unwrap();
    }
    config.plugins.max_memory_bytes = 64 * 1024 * 1024;
    config.plugins.deadline = Duration::from_secs(5);
    config
}

fn compile_times() {
    println!("\n## Bundled plugins: compile (empty cache) and cached start-up");
    println!("| plugin | size | compile + load | cached load |");
    println!("|---|---|---|---|");
    for (name, wasm) in [
        ("router", wasm::ROUTER),
        ("filter", wasm::FILTER),
        ("redact", wasm::REDACT),
        ("cloudevents", wasm::CLOUDEVENTS),
        ("json-schema", wasm::JSON_SCHEMA),
        ("order-lifecycle", wasm::ORDER_LIFECYCLE),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let config = setup(dir.path(), name, wasm, None);
        let t = Instant::now();
        drop(PluginHost::load(&config, None).unwrap());
        let cold = t.elapsed();
        let mut cached = Vec::new();
        for _ in 0..5 {
            let t = Instant::now();
            drop(PluginHost::load(&config, None).unwrap());
            cached.push(ms(t.elapsed()));
        }
        let size = std::fs::metadata(wasm).unwrap().len();
        println!(
            "| {name} | {} KiB | {:.0} ms | {:.1} ms |",
            size / 1024,
            ms(cold),
            p50_p99(cached).0
        );
    }
}

fn call_costs() {
    println!("\n## Per-call cost, 1 KiB JSON body (median / p99)");
    println!("| plugin | fresh instance per call | pooled instance |");
    println!("|---|---|---|");
    let js = guests::JS_ROUTER.build();
    let py = guests::PYTHON_ROUTER.build();
    for (name, wasm, calls) in [
        ("rust-router", wasm::RUST_ROUTER.to_owned(), 5_000),
        ("js-router", js.to_string_lossy().into_owned(), 500),
        ("python-router", py.to_string_lossy().into_owned(), 500),
    ] {
        let mut row = format!("| {name} |");
        for mode in ["fresh", "pooled"] {
            let dir = tempfile::tempdir().unwrap();
            let config = setup(
                dir.path(),
                name,
                &wasm,
                Some(&format!("instances = \"{mode}\"\npool_size = 1\n")),
            );
            let host = PluginHost::load(&config, None).unwrap();
            let set = host.plugins();
            let plugin = set.get(name).unwrap();
            let event = common::plugin_event(common::body_1k());
            let rt = common::call_runtime();
            for _ in 0..calls / 10 {
                rt.block_on(host.call(plugin, &event)).unwrap();
            }
            let samples: Vec<f64> = (0..calls)
                .map(|_| {
                    let t = Instant::now();
                    rt.block_on(host.call(plugin, &event)).unwrap();
                    t.elapsed().as_secs_f64() * 1e6
                })
                .collect();
            let (p50, p99) = p50_p99(samples);
            row += &format!(" {p50:.0} / {p99:.0} µs |");
        }
        println!("{row}");
    }
}

/// File write → the new version is the one new calls get, through the real watcher (debounce
/// included), alternating two builds 40 times.
fn reload_latency() {
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "p", wasm::ECHO, None);
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let host = Arc::new(PluginHost::load(&config, None).unwrap());
    let _watcher =
        runtime.block_on(async { hookwall::plugin::reload::watch(host.clone()).unwrap() });
    let file = dir.path().join("plugins/p.wasm");
    let versions = [
        std::fs::read(wasm::UPPER).unwrap(),
        std::fs::read(wasm::ECHO).unwrap(),
    ];
    let mut samples = Vec::new();
    for i in 0..40 {
        let before = host.plugins().get("p").unwrap().version.clone();
        let t = Instant::now();
        std::fs::write(&file, &versions[i % 2]).unwrap();
        while host.plugins().get("p").unwrap().version == before {
            assert!(t.elapsed() < Duration::from_secs(10), "no reload");
            std::thread::sleep(Duration::from_micros(200));
        }
        samples.push(ms(t.elapsed()));
    }
    let (p50, p99) = p50_p99(samples.clone());
    let max = samples.iter().copied().fold(0.0, f64::max);
    println!("\n## Reload latency (file write → new version serving), 40 swaps");
    println!("p50 {p50:.1} ms, p99 {p99:.1} ms, max {max:.1} ms (debounce included)");
}

/// `examples/order-lifecycle` per call, each a new order's accept (one `get`, one
/// `compare-and-swap`), with its state in the embedded store and in Redis.
fn kv_costs() {
    println!("\n## order-lifecycle per call (kv get + compare-and-swap), median / p99");
    println!("| key-value backend | per call |");
    println!("|---|---|");
    let runtime = tokio::runtime::Runtime::new().unwrap();
    let server = RedisServer::start();
    let redis = runtime
        .block_on(SharedRedis::connect(&Secret::new(server.url()), "bench"))
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = setup(dir.path(), "order-lifecycle", wasm::ORDER_LIFECYCLE, None);
    let store = Store::open_with(&config.storage.path, true).unwrap();
    let backends: [(&str, Arc<dyn PluginKv>); 2] = [
        (
            "embedded (fsync on, the default)",
            Arc::new(StoreKv::new(store.clone())),
        ),
        (
            "Redis (loopback, no persistence)",
            Arc::new(RedisKv::new(redis)),
        ),
    ];
    for (name, kv) in backends {
        let host = PluginHost::load(&config, Some(kv)).unwrap();
        let set = host.plugins();
        let plugin = set.get("order-lifecycle").unwrap();
        let accept = |i: usize| {
            let body =
                format!(r#"{{"type":"order.accepted","order_id":"{name}-{i}","seq":1,"qty":1}}"#);
            common::plugin_event(body.into_bytes())
        };
        for i in 0..100 {
            runtime.block_on(host.call(plugin, &accept(i))).unwrap();
        }
        let samples: Vec<f64> = (100..1100)
            .map(|i| {
                let event = accept(i);
                let t = Instant::now();
                runtime.block_on(host.call(plugin, &event)).unwrap();
                t.elapsed().as_secs_f64() * 1e6
            })
            .collect();
        let (p50, p99) = p50_p99(samples);
        println!("| {name} | {p50:.0} / {p99:.0} µs |");
    }
}

fn main() {
    // `cargo bench` passes `--bench`; this bench takes no filters.
    println!(
        "plugin_platform ({} build)",
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        }
    );
    reload_latency();
    compile_times();
    call_costs();
    kv_costs();
}
