//! Plugin: run a source's WebAssembly plugins on a verified event, sandboxed.
//!
//! Plugins are components implementing `hookwall:plugin/plugin` (see `wit/plugin.wit`). Each is
//! compiled once at load into an `InstancePre`; every call gets a fresh store and instance
//! (from wasmtime's pooling allocator), a memory limit and an epoch deadline, and no access to
//! files, network or environment. A trap, a timeout or an `err` fails that event only.
//!
//! ## Capacity
//! Each plugin admits at most `max_concurrent_calls` calls at once ([`PluginHost::admit`]
//! reserves a permit in every plugin of a chain before it runs, waiting up to the plugin's
//! deadline). No permit, or no room in the engine's instance pool, is [`PluginBusy`]: the
//! sender is asked to retry, and the event is neither stored nor dead-lettered.
//!
//! The loaded set is built from the whole plugins directory (`NAME.wasm` plus an optional
//! `NAME.toml` manifest, see [`manifest`]) and lives behind an [`ArcSwap`]: a call takes a
//! snapshot, so swapping in a new set (hot reload, see [`reload`]) never disturbs calls in
//! flight. A rebuild reuses every plugin whose file is unchanged (same SHA-256) and keeps the
//! previous version of any plugin whose new file fails to compile, link or start.
//!
//! ## Chaining
//! A source's chain is its `plugins` list from the host config, followed by the plugins whose
//! manifest names the source, by manifest `order` then name. They run in order. A plugin's `forward` deliveries that name a sink are final;
//! unrouted ones (`sink: none`) become the next plugin's input events (same id and metadata, the
//! delivery's headers and body). After the last plugin, unrouted output goes to each of the
//! source's configured `sinks`. A `reject` anywhere rejects the event; `drop` ends that branch.

mod capabilities;
mod capture;
pub mod manifest;
pub mod reload;
mod runtime;
pub mod scaffold;
#[cfg(test)]
mod tests;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arc_swap::ArcSwap;
use sha2::Digest;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

#[cfg(test)]
pub(crate) use capabilities::check_kv_contract;
pub use capabilities::{KvError, KvScope, PluginCounters, PluginKv, check_kv_sizes};
pub use manifest::{InstanceMode, config_values};
use manifest::{Manifest, POOL_BY_DEFAULT_ABOVE_BYTES, ValueRoot};
pub use runtime::{CallLimits, DEFAULT_MAX_CONCURRENT_CALLS};
use runtime::{CallState, Capabilities, InstancePool, Runtime};

use crate::config::Config;
use crate::store::Priority;

mod bindings {
    wasmtime::component::bindgen!({ path: "../wit", world: "plugin" });
}
use bindings::PluginPre;
use bindings::hookwall::plugin::types;

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The wasmtime engine could not be set up.
    #[error("plugin engine: {0}")]
    Engine(String),
    /// A source names a plugin whose file is not there.
    #[error("plugin `{name}`: cannot read {path}: {reason}")]
    Missing {
        name: String,
        path: PathBuf,
        reason: String,
    },
    /// The file is not a valid WebAssembly component.
    #[error("plugin `{name}`: not a valid component: {reason}")]
    Compile { name: String, reason: String },
    /// The component does not implement the `hookwall:plugin` world (or imports something
    /// the host does not offer).
    #[error("plugin `{name}`: does not fit the hookwall:plugin world: {reason}")]
    Link { name: String, reason: String },
    /// The component was built for another major version of our WIT package.
    #[error(
        "plugin `{name}`: built for {found}, but this host supports {supported}; rebuild it against this host's wit/"
    )]
    Version {
        name: String,
        found: String,
        supported: String,
    },
    /// A `KEY_file` config value names a file that cannot be read. (A manifest's value that
    /// leads out of the plugins directory is a [`PluginError::Manifest`] error.)
    #[error("plugin `{name}`: config `{key}`: cannot read {path}: {reason}")]
    ConfigFile {
        name: String,
        key: String,
        path: PathBuf,
        reason: String,
    },
    /// The plugin's `NAME.toml` is invalid.
    #[error("plugin `{name}`: invalid manifest: {reason}")]
    Manifest { name: String, reason: String },
    /// The component cannot even be instantiated within its limits.
    #[error("plugin `{name}`: start-up probe failed: {reason}")]
    Probe { name: String, reason: String },
    /// A source lists a plugin that is not in the plugins directory.
    #[error("source `{source_name}` uses plugin `{name}`, which is not in {dir}")]
    NotFound {
        source_name: String,
        name: String,
        dir: PathBuf,
    },
}

