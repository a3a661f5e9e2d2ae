//! The loaded plugin set: every [`LoadedPlugin`] of the plugins directory and each source's
//! chain, built as a whole ([`build`]) and swapped as a whole by the host. Also what operators
//! see about each plugin ([`PluginStatus`]), kept across rebuilds by a [`StatusBook`].
//!
//! A rebuild reuses every plugin whose inputs are unchanged and keeps the previous version of
//! any plugin whose new files fail to load; the failure is reported in its status.

use std::collections::{BTreeMap, BTreeSet, HashMap};
use std::path::PathBuf;
use std::sync::{Arc, Mutex};
use std::time::SystemTime;

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

use super::engine::{CallLimits, Callee, InstancePool};
use super::imports::CallState;
use super::load::{Loader, scan_dir};
use super::manifest::InstanceMode;
use super::wit::PluginPre;
use super::{BusyReason, PluginBusy, PluginError};

/// A compiled plugin ready to instantiate.
pub struct LoadedPlugin {
    /// Its name (the file's stem).
    pub name: Arc<str>,
    /// The `.wasm` file it was loaded from.
    pub path: PathBuf,
    /// First 12 hex digits of the file's SHA-256: identifies the version in logs and the API.
    pub version: String,
    /// When this version was loaded.
    pub loaded_at: SystemTime,
    /// A fresh instance per call, or warm ones from a pool.
    pub mode: InstanceMode,
    /// Its per-call limits.
    pub limits: CallLimits,
    /// Sources this plugin's manifest attaches it to.
    pub(super) attach: Vec<String>,
    pub(super) order: i32,
    /// SHA-256 of the wasm, manifest and config values, to reuse an unchanged plugin across
    /// reloads.
    pub(super) digest: [u8; 32],
    pub(super) config: Arc<HashMap<String, String>>,
    /// The files its `KEY_file` config values were read from (watched for hot reload).
    pub(super) value_files: Vec<PathBuf>,
    pub(super) pool: Option<InstancePool>,
    /// One permit per call that may run at once (`limits.max_concurrent_calls`).
    pub(super) calls: Arc<Semaphore>,
    pub(super) pre: PluginPre<CallState>,
}

impl LoadedPlugin {
    /// A permit to call this plugin once, waiting up to its deadline for a running call to end:
    /// a call ends within its deadline, so a longer wait means the plugin is saturated.
    pub(super) async fn admit(&self) -> Result<OwnedSemaphorePermit, PluginBusy> {
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

    /// What the engine needs to call this plugin.
    pub(super) fn callee(&self) -> Callee<'_> {
        Callee {
            pre: &self.pre,
            name: &self.name,
            config: &self.config,
            limits: self.limits,
            pool: self.pool.as_ref(),
        }
    }
}

/// The set of loaded plugins and each source's chain, swapped as a whole.
#[derive(Default)]
pub struct PluginSet {
    by_name: HashMap<String, Arc<LoadedPlugin>>,
    chains: HashMap<String, Vec<String>>,
    /// Files plugins read config values from, and those they failed to read: a change to one
    /// triggers a reload.
    pub(super) value_files: Vec<PathBuf>,
}

impl PluginSet {
    /// The loaded plugin `name`.
    pub fn get(&self, name: &str) -> Option<&Arc<LoadedPlugin>> {
        self.by_name.get(name)
    }

    /// Every loaded plugin, in no particular order.
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

    /// The sources whose chain runs plugin `name`, sorted.
    fn sources_of(&self, name: &str) -> Vec<String> {
        let sources: BTreeSet<&String> = self
            .chains
            .iter()
            .filter(|(_, chain)| chain.iter().any(|n| n == name))
            .map(|(s, _)| s)
            .collect();
        sources.into_iter().cloned().collect()
    }

    /// Whether this set holds a plugin that `previous` did not (one that was compiled).
    pub(super) fn compiled_since(&self, previous: &PluginSet) -> bool {
        self.by_name.iter().any(|(name, plugin)| {
            previous
                .get(name)
                .is_none_or(|old| !Arc::ptr_eq(old, plugin))
        })
    }

    /// Logs every plugin a chain names that is not loaded.
    pub(super) fn warn_unloaded(&self) {
        for (source, chain) in &self.chains {
            for name in chain.iter().filter(|n| self.get(n).is_none()) {
                tracing::warn!(source, plugin = %name,
                    "source uses a plugin that is not loaded; its events will be dead-lettered");
            }
        }
    }
}

/// A new plugin set, and what failed to load for it.
pub(super) struct Rebuilt {
    pub(super) set: PluginSet,
    /// The message of each plugin that failed, by name.
    pub(super) failed: BTreeMap<String, String>,
    pub(super) errors: Vec<PluginError>,
}

