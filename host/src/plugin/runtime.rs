//! The wasmtime side: one engine, one linker, a fresh store and instance per call.

use std::collections::HashMap;
use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker, ResourceTable};
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolConcurrencyLimitError, PoolingAllocationConfig, ResourceLimiter, Store, Trap,
};
use wasmtime_wasi::{HostMonotonicClock, HostWallClock, WasiCtx, WasiCtxView, WasiView};

use super::bindings::hookwall::plugin::{clock, host, kv, metrics, types};
use super::bindings::{Plugin, PluginPre};
use super::capabilities::{KvScope, PluginCounters, PluginKv, check_kv_sizes};
use super::capture::Capture;
use super::manifest::MAX_PLUGIN_MEMORY_BYTES;
use super::{BusyReason, CallError, CallFailure, PluginError};

/// Epoch ticks drive plugin deadlines; a deadline is rounded up to whole ticks.
const EPOCH_TICK: Duration = Duration::from_millis(2);
/// Instances that can exist at once, in calls and in plugins' warm pools, across all plugins.
/// Each plugin's calls are bounded by its `max_concurrent_calls`; an instance the pool cannot
/// hold (many plugins busy at once) is answered as busy (503), never as the plugin's failure.
/// The pool reserves address space for each slot.
const MAX_CONCURRENT_INSTANCES: u32 = 256;
/// Core instances per component: Rust guests use one or two; JS and Python guests need dozens.
const MAX_CORE_INSTANCES_PER_COMPONENT: u32 = 64;
/// Core instances the pool holds per component instance, on average: Rust guests need fewer,
/// JS and Python ones more (these are the scarcest slots for them).
const CORE_INSTANCES_PER_INSTANCE: u32 = 4;
const TOTAL_CORE_INSTANCES: u32 = MAX_CONCURRENT_INSTANCES * CORE_INSTANCES_PER_INSTANCE;
/// A plugin's `max_concurrent_calls` unless configured: as many instances as the pool holds of
/// the largest component it admits (1024 core instances / 64 per component = 16), so one
/// plugin alone can never exhaust the pool, whatever its language. Far more than a Rust or C
/// plugin's calls (µs each) need on a few cores; a burst waits for a permit (up to the
/// plugin's deadline) instead of being refused.
pub const DEFAULT_MAX_CONCURRENT_CALLS: usize =
    (TOTAL_CORE_INSTANCES / MAX_CORE_INSTANCES_PER_COMPONENT) as usize;
/// Bytes of a freed linear memory kept resident and reset page by page when PAGEMAP_SCAN is
/// available: a Rust guest's 1 MiB stack sits below its data and heap, so its dirty pages
/// all fall within the first 2 MiB.
const KEEP_RESIDENT: usize = 2 * 1024 * 1024;
/// Log lines a single call may emit; more are counted and dropped so a chatty plugin cannot
/// flood the host's log.
const MAX_LOG_LINES_PER_CALL: u32 = 64;
const MAX_LOG_LINE_BYTES: usize = 2048;
/// Guest stderr (panic messages) kept per call for the dead-letter reason: the last bytes.
const STDERR_CAPTURE_BYTES: usize = 2048;
/// Key-value operations a single call may make; a plugin looping on the store is stopped
/// with an error instead of hammering it until the deadline.
const MAX_KV_OPS_PER_CALL: u32 = 256;

/// Limits applied to every call of one plugin.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    pub max_memory_bytes: usize,
    pub deadline: Duration,
    /// Calls of the plugin that may run at once; more wait for a permit, then are refused.
    pub max_concurrent_calls: usize,
}

/// What host imports reach beyond the call itself.
#[derive(Clone)]
pub struct Capabilities {
    /// `None` where no store is open (e.g. `hookwall check`): key-value calls then fail.
    pub kv: Option<Arc<dyn PluginKv>>,
    pub counters: Arc<PluginCounters>,
}

/// The shared wasmtime engine and linker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    caps: Capabilities,
}

impl Runtime {
    /// Builds the engine. `max_memory_bytes` is the largest limit any plugin may be given;
    /// `cache_dir` keeps compiled code across restarts.
    pub fn new(cache_dir: Option<&Path>, caps: Capabilities) -> Result<Runtime, PluginError> {
        Runtime::with_instances(cache_dir, caps, MAX_CONCURRENT_INSTANCES)
    }

