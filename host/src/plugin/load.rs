//! Loading one plugin from its files: `NAME.wasm`, its optional `NAME.toml` manifest and the
//! files its `KEY_file` config values name. The result is a [`LoadedPlugin`] that has been
//! compiled, linked and started once within its limits, or the [`PluginError`] that says why
//! not.
//!
//! A plugin's version is the SHA-256 of all of its inputs (wasm, manifest, config values), so
//! a rebuild reuses a plugin whose inputs did not change instead of compiling it again.

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, UNIX_EPOCH};

use sha2::Digest;
use tokio::sync::Semaphore;

use crate::config::Config;

use super::PluginError;
use super::action::OutputLimits;
use super::engine::{CallLimits, DEFAULT_MAX_CONCURRENT_CALLS, InstancePool, Runtime};
use super::manifest::{self, InstanceMode, Manifest, POOL_BY_DEFAULT_ABOVE_BYTES, ValueRoot};
use super::set::LoadedPlugin;

/// Settings a (re)load needs, taken from the host config once.
pub(super) struct Settings {
    /// The plugins directory.
    pub(super) dir: PathBuf,
    /// Limits of a plugin whose manifest sets none.
    pub(super) default_limits: CallLimits,
    /// Bounds on every call's output.
    pub(super) output: OutputLimits,
    /// The host config's `[plugins.config.NAME]` values, by plugin.
    pub(super) host_values: BTreeMap<String, BTreeMap<String, String>>,
    /// Where the host config's `KEY_file` paths are relative to.
    pub(super) config_dir: PathBuf,
    /// Each source's plugin list from the host config.
    pub(super) sources: BTreeMap<String, Vec<String>>,
}

impl Settings {
    /// The plugin settings of `config`.
    pub(super) fn new(config: &Config) -> Settings {
        let plugins = &config.plugins;
        Settings {
            dir: plugins.dir.clone(),
            default_limits: CallLimits {
                max_memory_bytes: plugins.max_memory_bytes,
                deadline: plugins.deadline,
                max_concurrent_calls: plugins
                    .max_concurrent_calls
                    .unwrap_or(DEFAULT_MAX_CONCURRENT_CALLS),
            },
            output: OutputLimits {
                max_deliveries: plugins.max_deliveries,
                max_bytes: plugins.max_output_bytes,
                max_headers: plugins.max_headers,
                max_header_bytes: plugins.max_header_bytes,
            },
            host_values: plugins
                .config
                .keys()
                .map(|name| (name.clone(), plugins.values_for(name)))
                .collect(),
            config_dir: config.base_dir.clone(),
            sources: config
                .sources
                .iter()
                .map(|(name, s)| (name.clone(), s.plugins.clone()))
                .collect(),
        }
    }
}

/// `(name, NAME.wasm, NAME.toml)` for every plugin file in `dir`, sorted by name.
pub(super) fn scan_dir(dir: &Path) -> Vec<(String, PathBuf, PathBuf)> {
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

/// Loads plugins with one runtime and one set of settings.
pub(super) struct Loader<'a> {
    pub(super) runtime: &'a Runtime,
    pub(super) settings: &'a Settings,
}

impl Loader<'_> {
    /// Loads plugin `name` from `wasm` and `manifest_path`, or returns `previous` when none of
    /// its inputs changed.
    pub(super) fn load(
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
        let digest = digest(&bytes, &manifest_text, &values);
        if let Some(old) = previous.filter(|old| old.digest == digest) {
            return Ok(old.clone());
        }
        let pre = self.runtime.prepare(name, &bytes)?;
        let limits = self.limits(&manifest);
        let plugin_name: Arc<str> = Arc::from(name);
        self.runtime
            .probe(&pre, &plugin_name, limits)
            .map_err(|f| PluginError::Probe {
                name: name.to_string(),
                reason: f.to_string(),
            })?;
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
            loaded_at: UNIX_EPOCH + Duration::from_millis(crate::clock::now_ms()),
            mode,
            limits,
            attach: manifest.sources.clone(),
            order: manifest.order(),
            digest,
            config: Arc::new(values.into_iter().collect::<HashMap<_, _>>()),
            value_files,
            pool,
            calls: Arc::new(Semaphore::new(limits.max_concurrent_calls)),
            pre,
        }))
    }

    /// The manifest's limits, each defaulting to the host config's.
    fn limits(&self, manifest: &Manifest) -> CallLimits {
        let default = self.settings.default_limits;
        let set = &manifest.limits;
        CallLimits {
            max_memory_bytes: set.max_memory_bytes.unwrap_or(default.max_memory_bytes),
            deadline: set.deadline.unwrap_or(default.deadline),
            max_concurrent_calls: set
                .max_concurrent_calls
                .unwrap_or(default.max_concurrent_calls),
        }
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
        let mut values = manifest::config_values(&manifest.config);
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
}

/// SHA-256 of everything a plugin is loaded from: the wasm, the manifest's text and the
/// config values (each part length-prefixed, so no two lists hash alike).
fn digest(wasm: &[u8], manifest: &[u8], values: &BTreeMap<String, String>) -> [u8; 32] {
    let mut hasher = sha2::Sha256::new();
    hasher.update(wasm);
    hasher.update(manifest);
    for (key, value) in values {
        for part in [key, value] {
            hasher.update((part.len() as u64).to_le_bytes());
            hasher.update(part);
        }
    }
    hasher.finalize().into()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn values(pairs: &[(&str, &str)]) -> BTreeMap<String, String> {
        pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    #[test]
    fn the_digest_tells_config_values_apart() {
        let base = digest(b"wasm", b"", &values(&[("ab", "c")]));
        assert_eq!(base, digest(b"wasm", b"", &values(&[("ab", "c")])));
        assert_ne!(base, digest(b"wasm", b"", &values(&[("a", "bc")])));
        assert_ne!(base, digest(b"wasm", b"x", &values(&[("ab", "c")])));
    }

    #[test]
    fn scan_dir_lists_wasm_files_by_name() {
        let dir = tempfile::tempdir().unwrap();
        for file in ["b.wasm", "a.wasm", "a.toml", "notes.txt"] {
            std::fs::write(dir.path().join(file), b"").unwrap();
        }
        std::fs::create_dir(dir.path().join("dir.wasm")).unwrap();
        let names: Vec<String> = scan_dir(dir.path()).into_iter().map(|(n, ..)| n).collect();
        assert_eq!(names, ["a", "b"]);
        assert!(scan_dir(&dir.path().join("absent")).is_empty());
    }
}
