//! Hot reload: watch the plugins directory and rebuild the plugin set when it changes.
//!
//! A `notify` watcher feeds a debounce loop: after the last event for a `.wasm` or `.toml`
//! file, it waits [`DEBOUNCE`] of quiet, then rebuilds the whole set off the request path
//! (compiling only changed files) and swaps it in. A slow copy or a write-then-rename thus
//! produces one rebuild of the complete file; a half-written file that fails to compile keeps
//! the previous version live, and the completed write triggers another rebuild. Requests in
//! flight keep the set they started with.

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use notify::{EventKind, RecursiveMode, Watcher};
use tokio::sync::mpsc;

use super::PluginHost;

/// Quiet time after the last file event before rebuilding. Short, because a rebuild that sees
/// a partial file is harmless (the old version stays) and the final write triggers another.
pub const DEBOUNCE: Duration = Duration::from_millis(150);

/// A running watcher; dropping it stops watching.
pub struct PluginWatcher {
    _watcher: notify::RecommendedWatcher,
    task: tokio::task::JoinHandle<()>,
}

impl Drop for PluginWatcher {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn is_plugin_file(path: &Path) -> bool {
    path.extension().is_some_and(|e| e == "wasm" || e == "toml")
}

/// Starts watching `host`'s plugins directory.
pub fn watch(host: Arc<PluginHost>) -> notify::Result<PluginWatcher> {
    let (tx, mut rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |event: notify::Result<notify::Event>| {
        let Ok(event) = event else { return };
        let relevant = !matches!(event.kind, EventKind::Access(_))
            && event.paths.iter().any(|p| is_plugin_file(p));
        if relevant {
            let _ = tx.send(());
        }
    })?;
    watcher.watch(host.dir(), RecursiveMode::NonRecursive)?;
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
            let host = host.clone();
            let errors = tokio::task::spawn_blocking(move || host.rebuild()).await;
            match errors {
                Ok(errors) => {
                    for e in errors {
                        tracing::error!(error = %e, "plugin reload failed; previous version stays live");
                    }
                }
                Err(e) => tracing::error!(error = %e, "plugin reload task failed"),
            }
        }
    });
    Ok(PluginWatcher {
        _watcher: watcher,
        task,
    })
}
