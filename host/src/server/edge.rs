//! The edge of the server: the accept loop, TLS, and what one client may cost
//! (`[server.limits]`).
//!
//! Each limit and where it is enforced:
//!
//! - `max_connections`: a semaphore. A connection over the limit is accepted and closed at once
//!   (not queued): a queue would let a flood of idle sockets hold the backlog, and a closed
//!   connection tells a well-behaved client to retry.
//! - `header_read_timeout`: the TLS handshake (here), and each HTTP/1 request head (hyper's
//!   timer, which also runs while a keep-alive connection waits for its next request). A
//!   slowloris client dribbling headers is cut off.
//! - `body_read_timeout`, `body_min_rate`, `body_rate_grace`: [`GuardedBody`], the request body
//!   type every handler sees. It errors when the body is late; the handler answers 408.
//! - `idle_timeout`: a per-connection watchdog closes a connection that has had no request in
//!   flight for this long (an HTTP/2 connection with no streams, or a socket that never sent a
//!   byte).
//! - `max_headers`, `max_header_bytes`: hyper's HTTP/1 parser (431) and HTTP/2 header list.
//! - `h2_max_concurrent_streams`, `h2_max_pending_reset_streams`: hyper's HTTP/2 settings.
//!
//! [`serve_connection`] is the one place a connection is configured and driven, for the real
//! listener and for the in-process fuzz target (`crate::fuzzing::server`).

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http::{Request, Response};
use http_body_util::Full;
use hyper::body::{Body, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, watch};

use super::tls::Tls;
use crate::config::LimitsConfig;

/// How long a connection being closed (idle, or at shutdown after the grace) may take to
/// finish what it is writing.
const CLOSE_GRACE: Duration = Duration::from_secs(1);
/// After a failed `accept` (usually EMFILE), wait this long instead of spinning.
const ACCEPT_BACKOFF: Duration = Duration::from_millis(50);
/// Log "connection limit reached" at most this often.
const LIMIT_LOG_EVERY: Duration = Duration::from_secs(10);

/// What a listener needs besides its socket: its limits and, optionally, TLS.
#[derive(Debug, Clone, Default)]
pub struct Edge {
    /// `[server.limits]`: what one client may cost (connections, headers, bodies, time).
    pub limits: LimitsConfig,
    /// `[server.tls]`, loaded; `None` serves plain HTTP.
    pub tls: Option<Tls>,
}

/// Why a request body could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BodyError {
    /// The connection failed while the body was read (a malformed chunk, a reset).
    #[error("reading the body failed: {0}")]
    Read(#[from] hyper::Error),
    /// The body did not arrive in time (`body_read_timeout`) or fast enough (`body_min_rate`).
    #[error("the body was too slow: {received} bytes in {elapsed:?}")]
    TooSlow {
        /// Body bytes received before it was cut off.
        received: u64,
        /// Time since reading the body began.
        elapsed: Duration,
    },
}

/// A request body with a deadline: the whole body within `body_read_timeout`, and after
/// `body_rate_grace` at least `body_min_rate` bytes per second on average. The deadline moves
/// as bytes arrive, so a large body sent at a fair rate is never cut off by the rate rule.
#[derive(Debug)]
pub struct GuardedBody {
    inner: Incoming,
    started: Instant,
    received: u64,
    timeout: Duration,
    min_rate: u64,
    grace: Duration,
    deadline: Pin<Box<tokio::time::Sleep>>,
}

impl GuardedBody {
    fn new(inner: Incoming, limits: &LimitsConfig) -> GuardedBody {
        let started = Instant::now();
        let mut body = GuardedBody {
            inner,
            started,
            received: 0,
            timeout: limits.body_read_timeout,
            min_rate: limits.body_min_rate,
            grace: limits.body_rate_grace,
            deadline: Box::pin(tokio::time::sleep(limits.body_read_timeout)),
        };
        body.reset_deadline();
        body
    }

    /// Time allowed for the bytes received so far plus one more: grace + received / rate,
    /// never beyond the total timeout.
    fn allowed(&self) -> Duration {
        if self.min_rate == 0 {
            return self.timeout;
        }
        let earned = Duration::from_secs_f64(self.received as f64 / self.min_rate as f64);
        (self.grace + earned).min(self.timeout)
    }