/// Why one call of a plugin failed. Becomes the event's dead-letter reason.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallFailure {
    /// The plugin returned `err(message)`.
    #[error("returned error: {0}")]
    Error(String),
    /// The call ran past its deadline and was interrupted.
    #[error("deadline exceeded: stopped after {elapsed:?} (limit {limit:?})")]
    Deadline { limit: Duration, elapsed: Duration },
    /// The plugin tried to grow its memory past the limit.
    #[error("memory limit exceeded ({limit} bytes)")]
    MemoryLimit { limit: usize },
    /// The plugin trapped (panic, unreachable, out-of-bounds access...).
    #[error("trapped: {reason}{}", if stderr.is_empty() { String::new() } else { format!(" ({stderr})") })]
    Trap { reason: String, stderr: String },
    /// The plugin's output broke a host rule (e.g. routed to a sink that does not exist).
    #[error("invalid output: {0}")]
    InvalidOutput(String),
}

/// Why a plugin had no room for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BusyReason {
    /// Its `max_concurrent_calls` calls were running and none finished within the wait.
    #[error("{limit} calls already running (max_concurrent_calls)")]
    Concurrency { limit: usize },
    /// The engine's instance pool, shared by all plugins, had no slot for another instance.
    #[error("the plugin instance pool is exhausted")]
    PoolExhausted,
}

/// A plugin had no room for another call. A capacity limit is neither the event's fault nor
/// the plugin's: the sender is asked to retry (503 with `Retry-After`), nothing is stored, no
/// dedupe mark is held, and it is never a dead letter.
#[derive(Debug, Clone, thiserror::Error)]
#[error("plugin `{plugin}` is busy: {reason}")]
pub struct PluginBusy {
    pub plugin: String,
    pub reason: BusyReason,
}

/// `Retry-After` for a busy plugin: calls last milliseconds, so room frees up soon; a second
/// spreads the retries of a burst.
pub const BUSY_RETRY_AFTER: Duration = Duration::from_secs(1);

/// Why one call of a plugin produced no action.
#[derive(Debug, Clone, thiserror::Error)]
pub enum CallError {
    /// The plugin failed on this event: the event becomes a dead letter.
    #[error(transparent)]
    Failed(#[from] CallFailure),
    /// There was no room to run it: the event is refused for a retry, never dead-lettered.
    #[error("busy: {0}")]
    Busy(BusyReason),
}

/// A verified event as plugins see it.
#[derive(Debug, Clone)]
pub struct Event {
    pub id: String,
    pub source: String,
    pub received_at_ms: u64,
    pub method: String,
    pub path: String,
    pub query: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// One message routed to a named sink.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Routed {
    pub sink: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub priority: Priority,
}

/// A plugin's refusal, answered to the sender.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rejection {
    pub status: u16,
    pub code: String,
    pub message: String,
    pub field: Option<String>,
}

/// A plugin's direct answer to the sender (a provider handshake).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

/// The result of running a source's chain.
#[derive(Debug)]
pub enum ChainOutcome {
    Forward(Vec<Routed>),
    Dropped(String),
    Rejected(Rejection),
    Responded(Reply),
    Failed {
        plugin: String,
        failure: CallFailure,
    },
}

/// A compiled plugin ready to instantiate.
pub struct LoadedPlugin {
    pub name: Arc<str>,
    pub path: PathBuf,
    /// First 12 hex digits of the file's SHA-256: identifies the version in logs and the API.
    pub version: String,
    pub loaded_at: SystemTime,
    pub mode: InstanceMode,
    pub limits: CallLimits,
    /// Sources this plugin's manifest attaches it to.
    attach: Vec<String>,
    order: i32,
    /// SHA-256 of the wasm, manifest and config values, to reuse an unchanged plugin across
    /// reloads.
    digest: [u8; 32],
    config: Arc<HashMap<String, String>>,
    /// The files its `KEY_file` config values were read from (watched for hot reload).
    value_files: Vec<PathBuf>,
    pool: Option<InstancePool>,
    /// One permit per call that may run at once (`limits.max_concurrent_calls`).
    calls: Arc<Semaphore>,
    pre: PluginPre<CallState>,
}

