//! What a plugin can reach during a call: the per-call state a store carries ([`CallState`])
//! and its `Host` impls for the world's imports (`host`, `clock`, `kv`, `metrics`), plus the
//! deny-by-default WASI context and the memory limiter.
//!
//! Every import is bounded per call (log lines, key-value operations, the call's deadline), so
//! a plugin looping on an import is stopped or muted instead of hammering the host.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::ResourceLimiter;
use wasmtime::component::ResourceTable;
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::capabilities::PluginCounters;
use super::capture::Capture;
use super::kv::{KvScope, PluginKv, check_kv_sizes};
use super::wit::{clock, host, kv, metrics, types};

/// Log lines a single call may emit; more are counted and dropped so a chatty plugin cannot
/// flood the host's log.
const MAX_LOG_LINES_PER_CALL: u32 = 64;
const MAX_LOG_LINE_BYTES: usize = 2048;
/// Guest stderr (panic messages) kept per call for the dead-letter reason: the last bytes.
const STDERR_CAPTURE_BYTES: usize = 2048;
/// Key-value operations a single call may make; a plugin looping on the store is stopped
/// with an error instead of hammering it until the deadline.
const MAX_KV_OPS_PER_CALL: u32 = 256;
/// Table elements a plugin may grow a table to.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// What host imports reach beyond the call itself.
#[derive(Clone)]
pub struct Capabilities {
    /// `None` where no store is open (e.g. `hookwall check`): key-value calls then fail.
    pub kv: Option<Arc<dyn PluginKv>>,
    /// Counters plugins bump through the `metrics` import.
    pub counters: Arc<PluginCounters>,
}

/// Per-call state: what the host imports see.
pub struct CallState {
    wasi: WasiCtx,
    table: ResourceTable,
    limiter: CallLimiter,
    plugin: Arc<str>,
    event_id: String,
    config: Arc<HashMap<String, String>>,
    log_lines: u32,
    caps: Capabilities,
    kv_ops: u32,
    /// When this call's wall deadline passes. The epoch interrupts guest code; host calls are
    /// not interruptible, so key-value calls check it themselves and pass it to the backend.
    deadline: Instant,
}

impl CallState {
    /// The state of a new store for `plugin`, and the capture of its guest's stderr.
    pub(super) fn new(
        plugin: &Arc<str>,
        config: &Arc<HashMap<String, String>>,
        max_memory: usize,
        deadline: Duration,
        caps: &Capabilities,
    ) -> (CallState, Capture) {
        let stderr = Capture::new(STDERR_CAPTURE_BYTES);
        // Deny-by-default WASI: no files, no environment, no network, no args, stdin closed,
        // and clocks frozen at zero: the `clock` import is the one way to read time.
        let wasi = WasiCtx::builder()
            .stderr(stderr.clone())
            .wall_clock(FrozenClock)
            .monotonic_clock(FrozenClock)
            .build();
        let state = CallState {
            wasi,
            table: ResourceTable::new(),
            limiter: CallLimiter {
                max_memory,
                memory_exceeded: false,
            },
            plugin: plugin.clone(),
            event_id: String::new(),
            config: config.clone(),
            log_lines: 0,
            caps: caps.clone(),
            kv_ops: 0,
            deadline: Instant::now() + deadline,
        };
        (state, stderr)
    }

    /// Starts a call on `event_id` (in a fresh or a reused instance): the per-call budgets
    /// start anew and the deadline is `deadline` after `started`.
    pub(super) fn begin(&mut self, event_id: &str, started: Instant, deadline: Duration) {
        self.event_id.clear();
        self.event_id.push_str(event_id);
        self.log_lines = 0;
        self.kv_ops = 0;
        self.deadline = started + deadline;
    }

    /// Whether the call has run past its wall deadline.
    pub(super) fn past_deadline(&self) -> bool {
        Instant::now() >= self.deadline
    }

    /// The store's resource limiter (the per-call memory limit).
    pub(super) fn limiter(&mut self) -> &mut dyn ResourceLimiter {
        &mut self.limiter
    }

    /// Whether the guest tried to grow its memory past the limit (names a trap).
    pub(super) fn memory_exceeded(&self) -> bool {
        self.limiter.memory_exceeded
    }

    /// The key-value backend and this call's scope, after charging one operation to the
    /// call's budget and checking the bounds and the deadline.
    fn kv(
        &mut self,
        key: &str,
        value: Option<&[u8]>,
    ) -> Result<(Arc<dyn PluginKv>, KvScope<'_>), String> {
        self.kv_ops += 1;
        if self.kv_ops > MAX_KV_OPS_PER_CALL {
            return Err(format!(
                "key-value budget exhausted ({MAX_KV_OPS_PER_CALL} operations per call)"
            ));
        }
        check_kv_sizes(key, value).map_err(|e| e.to_string())?;
        if self.past_deadline() {
            return Err("key-value call refused: the call's deadline has passed".to_string());
        }
        let kv = self
            .caps
            .kv
            .clone()
            .ok_or_else(|| "no key-value store is available here".to_string())?;
        let scope = KvScope {
            plugin: &self.plugin,
            now_ms: crate::clock::now_ms(),
            deadline: self.deadline,
        };
        Ok((kv, scope))
    }
}

