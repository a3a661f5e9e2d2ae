//! [`PluginHost`], the one handle other stages hold: the engine, the current plugin set behind
//! an [`ArcSwap`], and the operations on them — load and rebuild the set, reserve room for an
//! event ([`Admission`]), call one plugin, run a source's chain.
//!
//! Each operation is composed here from the rooms beside it: [`super::load`] and
//! [`super::set`] build the set, [`super::engine`] calls a plugin, [`super::chain`] turns the
//! calls into an outcome.

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};

use arc_swap::ArcSwap;
use tokio::sync::OwnedSemaphorePermit;
use tracing::Instrument as _;

use crate::config::Config;

use super::action::{Action, ChainOutcome, Event};
use super::capabilities::PluginCounters;
use super::chain::Calls;
use super::engine::{self, Runtime};
use super::imports::Capabilities;
use super::kv::PluginKv;
use super::load::{Loader, Settings};
use super::set::{self, LoadedPlugin, PluginSet, PluginStatus, Rebuilt, StatusBook};
use super::wit::types;
use super::{CallError, PluginBusy, PluginError};

/// The plugin host: runtime plus the current plugin set.
pub struct PluginHost {
    runtime: Runtime,
    current: ArcSwap<PluginSet>,
    settings: Settings,
    status: StatusBook,
    /// Serialises rebuilds, so two reloads never race to swap.
    reloading: Mutex<()>,
}

/// Room reserved for one event in every plugin of a source's chain, with the plugin set the
/// chain runs on (a reload meanwhile does not change it). Dropping it frees the room.
pub struct Admission {
    set: Arc<PluginSet>,
    source: String,
    _permits: Vec<OwnedSemaphorePermit>,
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
        let host = PluginHost {
            runtime: Runtime::new(Some(&cache_dir), caps)?,
            current: ArcSwap::from_pointee(PluginSet::default()),
            settings: Settings::new(config),
            status: StatusBook::default(),
            reloading: Mutex::new(()),
        };
        if let Some(e) = host.rebuild().into_iter().next() {
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
        let loader = Loader {
            runtime: &self.runtime,
            settings: &self.settings,
        };
        let Rebuilt {
            set,
            failed,
            errors,
        } = set::build(&loader, &previous);
        self.status.record(&set, &failed, &self.settings.dir);
        set.warn_unloaded();
        // Only after compiling: a rebuild that reused every plugin freed nothing worth trimming.
        let compiled = set.compiled_since(&previous);
        self.current.store(Arc::new(set));
        if compiled || !errors.is_empty() {
            engine::release_freed_memory();
        }
        errors
    }

    /// What operators see about each plugin.
    pub fn status(&self) -> Vec<PluginStatus> {
        self.status.list()
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
    /// deadline (see `LoadedPlugin::admit`). A chain calls its plugins one at a time, so one
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
    pub async fn call(&self, plugin: &LoadedPlugin, event: &Event) -> Result<Action, CallError> {
        let wit_event = types::Event::from(event);
        let span = tracing::debug_span!("plugin",
            otel.name = %format_args!("plugin {}", plugin.name),
            plugin.name = %plugin.name, plugin.version = %plugin.version,
            plugin.action = tracing::field::Empty, otel.status_code = tracing::field::Empty);
        let started = std::time::Instant::now();
        let result = self
            .runtime
            .call(plugin.callee(), &wit_event)
            .instrument(span.clone())
            .await
            .map(Action::from)
            .and_then(|action| {
                let checked = self.settings.output.check(&action);
                checked.map(|()| action).map_err(CallError::from)
            });
        let failure = match &result {
            Err(CallError::Failed(failure)) => Some(failure.kind()),
            _ => None,
        };
        crate::telemetry::metrics::plugin_call(&plugin.name, started.elapsed(), failure);
        let action = match &result {
            Ok(Action::Forward(_)) => "forward",
            Ok(Action::Drop(_)) => "drop",
            Ok(Action::Reject(_)) => "reject",
            Ok(Action::Respond(_)) => "respond",
            Err(CallError::Busy(_)) => "busy",
            Err(CallError::Failed(f)) => f.kind(),
        };
        span.record("plugin.action", action);
        if failure.is_some() {
            span.record("otel.status_code", "error");
        }
        result
    }

    /// Runs the admitted source's chain on `event`, on the plugin set it was admitted to
    /// (semantics in `chain.rs`). `default_sinks` receive unrouted output of the last
    /// plugin; `sink_exists` checks routed sink names. A plugin with no room for a call (its
    /// instance could not be allocated) ends the chain as [`PluginBusy`]: the event is retried
    /// by its sender, not failed.
    pub async fn run_chain(
        &self,
        admission: &Admission,
        event: Event,
        default_sinks: &[String],
        sink_exists: impl Fn(&str) -> bool,
    ) -> Result<ChainOutcome, PluginBusy> {
        let set = &admission.set;
        let names = set.chain(&admission.source);
        let plugins = LoadedCalls { host: self, set };
        super::chain::run(names, event, default_sinks, sink_exists, plugins).await
    }
}

/// A chain's calls of the plugins loaded in one set.
struct LoadedCalls<'a> {
    host: &'a PluginHost,
    set: &'a PluginSet,
}

impl Calls for LoadedCalls<'_> {
    fn has(&self, name: &str) -> bool {
        self.set.get(name).is_some()
    }

    async fn call(&mut self, name: &str, input: &Event) -> Result<Action, CallError> {
        match self.set.get(name) {
            Some(plugin) => self.host.call(plugin, input).await,
            None => Err(super::chain::not_loaded(name).into()),
        }
    }
}