impl LoadedPlugin {
    /// A permit to call this plugin once, waiting up to its deadline for a running call to end:
    /// a call ends within its deadline, so a longer wait means the plugin is saturated.
    async fn admit(&self) -> Result<OwnedSemaphorePermit, PluginBusy> {
        let wait = self.calls.clone().acquire_owned();
        match tokio::time::timeout(self.limits.deadline, wait).await {
            Ok(Ok(permit)) => Ok(permit),
            // Timed out (the semaphore is never closed).
            _ => Err(PluginBusy {
                plugin: self.name.to_string(),
                reason: BusyReason::Concurrency {
                    limit: self.limits.max_concurrent_calls,
                },
            }),
        }
    }
}

/// Room reserved for one event in every plugin of a source's chain, with the plugin set the
/// chain runs on (a reload meanwhile does not change it). Dropping it frees the room.
pub struct Admission {
    set: Arc<PluginSet>,
    source: String,
    _permits: Vec<OwnedSemaphorePermit>,
}

/// The set of loaded plugins and each source's chain, swapped as a whole.
#[derive(Default)]
pub struct PluginSet {
    by_name: HashMap<String, Arc<LoadedPlugin>>,
    chains: HashMap<String, Vec<String>>,
    /// Files plugins read config values from, and those they failed to read: a change to one
    /// triggers a reload.
    value_files: Vec<PathBuf>,
}

impl PluginSet {
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.by_name.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<LoadedPlugin>> {
        self.by_name.values()
    }

    /// The plugins that run for `source`, in order.
    pub fn chain(&self, source: &str) -> &[String] {
        self.chains.get(source).map_or(&[], Vec::as_slice)
    }

    /// `(source, plugin)` for every plugin a source's chain names that is not loaded.
    pub fn unloaded(&self) -> Vec<(String, String)> {
        let mut out: Vec<_> = self
            .chains
            .iter()
            .flat_map(|(source, chain)| {
                chain
                    .iter()
                    .filter(|n| !self.by_name.contains_key(*n))
                    .map(move |n| (source.clone(), n.clone()))
            })
            .collect();
        out.sort();
        out
    }
}

/// What operators see about a plugin (`hookwall plugins`, the admin API).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub file: PathBuf,
    /// The live version, if any loaded.
    pub version: Option<String>,
    pub loaded_at_ms: Option<u64>,
    pub instances: Option<InstanceMode>,
    pub sources: Vec<String>,
    /// Why the newest file could not be loaded (the previous version stays live).
    pub last_error: Option<String>,
    pub load_errors: u64,
}

/// Settings a (re)load needs, taken from the host config once.
struct Settings {
    dir: PathBuf,
    default_limits: CallLimits,
    output: OutputLimits,
    host_values: BTreeMap<String, BTreeMap<String, String>>,
    /// Where the host config's `KEY_file` paths are relative to.
    config_dir: PathBuf,
    /// Each source's plugin list from the host config.
    sources: BTreeMap<String, Vec<String>>,
}

/// The plugin host: runtime plus the current plugin set.
pub struct PluginHost {
    runtime: Runtime,
    current: ArcSwap<PluginSet>,
    settings: Settings,
    status: Mutex<BTreeMap<String, PluginStatus>>,
    /// Serialises rebuilds, so two reloads never race to swap.
    reloading: Mutex<()>,
}

