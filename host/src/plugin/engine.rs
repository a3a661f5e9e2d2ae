//! The wasmtime side of a call: one engine (component model, epoch interruption, the pooling
//! allocator, each limit commented with why) and its linker, the epoch ticker that drives
//! deadlines, a fresh store and instance per call or a warm one from a plugin's
//! [`InstancePool`], and the classification of what went wrong into a [`CallError`].
//!
//! Calls are async and run on the caller's task (the request's own): no hand-off to another
//! thread. Guest code yields to the executor at every epoch tick, so a long call shares its
//! worker thread with other requests, and traps at the first tick past its deadline; time
//! spent awaiting a host call (key-value, WASI) is bounded by a timeout around the call.
//!
//! What the guest can reach during a call (its store's state and imports) is in
//! [`super::imports`].

use std::collections::HashMap;
use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{
    Cache, CacheConfig, Config, Enabled, Engine, InstanceAllocationStrategy,
    PoolConcurrencyLimitError, PoolingAllocationConfig, Store, Trap, UpdateDeadline,
};

use super::capabilities::PluginCounters;
use super::capture::Capture;
use super::imports::{CallState, Capabilities, truncate};
use super::manifest::MAX_PLUGIN_MEMORY_BYTES;
use super::wit::{Plugin, PluginPre, check_wit_version, types};
use super::{BusyReason, CallError, CallFailure, PluginError};

/// Epoch ticks drive plugin deadlines and yields: guest code yields to the executor at each
/// tick and traps at the first tick past its deadline.
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
/// Without PAGEMAP_SCAN, the low bytes of a freed memory zeroed by memset (the rest madvised).
const KEEP_RESIDENT_WITHOUT_PAGEMAP_SCAN: usize = 64 * 1024;
/// Bytes of a freed table kept resident.
const TABLE_KEEP_RESIDENT: usize = 16 * 1024;
/// A plugin's `err(message)` is cut to this many bytes for the dead-letter reason.
const MAX_ERROR_MESSAGE_BYTES: usize = 1024;

/// Limits applied to every call of one plugin.
#[derive(Debug, Clone, Copy)]
pub struct CallLimits {
    /// Bytes its linear memory may grow to.
    pub max_memory_bytes: usize,
    /// Wall time one call may take.
    pub deadline: Duration,
    /// Calls of the plugin that may run at once; more wait for a permit, then are refused.
    pub max_concurrent_calls: usize,
}

/// The shared wasmtime engine and linker.
pub struct Runtime {
    engine: Engine,
    linker: Linker<CallState>,
    caps: Capabilities,
}

/// One plugin as a call needs it: its linked component, name, config values and limits, and
/// its warm instances if it keeps any.
#[derive(Clone, Copy)]
pub struct Callee<'a> {
    /// The compiled, linked component.
    pub pre: &'a PluginPre<CallState>,
    /// The plugin's name (logs, key-value scope, counters).
    pub name: &'a Arc<str>,
    /// What its `config` import answers.
    pub config: &'a Arc<HashMap<String, String>>,
    /// Its per-call limits.
    pub limits: CallLimits,
    /// Its warm instances, for `instances = "pooled"`.
    pub pool: Option<&'a InstancePool>,
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
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pooling(instances)));
        if let Some(dir) = cache_dir {
            let mut cache = CacheConfig::new();
            cache.with_directory(dir);
            config.cache(Some(Cache::new(cache).map_err(engine_err)?));
        }
        let engine = Engine::new(&config).map_err(engine_err)?;
        spawn_epoch_ticker(&engine);

        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(engine_err)?;
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

    /// Counters bumped by plugins.
    pub fn counters(&self) -> &PluginCounters {
        &self.caps.counters
    }

    /// A fresh store with a new call's state, and the capture of its guest's stderr.
    fn new_store(
        &self,
        plugin: &Arc<str>,
        config: &Arc<HashMap<String, String>>,
        limits: CallLimits,
    ) -> (Store<CallState>, Capture) {
        let (state, stderr) = CallState::new(
            plugin,
            config,
            limits.max_memory_bytes,
            limits.deadline,
            &self.caps,
        );
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| s.limiter());
        // At each epoch tick in guest code: trap once the call's deadline has passed, else
        // yield to the executor and run on at the next tick.
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(|ctx| {
            Ok(if ctx.data().past_deadline() {
                UpdateDeadline::Interrupt
            } else {
                UpdateDeadline::Yield(1)
            })
        });
        (store, stderr)
    }

    /// Runs `handle` once: in a fresh instance, or in a warm one from the plugin's pool.
    pub async fn call(
        &self,
        callee: Callee<'_>,
        event: &types::Event,
    ) -> Result<types::Action, CallError> {
        let mut slot = match callee.pool.and_then(InstancePool::take) {
            Some(slot) => {
                // A reused instance: what it wrote for earlier events is not this event's.
                slot.stderr.clear();
                slot
            }
            None => self.instantiate(callee).await?,
        };
        let limits = callee.limits;
        let started = Instant::now();
        slot.store
            .data_mut()
            .begin(&event.id, started, limits.deadline);
        // A reused instance's store may have ticked past its last deadline.
        slot.store.set_epoch_deadline(1);
        let outcome = within(
            limits,
            started,
            slot.instance.call_handle(&mut slot.store, event),
        )
        .await;
        slot.uses += 1;
        match outcome {
            Ok(Ok(result)) => {
                if let Some(pool) = callee.pool {
                    pool.put_back(slot);
                }
                result.map_err(|message| {
                    CallFailure::Error(truncate(message, MAX_ERROR_MESSAGE_BYTES)).into()
                })
            }
            // A trapped (or abandoned) instance cannot be entered again: it is dropped here,
            // not pooled.
            Ok(Err(e)) => Err(classify(e, &slot.store, &slot.stderr, limits, started).into()),
            Err(late) => Err(late.into()),
        }
    }

    /// A new instance of `callee` in a fresh store.
    async fn instantiate(&self, callee: Callee<'_>) -> Result<Slot, CallError> {
        let limits = callee.limits;
        let (mut store, stderr) = self.new_store(callee.name, callee.config, limits);
        let started = Instant::now();
        let instance = match within(limits, started, callee.pre.instantiate_async(&mut store)).await
        {
            Ok(Ok(instance)) => instance,
            Ok(Err(e)) => return Err(classify_start(e, &store, &stderr, limits, started)),
            Err(late) => return Err(late.into()),
        };
        Ok(Slot {
            store,
            instance,
            stderr,
            uses: 0,
        })
    }

    /// Instantiates once without calling: proves the component starts within its limits.
    /// Loading is synchronous (at start, on the reload thread) and instantiation async, so the
    /// probe runs on a thread of its own with a one-thread runtime, whatever the caller's
    /// context (a runtime cannot be blocked on from inside another).
    pub fn probe(
        &self,
        pre: &PluginPre<CallState>,
        plugin: &Arc<str>,
        limits: CallLimits,
    ) -> Result<(), CallError> {
        let callee = Callee {
            pre,
            name: plugin,
            config: &Arc::default(),
            limits,
            pool: None,
        };
        std::thread::scope(|scope| {
            scope
                .spawn(|| {
                    let runtime = tokio::runtime::Builder::new_current_thread()
                        .enable_time()
                        .build()
                        .map_err(|e| {
                            CallError::from(CallFailure::Trap {
                                reason: format!("no runtime to start the plugin on: {e}"),
                                stderr: String::new(),
                            })
                        })?;
                    runtime.block_on(self.instantiate(callee)).map(drop)
                })
                .join()
                .unwrap_or_else(|_| {
                    Err(CallFailure::Trap {
                        reason: "the start-up probe panicked".into(),
                        stderr: String::new(),
                    }
                    .into())
                })
        })
    }
}