    fn reset_deadline(&mut self) {
        let at = self.started + self.allowed();
        self.deadline.as_mut().reset(at.into());
    }
}

impl Body for GuardedBody {
    type Data = Bytes;
    type Error = BodyError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BodyError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(data) = frame.data_ref() {
                    this.received += data.len() as u64;
                    this.reset_deadline();
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => Poll::Ready(Some(Err(BodyError::Read(e)))),
            Poll::Ready(None) => Poll::Ready(None),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => Poll::Ready(Some(Err(BodyError::TooSlow {
                    received: this.received,
                    elapsed: this.started.elapsed(),
                }))),
                Poll::Pending => Poll::Pending,
            },
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

/// hyper's connection builder with `limits` applied (HTTP/1 and HTTP/2 on one port).
pub fn builder(limits: &LimitsConfig) -> auto::Builder<TokioExecutor> {
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout)
        // A client that closes its sending side after the request still gets the answer.
        .half_close(true)
        .max_buf_size(limits.max_header_bytes)
        .max_headers(limits.max_headers);
    builder
        .http2()
        .timer(TokioTimer::new())
        .max_concurrent_streams(limits.h2_max_concurrent_streams)
        .max_header_list_size(u32::try_from(limits.max_header_bytes).unwrap_or(u32::MAX))
        .max_pending_accept_reset_streams(limits.h2_max_pending_reset_streams);
    builder
}

/// Requests in flight on one connection, and when that count last changed.
#[derive(Debug)]
struct Activity {
    in_flight: AtomicUsize,
    last_change: Mutex<Instant>,
}

impl Activity {
    fn new() -> Arc<Activity> {
        Arc::new(Activity {
            in_flight: AtomicUsize::new(0),
            last_change: Mutex::new(Instant::now()),
        })
    }

    fn touch(&self) {
        *self.last_change.lock().unwrap_or_else(|p| p.into_inner()) = Instant::now();
    }

    fn enter(self: &Arc<Self>) -> InFlight {
        self.in_flight.fetch_add(1, Ordering::SeqCst);
        self.touch();
        InFlight(self.clone())
    }

    /// Resolves once no request has been in flight for `idle`.
    async fn idle(&self, idle: Duration) {
        loop {
            let wait = if self.in_flight.load(Ordering::SeqCst) > 0 {
                idle
            } else {
                let since = self
                    .last_change
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .elapsed();
                match idle.checked_sub(since) {
                    Some(left) if !left.is_zero() => left,
                    _ => return,
                }
            };
            tokio::time::sleep(wait).await;
        }
    }
}

/// One request in flight; dropping it (response made, or the request cancelled) ends it.
struct InFlight(Arc<Activity>);

impl Drop for InFlight {
    fn drop(&mut self) {
        self.0.in_flight.fetch_sub(1, Ordering::SeqCst);
        self.0.touch();
    }
}

/// Serves one connection with `limits` until it ends, is idle for `idle_timeout`, or `stop`
/// turns true (then it is shut down gracefully: in-flight requests finish within `grace`).
pub async fn serve_connection<I, H, F>(
    io: I,
    remote: SocketAddr,
    builder: &auto::Builder<TokioExecutor>,
    limits: &LimitsConfig,
    handler: H,
    mut stop: watch::Receiver<bool>,
    grace: Duration,
) where
    I: AsyncRead + AsyncWrite + Unpin + Send + 'static,
    H: Fn(Request<GuardedBody>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let activity = Activity::new();
    let service = {
        let activity = activity.clone();
        let limits = limits.clone();
        service_fn(move |req: Request<Incoming>| {
            let in_flight = activity.enter();
            let req = req.map(|body| GuardedBody::new(body, &limits));
            let response = handler(req, remote);
            async move {
                let response = response.await;
                drop(in_flight);
                Ok::<_, Infallible>(response)
            }
        })
    };
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let close_grace = tokio::select! {
        result = conn.as_mut() => {
            if let Err(e) = result {
                tracing::debug!(%remote, error = %e, "connection ended with an error");
            }
            return;
        }
        () = activity.idle(limits.idle_timeout) => {
            tracing::debug!(%remote, "closing an idle connection");
            CLOSE_GRACE
        }
        _ = stop.wait_for(|s| *s) => grace,
    };
    conn.as_mut().graceful_shutdown();
    if tokio::time::timeout(close_grace, conn).await.is_err() {
        tracing::debug!(%remote, "connection did not finish in time; closed");
    }
}

