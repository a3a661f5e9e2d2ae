//! Rate limiting: protect the app (and the store) from a flooding sender.
//!
//! Per source, `rate_limit = { rate = "100/s", burst = 200, by = "source" | "client_ip" }`
//! with GCRA (the generic cell rate algorithm: one timestamp per key, no counters to reset, a
//! smooth `rate` with up to `burst` requests at once). A request over the limit gets 429 with
//! `Retry-After` saying when the next one would pass.
//!
//! It runs after `verify`, so an unauthenticated flood cannot spend a tenant's budget. Two
//! backends:
//! - embedded: `governor`, in memory, per process. With `by = "client_ip"` each address has
//!   its own cell; [`RateLimiter::forget_idle`] (run every [`GC_INTERVAL`]) drops addresses whose
//!   state is back to "fresh", so memory follows the number of recently active senders.
//! - Redis (`[storage] redis`): the same GCRA in one Lua script ([`GCRA_SCRIPT`]), atomic on the
//!   server and timed by the server's clock, so every replica spends one shared budget. Keys
//!   expire as soon as their state is fresh again. If Redis does not answer, `on_redis_error`
//!   decides: `fail_open` (default) lets the request through, `fail_closed` answers 503.
//!
//! [`overload`] sheds load before the body is read when the store falls behind.

pub mod overload;
#[cfg(test)]
mod tests;

use std::net::IpAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use ::redis::Script;
use governor::clock::{Clock, DefaultClock};
use governor::middleware::NoOpMiddleware;
use governor::state::keyed::DashMapStateStore;
use governor::{Quota, RateLimiter as Governor};

use crate::config::{LimitBy, OnRedisError, RateLimitConfig};
use crate::redis::{RedisError, SharedRedis};

/// How often idle client addresses are dropped from embedded `client_ip` limiters.
pub const GC_INTERVAL: Duration = Duration::from_secs(10);
/// `Retry-After` when Redis is down under `fail_closed`.
pub const UNAVAILABLE_RETRY_AFTER: Duration = Duration::from_secs(1);

/// GCRA over the server's clock (`TIME`, µs). `KEYS[1]` holds the theoretical arrival time
/// (TAT); `ARGV[1]` = emission interval µs, `ARGV[2]` = burst. Returns 0 when the request
/// passes, else the µs until it would.
pub const GCRA_SCRIPT: &str = r"
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000000 + tonumber(t[2])
local interval = tonumber(ARGV[1])
local tolerance = interval * tonumber(ARGV[2])
local tat = tonumber(redis.call('GET', KEYS[1]) or now)
if tat < now then tat = now end
local new_tat = tat + interval
local allow_at = new_tat - tolerance
if allow_at > now then return allow_at - now end
redis.call('SET', KEYS[1], string.format('%.0f', new_tat), 'PX', math.ceil((new_tat - now) / 1000) + 1)
return 0
";

/// Why a request may not pass.
#[derive(Debug, thiserror::Error)]
pub enum RateLimitError {
    /// Over the limit: 429, retry after `retry_after`.
    #[error("rate limit exceeded; retry in {retry_after:?}")]
    Limited {
        /// How long until the budget admits another request.
        retry_after: Duration,
    },
    /// Redis did not answer and the policy is `fail_closed` (503).
    #[error("the shared rate limit is unavailable: {0}")]
    Unavailable(RedisError),
}

/// Counters, shared by every source (shown by the admin API).
#[derive(Debug, Default)]
pub struct Stats {
    /// Requests answered 429.
    pub limited: AtomicU64,
    /// Checks that ran without Redis (`fail_open`) or were refused (`fail_closed`).
    pub redis_degraded: AtomicU64,
}

/// Whose cell a request spends.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
enum Key {
    Source,
    Client(IpAddr),
}

impl Key {
    fn for_request(by: LimitBy, client: IpAddr) -> Key {
        match by {
            LimitBy::Source => Key::Source,
            LimitBy::ClientIp => Key::Client(client_prefix(client)),
        }
    }
}

/// IPv6 senders usually own a whole /64: keying by the full address would let one sender
/// mint unlimited budgets (and grow the key set without bound).
fn client_prefix(ip: IpAddr) -> IpAddr {
    match ip {
        IpAddr::V4(v4) => IpAddr::V4(v4),
        IpAddr::V6(v6) => match v6.to_ipv4_mapped() {
            Some(v4) => IpAddr::V4(v4),
            None => {
                let mut segments = v6.segments();
                segments[4..].fill(0);
                IpAddr::V6(segments.into())
            }
        },
    }
}

