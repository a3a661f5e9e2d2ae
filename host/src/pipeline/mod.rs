//! Pipeline: the stages in order, for one request, without any HTTP.
//!
//! `verify` → `ratelimit` → `dedupe` → `plugin` chain → `store` commit. The server calls
//! [`Pipeline::ingest`] with an [`InboundRequest`]; benchmarks and fuzzers can call it directly.
//! An `Ok` means the event is durable (or was a duplicate of one that is); only then may the
//! sender hear 2xx. Before reading a body the server asks [`Pipeline::check_overload`].

pub mod replay;

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use std::sync::atomic::Ordering;

use crate::config::{Config, ConfigError, OnPluginError, RespondConfig};
use crate::dedupe::{self, Begin, Claim, Dedupe, DedupeError};
use crate::event::{Event, InboundRequest, Rejection, Reply, Routed};
use crate::plugin::{ChainOutcome, PluginBusy, PluginHost};
use crate::ratelimit::overload::{BodyPermit, Overload, Overloaded};
use crate::ratelimit::{self, RateLimitError, RateLimiter};
use crate::redis::SharedRedis;
use crate::store::{
    AcceptOutcome, EventRecord, EventStatus, NewDelivery, NewEvent, Priority, Store, StoreError,
};
use crate::telemetry;
use crate::verify::{Verified, VerifiedRequest, Verifier, VerifyFailure};
use tracing::Instrument as _;

/// A configured source, ready to serve.
#[derive(Debug)]
pub struct Source {
    /// The source's name (`[sources.NAME]`).
    pub name: String,
    /// The URI path it is served at (its `path`).
    pub path: String,
    /// The largest body accepted, in bytes: its `max_body_bytes`, else
    /// `[server] max_body_bytes`.
    pub max_body_bytes: usize,
    verifier: Verifier,
    sinks: Arc<[String]>,
    on_plugin_error: OnPluginError,
    respond: Option<RespondConfig>,
    rate_limit: Option<RateLimiter>,
    dedupe: Option<Dedupe>,
}