impl PluginHost {
    /// Builds the engine and loads every plugin in the plugins directory. Fails if any of them
    /// cannot be loaded or a source names a plugin that is not there. `kv` backs the plugins'
    /// key-value import (`None`: those calls fail, e.g. in `hookwall check`).
    pub fn load(config: &Config, kv: Option<Arc<dyn PluginKv>>) -> Result<PluginHost, PluginError> {
        let cache_dir = config.storage.path.join("compile-cache");
        let caps = Capabilities {
            kv,
            counters: Arc::new(PluginCounters::default()),
        };
        let runtime = Runtime::new(Some(&cache_dir), caps)?;
        let settings = Settings {
            dir: config.plugins.dir.clone(),
            default_limits: CallLimits {
                max_memory_bytes: config.plugins.max_memory_bytes,
                deadline: config.plugins.deadline,
                max_concurrent_calls: config
                    .plugins
                    .max_concurrent_calls
                    .unwrap_or(DEFAULT_MAX_CONCURRENT_CALLS),
            },
            output: OutputLimits {
                max_deliveries: config.plugins.max_deliveries,
                max_bytes: config.plugins.max_output_bytes,
                max_headers: config.plugins.max_headers,
                max_header_bytes: config.plugins.max_header_bytes,
            },
            host_values: config
                .plugins
                .config
                .keys()
                .map(|name| (name.clone(), config.plugins.values_for(name)))
                .collect(),
            config_dir: config.base_dir.clone(),
            sources: config
                .sources
                .iter()
                .map(|(name, s)| (name.clone(), s.plugins.clone()))
                .collect(),
        };
        let host = PluginHost {
            runtime,
            current: ArcSwap::from_pointee(PluginSet::default()),
            settings,
            status: Mutex::new(BTreeMap::new()),
            reloading: Mutex::new(()),
        };
        let errors = host.rebuild();
        if let Some(e) = errors.into_iter().next() {
            return Err(e);
        }
        let set = host.plugins();
        for (source, list) in &host.settings.sources {
            if let Some(missing) = list.iter().find(|n| set.get(n).is_none()) {
                return Err(PluginError::NotFound {
                    source_name: source.clone(),
                    name: missing.clone(),
                    dir: host.settings.dir.clone(),
                });
            }
        }
        Ok(host)
    }

    /// Rebuilds the plugin set from the directory and swaps it in. Plugins whose files are
    /// unchanged are reused; a plugin whose new file fails keeps its previous version. Returns
    /// the failures (also recorded in [`PluginHost::status`] and logged).
    pub fn rebuild(&self) -> Vec<PluginError> {
        let _guard = self.reloading.lock().unwrap_or_else(|e| e.into_inner());
        let previous = self.plugins();
        let mut errors = Vec::new();
        let mut by_name = HashMap::new();
        let mut failed = BTreeMap::new();
        let mut value_files = Vec::new();
        for (name, wasm, manifest) in scan_dir(&self.settings.dir) {
            match self.load_one(&name, &wasm, &manifest, previous.get(&name)) {
                Ok(plugin) => {
                    by_name.insert(name, plugin);
                }
                Err(e) => {
                    // Creating the missing file must retry the load.
                    if let PluginError::ConfigFile { path, .. } = &e {
                        value_files.push(path.clone());
                    }
                    // Keep the version that works; report the one that does not.
                    if let Some(old) = previous.get(&name) {
                        by_name.insert(name.clone(), old.clone());
                    }
                    failed.insert(name, e.to_string());
                    errors.push(e);
                }
            }
        }
        value_files.extend(by_name.values().flat_map(|p| p.value_files.iter().cloned()));
        // In a stable order: the watcher compares lists across rebuilds.
        value_files.sort();
        value_files.dedup();
        let chains = self.chains(&by_name);
        let set = PluginSet {
            by_name,
            chains,
            value_files,
        };
        self.record_status(&set, &failed);
        for (source, chain) in &set.chains {
            for name in chain.iter().filter(|n| set.get(n).is_none()) {
                tracing::warn!(source, plugin = %name,
                    "source uses a plugin that is not loaded; its events will be dead-lettered");
            }
        }
        // Only after compiling: a rebuild that reused every plugin freed nothing worth trimming.
        let compiled = set.by_name.iter().any(|(name, plugin)| {
            previous
                .get(name)
                .is_none_or(|old| !Arc::ptr_eq(old, plugin))
        });
        self.current.store(Arc::new(set));
        if compiled || !errors.is_empty() {
            runtime::release_freed_memory();
        }
        errors
    }