/// One source's limiter.
pub struct RateLimiter<C: Clock = DefaultClock> {
    source: String,
    by: LimitBy,
    backend: Backend<C>,
    stats: Arc<Stats>,
}

enum Backend<C: Clock> {
    Local {
        cells: Governor<Key, DashMapStateStore<Key>, C, NoOpMiddleware<C::Instant>>,
    },
    Shared {
        redis: SharedRedis,
        script: Script,
        interval_us: u64,
        burst: u32,
        on_error: OnRedisError,
    },
}

impl<C: Clock> std::fmt::Debug for RateLimiter<C> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RateLimiter")
            .field("source", &self.source)
            .field("by", &self.by)
            .field("shared", &matches!(self.backend, Backend::Shared { .. }))
            .finish()
    }
}

fn quota(config: &RateLimitConfig) -> Quota {
    let burst = std::num::NonZeroU32::new(config.burst()).unwrap_or(std::num::NonZeroU32::MIN);
    // A rate of at most 1/h with burst >= 1 always gives a positive period.
    Quota::with_period(config.rate.interval())
        .unwrap_or_else(|| Quota::per_hour(std::num::NonZeroU32::MIN))
        .allow_burst(burst)
}

impl RateLimiter<DefaultClock> {
    /// A limiter for `source`: shared through `redis` when given, else in memory.
    pub fn new(
        source: &str,
        config: &RateLimitConfig,
        redis: Option<SharedRedis>,
        stats: Arc<Stats>,
    ) -> Self {
        match redis {
            Some(redis) => RateLimiter {
                source: source.to_string(),
                by: config.by,
                backend: Backend::Shared {
                    redis,
                    script: Script::new(GCRA_SCRIPT),
                    interval_us: (config.rate.interval().as_micros() as u64).max(1),
                    burst: config.burst(),
                    on_error: config.on_redis_error,
                },
                stats,
            },
            None => RateLimiter::local_with_clock(source, config, DefaultClock::default(), stats),
        }
    }
}

impl<C: Clock> RateLimiter<C> {
    /// An in-memory limiter on `clock` (tests pass governor's `FakeRelativeClock`).
    pub fn local_with_clock(
        source: &str,
        config: &RateLimitConfig,
        clock: C,
        stats: Arc<Stats>,
    ) -> Self {
        RateLimiter {
            source: source.to_string(),
            by: config.by,
            backend: Backend::Local {
                cells: Governor::dashmap_with_clock(quota(config), clock),
            },
            stats,
        }
    }

    /// Spends one request of `client`'s (or the source's) budget.
    pub async fn check(&self, client: IpAddr) -> Result<(), RateLimitError> {
        let key = Key::for_request(self.by, client);
        let result = match &self.backend {
            Backend::Local { cells } => {
                cells
                    .check_key(&key)
                    .map_err(|not_until| RateLimitError::Limited {
                        retry_after: not_until.wait_time_from(cells.clock().now()),
                    })
            }
            Backend::Shared {
                redis,
                script,
                interval_us,
                burst,
                on_error,
            } => {
                let redis_key = match &key {
                    Key::Source => redis.key("ratelimit", &[&self.source]),
                    Key::Client(ip) => redis.key("ratelimit", &[&self.source, &ip.to_string()]),
                };
                let answer: Result<u64, _> = redis
                    .invoke(script.key(&redis_key).arg(*interval_us).arg(*burst))
                    .await;
                match answer {
                    Ok(0) => Ok(()),
                    Ok(wait_us) => Err(RateLimitError::Limited {
                        retry_after: Duration::from_micros(wait_us),
                    }),
                    Err(e) => {
                        self.stats.redis_degraded.fetch_add(1, Ordering::Relaxed);
                        tracing::debug!(source = %self.source, error = %e, policy = ?on_error,
                            "shared rate limit check failed");
                        match on_error {
                            OnRedisError::FailOpen => Ok(()),
                            OnRedisError::FailClosed => Err(RateLimitError::Unavailable(e)),
                        }
                    }
                }
            }
        };
        if matches!(result, Err(RateLimitError::Limited { .. })) {
            self.stats.limited.fetch_add(1, Ordering::Relaxed);
        }
        result
    }

    /// Drops client cells that are back to "fresh" (embedded `client_ip` limiters); returns how
    /// many cells remain. Bounded memory for a limiter keyed by sender address.
    pub fn forget_idle(&self) -> usize {
        match &self.backend {
            Backend::Local { cells, .. } => {
                cells.retain_recent();
                cells.shrink_to_fit();
                cells.len()
            }
            Backend::Shared { .. } => 0,
        }
    }
}
