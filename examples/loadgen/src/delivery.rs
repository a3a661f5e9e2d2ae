//! `loadgen delivery`: end-to-end throughput (ingest → `http` sink on loopback) as a ratio to
//! ingest alone, and event-to-delivery latency, in one run.
//!
//! Two fresh servers with the same config (one source, fsynced store, one `http` sink): first
//! with the sink paused (ingest alone: deliveries are stored, not sent), then live, pointed at
//! an in-process receiver that answers 200 and records each `webhook-id`. The live run's
//! end-to-end throughput is delivered events divided by the time from the first request to the
//! last delivery. Latency is Hookwall's own record: for a sample of events, the time from
//! `received_at_ms` to the confirmed attempt, read from `GET /api/v1/events/{id}`.

use std::collections::HashSet;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;

use crate::client::{self, Spec};
use crate::compare::{Scenario, Server};
use crate::pool::Target;

const SECRET: &str = "loadgen-bench-secret";
/// Sampled events for the latency distribution.
const LATENCY_SAMPLES: usize = 2000;

#[derive(Clone, Copy)]
pub struct Options {
    pub duration: Duration,
    pub connections: usize,
    pub body_bytes: usize,
    pub pool: usize,
}

#[derive(Debug, Serialize)]
pub struct DeliveryReport {
    pub ingest_alone_rps: f64,
    pub ingest_with_delivery_rps: f64,
    pub delivered: usize,
    pub end_to_end_rps: f64,
    pub ratio: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    pub latency_samples: usize,
}

fn config(sink_url: &str, admin: SocketAddr, paused: bool) -> String {
    format!(
        r#"
[server]
listen = "{{listen}}"

[storage]
path = "data"

[admin]
listen = "{admin}"

[sources.bench]
path = "/hooks/bench"
verify = {{ scheme = "hmac", header = "X-Signature", prefix = "sha256=", secrets = ["{SECRET}"], id_header = "X-Event-Id" }}
sinks = ["app"]

[sinks.app]
type = "http"
url = "{sink_url}"
paused = {paused}
concurrency = 32
"#
    )
}

/// The receiving app: 200 to everything, remembering each id and the last arrival.
#[derive(Default)]
struct Received {
    ids: HashSet<String>,
    requests: u64,
    last: Option<Instant>,
}

async fn receiver() -> anyhow::Result<(SocketAddr, Arc<Mutex<Received>>)> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let state = Arc::new(Mutex::new(Received::default()));
    let shared = state.clone();
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let state = shared.clone();
            tokio::spawn(async move {
                let service = hyper::service::service_fn(
                    move |req: hyper::Request<hyper::body::Incoming>| {
                        let state = state.clone();
                        async move {
                            let id = req
                                .headers()
                                .get("webhook-id")
                                .and_then(|v| v.to_str().ok())
                                .map(str::to_string);
                            let _ = req.into_body().collect().await;
                            let mut s = state.lock().unwrap();
                            s.requests += 1;
                            s.last = Some(Instant::now());
                            if let Some(id) = id {
                                s.ids.insert(id);
                            }
                            Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::new())))
                        }
                    },
                );
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok((addr, state))
}

fn free_addr() -> anyhow::Result<SocketAddr> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

async fn admin_get(addr: SocketAddr, path: &str) -> anyhow::Result<serde_json::Value> {
    let client = hyper_util::client::legacy::Client::builder(TokioExecutor::new())
        .build_http::<Full<Bytes>>();
    let resp = client
        .get(format!("http://{addr}{path}").parse()?)
        .await
        .context("admin API")?;
    let body = resp.into_body().collect().await?.to_bytes();
    Ok(serde_json::from_slice(&body).unwrap_or(serde_json::Value::Null))
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let i = ((sorted.len() - 1) as f64 * p).round() as usize;
    sorted[i]
}

pub async fn run(options: Options, hookwall: &Path) -> anyhow::Result<DeliveryReport> {
    let (sink_addr, received) = receiver().await?;
    let sink_url = format!("http://{sink_addr}/hook");
    let spec = |server: &Server| Spec {
        addr: server.addr,
        path: "/hooks/bench".into(),
        connections: options.connections,
        duration: options.duration,
        warmup: Duration::ZERO,
        rate: None,
        http2: false,
    };

    let pool_dir = tempfile::tempdir()?;
    let pool_config = pool_dir.path().join("hookwall.toml");
    std::fs::write(
        &pool_config,
        config(&sink_url, free_addr()?, true).replace("{listen}", "127.0.0.1:1"),
    )?;
    let target = Target::from_config(&pool_config, "bench")?;
    eprintln!("preparing {} signed requests…", options.pool);
    let pool = Arc::new(target.prepare(options.pool, options.body_bytes, "dlv")?);

    // Ingest alone: the sink is paused.
    let alone = Scenario {
        name: "ingest alone (sink paused)",
        config: Some(config(&sink_url, free_addr()?, true)),
    };
    let server = Server::start(&alone, hookwall)?;
    let alone_report = client::run(spec(&server), pool.clone()).await?;
    drop(server);
    eprintln!("ingest alone: {:.0} req/s", alone_report.requests_per_sec);

    // Ingest with live delivery.
    let admin = free_addr()?;
    let live = Scenario {
        name: "ingest + http delivery",
        config: Some(config(&sink_url, admin, false)),
    };
    let server = Server::start(&live, hookwall)?;
    let started = Instant::now();
    let live_report = client::run(spec(&server), pool.clone()).await?;
    let accepted: u64 = live_report
        .statuses
        .iter()
        .filter(|(s, _)| (200..300).contains(*s))
        .map(|(_, n)| n)
        .sum();
    eprintln!(
        "ingest with delivery: {:.0} req/s, {accepted} accepted; waiting for the backlog…",
        live_report.requests_per_sec
    );
    let deadline = Instant::now() + Duration::from_secs(600);
    loop {
        let sinks = admin_get(admin, "/api/v1/sinks").await?;
        let pending = sinks["sinks"][0]["pending"].as_u64().unwrap_or(u64::MAX);
        if pending == 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!("the backlog did not drain ({pending} pending)");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (delivered, last) = {
        let r = received.lock().unwrap();
        (r.ids.len(), r.last.unwrap_or(started))
    };
    let e2e_secs = (last - started).as_secs_f64().max(1e-9);
    let end_to_end_rps = delivered as f64 / e2e_secs;

    // Latency from Hookwall's own record of a sample of events.
    let step = (delivered / LATENCY_SAMPLES).max(1);
    let mut latencies = Vec::new();
    for i in (0..delivered).step_by(step) {
        let event = admin_get(admin, &format!("/api/v1/events/lg-dlv-{i}")).await?;
        let received_at = event["received_at_ms"].as_u64();
        let confirmed = event["deliveries"][0]["detail"]["at_ms"].as_u64();
        if let (Some(r), Some(c)) = (received_at, confirmed) {
            latencies.push(c.saturating_sub(r) as f64);
        }
    }
    latencies.sort_by(|a, b| a.total_cmp(b));
    drop(server);
    Ok(DeliveryReport {
        ingest_alone_rps: alone_report.requests_per_sec,
        ingest_with_delivery_rps: live_report.requests_per_sec,
        delivered,
        end_to_end_rps,
        ratio: end_to_end_rps / alone_report.requests_per_sec.max(1e-9),
        latency_p50_ms: percentile(&latencies, 0.50),
        latency_p99_ms: percentile(&latencies, 0.99),
        latency_samples: latencies.len(),
    })
}
