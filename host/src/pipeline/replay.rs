//! Replay: give dead letters another chance with the *current* plugins.
//!
//! - A **delivery's** dead letter (its sink gave up) re-sends exactly that delivery: the same
//!   delivery id, headers and body as stored, due now, with a fresh `max_attempts` and
//!   `max_age` budget. The plugins do not run again and its siblings (delivered, or in
//!   flight) are not touched, so a receiver gets exactly what it missed. While its sink is not
//!   in the config the letter stays in the queue (skipped).
//! - A **plugin failure's** dead letter runs the stored raw request through its source's
//!   plugin chain as it is now (so fixing a plugin and replaying recovers its events): new
//!   pending deliveries under the same event id, to every sink it routes to (none had it),
//!   whose stable delivery ids come out the same when the routing does. A plugin that fails
//!   again makes a new dead letter.
//!
//! Either way the letter is replaced in one commit.

use super::{IngestError, Pipeline};
use crate::plugin::{ChainOutcome, Event};
use crate::store::{EventStatus, LetterFilter, NewDelivery, Replay, StoreError};

/// Dead letters replayed by one request at most; replay again for more.
pub const MAX_REPLAY: usize = 10_000;

/// What a replay did.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct ReplayReport {
    /// Letters replaced by new deliveries (or a new status).
    pub replayed: usize,
    /// Letters left in the queue: their source, event or sink is gone.
    pub skipped: usize,
}

/// Why a replay failed as a whole.
#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    /// The store could not be read or written.
    #[error(transparent)]
    Store(#[from] StoreError),
    /// Running the plugins failed inside the host (not a plugin failure, which is recorded).
    #[error("cannot run plugins: {0}")]
    Pipeline(#[from] IngestError),
}

/// Replays the dead letters matching `filter`.
pub async fn replay(
    pipeline: &Pipeline,
    filter: &LetterFilter,
) -> Result<ReplayReport, ReplayError> {
    let store = pipeline.store();
    let letters = store.dead_letters_matching(filter, MAX_REPLAY).await?;
    let mut report = ReplayReport::default();
    let mut replays = Vec::new();
    for (seq, letter) in letters {
        if let Some(sink) = &letter.sink {
            if pipeline.has_sink(sink) {
                replays.push(Replay::Resend { letter: seq });
            } else {
                tracing::warn!(letter = seq, sink = %sink,
                    "cannot replay: the sink is not in the config");
                report.skipped += 1;
            }
            continue;
        }
        let (Some(source), Some((event, _))) = (
            pipeline.source_named(&letter.source),
            store.event(&letter.source, &letter.event_id).await?,
        ) else {
            tracing::warn!(letter = seq, source = %letter.source, event = %letter.event_id,
                "cannot replay: the source or the event is gone");
            report.skipped += 1;
            continue;
        };
        let input = Event::from(&event);
        let (status, routed) = match pipeline.route(&source, &input).await? {
            ChainOutcome::Forward(routed) => (EventStatus::Forwarded, routed),
            ChainOutcome::Dropped(reason) => (EventStatus::Dropped { reason }, Vec::new()),
            ChainOutcome::Failed { plugin, failure } => {
                crate::delivery::count_plugin_dead_letter();
                (
                    EventStatus::DeadLettered {
                        reason: format!("plugin `{plugin}` {failure} (on replay)"),
                    },
                    Vec::new(),
                )
            }
            // There is no sender to answer on a replay: the plugin declined the event.
            ChainOutcome::Rejected(r) => (
                EventStatus::Dropped {
                    reason: format!("rejected on replay: {} {}", r.status, r.code),
                },
                Vec::new(),
            ),
            ChainOutcome::Responded(reply) => (
                EventStatus::Dropped {
                    reason: format!("answered {} on replay", reply.status),
                },
                Vec::new(),
            ),
        };
        let deliveries = routed
            .into_iter()
            .map(|r| NewDelivery {
                sink: r.sink,
                headers: r.headers,
                body: r.body,
                priority: r.priority,
            })
            .collect();
        replays.push(Replay::Rerouted {
            letter: seq,
            status,
            deliveries,
        });
    }
    report.replayed = store.replay(replays).await?;
    tracing::info!(
        replayed = report.replayed,
        skipped = report.skipped,
        ?filter,
        "dead letters replayed"
    );
    Ok(report)
}
