//! Admin endpoints of the delivery stage: the dead-letter queue, replay, and sink pause.
//!
//! - `GET /api/v1/dead-letters?source=&sink=&limit=`: newest first (limit ≤ 1000, default 100).
//! - `GET /api/v1/dead-letters/{seq}`: one letter with its delivery's every attempt (time,
//!   status, error) and the stored request.
//! - `POST /api/v1/replay` with `{"seq":N}` | `{"source":"S"}` | `{"sink":"K"}` | `{"all":true}`
//!   → `{"replayed":N,"skipped":M}`: re-runs the current plugins on the stored events.
//! - `POST /api/v1/dead-letters/purge` (same selectors) → `{"purged":N}`.
//! - `POST /api/v1/sinks/{name}/pause` | `/resume` → `{"sink":…,"paused":…}`.

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::{BodyExt, Full, Limited};
use hyper::body::Body;
use serde_json::{Value, json};

use super::{Admin, body_json, query_param};
use crate::pipeline::IngestError;
use crate::pipeline::replay::{self, MAX_REPLAY};
use crate::server::respond;
use crate::store::{DeadLetter, DeliveryState, LetterFilter};

/// Largest request body the admin API reads (selectors are tiny).
const MAX_BODY_BYTES: usize = 64 * 1024;

fn bad_request(message: &str) -> Response<Full<Bytes>> {
    respond::error(StatusCode::BAD_REQUEST, "bad_request", message)
}

fn store_error(e: impl std::fmt::Display) -> Response<Full<Bytes>> {
    tracing::error!(error = %e, "admin dead-letter operation failed");
    respond::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        "the store could not be read or written",
    )
}

/// Answers the request if its path is one of this module's; `Err(req)` hands it back.
pub(super) async fn handle<B>(
    admin: &Admin,
    req: Request<B>,
) -> Result<Response<Full<Bytes>>, Request<B>>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let path = req.uri().path().to_string();
    let method = req.method().clone();
    if !is_ours(&path) {
        return Err(req);
    }
    if path == "/api/v1/dead-letters" {
        if let Some(r) = expect(&method, Method::GET) {
            return Ok(r);
        }
        return Ok(list(admin, req.uri().query()).await);
    }
    if path == "/api/v1/dead-letters/purge" || path == "/api/v1/replay" {
        if let Some(r) = expect(&method, Method::POST) {
            return Ok(r);
        }
        let filter = match read_selector(req).await {
            Ok(f) => f,
            Err(r) => return Ok(r),
        };
        if path == "/api/v1/replay" {
            return Ok(replay_letters(admin, &filter).await);
        }
        return Ok(purge_letters(admin, &filter).await);
    }
    if let Some(seq) = path.strip_prefix("/api/v1/dead-letters/") {
        if let Some(r) = expect(&method, Method::GET) {
            return Ok(r);
        }
        let Ok(seq) = seq.parse::<u64>() else {
            return Ok(bad_request("a dead letter is named by its number (seq)"));
        };
        return Ok(show(admin, seq).await);
    }
    // /api/v1/sinks/{name}/pause|resume
    if let Some(r) = expect(&method, Method::POST) {
        return Ok(r);
    }
    Ok(set_paused(admin, &path["/api/v1/sinks/".len()..]).await)
}

/// Whether `path` is one of this module's endpoints (whatever the method).
fn is_ours(path: &str) -> bool {
    path == "/api/v1/dead-letters"
        || path.starts_with("/api/v1/dead-letters/")
        || path == "/api/v1/replay"
        || (path.starts_with("/api/v1/sinks/")
            && (path.ends_with("/pause") || path.ends_with("/resume")))
}

/// `None` when the request's `method` is the one the endpoint takes, else the 405 answer.
fn expect(method: &Method, want: Method) -> Option<Response<Full<Bytes>>> {
    (*method != want).then(|| {
        respond::error(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            &format!("this endpoint accepts {want} only"),
        )
    })
}

