//! Admin: the operator's listener, separate from the webhook port.
//!
//! - `GET /healthz`: the process is up (never needs a token).
//! - `GET /api/v1/events/{id}`: one event, its status and every delivery attempt.
//! - `/api/v1/dead-letters…`, `/api/v1/replay`, `/api/v1/sinks/{name}/pause|resume`: the
//!   dead-letter queue and sink control ([`dlq`]).
//! - `GET /api/v1/sinks`: each sink with its pending backlog.
//! - `GET /api/v1/intake`: rate-limit, dedupe, overload and Redis counters.
//! - `GET /api/v1/plugins`: each plugin's version, sources, load time and last load error.
//!
//! - `/metrics`, `/readyz`, `GET /api/v1/events` and the dashboard: see [`ops`].
//!
//! With `[admin] token` set, `/api/*`, `/metrics` and `/readyz` require
//! `Authorization: Bearer <token>`; `[admin] public = ["/metrics"]` opens `/metrics`.

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};
use subtle::ConstantTimeEq;

pub mod client;
mod dlq;
pub mod dlq_cli;
pub mod events_cli;
mod ops;

use crate::config::Secret;
use crate::delivery::DeliveryControl;
use crate::pipeline::Pipeline;
use crate::plugin::PluginHost;
use crate::server::respond;
use crate::store::{DeliveryRecord, DeliveryState, EventRecord, EventStatus, Store};

pub struct Admin {
    store: Store,
    plugins: Arc<PluginHost>,
    token: Option<Secret>,
    sinks: Vec<String>,
    pipeline: Option<Arc<Pipeline>>,
    delivery: DeliveryControl,
    /// Renders `/metrics`; `None` when metrics are disabled.
    metrics: Option<metrics_exporter_prometheus::PrometheusHandle>,
    /// Paths served without the token (`[admin] public`).
    public: Vec<String>,
}

impl Admin {
    pub fn new(
        store: Store,
        plugins: Arc<PluginHost>,
        token: Option<Secret>,
        sinks: &BTreeMap<String, impl Sized>,
    ) -> Admin {
        Admin {
            store,
            plugins,
            token,
            sinks: sinks.keys().cloned().collect(),
            pipeline: None,
            delivery: DeliveryControl::default(),
            metrics: None,
            public: Vec::new(),
        }
    }

    /// Serves sink pause/resume through `control`.
    pub fn with_delivery(mut self, control: DeliveryControl) -> Admin {
        self.delivery = control;
        self
    }

    /// Serves `/metrics` from `handle`.
    pub fn with_metrics(mut self, handle: metrics_exporter_prometheus::PrometheusHandle) -> Admin {
        self.metrics = Some(handle);
        self
    }

    /// Serves `paths` (validated by the config) without a token.
    pub fn with_public(mut self, paths: Vec<String>) -> Admin {
        self.public = paths;
        self
    }

