//! One attempt: send a unit to the sink, then record each delivery's outcome in the store.
//!
//! Confirmed → delivered; failed → rescheduled with exponential backoff and full jitter (or the
//! receiver's `Retry-After`, never sooner than `retry.initial`), or dead-lettered after the
//! last attempt, past `max_age`, or at once for a permanent error. A batch refused for good is
//! not dead-lettered as a whole: its deliveries go again alone, so only the bad one ends in the
//! dead-letter queue. [`Policy::outcomes`] makes those decisions without I/O; the result goes
//! back to [`Dispatch`](super::dispatch::Dispatch) as [`Attempted`].
//!
//! A result the store cannot record (the disk is full) is held by the attempt and recorded
//! when the store takes writes again: the unit keeps its slot and its keys meanwhile, so its
//! deliveries are not sent again, and a success is not re-sent.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tracing::Instrument as _;

use super::dispatch::{Attempted, Health, STORE_ERROR_PAUSE};
use super::worker::Worker;
use crate::config::RetryConfig;
use crate::sink::SinkError;
use crate::store::{DeliveryRecord, DeliveryUpdate, StoreError};
use crate::telemetry::trace;

/// The longest pause between two tries at recording results the store refused.
const MAX_RECORD_PAUSE: Duration = Duration::from_secs(30);

/// A sink's retry policy: what a result means for each delivery.
#[derive(Debug, Clone)]
pub(super) struct Policy {
    /// The sink's name (metrics, logs).
    pub sink: String,
    /// `retry = { … }`.
    pub retry: RetryConfig,
}

/// What one attempt's result means.
#[derive(Debug)]
pub(super) struct Outcomes {
    /// One per delivery of the unit, in order.
    pub updates: Vec<DeliveryUpdate>,
    /// What the circuit breaker learns.
    pub health: Health,
    /// A batch was refused for good: its deliveries go alone from now on.
    pub split: bool,
}

impl Worker {
    /// Sends one unit and records the outcome.
    pub(super) async fn attempt(self: Arc<Self>, mut unit: Vec<DeliveryRecord>) -> Attempted {
        let span = self.attempt_span(&mut unit);
        let result = self.sink.deliver(&unit).instrument(span.clone()).await;
        if !span.is_disabled() {
            span.record(
                "hookwall.result",
                if result.is_ok() {
                    "delivered"
                } else {
                    "failed"
                },
            );
            if result.is_err() {
                span.record("otel.status_code", "error");
            }
        }
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
        let outcomes = self
            .policy
            .outcomes(&unit, &result, self.clock.now_ms(), &mut rand::rng());
        let results = outcomes.updates.iter().map(next_due).collect();
        self.record(outcomes.updates).await;
        Attempted {
            results,
            health: outcomes.health,
            split: outcomes.split,
        }
    }

    /// The span of one attempt at `unit`: a child of the span that stored its first delivery,
    /// linked to the others'. With traces on, each delivery's `traceparent` becomes the
    /// attempt's, so the sink carries it to the app.
    fn attempt_span(&self, unit: &mut [DeliveryRecord]) -> tracing::Span {
        let first = &unit[0];
        let span = trace::deliver_span(
            &self.name,
            &first.id,
            unit.len(),
            first.attempts.len() + 1,
            &first.headers,
        );
        if span.is_disabled() {
            return span;
        }
        for other in &unit[1..] {
            trace::link(&span, &other.headers);
        }
        for delivery in unit.iter_mut() {
            trace::stamp(&span, &mut delivery.headers);
        }
        span
    }

