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
//! `NAME.toml` manifest, see [`manifest`]) and lives behind an
//! [`ArcSwap`](arc_swap::ArcSwap): a call takes a snapshot, so swapping in a new set (hot
//! reload, see [`reload`]) never disturbs calls in flight. A rebuild reuses every plugin whose file is unchanged (same SHA-256) and keeps the
//! previous version of any plugin whose new file fails to compile, link or start.
//!
//! ## Chaining
//! A source's chain is its `plugins` list from the host config, followed by the plugins whose
//! manifest names the source, by manifest `order` then name. They run in order. A plugin's
//! `forward` deliveries that name a sink are final; unrouted ones (`sink: none`) become the next
//! plugin's input events (same id and metadata, the delivery's headers and body). After the last
//! plugin, unrouted output goes to each of the source's configured `sinks`. A `reject` anywhere
//! rejects the event; `drop` ends that branch.
//!
//! ## Layout
//! - `host.rs`: [`PluginHost`], the handle other stages hold, composed from the rooms below.
//! - `set.rs`: the loaded [`PluginSet`] (each [`LoadedPlugin`], each source's chain), its
//!   rebuild, and each plugin's [`PluginStatus`].
//! - `load.rs`: loading one plugin from its files (wasm, manifest, config values).
//! - `chain.rs`: chain semantics, with the plugin call as a closure (tested without wasm).
//! - `action.rs`: what goes in and comes out ([`Event`], [`Action`], [`ChainOutcome`]) and the
//!   [`OutputLimits`] every action is checked against.
//! - `wit.rs`: the wasmtime bindings of `wit/plugin.wit` and every WIT <-> host conversion.
//! - `engine.rs`: the engine, the instance pools, the epoch ticker, one call of one plugin.
//! - `imports.rs`: a call's state and the host side of the world's imports.
//! - `capabilities.rs` (key-value trait, counters), `capture.rs` (guest stderr), [`manifest`],
//!   [`reload`] (the watcher) and [`scaffold`] (`hookwall plugin new`).

mod action;
mod capabilities;
mod capture;
mod chain;
mod engine;
mod host;
mod imports;
pub mod kv;
mod load;
pub mod manifest;
pub mod reload;
pub mod scaffold;
mod set;
#[cfg(test)]
mod tests;
mod wit;

use std::path::PathBuf;
use std::time::Duration;

pub use action::{
    Action, ChainOutcome, Delivery, Event, OutputLimits, Rejection, Reply, Routed, action_json,
};
#[cfg(test)]
pub use capabilities::PluginCounters;
pub use engine::{CallLimits, DEFAULT_MAX_CONCURRENT_CALLS};
pub use host::{Admission, PluginHost};
pub use kv::{KvError, KvScope, PluginKv, check_kv_sizes};
pub use manifest::{InstanceMode, config_values};
pub use set::{LoadedPlugin, PluginSet, PluginStatus};

/// Why a plugin could not be loaded.
#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    /// The wasmtime engine could not be set up.
    #[error("plugin engine: {0}")]
    Engine(String),
    /// A source names a plugin whose file is not there.
    #[error("plugin `{name}`: cannot read {path}: {reason}")]
    Missing {
        /// The plugin.
        name: String,
        /// The file that could not be read.
        path: PathBuf,
        /// Why.
        reason: String,
    },
    /// The file is not a valid WebAssembly component.
    #[error("plugin `{name}`: not a valid component: {reason}")]
    Compile {
        /// The plugin.
        name: String,
        /// The compiler's error.
        reason: String,
    },
    /// The component does not implement the `hookwall:plugin` world (or imports something
    /// the host does not offer).
    #[error("plugin `{name}`: does not fit the hookwall:plugin world: {reason}")]
    Link {
        /// The plugin.
        name: String,
        /// The linker's error.
        reason: String,
    },
    /// The component was built for another major version of our WIT package.
    #[error(
        "plugin `{name}`: built for {found}, but this host supports {supported}; rebuild it against this host's wit/"
    )]
    Version {
        /// The plugin.
        name: String,
        /// The package version it imports.
        found: String,
        /// The versions this host implements.
        supported: String,
    },
    /// A `KEY_file` config value names a file that cannot be read. (A manifest's value that
    /// leads out of the plugins directory is a [`PluginError::Manifest`] error.)
    #[error("plugin `{name}`: config `{key}`: cannot read {path}: {reason}")]
    ConfigFile {
        /// The plugin.
        name: String,
        /// The config key (ending in `_file`).
        key: String,
        /// The file it names.
        path: PathBuf,
        /// Why it cannot be read.
        reason: String,
    },
    /// The plugin's `NAME.toml` is invalid.
    #[error("plugin `{name}`: invalid manifest: {reason}")]
    Manifest {
        /// The plugin.
        name: String,
        /// What is wrong with it.
        reason: String,
    },
    /// The component cannot even be instantiated within its limits.
    #[error("plugin `{name}`: start-up probe failed: {reason}")]
    Probe {
        /// The plugin.
        name: String,
        /// How the start failed.
        reason: String,
    },
    /// A source lists a plugin that is not in the plugins directory.
    #[error("source `{source_name}` uses plugin `{name}`, which is not in {dir}")]
    NotFound {
        /// The source.
        source_name: String,
        /// The plugin it lists.
        name: String,
        /// The plugins directory.
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
    Deadline {
        /// The plugin's deadline.
        limit: Duration,
        /// How long the call ran.
        elapsed: Duration,
    },
    /// The plugin tried to grow its memory past the limit.
    #[error("memory limit exceeded ({limit} bytes)")]
    MemoryLimit {
        /// The plugin's memory limit.
        limit: usize,
    },
    /// The plugin trapped (panic, unreachable, out-of-bounds access...).
    #[error("trapped: {reason}{}", if stderr.is_empty() { String::new() } else { format!(" ({stderr})") })]
    Trap {
        /// The trap's root cause.
        reason: String,
        /// The last of what the guest wrote to stderr (a panic message).
        stderr: String,
    },
    /// The plugin's output broke a host rule (e.g. routed to a sink that does not exist).
    #[error("invalid output: {0}")]
    InvalidOutput(String),
}

impl CallFailure {
    /// The `kind` label of `hookwall_plugin_failures_total`.
    pub fn kind(&self) -> &'static str {
        match self {
            CallFailure::Error(_) => "error",
            CallFailure::Deadline { .. } => "timeout",
            CallFailure::MemoryLimit { .. } => "memory",
            CallFailure::Trap { .. } => "trap",
            CallFailure::InvalidOutput(_) => "invalid_output",
        }
    }
}

/// Why a plugin had no room for a call.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum BusyReason {
    /// Its `max_concurrent_calls` calls were running and none finished within the wait.
    #[error("{limit} calls already running (max_concurrent_calls)")]
    Concurrency {
        /// The plugin's `max_concurrent_calls`.
        limit: usize,
    },
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
    /// The plugin with no room.
    pub plugin: String,
    /// Which room was missing.
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
