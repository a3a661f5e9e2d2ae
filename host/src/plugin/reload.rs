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
//! they live: through their directories, so an editor's write-then-rename is seen; through
//! their symlinks' targets' directories, so editing a linked file or swapping a Kubernetes
//! volume is seen; with the set updated after every rebuild. They are also polled (inode, size,
//! mtime every `VALUE_POLL`), for what no event reports: a directory deleted and made anew
//! (its watch died with it), filesystems without inotify (NFS).

use std::collections::HashSet;
use std::os::unix::fs::MetadataExt as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::PluginHost;

/// Quiet time after the last file event before rebuilding. Short, because a rebuild that sees
/// a partial file is harmless (the old version stays) and the final write triggers another.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// How often the value files are polled for changes no event reported.
const VALUE_POLL: Duration = Duration::from_secs(2);

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

/// What a change to `path` means: a plugin's `.wasm` or manifest in the plugins directory, a
/// file a plugin's config value is read from (by its name or its symlink's target), or a volume
/// swap in such a file's directory (Kubernetes renames `..data` over the old one: no event
/// names the file).
fn triggers_reload(path: &Path, dir: &Path, values: &ValueWatch) -> bool {
    let in_dir =
        path.parent() == Some(dir) && path.extension().is_some_and(|e| e == "wasm" || e == "toml");
    let swap = path
        .file_name()
        .and_then(|n| n.to_str())
        .is_some_and(|n| n.starts_with("..data"))
        && path.parent().is_some_and(|p| values.dirs.contains(p));
    in_dir || swap || values.files.contains(path)
}

/// The value files' paths as events name them, and the directories watched for them.
#[derive(Default, Clone)]
struct ValueWatch {
    files: HashSet<PathBuf>,
    dirs: HashSet<PathBuf>,
}

/// Starts watching `host`'s plugins directory and the files its plugins' config values come
/// from.
pub fn watch(host: Arc<PluginHost>) -> notify::Result<PluginWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    // Events name paths under the directory as watched: watch canonical ones, compare those.
    let dir = canonical(host.dir());
    let values = Arc::new(Mutex::new(ValueWatch::default()));
    let mut watcher = {
        let (dir, values) = (dir.clone(), values.clone());
        notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
            let Ok(event) = event else { return };
            let values = values.lock().unwrap_or_else(|e| e.into_inner());
            let relevant = !matches!(event.kind, EventKind::Access(_))
                && event
                    .paths
                    .iter()
                    .any(|p| triggers_reload(p, &dir, &values));
            if relevant {
                let _ = tx.send(());
            }
        })?
    };
    watcher.watch(&dir, RecursiveMode::NonRecursive)?;
    watch_value_files(&mut watcher, &host, &dir, &values);
    let task = tokio::spawn(async move {
        let mut seen = fingerprint(&host.value_files());
        loop {
            match tokio::time::timeout(VALUE_POLL, rx.recv()).await {
                Ok(Some(())) => {}
                Ok(None) => return,
                // Nothing reported: rebuild only if a value file changed unseen.
                Err(_) if fingerprint(&host.value_files()) == seen => continue,
                Err(_) => {}
            }
            // Debounce: wait until the directory has been quiet for DEBOUNCE.
            loop {
                match tokio::time::timeout(DEBOUNCE, rx.recv()).await {
                    Ok(Some(())) => continue,
                    Ok(None) => return,
                    Err(_) => break,
                }
            }
            // Taken before the rebuild reads the files, so a change during it is seen at the
            // next poll; so is a file that only became a value file in this rebuild (the lists
            // differ), which may have changed before it was watched.
            seen = fingerprint(&host.value_files());
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
            watch_value_files(&mut watcher, &host, &dir, &values);
        }
    });
    Ok(PluginWatcher { task })
}

/// Points the watcher at the current plugin set's value files: watches their directories (and
/// their symlink targets' directories), forgets directories no longer needed, and replaces
/// what the event filter matches.
fn watch_value_files(
    watcher: &mut notify::RecommendedWatcher,
    host: &PluginHost,
    plugins_dir: &Path,
    values: &Mutex<ValueWatch>,
) {
    let mut next = ValueWatch::default();
    for file in host.value_files() {
        for path in [file.clone(), canonical(&file)] {
            if let Some((dir, path)) = watchable(&path) {
                next.dirs.insert(dir);
                next.files.insert(path);
            }
        }
    }
    // The lock is not held while (un)watching: notify's thread takes it for every event.
    let current = values.lock().unwrap_or_else(|e| e.into_inner()).clone();
    for gone in current.dirs.difference(&next.dirs) {
        if gone != plugins_dir {
            let _ = watcher.unwatch(gone);
        }
    }
    let added: Vec<PathBuf> = next.dirs.difference(&current.dirs).cloned().collect();
    for dir in added.iter().filter(|d| d.as_path() != plugins_dir) {
        if let Err(e) = watcher.watch(dir, RecursiveMode::NonRecursive) {
            tracing::warn!(dir = %dir.display(), error = %e,
                "cannot watch a plugin config file's directory; edits there need a restart");
            // Not watched: try again at the next rebuild.
            next.dirs.remove(dir);
        }
    }
    *values.lock().unwrap_or_else(|e| e.into_inner()) = next;
}

/// A file's directory made canonical, and the file's path in it as events name it.
fn watchable(file: &Path) -> Option<(PathBuf, PathBuf)> {
    let name = file.file_name()?;
    let parent = match file.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    let dir = canonical(parent);
    let path = dir.join(name);
    Some((dir, path))
}

/// What polling compares: each value file's inode, size and mtime (through symlinks), or that it
/// is missing.
fn fingerprint(files: &[PathBuf]) -> Vec<Option<(u64, u64, Option<SystemTime>)>> {
    files
        .iter()
        .map(|f| {
            let m = std::fs::metadata(f).ok()?;
            Some((m.ino(), m.len(), m.modified().ok()))
        })
        .collect()
}

/// `path` made absolute with symlinks resolved, or as it is if that fails (e.g. it is gone).
fn canonical(path: &Path) -> PathBuf {
    path.canonicalize().unwrap_or_else(|_| path.to_path_buf())
}