    /// [`Runtime::new`] with a pool of `instances` (tests exhaust a small one).
    fn with_instances(
        cache_dir: Option<&Path>,
        caps: Capabilities,
        instances: u32,
    ) -> Result<Runtime, PluginError> {
        let engine_err = |e: wasmtime::Error| PluginError::Engine(format!("{e:#}"));
        let mut config = Config::new();
        config.wasm_component_model(true);
        // Deadlines: the ticker below bumps the epoch; a call traps when its budget runs out.
        config.epoch_interruption(true);
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances);
        pool.total_core_instances(instances * CORE_INSTANCES_PER_INSTANCE);
        pool.max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT);
        pool.total_memories(instances * 2);
        pool.total_tables(instances * 4);
        // Per-plugin limits are enforced by each store's limiter; this is only the ceiling.
        pool.max_memory_size(MAX_PLUGIN_MEMORY_BYTES);
        // Keeping a little of each freed slot resident saves a page-fault storm on reuse.
        // Resetting a freed slot: with PAGEMAP_SCAN (Linux 6.7+) wasmtime finds the pages the
        // call dirtied and zeroes just those, up to KEEP_RESIDENT bytes, instead of an madvise
        // that unmaps them (and, in a multi-threaded process, costs a TLB shootdown on every
        // core). Measured on the router plugin, full ingest path: 11.3k -> 17.1k events/s.
        // Without the ioctl, only the low 64 KiB are zeroed by memset (the rest madvised).
        if PoolingAllocationConfig::is_pagemap_scan_available() {
            pool.pagemap_scan(Enabled::Yes);
            pool.linear_memory_keep_resident(KEEP_RESIDENT);
        } else {
            pool.linear_memory_keep_resident(64 * 1024);
        }
        pool.table_keep_resident(16 * 1024);
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        if let Some(dir) = cache_dir {
            let mut cache = CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(Cache::new(cache).map_err(engine_err)?));
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        spawn_epoch_ticker(&engine);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_sync(&mut linker).map_err(engine_err)?;
        Plugin::add_to_linker::<CallState, HasSelf<CallState>>(&mut linker, |s| s)
            .map_err(engine_err)?;
        Ok(Runtime {
            engine,
            linker,
            caps,
        })
    }

    /// Compiles and links a component; fails if it does not implement our world.
    pub fn prepare(&self, name: &str, bytes: &[u8]) -> Result<PluginPre<CallState>, PluginError> {
        let component = Component::new(&self.engine, bytes).map_err(|e| PluginError::Compile {
            name: name.to_string(),
            reason: format!("{e:#}"),
        })?;
        check_wit_version(name, &component, &self.engine)?;
        let link_err = |e: wasmtime::Error| PluginError::Link {
            name: name.to_string(),
            reason: format!("{e:#}"),
        };
        let pre = self.linker.instantiate_pre(&component).map_err(link_err)?;
        PluginPre::new(pre).map_err(link_err)
    }

    pub fn counters(&self) -> &PluginCounters {
        &self.caps.counters
    }

    /// A fresh store with this call's state.
    fn new_store(
        &self,
        plugin: &Arc<str>,
        config: &Arc<HashMap<String, String>>,
        limits: CallLimits,
    ) -> (Store<CallState>, Capture) {
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
                max_memory: limits.max_memory_bytes,
                memory_exceeded: false,
            },
            plugin: plugin.clone(),
            event_id: String::new(),
            config: config.clone(),
            log_lines: 0,
            caps: self.caps.clone(),
            kv_ops: 0,
            deadline: Instant::now() + limits.deadline,
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        (store, stderr)
    }

    /// Runs `handle` once: in a fresh instance, or in a warm one from the plugin's pool.
    pub fn call(
        &self,
        pre: &PluginPre<CallState>,
        plugin: &Arc<str>,
        config: &Arc<HashMap<String, String>>,
        limits: CallLimits,
        pool: Option<&InstancePool>,
        event: &types::Event,
    ) -> Result<types::Action, CallError> {
        let slot = pool.and_then(InstancePool::take);
        let mut slot = match slot {
            Some(slot) => {
                // A reused instance: what it wrote for earlier events is not this event's.
                slot.stderr.clear();
                slot
            }
            None => {
                let (mut store, stderr) = self.new_store(plugin, config, limits);
                store.set_epoch_deadline(deadline_ticks(limits.deadline));
                let started = Instant::now();
                let instance = pre
                    .instantiate(&mut store)
                    .map_err(|e| classify_start(e, &store, &stderr, limits, started))?;
                Slot {
                    store,
                    instance,
                    stderr,
                    uses: 0,
                }
            }
        };
        let state = slot.store.data_mut();
        state.event_id.clone_from(&event.id);
        state.log_lines = 0;
        state.kv_ops = 0;
        let started = Instant::now();
        state.deadline = started + limits.deadline;
        slot.store
            .set_epoch_deadline(deadline_ticks(limits.deadline));
        let outcome = slot.instance.call_handle(&mut slot.store, event);
        slot.uses += 1;
        match outcome {
            Ok(result) => {
                if let Some(pool) = pool {
                    pool.put_back(slot);
                }
                result.map_err(|message| CallFailure::Error(truncate(message, 1024)).into())
            }
            // A trapped instance cannot be entered again: it is dropped here, not pooled.
            Err(e) => Err(classify(e, &slot.store, &slot.stderr, limits, started).into()),
        }
    }

    /// Instantiates once without calling: proves the component starts within its limits.
    pub fn probe(
        &self,
        pre: &PluginPre<CallState>,
        plugin: &Arc<str>,
        limits: CallLimits,
    ) -> Result<(), CallError> {
        let (mut store, stderr) = self.new_store(plugin, &Arc::default(), limits);
        store.set_epoch_deadline(deadline_ticks(limits.deadline));
        let started = Instant::now();
        pre.instantiate(&mut store)
            .map(|_| ())
            .map_err(|e| classify_start(e, &store, &stderr, limits, started))
    }
}