/// Awaits `work` (a call or an instantiation) for at most its deadline plus one tick. Guest
/// code traps on its own at the first tick past the deadline; this bounds the time spent
/// awaiting host calls (a key-value write, a WASI sleep), which no tick interrupts. `Err`:
/// abandoned at the deadline (the instance must not be used again).
async fn within<T>(
    limits: CallLimits,
    started: Instant,
    work: impl Future<Output = T>,
) -> Result<T, CallFailure> {
    tokio::time::timeout(limits.deadline + EPOCH_TICK, work)
        .await
        .map_err(|_| CallFailure::Deadline {
            limit: limits.deadline,
            elapsed: started.elapsed(),
        })
}

/// The pooling allocator's limits for a pool of `instances` component instances.
fn pooling(instances: u32) -> PoolingAllocationConfig {
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(instances);
    pool.total_core_instances(instances * CORE_INSTANCES_PER_INSTANCE);
    pool.max_core_instances_per_component(MAX_CORE_INSTANCES_PER_COMPONENT);
    pool.total_memories(instances * 2);
    pool.total_tables(instances * 4);
    // Calls run on fibers: one stack per call in progress, at most one per instance.
    pool.total_stacks(instances);
    // Per-plugin limits are enforced by each store's limiter; this is only the ceiling.
    pool.max_memory_size(MAX_PLUGIN_MEMORY_BYTES);
    // Keeping a little of each freed slot resident saves a page-fault storm on reuse.
    // Resetting a freed slot: with PAGEMAP_SCAN (Linux 6.7+) wasmtime finds the pages the
    // call dirtied and zeroes just those, up to KEEP_RESIDENT bytes, instead of an madvise
    // that unmaps them (and, in a multi-threaded process, costs a TLB shootdown on every
    // core). Measured on the router plugin, full ingest path: 11.3k -> 17.1k events/s.
    if PoolingAllocationConfig::is_pagemap_scan_available() {
        pool.pagemap_scan(Enabled::Yes);
        pool.linear_memory_keep_resident(KEEP_RESIDENT);
    } else {
        pool.linear_memory_keep_resident(KEEP_RESIDENT_WITHOUT_PAGEMAP_SCAN);
    }
    pool.table_keep_resident(TABLE_KEEP_RESIDENT);
    pool
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
    if store.data().memory_exceeded() {
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
    slots: Mutex<Vec<Slot>>,
    size: usize,
    recycle_after: u64,
}

impl InstancePool {
    /// A pool keeping up to `size` warm instances, each retired after `recycle_after` calls
    /// (0: never).
    pub fn new(size: usize, recycle_after: u64) -> InstancePool {
        InstancePool {
            slots: Mutex::new(Vec::with_capacity(size)),
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
    #[tokio::test]
    async fn an_exhausted_instance_pool_is_busy_not_a_failure() {
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
        let event = event();
        let call = |pool| {
            let callee = Callee {
                pre: &pre,
                name: &name,
                config: &config,
                limits,
                pool,
            };
            runtime.call(callee, &event)
        };
        assert!(call(Some(&warm)).await.is_ok());
        match call(None).await {
            Err(CallError::Busy(BusyReason::PoolExhausted)) => {}
            other => panic!("expected busy, got {other:?}"),
        }
        // The warm instance itself still serves.
        assert!(call(Some(&warm)).await.is_ok());
    }
}
