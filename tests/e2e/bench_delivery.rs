//! A measurement, not a check (ignored by default; speed is never asserted):
//! `cargo test -p hookwall --test e2e -- --ignored --nocapture bench_delivery`.
//!
//! Same config twice (one source, fsynced store, one `http` sink): first with the sink paused
//! (ingest alone: deliveries are stored, not sent), then live against the test upstream on
//! loopback. Prints ingest throughput for both, the end-to-end throughput (delivered events /
//! time from the first request to the last delivery) as a ratio to ingest alone, and p50/p99
//! event-to-delivery latency from Hookwall's own record (received → confirmed, per event, via
//! `GET /api/v1/events/{id}`), all from one run. The client is 8 threads of HTTP/1.1 with one
//! connection per request, on the same 2 cores as the server: a floor, not a ceiling.

use std::collections::HashSet;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use hookwall_testkit::upstream::Upstream;
use hookwall_testkit::{Hookwall, on_threads, wait_for};

use crate::{BIN, build_kind, send_signed};

const THREADS: usize = 8;
const RUN: Duration = Duration::from_secs(10);

/// Sends events from `THREADS` threads for `RUN`; returns the acknowledged ids.
fn load(hw: &Hookwall, tag: &str) -> Vec<String> {
    let next = AtomicUsize::new(0);
    let end = Instant::now() + RUN;
    let per_thread = on_threads(THREADS, |_| {
        let mut acked = Vec::new();
        while Instant::now() < end {
            let id = format!("{tag}-{}", next.fetch_add(1, Ordering::Relaxed));
            let body = format!(r#"{{"id":"{id}","pad":"{}"}}"#, "x".repeat(900));
            let reply = send_signed(hw.addr, "shop", &id, body.as_bytes(), &[]);
            if reply.is_ok_and(|r| r.status == 200) {
                acked.push(id);
            }
        }
        acked
    });
    per_thread.into_iter().flatten().collect()
}

fn percentile(sorted: &[u64], p: f64) -> u64 {
    sorted
        .get(((sorted.len().saturating_sub(1)) as f64 * p).round() as usize)
        .copied()
        .unwrap_or(0)
}

#[test]
#[ignore = "a measurement; run with --ignored --nocapture"]
fn bench_delivery() {
    let up = Upstream::start();
    let config = |paused: bool| {
        crate::delivery::http_config(
            &up.url(),
            &format!("paused = {paused}\nconcurrency = 32"),
            "",
        )
    };

    let dir = crate::workdir(&[]);
    let hw = Hookwall::start(BIN, dir.path(), &config(true));
    let alone = load(&hw, "alone").len();
    drop(hw);
    let alone_rps = alone as f64 / RUN.as_secs_f64();

    let dir = crate::workdir(&[]);
    let hw = Hookwall::start(BIN, dir.path(), &config(false));
    let started = Instant::now();
    let acked = load(&hw, "live");
    let live_rps = acked.len() as f64 / RUN.as_secs_f64();
    let want: HashSet<String> = acked.iter().map(|id| format!("shop:{id}:app:0")).collect();
    assert!(wait_for(Duration::from_secs(300), || {
        want.is_subset(&up.accepted_ids())
    }));
    let last = up.accepted().iter().map(|r| r.at).max().unwrap();
    let e2e_rps = want.len() as f64 / (last - started).as_secs_f64();

    let step = (acked.len() / 1000).max(1);
    let mut latencies: Vec<u64> = acked
        .iter()
        .step_by(step)
        .filter_map(|id| {
            let e = hw.event(id).json();
            let received = e["received_at_ms"].as_u64()?;
            let confirmed = e["deliveries"][0]["detail"]["at_ms"].as_u64()?;
            Some(confirmed.saturating_sub(received))
        })
        .collect();
    latencies.sort_unstable();
    println!(
        "bench_delivery ({} build): ingest alone {alone_rps:.0} ev/s; ingest with live delivery \
         {live_rps:.0} ev/s; end-to-end {e2e_rps:.0} ev/s = {:.2} x ingest alone; \
         event-to-delivery p50 {} ms, p99 {} ms ({} samples of {} events)",
        build_kind(),
        e2e_rps / alone_rps,
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
        latencies.len(),
        acked.len()
    );
}