/// Names why an instance could not be made: no room in the engine's pool (a capacity limit,
/// not the plugin's fault), or the plugin failed while starting.
fn classify_start(
    e: wasmtime::Error,
    store: &Store<CallState>,
    stderr: &Capture,
    limits: CallLimits,
    started: Instant,
) -> CallError {
    if e.is::<PoolConcurrencyLimitError>() {
        tracing::warn!(error = %e, "plugin instance pool exhausted; the call is refused as busy");
        return CallError::Busy(BusyReason::PoolExhausted);
    }
    classify(e, store, stderr, limits, started).into()
}

/// Names why a call failed, from the error and what the limiter saw.
fn classify(
    e: wasmtime::Error,
    store: &Store<CallState>,
    stderr: &Capture,
    limits: CallLimits,
    started: Instant,
) -> CallFailure {
    if store.data().limiter.memory_exceeded {
        CallFailure::MemoryLimit {
            limit: limits.max_memory_bytes,
        }
    } else if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
        CallFailure::Deadline {
            limit: limits.deadline,
            elapsed: started.elapsed(),
        }
    } else {
        CallFailure::Trap {
            reason: format!("{}", e.root_cause()),
            stderr: stderr.text(),
        }
    }
}

/// A warm instance with its store.
pub struct Slot {
    store: Store<CallState>,
    instance: Plugin,
    stderr: Capture,
    uses: u64,
}

/// Warm instances of one plugin, for `instances = "pooled"`.
pub struct InstancePool {
    slots: std::sync::Mutex<Vec<Slot>>,
    size: usize,
    recycle_after: u64,
}

impl InstancePool {
    pub fn new(size: usize, recycle_after: u64) -> InstancePool {
        InstancePool {
            slots: std::sync::Mutex::new(Vec::with_capacity(size)),
            size,
            recycle_after,
        }
    }

    fn take(&self) -> Option<Slot> {
        self.slots.lock().unwrap_or_else(|e| e.into_inner()).pop()
    }

    fn put_back(&self, slot: Slot) {
        if self.recycle_after != 0 && slot.uses >= self.recycle_after {
            return;
        }
        let mut slots = self.slots.lock().unwrap_or_else(|e| e.into_inner());
        if slots.len() < self.size {
            slots.push(slot);
        }
    }
}

/// The version of our WIT package this host implements; components built against another
/// major version (for 0.x: another minor) are refused by name, before linking fails obscurely.
const WIT_PACKAGE: &str = "hookwall:plugin";
const WIT_VERSION: (u64, u64) = (0, 1);

fn check_wit_version(
    name: &str,
    component: &Component,
    engine: &Engine,
) -> Result<(), PluginError> {
    let ty = component.component_type();
    for (import, _) in ty.imports(engine) {
        let Some(rest) = import.strip_prefix(WIT_PACKAGE) else {
            continue;
        };
        let Some((_, version)) = rest.split_once('@') else {
            continue;
        };
        let mut parts = version
            .split('.')
            .map(|p| p.parse::<u64>().unwrap_or(u64::MAX));
        let (major, minor) = (parts.next().unwrap_or(0), parts.next().unwrap_or(0));
        let compatible = if WIT_VERSION.0 == 0 {
            (major, minor) == WIT_VERSION
        } else {
            major == WIT_VERSION.0
        };
        if !compatible {
            return Err(PluginError::Version {
                name: name.to_string(),
                found: format!("{WIT_PACKAGE}@{version}"),
                supported: format!("{WIT_PACKAGE}@{}.{}.x", WIT_VERSION.0, WIT_VERSION.1),
            });
        }
    }
    Ok(())
}

fn deadline_ticks(deadline: Duration) -> u64 {
    // +1: the current tick may be about to end, so one tick of budget can be near zero.
    (deadline.as_nanos() / EPOCH_TICK.as_nanos()) as u64 + 1
}

