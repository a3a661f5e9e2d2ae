//! Dedupe: recognise copies of an event so each is processed once.
//!
//! Each source names what makes two requests "the same event" (`dedupe.key`: the verify
//! scheme's event id, a header, a JSON pointer into the body, or the body's SHA-256). The key's
//! mark lives `dedupe.ttl`; a copy within it is answered `duplicate` with the first event's id.
//!
//! The authority is the store: the mark is committed in the same transaction as the event
//! ([`crate::store::marks`]), and the single writer applies accepts in order, so of N concurrent
//! copies exactly one is stored. [`Dedupe::begin`] adds two things in front of that:
//!
//! - a cheap read of the local mark before the plugins run, so a duplicate costs no plugin call;
//! - with `[storage] redis`, a shared two-phase claim so replicas agree. Before the plugins run,
//!   `claim` sets `KEY = pending:…` only if the key is absent (with a short [`CLAIM_TTL`]); after
//!   the local commit, [`Claim::stored`] sets `KEY = done:ID` for the full TTL; if the event is
//!   not stored, the claim is deleted (only if it is still ours). A replica that finds `done`
//!   answers `duplicate`; one that finds `pending` waits up to [`CLAIM_WAIT`] for the outcome,
//!   then answers 503 with `Retry-After`. A crash between claim and commit leaves only a pending
//!   claim that expires, so the sender's retry is processed, never mistaken for a duplicate.
//!
//! When Redis does not answer, `on_redis_error` decides: `fail_open` (default) goes on with the
//! local mark only (at worst one more delivery on another replica: at-least-once, nothing
//! lost); `fail_closed` answers 503.

#[cfg(test)]
mod tests;

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::Script;
use sha2::{Digest, Sha256};

use crate::config::{DedupeConfig, DedupeKey, OnRedisError};
use crate::redis::{RedisError, SharedRedis};
use crate::store::{DedupeMark, Store, StoreError};
use crate::verify::VerifiedRequest;

/// How long a shared claim holds while its replica runs the plugins and commits. A replica that
/// crashed mid-way blocks retries of that event (503) at most this long.
pub const CLAIM_TTL: Duration = Duration::from_secs(30);
/// How long a copy waits for another replica's pending claim to resolve before answering 503.
pub const CLAIM_WAIT: Duration = Duration::from_secs(1);
/// Poll interval while waiting on a pending claim.
const CLAIM_POLL: Duration = Duration::from_millis(20);
/// `Retry-After` when a copy is still being processed elsewhere, or Redis is down under
/// `fail_closed`.
pub const RETRY_AFTER: Duration = Duration::from_secs(1);
/// Keys longer than this are stored as their SHA-256, bounding the size of a mark.
const MAX_KEY_BYTES: usize = 200;

/// Returns the existing value, or sets `KEYS[1] = ARGV[1]` with a `ARGV[2]` ms TTL and returns
/// nil. One script so "absent → claim" cannot interleave with another replica's claim.
const CLAIM_SCRIPT: &str = r"
local v = redis.call('GET', KEYS[1])
if v then return v end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return false
";
/// Deletes `KEYS[1]` only if it still holds our claim `ARGV[1]`.
const RELEASE_SCRIPT: &str = r"
if redis.call('GET', KEYS[1]) == ARGV[1] then return redis.call('DEL', KEYS[1]) end
return 0
";
/// Records the outcome: `KEYS[1] = ARGV[1]` for `ARGV[2]` ms.
const DONE_SCRIPT: &str = r"
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return 1
";

/// Why a request could not be checked for duplicates.
#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    /// Another replica holds a pending claim for this key (503 with `Retry-After`).
    #[error("a copy of this event is being processed elsewhere")]
    InFlight,
    /// Redis did not answer and the policy is `fail_closed` (503 with `Retry-After`).
    #[error("the shared dedupe check is unavailable: {0}")]
    Unavailable(RedisError),
    /// The local mark could not be read (503, like any store failure).
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// Counters, shared by every source (shown by the admin API).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered `duplicate`.
    pub duplicates: AtomicU64,
    /// Requests answered 503 because a copy was pending elsewhere.
    pub in_flight: AtomicU64,
    /// Checks that ran without Redis (`fail_open`) or were refused (`fail_closed`).
    pub redis_degraded: AtomicU64,
}

