//! Cost of one plugin call with a fresh instance per event (the default), 1 KiB body.
//!
//! Prints median and p99 over 20 000 calls first (criterion reports means), then the criterion
//! measurement. `cargo bench --bench plugin_call`.

mod common;

use std::sync::Arc;
use std::time::Instant;

use criterion::{Criterion, criterion_group, criterion_main};
use hookwall::plugin::{Event, PluginHost};
use hookwall_testkit::wasm;

fn event() -> Event {
    common::plugin_event(common::body_1k())
}

fn percentiles(host: &PluginHost, name: &str) {
    let set = host.plugins();
    let plugin = set.get(name).unwrap();
    let event = event();
    for _ in 0..2_000 {
        host.call(plugin, &event).unwrap();
    }
    let mut samples: Vec<u128> = (0..20_000)
        .map(|_| {
            let t = Instant::now();
            host.call(plugin, &event).unwrap();
            t.elapsed().as_nanos()
        })
        .collect();
    samples.sort_unstable();
    let at = |q: f64| {
        samples[((samples.len() as f64 * q) as usize).min(samples.len() - 1)] as f64 / 1000.0
    };
    println!(
        "plugin `{name}`, fresh instance per call, 1 KiB body: median {:.1} µs, p99 {:.1} µs, p99.9 {:.1} µs",
        at(0.5),
        at(0.99),
        at(0.999)
    );
}

fn bench(c: &mut Criterion) {
    let dir = tempfile::tempdir().unwrap();
    let config = common::config(
        dir.path(),
        &[("echo", wasm::ECHO), ("rust-router", wasm::RUST_ROUTER)],
        false,
    );
    let host = Arc::new(PluginHost::load(&config, None).unwrap());
    for name in ["echo", "rust-router"] {
        percentiles(&host, name);
    }
    let set = host.plugins();
    let event = event();
    let mut group = c.benchmark_group("plugin_call_fresh_instance");
    for name in ["echo", "rust-router"] {
        let plugin = set.get(name).unwrap();
        group.bench_function(name, |b| b.iter(|| host.call(plugin, &event).unwrap()));
    }
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