fn truncate(mut s: String, max: usize) -> String {
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

/// A thread that advances the engine's epoch. It holds only a weak reference, so it ends when
/// the engine is dropped.
fn spawn_epoch_ticker(engine: &Engine) {
    let weak = engine.weak();
    let _ = std::thread::Builder::new()
        .name("hookwall-epoch".into())
        .spawn(move || {
            loop {
                std::thread::sleep(EPOCH_TICK);
                match weak.upgrade() {
                    Some(engine) => engine.increment_epoch(),
                    None => return,
                }
            }
        });
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
        if Instant::now() >= self.deadline {
            return Err("key-value call refused: the call's deadline has passed".to_string());
        }
        let kv = self
            .caps
            .kv
            .clone()
            .ok_or_else(|| "no key-value store is available here".to_string())?;
        let scope = KvScope {
            plugin: &self.plugin,
            now_ms: now_ms(),
            deadline: self.deadline,
        };
        Ok((kv, scope))
    }
}

fn now_ms() -> u64 {
    crate::clock::now_ms()
}

impl clock::Host for CallState {
    fn now_ms(&mut self) -> u64 {
        now_ms()
    }
}

impl metrics::Host for CallState {
    fn counter_add(&mut self, name: String, delta: u64) {
        self.caps.counters.add(&self.plugin, &name, delta);
    }
}

impl kv::Host for CallState {
    fn get(&mut self, key: String) -> Result<Option<Vec<u8>>, String> {
        let (kv, scope) = self.kv(&key, None)?;
        kv.get(scope, &key).map_err(|e| e.to_string())
    }

    fn set(&mut self, key: String, value: Vec<u8>, ttl_ms: Option<u64>) -> Result<(), String> {
        let (kv, scope) = self.kv(&key, Some(&value))?;
        kv.set(scope, &key, value, ttl_ms)
            .map_err(|e| e.to_string())
    }

    fn delete(&mut self, key: String) -> Result<bool, String> {
        let (kv, scope) = self.kv(&key, None)?;
        kv.delete(scope, &key).map_err(|e| e.to_string())
    }

    fn compare_and_swap(
        &mut self,
        key: String,
        expected: Option<Vec<u8>>,
        value: Vec<u8>,
        ttl_ms: Option<u64>,
    ) -> Result<bool, String> {
        let (kv, scope) = self.kv(&key, Some(&value))?;
        kv.compare_and_swap(scope, &key, expected, value, ttl_ms)
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
        Ok(desired <= 100_000)
    }
}

/// Gives memory the compiler freed back to the OS. Cranelift allocates tens of MiB while it
/// compiles a component, and glibc keeps freed memory in its arenas: without this, a start
/// that compiles the five bundled plugins idles at ~100 MiB instead of ~50 MiB.
/// The crate's only `unsafe`: a foreign call; there is no safe binding of `malloc_trim`.
#[allow(unsafe_code)]
pub(super) fn release_freed_memory() {
    #[cfg(all(target_os = "linux", target_env = "gnu"))]
    // SAFETY: malloc_trim has no preconditions; it only returns free heap pages to the kernel.
    unsafe {
        libc::malloc_trim(0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn event() -> types::Event {
        types::Event {
            id: "e".into(),
            source: "s".into(),
            received_at_ms: 0,
            method: "POST".into(),
            path: "/".into(),
            query: String::new(),
            headers: Vec::new(),
            body: b"{}".to_vec(),
        }
    }

    /// A pool with room for one instance, held warm by a pooled plugin: the next instance
    /// cannot be made, and that is a capacity limit (busy), not the plugin's failure.
    #[test]
    fn an_exhausted_instance_pool_is_busy_not_a_failure() {
        let caps = Capabilities {
            kv: None,
            counters: Arc::new(PluginCounters::default()),
        };
        let runtime = Runtime::with_instances(None, caps, 1).unwrap();
        let bytes = std::fs::read(hookwall_testkit::wasm::STATICS).unwrap();
        let pre = runtime.prepare("statics", &bytes).unwrap();
        let (name, config) = (Arc::from("statics"), Arc::default());
        let limits = CallLimits {
            max_memory_bytes: 16 << 20,
            deadline: Duration::from_secs(5),
            max_concurrent_calls: 1,
        };
        let warm = InstancePool::new(1, 0);
        let call = |pool| runtime.call(&pre, &name, &config, limits, pool, &event());
        assert!(call(Some(&warm)).is_ok());
        match call(None) {
            Err(CallError::Busy(BusyReason::PoolExhausted)) => {}
            other => panic!("expected busy, got {other:?}"),
        }
        // The warm instance itself still serves.
        assert!(call(Some(&warm)).is_ok());
    }
}
