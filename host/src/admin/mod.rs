//! Admin: the operator's listener, separate from the webhook port.
//!
//! - `GET /healthz`: the process is up (never needs a token).
//! - `GET /api/v1/events/{source}/{id}`, or `/api/v1/events/{id}` when one source holds that id
//!   (409 `ambiguous_event_id` when several do): one event, its status and every attempt.
//! - `/api/v1/dead-letters…`, `/api/v1/replay`, `/api/v1/sinks/{name}/pause|resume`: the
//!   dead-letter queue and sink control ([`dlq`]).
//! - `GET /api/v1/sinks`: each sink with its pending backlog.
//! - `GET /api/v1/intake`: rate-limit, dedupe, overload and Redis counters.
//! - `GET /api/v1/plugins`: each plugin's version, sources, load time and last load error.
//!
//! - `/metrics`, `/readyz`, `GET /api/v1/events` and the dashboard: see [`ops`].
//!
//! With `[admin] token` set, `/api/*`, `/metrics` and `/readyz` require
//! `Authorization: Bearer <token>` (compared as digests in constant time,
//! [`crate::verify::secret_eq`]); `[admin] public = ["/metrics"]` opens `/metrics`.
//!
//! Before any route, [`guard`] refuses what a browser page could send: without a token, a
//! `Host` that is not one of the listener's names (421); a state-changing request from another
//! origin (403) or without `Content-Type: application/json` (415).

use std::collections::BTreeMap;
use std::sync::Arc;

use base64::Engine as _;
use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use serde_json::{Value, json};

mod dlq;

pub mod guard;
mod ops;

use crate::config::Secret;
use crate::delivery::DeliveryControl;
use crate::pipeline::Pipeline;
use crate::plugin::PluginHost;
use crate::server::respond;
use crate::store::{DeliveryRecord, DeliveryState, EventRecord, EventStatus, Store};

/// The admin listener's request handler: the routes listed in the module docs, behind the
/// [`guard`] checks and the optional bearer token.
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
    /// The listener's own names, for [`guard`].
    names: guard::Names,
}

impl Admin {
    /// An admin over `store` and `plugins`, guarded by `token` (`[admin] token`; `None` leaves
    /// `/api/*` open), listing the names of `sinks`. Metrics, pause/resume, the intake report
    /// and public paths are off until the `with_*` builders add them.
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
            names: guard::Names::default(),
        }
    }

    /// Answers to the names of a listener bound to `bound`, and to `allowed_hosts`
    /// (`[admin] allowed_hosts`). Without it, a tokenless admin refuses every `Host`.
    pub fn with_listener(mut self, bound: std::net::SocketAddr, allowed_hosts: &[String]) -> Admin {
        self.names = guard::Names::new(bound, allowed_hosts);
        self
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

    /// Answers one admin request: runs the [`guard`] and token checks, then routes it; never
    /// fails, every refusal or store error is a JSON error response.
    pub async fn handle<B>(self: Arc<Self>, req: Request<B>) -> Response<Full<Bytes>>
    where
        B: hyper::body::Body<Data = Bytes>,
        B::Error: std::error::Error + Send + Sync + 'static,
    {
        let checked = self
            .names
            .check(req.method(), req.headers(), self.token.is_none());
        if let Err(refusal) = checked {
            return refusal.response();
        }
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
        if let Some(id) = path.strip_prefix("/api/v1/events/") {
            return match self.event(id).await {
                Ok(Lookup::One(body)) => respond::json(StatusCode::OK, &body),
                Ok(Lookup::Ambiguous(body)) => respond::json(StatusCode::CONFLICT, &body),
                Ok(Lookup::None) => {
                    respond::error(StatusCode::NOT_FOUND, "not_found", "no such event")
                }
                Err(e) => store_error(&e),
            };
        }
        let result = if path == "/api/v1/sinks" {
            self.sinks().await
        } else if path == "/api/v1/plugins" {
            Ok(json!({ "plugins": self.plugins.status() }))
        } else if let (true, Some(pipeline)) = (path == "/api/v1/intake", &self.pipeline) {
            Ok(pipeline.intake_report().await)
        } else {
            return respond::error(StatusCode::NOT_FOUND, "not_found", "no such admin endpoint");
        };
        match result {
            Ok(body) => respond::json(StatusCode::OK, &body),
            Err(e) => store_error(&e),
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
        crate::verify::secret_eq(given.as_bytes(), token.expose())
    }

    /// `GET /api/v1/events/{source}/{id}`, or `GET /api/v1/events/{id}` when exactly one
    /// source holds an event with that id. When several do, the answer is 409 naming each
    /// `/api/v1/events/{source}/{id}`, never one of them picked at random.
    async fn event(&self, path: &str) -> Result<Lookup, crate::store::StoreError> {
        let decode = |s: &str| {
            percent_encoding::percent_decode_str(s)
                .decode_utf8_lossy()
                .into_owned()
        };
        if let Some((source, id)) = path.split_once('/') {
            return Ok(
                match self.store.event(&decode(source), &decode(id)).await? {
                    Some((event, deliveries)) => Lookup::One(event_json(&event, &deliveries)),
                    None => Lookup::None,
                },
            );
        }
        let id = decode(path);
        let sources = self
            .pipeline
            .as_ref()
            .map(|p| p.source_names())
            .unwrap_or_default();
        let mut found = Vec::new();
        for source in sources {
            if let Some(hit) = self.store.event(&source, &id).await? {
                found.push((source, hit));
            }
        }
        Ok(match found.len() {
            0 => Lookup::None,
            1 => match found.pop() {
                Some((_, (e, d))) => Lookup::One(event_json(&e, &d)),
                None => Lookup::None,
            },
            n => Lookup::Ambiguous(json!({
                "error": "ambiguous_event_id",
                "message": format!("{n} sources hold an event with id {id:?}; ask for one by source"),
                "candidates": found.iter()
                    .map(|(source, _)| format!("/api/v1/events/{source}/{id}"))
                    .collect::<Vec<_>>(),
            })),
        })
    }

    async fn sinks(&self) -> Result<Value, crate::store::StoreError> {
        let mut out = Vec::new();
        for name in &self.sinks {
            out.push(json!({
                "name": name,
                "pending": self.store.pending_count(name).await?,
                "paused": self.delivery.is_paused(name).await?,
                "circuit_open": self.delivery.is_circuit_open(name),
            }));
        }
        Ok(json!({ "sinks": out }))
    }
}

/// What an event lookup found.
enum Lookup {
    /// The event, as JSON.
    One(Value),
    /// No such event.
    None,
    /// Several sources hold the id: the 409 body naming each.
    Ambiguous(Value),
}

/// 500 for a store that could not be read (logged; the client gets no detail).
fn store_error(e: &crate::store::StoreError) -> Response<Full<Bytes>> {
    tracing::error!(error = %e, "admin query failed");
    respond::error(
        StatusCode::INTERNAL_SERVER_ERROR,
        "store_error",
        "the store could not be read",
    )
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