/// `POST /api/v1/replay`: re-runs the current plugins on the letters `filter` selects.
async fn replay_letters(admin: &Admin, filter: &LetterFilter) -> Response<Full<Bytes>> {
    let Some(pipeline) = &admin.pipeline else {
        return bad_request("replay needs the running pipeline");
    };
    match replay::replay(pipeline, filter).await {
        Ok(r) => respond::json(
            StatusCode::OK,
            &json!({"replayed": r.replayed, "skipped": r.skipped}),
        ),
        // A plugin at capacity: nothing was replayed; the letters wait for a retry.
        Err(replay::ReplayError::Pipeline(IngestError::PluginBusy(busy))) => {
            tracing::warn!(error = %busy, "replay refused: a plugin is at capacity");
            respond::retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin_busy",
                "a plugin is at capacity; nothing was replayed, retry later",
                crate::plugin::BUSY_RETRY_AFTER,
            )
        }
        Err(e) => store_error(e),
    }
}

/// `POST /api/v1/dead-letters/purge`: deletes the letters `filter` selects (at most
/// [`MAX_REPLAY`]).
async fn purge_letters(admin: &Admin, filter: &LetterFilter) -> Response<Full<Bytes>> {
    let purged = async {
        let seqs = admin
            .store
            .dead_letters_matching(filter, MAX_REPLAY)
            .await?
            .into_iter()
            .map(|(seq, _)| seq)
            .collect();
        admin.store.purge_letters(seqs).await
    };
    match purged.await {
        Ok(n) => {
            tracing::info!(purged = n, ?filter, "dead letters purged");
            respond::json(StatusCode::OK, &json!({ "purged": n }))
        }
        Err(e) => store_error(e),
    }
}

/// `POST /api/v1/sinks/{name}/pause|resume`, given `{name}/pause|resume`.
async fn set_paused(admin: &Admin, rest: &str) -> Response<Full<Bytes>> {
    let (name, action) = rest.rsplit_once('/').unwrap_or((rest, ""));
    let paused = action == "pause";
    match admin.delivery.set_paused(name, paused).await {
        Ok(Some(())) => respond::json(StatusCode::OK, &json!({"sink": name, "paused": paused})),
        Ok(None) => respond::error(StatusCode::NOT_FOUND, "not_found", "no such sink"),
        Err(e) => store_error(e),
    }
}

async fn read_selector<B>(req: Request<B>) -> Result<LetterFilter, Response<Full<Bytes>>>
where
    B: Body<Data = Bytes>,
    B::Error: std::error::Error + Send + Sync + 'static,
{
    let body = Limited::new(req.into_body(), MAX_BODY_BYTES)
        .collect()
        .await
        .map_err(|_| bad_request("cannot read the request body (at most 64 KiB)"))?
        .to_bytes();
    let value: Value = serde_json::from_slice(&body)
        .map_err(|_| bad_request("the body must be JSON: {\"seq\":N} | {\"source\":\"S\"} | {\"sink\":\"K\"} | {\"all\":true}"))?;
    selector(&value).map_err(|m| bad_request(&m))
}

/// Exactly one of `seq`, `source`, `sink`, `all: true`.
fn selector(v: &Value) -> Result<LetterFilter, String> {
    let obj = v.as_object().ok_or("the body must be a JSON object")?;
    if obj.len() != 1 {
        return Err("give exactly one of `seq`, `source`, `sink`, `all`".into());
    }
    let (k, v) = obj.iter().next().ok_or("empty selector")?;
    match (k.as_str(), v) {
        ("seq", Value::Number(n)) => n
            .as_u64()
            .map(LetterFilter::Seq)
            .ok_or_else(|| "`seq` must be a non-negative integer".into()),
        ("source", Value::String(s)) => Ok(LetterFilter::Source(s.clone())),
        ("sink", Value::String(s)) => Ok(LetterFilter::Sink(s.clone())),
        ("all", Value::Bool(true)) => Ok(LetterFilter::All),
        _ => Err(format!("unknown or mistyped selector `{k}`")),
    }
}

