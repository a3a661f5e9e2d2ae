//! One attempt: send a unit to the sink, then record each delivery's outcome in the store.
//!
//! Confirmed → delivered; failed → rescheduled with exponential backoff and full jitter (or the
//! receiver's `Retry-After`), or dead-lettered after the last attempt, past `max_age`, or at
//! once for a permanent error. [`Worker::outcomes`] makes that decision without I/O; the
//! result goes back to [`Dispatch`](super::dispatch::Dispatch) as [`Attempted`].

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;

use super::dispatch::{Attempted, STORE_ERROR_PAUSE};
use super::worker::Worker;
use crate::config::RetryConfig;
use crate::sink::SinkError;
use crate::store::{DeliveryRecord, DeliveryUpdate};

impl Worker {
    /// Sends one unit and records the outcome.
    pub(super) async fn attempt(self: Arc<Self>, unit: Vec<DeliveryRecord>) -> Attempted {
        let result = self.sink.deliver(&unit).await;
        let sink = self.name.clone();
        let result_label = if result.is_ok() { "success" } else { "failure" };
        metrics::counter!("hookwall_delivery_attempts_total", "sink" => sink.clone(), "result" => result_label)
            .increment(unit.len() as u64);
        let first = unit.iter().filter(|d| d.attempts.is_empty()).count() as u64;
        if first > 0 {
            metrics::counter!("hookwall_delivery_first_attempt_total", "sink" => sink.clone(), "result" => result_label)
                .increment(first);
        }
        match &result {
            Ok(()) => tracing::debug!(sink = %self.name, deliveries = unit.len(), "delivered"),
            Err(e) => tracing::warn!(sink = %self.name, deliveries = unit.len(),
                first_id = %unit[0].id, status = ?e.status, error = %e, "delivery attempt failed"),
        }
        let updates = self.outcomes(&unit, &result, self.clock.now_ms(), &mut rand::rng());
        let results = updates
            .iter()
            .map(|u| match u {
                DeliveryUpdate::Retry { seq, .. } => (*seq, true),
                DeliveryUpdate::Delivered { seq, .. } | DeliveryUpdate::Dead { seq, .. } => {
                    (*seq, false)
                }
            })
            .collect();
        if let Err(e) = self.store.update_deliveries(updates).await {
            // The sink may have the unit already; it stays pending and is sent again
            // (at-least-once), which is safe because every delivery carries its stable id.
            tracing::error!(sink = %self.name, error = %e, "cannot record delivery results");
            tokio::time::sleep(STORE_ERROR_PAUSE).await;
        }
        Attempted {
            results,
            success: result.is_ok(),
        }
    }

    /// What `result` means for each delivery of `unit`, at `at_ms`: delivered, retried later,
    /// or dead-lettered.
    pub(super) fn outcomes(
        &self,
        unit: &[DeliveryRecord],
        result: &Result<(), SinkError>,
        at_ms: u64,
        rng: &mut impl Rng,
    ) -> Vec<DeliveryUpdate> {
        unit.iter()
            .map(|d| {
                let seq = d.seq;
                let Err(e) = result else {
                    metrics::histogram!("hookwall_delivery_latency_seconds", "sink" => self.name.clone())
                        .record(at_ms.saturating_sub(d.received_at_ms) as f64 / 1000.0);
                    return DeliveryUpdate::Delivered { seq, at_ms };
                };
                let attempt = d.attempts.len() as u32 + 1;
                let delay = e
                    .retry_after
                    .unwrap_or_else(|| backoff(&self.retry, attempt, rng));
                if let Some((reason, error)) = self.dead_letter(d, e, attempt, at_ms, delay) {
                    metrics::counter!("hookwall_dead_letters_total", "sink" => self.name.clone(), "reason" => reason)
                        .increment(1);
                    tracing::warn!(sink = %self.name, delivery = %d.id, %error, "dead-lettered");
                    return DeliveryUpdate::Dead {
                        seq,
                        at_ms,
                        error,
                        status: e.status,
                    };
                }
                DeliveryUpdate::Retry {
                    seq,
                    at_ms,
                    error: e.message.clone(),
                    status: e.status,
                    due_ms: at_ms + delay.as_millis() as u64,
                }
            })
            .collect()
    }

    /// Whether failed attempt number `attempt` of `d` ends it, retried after `delay`: the
    /// metric's reason and the recorded error if so.
    fn dead_letter(
        &self,
        d: &DeliveryRecord,
        e: &SinkError,
        attempt: u32,
        at_ms: u64,
        delay: Duration,
    ) -> Option<(&'static str, String)> {
        let max = self.retry.max_attempts;
        let age_at_retry = Duration::from_millis(
            (at_ms + delay.as_millis() as u64).saturating_sub(d.received_at_ms),
        );
        if e.permanent {
            Some(("permanent", format!("permanent failure: {e}")))
        } else if attempt >= max {
            Some(("exhausted", format!("{e} (attempt {attempt} of {max})")))
        } else if age_at_retry > self.retry.max_age {
            Some((
                "expired",
                format!(
                    "{e} (attempt {attempt}; the next would be past max_age {:?})",
                    self.retry.max_age
                ),
            ))
        } else {
            None
        }
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