    fn load_one(
        &self,
        name: &str,
        wasm: &Path,
        manifest_path: &Path,
        previous: Option<&Arc<LoadedPlugin>>,
    ) -> Result<Arc<LoadedPlugin>, PluginError> {
        let bytes = std::fs::read(wasm).map_err(|e| PluginError::Missing {
            name: name.to_string(),
            path: wasm.to_path_buf(),
            reason: e.to_string(),
        })?;
        let manifest_text = std::fs::read(manifest_path).unwrap_or_default();
        let manifest = Manifest::read(name, manifest_path)?.unwrap_or_default();
        // Config values are part of the version: editing a `KEY_file` reloads the plugin.
        let (values, value_files) = self.config_values(name, &manifest)?;
        let mut hasher = sha2::Sha256::new();
        hasher.update(&bytes);
        hasher.update(&manifest_text);
        for (key, value) in &values {
            for part in [key, value] {
                hasher.update((part.len() as u64).to_le_bytes());
                hasher.update(part);
            }
        }
        let digest: [u8; 32] = hasher.finalize().into();
        if let Some(old) = previous.filter(|old| old.digest == digest) {
            return Ok(old.clone());
        }
        let pre = self.runtime.prepare(name, &bytes)?;
        let limits = CallLimits {
            max_memory_bytes: manifest
                .limits
                .max_memory_bytes
                .unwrap_or(self.settings.default_limits.max_memory_bytes),
            deadline: manifest
                .limits
                .deadline
                .unwrap_or(self.settings.default_limits.deadline),
            max_concurrent_calls: manifest
                .limits
                .max_concurrent_calls
                .unwrap_or(self.settings.default_limits.max_concurrent_calls),
        };
        let plugin_name: Arc<str> = Arc::from(name);
        self.runtime
            .probe(&pre, &plugin_name, limits)
            .map_err(|f| PluginError::Probe {
                name: name.to_string(),
                reason: f.to_string(),
            })?;
        let values: HashMap<String, String> = values.into_iter().collect();
        let mode = manifest
            .instances
            .unwrap_or(if bytes.len() > POOL_BY_DEFAULT_ABOVE_BYTES {
                InstanceMode::Pooled
            } else {
                InstanceMode::Fresh
            });
        let pool = (mode == InstanceMode::Pooled)
            .then(|| InstancePool::new(manifest.pool_size(), manifest.recycle_after()));
        let version = hex::encode(&sha2::Sha256::digest(&bytes)[..6]);
        tracing::info!(plugin = name, %version, ?mode, "plugin loaded");
        Ok(Arc::new(LoadedPlugin {
            name: plugin_name,
            path: wasm.to_path_buf(),
            version,
            loaded_at: SystemTime::now(),
            mode,
            limits,
            attach: manifest.sources.clone(),
            order: manifest.order(),
            digest,
            config: Arc::new(values),
            value_files,
            pool,
            calls: Arc::new(Semaphore::new(limits.max_concurrent_calls)),
            pre,
        }))
    }

    /// The plugin's config values (its manifest's, then the host config's over them) with
    /// every `KEY_file` read, and the paths of the files read. A manifest's files must lie in
    /// the plugins directory; the operator's may be anywhere.
    fn config_values(
        &self,
        name: &str,
        manifest: &Manifest,
    ) -> Result<(BTreeMap<String, String>, Vec<PathBuf>), PluginError> {
        let host = self.settings.host_values.get(name);
        let mut values = config_values(&manifest.config);
        // A key the operator sets is not the manifest's to read (an override fixes a bad one).
        values.retain(|key, _| host.is_none_or(|h| !h.contains_key(key)));
        let mut files =
            manifest::read_value_files(name, &mut values, ValueRoot::Confined(&self.settings.dir))?;
        if let Some(host) = host {
            let mut host = host.clone();
            let root = ValueRoot::Open(&self.settings.config_dir);
            files.extend(manifest::read_value_files(name, &mut host, root)?);
            values.extend(host);
        }
        Ok((values, files))
    }

    /// Each source's chain: host-config list, then manifest-attached plugins by order, name.
    fn chains(&self, plugins: &HashMap<String, Arc<LoadedPlugin>>) -> HashMap<String, Vec<String>> {
        let mut attached: Vec<&Arc<LoadedPlugin>> = plugins.values().collect();
        attached.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
        self.settings
            .sources
            .iter()
            .map(|(source, listed)| {
                let mut chain = listed.clone();
                for p in &attached {
                    if p.attach.iter().any(|s| s == source) && !chain.iter().any(|n| **n == *p.name)
                    {
                        chain.push(p.name.to_string());
                    }
                }
                (source.clone(), chain)
            })
            .collect()
    }

