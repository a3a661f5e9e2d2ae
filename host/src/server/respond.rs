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
use crate::ratelimit::{self, RateLimitError};
use crate::telemetry::metrics;
use crate::verify::{VerifyError, VerifyFailure};

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
    let mut resp = error(status, code, message);
    let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
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

/// One refusal, classified once: the answer's status, code, message and `Retry-After`, and
/// the labels its metrics are counted under. Both the response and the metrics read this
/// value, so they cannot disagree.
#[derive(Debug, Clone)]
pub struct Refusal {
    /// The answer's HTTP status.
    pub status: StatusCode,
    /// The body's `error`: a stable, machine-readable code (`rate_limited`).
    pub code: String,
    /// The body's `message`, for a human.
    pub message: String,
    /// Sent as `Retry-After`, in whole seconds rounded up (at least 1); `None` sends none.
    pub retry_after: Option<Duration>,
    /// `hookwall_requests_total{outcome}`.
    pub outcome: &'static str,
    /// `hookwall_requests_rejected_total{reason}` when `outcome` is `rejected`.
    pub rejected: Option<&'static str>,
    /// `hookwall_verify_failures_total{reason}` for a failed verification.
    pub verify_failure: Option<&'static str>,
    /// Extra fields of the JSON body (a plugin's `field`, verify's `explain`).
    pub extra: serde_json::Map<String, serde_json::Value>,
}

impl Refusal {
    fn new(
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        outcome: &'static str,
    ) -> Refusal {
        Refusal {
            status,
            code: code.to_string(),
            message: message.into(),
            retry_after: None,
            outcome,
            rejected: None,
            verify_failure: None,
            extra: serde_json::Map::new(),
        }
    }

    /// A 4xx refused before (or by) the plugins, counted as `rejected` with `reason`.
    pub fn rejected(
        status: StatusCode,
        code: &str,
        message: impl Into<String>,
        reason: &'static str,
    ) -> Refusal {
        Refusal {
            rejected: Some(reason),
            ..Refusal::new(status, code, message, "rejected")
        }
    }

    fn retry_after(mut self, after: Duration) -> Refusal {
        self.retry_after = Some(after);
        self
    }

    /// `POST` is the only method a source takes.
    pub fn method_not_allowed() -> Refusal {
        Refusal::rejected(
            StatusCode::METHOD_NOT_ALLOWED,
            "method_not_allowed",
            "webhook sources accept POST only",
            "method_not_allowed",
        )
    }

    /// The body is over the source's `max_body_bytes`.
    pub fn body_too_large(limit: usize) -> Refusal {
        Refusal::rejected(
            StatusCode::PAYLOAD_TOO_LARGE,
            "body_too_large",
            format!("the body exceeds this source's limit of {limit} bytes"),
            "body_too_large",
        )
    }

    /// The body did not arrive within the edge's body limits.
    pub fn body_timeout() -> Refusal {
        Refusal::rejected(
            StatusCode::REQUEST_TIMEOUT,
            "body_timeout",
            "the request body did not arrive in time",
            "body_timeout",
        )
    }

    /// The body could not be read (a broken connection, bad chunking).
    pub fn body_unreadable() -> Refusal {
        Refusal::rejected(
            StatusCode::BAD_REQUEST,
            "body_unreadable",
            "the request body could not be read",
            "body_unreadable",
        )
    }

    /// A bug: a stage panicked or failed internally. Details are logged, never sent.
    pub fn internal() -> Refusal {
        Refusal::new(
            StatusCode::INTERNAL_SERVER_ERROR,
            "internal_error",
            "the request could not be processed",
            "error",
        )
    }

    /// Counts this refusal of a request to `source` and answers it.
    pub fn answer(&self, source: &str) -> Response<Full<Bytes>> {
        if let Some(code) = self.verify_failure {
            metrics::verify_failure(source, code);
        }
        match self.rejected {
            Some(reason) => metrics::request_rejected(source, reason),
            None => metrics::request(source, self.outcome),
        }
        let mut body = json!({ "error": self.code, "message": self.message });
        for (k, v) in &self.extra {
            body[k] = v.clone();
        }
        let mut resp = json(self.status, &body);
        if let Some(after) = self.retry_after {
            let secs = after.as_secs() + u64::from(after.subsec_nanos() > 0);
            resp.headers_mut()
                .insert(header::RETRY_AFTER, header::HeaderValue::from(secs.max(1)));
        }
        resp
    }
}

