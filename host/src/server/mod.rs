//! Server: terminate HTTP, map the request path to a source, and enforce ingress limits.
//!
//! hyper 1.x on tokio, HTTP/1.1 and HTTP/2 on one port. Only `POST` to a configured source path
//! is accepted; the body is read once, up to the source's limit (a larger `Content-Length` is
//! refused before reading). The result is an [`InboundRequest`], handed to the
//! [`Pipeline`](crate::pipeline::Pipeline). Every refusal is a JSON error made in [`respond`].
//!
//! [`serve`] is the accept loop shared with the admin listener: it stops accepting on shutdown
//! and gives in-flight requests a grace period to finish.

pub mod edge;

pub mod respond;
pub mod tls;

use std::future::Future;
use std::net::SocketAddr;
use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::FutureExt;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use tokio::net::TcpListener;

use crate::pipeline::Pipeline;
use crate::telemetry::{metrics, trace};
use respond::Refusal;
use tracing::Instrument;

pub use crate::event::InboundRequest;

/// Handles one webhook request end to end. Never fails: every outcome is a response.
pub async fn handle_webhook<B>(
    pipeline: Arc<Pipeline>,
    remote: SocketAddr,
    req: Request<B>,
) -> Response<Full<Bytes>>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let Some(source) = pipeline.source_for_path(req.uri().path()) else {
        return respond::error(
            StatusCode::NOT_FOUND,
            "not_found",
            "no webhook source is configured at this path",
        );
    };
    if req.method() != Method::POST {
        let mut resp = Refusal::method_not_allowed().answer(&source.name);
        resp.headers_mut()
            .insert(http::header::ALLOW, http::HeaderValue::from_static("POST"));
        return resp;
    }
    // Before the body is read: shedding must not cost the memory it is meant to save.
    if let Err(e) = pipeline.check_overload() {
        return respond::ingest_error(&source.name, &e);
    }
    let limit = source.max_body_bytes;
    let too_large = || Refusal::body_too_large(limit).answer(&source.name);
    let declared = req
        .headers()
        .get(http::header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|n| n > limit as u64) {
        return too_large();
    }
    // Held until this request is answered: the bodies in memory stay within their budget.
    let _body_bytes = match pipeline.reserve_body(declared, limit) {
        Ok(permit) => permit,
        Err(e) => return respond::ingest_error(&source.name, &e),
    };
    let (parts, body) = req.into_parts();
    let body = match Limited::new(body, limit).collect().await {
        Ok(collected) => collected.to_bytes(),
        Err(e) if e.is::<http_body_util::LengthLimitError>() => return too_large(),
        Err(e)
            if e.downcast_ref::<edge::BodyError>()
                .is_some_and(|e| matches!(e, edge::BodyError::TooSlow { .. })) =>
        {
            return Refusal::body_timeout().answer(&source.name);
        }
        Err(_) => return Refusal::body_unreadable().answer(&source.name),
    };
    let headers = parts
        .headers
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let request = InboundRequest {
        source: source.name.clone(),
        method: parts.method.as_str().to_string(),
        path: parts.uri.path().to_string(),
        query: parts.uri.query().unwrap_or_default().to_string(),
        headers,
        body,
        remote,
        received_at_ms: crate::clock::now_ms(),
    };
    // The request's span: the trace of its `traceparent`, continued (a no-op without traces).
    let span = trace::webhook_span(&source.name, &request.method, &request.headers);
    // A bug in a stage must cost one request a 500, not the connection or the process.
    let response =
        match AssertUnwindSafe(pipeline.ingest(&source, request).instrument(span.clone()))
            .catch_unwind()
            .await
        {
            Ok(Ok(ingested)) => {
                metrics::request(&source.name, respond::ingested_outcome(&ingested));
                respond::ingested(&ingested, source.respond())
            }
            Ok(Err(e)) => respond::ingest_error(&source.name, &e),
            Err(_) => {
                tracing::error!(source = %source.name, "pipeline panicked; answered 500");
                Refusal::internal().answer(&source.name)
            }
        };
    span.record("http.response.status_code", response.status().as_u16());
    response
}

/// Accepts connections on `listener` and answers each request with `handler` until `shutdown`
/// resolves; then waits up to `grace` for open connections to finish. Default limits, no TLS
/// (the admin listener); [`edge::serve`] takes both.
pub async fn serve<H, F>(
    listener: TcpListener,
    handler: H,
    shutdown: impl Future<Output = ()>,
    grace: Duration,
) where
    H: Fn(Request<edge::GuardedBody>, SocketAddr) -> F + Clone + Send + Sync + 'static,
    F: Future<Output = Response<Full<Bytes>>> + Send + 'static,
{
    edge::serve(listener, edge::Edge::default(), handler, shutdown, grace).await;
}
