//! Operating endpoints of the admin listener: `/metrics`, `/readyz`, the events list and the
//! dashboard.
//!
//! - `GET /metrics`: Prometheus text. Gauges that are cheap to read but not worth updating on
//!   every change (backlog per sink, dead-letter queue size) are sampled here, at scrape.
//! - `GET /readyz`: 200 when the store answers and takes writes, every plugin a source names is loaded, and
//!   Redis (when configured) answers a `PING`; else 503 with each check's result.
//! - `GET /api/v1/events?source=&status=&since=&until=&cursor=&limit=`: events newest first,
//!   paged with an opaque cursor.
//! - `GET /` and `/dashboard`: the dashboard page ([`dashboard`]); it holds no data and asks
//!   for the token itself, so it is served without one.

use base64::Engine as _;
use bytes::Bytes;
use http::{Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

use super::Admin;
use crate::server::respond;
use crate::store::{DeliveryRecord, DeliveryState, EventFilter, EventRecord, EventStatus, Outcome};
use crate::telemetry::metrics as m;

pub mod dashboard;

/// `limit` when the query has none, and the most one page may hold.
const DEFAULT_PAGE: usize = 50;
const MAX_PAGE: usize = 500;

/// Paths served here that are not under `/api/`.
pub const TOP_LEVEL: &[&str] = &["/metrics", "/readyz"];

impl Admin {
    /// Answers the operating endpoints; `None` for any other path.
    pub(super) async fn ops(
        &self,
        path: &str,
        query: Option<&str>,
    ) -> Option<Response<Full<Bytes>>> {
        Some(match path {
            "/metrics" => self.metrics().await,
            "/readyz" => self.readyz().await,
            "/api/v1/events" => self.list_events(query).await,
            _ => return None,
        })
    }

    async fn metrics(&self) -> Response<Full<Bytes>> {
        let Some(handle) = &self.metrics else {
            return respond::error(
                StatusCode::NOT_FOUND,
                "metrics_disabled",
                "metrics are disabled ([telemetry] metrics = false)",
            );
        };
        for sink in &self.sinks {
            match self.store.pending_count(sink).await {
                Ok(n) => metrics::gauge!(m::SINK_BACKLOG, "sink" => sink.clone()).set(n as f64),
                Err(e) => tracing::warn!(sink, error = %e, "cannot read the backlog for /metrics"),
            }
        }
        if let Ok(n) = self.store.dead_letter_count().await {
            metrics::gauge!(m::DEAD_LETTERS_QUEUED).set(n as f64);
        }
        m::store_writable(self.store.write_error().is_none());
        let mut resp = Response::new(Full::new(Bytes::from(handle.render())));
        resp.headers_mut().insert(
            http::header::CONTENT_TYPE,
            http::HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"),
        );
        resp
    }

    async fn readyz(&self) -> Response<Full<Bytes>> {
        // Readable is not enough: after a failed write (a full disk) the store refuses every
        // event until it could be reopened, and a balancer should send traffic elsewhere.
        let store = match (
            self.store.write_error(),
            self.store.dead_letter_count().await,
        ) {
            (Some(error), _) => json!({"ok": false, "writable": false, "error": error}),
            (None, Ok(_)) => json!({"ok": true, "writable": true}),
            (None, Err(e)) => json!({"ok": false, "error": e.to_string()}),
        };
        let unloaded = self.plugins.plugins().unloaded();
        let plugins = json!({
            "ok": unloaded.is_empty(),
            "unloaded": unloaded.iter()
                .map(|(source, plugin)| json!({"source": source, "plugin": plugin}))
                .collect::<Vec<_>>(),
        });
        let mut checks = json!({"store": store, "plugins": plugins});
        if let Some(redis) = self.pipeline.as_ref().and_then(|p| p.redis()) {
            checks["redis"] = match redis.ping().await {
                Ok(()) => json!({"ok": true}),
                Err(e) => json!({"ok": false, "error": e.to_string()}),
            };
        }
        let ready = checks
            .as_object()
            .is_some_and(|c| c.values().all(|v| v["ok"] == true));
        if ready {
            respond::json(
                StatusCode::OK,
                &json!({"status": "ready", "checks": checks}),
            )
        } else {
            respond::json(
                StatusCode::SERVICE_UNAVAILABLE,
                &json!({"error": "not_ready", "message": "a readiness check failed",
                    "checks": checks}),
            )
        }
    }

    async fn list_events(&self, query: Option<&str>) -> Response<Full<Bytes>> {
        let params = match EventsQuery::parse(query.unwrap_or("")) {
            Ok(p) => p,
            Err(message) => {
                return respond::error(StatusCode::BAD_REQUEST, "bad_request", &message);
            }
        };
        match self
            .store
            .list_events(&params.filter, params.cursor, params.limit)
            .await
        {
            Ok(page) => {
                let events: Vec<Value> = page
                    .events
                    .iter()
                    .map(|(event, deliveries, outcome)| {
                        let mut v = event_summary(event, deliveries);
                        v["status"] = json!(outcome.as_str());
                        v
                    })
                    .collect();
                respond::json(
                    StatusCode::OK,
                    &json!({
                        "events": events,
                        "next_cursor": page.next.map(|(ms, id)| encode_cursor(ms, &id)),
                    }),
                )
            }
            Err(e) => {
                tracing::error!(error = %e, "admin events query failed");
                respond::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    "the store could not be read",
                )
            }
        }
    }
}

