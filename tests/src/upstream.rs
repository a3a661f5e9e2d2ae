//! A test upstream: the app a sink delivers to. A real hyper server on 127.0.0.1 (HTTP/1.1
//! and h2c) that records every request it receives and answers as it is told: 2xx, a failing
//! status (optionally with `Retry-After`), a stall, a huge body, or not listening at all
//! ("down").

use std::collections::{HashSet, VecDeque};
use std::convert::Infallible;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Either, Full};
use hyper::body::{Body, Frame};
use hyper::{Request, Response};
use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto;
use tokio::sync::watch;

/// How the upstream answers the next request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// This status, with an optional `Retry-After` (seconds).
    Status(u16, Option<u64>),
    /// Hold the request this long, then answer 200 (longer than the sink's timeout = a stall).
    Stall(Duration),
    /// Flaky: every `n`th request is answered 503, the others 200.
    FailEvery(u64),
    /// This status with a body of this many bytes, streamed in 64 KiB chunks without being
    /// held in memory (`usize::MAX`: endless, for any practical purpose).
    Big(u16, usize),
    /// This status with exactly this body (an OTLP collector's empty protobuf answer).
    Body(u16, Vec<u8>),
}

/// A body of `left` bytes of `x`, one shared chunk at a time.
struct Repeat {
    chunk: Bytes,
    left: usize,
}

impl Body for Repeat {
    type Data = Bytes;
    type Error = Infallible;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        _: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, Infallible>>> {
        if self.left == 0 {
            return Poll::Ready(None);
        }
        let n = self.left.min(self.chunk.len());
        self.left -= n;
        Poll::Ready(Some(Ok(Frame::data(self.chunk.slice(..n)))))
    }
}

type AnswerBody = Either<Full<Bytes>, Repeat>;

/// One request the upstream received.
#[derive(Debug, Clone)]
pub struct Received {
    pub at: Instant,
    pub method: String,
    pub path: String,
    pub version: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// The status it was answered with.
    pub status: u16,
}

impl Received {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

#[derive(Default)]
struct State {
    /// Answers used once each, in order, before `default`.
    script: VecDeque<Answer>,
    default: Option<Answer>,
    received: Vec<Received>,
    requests: u64,
    /// Added before every answer (a slow app).
    delay: Duration,
    in_flight: usize,
    max_in_flight: usize,
}

/// The running upstream; stops when dropped.
pub struct Upstream {
    pub addr: SocketAddr,
    state: Arc<Mutex<State>>,
    runtime: Option<tokio::runtime::Runtime>,
    stop: Option<watch::Sender<bool>>,
}

impl Upstream {
    /// Starts on a free port, answering 200.
    pub fn start() -> Upstream {
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("a runtime for the upstream");
        let listener = runtime
            .block_on(tokio::net::TcpListener::bind("127.0.0.1:0"))
            .expect("bind the upstream");
        let addr = listener.local_addr().unwrap();
        let mut up = Upstream {
            addr,
            state: Arc::new(Mutex::new(State::default())),
            runtime: Some(runtime),
            stop: None,
        };
        up.serve(listener);
        up
    }

    /// `http://127.0.0.1:PORT/hook`
    pub fn url(&self) -> String {
        format!("http://{}/hook", self.addr)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let (stop, mut stopped) = watch::channel(false);
        let state = self.state.clone();
        self.runtime.as_ref().unwrap().spawn(async move {
            loop {
                let (stream, _) = tokio::select! {
                    accepted = listener.accept() => match accepted {
                        Ok(a) => a,
                        Err(_) => continue,
                    },
                    _ = stopped.changed() => return,
                };
                let state = state.clone();
                let mut conn_stopped = stopped.clone();
                tokio::spawn(async move {
                    let service = hyper::service::service_fn(move |req| answer(state.clone(), req));
                    let builder = auto::Builder::new(TokioExecutor::new());
                    let conn = builder.serve_connection(TokioIo::new(stream), service);
                    // "Down" closes open connections too, like a crashed app.
                    tokio::select! {
                        _ = conn => {}
                        _ = conn_stopped.changed() => {}
                    }
                });
            }
        });
        self.stop = Some(stop);
    }

    /// Stops listening and drops open connections: connections are refused until `up`.
    pub fn down(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        // Let the listener task see it and release the port.
        std::thread::sleep(Duration::from_millis(100));
    }

    /// Listens again on the same port.
    pub fn up(&mut self) {
        assert!(self.stop.is_none(), "already up");
        let addr = self.addr;
        let listener = self
            .runtime
            .as_ref()
            .unwrap()
            .block_on(async move {
                let socket = tokio::net::TcpSocket::new_v4()?;
                socket.set_reuseaddr(true)?;
                socket.bind(addr)?;
                socket.listen(1024)
            })
            .expect("listen again on the upstream's port");
        self.serve(listener);
    }

    /// Every later request gets `answer` (after the script).
    pub fn answer(&self, answer: Answer) {
        self.state.lock().unwrap().default = Some(answer);
    }