    fn record_status(&self, set: &PluginSet, failed: &BTreeMap<String, String>) {
        let mut status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = set.by_name.keys().cloned().collect();
        names.extend(failed.keys().cloned());
        names.sort();
        names.dedup();
        let mut next = BTreeMap::new();
        for name in names {
            let old = status.remove(&name);
            let live = set.get(&name);
            let error = failed.get(&name).cloned();
            if error.is_some() {
                crate::telemetry::metrics::plugin_load_error(&name);
            }
            let load_errors =
                old.as_ref().map_or(0, |o| o.load_errors) + u64::from(error.is_some());
            let sources = set
                .chains
                .iter()
                .filter(|(_, chain)| chain.contains(&name))
                .map(|(s, _)| s.clone())
                .collect::<std::collections::BTreeSet<_>>()
                .into_iter()
                .collect();
            next.insert(
                name.clone(),
                PluginStatus {
                    file: self.settings.dir.join(format!("{name}.wasm")),
                    version: live.map(|p| p.version.clone()),
                    loaded_at_ms: live.map(|p| {
                        p.loaded_at
                            .duration_since(SystemTime::UNIX_EPOCH)
                            .map_or(0, |d| d.as_millis() as u64)
                    }),
                    instances: live.map(|p| p.mode),
                    sources,
                    // A later successful load of the same name clears the error.
                    last_error: error.or_else(|| {
                        old.filter(|o| live.is_some_and(|p| Some(&p.version) == o.version.as_ref()))
                            .and_then(|o| o.last_error)
                    }),
                    load_errors,
                    name,
                },
            );
        }
        *status = next;
    }

    /// What operators see about each plugin.
    pub fn status(&self) -> Vec<PluginStatus> {
        let status = self.status.lock().unwrap_or_else(|e| e.into_inner());
        status.values().cloned().collect()
    }

    /// The files the plugins' `KEY_file` config values come from (see [`PluginSet`]).
    pub fn value_files(&self) -> Vec<PathBuf> {
        self.plugins().value_files.clone()
    }

    /// The plugins directory being served.
    pub fn dir(&self) -> &Path {
        &self.settings.dir
    }

    /// Counters bumped by plugins.
    pub fn counters(&self) -> Vec<((String, String), u64)> {
        self.runtime.counters().snapshot()
    }

    /// A snapshot of the loaded plugins.
    pub fn plugins(&self) -> Arc<PluginSet> {
        self.current.load_full()
    }

    /// Reserves a call permit in every plugin of `source`'s chain, waiting up to each plugin's
    /// deadline (see [`LoadedPlugin::admit`]). A chain calls its plugins one at a time, so one
    /// permit per plugin covers all its calls for the event.
    pub async fn admit(&self, source: &str) -> Result<Admission, PluginBusy> {
        let set = self.plugins();
        let mut permits = Vec::new();
        {
            // In one global order (by name), so two chains never wait on each other in a cycle.
            let mut names: Vec<&String> = set.chain(source).iter().collect();
            names.sort();
            names.dedup();
            for plugin in names.into_iter().filter_map(|n| set.get(n)) {
                permits.push(plugin.admit().await?);
            }
        }
        Ok(Admission {
            set,
            source: source.to_string(),
            _permits: permits,
        })
    }

    /// Runs one plugin once on `event`, converts its action and checks it against the output
    /// limits. Takes no permit: [`PluginHost::run_chain`]'s caller holds them.
    pub fn call(&self, plugin: &LoadedPlugin, event: &Event) -> Result<Action, CallError> {
        let wit_event = types::Event {
            id: event.id.clone(),
            source: event.source.clone(),
            received_at_ms: event.received_at_ms,
            method: event.method.clone(),
            path: event.path.clone(),
            query: event.query.clone(),
            headers: event.headers.clone(),
            body: event.body.clone(),
        };
        let started = std::time::Instant::now();
        let result = self
            .runtime
            .call(
                &plugin.pre,
                &plugin.name,
                &plugin.config,
                plugin.limits,
                plugin.pool.as_ref(),
                &wit_event,
            )
            .map(Action::from)
            .and_then(|action| {
                let checked = self.settings.output.check(&action);
                checked.map(|()| action).map_err(CallError::from)
            });
        let failure = match &result {
            Err(CallError::Failed(failure)) => Some(failure),
            _ => None,
        };
        crate::telemetry::metrics::plugin_call(&plugin.name, started.elapsed(), failure);
        result
    }

