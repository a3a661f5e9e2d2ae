//! Pipeline: the stages in order, for one request, without any HTTP.
//!
//! `verify` → `ratelimit` → `dedupe` → `plugin` chain → `store` commit. The server calls
//! [`Pipeline::ingest`] with an [`InboundRequest`]; benchmarks and fuzzers can call it directly.
//! An `Ok` means the event is durable (or was a duplicate of one that is); only then may the
//! sender hear 2xx. Before reading a body the server asks [`Pipeline::check_overload`].

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use std::sync::atomic::Ordering;

use crate::config::{Config, ConfigError, OnPluginError, RespondConfig};
use crate::dedupe::{self, Begin, Claim, Dedupe, DedupeError};
use crate::plugin::{ChainOutcome, Event, PluginBusy, PluginHost, Rejection, Reply, Routed};
use crate::ratelimit::overload::{Overload, Overloaded};
use crate::ratelimit::{self, RateLimitError, RateLimiter};
use crate::server::InboundRequest;
use crate::store::redis::SharedRedis;
use crate::store::{
    AcceptOutcome, EventRecord, EventStatus, NewDelivery, NewEvent, Priority, Store, StoreError,
};
use crate::telemetry;
use crate::verify::{ProxyTrust, Verified, VerifiedRequest, Verifier, VerifyFailure};
use tracing::Instrument as _;

/// A configured source, ready to serve.
#[derive(Debug)]
pub struct Source {
    pub name: String,
    pub path: String,
    pub max_body_bytes: usize,
    verifier: Verifier,
    sinks: Arc<[String]>,
    on_plugin_error: OnPluginError,
    respond: Option<RespondConfig>,
    rate_limit: Option<RateLimiter>,
    dedupe: Option<Dedupe>,
}

impl Source {
    pub fn verifier(&self) -> &Verifier {
        &self.verifier
    }

    /// The source's custom answer to accepted events (`respond = {…}`), if any.
    pub fn respond(&self) -> Option<&RespondConfig> {
        self.respond.as_ref()
    }
}

/// What happened to an ingested request (all of these answer 2xx, except a dead letter
/// under `on_plugin_error = "reject"`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Ingested {
    Accepted {
        id: String,
    },
    Duplicate {
        id: String,
    },
    Dropped {
        id: String,
    },
    DeadLettered {
        id: String,
        answer: OnPluginError,
    },
    /// A provider handshake was answered (by the verifier's preset or a plugin's `respond`);
    /// nothing was stored.
    Responded {
        id: String,
        reply: Reply,
    },
}