/// The first step's verdict.
#[derive(Debug)]
pub enum Begin {
    /// The request carries no key (e.g. the header is absent): process it without a mark.
    Unkeyed,
    /// A copy of the event with this id was accepted within the TTL.
    Duplicate {
        /// The event id the earlier copy was accepted under.
        id: String,
    },
    /// Go on; commit the claim's mark with the event.
    Proceed(Claim),
}

/// One source's dedupe settings and backends.
pub struct Dedupe {
    source: String,
    key: DedupeKey,
    ttl: Duration,
    on_redis_error: OnRedisError,
    store: Store,
    redis: Option<SharedRedis>,
    stats: Arc<Stats>,
    scripts: Arc<Scripts>,
}

struct Scripts {
    claim: Script,
    release: Script,
    done: Script,
}

impl std::fmt::Debug for Dedupe {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Dedupe")
            .field("source", &self.source)
            .field("key", &self.key)
            .field("ttl", &self.ttl)
            .field("shared", &self.redis.is_some())
            .finish()
    }
}

impl Dedupe {
    /// `config` must be an effective config (its key set and not `none`).
    pub fn new(
        source: &str,
        config: &DedupeConfig,
        store: Store,
        redis: Option<SharedRedis>,
        stats: Arc<Stats>,
    ) -> Dedupe {
        Dedupe {
            source: source.to_string(),
            key: config.key.clone().unwrap_or(DedupeKey::Scheme),
            ttl: config.ttl,
            on_redis_error: config.on_redis_error,
            store,
            redis,
            stats,
            scripts: Arc::new(Scripts {
                claim: Script::new(CLAIM_SCRIPT),
                release: Script::new(RELEASE_SCRIPT),
                done: Script::new(DONE_SCRIPT),
            }),
        }
    }

    /// The request's dedupe key, if it has one.
    pub fn key_for(&self, verified: &VerifiedRequest) -> Option<String> {
        let request = verified.request();
        let raw = match &self.key {
            DedupeKey::None => return None,
            DedupeKey::Scheme => verified.event_id()?.to_string(),
            DedupeKey::Header(name) => request.header(name)?.trim().to_string(),
            DedupeKey::Json(pointer) => {
                let body: serde_json::Value = serde_json::from_slice(&request.body).ok()?;
                match body.pointer(pointer)? {
                    serde_json::Value::Null => return None,
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                }
            }
            DedupeKey::BodySha256 => hex::encode(Sha256::digest(&request.body)),
        };
        if raw.is_empty() {
            return None;
        }
        Some(if raw.len() > MAX_KEY_BYTES {
            format!("sha256:{}", hex::encode(Sha256::digest(raw.as_bytes())))
        } else {
            raw
        })
    }

    /// Checks the request before its plugins run. `candidate_id` is the id the event gets if
    /// it is new; `received_at_ms` is the time marks are judged at.
    pub async fn begin(
        &self,
        verified: &VerifiedRequest,
        candidate_id: &str,
        received_at_ms: u64,
    ) -> Result<Begin, DedupeError> {
        let Some(key) = self.key_for(verified) else {
            tracing::debug!(source = %self.source, key = ?self.key,
                "request has no dedupe key; processed without a mark");
            return Ok(Begin::Unkeyed);
        };
        if let Some(id) = self
            .store
            .marked(&self.source, &key, received_at_ms)
            .await?
        {
            return Ok(self.duplicate(id));
        }
        let mark = DedupeMark {
            source: self.source.clone(),
            expires_ms: received_at_ms.saturating_add(self.ttl.as_millis() as u64),
            key,
        };
        let shared = match &self.redis {
            None => None,
            Some(redis) => match self.claim(redis, &mark.key, candidate_id).await {
                Ok(Claimed::Ours(claim)) => Some(claim),
                Ok(Claimed::Done(id)) => return Ok(self.duplicate(id)),
                Ok(Claimed::Pending) => {
                    self.stats.in_flight.fetch_add(1, Ordering::Relaxed);
                    return Err(DedupeError::InFlight);
                }
                Err(e) => {
                    self.stats.redis_degraded.fetch_add(1, Ordering::Relaxed);
                    tracing::debug!(source = %self.source, error = %e, policy = ?self.on_redis_error,
                        "shared dedupe check failed");
                    match self.on_redis_error {
                        OnRedisError::FailOpen => None,
                        OnRedisError::FailClosed => return Err(DedupeError::Unavailable(e)),
                    }
                }
            },
        };
        Ok(Begin::Proceed(Claim {
            mark,
            shared,
            ttl: self.ttl,
            stats: self.stats.clone(),
            source: self.source.clone(),
        }))
    }

