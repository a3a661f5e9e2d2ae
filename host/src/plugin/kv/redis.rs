//! The plugins' key-value store in Redis, for replicas that share state (`[storage] redis`).
//!
//! With Redis configured, every replica's plugins read and write one store, so a stateful
//! plugin (e.g. `examples/order-lifecycle`) sees the same state whichever replica an event
//! lands on. The embedded store ([`super::embedded`]) is the backend otherwise; both implement
//! [`PluginKv`] with the same semantics.
//!
//! - **Keys**: `PREFIX:kv:PLUGIN:KEY`. A plugin's name comes from its file name and could
//!   contain `:`, so `%` and `:` in it are escaped: plugin `a:b` with key `c` and plugin `a`
//!   with key `b:c` can never meet. The plugin's own key is free-form and comes last.
//! - **TTL**: `SET … PX ttl`, relative, so a value expires by Redis' clock, the same for every
//!   replica whatever their clock skew. A `set` without TTL clears any previous expiry (like
//!   the embedded store); a TTL of 0 deletes the value (it would expire at once).
//! - **Compare-and-swap**: one Lua script ([`CAS_SCRIPT`], `EVALSHA`, loaded on `NOSCRIPT`),
//!   so the read-compare-write is atomic against every replica.
//!
//! Plugin calls are async (the pipeline drives a plugin chain on the request's own task), and
//! the Redis connection is the process's shared async one. Each operation is awaited, bounded
//! by the shorter of [`OPERATION_TIMEOUT`] and the plugin call's remaining deadline. When Redis is down or slow the plugin gets an error (never a hang), fails, and the
//! source's `on_plugin_error` policy answers the sender; the event is dead-lettered, replayable.

use std::future::Future;
use std::time::{Duration, Instant};

use ::redis::Script;

use super::{KvError, KvScope, PluginKv};
use crate::redis::{OPERATION_TIMEOUT, RedisError, SharedRedis};

/// Compares `KEYS[1]` with the expectation and, if it matches, writes the new value.
/// `ARGV[1]`: `1` if a value is expected, `0` if the key must be absent; `ARGV[2]`: the
/// expected value; `ARGV[3]`: the new value; `ARGV[4]`: TTL in ms, empty for none.
/// Returns 1 when written. Lua strings are byte strings, so values may be any bytes.
pub const CAS_SCRIPT: &str = r"
local current = redis.call('GET', KEYS[1])
if ARGV[1] == '1' then
  if current ~= ARGV[2] then return 0 end
elseif current then
  return 0
end
if ARGV[4] == '' then
  redis.call('SET', KEYS[1], ARGV[3])
elseif ARGV[4] == '0' then
  redis.call('DEL', KEYS[1])
else
  redis.call('SET', KEYS[1], ARGV[3], 'PX', ARGV[4])
end
return 1
";

/// TTLs are capped here (about 100 years): longer means "forever" to any plugin, and Redis
/// refuses an expiry that overflows its clock.
const MAX_TTL_MS: u64 = 100 * 365 * 24 * 3600 * 1000;

/// The Redis backend of the plugins' key-value store.
pub struct RedisKv {
    redis: SharedRedis,
    cas: Script,
}

impl std::fmt::Debug for RedisKv {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisKv")
            .field("redis", &self.redis)
            .finish()
    }
}

impl RedisKv {
    /// A backend on `redis`.
    pub fn new(redis: SharedRedis) -> RedisKv {
        RedisKv {
            redis,
            cas: Script::new(CAS_SCRIPT),
        }
    }

    /// `PREFIX:kv:PLUGIN:KEY`, with `%` and `:` in the plugin name escaped.
    fn key(&self, plugin: &str, key: &str) -> String {
        let plugin = plugin.replace('%', "%25").replace(':', "%3A");
        self.redis.key("kv", &[&plugin, key])
    }

    /// Runs one Redis call within the plugin call's remaining time.
    async fn within<T, F>(
        &self,
        scope: KvScope<'_>,
        call: impl FnOnce(Duration) -> F,
    ) -> Result<T, KvError>
    where
        F: Future<Output = Result<T, RedisError>>,
    {
        let budget = scope.deadline.saturating_duration_since(Instant::now());
        if budget.is_zero() {
            return Err(KvError::Backend(
                "the plugin call's deadline passed before Redis was asked".into(),
            ));
        }
        call(budget.min(OPERATION_TIMEOUT))
            .await
            .map_err(|e| KvError::Backend(e.to_string()))
    }
}

/// The `SET` (or `DEL`, for a zero TTL) that stores `value` at `key`.
fn set_command(key: &str, value: &[u8], ttl_ms: Option<u64>) -> ::redis::Cmd {
    match ttl_ms {
        Some(0) => {
            let mut cmd = ::redis::cmd("DEL");
            cmd.arg(key);
            cmd
        }
        Some(ttl) => {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(key).arg(value).arg("PX").arg(ttl.min(MAX_TTL_MS));
            cmd
        }
        None => {
            let mut cmd = ::redis::cmd("SET");
            cmd.arg(key).arg(value);
            cmd
        }
    }
}

#[async_trait::async_trait]
impl PluginKv for RedisKv {
    async fn get(&self, scope: KvScope<'_>, key: &str) -> Result<Option<Vec<u8>>, KvError> {
        let mut cmd = ::redis::cmd("GET");
        cmd.arg(self.key(scope.plugin, key));
        self.within(scope, |limit| self.redis.query_within(&cmd, limit))
            .await
    }

    async fn set(
        &self,
        scope: KvScope<'_>,
        key: &str,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), KvError> {
        let cmd = set_command(&self.key(scope.plugin, key), &value, ttl_ms);
        self.within(scope, |limit| self.redis.query_within::<()>(&cmd, limit))
            .await
    }

    async fn delete(&self, scope: KvScope<'_>, key: &str) -> Result<bool, KvError> {
        let mut cmd = ::redis::cmd("DEL");
        cmd.arg(self.key(scope.plugin, key));
        let removed: u64 = self
            .within(scope, |limit| self.redis.query_within(&cmd, limit))
            .await?;
        Ok(removed > 0)
    }

    async fn compare_and_swap(
        &self,
        scope: KvScope<'_>,
        key: &str,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, KvError> {
        let mut invocation = self.cas.prepare_invoke();
        invocation
            .key(self.key(scope.plugin, key))
            .arg(if expected.is_some() { "1" } else { "0" })
            .arg(expected.unwrap_or_default())
            .arg(value)
            .arg(ttl_ms.map_or(String::new(), |t| t.min(MAX_TTL_MS).to_string()));
        let written: u64 = self
            .within(scope, |limit| self.redis.invoke_within(&invocation, limit))
            .await?;
        Ok(written == 1)
    }
}

#[cfg(test)]
mod tests;
