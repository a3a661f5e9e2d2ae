//! The load engine: N keep-alive connections (or one HTTP/2 connection with N streams), closed
//! loop (as fast as answers come) or open loop at a fixed rate.
//!
//! In open loop each request has a scheduled send time and its latency is measured from that
//! time, not from when it was actually sent: a stalled server then shows up as latency instead
//! of silently lowering the offered load (no coordinated omission).

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Duration, Instant};

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use tokio::net::TcpStream;

use crate::pool::Prepared;
use crate::sink::SendTimes;

/// How to load the target.
#[derive(Clone, Debug)]
pub struct Spec {
    pub addr: SocketAddr,
    pub path: String,
    pub connections: usize,
    /// Stop after this long (measured part; warm-up comes on top).
    pub duration: Duration,
    /// Requests sent before measuring starts, not recorded.
    pub warmup: Duration,
    /// Total requests per second across connections (open loop); `None` = closed loop.
    pub rate: Option<f64>,
    pub http2: bool,
    /// Where to note each pool entry's send time (scenario 6 measures event-to-delivery
    /// latency from it).
    pub sent: Option<Arc<SendTimes>>,
}

/// What a run measured.
#[derive(Debug, Serialize)]
pub struct Report {
    pub requests: u64,
    pub seconds: f64,
    pub requests_per_sec: f64,
    pub statuses: BTreeMap<u16, u64>,
    pub errors: u64,
    pub latency_us: Latency,
    /// The request pool ran out before the duration ended (the run was cut short).
    pub pool_exhausted: bool,
}

#[derive(Debug, Serialize)]
pub struct Latency {
    pub p50: u64,
    pub p90: u64,
    pub p99: u64,
    pub p999: u64,
    pub max: u64,
}

struct Shared {
    pool: Arc<Vec<Prepared>>,
    next: AtomicUsize,
    spec: Spec,
    host: String,
}

#[derive(Default)]
struct Tally {
    statuses: BTreeMap<u16, u64>,
    errors: u64,
    requests: u64,
    hist: Option<Histogram<u64>>,
}

enum Sender {
    H1(http1::SendRequest<Full<Bytes>>),
    H2(http2::SendRequest<Full<Bytes>>),
}

impl Sender {
    async fn send(&mut self, req: http::Request<Full<Bytes>>) -> anyhow::Result<u16> {
        let resp = match self {
            Sender::H1(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
            Sender::H2(s) => {
                s.ready().await?;
                s.send_request(req).await?
            }
        };
        let status = resp.status().as_u16();
        resp.into_body().collect().await?;
        Ok(status)
    }
}

async fn connect(spec: &Spec) -> anyhow::Result<(Sender, Option<http2::SendRequest<Full<Bytes>>>)> {
    let stream = TcpStream::connect(spec.addr).await?;
    stream.set_nodelay(true)?;
    let io = TokioIo::new(stream);
    if spec.http2 {
        let (sender, conn) = http2::handshake(TokioExecutor::new(), io).await?;
        tokio::spawn(conn);
        Ok((Sender::H2(sender.clone()), Some(sender)))
    } else {
        let (sender, conn) = http1::handshake(io).await?;
        tokio::spawn(conn);
        Ok((Sender::H1(sender), None))
    }
}

/// Runs the load and returns what it measured.
pub async fn run(spec: Spec, pool: Arc<Vec<Prepared>>) -> anyhow::Result<Report> {
    let shared = Arc::new(Shared {
        pool,
        next: AtomicUsize::new(0),
        host: spec.addr.to_string(),
        spec: spec.clone(),
    });
    let start = Instant::now();
    let measure_from = start + spec.warmup;
    let end = measure_from + spec.duration;
    let mut h2_sender = None;
    let mut tasks = Vec::new();
    for i in 0..spec.connections {
        let sender = match &h2_sender {
            Some(s) => Sender::H2(Clone::clone(s)),
            None => {
                let (sender, h2) = connect(&spec).await?;
                h2_sender = h2;
                sender
            }
        };
        let shared = shared.clone();
        tasks.push(tokio::spawn(async move {
            worker(shared, sender, i, start, measure_from, end).await
        }));
    }
    let mut total = Tally::default();
    let mut hist = Histogram::<u64>::new(3)?;
    for t in tasks {
        let tally = t.await?;
        total.errors += tally.errors;
        total.requests += tally.requests;
        for (s, n) in tally.statuses {
            *total.statuses.entry(s).or_default() += n;
        }
        if let Some(h) = tally.hist {
            hist.add(h)?;
        }
    }
    let measured_end = Instant::now().min(end);
    let seconds = measured_end
        .saturating_duration_since(measure_from)
        .as_secs_f64();
    let pool_exhausted = shared.next.load(Ordering::Relaxed) >= shared.pool.len();
    Ok(Report {
        requests: total.requests,
        seconds,
        requests_per_sec: if seconds > 0.0 {
            total.requests as f64 / seconds
        } else {
            0.0
        },
        statuses: total.statuses,
        errors: total.errors,
        latency_us: Latency {
            p50: hist.value_at_quantile(0.50),
            p90: hist.value_at_quantile(0.90),
            p99: hist.value_at_quantile(0.99),
            p999: hist.value_at_quantile(0.999),
            max: hist.max(),
        },
        pool_exhausted,
    })
}

async fn worker(
    shared: Arc<Shared>,
    mut sender: Sender,
    index: usize,
    start: Instant,
    measure_from: Instant,
    end: Instant,
) -> Tally {
    let spec = &shared.spec;
    let mut tally = Tally {
        hist: Histogram::new(3).ok(),
        ..Tally::default()
    };
    // Open loop: each connection sends every `interval`, staggered across connections.
    let interval = spec
        .rate
        .map(|r| Duration::from_secs_f64(spec.connections as f64 / r));
    let mut scheduled = start
        + interval.map_or(Duration::ZERO, |i| {
            i.mul_f64(index as f64 / spec.connections as f64)
        });
    loop {
        if let Some(interval) = interval {
            tokio::time::sleep_until(scheduled.into()).await;
            scheduled += interval;
        }
        let began = match interval {
            Some(i) => scheduled - i,
            None => Instant::now(),
        };
        if began >= end {
            return tally;
        }
        let n = shared.next.fetch_add(1, Ordering::Relaxed);
        let Some(prepared) = shared.pool.get(n) else {
            return tally;
        };
        if let Some(sent) = &spec.sent {
            sent.sent(n, began);
        }
        let mut req = http::Request::post(&spec.path)
            .header(http::header::HOST, &shared.host)
            .body(Full::new(prepared.body.clone()))
            .expect("valid request");
        for (k, v) in &prepared.headers {
            req.headers_mut().append(k.clone(), v.clone());
        }
        let result = sender.send(req).await;
        let done = Instant::now();
        if began < measure_from {
            if result.is_err() {
                return tally;
            }
            continue;
        }
        match result {
            Ok(status) => {
                tally.requests += 1;
                *tally.statuses.entry(status).or_default() += 1;
                if let Some(h) = &mut tally.hist {
                    let _ = h.record(done.duration_since(began).as_micros().max(1) as u64);
                }
            }
            Err(_) => {
                tally.errors += 1;
                // A broken connection ends this worker; the others go on.
                return tally;
            }
        }
    }
}