    fn duplicate(&self, id: String) -> Begin {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        Begin::Duplicate { id }
    }

    /// Claims `key` in Redis, waiting up to [`CLAIM_WAIT`] while another replica's claim is
    /// pending.
    async fn claim(
        &self,
        redis: &SharedRedis,
        key: &str,
        candidate_id: &str,
    ) -> Result<Claimed, RedisError> {
        let redis_key = redis.key("dedupe", &[&self.source, key]);
        // The token makes our claim ours even if another replica claims the same event id.
        let token = format!("pending:{:016x}:{candidate_id}", rand::random::<u64>());
        let deadline = tokio::time::Instant::now() + CLAIM_WAIT;
        loop {
            let existing: Option<String> = redis
                .invoke(
                    self.scripts
                        .claim
                        .key(&redis_key)
                        .arg(&token)
                        .arg(CLAIM_TTL.as_millis() as u64),
                )
                .await?;
            match existing {
                None => {
                    return Ok(Claimed::Ours(SharedClaim {
                        redis: redis.clone(),
                        key: redis_key,
                        token,
                        scripts: self.scripts.clone(),
                    }));
                }
                Some(value) => {
                    if let Some(id) = value.strip_prefix("done:") {
                        return Ok(Claimed::Done(id.to_string()));
                    }
                }
            }
            if tokio::time::Instant::now() + CLAIM_POLL > deadline {
                return Ok(Claimed::Pending);
            }
            tokio::time::sleep(CLAIM_POLL).await;
        }
    }
}

enum Claimed {
    Ours(SharedClaim),
    Done(String),
    Pending,
}

/// A request that may become the accepted copy: its mark, and its shared claim if any. Report
/// the store's answer with [`Claim::stored`] or [`Claim::duplicate_of`]; dropping it otherwise
/// (an error, a rejection, a cancelled request) releases the shared claim.
#[derive(Debug)]
pub struct Claim {
    mark: DedupeMark,
    shared: Option<SharedClaim>,
    ttl: Duration,
    stats: Arc<Stats>,
    source: String,
}

struct SharedClaim {
    redis: SharedRedis,
    key: String,
    token: String,
    scripts: Arc<Scripts>,
}

impl std::fmt::Debug for SharedClaim {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedClaim")
            .field("key", &self.key)
            .finish()
    }
}

impl Claim {
    /// The mark to commit with the event.
    pub fn mark(&self) -> DedupeMark {
        self.mark.clone()
    }

    /// The event was stored as `id`: publish `done` to the other replicas.
    pub async fn stored(mut self, id: &str) {
        self.publish(id).await;
    }

    /// The store found a copy already (as `id`): count it, and make sure Redis knows too (it
    /// may have lost the key, e.g. after a Redis restart).
    pub async fn duplicate_of(mut self, id: &str) {
        self.stats.duplicates.fetch_add(1, Ordering::Relaxed);
        self.publish(id).await;
    }

    async fn publish(&mut self, id: &str) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        let done = format!("done:{id}");
        let result: Result<i64, _> = shared
            .redis
            .invoke(
                shared
                    .scripts
                    .done
                    .key(&shared.key)
                    .arg(&done)
                    .arg(self.ttl.as_millis() as u64),
            )
            .await;
        if let Err(e) = result {
            // The claim expires after CLAIM_TTL; until then copies get 503, after it this
            // replica's local mark still catches copies sent here.
            self.stats.redis_degraded.fetch_add(1, Ordering::Relaxed);
            tracing::warn!(source = %self.source, event = %id, error = %e,
                "could not publish the dedupe mark to Redis");
        }
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        let Some(shared) = self.shared.take() else {
            return;
        };
        // Not stored: let the next copy (the sender's retry) claim at once instead of waiting
        // out CLAIM_TTL. Spawned, since Drop cannot await; a runtime is always present here.
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                let result: Result<i64, _> = shared
                    .redis
                    .invoke(shared.scripts.release.key(&shared.key).arg(&shared.token))
                    .await;
                if let Err(e) = result {
                    tracing::debug!(error = %e, "could not release a dedupe claim; it expires");
                }
            });
        }
    }
}