/// Accepts connections on `listener` and answers each request with `handler`, within
/// `edge`'s limits (and TLS), until `shutdown` resolves; then waits up to `grace` for open
/// connections to finish.
pub async fn serve<H, F>(
    listener: TcpListener,
    edge: Edge,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<GuardedBody>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    let limits = Arc::new(edge.limits);
    let max = limits.max_connections;
    let slots = Arc::new(Semaphore::new(max));
    let (stop_tx, stop_rx) = watch::channel(false);
    if let Some(tls) = &edge.tls {
        tls.watch();
    }
    let connections = Connections {
        builder: Arc::new(builder(&limits)),
        limits,
        tls: edge.tls,
        handler,
        stop: stop_rx,
        grace,
    };
    let mut refusals = Refusals::new(max);
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            accepted = listener.accept() => accepted,
            () = &mut shutdown => break,
        };
        let (stream, remote) = match accepted {
            Ok(conn) => conn,
            Err(e) => {
                tracing::warn!(error = %e, "accept failed");
                tokio::time::sleep(ACCEPT_BACKOFF).await;
                continue;
            }
        };
        let Ok(slot) = slots.clone().try_acquire_owned() else {
            // Over the limit: close at once (dropping the socket), and say so now and then.
            drop(stream);
            refusals.refused();
            continue;
        };
        let _ = stream.set_nodelay(true);
        let conn = connections.clone();
        tokio::spawn(async move {
            conn.serve(stream, remote).await;
            drop(slot);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    drain(&slots, max, grace).await;
}

/// How one listener serves its connections; each accepted connection's task gets a clone.
#[derive(Clone)]
struct Connections<H> {
    builder: Arc<auto::Builder<TokioExecutor>>,
    limits: Arc<LimitsConfig>,
    tls: Option<Tls>,
    handler: H,
    stop: watch::Receiver<bool>,
    grace: Duration,
}

impl<H, F> Connections<H>
where
    H: Fn(Request<GuardedBody>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    /// Serves one accepted connection, after a TLS handshake (within `header_read_timeout`)
    /// when the listener has TLS.
    async fn serve(self, stream: TcpStream, remote: SocketAddr) {
        let Connections {
            builder,
            limits,
            tls,
            handler,
            stop,
            grace,
        } = self;
        let Some(tls) = tls else {
            serve_connection(stream, remote, &builder, &limits, handler, stop, grace).await;
            return;
        };
        let handshake = tls.acceptor().accept(stream);
        match tokio::time::timeout(limits.header_read_timeout, handshake).await {
            Ok(Ok(stream)) => {
                serve_connection(stream, remote, &builder, &limits, handler, stop, grace).await
            }
            Ok(Err(e)) => {
                tracing::debug!(%remote, error = %e, "TLS handshake failed");
            }
            Err(_) => tracing::debug!(%remote, "TLS handshake timed out"),
        }
    }
}

/// Connections closed at `max_connections`, logged at most every [`LIMIT_LOG_EVERY`].
struct Refusals {
    max: usize,
    refused: u64,
    last_log: Option<Instant>,
}

impl Refusals {
    fn new(max: usize) -> Refusals {
        Refusals {
            max,
            refused: 0,
            last_log: None,
        }
    }

    /// Counts one refused connection, and says so if the last word is old enough.
    fn refused(&mut self) {
        self.refused += 1;
        if self.last_log.is_none_or(|t| t.elapsed() >= LIMIT_LOG_EVERY) {
            tracing::warn!(
                max_connections = self.max,
                refused = self.refused,
                "connection limit reached; new connections are closed"
            );
            self.last_log = Some(Instant::now());
        }
    }
}

/// Waits up to `grace` (plus [`CLOSE_GRACE`]) for every connection to end.
async fn drain(slots: &Semaphore, max: usize, grace: Duration) {
    // Every connection holds a slot: having them all back means every connection is done.
    let all = u32::try_from(max).unwrap_or(u32::MAX);
    if tokio::time::timeout(grace + CLOSE_GRACE, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            ?grace,
            "connections still open after the shutdown grace period"
        );
    }
}
