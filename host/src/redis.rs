//! The Redis connection that replicas share dedupe claims, rate limits and the plugins'
//! key-value state through (`[storage] redis = "redis://…"`).
//!
//! One multiplexed connection per process, behind the `redis` crate's `ConnectionManager`, which
//! reconnects after a failure. Every call is bounded by [`OPERATION_TIMEOUT`] and the reconnect
//! loop is kept short, so while Redis is down a check fails within a second and its
//! `on_redis_error` policy decides; the next call after Redis returns reconnects.
//!
//! The URL may carry a password: it is a config secret and never printed; logs and errors name
//! only `host:port`. State changes (Redis lost, Redis back) are logged once each, not per request.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use ::redis::aio::{ConnectionManager, ConnectionManagerConfig};
use ::redis::{Client, ConnectionAddr, FromRedisValue, ScriptInvocation};

use crate::config::Secret;

/// How long opening a TCP connection to Redis may take.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(500);
/// How long one command may wait for its answer on an open connection.
const RESPONSE_TIMEOUT: Duration = Duration::from_millis(500);
/// Upper bound for one call, reconnect included: what a request pays while Redis is down.
pub const OPERATION_TIMEOUT: Duration = Duration::from_secs(1);
/// Reconnect attempts per outage detection; kept low so calls fail fast and the next call tries
/// again, instead of every request queueing behind a long backoff.
const RECONNECT_RETRIES: usize = 1;
/// How long the start-up check waits for Redis before giving up.
const STARTUP_TIMEOUT: Duration = Duration::from_secs(5);

/// Why a Redis call failed. Never contains the URL (it may carry a password).
#[derive(Debug, Clone, thiserror::Error)]
pub enum RedisError {
    /// `storage.redis` does not parse as a Redis URL.
    #[error(
        "`storage.redis` is not a valid Redis URL (expected redis://[:PASSWORD@]HOST:PORT[/DB])"
    )]
    Url,
    /// Redis could not be reached at start-up.
    #[error("cannot reach Redis at {addr} (`storage.redis`): {reason}")]
    Unreachable {
        /// Where it was tried: `HOST:PORT` or a socket path, never the password.
        addr: String,
        /// Why the connection or its first command failed.
        reason: String,
    },
    /// A command failed (connection lost, server error).
    #[error("Redis command failed: {0}")]
    Command(String),
    /// No answer within [`OPERATION_TIMEOUT`].
    #[error("Redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Timeouts and reconnect policy for a Redis connection that must fail fast (shared state,
/// and the `redis` sink).
pub(crate) fn connection_config() -> ConnectionManagerConfig {
    ConnectionManagerConfig::new()
        .set_connection_timeout(Some(CONNECT_TIMEOUT))
        .set_response_timeout(Some(RESPONSE_TIMEOUT))
        .set_number_of_retries(RECONNECT_RETRIES)
        .set_max_delay(Duration::from_millis(200))
}

/// A cheap, cloneable handle to the shared Redis.
#[derive(Clone)]
pub struct SharedRedis {
    conn: ConnectionManager,
    prefix: Arc<str>,
    addr: Arc<str>,
    health: Arc<Health>,
}

#[derive(Default)]
struct Health {
    down: AtomicBool,
    errors: AtomicU64,
}

impl std::fmt::Debug for SharedRedis {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SharedRedis")
            .field("addr", &self.addr)
            .field("prefix", &self.prefix)
            .finish()
    }
}

impl SharedRedis {
    /// Connects and checks that Redis answers; a clear error if it does not.
    pub async fn connect(url: &Secret, prefix: &str) -> Result<SharedRedis, RedisError> {
        let url = std::str::from_utf8(url.expose()).map_err(|_| RedisError::Url)?;
        let client = Client::open(url).map_err(|_| RedisError::Url)?;
        let addr = match client.get_connection_info().addr() {
            ConnectionAddr::Tcp(host, port) => format!("{host}:{port}"),
            ConnectionAddr::TcpTls { host, port, .. } => format!("{host}:{port} (TLS)"),
            ConnectionAddr::Unix(path) => path.display().to_string(),
            _ => "the configured address".to_string(),
        };
        let config = connection_config();
        let unreachable = |reason: String| RedisError::Unreachable {
            addr: addr.clone(),
            reason,
        };
        let connect = async {
            let mut conn = ConnectionManager::new_with_config(client, config)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _: String = ::redis::cmd("PING")
                .query_async(&mut conn)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            Ok(conn)
        };
        let conn = tokio::time::timeout(STARTUP_TIMEOUT, connect)
            .await
            .map_err(|_| unreachable(format!("no answer within {STARTUP_TIMEOUT:?}")))??;
        Ok(SharedRedis {
            conn,
            prefix: prefix.into(),
            addr: addr.into(),
            health: Arc::default(),
        })
    }

