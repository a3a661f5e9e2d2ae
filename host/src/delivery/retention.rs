//! Retention: delivered events are pruned once older than `[storage] retention`.
//!
//! Only settled events go (every delivery delivered, or its dead letter replayed or purged);
//! dead letters and anything pending are kept however old, until replayed or purged. Each
//! pass deletes a bounded number per commit so it never holds the store's writer for long.

use std::time::Duration;

use tokio::sync::watch;

use crate::server::now_ms;
use crate::store::Store;

/// Events deleted per commit.
const PRUNE_BATCH: usize = 1000;
/// The longest pause between passes.
const MAX_INTERVAL: Duration = Duration::from_secs(60);

/// Prunes every `min(keep / 2, 60 s)` until `stopped`.
pub async fn run(store: Store, keep: Duration, mut stopped: watch::Receiver<bool>) {
    let interval = (keep / 2).clamp(Duration::from_secs(1), MAX_INTERVAL);
    loop {
        tokio::select! {
            () = tokio::time::sleep(interval) => {}
            _ = stopped.changed() => return,
        }
        let before_ms = now_ms().saturating_sub(keep.as_millis() as u64);
        let mut total = 0;
        loop {
            match store.prune_settled(before_ms, PRUNE_BATCH).await {
                Ok(n) => {
                    total += n;
                    if n < PRUNE_BATCH {
                        break;
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, "retention: cannot prune settled events");
                    break;
                }
            }
        }
        if total > 0 {
            tracing::info!(pruned = total, "retention: settled events pruned");
        }
    }
}
