//! Delivery: move pending deliveries from the store to their sinks, with retries.
//!
//! One worker task per sink. It asks the store for what is due, hands it to the sink as one
//! batch, and records the result in one commit: confirmed → delivered; failed → rescheduled
//! with exponential backoff and jitter, or dead-lettered after the last attempt (or at once for
//! a permanent error). Between batches the worker sleeps until the next due time or until the
//! store's writer wakes it with new work. Nothing is held in memory that the store does not
//! also have, so a crash at any point loses nothing: undelivered rows are still pending.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::config::{RetryConfig, SinkConfig};
use crate::server::now_ms;
use crate::sink::{self, Sink, SinkError};
use crate::store::{DeliveryRecord, DeliveryUpdate, Store};

/// Deliveries handed to a sink at once.
const BATCH_SIZE: usize = 64;
/// An idle worker still looks at the store this often, in case a wake-up was missed.
const IDLE_POLL: Duration = Duration::from_secs(30);
/// After a store error, wait this long before trying again.
const STORE_ERROR_PAUSE: Duration = Duration::from_secs(1);

/// The running delivery workers.
pub struct Delivery {
    stop: watch::Sender<bool>,
    workers: Vec<JoinHandle<()>>,
}

impl Delivery {
    /// Starts one worker per configured sink.
    pub fn start(store: &Store, sinks: &BTreeMap<String, SinkConfig>) -> Delivery {
        let (stop, stopped) = watch::channel(false);
        let workers = sinks
            .iter()
            .filter(|(name, config)| {
                if config.paused() {
                    tracing::info!(sink = %name, "sink is paused: deliveries are stored, not sent");
                }
                !config.paused()
            })
            .map(|(name, config)| {
                let worker = Worker {
                    name: name.clone(),
                    sink: sink::build(config),
                    retry: config.retry().clone(),
                    store: store.clone(),
                };
                tokio::spawn(worker.run(stopped.clone()))
            })
            .collect();
        Delivery { stop, workers }
    }

    /// Lets each worker finish its current batch, then stops it.
    pub async fn stop(self) {
        let _ = self.stop.send(true);
        for w in self.workers {
            let _ = w.await;
        }
    }
}

struct Worker {
    name: String,
    sink: Arc<dyn Sink>,
    retry: RetryConfig,
    store: Store,
}

impl Worker {
    async fn run(self, mut stopped: watch::Receiver<bool>) {
        let wake = self.store.waker(&self.name);
        loop {
            if *stopped.borrow() {
                return;
            }
            let now = now_ms();
            let due = match self.store.due_deliveries(&self.name, now, BATCH_SIZE) {
                Ok(due) => due,
                Err(e) => {
                    tracing::error!(sink = %self.name, error = %e, "cannot read pending deliveries");
                    tokio::time::sleep(STORE_ERROR_PAUSE).await;
                    continue;
                }
            };
            if due.is_empty() {
                let wait = match self.store.next_due_ms(&self.name) {
                    Ok(Some(at)) => Duration::from_millis(at.saturating_sub(now)).min(IDLE_POLL),
                    Ok(None) => IDLE_POLL,
                    Err(_) => STORE_ERROR_PAUSE,
                };
                tokio::select! {
                    () = wake.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                    _ = stopped.changed() => {}
                }
                continue;
            }
            let result = self.sink.deliver(&due).await;
            let updates = self.outcomes(&due, &result);
            if let Err(e) = &result {
                tracing::warn!(sink = %self.name, deliveries = due.len(), error = %e,
                    "delivery attempt failed");
            } else {
                tracing::debug!(sink = %self.name, deliveries = due.len(), "delivered");
            }
            if let Err(e) = self.store.update_deliveries(updates).await {
                // The sink may have the batch already; it stays pending and is sent again
                // (at-least-once), which is safe because every delivery carries its stable id.
                tracing::error!(sink = %self.name, error = %e, "cannot record delivery results");
                tokio::time::sleep(STORE_ERROR_PAUSE).await;
            }
        }
    }

    fn outcomes(
        &self,
        batch: &[DeliveryRecord],
        result: &Result<(), SinkError>,
    ) -> Vec<DeliveryUpdate> {
        let at_ms = now_ms();
        batch
            .iter()
            .map(|d| {
                let seq = d.seq;
                let Err(e) = result else {
                    return DeliveryUpdate::Delivered { seq, at_ms };
                };
                let attempt = d.attempts.len() as u32 + 1;
                if e.permanent || attempt >= self.retry.max_attempts {
                    let error = format!("{e} (attempt {attempt} of {})", self.retry.max_attempts);
                    return DeliveryUpdate::Dead { seq, at_ms, error };
                }
                let delay = e
                    .retry_after
                    .unwrap_or_else(|| backoff(&self.retry, attempt, &mut rand::rng()));
                DeliveryUpdate::Retry {
                    seq,
                    at_ms,
                    error: e.message.clone(),
                    due_ms: at_ms + delay.as_millis() as u64,
                }
            })
            .collect()
    }
}

/// Delay before retry number `attempt` (1-based): exponential growth from `initial`, capped at
/// `max_delay`, with full jitter above a floor of `initial` so that many deliveries failing
/// together do not retry together.
pub fn backoff(retry: &RetryConfig, attempt: u32, rng: &mut impl Rng) -> Duration {
    let exp = retry
        .initial
        .saturating_mul(2u32.saturating_pow(attempt.saturating_sub(1)));
    let ceiling = exp.min(retry.max_delay);
    if ceiling <= retry.initial {
        return ceiling;
    }
    let span = (ceiling - retry.initial).as_millis() as u64;
    retry.initial + Duration::from_millis(rng.random_range(0..=span))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        let retry = RetryConfig {
            max_attempts: 10,
            initial: Duration::from_millis(100),
            max_delay: Duration::from_secs(2),
        };
        let mut rng = rand::rng();
        for attempt in 1..=20 {
            let d = backoff(&retry, attempt, &mut rng);
            let ceiling = (Duration::from_millis(100) * 2u32.pow(attempt.min(16) - 1))
                .min(Duration::from_secs(2));
            assert!(
                d >= retry.initial && d <= ceiling,
                "attempt {attempt}: {d:?}"
            );
        }
        // The mean of many draws grows with the attempt number until the cap.
        let mut mean = |attempt| {
            (0..2000)
                .map(|_| backoff(&retry, attempt, &mut rng).as_millis())
                .sum::<u128>()
                / 2000
        };
        assert!(mean(2) < mean(3) && mean(3) < mean(4) && mean(4) < mean(5));
    }
}