    /// `PREFIX:kind:part:part…`. Only the last part may contain `:` without ambiguity, so
    /// callers put free-form text (a dedupe key, an address) last.
    pub fn key(&self, kind: &str, parts: &[&str]) -> String {
        let mut key = format!("{}:{kind}", self.prefix);
        for p in parts {
            key.push(':');
            key.push_str(p);
        }
        key
    }

    /// Runs a Lua script (EVALSHA, loading it on `NOSCRIPT`), bounded by [`OPERATION_TIMEOUT`].
    pub async fn invoke<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
    ) -> Result<T, RedisError> {
        self.invoke_within(invocation, OPERATION_TIMEOUT).await
    }

    /// [`Self::invoke`] bounded by `limit` when that is shorter than [`OPERATION_TIMEOUT`]
    /// (a caller with its own deadline, like a plugin call).
    pub async fn invoke_within<T: FromRedisValue>(
        &self,
        invocation: &ScriptInvocation<'_>,
        limit: Duration,
    ) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.bounded(limit, invocation.invoke_async(&mut conn))
            .await
    }

    /// Runs one command, bounded by `limit` (at most [`OPERATION_TIMEOUT`]).
    pub async fn query_within<T: FromRedisValue>(
        &self,
        cmd: &::redis::Cmd,
        limit: Duration,
    ) -> Result<T, RedisError> {
        let mut conn = self.conn.clone();
        self.bounded(limit, cmd.query_async(&mut conn)).await
    }

    /// Awaits `call` for at most `limit` (capped at [`OPERATION_TIMEOUT`]) and records the
    /// outcome for the health state.
    async fn bounded<T>(
        &self,
        limit: Duration,
        call: impl Future<Output = ::redis::RedisResult<T>>,
    ) -> Result<T, RedisError> {
        let limit = limit.min(OPERATION_TIMEOUT);
        let result = match tokio::time::timeout(limit, call).await {
            Ok(answer) => answer.map_err(|e| RedisError::Command(e.to_string())),
            // A caller's own short budget running out says nothing about Redis' health.
            Err(_) if limit < OPERATION_TIMEOUT => return Err(RedisError::Timeout(limit)),
            Err(_) => Err(RedisError::Timeout(limit)),
        };
        self.observe(&result);
        result
    }

    /// Asks Redis to answer (`PING`), bounded by [`OPERATION_TIMEOUT`]; for readiness checks.
    pub async fn ping(&self) -> Result<(), RedisError> {
        let mut conn = self.conn.clone();
        let result = tokio::time::timeout(
            OPERATION_TIMEOUT,
            ::redis::cmd("PING").query_async::<String>(&mut conn),
        )
        .await
        .map_err(|_| RedisError::Timeout(OPERATION_TIMEOUT))
        .and_then(|r| {
            r.map(|_| ())
                .map_err(|e| RedisError::Command(e.to_string()))
        });
        self.observe(&result);
        result
    }

    /// Redis calls that failed since start.
    pub fn errors(&self) -> u64 {
        self.health.errors.load(Ordering::Relaxed)
    }

    /// Whether the last call failed.
    pub fn is_down(&self) -> bool {
        self.health.down.load(Ordering::Relaxed)
    }

    /// Logs the transitions between "answering" and "not answering", once each.
    fn observe<T>(&self, result: &Result<T, RedisError>) {
        match result {
            Ok(_) => {
                if self.health.down.swap(false, Ordering::Relaxed) {
                    tracing::info!(addr = %self.addr, "Redis answers again; shared checks resumed");
                }
            }
            Err(e) => {
                self.health.errors.fetch_add(1, Ordering::Relaxed);
                if !self.health.down.swap(true, Ordering::Relaxed) {
                    tracing::warn!(addr = %self.addr, error = %e,
                        "Redis is not answering; checks follow their on_redis_error policy");
                }
            }
        }
    }
}
