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
//! max_concurrent_calls = 8         # calls at once; more wait up to `deadline`, then get 503
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
//!
//! A manifest comes with the plugin, whose author is trusted less than the operator: its file
//! values must stay inside the plugins directory (relative, no `..` out of it, no symlink that
//! resolves outside), or the plugin fails to load naming the key. Otherwise a manifest could
//! hand the plugin any file the host can read (`/proc/self/environ` holds the `env:` secrets).
//! The host config's values are the operator's and may name any file.

use std::collections::BTreeMap;
use std::path::{Component, Path, PathBuf};
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

/// A plugin's manifest, `NAME.toml` beside `NAME.wasm` (see the module docs).
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Manifest {
    /// `sources = ["stripe"]`: sources the plugin runs for, after their configured plugins.
    #[serde(default)]
    pub sources: Vec<String>,
    /// `order = 100` (default): among manifest-attached plugins, lower runs first.
    #[serde(default)]
    pub order: Option<i32>,
    /// `instances = "pooled"` or `"fresh"`; default: fresh up to 1 MiB of wasm, else pooled.
    #[serde(default)]
    pub instances: Option<InstanceMode>,
    /// `pool_size = 4` (default): warm instances kept when pooled (at least 1).
    #[serde(default)]
    pub pool_size: Option<usize>,
    /// `recycle_after = 10000` (default): calls before a pooled instance is replaced (0 = never).
    #[serde(default)]
    pub recycle_after: Option<u64>,
    /// `[limits]`: the plugin's own call limits, each defaulting to the host config's.
    #[serde(default)]
    pub limits: ManifestLimits,
    /// `[config]`: values for the `config` import; the host's `[plugins.config.NAME]` wins.
    #[serde(default)]
    pub config: BTreeMap<String, toml::Value>,
}

/// A manifest's `[limits]`; an absent one takes the host config's `[plugins]` value.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ManifestLimits {
    /// `max_memory_bytes = 33554432`: linear memory one call may use (1 MiB to 1 GiB).
    pub max_memory_bytes: Option<usize>,
    /// `deadline = "100ms"`: wall-clock time one call may take (more than 0).
    #[serde(default, with = "humantime_serde")]
    pub deadline: Option<Duration>,
    /// `max_concurrent_calls = 8`: calls of this plugin that may run at once.
    pub max_concurrent_calls: Option<usize>,
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
        if manifest.limits.max_concurrent_calls == Some(0) {
            return Err(PluginError::Manifest {
                name: name.into(),
                reason: "limits.max_concurrent_calls must be at least 1".into(),
            });
        }
        Ok(Some(manifest))
    }

    /// The plugin's `order`, 100 when unset.
    pub fn order(&self) -> i32 {
        self.order.unwrap_or(DEFAULT_ORDER)
    }

    /// The pool size in force: `pool_size`, 4 when unset, at least 1.
    pub fn pool_size(&self) -> usize {
        self.pool_size.unwrap_or(DEFAULT_POOL_SIZE).max(1)
    }

    /// Calls before a pooled instance is replaced: `recycle_after`, 10000 when unset.
    pub fn recycle_after(&self) -> u64 {
        self.recycle_after.unwrap_or(DEFAULT_RECYCLE_AFTER)
    }
}

/// Suffix of config keys whose value is a file the host reads for the plugin.
pub const FILE_SUFFIX: &str = "_file";

