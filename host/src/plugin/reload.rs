//! Hot reload: watch the plugins directory and rebuild the plugin set when it changes.
//!
//! A `notify` watcher feeds a debounce loop: after the last event for a `.wasm` or `.toml`
//! file, it waits [`DEBOUNCE`] of quiet, then rebuilds the whole set off the request path
//! (compiling only changed files) and swaps it in. A slow copy or a write-then-rename thus
//! produces one rebuild of the complete file; a half-written file that fails to compile keeps
//! the previous version live, and the completed write triggers another rebuild. Requests in
//! flight keep the set they started with.
//!
//! The files plugins read config values from (`schema_file = …`) are watched too, wherever
//! they live: through their directories, so an editor's write-then-rename is seen, and with the
//! set updated after every rebuild.

use std::collections::HashSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::PluginHost;

/// Quiet time after the last file event before rebuilding. Short, because a rebuild that sees
/// a partial file is harmless (the old version stays) and the final write triggers another.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// A running watcher; dropping it stops watching.
pub struct PluginWatcher {
    /// Owns the `notify` watcher, so aborting it stops watching.
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// What a change to `path` means: a plugin's `.wasm` or manifest in the plugins directory, or
/// a file a plugin's config value is read from.
fn is_plugin_file(path: &Path, dir: &Path, value_files: &HashSet<PathBuf>) -> bool {
    let in_dir =
        path.parent() == Some(dir) && path.extension().is_some_and(|e| e == "wasm" || e == "toml");
    in_dir || value_files.contains(path)
}

/// Starts watching `host`'s plugins directory and the files its plugins' config values come
/// from.
pub fn watch(host: Arc<PluginHost>) -> notify::Result<PluginWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // Events name paths under the directory as watched: watch canonical ones, compare those.
    let dir = canonical(host.dir());
    let value_files = Arc::new(Mutex::new(HashSet::new()));
    let mut watcher = {
        let (dir, value_files) = (dir.clone(), value_files.clone());
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let files = value_files.lock().unwrap_or_else(|e| e.into_inner());
            let relevant = !matches!(event.kind, EventKind::Access(_))
                && event.paths.iter().any(|p| is_plugin_file(p, &dir, &files));
            if relevant {
                let _ = tx.send(());
            }
        })?
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    let mut watched_dirs = HashSet::from([dir]);
    watch_value_files(&mut watcher, &host, &value_files, &mut watched_dirs);
    let task = tokio::spawn(async move {
        while rx.recv().await.is_some() {
            // Debounce: wait until the directory has been quiet for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            let rebuilding = host.clone();
            let errors = tokio::task::spawn_blocking(move || rebuilding.rebuild()).await;
            match errors {
                Ok(errors) => {
                    for e in errors {
                        tracing::error!(error = %e, "plugin reload failed; previous version stays live");
                    }
                }
                Err(e) => tracing::error!(error = %e, "plugin reload task failed"),
            }
            watch_value_files(&mut watcher, &host, &value_files, &mut watched_dirs);
        }
    });
    Ok(PluginWatcher { task })
}

/// Points the watcher at the current plugin set's value files: watches each one's directory
/// (once) and replaces the set of paths the event filter matches.
fn watch_value_files(
    watcher: &mut notify::RecommendedWatcher,
    host: &PluginHost,
    value_files: &Mutex<HashSet<PathBuf>>,
    watched_dirs: &mut HashSet<PathBuf>,
) {
    let mut files = HashSet::new();
    for file in host.value_files() {
        let (Some(parent), Some(name)) = (file.parent(), file.file_name()) else {
            continue;
        };
        let parent = canonical(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        });
        if !watched_dirs.contains(&parent) {
            if let Err(e) = watcher.watch(&parent, RecursiveMode::NonRecursive) {
                tracing::warn!(file = %file.display(), error = %e,
                    "cannot watch a plugin config file; edits to it need a restart");
                continue;
            }
            watched_dirs.insert(parent.clone());
        }
        files.insert(parent.join(name));
    }
    *value_files.lock().unwrap_or_else(|e| e.into_inner()) = files;
}

/// `path` made absolute with symlinks resolved, or as it is if that fails (e.g. it is gone).
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}