fn letter_json(seq: u64, l: &DeadLetter) -> Value {
    json!({
        "seq": seq, "event_id": l.event_id, "source": l.source,
        "delivery": l.delivery, "sink": l.sink, "reason": l.reason, "at_ms": l.at_ms,
    })
}

async fn list(admin: &Admin, query: Option<&str>) -> Response<Full<Bytes>> {
    let limit = query_param(query, "limit")
        .and_then(|v| v.parse().ok())
        .unwrap_or(100usize)
        .min(1000);
    let source = query_param(query, "source");
    let sink = query_param(query, "sink");
    let filter = match (source, sink) {
        (Some(s), _) => LetterFilter::Source(s.to_string()),
        (None, Some(k)) => LetterFilter::Sink(k.to_string()),
        (None, None) => LetterFilter::All,
    };
    match admin.store.dead_letters_matching(&filter, limit).await {
        Ok(letters) => {
            let letters: Vec<Value> = letters
                .iter()
                // Both filters given: the source filtered above, the sink here.
                .filter(|(_, l)| sink.is_none_or(|k| l.sink.as_deref() == Some(k)))
                .map(|(seq, l)| letter_json(*seq, l))
                .collect();
            respond::json(StatusCode::OK, &json!({ "dead_letters": letters }))
        }
        Err(e) => store_error(e),
    }
}

async fn show(admin: &Admin, seq: u64) -> Response<Full<Bytes>> {
    let found = async {
        let mut l = admin
            .store
            .dead_letters_matching(&LetterFilter::Seq(seq), 1)
            .await?;
        let Some((_, letter)) = l.pop() else {
            return Ok(None);
        };
        let delivery = match letter.delivery {
            Some(d) => admin.store.delivery(d).await?,
            None => None,
        };
        let event = admin
            .store
            .event(&letter.source, &letter.event_id)
            .await?
            .map(|(e, _)| e);
        Ok::<_, crate::store::StoreError>(Some((letter, delivery, event)))
    }
    .await;
    match found {
        Ok(Some((letter, delivery, event))) => {
            let mut out = letter_json(seq, &letter);
            out["attempts"] = json!(delivery.as_ref().map(|d| {
                d.attempts
                    .iter()
                    .map(|a| json!({"at_ms": a.at_ms, "status": a.status, "error": a.error}))
                    .collect::<Vec<_>>()
            }));
            out["delivery_id"] = json!(delivery.as_ref().map(|d| d.id.clone()));
            out["state"] = json!(delivery.as_ref().map(|d| match &d.state {
                DeliveryState::Pending { .. } => "pending",
                DeliveryState::Delivered { .. } => "delivered",
                DeliveryState::Dead { .. } => "dead",
                DeliveryState::Resolved { .. } => "resolved",
            }));
            out["request"] = json!(event.map(|e| json!({
                "method": e.method, "path": e.path, "query": e.query,
                "headers": e.headers, "body": body_json(&e.body),
            })));
            respond::json(StatusCode::OK, &out)
        }
        Ok(None) => respond::error(StatusCode::NOT_FOUND, "not_found", "no such dead letter"),
        Err(e) => store_error(e),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn selectors_take_exactly_one_key() {
        assert_eq!(selector(&json!({"seq": 7})), Ok(LetterFilter::Seq(7)));
        assert_eq!(selector(&json!({"all": true})), Ok(LetterFilter::All));
        assert_eq!(
            selector(&json!({"sink": "app"})),
            Ok(LetterFilter::Sink("app".into()))
        );
        assert!(selector(&json!({"all": false})).is_err());
        assert!(selector(&json!({"seq": 1, "all": true})).is_err());
        assert!(selector(&json!({"seq": "1"})).is_err());
        assert!(selector(&json!([])).is_err());
    }
}