impl clock::Host for CallState {
    fn now_ms(&mut self) -> u64 {
        crate::clock::now_ms()
    }
}

impl metrics::Host for CallState {
    fn counter_add(&mut self, name: String, delta: u64) {
        self.caps.counters.add(&self.plugin, &name, delta);
    }
}

impl kv::Host for CallState {
    async fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let (kv, scope) = self.kv(&key, None)?;
        kv.get(scope, &key).await.map_err(|e| e.to_string())
    }

    async fn set(
        &mut self,
        key: String,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<(), String> {
        let (kv, scope) = self.kv(&key, Some(&value))?;
        kv.set(scope, &key, value, ttl_ms)
            .await
            .map_err(|e| e.to_string())
    }

    async fn delete(&mut self, key: String) -> Result<bool, String> {
        let (kv, scope) = self.kv(&key, None)?;
        kv.delete(scope, &key).await.map_err(|e| e.to_string())
    }

    async fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, String> {
        let (kv, scope) = self.kv(&key, Some(&value))?;
        kv.compare_and_swap(scope, &key, expected, value, ttl_ms)
            .await
            .map_err(|e| e.to_string())
    }
}

impl WasiView for CallState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView {
            ctx: &mut self.wasi,
            table: &mut self.table,
        }
    }
}

impl types::Host for CallState {}

impl host::Host for CallState {
    fn log(&mut self, level: host::Level, message: String) {
        self.log_lines += 1;
        if self.log_lines > MAX_LOG_LINES_PER_CALL {
            return;
        }
        let message = truncate(message, MAX_LOG_LINE_BYTES);
        let (plugin, event) = (&*self.plugin, self.event_id.as_str());
        match level {
            host::Level::Trace => tracing::trace!(plugin, event, "{message}"),
            host::Level::Debug => tracing::debug!(plugin, event, "{message}"),
            host::Level::Info => tracing::info!(plugin, event, "{message}"),
            host::Level::Warn => tracing::warn!(plugin, event, "{message}"),
            host::Level::Error => tracing::error!(plugin, event, "{message}"),
        }
    }

    fn config(&mut self, key: String) -> Option<String> {
        self.config.get(&key).cloned()
    }
}

/// `s` cut to at most `max` bytes (on a character boundary), marked with `…` when cut.
pub(super) fn truncate(mut s: String, max: usize) -> String {
    if s.len() > max {
        let mut cut = max;
        while !s.is_char_boundary(cut) {
            cut -= 1;
        }
        s.truncate(cut);
        s.push('…');
    }
    s
}

/// WASI clocks as plugins see them: always zero. Time comes from the `clock` import, which the
/// host controls (and can log, limit or fake in tests).
struct FrozenClock;

impl HostWallClock for FrozenClock {
    fn resolution(&self) -> Duration {
        Duration::from_secs(1)
    }
    fn now(&self) -> Duration {
        Duration::ZERO
    }
}

impl HostMonotonicClock for FrozenClock {
    fn resolution(&self) -> u64 {
        1_000_000_000
    }
    fn now(&self) -> u64 {
        0
    }
}

/// Enforces the per-call memory limit and remembers that it did, to name the failure.
struct CallLimiter {
    max_memory: usize,
    memory_exceeded: bool,
}

impl ResourceLimiter for CallLimiter {
    fn memory_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        if desired > self.max_memory {
            self.memory_exceeded = true;
            return Ok(false);
        }
        Ok(true)
    }

    fn table_growing(
        &mut self,
        _current: usize,
        desired: usize,
        _maximum: Option<usize>,
    ) -> wasmtime::Result<bool> {
        Ok(desired <= MAX_TABLE_ELEMENTS)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn truncate_cuts_on_a_character_boundary() {
        assert_eq!(truncate("short".into(), 10), "short");
        assert_eq!(truncate("abcdef".into(), 3), "abc…");
        // `é` is two bytes: a cut inside it backs off to before it.
        assert_eq!(truncate("aé".into(), 2), "a…");
    }

    #[test]
    fn the_memory_limiter_refuses_growth_past_the_limit_and_remembers() {
        let mut limiter = CallLimiter {
            max_memory: 1024,
            memory_exceeded: false,
        };
        assert!(limiter.memory_growing(0, 1024, None).unwrap());
        assert!(!limiter.memory_exceeded);
        assert!(!limiter.memory_growing(1024, 1025, None).unwrap());
        assert!(limiter.memory_exceeded);
    }
}
