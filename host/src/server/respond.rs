//! The one place where outcomes and errors become HTTP responses.
//!
//! Bodies are JSON: `{"status":…,"id":…}` for accepted events, `{"error":…,"message":…}` for
//! refusals. Internal details (storage errors, plugin traps) are logged, never sent.

use bytes::Bytes;
use http::{Response, StatusCode, header};
use http_body_util::Full;
use serde_json::json;

use std::time::Duration;

use crate::config::{OnPluginError, RespondConfig};
use crate::dedupe::{self, DedupeError};
use crate::pipeline::{IngestError, Ingested};
use crate::ratelimit::{self, RateLimitError, overload};
use crate::verify::VerifyError;

/// `Retry-After` when the store cannot commit.
const STORE_RETRY_AFTER: Duration = Duration::from_secs(5);

/// A JSON response with `status`.
pub fn json(status: StatusCode, body: &serde_json::Value) -> Response<Full<Bytes>> {
    let mut resp = Response::new(Full::new(Bytes::from(body.to_string())));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        header::HeaderValue::from_static("application/json"),
    );
    resp
}

/// `{"error": code, "message": message}` with `status`.
pub fn error(status: StatusCode, code: &str, message: &str) -> Response<Full<Bytes>> {
    json(status, &json!({ "error": code, "message": message }))
}

/// [`error`] with `Retry-After` in whole seconds, rounded up and at least 1 (a 0 would invite
/// an immediate retry that fails the same way).
pub fn retry_later(
    status: StatusCode,
    code: &str,
    message: &str,
    after: Duration,
) -> Response<Full<Bytes>> {
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
    let mut resp = error(status, code, message);
    resp.headers_mut()
        .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
    resp
}

/// The answer to `outcome`; `custom` is the source's `respond = {…}`, which replaces the
/// answer to accepted, duplicate and dropped events (all "we have it" to the sender).
pub fn ingested(outcome: &Ingested, custom: Option<&RespondConfig>) -> Response<Full<Bytes>> {
    if let (
        Some(custom),
        Ingested::Accepted { id } | Ingested::Duplicate { id } | Ingested::Dropped { id },
    ) = (custom, outcome)
    {
        return custom_answer(custom, outcome, id);
    }
    match outcome {
        Ingested::Responded { reply, .. } => {
            let mut resp = Response::new(Full::new(Bytes::from(reply.body.clone())));
            *resp.status_mut() = StatusCode::from_u16(reply.status).unwrap_or(StatusCode::OK);
            for (name, value) in &reply.headers {
                // Plugins may only set well-formed headers; anything else is skipped.
                if let (Ok(n), Ok(v)) = (
                    header::HeaderName::from_bytes(name.as_bytes()),
                    header::HeaderValue::from_str(value),
                ) {
                    resp.headers_mut().append(n, v);
                }
            }
            resp
        }
        Ingested::Accepted { id } => json(StatusCode::OK, &json!({"status": "accepted", "id": id})),
        Ingested::Duplicate { id } => {
            json(StatusCode::OK, &json!({"status": "duplicate", "id": id}))
        }
        Ingested::Dropped { id } => json(StatusCode::OK, &json!({"status": "dropped", "id": id})),
        Ingested::DeadLettered {
            id,
            answer: OnPluginError::Accept,
        } => json(
            StatusCode::ACCEPTED,
            &json!({"status": "accepted", "id": id}),
        ),
        Ingested::DeadLettered {
            id,
            answer: OnPluginError::Reject,
        } => json(
            StatusCode::INTERNAL_SERVER_ERROR,
            &json!({
                "error": "plugin_failed",
                "message": "a plugin failed on this event; it was kept as a dead letter",
                "id": id,
            }),
        ),
    }
}

