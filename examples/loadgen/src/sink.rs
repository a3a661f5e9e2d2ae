//! The receiving end of scenario 6: a bare hyper server standing in for the app behind
//! Hookwall's `http` sink. It answers 200 at once and records, per delivery, the time from
//! the moment the load generator sent the original request to the moment the delivery
//! arrived (event-to-delivery latency), so the number covers ingest, the durable commit, the
//! delivery worker and the sink's HTTP client.
//!
//! The original request is found from the delivery's `webhook-id` (`SOURCE:EVENT:SINK:N`): the
//! event ids of the request pool are `lg-TAG-INDEX`, and the client writes each index's send
//! time into [`SendTimes`].

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Instant;

use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Empty};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::net::TcpListener;

/// When each request of the pool was sent (ns since `base`; 0 = not sent yet).
#[derive(Debug)]
pub struct SendTimes {
    base: Instant,
    at: Vec<AtomicU64>,
}

impl SendTimes {
    pub fn new(len: usize) -> SendTimes {
        SendTimes {
            base: Instant::now(),
            at: (0..len).map(|_| AtomicU64::new(0)).collect(),
        }
    }

    /// Records that pool entry `index` is being sent now.
    pub fn sent(&self, index: usize, at: Instant) {
        if let Some(slot) = self.at.get(index) {
            let ns = at.saturating_duration_since(self.base).as_nanos().max(1) as u64;
            slot.store(ns, Ordering::Relaxed);
        }
    }

    /// Forgets every send time (before a new run reuses the pool).
    pub fn clear(&self) {
        for slot in &self.at {
            slot.store(0, Ordering::Relaxed);
        }
    }

    /// How many pool entries were sent (warm-up included) since the last [`SendTimes::clear`].
    pub fn sent_count(&self) -> u64 {
        self.at
            .iter()
            .filter(|slot| slot.load(Ordering::Relaxed) != 0)
            .count() as u64
    }

    /// Microseconds from sending pool entry `index` until `now`.
    fn since(&self, index: usize, now: Instant) -> Option<u64> {
        let sent = self.at.get(index)?.load(Ordering::Relaxed);
        if sent == 0 {
            return None;
        }
        let now = now.saturating_duration_since(self.base).as_nanos() as u64;
        Some(now.saturating_sub(sent) / 1000)
    }
}

/// What the sink has received so far.
pub struct Received {
    pub deliveries: AtomicU64,
    /// OTLP trace exports received (`POST /v1/traces`).
    pub exports: AtomicU64,
    /// Event-to-delivery latency in µs of deliveries whose send time was known.
    pub latency_us: Mutex<Histogram<u64>>,
}

/// A running sink; it stops when dropped.
pub struct SinkServer {
    pub addr: SocketAddr,
    pub received: Arc<Received>,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for SinkServer {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// The pool index in a delivery id `SOURCE:lg-TAG-INDEX:SINK:N`.
fn pool_index(delivery_id: &str) -> Option<usize> {
    // The pool's event ids are `lg-TAG-INDEX`; the source before them is config's.
    let event = delivery_id
        .split(':')
        .find(|part| part.starts_with("lg-"))?;
    event.rsplit('-').next()?.parse().ok()
}

pub async fn start(times: Arc<SendTimes>) -> anyhow::Result<SinkServer> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    let received = Arc::new(Received {
        deliveries: AtomicU64::new(0),
        exports: AtomicU64::new(0),
        latency_us: Mutex::new(Histogram::new(3)?),
    });
    let state = received.clone();
    let task = tokio::spawn(async move {
        let builder = auto::Builder::new(TokioExecutor::new());
        while let Ok((stream, _)) = listener.accept().await {
            let _ = stream.set_nodelay(true);
            let builder = builder.clone();
            let (state, times) = (state.clone(), times.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req: http::Request<hyper::body::Incoming>| {
                    let (state, times) = (state.clone(), times.clone());
                    async move {
                        // Hookwall's trace exports (the OTLP scenario): answered as a collector
                        // does (200, an empty protobuf answer), not counted as deliveries.
                        if req.uri().path() == "/v1/traces" {
                            let _ = req.into_body().collect().await;
                            state.exports.fetch_add(1, Ordering::Relaxed);
                            return Ok(http::Response::new(Empty::<Bytes>::new()));
                        }
                        let index = req
                            .headers()
                            .get("webhook-id")
                            .and_then(|v| v.to_str().ok())
                            .and_then(pool_index);
                        let _ = req.into_body().collect().await;
                        let now = Instant::now();
                        state.deliveries.fetch_add(1, Ordering::Relaxed);
                        if let Some(us) = index.and_then(|i| times.since(i, now)) {
                            let mut h = state.latency_us.lock().unwrap_or_else(|e| e.into_inner());
                            let _ = h.record(us.max(1));
                        }
                        Ok::<_, Infallible>(http::Response::new(Empty::<Bytes>::new()))
                    }
                });
                let _ = builder
                    .serve_connection(TokioIo::new(stream), service)
                    .await;
            });
        }
    });
    Ok(SinkServer {
        addr,
        received,
        task,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_pool_index_comes_from_the_delivery_id() {
        assert_eq!(pool_index("bench:lg-cmp-1234:bench:0"), Some(1234));
        assert_eq!(pool_index("lg-cmp-1234:bench:0"), Some(1234));
        assert_eq!(pool_index("lg-cmp-7"), Some(7));
        assert_eq!(pool_index("bench:other:bench:0"), None);
    }
}