/// Why a request was refused.
#[derive(Debug, thiserror::Error)]
pub enum IngestError {
    /// The sender could not be verified (401, or 403 for `allow_ips`).
    #[error(transparent)]
    Verify(#[from] VerifyFailure),
    /// A plugin rejected the event (its own 4xx).
    #[error("rejected by plugin: {} {}", .0.status, .0.code)]
    Rejected(Rejection),
    /// A plugin of the chain had no room for another call (503: the sender should retry).
    /// Nothing is stored and no dedupe mark is held: a capacity limit is not a dead letter.
    #[error(transparent)]
    PluginBusy(#[from] PluginBusy),
    /// The event could not be made durable (503: the sender should retry).
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Over the source's rate limit (429), or the shared limiter is down (503).
    #[error(transparent)]
    RateLimited(#[from] RateLimitError),
    /// A copy is in flight elsewhere, or the shared check is down (503).
    #[error(transparent)]
    Dedupe(#[from] DedupeError),
    /// The store is behind; no new work is taken (503).
    #[error("overloaded: {0}")]
    Overloaded(#[from] Overloaded),
    /// A bug in the host (500); logged, never detailed to the sender.
    #[error("internal error: {0}")]
    Internal(String),
}

pub struct Pipeline {
    sources_by_path: HashMap<String, Arc<Source>>,
    sinks: Arc<HashSet<String>>,
    plugins: Arc<PluginHost>,
    store: Store,
    overload: Overload,
    redis: Option<SharedRedis>,
    dedupe_stats: Arc<dedupe::Stats>,
    rate_stats: Arc<ratelimit::Stats>,
    /// `[telemetry] log_bodies`: request bodies at `trace` level.
    log_bodies: bool,
}

/// Builds a source's verifier from config, resolving its secrets.
pub fn build_verifier(config: &Config, source: &str) -> Result<Verifier, ConfigError> {
    let verify = &config.sources[source].verify;
    let key = format!("sources.{source}.verify.secrets");
    let secrets = verify
        .secrets
        .iter()
        .map(|s| s.resolve(&config.base_dir, &key))
        .collect::<Result<Vec<_>, _>>()?;
    let proxies = ProxyTrust {
        trusted: config.server.trusted_proxies.clone(),
        header: config.server.client_ip_header,
        hops: config.server.trusted_hops,
    };
    Verifier::new(verify, secrets, &proxies).map_err(|reason| ConfigError::Invalid {
        key: format!("sources.{source}.verify"),
        reason,
    })
}

impl Pipeline {
    pub fn new(
        config: &Config,
        plugins: Arc<PluginHost>,
        store: Store,
    ) -> Result<Pipeline, ConfigError> {
        Pipeline::with_redis(config, plugins, store, None)
    }

    /// Like [`Pipeline::new`]; with `redis`, dedupe and rate limits are shared through it.
    pub fn with_redis(
        config: &Config,
        plugins: Arc<PluginHost>,
        store: Store,
        redis: Option<SharedRedis>,
    ) -> Result<Pipeline, ConfigError> {
        let dedupe_stats = Arc::new(dedupe::Stats::default());
        let rate_stats = Arc::new(ratelimit::Stats::default());
        let mut sources_by_path = HashMap::new();
        for (name, source) in &config.sources {
            let built = Source {
                name: name.clone(),
                path: source.path.clone(),
                max_body_bytes: source
                    .max_body_bytes
                    .unwrap_or(config.server.max_body_bytes),
                verifier: build_verifier(config, name)?,
                sinks: source.sinks.clone().into(),
                on_plugin_error: source.on_plugin_error,
                respond: source.respond.clone(),
                rate_limit: source
                    .rate_limit
                    .as_ref()
                    .map(|r| RateLimiter::new(name, r, redis.clone(), rate_stats.clone())),
                dedupe: source.effective_dedupe().map(|d| {
                    Dedupe::new(name, &d, store.clone(), redis.clone(), dedupe_stats.clone())
                }),
            };
            sources_by_path.insert(source.path.clone(), Arc::new(built));
        }
        Ok(Pipeline {
            sources_by_path,
            sinks: Arc::new(config.sinks.keys().cloned().collect()),
            plugins,
            store,
            overload: Overload::new(&config.server.overload),
            redis,
            dedupe_stats,
            rate_stats,
            log_bodies: config.telemetry.log_bodies,
        })
    }

    /// Whether a new request may be read at all (cheap; before the body).
    pub fn check_overload(&self) -> Result<(), IngestError> {
        Ok(self.overload.check(self.store.load())?)
    }

    /// Background upkeep until cancelled: purges expired dedupe marks and forgets idle
    /// client cells of embedded rate limiters.
    pub async fn maintain(self: Arc<Self>) {
        let forget = async {
            let mut tick = tokio::time::interval(ratelimit::GC_INTERVAL);
            loop {
                tick.tick().await;
                for source in self.sources_by_path.values() {
                    if let Some(limiter) = &source.rate_limit {
                        limiter.forget_idle();
                    }
                }
            }
        };
        tokio::join!(dedupe::purge_expired(self.store.clone()), forget);
    }

    /// Intake counters and gauges for the admin API.
    pub fn intake_report(&self) -> serde_json::Value {
        let load = self.store.load();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "rate_limited": n(&self.rate_stats.limited),
            "overload_shed": self.overload.shed(),
            "duplicates": n(&self.dedupe_stats.duplicates),
            "duplicates_in_flight": n(&self.dedupe_stats.in_flight),
            "dedupe_marks": self.store.mark_count().ok(),
            "pending_deliveries": load.pending,
            "commit_latency_ms": load.commit_latency.as_millis() as u64,
            "redis": self.redis.as_ref().map(|r| serde_json::json!({
                "down": r.is_down(),
                "errors": r.errors(),
                "dedupe_degraded": n(&self.dedupe_stats.redis_degraded),
                "rate_limit_degraded": n(&self.rate_stats.redis_degraded),
            })),
        })
    }

    /// Every configured source's name.
    pub fn source_names(&self) -> Vec<String> {
        self.sources_by_path
            .values()
            .map(|s| s.name.clone())
            .collect()
    }

    pub fn source_for_path(&self, path: &str) -> Option<Arc<Source>> {
        self.sources_by_path.get(path).cloned()
    }

    pub fn store(&self) -> &Store {
        &self.store
    }

    /// The source with config name `name`.
    pub fn source_named(&self, name: &str) -> Option<Arc<Source>> {
        self.sources_by_path
            .values()
            .find(|s| s.name == name)
            .cloned()
    }

    /// Runs `source`'s current plugin chain on `event` (or, without plugins, routes it to the
    /// source's sinks). Used by ingest and by replay, which re-runs the current plugins.
    /// [`IngestError::PluginBusy`] when a plugin of the chain has no room for the call.
    pub async fn route(&self, source: &Source, event: &Event) -> Result<ChainOutcome, IngestError> {
        // The chain can change at any time (hot reload, manifests): ask the current set.
        Ok(if self.plugins.plugins().chain(&source.name).is_empty() {
            ChainOutcome::Forward(
                source
                    .sinks
                    .iter()
                    .map(|sink| Routed {
                        sink: sink.clone(),
                        headers: event.headers.clone(),
                        body: event.body.clone(),
                        priority: Priority::Normal,
                    })
                    .collect(),
            )
        } else {
            // Room in every plugin of the chain first, waiting here (not on a blocking thread):
            // a burst beyond the plugins' bounds queues briefly, then is refused with 503.
            let admission = self.plugins.admit(&source.name).await?;
            // Plugin calls are synchronous (bounded by their deadline) and WASI's blocking calls
            // need a thread outside the async workers: run the chain on the blocking pool, so a
            // slow plugin never stalls other requests' I/O.
            let (plugins, sinks, known) = (
                self.plugins.clone(),
                source.sinks.clone(),
                self.sinks.clone(),
            );
            let input = event.clone();
            let span = tracing::Span::current();
            tokio::task::spawn_blocking(move || {
                span.in_scope(|| {
                    plugins.run_chain(&admission, input, &sinks, |s| known.contains(s))
                })
            })
            .await
            .map_err(|e| IngestError::Internal(format!("plugin chain task failed: {e}")))??
        })
    }

    /// The shared Redis connection, when `storage.redis` is configured.
    pub fn redis(&self) -> Option<&SharedRedis> {
        self.redis.as_ref()
    }

    /// Runs one request through verify, plugins and store.
    pub async fn ingest(
        &self,
        source: &Source,
        request: InboundRequest,
    ) -> Result<Ingested, IngestError> {
        let now_ms = request.received_at_ms;
        let verified = match source.verifier.verify(request, now_ms)? {
            Verified::Event(verified) => verified,
            Verified::Challenge(challenge) => {
                tracing::info!(source = %source.name, "answered the provider's endpoint challenge");
                return Ok(Ingested::Responded {
                    id: uuid::Uuid::now_v7().to_string(),
                    reply: Reply {
                        status: challenge.status,
                        headers: vec![("content-type".into(), challenge.content_type.into())],
                        body: challenge.body,
                    },
                });
            }
        };
        if let Some(limiter) = &source.rate_limit {
            // The client behind a trusted proxy, not the proxy: one budget per real sender.
            limiter
                .check(source.verifier.client_ip(verified.request()))
                .await?;
        }
        let id = verified
            .event_id()
            .map(str::to_string)
            .unwrap_or_else(|| uuid::Uuid::now_v7().to_string());
        // From here on every log line (and the plugin chain's) carries the event's id.
        let span = telemetry::event_span(&id, &source.name);
        self.ingest_event(source, verified, id)
            .instrument(span)
            .await
    }

    /// The rest of [`Pipeline::ingest`] once the event has its id: dedupe, plugins, commit.
    async fn ingest_event(
        &self,
        source: &Source,
        verified: VerifiedRequest,
        id: String,
    ) -> Result<Ingested, IngestError> {
        if self.log_bodies {
            tracing::trace!(body = %String::from_utf8_lossy(verified.request().body.as_ref()),
                "request body");
        }
        // Dropping `claim` on any early return below releases a shared claim.
        let claim: Option<Claim> = match &source.dedupe {
            None => None,
            Some(dedupe) => {
                let received_at_ms = verified.request().received_at_ms;
                match dedupe.begin(&verified, &id, received_at_ms).await? {
                    Begin::Unkeyed => None,
                    Begin::Duplicate { id } => return Ok(Ingested::Duplicate { id }),
                    Begin::Proceed(claim) => Some(claim),
                }
            }
        };
        let (request, _) = verified.into_parts();
        let event = Event {
            id: id.clone(),
            source: source.name.clone(),
            received_at_ms: request.received_at_ms,
            method: request.method,
            path: request.path,
            query: request.query,
            headers: request.headers,
            body: request.body.to_vec(),
        };
        let outcome = self.route(source, &event).await?;
        let (status, routed, answer) = match outcome {
            ChainOutcome::Rejected(r) => {
                tracing::info!(source = %source.name, event = %id, status = r.status, code = %r.code,
                    "plugin rejected the event");
                return Err(IngestError::Rejected(r));
            }
            ChainOutcome::Responded(reply) => {
                tracing::info!(source = %source.name, event = %id, status = reply.status,
                    "plugin answered the request directly");
                return Ok(Ingested::Responded { id, reply });
            }
            ChainOutcome::Forward(routed) => (EventStatus::Forwarded, routed, None),
            ChainOutcome::Dropped(reason) => (EventStatus::Dropped { reason }, Vec::new(), None),
            ChainOutcome::Failed { plugin, failure } => {
                let reason = format!("plugin `{plugin}` {failure}");
                tracing::warn!(source = %source.name, event = %id, %reason,
                    "plugin failed; event dead-lettered");
                crate::delivery::count_plugin_dead_letter();
                (
                    EventStatus::DeadLettered { reason },
                    Vec::new(),
                    Some(source.on_plugin_error),
                )
            }
        };
        let dropped = matches!(status, EventStatus::Dropped { .. });
        // Under `reject` the sender hears 500 and will send the event again: the failed copy is
        // kept as a dead letter under an id of its own and holds no dedupe mark, so the retry
        // is processed afresh instead of being answered `duplicate` (and never delivered).
        let (id, claim) = if answer == Some(OnPluginError::Reject) {
            (uuid::Uuid::now_v7().to_string(), None)
        } else {
            (id, claim)
        };
        let new = NewEvent {
            record: EventRecord {
                id: id.clone(),
                source: event.source,
                received_at_ms: event.received_at_ms,
                method: event.method,
                path: event.path,
                query: event.query,
                headers: event.headers,
                body: event.body,
                status,
                deliveries: Vec::new(),
            },
            deliveries: routed
                .into_iter()
                .map(|r| NewDelivery {
                    sink: r.sink,
                    headers: r.headers,
                    body: r.body,
                    priority: r.priority,
                })
                .collect(),
        };
        let mark = claim.as_ref().map(Claim::mark);
        Ok(match self.store.accept_marked(new, mark).await? {
            AcceptOutcome::Duplicate { id } => {
                match claim {
                    Some(claim) => claim.duplicate_of(&id).await,
                    None => {
                        self.dedupe_stats.duplicates.fetch_add(1, Ordering::Relaxed);
                    }
                }
                Ingested::Duplicate { id }
            }
            AcceptOutcome::Stored => {
                if let Some(claim) = claim {
                    claim.stored(&id).await;
                }
                match answer {
                    Some(answer) => Ingested::DeadLettered { id, answer },
                    None if dropped => Ingested::Dropped { id },
                    None => Ingested::Accepted { id },
                }
            }
        })
    }
}