fn custom_answer(custom: &RespondConfig, outcome: &Ingested, id: &str) -> Response<Full<Bytes>> {
    let status = StatusCode::from_u16(custom.status).unwrap_or(StatusCode::OK);
    if status == StatusCode::NO_CONTENT {
        let mut resp = Response::new(Full::new(Bytes::new()));
        *resp.status_mut() = status;
        return resp;
    }
    let Some(body) = &custom.body else {
        let word = match outcome {
            Ingested::Duplicate { .. } => "duplicate",
            Ingested::Dropped { .. } => "dropped",
            _ => "accepted",
        };
        return json(status, &json!({"status": word, "id": id}));
    };
    let mut resp = Response::new(Full::new(Bytes::from(body.clone())));
    *resp.status_mut() = status;
    let content_type = custom
        .content_type
        .as_deref()
        .unwrap_or("text/plain; charset=utf-8");
    if let Ok(v) = header::HeaderValue::from_str(content_type) {
        resp.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    resp
}

pub fn ingest_error(source: &str, e: &IngestError) -> Response<Full<Bytes>> {
    match e {
        IngestError::Verify(failure) => {
            let v = &failure.error;
            tracing::info!(source, code = v.code(), reason = %v,
                diagnostic = %failure.diagnostic, "verification failed");
            let status = match v {
                VerifyError::IpNotAllowed { .. } => StatusCode::FORBIDDEN,
                _ => StatusCode::UNAUTHORIZED,
            };
            let mut body = json!({ "error": v.code(), "message": v.to_string() });
            if failure.explain {
                body["explain"] = serde_json::to_value(&*failure.diagnostic).unwrap_or_default();
            }
            json(status, &body)
        }
        IngestError::Rejected(r) => {
            let status = StatusCode::from_u16(r.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            let mut body = json!({ "error": r.code, "message": r.message });
            if let Some(field) = &r.field {
                body["field"] = json!(field);
            }
            json(status, &body)
        }
        IngestError::PluginBusy(busy) => {
            tracing::warn!(source, plugin = %busy.plugin, reason = %busy.reason,
                "plugin at capacity; answered 503, nothing stored");
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "plugin_busy",
                "a plugin for this source is at capacity; retry after the Retry-After delay",
                crate::plugin::BUSY_RETRY_AFTER,
            )
        }
        IngestError::Internal(reason) => {
            tracing::error!(source, %reason, "internal error; answered 500");
            error(
                StatusCode::INTERNAL_SERVER_ERROR,
                "internal_error",
                "the request could not be processed",
            )
        }
        IngestError::Store(s) | IngestError::Dedupe(DedupeError::Store(s)) => {
            tracing::error!(source, error = %s, "event not stored; answered 503");
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "the event could not be stored; retry later",
                STORE_RETRY_AFTER,
            )
        }
        IngestError::RateLimited(RateLimitError::Limited { retry_after }) => {
            tracing::debug!(source, ?retry_after, "rate limited; answered 429");
            retry_later(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this source's rate limit is exceeded; retry after the Retry-After delay",
                *retry_after,
            )
        }
        IngestError::RateLimited(RateLimitError::Unavailable(e)) => {
            tracing::warn!(source, error = %e, "shared rate limit unavailable (fail_closed); answered 503");
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "rate_limit_unavailable",
                "the rate limit cannot be checked right now; retry later",
                ratelimit::UNAVAILABLE_RETRY_AFTER,
            )
        }
        IngestError::Dedupe(DedupeError::InFlight) => retry_later(
            StatusCode::SERVICE_UNAVAILABLE,
            "duplicate_in_flight",
            "a copy of this event is being processed; retry later",
            dedupe::RETRY_AFTER,
        ),
        IngestError::Dedupe(DedupeError::Unavailable(e)) => {
            tracing::warn!(source, error = %e, "shared dedupe unavailable (fail_closed); answered 503");
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "dedupe_unavailable",
                "duplicates cannot be checked right now; retry later",
                dedupe::RETRY_AFTER,
            )
        }
        IngestError::Overloaded(o) => {
            tracing::debug!(source, reason = %o, "overloaded; answered 503");
            retry_later(
                StatusCode::SERVICE_UNAVAILABLE,
                "overloaded",
                "the receiver is behind on its work; retry later",
                overload::RETRY_AFTER,
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plugin::{BusyReason, PluginBusy};

    #[test]
    fn a_busy_plugin_is_a_503_to_retry() {
        let busy = IngestError::PluginBusy(PluginBusy {
            plugin: "p".into(),
            reason: BusyReason::Concurrency { limit: 2 },
        });
        let resp = ingest_error("demo", &busy);
        assert_eq!(resp.status(), StatusCode::SERVICE_UNAVAILABLE);
        assert_eq!(resp.headers()[header::RETRY_AFTER], "1");
        assert_eq!(resp.headers()[header::CONTENT_TYPE], "application/json");
    }
}