    /// The next requests get these answers, one each, in order.
    pub fn script(&self, answers: impl IntoIterator<Item = Answer>) {
        self.state.lock().unwrap().script.extend(answers);
    }

    /// Every answer is delayed this long from now on (a slow app).
    pub fn delay(&self, delay: Duration) {
        self.state.lock().unwrap().delay = delay;
    }

    /// The most requests that were being answered at once.
    pub fn max_in_flight(&self) -> usize {
        self.state.lock().unwrap().max_in_flight
    }

    /// Everything received so far.
    pub fn received(&self) -> Vec<Received> {
        self.state.lock().unwrap().received.clone()
    }

    pub fn count(&self) -> usize {
        self.state.lock().unwrap().received.len()
    }

    /// Requests answered 2xx.
    pub fn accepted(&self) -> Vec<Received> {
        self.received()
            .into_iter()
            .filter(|r| (200..300).contains(&r.status))
            .collect()
    }

    /// The distinct `webhook-id`s of the requests answered 2xx (see [`webhook_ids`]).
    pub fn accepted_ids(&self) -> HashSet<String> {
        webhook_ids(&self.accepted())
    }
}

/// The distinct `webhook-id` headers of `requests` (a request without one adds nothing): what
/// the app saw, with redeliveries counted once.
pub fn webhook_ids(requests: &[Received]) -> HashSet<String> {
    requests
        .iter()
        .filter_map(|r| r.header("webhook-id").map(str::to_string))
        .collect()
}

impl Drop for Upstream {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(true);
        }
        if let Some(rt) = self.runtime.take() {
            rt.shutdown_timeout(Duration::from_secs(1));
        }
    }
}

async fn answer(
    state: Arc<Mutex<State>>,
    req: Request<hyper::body::Incoming>,
) -> Result<Response<AnswerBody>, Infallible> {
    let at = Instant::now();
    let (parts, body) = req.into_parts();
    let body = body
        .collect()
        .await
        .map(|b| b.to_bytes().to_vec())
        .unwrap_or_default();
    let (next, n, delay) = {
        let mut s = state.lock().unwrap();
        s.in_flight += 1;
        s.max_in_flight = s.max_in_flight.max(s.in_flight);
        s.requests += 1;
        let next = s
            .script
            .pop_front()
            .or_else(|| s.default.clone())
            .unwrap_or(Answer::Status(200, None));
        (next, s.requests, s.delay)
    };
    tokio::time::sleep(delay).await;
    let mut big = None;
    let mut exact = None;
    let (status, retry_after) = match next {
        Answer::Status(status, retry_after) => (status, retry_after),
        Answer::Stall(d) => {
            tokio::time::sleep(d).await;
            (200, None)
        }
        Answer::FailEvery(every) if n % every.max(1) == 0 => (503, None),
        Answer::FailEvery(_) => (200, None),
        Answer::Big(status, bytes) => {
            big = Some(bytes);
            (status, None)
        }
        Answer::Body(status, body) => {
            exact = Some(body);
            (status, None)
        }
    };
    let mut s = state.lock().unwrap();
    s.in_flight -= 1;
    s.received.push(Received {
        at,
        method: parts.method.to_string(),
        path: parts.uri.path().to_string(),
        version: format!("{:?}", parts.version),
        headers: parts
            .headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or_default().to_string()))
            .collect(),
        body,
        status,
    });
    drop(s);
    let mut resp = Response::builder().status(status);
    if let Some(secs) = retry_after {
        resp = resp.header("retry-after", secs.to_string());
    }
    let body = match (big, exact) {
        (Some(left), _) => Either::Right(Repeat {
            chunk: Bytes::from(vec![b'x'; 64 * 1024]),
            left,
        }),
        (None, Some(body)) => Either::Left(Full::new(Bytes::from(body))),
        (None, None) => Either::Left(Full::new(Bytes::from(format!("answer {status}")))),
    };
    Ok(resp.body(body).unwrap())
}

/// Checks a Standard Webhooks signature: `webhook-signature: v1,<base64 HMAC-SHA256(key,
/// "id.timestamp.body")>`, the key being the base64 after `whsec_`. Written here from the
/// spec, independently of the host's signer, so a test can catch a wrong signature.
pub fn standard_webhooks_valid(secret: &str, r: &Received) -> bool {
    use base64::Engine as _;
    use hmac::Mac as _;
    let b64 = base64::engine::general_purpose::STANDARD;
    let (Some(id), Some(ts), Some(sig)) = (
        r.header("webhook-id"),
        r.header("webhook-timestamp"),
        r.header("webhook-signature"),
    ) else {
        return false;
    };
    let Ok(key) = b64.decode(secret.trim_start_matches("whsec_")) else {
        return false;
    };
    let mut mac = hmac::Hmac::<sha2::Sha256>::new_from_slice(&key).expect("any key");
    mac.update(format!("{id}.{ts}.").as_bytes());
    mac.update(&r.body);
    let expected = format!("v1,{}", b64.encode(mac.finalize().into_bytes()));
    sig.split(' ').any(|s| s == expected)
}
