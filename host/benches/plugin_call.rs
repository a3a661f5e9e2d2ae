//! Cost of one plugin call, 1 KiB body: with a fresh instance per event (the default for small
//! plugins) and with a pooled warm instance (`instances = "pooled"`), for an echo plugin (the
//! host's own cost) and the Rust router example (plus its JSON parsing).
//!
//! Prints median and p99 over 20 000 calls first (criterion reports means), then the criterion
//! measurement. Each call is driven to completion on a one-thread runtime, as a request's task
//! drives it in the server. `cargo bench --bench plugin_call`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use hookwall::plugin::{Event, PluginHost};
use hookwall_testkit::wasm;

fn event() -> Event {
    common::plugin_event(common::body_1k())
}

/// The plugins measured: (name, mode), each name a copy of its wasm with its own manifest.
const PLUGINS: [(&str, &str); 4] = [
    ("echo", "fresh"),
    ("rust-router", "fresh"),
    ("echo-pooled", "pooled"),
    ("rust-router-pooled", "pooled"),
];

fn percentiles(host: &PluginHost, name: &str, mode: &str) {
    let set = host.plugins();
    let plugin = set.get(name).unwrap();
    let event = event();
    let rt = common::call_runtime();
    for _ in 0..2_000 {
        rt.block_on(host.call(plugin, &event)).unwrap();
    }
    let mut samples: Vec<u128> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            rt.block_on(host.call(plugin, &event)).unwrap();
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0
    };
    println!(
        "plugin `{name}`, {mode} instance, 1 KiB body: median {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        at(0.5),
        at(0.99),
        at(0.999)
    );
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        dir.path(),
        &[
            ("echo", wasm::ECHO),
            ("rust-router", wasm::RUST_ROUTER),
            ("echo-pooled", wasm::ECHO),
            ("rust-router-pooled", wasm::RUST_ROUTER),
        ],
        false,
    );
    for (name, mode) in PLUGINS {
        std::fs::write(
            dir.path().join(format!("plugins/{name}.toml")),
            format!("instances = \"{mode}\"\n"),
        )
        .unwrap();
    }
    let host = Arc::new(PluginHost::load(&config, None).unwrap());
    for (name, mode) in PLUGINS {
        percentiles(&host, name, mode);
    }
    let set = host.plugins();
    let event = event();
    let rt = common::call_runtime();
    for mode in ["fresh", "pooled"] {
        let mut group = c.benchmark_group(format!("plugin_call_{mode}_instance"));
        for (name, _) in PLUGINS.iter().filter(|(_, m)| *m == mode) {
            let plugin = set.get(name).unwrap();
            group.bench_function(*name, |b| {
                b.iter(|| rt.block_on(host.call(plugin, &event)).unwrap())
            });
        }
        group.finish();
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