    /// Records `updates`, trying again (1 s, doubling up to 30 s) while the store refuses, until
    /// they are recorded or the workers stop. A success is thus never sent twice for want of a
    /// disk; only a stop with results still unrecorded leaves them pending, to go again after
    /// the restart (at least once, with their stable ids).
    async fn record(&self, updates: Vec<DeliveryUpdate>) {
        let mut pause = STORE_ERROR_PAUSE;
        let mut stopped = self.stopped.clone();
        loop {
            let e = match self.store.update_deliveries(updates.clone()).await {
                Ok(()) => return,
                Err(e) => e,
            };
            if matches!(e, StoreError::Closed) || *stopped.borrow() {
                tracing::warn!(sink = %self.name, error = %e, deliveries = updates.len(),
                    "stopping with delivery results not recorded: they go again after the restart");
                return;
            }
            tracing::error!(sink = %self.name, error = %e, deliveries = updates.len(),
                retry_in = ?pause, "cannot record delivery results; holding them (not re-sending)");
            tokio::select! {
                () = tokio::time::sleep(pause) => {}
                _ = stopped.changed() => {}
            }
            pause = (pause * 2).min(MAX_RECORD_PAUSE);
        }
    }
}

/// A recorded update's seq and, for a retry, its next due time.
pub(super) fn next_due(update: &DeliveryUpdate) -> (u64, Option<u64>) {
    match update {
        DeliveryUpdate::Retry { seq, due_ms, .. } => (*seq, Some(*due_ms)),
        DeliveryUpdate::Delivered { seq, .. } | DeliveryUpdate::Dead { seq, .. } => (*seq, None),
    }
}

impl Policy {
    /// What `result` means for each delivery of `unit`, at `at_ms`: delivered, retried later,
    /// or dead-lettered.
    pub fn outcomes(
        &self,
        unit: &[DeliveryRecord],
        result: &Result<(), SinkError>,
        at_ms: u64,
        rng: &mut impl Rng,
    ) -> Outcomes {
        let split = unit.len() > 1 && result.as_ref().is_err_and(|e| e.permanent);
        let health = match result {
            Err(e) if !e.permanent => Health::Failing,
            _ => Health::Up,
        };
        let updates = unit
            .iter()
            .map(|d| {
                let seq = d.seq;
                let Err(e) = result else {
                    metrics::histogram!("hookwall_delivery_latency_seconds", "sink" => self.sink.clone())
                        .record(at_ms.saturating_sub(d.received_at_ms) as f64 / 1000.0);
                    return DeliveryUpdate::Delivered { seq, at_ms };
                };
                if split {
                    // Which item the sink refused is unknown: each goes again, alone, now.
                    return DeliveryUpdate::Retry {
                        seq,
                        at_ms,
                        error: format!("{e} (the batch was refused; retrying each delivery alone)"),
                        status: e.status,
                        due_ms: at_ms,
                    };
                }
                let attempt = d.attempts.len() as u32 + 1;
                let delay = self.delay(e, attempt, rng);
                if let Some((reason, error)) = self.dead_letter(d, e, attempt, at_ms, delay) {
                    metrics::counter!("hookwall_dead_letters_total", "sink" => self.sink.clone(), "reason" => reason)
                        .increment(1);
                    tracing::warn!(sink = %self.sink, delivery = %d.id, %error, "dead-lettered");
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
            .collect();
        Outcomes {
            updates,
            health,
            split,
        }
    }

    /// How long until retry number `attempt`: the receiver's `Retry-After` (never sooner than
    /// `retry.initial`, so `Retry-After: 0` or a past date cannot burn the attempts back to
    /// back), else the backoff.
    fn delay(&self, e: &SinkError, attempt: u32, rng: &mut impl Rng) -> Duration {
        match e.retry_after {
            Some(after) => after.max(self.retry.initial),
            None => backoff(&self.retry, attempt, rng),
        }
    }

    /// Whether failed attempt number `attempt` of `d` ends it, retried after `delay`: the
    /// metric's reason and the recorded error if so. `max_age` counts from when the delivery
    /// was queued: its event's receipt, or the replay that queued it again.
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
            (at_ms + delay.as_millis() as u64).saturating_sub(d.queued_at_ms),
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
