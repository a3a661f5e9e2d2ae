//! `NAME.toml` beside `NAME.wasm`: how a dropped-in plugin attaches and what it may use.
//!
//! ```toml
//! sources = ["stripe", "github"]   # run for these sources (after their configured plugins)
//! order = 10                       # among manifest-attached plugins, lower runs first (default 100)
//! instances = "pooled"             # or "fresh"; default: fresh below 1 MiB of wasm, else pooled
//! pool_size = 8                    # warm instances kept (pooled)
//! recycle_after = 10000            # calls before a pooled instance is replaced (0 = never)
//!
//! [limits]
//! max_memory_bytes = 33554432
//! deadline = "100ms"
//!
//! [config]                         # values for the `config` import
//! threshold = 5
//! ```
//!
//! Without a manifest, a plugin runs for the sources that list it in the host config, with the
//! host's default limits. Values in the host config's `[plugins.config.NAME]` win over the
//! manifest's `[config]`.
//!
//! A config key ending in `_file` names a file the host reads for the plugin, which has no
//! file access of its own: `schema_file = "schemas/order.json"` also gives the plugin `schema`
//! with the file's text. Paths are relative to the host config's directory (host config) or to
//! the plugins directory (manifest). The file is read whenever the plugin (re)loads.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::PluginError;

/// Above this, a plugin without an `instances` setting is pooled: big components (JS and
/// Python runtimes) cost ~1 ms to instantiate, Rust and C ones ~25 µs.
pub const POOL_BY_DEFAULT_ABOVE_BYTES: usize = 1024 * 1024;
/// The largest memory limit any plugin may ask for.
pub const MAX_PLUGIN_MEMORY_BYTES: usize = 1024 * 1024 * 1024;
const DEFAULT_ORDER: i32 = 100;
const DEFAULT_POOL_SIZE: usize = 4;
const DEFAULT_RECYCLE_AFTER: u64 = 10_000;

/// How a plugin's instances are made.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, serde::Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum InstanceMode {
    /// A new instance per event: full isolation between events.
    Fresh,
    /// Warm instances reused across events (state may carry over between events); one that
    /// trapped or hit a limit is discarded.
    Pooled,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    #[serde(default)]
    pub sources: Vec<String>,
    #[serde(default)]
    pub order: Option<i32>,
    #[serde(default)]
    pub instances: Option<InstanceMode>,
    #[serde(default)]
    pub pool_size: Option<usize>,
    #[serde(default)]
    pub recycle_after: Option<u64>,
    #[serde(default)]
    pub limits: ManifestLimits,
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    pub max_memory_bytes: Option<usize>,
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
}

impl Manifest {
    /// Reads `path` if it exists (`Ok(None)` when there is no manifest).
    pub fn read(name: &str, path: &Path) -> Result<Option<Manifest>, PluginError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(None),
            Err(e) => {
                return Err(PluginError::Manifest {
                    name: name.into(),
                    reason: format!("cannot read {}: {e}", path.display()),
                });
            }
        };
        let manifest: Manifest = toml::from_str(&text).map_err(|e| PluginError::Manifest {
            name: name.into(),
            reason: e.message().to_string(),
        })?;
        if let Some(m) = manifest.limits.max_memory_bytes
            && !(1024 * 1024..=MAX_PLUGIN_MEMORY_BYTES).contains(&m)
        {
            return Err(PluginError::Manifest {
                name: name.into(),
                reason: format!(
                    "limits.max_memory_bytes must be 1 MiB ..= {MAX_PLUGIN_MEMORY_BYTES}"
                ),
            });
        }
        if manifest.limits.deadline.is_some_and(|d| d.is_zero()) {
            return Err(PluginError::Manifest {
                name: name.into(),
                reason: "limits.deadline must be greater than 0".into(),
            });
        }
        Ok(Some(manifest))
    }

    pub fn order(&self) -> i32 {
        self.order.unwrap_or(DEFAULT_ORDER)
    }

    pub fn pool_size(&self) -> usize {
        self.pool_size.unwrap_or(DEFAULT_POOL_SIZE).max(1)
    }

    pub fn recycle_after(&self) -> u64 {
        self.recycle_after.unwrap_or(DEFAULT_RECYCLE_AFTER)
    }
}

/// Suffix of config keys whose value is a file the host reads for the plugin.
pub const FILE_SUFFIX: &str = "_file";

/// For each `KEY_file = PATH` in `values`, reads `PATH` (relative to `base`) and sets `KEY` to
/// its text; returns the paths read. Fails naming the key and path when a file cannot be read.
pub fn read_value_files(
    name: &str,
    values: &mut BTreeMap<String, String>,
    base: &Path,
) -> Result<Vec<PathBuf>, PluginError> {
    let files: Vec<(String, String)> = values
        .iter()
        .filter_map(|(k, v)| Some((k.strip_suffix(FILE_SUFFIX)?.to_owned(), v.clone())))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let mut read = Vec::with_capacity(files.len());
    for (key, path) in files {
        let path = base.join(&path);
        let text = std::fs::read_to_string(&path).map_err(|e| PluginError::ConfigFile {
            name: name.into(),
            key: format!("{key}{FILE_SUFFIX}"),
            path: path.clone(),
            reason: e.to_string(),
        })?;
        values.insert(key, text);
        read.push(path);
    }
    Ok(read)
}

/// Config values as the `config` import hands them out: strings as they are, anything else as
/// JSON text.
pub fn config_values(table: &BTreeMap<String, toml::Value>) -> BTreeMap<String, String> {
    table
        .iter()
        .map(|(k, v)| {
            let text = match v {
                toml::Value::String(s) => s.clone(),
                other => serde_json::to_string(other).unwrap_or_default(),
            };
            (k.clone(), text)
        })
        .collect()
}