    /// Runs the admitted source's chain on `event`, on the plugin set it was admitted to.
    /// `default_sinks` receive unrouted output of the last plugin; `sink_exists` checks routed
    /// sink names. A plugin with no room for a call (its instance could not be allocated) ends
    /// the chain as [`PluginBusy`]: the event is retried by its sender, not failed.
    pub fn run_chain(
        &self,
        admission: &Admission,
        event: Event,
        default_sinks: &[String],
        sink_exists: impl Fn(&str) -> bool,
    ) -> Result<ChainOutcome, PluginBusy> {
        let set = &admission.set;
        let names = set.chain(&admission.source);
        let mut run = ChainRun {
            inputs: vec![event],
            routed: Vec::new(),
            last_drop: None,
        };
        for name in names {
            let Some(plugin) = set.get(name) else {
                return Ok(ChainOutcome::Failed {
                    plugin: name.clone(),
                    failure: CallFailure::InvalidOutput(format!("plugin `{name}` is not loaded")),
                });
            };
            let mut next = Vec::new();
            for input in std::mem::take(&mut run.inputs) {
                let action = match self.call(plugin, &input) {
                    Ok(action) => action,
                    Err(CallError::Busy(reason)) => {
                        let plugin = name.clone();
                        return Err(PluginBusy { plugin, reason });
                    }
                    Err(CallError::Failed(failure)) => {
                        let plugin = name.clone();
                        return Ok(ChainOutcome::Failed { plugin, failure });
                    }
                };
                if let Some(end) = run.take(name, input, action, &mut next, &sink_exists) {
                    return Ok(end);
                }
            }
            run.inputs = next;
        }
        Ok(run.finish(names, default_sinks))
    }
}

/// One event's way through a chain: the next plugin's inputs, and what is routed so far.
struct ChainRun {
    inputs: Vec<Event>,
    routed: Vec<Routed>,
    last_drop: Option<String>,
}

impl ChainRun {
    /// Takes `plugin`'s action on `input`: routed deliveries are final, unrouted ones go to
    /// `next` (the next plugin's inputs). `Some` ends the chain with that outcome.
    fn take(
        &mut self,
        plugin: &str,
        input: Event,
        action: Action,
        next: &mut Vec<Event>,
        sink_exists: &impl Fn(&str) -> bool,
    ) -> Option<ChainOutcome> {
        match action {
            Action::Reject(r) => return Some(ChainOutcome::Rejected(r)),
            Action::Respond(r) => return Some(ChainOutcome::Responded(r)),
            Action::Drop(reason) => self.last_drop = Some(reason),
            Action::Forward(deliveries) => {
                for d in deliveries {
                    match d.sink {
                        Some(sink) if !sink_exists(&sink) => {
                            return Some(ChainOutcome::Failed {
                                plugin: plugin.to_string(),
                                failure: CallFailure::InvalidOutput(format!(
                                    "routed to unknown sink `{sink}`"
                                )),
                            });
                        }
                        Some(sink) => self.routed.push(Routed {
                            sink,
                            headers: d.headers,
                            body: d.body,
                            priority: d.priority,
                        }),
                        None => next.push(Event {
                            headers: d.headers,
                            body: d.body,
                            ..input.clone()
                        }),
                    }
                }
            }
        }
        None
    }

    /// After the last plugin (`names`): unrouted output goes to each of `default_sinks`.
    fn finish(mut self, names: &[String], default_sinks: &[String]) -> ChainOutcome {
        if !self.inputs.is_empty() && default_sinks.is_empty() {
            return ChainOutcome::Failed {
                plugin: names.last().cloned().unwrap_or_default(),
                failure: CallFailure::InvalidOutput(
                    "forwarded unrouted output but the source has no sinks".into(),
                ),
            };
        }
        for input in self.inputs {
            for sink in default_sinks {
                self.routed.push(Routed {
                    sink: sink.clone(),
                    headers: input.headers.clone(),
                    body: input.body.clone(),
                    priority: Priority::Normal,
                });
            }
        }
        match (self.routed.is_empty(), self.last_drop) {
            (true, Some(reason)) => ChainOutcome::Dropped(reason),
            _ => ChainOutcome::Forward(self.routed),
        }
    }
}

/// `(name, NAME.wasm, NAME.toml)` for every plugin file in `dir`, sorted by name.
fn scan_dir(dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut out: Vec<_> = entries
        .filter_map(Result::ok)
        .map(|e| e.path())
        .filter(|p| p.extension().is_some_and(|e| e == "wasm") && p.is_file())
        .filter_map(|p| {
            let name = p.file_stem()?.to_str()?.to_string();
            let manifest = p.with_extension("toml");
            Some((name, p, manifest))
        })
        .collect();
    out.sort();
    out
}

/// Bounds on what one plugin call may return, enforced by the host after each call.
#[derive(Debug, Clone, Copy)]
pub struct OutputLimits {
    pub max_deliveries: usize,
    pub max_bytes: usize,
    pub max_headers: usize,
    pub max_header_bytes: usize,
}