/// The `outcome` label of a request the pipeline finished.
pub fn ingested_outcome(outcome: &Ingested) -> &'static str {
    match outcome {
        Ingested::Accepted { .. } => "accepted",
        Ingested::Duplicate { .. } => "duplicate",
        Ingested::Dropped { .. } => "dropped",
        Ingested::DeadLettered { .. } => "dead_lettered",
        Ingested::Responded { .. } => "responded",
    }
}

/// Classifies a refusal of the pipeline (and logs it, at the level its cause deserves).
pub fn classify(source: &str, e: &IngestError) -> Refusal {
    let unavailable = StatusCode::SERVICE_UNAVAILABLE;
    match e {
        IngestError::Verify(failure) => verify_refusal(source, failure),
        IngestError::Rejected(rej) => {
            let status =
                StatusCode::from_u16(rej.status).unwrap_or(StatusCode::UNPROCESSABLE_ENTITY);
            let mut r = Refusal::rejected(status, &rej.code, rej.message.clone(), "plugin");
            if let Some(field) = &rej.field {
                r.extra.insert("field".into(), json!(field));
            }
            r
        }
        IngestError::PluginBusy(busy) => {
            tracing::warn!(source, plugin = %busy.plugin, reason = %busy.reason,
                "plugin at capacity; answered 503, nothing stored");
            Refusal::new(
                unavailable,
                "plugin_busy",
                "a plugin for this source is at capacity; retry after the Retry-After delay",
                "plugin_busy",
            )
            .retry_after(crate::plugin::BUSY_RETRY_AFTER)
        }
        IngestError::Internal(reason) => {
            tracing::error!(source, %reason, "internal error; answered 500");
            Refusal::internal()
        }
        IngestError::Store(s) | IngestError::Dedupe(DedupeError::Store(s)) => {
            tracing::error!(source, error = %s, "event not stored; answered 503");
            Refusal::new(
                unavailable,
                "store_unavailable",
                "the event could not be stored; retry later",
                "store_error",
            )
            .retry_after(STORE_RETRY_AFTER)
        }
        IngestError::RateLimited(RateLimitError::Limited { retry_after }) => {
            tracing::debug!(source, ?retry_after, "rate limited; answered 429");
            Refusal::new(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "this source's rate limit is exceeded; retry after the Retry-After delay",
                "rate_limited",
            )
            .retry_after(*retry_after)
        }
        IngestError::RateLimited(RateLimitError::Unavailable(e)) => {
            tracing::warn!(source, error = %e, "shared rate limit unavailable (fail_closed); answered 503");
            Refusal::new(
                unavailable,
                "rate_limit_unavailable",
                "the rate limit cannot be checked right now; retry later",
                "unavailable",
            )
            .retry_after(ratelimit::UNAVAILABLE_RETRY_AFTER)
        }
        IngestError::Dedupe(DedupeError::InFlight) => Refusal::new(
            unavailable,
            "duplicate_in_flight",
            "a copy of this event is being processed; retry later",
            "duplicate_in_flight",
        )
        .retry_after(dedupe::RETRY_AFTER),
        IngestError::Dedupe(DedupeError::Unavailable(e)) => {
            tracing::warn!(source, error = %e, "shared dedupe unavailable (fail_closed); answered 503");
            Refusal::new(
                unavailable,
                "dedupe_unavailable",
                "duplicates cannot be checked right now; retry later",
                "unavailable",
            )
            .retry_after(dedupe::RETRY_AFTER)
        }
        IngestError::Overloaded(o) => {
            tracing::debug!(source, reason = %o, "overloaded; answered 503");
            Refusal::new(
                unavailable,
                "overloaded",
                "the receiver is behind on its work; retry later",
                "overloaded",
            )
            .retry_after(o.retry_after())
        }
    }
}

/// A failed verification: 403 for `allow_ips`, else 401, with the diagnostic when the source
/// asked for `explain`.
fn verify_refusal(source: &str, failure: &VerifyFailure) -> Refusal {
    let v = &failure.error;
    tracing::info!(source, code = v.code(), reason = %v,
            diagnostic = %failure.diagnostic, "verification failed");
    let (status, outcome) = match v {
        VerifyError::IpNotAllowed { .. } => (StatusCode::FORBIDDEN, "forbidden"),
        _ => (StatusCode::UNAUTHORIZED, "unauthorized"),
    };
    let mut r = Refusal::new(status, v.code(), v.to_string(), outcome);
    r.verify_failure = Some(v.code());
    if failure.explain {
        r.extra.insert(
            "explain".into(),
            serde_json::to_value(&*failure.diagnostic).unwrap_or_default(),
        );
    }
    r
}

/// Classifies, counts and answers a refusal of the pipeline.
pub fn ingest_error(source: &str, e: &IngestError) -> Response<Full<Bytes>> {
    classify(source, e).answer(source)
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