impl Source {
    /// The verifier that authenticates this source's senders.
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
    /// The event was stored with its deliveries queued (200 `accepted`).
    Accepted {
        /// The event's id.
        id: String,
    },
    /// A copy of the event is already stored (200 `duplicate`); nothing new was stored.
    Duplicate {
        /// The id of the stored copy.
        id: String,
    },
    /// A plugin dropped the event: it was stored as dropped, with nothing to deliver
    /// (200 `dropped`).
    Dropped {
        /// The event's id.
        id: String,
    },
    /// A plugin failed: the event was stored as a dead letter, replayable (202 under
    /// `on_plugin_error = "accept"`, 500 under `"reject"`).
    DeadLettered {
        /// The dead letter's id; under `reject` a fresh one, so the sender's retry is no
        /// duplicate.
        id: String,
        /// The source's `on_plugin_error`, which picks the answer.
        answer: OnPluginError,
    },
    /// A provider handshake was answered (by the verifier's preset or a plugin's `respond`);
    /// nothing was stored.
    Responded {
        /// The event's id (a fresh one for a preset's handshake); nothing is stored under it.
        id: String,
        /// The answer to send, as is.
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

/// The intake for every configured source: finds a request's source by path and runs the
/// stages on it, up to the store commit.
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

impl Pipeline {
    /// Builds the sources of `config` without Redis: dedupe and rate limits are this
    /// process's own.
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
                verifier: Verifier::for_source(config, name)?,
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

    /// Reserves a request body's bytes of `[server] overload.max_body_bytes_in_flight` before it
    /// is read: its `declared` length, or `limit` (the source's `max_body_bytes`) without one.
    /// Hold the permit until the request is answered.
    pub fn reserve_body(
        &self,
        declared: Option<u64>,
        limit: usize,
    ) -> Result<BodyPermit, IngestError> {
        Ok(self
            .overload
            .reserve_body(declared.unwrap_or(limit as u64))?)
    }

    /// Background upkeep of the intake stages until cancelled: forgets idle client cells of
    /// embedded rate limiters. (The store's upkeep is [`crate::store::upkeep`].)
    pub async fn maintain(self: Arc<Self>) {
        let mut tick = tokio::time::interval(ratelimit::GC_INTERVAL);
        loop {
            tick.tick().await;
            for source in self.sources_by_path.values() {
                if let Some(limiter) = &source.rate_limit {
                    limiter.forget_idle();
                }
            }
        }
    }

    /// Intake counters and gauges for the admin API.
    pub async fn intake_report(&self) -> serde_json::Value {
        let load = self.store.load();
        let n = |a: &std::sync::atomic::AtomicU64| a.load(Ordering::Relaxed);
        serde_json::json!({
            "rate_limited": n(&self.rate_stats.limited),
            "overload_shed": self.overload.shed(),
            "duplicates": n(&self.dedupe_stats.duplicates),
            "duplicates_in_flight": n(&self.dedupe_stats.in_flight),
            "dedupe_marks": self.store.mark_count().await.ok(),
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

    /// The source served at URI path `path` (an exact match), if any.
    pub fn source_for_path(&self, path: &str) -> Option<Arc<Source>> {
        self.sources_by_path.get(path).cloned()
    }

    /// The store events are committed to.
    pub fn store(&self) -> &Store {
        &self.store
    }

    /// Whether a sink called `name` is configured.
    pub fn has_sink(&self, name: &str) -> bool {
        self.sinks.contains(name)
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
            // Room in every plugin of the chain first: a burst beyond the plugins' bounds queues
            // briefly, then is refused with 503.
            let admission = self.plugins.admit(&source.name).await?;
            // Calls run on this task: guest code yields at each epoch tick and traps at its
            // deadline, so a slow plugin shares this worker instead of holding it.
            self.plugins
                .run_chain(&admission, event.clone(), &source.sinks, |s| {
                    self.sinks.contains(s)
                })
                .await?
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
        let span = tracing::debug_span!("verify", hookwall.verdict = tracing::field::Empty);
        let verdict = span.in_scope(|| source.verifier.verify(request, now_ms));
        span.record(
            "hookwall.verdict",
            match &verdict {
                Ok(Verified::Event(_)) => "verified",
                Ok(Verified::Challenge(_)) => "challenge",
                Err(_) => "refused",
            },
        );
        let verified = match verdict? {
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
                .instrument(tracing::debug_span!("ratelimit"))
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
        let claim = match self
            .claim(source, &verified, &id)
            .instrument(tracing::debug_span!("dedupe"))
            .await?
        {
            Ok(claim) => claim,
            Err(duplicate) => return Ok(duplicate),
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
        let mut decision = match decide(source, &id, self.route(source, &event).await?) {
            Ok(decision) => decision,
            Err(early) => return early,
        };
        // With traces on, each delivery keeps this event's span as its `traceparent`: the
        // parent of its attempts, whenever and wherever they run.
        let here = tracing::Span::current();
        for routed in &mut decision.routed {
            telemetry::trace::stamp(&here, &mut routed.headers);
        }
        // Under `reject` the sender hears 500 and will send the event again: the failed copy is
        // kept as a dead letter under an id of its own and holds no dedupe mark, so the retry
        // is processed afresh instead of being answered `duplicate` (and never delivered).
        let (id, claim) = if decision.answer == Some(OnPluginError::Reject) {
            (uuid::Uuid::now_v7().to_string(), None)
        } else {
            (id, claim)
        };
        self.commit(
            new_event(&id, event, decision.status, decision.routed),
            claim,
            decision.answer,
        )
        .instrument(tracing::debug_span!("commit"))
        .await
    }

    /// The dedupe step: `Ok(claim)` to go on (with the mark to commit, if the request has a
    /// key), or `Err(answer)` when it is a copy of a stored event.
    async fn claim(
        &self,
        source: &Source,
        verified: &VerifiedRequest,
        id: &str,
    ) -> Result<Result<Option<Claim>, Ingested>, IngestError> {
        let Some(dedupe) = &source.dedupe else {
            return Ok(Ok(None));
        };
        let received_at_ms = verified.request().received_at_ms;
        Ok(match dedupe.begin(verified, id, received_at_ms).await? {
            Begin::Unkeyed => Ok(None),
            Begin::Duplicate { id } => Err(Ingested::Duplicate { id }),
            Begin::Proceed(claim) => Ok(Some(claim)),
        })
    }

    /// Commits `new` with `claim`'s mark; the answer says what happened.
    async fn commit(
        &self,
        new: NewEvent,
        claim: Option<Claim>,
        answer: Option<OnPluginError>,
    ) -> Result<Ingested, IngestError> {
        let id = new.record.id.clone();
        let dropped = matches!(new.record.status, EventStatus::Dropped { .. });
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

/// What the plugins decided for an event that is to be stored.
struct Decision {
    status: EventStatus,
    routed: Vec<Routed>,
    /// The source's `on_plugin_error` when a plugin failed.
    answer: Option<OnPluginError>,
}

/// Turns the chain's outcome into what to store, or the early answer when nothing is stored
/// (a plugin's refusal or its own reply).
fn decide(
    source: &Source,
    id: &str,
    outcome: ChainOutcome,
) -> Result<Decision, Result<Ingested, IngestError>> {
    let (status, routed, answer) = match outcome {
        ChainOutcome::Rejected(r) => {
            tracing::info!(source = %source.name, event = %id, status = r.status, code = %r.code,
                "plugin rejected the event");
            return Err(Err(IngestError::Rejected(r)));
        }
        ChainOutcome::Responded(reply) => {
            tracing::info!(source = %source.name, event = %id, status = reply.status,
                "plugin answered the request directly");
            let id = id.to_string();
            return Err(Ok(Ingested::Responded { id, reply }));
        }
        ChainOutcome::Forward(routed) => (EventStatus::Forwarded, routed, None),
        ChainOutcome::Dropped(reason) => (EventStatus::Dropped { reason }, Vec::new(), None),
        ChainOutcome::Failed { plugin, failure } => {
            let reason = format!("plugin `{plugin}` {failure}");
            tracing::warn!(source = %source.name, event = %id, %reason,
                "plugin failed; event dead-lettered");
            crate::delivery::count_plugin_dead_letter();
            let status = EventStatus::DeadLettered { reason };
            (status, Vec::new(), Some(source.on_plugin_error))
        }
    };
    Ok(Decision {
        status,
        routed,
        answer,
    })
}

/// The event to commit: the request as received under `id`, and its routed deliveries.
fn new_event(id: &str, event: Event, status: EventStatus, routed: Vec<Routed>) -> NewEvent {
    NewEvent {
        record: EventRecord {
            id: id.to_string(),
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
    }
}