impl OutputLimits {
    /// Checks one call's action; the error names the bound that was crossed.
    fn check(&self, action: &Action) -> Result<(), CallFailure> {
        let over = |what: String| Err(CallFailure::InvalidOutput(what));
        let headers_ok = |headers: &[(String, String)]| {
            headers.len() <= self.max_headers
                && headers
                    .iter()
                    .all(|(k, v)| k.len() + v.len() <= self.max_header_bytes)
        };
        match action {
            Action::Forward(ds) => {
                if ds.len() > self.max_deliveries {
                    return over(format!(
                        "{} deliveries (limit {})",
                        ds.len(),
                        self.max_deliveries
                    ));
                }
                let bytes: usize = ds
                    .iter()
                    .map(|d| {
                        d.body.len()
                            + d.headers
                                .iter()
                                .map(|(k, v)| k.len() + v.len())
                                .sum::<usize>()
                    })
                    .sum();
                if bytes > self.max_bytes {
                    return over(format!(
                        "{bytes} bytes of output (limit {})",
                        self.max_bytes
                    ));
                }
                if !ds.iter().all(|d| headers_ok(&d.headers)) {
                    return over(format!(
                        "headers over the limits ({} per delivery, {} bytes each)",
                        self.max_headers, self.max_header_bytes
                    ));
                }
            }
            Action::Respond(r) => {
                if r.body.len() > self.max_bytes || !headers_ok(&r.headers) {
                    return over("reply over the output limits".into());
                }
            }
            Action::Drop(_) | Action::Reject(_) => {}
        }
        Ok(())
    }
}

/// A plugin's decision, in host types.
#[derive(Debug)]
pub enum Action {
    Forward(Vec<Delivery>),
    Drop(String),
    Reject(Rejection),
    Respond(Reply),
}

/// An action as JSON, for `hookwall plugin test`. Bodies are embedded as JSON when they parse,
/// else as base64.
pub fn action_json(action: &Action) -> serde_json::Value {
    use base64::Engine as _;
    use serde_json::json;
    let body = |b: &[u8]| {
        serde_json::from_slice::<serde_json::Value>(b).unwrap_or_else(
            |_| json!({ "base64": base64::engine::general_purpose::STANDARD.encode(b) }),
        )
    };
    match action {
        Action::Forward(ds) => json!({
            "action": "forward",
            "deliveries": ds.iter().map(|d| json!({
                "sink": d.sink,
                "headers": d.headers,
                "body": body(&d.body),
                "priority": if d.priority == Priority::High { "high" } else { "normal" },
            })).collect::<Vec<_>>(),
        }),
        Action::Drop(reason) => json!({ "action": "drop", "reason": reason }),
        Action::Reject(r) => json!({
            "action": "reject", "status": r.status, "code": r.code,
            "message": r.message, "field": r.field,
        }),
        Action::Respond(r) => json!({
            "action": "respond", "status": r.status, "headers": r.headers, "body": body(&r.body),
        }),
    }
}

/// One delivery as a plugin emitted it.
#[derive(Debug)]
pub struct Delivery {
    pub sink: Option<String>,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub priority: Priority,
}

impl From<types::Action> for Action {
    fn from(action: types::Action) -> Action {
        match action {
            types::Action::Forward(ds) => Action::Forward(
                ds.into_iter()
                    .map(|d| Delivery {
                        sink: d.sink,
                        headers: d.headers,
                        body: d.body,
                        priority: match d.priority {
                            types::Priority::High => Priority::High,
                            types::Priority::Normal => Priority::Normal,
                        },
                    })
                    .collect(),
            ),
            types::Action::Drop(reason) => Action::Drop(reason),
            types::Action::Reject(r) => Action::Reject(Rejection {
                // Only client errors make sense for a refusal; anything else would tell the
                // provider to retry or that we are broken.
                status: if (400..500).contains(&r.status) {
                    r.status
                } else {
                    422
                },
                code: r.code,
                message: r.message,
                field: r.field,
            }),
            types::Action::Respond(r) => Action::Respond(Reply {
                // A handshake answer that is not a success would read as a failed delivery.
                status: if (200..300).contains(&r.status) {
                    r.status
                } else {
                    200
                },
                headers: r.headers,
                body: r.body,
            }),
        }
    }
}