/// One line of the events list: what happened, without bodies (the detail has those).
fn event_summary(event: &EventRecord, deliveries: &[DeliveryRecord]) -> Value {
    let reason = match &event.status {
        EventStatus::Forwarded => None,
        EventStatus::Dropped { reason } | EventStatus::DeadLettered { reason } => Some(reason),
    };
    json!({
        "id": event.id,
        "source": event.source,
        "received_at_ms": event.received_at_ms,
        "reason": reason,
        "deliveries": deliveries.iter().map(|d| {
            let (state, last_error) = match &d.state {
                DeliveryState::Pending { .. } => ("pending", d.attempts.last().and_then(|a| a.error.clone())),
                DeliveryState::Delivered { .. } => ("delivered", None),
                DeliveryState::Dead { reason } => ("dead", Some(reason.clone())),
                DeliveryState::Resolved { note } => ("resolved", Some(note.clone())),
            };
            json!({"seq": d.seq, "sink": d.sink, "state": state,
                "attempts": d.attempts.len(), "last_error": last_error})
        }).collect::<Vec<_>>(),
    })
}

/// `GET /api/v1/events` parameters.
#[derive(Debug)]
struct EventsQuery {
    filter: EventFilter,
    cursor: Option<(u64, String)>,
    limit: usize,
}

impl EventsQuery {
    /// Parses the query string; an error names the bad parameter.
    fn parse(query: &str) -> Result<EventsQuery, String> {
        let mut q = EventsQuery {
            filter: EventFilter::default(),
            cursor: None,
            limit: DEFAULT_PAGE,
        };
        for (key, value) in form_urlencoded::parse(query.as_bytes()) {
            match key.as_ref() {
                "source" => q.filter.source = Some(value.into_owned()),
                "status" => {
                    q.filter.outcome = Some(Outcome::parse(&value).ok_or_else(|| {
                        format!(
                            "status: {value:?} is not one of delivered, pending, failed, dropped"
                        )
                    })?);
                }
                "since" => q.filter.since_ms = Some(parse_time("since", &value)?),
                "until" => q.filter.until_ms = Some(parse_time("until", &value)?),
                "cursor" => {
                    q.cursor =
                        Some(decode_cursor(&value).ok_or("cursor: not a cursor from this API")?);
                }
                "limit" => {
                    q.limit = value
                        .parse::<usize>()
                        .ok()
                        .filter(|n| (1..=MAX_PAGE).contains(n))
                        .ok_or_else(|| format!("limit: expected 1 to {MAX_PAGE}"))?;
                }
                other => return Err(format!("unknown parameter {other:?}")),
            }
        }
        Ok(q)
    }
}

/// Milliseconds since the epoch, or an RFC 3339 time (`2026-11-23T21:00:00Z`).
fn parse_time(key: &str, value: &str) -> Result<u64, String> {
    if let Ok(ms) = value.parse::<u64>() {
        return Ok(ms);
    }
    humantime::parse_rfc3339_weak(value)
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_millis() as u64)
        .ok_or_else(|| format!("{key}: expected ms since the epoch or an RFC 3339 time"))
}

fn encode_cursor(ms: u64, id: &str) -> String {
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(format!("{ms}:{id}"))
}

fn decode_cursor(cursor: &str) -> Option<(u64, String)> {
    let raw = base64::engine::general_purpose::URL_SAFE_NO_PAD
        .decode(cursor)
        .ok()?;
    let text = String::from_utf8(raw).ok()?;
    let (ms, id) = text.split_once(':')?;
    Some((ms.parse().ok()?, id.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursors_round_trip_ids_with_any_characters() {
        for id in ["a", "evt:1:2", "ünï/code?&=", ""] {
            assert_eq!(
                decode_cursor(&encode_cursor(42, id)),
                Some((42, id.to_string()))
            );
        }
        assert_eq!(decode_cursor("not base64!"), None);
    }

    #[test]
    fn query_errors_name_the_parameter() {
        let err = |q: &str| EventsQuery::parse(q).unwrap_err();
        assert!(err("status=lost").starts_with("status:"));
        assert!(err("since=yesterday").starts_with("since:"));
        assert!(err("limit=0").starts_with("limit:"));
        assert!(err("cursor=%%%").starts_with("cursor:"));
        assert!(err("colour=red").contains("colour"));
        let q =
            EventsQuery::parse("source=a%20b&since=2026-11-23T00:00:00Z&until=5&limit=7").unwrap();
        assert_eq!(q.filter.source.as_deref(), Some("a b"));
        assert_eq!(q.filter.since_ms, Some(1_795_392_000_000));
        assert_eq!(q.filter.until_ms, Some(5));
        assert_eq!(q.limit, 7);
    }
}