    /// Serves `/api/v1/intake` from `pipeline`'s counters.
    pub fn with_pipeline(mut self, pipeline: Arc<Pipeline>) -> Admin {
        self.pipeline = Some(pipeline);
        self
    }

    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let path = req.uri().path().to_string();
        if path == "/healthz" {
            return respond::json(StatusCode::OK, &json!({"status": "ok"}));
        }
        if let Some(page) = ops::dashboard::serve(&path) {
            return page;
        }
        if !path.starts_with("/api/") && !ops::TOP_LEVEL.contains(&path.as_str()) {
            return respond::error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint");
        }
        if !self.public.contains(&path) && !self.authorized(&req) {
            return respond::error(
                StatusCode::UNAUTHORIZED,
                "unauthorized",
                "a valid bearer token is required",
            );
        }
        let req = match dlq::handle(&self, req).await {
            Ok(response) => return response,
            Err(req) => req,
        };
        if req.method() != Method::GET {
            return respond::error(
                StatusCode::METHOD_NOT_ALLOWED,
                "method_not_allowed",
                "this endpoint accepts GET only",
            );
        }
        if let Some(resp) = self.ops(&path, req.uri().query()).await {
            return resp;
        }
        let result = if let Some(id) = path.strip_prefix("/api/v1/events/") {
            self.event(id)
        } else if path == "/api/v1/sinks" {
            self.sinks()
        } else if path == "/api/v1/plugins" {
            Ok(Some(json!({ "plugins": self.plugins.status() })))
        } else if let (true, Some(pipeline)) = (path == "/api/v1/intake", &self.pipeline) {
            Ok(Some(pipeline.intake_report()))
        } else {
            return respond::error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint");
        };
        match result {
            Ok(Some(body)) => respond::json(StatusCode::OK, &body),
            Ok(None) => respond::error(StatusCode::NOT_FOUND, "not_found", "no such event"),
            Err(e) => {
                tracing::error!(error = %e, "admin query failed");
                respond::error(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    "store_error",
                    "the store could not be read",
                )
            }
        }
    }

    fn authorized<B>(&self, req: &Request<B>) -> bool {
        let Some(token) = &self.token else {
            return true;
        };
        let given = req
            .headers()
            .get(http::header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or("");
        bool::from(given.as_bytes().ct_eq(token.expose()))
    }

    fn event(&self, id: &str) -> Result<Option<Value>, crate::store::StoreError> {
        Ok(self
            .store
            .event(id)?
            .map(|(event, deliveries)| event_json(&event, &deliveries)))
    }

    fn sinks(&self) -> Result<Option<Value>, crate::store::StoreError> {
        let mut out = Vec::new();
        for name in &self.sinks {
            out.push(json!({
                "name": name,
                "pending": self.store.pending_count(name)?,
                "paused": self.delivery.is_paused(name),
                "circuit_open": self.delivery.is_circuit_open(name),
            }));
        }
        Ok(Some(json!({ "sinks": out })))
    }
}

fn query_param<'a>(query: Option<&'a str>, key: &str) -> Option<&'a str> {
    query?
        .split('&')
        .filter_map(|kv| kv.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

fn body_json(body: &[u8]) -> Value {
    serde_json::from_slice(body).unwrap_or_else(
        |_| json!({ "base64": base64::engine::general_purpose::STANDARD.encode(body) }),
    )
}

fn event_json(event: &EventRecord, deliveries: &[DeliveryRecord]) -> Value {
    let (status, reason) = match &event.status {
        EventStatus::Forwarded => ("forwarded", None),
        EventStatus::Dropped { reason } => ("dropped", Some(reason)),
        EventStatus::DeadLettered { reason } => ("dead_lettered", Some(reason)),
    };
    json!({
        "id": event.id,
        "source": event.source,
        "received_at_ms": event.received_at_ms,
        "status": status,
        "outcome": crate::store::Outcome::of(event, deliveries).as_str(),
        "reason": reason,
        "request": {
            "method": event.method, "path": event.path, "query": event.query,
            "headers": event.headers, "body": body_json(&event.body),
        },
        "deliveries": deliveries.iter().map(|d| {
            let (state, detail) = match &d.state {
                DeliveryState::Pending { due_ms } => ("pending", json!({"due_ms": due_ms})),
                DeliveryState::Delivered { at_ms } => ("delivered", json!({"at_ms": at_ms})),
                DeliveryState::Dead { reason } => ("dead", json!({"reason": reason})),
                DeliveryState::Resolved { note } => ("resolved", json!({"note": note})),
            };
            json!({
                "seq": d.seq, "id": d.id, "sink": d.sink, "state": state, "detail": detail,
                "headers": d.headers, "body": body_json(&d.body),
                "attempts": d.attempts.iter()
                    .map(|a| json!({"at_ms": a.at_ms, "status": a.status, "error": a.error}))
                    .collect::<Vec<_>>(),
            })
        }).collect::<Vec<_>>(),
    })
}