/// Builds a plugin set from the plugins directory, reusing `previous`'s plugins whose inputs
/// are unchanged and keeping the previous version of any that fails.
pub(super) fn build(loader: &Loader<'_>, previous: &PluginSet) -> Rebuilt {
    let mut errors = Vec::new();
    let mut by_name = HashMap::new();
    let mut failed = BTreeMap::new();
    let mut value_files = Vec::new();
    for (name, wasm, manifest) in scan_dir(&loader.settings.dir) {
        match loader.load(&name, &wasm, &manifest, previous.get(&name)) {
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
    let chains = chains(&loader.settings.sources, &by_name);
    let set = PluginSet {
        by_name,
        chains,
        value_files,
    };
    Rebuilt {
        set,
        failed,
        errors,
    }
}

/// Each source's chain: its host-config list (`sources`), then the plugins whose manifest
/// attaches them to it, by order, then name.
fn chains(
    sources: &BTreeMap<String, Vec<String>>,
    plugins: &HashMap<String, Arc<LoadedPlugin>>,
) -> HashMap<String, Vec<String>> {
    let mut attached: Vec<&Arc<LoadedPlugin>> = plugins.values().collect();
    attached.sort_by(|a, b| (a.order, &a.name).cmp(&(b.order, &b.name)));
    sources
        .iter()
        .map(|(source, listed)| {
            let mut chain = listed.clone();
            for p in &attached {
                if p.attach.iter().any(|s| s == source) && !chain.iter().any(|n| **n == *p.name) {
                    chain.push(p.name.to_string());
                }
            }
            (source.clone(), chain)
        })
        .collect()
}

/// What operators see about a plugin (`hookwall plugins`, the admin API).
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    /// Its name.
    pub name: String,
    /// Its `.wasm` file.
    pub file: PathBuf,
    /// The live version, if any loaded.
    pub version: Option<String>,
    /// When the live version was loaded, in ms since the Unix epoch.
    pub loaded_at_ms: Option<u64>,
    /// How the live version is instantiated.
    pub instances: Option<InstanceMode>,
    /// The sources whose chain runs it.
    pub sources: Vec<String>,
    /// Why the newest file could not be loaded (the previous version stays live).
    pub last_error: Option<String>,
    /// Failed loads of this plugin since start.
    pub load_errors: u64,
}

/// Each plugin's status, by name, carried from one rebuild to the next.
#[derive(Default)]
pub(super) struct StatusBook(Mutex<BTreeMap<String, PluginStatus>>);

impl StatusBook {
    /// Records the statuses after a rebuild into `set`, where `failed` failed to load; the
    /// plugins live in `dir`.
    pub(super) fn record(
        &self,
        set: &PluginSet,
        failed: &BTreeMap<String, String>,
        dir: &std::path::Path,
    ) {
        let mut status = self.0.lock().unwrap_or_else(|e| e.into_inner());
        let mut names: Vec<String> = set.by_name.keys().cloned().collect();
        names.extend(failed.keys().cloned());
        names.sort();
        names.dedup();
        let mut next = BTreeMap::new();
        for name in names {
            let old = status.remove(&name);
            let error = failed.get(&name).cloned();
            if error.is_some() {
                crate::telemetry::metrics::plugin_load_error(&name);
            }
            let file = dir.join(format!("{name}.wasm"));
            let new = status_after(set, name.clone(), file, old, error);
            next.insert(name, new);
        }
        *status = next;
    }

    /// Every plugin's status, by name.
    pub(super) fn list(&self) -> Vec<PluginStatus> {
        let status = self.0.lock().unwrap_or_else(|e| e.into_inner());
        status.values().cloned().collect()
    }
}

/// Plugin `name`'s status in `set`, after `old`, when its load just failed with `error`.
fn status_after(
    set: &PluginSet,
    name: String,
    file: PathBuf,
    old: Option<PluginStatus>,
    error: Option<String>,
) -> PluginStatus {
    let live = set.get(&name);
    let load_errors = old.as_ref().map_or(0, |o| o.load_errors) + u64::from(error.is_some());
    PluginStatus {
        file,
        version: live.map(|p| p.version.clone()),
        loaded_at_ms: live.map(|p| {
            p.loaded_at
                .duration_since(SystemTime::UNIX_EPOCH)
                .map_or(0, |d| d.as_millis() as u64)
        }),
        instances: live.map(|p| p.mode),
        sources: set.sources_of(&name),
        // A later successful load of the same name clears the error.
        last_error: error.or_else(|| {
            old.filter(|o| live.is_some_and(|p| Some(&p.version) == o.version.as_ref()))
                .and_then(|o| o.last_error)
        }),
        load_errors,
        name,
    }
}