/// Where `KEY_file` paths are read from, and how far they may reach.
#[derive(Debug, Clone, Copy)]
pub enum ValueRoot<'a> {
    /// A manifest's values: relative to this directory (the plugins directory) and confined to
    /// it, symlinks resolved.
    Confined(&'a Path),
    /// The operator's values: relative to this directory (the host config's), anywhere.
    Open(&'a Path),
}

/// For each `KEY_file = PATH` in `values`, reads `PATH` (see [`ValueRoot`]) and sets `KEY` to
/// its text; returns the paths read. Fails naming the key and path when a file cannot be read,
/// and naming the key when a confined path leads out of its directory.
pub fn read_value_files(
    name: &str,
    values: &mut BTreeMap<String, String>,
    root: ValueRoot<'_>,
) -> Result<Vec<PathBuf>, PluginError> {
    let files: Vec<(String, String)> = values
        .iter()
        .filter_map(|(k, v)| Some((k.strip_suffix(FILE_SUFFIX)?.to_owned(), v.clone())))
        .filter(|(k, _)| !k.is_empty())
        .collect();
    let mut read = Vec::with_capacity(files.len());
    for (key, value) in files {
        let file_key = format!("{key}{FILE_SUFFIX}");
        let unreadable = |path: &Path, e: std::io::Error| PluginError::ConfigFile {
            name: name.into(),
            key: file_key.clone(),
            path: path.to_path_buf(),
            reason: e.to_string(),
        };
        let (path, source) = match root {
            ValueRoot::Open(base) => (base.join(&value), base.join(&value)),
            ValueRoot::Confined(dir) => {
                let path = dir.join(&value);
                let source = confine(dir, &value).map_err(|e| match e {
                    Refused::Io(e) => unreadable(&path, e),
                    Refused::Outside(why) => PluginError::Manifest {
                        name: name.into(),
                        reason: format!(
                            "config `{file_key}` = {value:?} {why}; a manifest may only name \
                             files inside the plugins directory {}",
                            dir.display()
                        ),
                    },
                })?;
                (path, source)
            }
        };
        // A confined value is read through its resolved path, the one that was checked.
        let text = std::fs::read_to_string(&source).map_err(|e| unreadable(&path, e))?;
        values.insert(key, text);
        read.push(path);
    }
    Ok(read)
}

/// Why a confined value file was not accepted.
#[derive(Debug)]
enum Refused {
    /// The path leads out of the directory (the text completes "`KEY_file` = PATH …").
    Outside(&'static str),
    /// The file (or the directory) cannot be resolved: it is missing or unreadable.
    Io(std::io::Error),
}

/// `value` resolved inside `dir`: refused when it is absolute, when its `..` climb out of `dir`,
/// or when it resolves (through symlinks) to a file outside `dir`. Checked on the words first,
/// so `../secret` is refused whether or not it exists.
fn confine(dir: &Path, value: &str) -> Result<PathBuf, Refused> {
    let mut depth = 0usize;
    for part in Path::new(value).components() {
        match part {
            Component::Normal(_) => depth += 1,
            Component::CurDir => {}
            Component::ParentDir if depth > 0 => depth -= 1,
            Component::ParentDir => return Err(Refused::Outside("climbs out with `..`")),
            Component::RootDir | Component::Prefix(_) => {
                return Err(Refused::Outside("is an absolute path"));
            }
        }
    }
    let dir = dir.canonicalize().map_err(Refused::Io)?;
    let resolved = dir.join(value).canonicalize().map_err(Refused::Io)?;
    if resolved.starts_with(&dir) {
        Ok(resolved)
    } else {
        Err(Refused::Outside("resolves (through a symlink) outside"))
    }
}

pub use crate::config::config_values;

#[cfg(test)]
mod tests {
    use super::*;

    /// `root/plugins` with `inside.txt` and `sub/`, and `root/secret.txt` beside it.
    fn layout() -> (tempfile::TempDir, PathBuf) {
        let root = tempfile::tempdir().unwrap();
        let dir = root.path().join("plugins");
        std::fs::create_dir_all(dir.join("sub")).unwrap();
        std::fs::write(dir.join("inside.txt"), "in").unwrap();
        std::fs::write(root.path().join("secret.txt"), "top-secret-content").unwrap();
        (root, dir)
    }

    fn read(root: ValueRoot<'_>, value: &str) -> Result<BTreeMap<String, String>, PluginError> {
        let mut values = BTreeMap::from([("x_file".to_string(), value.to_string())]);
        read_value_files("p", &mut values, root).map(|_| values)
    }

    #[test]
    fn confined_values_stay_in_the_directory() {
        let (root, dir) = layout();
        std::os::unix::fs::symlink("../secret.txt", dir.join("out.txt")).unwrap();
        std::os::unix::fs::symlink("inside.txt", dir.join("alias.txt")).unwrap();
        let secret = root.path().join("secret.txt");
        for value in [
            secret.to_str().unwrap(),
            "../secret.txt",
            "sub/../../secret.txt",
            "out.txt",
            "../missing.txt",
        ] {
            let err = read(ValueRoot::Confined(&dir), value).unwrap_err();
            assert!(
                matches!(err, PluginError::Manifest { .. }),
                "{value}: {err}"
            );
            let text = err.to_string();
            assert!(text.contains("config `x_file`"), "{text}");
            assert!(!text.contains("top-secret-content"), "{text}");
        }
        for value in ["inside.txt", "./sub/../inside.txt", "alias.txt"] {
            let values = read(ValueRoot::Confined(&dir), value).unwrap();
            assert_eq!(values["x"], "in", "{value}");
        }
        // A missing file inside is an unreadable file (watched, so creating it reloads).
        let err = read(ValueRoot::Confined(&dir), "later.txt").unwrap_err();
        assert!(matches!(err, PluginError::ConfigFile { .. }), "{err}");
    }

    #[test]
    fn the_operators_values_may_name_any_file() {
        let (root, dir) = layout();
        let values = read(ValueRoot::Open(&dir), "../secret.txt").unwrap();
        assert_eq!(values["x"], "top-secret-content");
        let absolute = root.path().join("secret.txt");
        let values = read(ValueRoot::Open(&dir), absolute.to_str().unwrap()).unwrap();
        assert_eq!(values["x"], "top-secret-content");
    }

    #[test]
    fn max_concurrent_calls_must_be_at_least_one() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.toml");
        std::fs::write(&path, "[limits]\nmax_concurrent_calls = 0\n").unwrap();
        let err = Manifest::read("p", &path).unwrap_err().to_string();
        assert!(err.contains("max_concurrent_calls"), "{err}");
        std::fs::write(&path, "[limits]\nmax_concurrent_calls = 3\n").unwrap();
        let manifest = Manifest::read("p", &path).unwrap().unwrap();
        assert_eq!(manifest.limits.max_concurrent_calls, Some(3));
    }
}
