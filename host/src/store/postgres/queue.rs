//! Leaving the shared queue: claims under a lease, lease renewal, outcomes recorded in batches
//! (only while the lease is still this replica's), the dead-letter operations, and the
//! `LISTEN` connection and queue gauges every replica runs.

use std::collections::HashSet;
use std::sync::Arc;
use std::time::Duration;

use deadpool_postgres::Pool;
use futures_util::StreamExt;
use tokio::sync::{mpsc, oneshot};
use tokio_postgres::AsyncMessage;

use super::intake::{self, Row};
use super::{
    DELIVERIES_JOINED, DELIVERY_COLUMNS, Shared, Wakeups, delivery_of, ms, pg, status_columns, unms,
};
use crate::config::Rate;
use crate::store::StoreError;
use crate::store::dlq::Replay;
use crate::store::load::Gauges;
use crate::store::records::{Attempt, DeliveryRecord, EventStatus};
use crate::store::writer::DeliveryUpdate;

/// Delivery outcomes recorded in one transaction at most.
const MAX_OUTCOMES: usize = 1024;
/// The `LISTEN` connection's reconnect pause after it failed.
const LISTEN_RETRY: Duration = Duration::from_secs(1);
/// How often the queue gauges (depth, oldest pending age) are read from the database.
const WATCH_INTERVAL: Duration = Duration::from_secs(2);

/// What one claim may take.
#[derive(Debug, Clone, Copy)]
pub struct Claim {
    /// Deliveries at most (this replica's free room).
    pub max: usize,
    /// The sink's deliveries leased at once across every replica, at most (its concurrency
    /// times its unit size).
    pub fleet: usize,
    /// Deliveries per unit: a `rate` counts units.
    pub per_unit: usize,
    /// The sink's `rate`, shared by every replica.
    pub rate: Option<Rate>,
    /// Now, in milliseconds since the Unix epoch: what is due by then may go.
    pub now_ms: u64,
}

impl Shared {
    /// Claims up to `claim.max` due deliveries of `sink` for this replica, leased for
    /// [`Shared::lease`]: high priority first, then by due time; of each order key only the
    /// oldest pending delivery, and only while none of its key is leased; never more than
    /// `claim.fleet` leased at once across replicas, nor faster than the sink's rate.
    pub async fn claim(&self, sink: &str, claim: Claim) -> Result<Vec<DeliveryRecord>, StoreError> {
        if claim.max == 0 {
            return Ok(Vec::new());
        }
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        // A lease lost in a database crash only lets another replica send the delivery again
        // (at least once, with its stable id): claims need not wait for the WAL flush.
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await
            .map_err(pg)?;
        // One claimer per sink at a time, fleet-wide: the counts below stay true until commit.
        tx.execute(
            "SELECT pg_advisory_xact_lock(hashtext('hookwall:sink:' || $1))",
            &[&sink],
        )
        .await
        .map_err(pg)?;
        let leased: i64 = tx
            .query_one(
                "SELECT count(*) FROM hookwall.deliveries
                 WHERE sink = $1 AND state = 'pending' AND lease_owner IS NOT NULL
                   AND lease_until > now()",
                &[&sink],
            )
            .await
            .map_err(pg)?
            .get(0);
        let mut room = claim
            .max
            .min(claim.fleet.saturating_sub(unms(leased) as usize));
        let mut tokens = None;
        if let Some(rate) = claim.rate {
            let t = refill(&tx, sink, rate, claim.now_ms).await?;
            room = room.min((t.floor() as usize).saturating_mul(claim.per_unit.max(1)));
            tokens = Some(t);
        }
        let paused: bool = tx
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM hookwall.paused_sinks WHERE sink = $1)",
                &[&sink],
            )
            .await
            .map_err(pg)?
            .get(0);
        if room == 0 || paused {
            tx.commit().await.map_err(pg)?;
            return Ok(Vec::new());
        }
        let stmt = tx
            .prepare_cached(&format!(
                "WITH picked AS (
                   SELECT d.seq FROM hookwall.deliveries d
                   WHERE d.sink = $1 AND d.state = 'pending' AND d.due_ms <= $2
                     AND (d.lease_until IS NULL OR d.lease_until < now())
                     AND (d.order_key IS NULL OR NOT EXISTS (
                       SELECT 1 FROM hookwall.deliveries o
                       WHERE o.sink = d.sink AND o.order_key = d.order_key
                         AND o.state = 'pending' AND o.seq < d.seq))
                   ORDER BY d.priority, d.due_ms, d.seq
                   LIMIT $3
                   FOR UPDATE SKIP LOCKED),
                 leased AS (
                   UPDATE hookwall.deliveries d
                   SET lease_owner = $4, lease_until = now() + make_interval(secs => $5)
                   FROM picked WHERE d.seq = picked.seq
                   RETURNING d.seq)
                 SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES_JOINED}
                 WHERE d.seq IN (SELECT seq FROM leased)
                 ORDER BY d.priority, d.due_ms, d.seq"
            ))
            .await
            .map_err(pg)?;
        let rows = tx
            .query(
                &stmt,
                &[
                    &sink,
                    &ms(claim.now_ms),
                    &(room as i64),
                    &self.inner.replica,
                    &self.inner.lease.as_secs_f64(),
                ],
            )
            .await
            .map_err(pg)?;
        let claimed: Vec<DeliveryRecord> =
            rows.iter().map(delivery_of).collect::<Result<_, _>>()?;
        if let Some(t) = tokens {
            let units = claimed.len().div_ceil(claim.per_unit.max(1));
            tx.execute(
                "UPDATE hookwall.sink_pace SET tokens = $2 WHERE sink = $1",
                &[&sink, &(t - units as f64)],
            )
            .await
            .map_err(pg)?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(claimed)
    }

    /// Pauses (`true`) or resumes sink `sink` for every replica: while it is paused no replica
    /// claims its deliveries (they are stored, not sent). Wakes the workers on a resume.
    pub async fn set_paused(&self, sink: &str, paused: bool) -> Result<(), StoreError> {
        let mut client = self.client().await?;
        let tx = client.transaction().await.map_err(pg)?;
        if paused {
            tx.execute(
                "INSERT INTO hookwall.paused_sinks (sink, at_ms) VALUES ($1, $2)
                 ON CONFLICT (sink) DO NOTHING",
                &[&sink, &ms(crate::clock::now_ms())],
            )
            .await
            .map_err(pg)?;
        } else {
            tx.execute(
                "DELETE FROM hookwall.paused_sinks WHERE sink = $1",
                &[&sink],
            )
            .await
            .map_err(pg)?;
            intake::notify(&tx, &HashSet::from([sink.to_string()])).await?;
        }
        tx.commit().await.map_err(pg)?;
        Ok(())
    }

    /// Whether sink `sink` is paused for every replica (through the admin API).
    pub async fn is_paused(&self, sink: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        Ok(client
            .query_one(
                "SELECT EXISTS (SELECT 1 FROM hookwall.paused_sinks WHERE sink = $1)",
                &[&sink],
            )
            .await
            .map_err(pg)?
            .get(0))
    }

    /// Extends this replica's leases on `seqs` (those still pending); returns how many it
    /// still holds.
    pub async fn renew(&self, seqs: &[u64]) -> Result<usize, StoreError> {
        if seqs.is_empty() {
            return Ok(0);
        }
        let mut client = self.client().await?;
        let seqs: Vec<i64> = seqs.iter().map(|s| ms(*s)).collect();
        let tx = client.transaction().await.map_err(pg)?;
        tx.batch_execute("SET LOCAL synchronous_commit TO OFF")
            .await
            .map_err(pg)?;
        let n = tx
            .execute(
                "UPDATE hookwall.deliveries
                 SET lease_until = now() + make_interval(secs => $3)
                 WHERE seq = ANY($1) AND lease_owner = $2 AND state = 'pending'",
                &[&seqs, &self.inner.replica, &self.inner.lease.as_secs_f64()],
            )
            .await
            .map_err(pg)?;
        tx.commit().await.map_err(pg)?;
        Ok(n as usize)
    }
}

/// The sink's token bucket refilled to `now_ms` (created full): the units it allows now.
async fn refill(
    tx: &deadpool_postgres::Transaction<'_>,
    sink: &str,
    rate: Rate,
    now_ms: u64,
) -> Result<f64, StoreError> {
    let per_ms = f64::from(rate.count) / rate.per.as_millis().max(1) as f64;
    let burst = f64::from(rate.count);
    let row = tx
        .query_opt(
            "SELECT tokens, at_ms FROM hookwall.sink_pace WHERE sink = $1",
            &[&sink],
        )
        .await
        .map_err(pg)?;
    let tokens = match row {
        None => burst,
        Some(r) => {
            let (tokens, at): (f64, i64) = (r.get(0), r.get(1));
            let elapsed = now_ms.saturating_sub(unms(at)) as f64;
            (tokens + elapsed * per_ms).min(burst)
        }
    };
    tx.execute(
        "INSERT INTO hookwall.sink_pace (sink, tokens, at_ms) VALUES ($1, $2, $3)
         ON CONFLICT (sink) DO UPDATE SET tokens = EXCLUDED.tokens, at_ms = EXCLUDED.at_ms",
        &[&sink, &tokens, &ms(now_ms)],
    )
    .await
    .map_err(pg)?;
    Ok(tokens)
}

/// Outcomes waiting for the [`recorder`], with the attempt that waits for them.
pub(super) struct Outcomes {
    pub updates: Vec<DeliveryUpdate>,
    pub resp: oneshot::Sender<Result<(), StoreError>>,
}

/// Records outcomes in groups, as intake commits events: whatever the sinks' attempts have
/// queued (up to [`MAX_OUTCOMES`]) in one transaction, so a busy sink costs a commit per group,
/// not per delivery.
pub(super) async fn recorder(pool: Pool, replica: String, mut rx: mpsc::Receiver<Outcomes>) {
    while let Some(first) = rx.recv().await {
        let mut n = first.updates.len();
        let mut group = vec![first];
        while n < MAX_OUTCOMES {
            match rx.try_recv() {
                Ok(o) => {
                    n += o.updates.len();
                    group.push(o);
                }
                Err(_) => break,
            }
        }
        let updates: Vec<DeliveryUpdate> = group
            .iter()
            .flat_map(|o| o.updates.iter().cloned())
            .collect();
        let result = record(&pool, &replica, &updates).await;
        for o in group {
            let answer = match &result {
                Ok(()) => Ok(()),
                Err(e) => Err(StoreError::Storage(e.to_string())),
            };
            let _ = o.resp.send(answer);
        }
    }
}

/// Records delivery outcomes in one transaction: each only if the delivery is still pending
/// and leased by this replica (a replica whose lease ran out and was taken over records
/// nothing: the new holder's attempt counts). Dead ones get their dead letter.
async fn record(pool: &Pool, replica: &str, updates: &[DeliveryUpdate]) -> Result<(), StoreError> {
    if updates.is_empty() {
        return Ok(());
    }
    let mut seqs = Vec::new();
    let mut states = Vec::new();
    let mut dues: Vec<Option<i64>> = Vec::new();
    let mut settled: Vec<Option<i64>> = Vec::new();
    let mut notes: Vec<Option<String>> = Vec::new();
    let mut attempts = Vec::new();
    for u in updates {
        let (seq, state, due, at, note, attempt) = match u {
            DeliveryUpdate::Delivered { seq, at_ms } => (
                *seq,
                "delivered",
                None,
                Some(ms(*at_ms)),
                None,
                Attempt {
                    at_ms: *at_ms,
                    error: None,
                    status: None,
                },
            ),
            DeliveryUpdate::Retry {
                seq,
                at_ms,
                error,
                status,
                due_ms,
            } => (
                *seq,
                "pending",
                Some(ms(*due_ms)),
                None,
                None,
                Attempt {
                    at_ms: *at_ms,
                    error: Some(error.clone()),
                    status: *status,
                },
            ),
            DeliveryUpdate::Dead {
                seq,
                at_ms,
                error,
                status,
            } => (
                *seq,
                "dead",
                None,
                None,
                Some(error.clone()),
                Attempt {
                    at_ms: *at_ms,
                    error: Some(error.clone()),
                    status: *status,
                },
            ),
        };
        seqs.push(ms(seq));
        states.push(state);
        dues.push(due);
        settled.push(at);
        notes.push(note);
        attempts.push(serde_json::to_string(&[attempt]).map_err(StoreError::storage)?);
    }
    let mut client = pool.get().await.map_err(super::pool_error)?;
    let tx = client.transaction().await.map_err(pg)?;
    let stmt = tx
        .prepare_cached(
            "UPDATE hookwall.deliveries d
             SET state = u.state, due_ms = u.due_ms, settled_at_ms = u.settled_at_ms,
                 note = u.note, attempts = d.attempts || u.attempt::jsonb,
                 lease_owner = NULL, lease_until = NULL
             FROM UNNEST($1::int8[], $2::text[], $3::int8[], $4::int8[], $5::text[], $6::text[])
               AS u(seq, state, due_ms, settled_at_ms, note, attempt)
             WHERE d.seq = u.seq AND d.state = 'pending' AND d.lease_owner = $7
             RETURNING d.seq, d.source, d.event_id, d.sink, d.state, d.note",
        )
        .await
        .map_err(pg)?;
    let rows = tx
        .query(
            &stmt,
            &[&seqs, &states, &dues, &settled, &notes, &attempts, &replica],
        )
        .await
        .map_err(pg)?;
    if rows.len() < updates.len() {
        tracing::warn!(
            recorded = rows.len(),
            results = updates.len(),
            "some delivery results were not recorded: their lease had passed to another \
             replica (which sends them again) or they were settled meanwhile"
        );
    }
    let dead: Vec<&tokio_postgres::Row> = rows
        .iter()
        .filter(|r| r.get::<_, &str>(4) == "dead")
        .collect();
    if !dead.is_empty() {
        let at = ms(crate::clock::now_ms());
        tx.execute(
            "INSERT INTO hookwall.dead_letters (source, event_id, delivery, sink, reason, at_ms)
             SELECT s, e, d, k, r, $6 FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[],
               $5::text[]) AS u(s, e, d, k, r)",
            &[
                &dead.iter().map(|r| r.get::<_, &str>(1)).collect::<Vec<_>>(),
                &dead.iter().map(|r| r.get::<_, &str>(2)).collect::<Vec<_>>(),
                &dead.iter().map(|r| r.get::<_, i64>(0)).collect::<Vec<_>>(),
                &dead.iter().map(|r| r.get::<_, &str>(3)).collect::<Vec<_>>(),
                &dead
                    .iter()
                    .map(|r| r.get::<_, Option<String>>(5).unwrap_or_default())
                    .collect::<Vec<_>>(),
                &at,
            ],
        )
        .await
        .map_err(pg)?;
        for r in &dead {
            tracing::warn!(
                sink = r.get::<_, &str>(3),
                delivery = r.get::<_, i64>(0),
                event = r.get::<_, &str>(2),
                "delivery dead-lettered"
            );
        }
    }
    tx.commit().await.map_err(pg)?;
    Ok(())
}

/// Dead-letters every pending delivery of `sink` with `reason`, in one transaction.
pub(super) async fn dead_letter_sink(
    shared: &Shared,
    sink: &str,
    reason: &str,
) -> Result<usize, StoreError> {
    let client = shared.client().await?;
    let row = client
        .query_one(
            "WITH dead AS (
               UPDATE hookwall.deliveries SET state = 'dead', due_ms = NULL, note = $2,
                 lease_owner = NULL, lease_until = NULL
               WHERE sink = $1 AND state = 'pending'
               RETURNING seq, source, event_id, sink),
             letters AS (
               INSERT INTO hookwall.dead_letters (source, event_id, delivery, sink, reason, at_ms)
               SELECT source, event_id, seq, sink, $2, $3 FROM dead ORDER BY seq
               RETURNING 1)
             SELECT count(*) FROM letters",
            &[&sink, &reason, &ms(crate::clock::now_ms())],
        )
        .await
        .map_err(pg)?;
    Ok(unms(row.get(0)) as usize)
}

/// Marks a dead delivery resolved with `note`.
async fn resolve(
    tx: &deadpool_postgres::Transaction<'_>,
    seq: i64,
    note: &str,
) -> Result<(), StoreError> {
    tx.execute(
        "UPDATE hookwall.deliveries SET state = 'resolved', note = $2
         WHERE seq = $1 AND state = 'dead'",
        &[&seq, &note],
    )
    .await
    .map_err(pg)?;
    Ok(())
}

/// Takes dead letter `no` out of the queue: (source, event id, delivery seq).
async fn take_letter(
    tx: &deadpool_postgres::Transaction<'_>,
    no: u64,
) -> Result<Option<(String, String, Option<i64>)>, StoreError> {
    let row = tx
        .query_opt(
            "DELETE FROM hookwall.dead_letters WHERE seq = $1
             RETURNING source, event_id, delivery",
            &[&ms(no)],
        )
        .await
        .map_err(pg)?;
    Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
}

/// Commits replays in one transaction (see [`Replay`]): a letter replayed or purged meanwhile,
/// by this replica or another, is skipped.
pub(super) async fn replay(shared: &Shared, replays: Vec<Replay>) -> Result<usize, StoreError> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await.map_err(pg)?;
    let now_ms = crate::clock::now_ms();
    let mut sinks = HashSet::new();
    let mut n = 0;
    for r in &replays {
        let (Replay::Rerouted { letter: no, .. } | Replay::Resend { letter: no }) = r;
        let Some((source, event_id, delivery)) = take_letter(&tx, *no).await? else {
            continue;
        };
        match (r, delivery) {
            (Replay::Resend { .. }, Some(seq)) => {
                // Exactly the dead delivery again: same id, headers, body, priority and order
                // key; no attempts; due now.
                let row = tx
                    .query_opt(
                        "INSERT INTO hookwall.deliveries (id, source, event_id, received_at_ms,
                           sink, headers, body, priority, state, due_ms, queued_at_ms, order_key)
                         SELECT id, source, event_id, received_at_ms, sink, headers, body,
                           priority, 'pending', $2, $2, order_key
                         FROM hookwall.deliveries WHERE seq = $1 AND state = 'dead'
                         RETURNING seq, sink",
                        &[&seq, &ms(now_ms)],
                    )
                    .await
                    .map_err(pg)?;
                let Some(row) = row else {
                    continue;
                };
                let new_seq: i64 = row.get(0);
                sinks.insert(row.get::<_, String>(1));
                resolve(
                    &tx,
                    seq,
                    &format!("replayed (dead letter {no}) as delivery {new_seq}"),
                )
                .await?;
            }
            (
                Replay::Rerouted {
                    status, deliveries, ..
                },
                delivery,
            ) => {
                if let Some(seq) = delivery {
                    resolve(&tx, seq, &format!("replayed (dead letter {no})")).await?;
                }
                let (kind, reason) = status_columns(status);
                let event = tx
                    .query_opt(
                        "UPDATE hookwall.events SET status = $3, status_reason = $4
                         WHERE source = $1 AND id = $2 RETURNING received_at_ms, body",
                        &[&source, &event_id, &kind, &reason],
                    )
                    .await
                    .map_err(pg)?;
                let Some(event) = event else {
                    continue;
                };
                let received_at_ms = unms(event.get(0));
                let body: Vec<u8> = event.get(1);
                let mut per_sink: std::collections::HashMap<&str, usize> = Default::default();
                let mut rows = Vec::new();
                for d in deliveries {
                    let k = per_sink.entry(d.sink.as_str()).or_default();
                    rows.push(Row {
                        id: format!("{source}:{event_id}:{}:{k}", d.sink),
                        source: &source,
                        event_id: &event_id,
                        received_at_ms,
                        sink: &d.sink,
                        headers: super::encode_headers(&d.headers)?,
                        body: (d.body != body).then_some(d.body.as_slice()),
                        priority: i16::from(d.priority.rank()),
                        due_ms: received_at_ms,
                        queued_at_ms: now_ms,
                        order_key: shared
                            .inner
                            .order_keys
                            .get(&d.sink)
                            .and_then(|p| crate::event::order_key(p, &d.body)),
                    });
                    *k += 1;
                }
                sinks.extend(intake::insert_rows(&tx, &rows).await?);
                if let EventStatus::DeadLettered { reason } = status {
                    tx.execute(
                        "INSERT INTO hookwall.dead_letters (source, event_id, reason, at_ms)
                         VALUES ($1, $2, $3, $4)",
                        &[&source, &event_id, reason, &ms(now_ms)],
                    )
                    .await
                    .map_err(pg)?;
                }
            }
            (Replay::Resend { .. }, None) => {
                // A plugin failure's letter is replayed by running the plugins, not resent:
                // it stays queued under its number.
                tx.execute(
                    "INSERT INTO hookwall.dead_letters (seq, source, event_id, reason, at_ms)
                     OVERRIDING SYSTEM VALUE
                     SELECT $1, $2, $3, status_reason, $4 FROM hookwall.events
                     WHERE source = $2 AND id = $3",
                    &[&ms(*no), &source, &event_id, &ms(now_ms)],
                )
                .await
                .map_err(pg)?;
                continue;
            }
        }
        n += 1;
    }
    intake::notify(&tx, &sinks).await?;
    tx.commit().await.map_err(pg)?;
    for sink in &sinks {
        shared.inner.wakeups.ring(sink);
    }
    Ok(n)
}

/// Removes dead letters without delivering them, in one transaction.
pub(super) async fn purge(shared: &Shared, letters: Vec<u64>) -> Result<usize, StoreError> {
    let mut client = shared.client().await?;
    let tx = client.transaction().await.map_err(pg)?;
    let mut n = 0;
    for no in letters {
        let Some((source, event_id, delivery)) = take_letter(&tx, no).await? else {
            continue;
        };
        match delivery {
            Some(seq) => resolve(&tx, seq, &format!("purged (dead letter {no})")).await?,
            None => {
                tx.execute(
                    "UPDATE hookwall.events SET status = 'dropped',
                       status_reason = 'dead letter ' || $3 || ' purged: ' || COALESCE(status_reason, '')
                     WHERE source = $1 AND id = $2",
                    &[&source, &event_id, &no.to_string()],
                )
                .await
                .map_err(pg)?;
            }
        }
        n += 1;
    }
    tx.commit().await.map_err(pg)?;
    Ok(n)
}

/// Keeps a `LISTEN hookwall_queue` connection open (reconnecting after a failure) and rings
/// the sinks each notification names. After a reconnect every sink is rung once, for what was
/// committed while nobody listened.
pub(super) async fn listen(
    config: tokio_postgres::Config,
    tls: tokio_postgres_rustls::MakeRustlsConnect,
    wakeups: Arc<Wakeups>,
) {
    loop {
        match config.connect(tls.clone()).await {
            Ok((client, mut connection)) => {
                let mut messages =
                    futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
                // The connection must be driven for the LISTEN to complete.
                let ok = {
                    let listening = client.batch_execute("LISTEN hookwall_queue");
                    let mut listening = std::pin::pin!(listening);
                    loop {
                        tokio::select! {
                            r = &mut listening => break r.is_ok(),
                            m = messages.next() => if m.is_none() { break false },
                        }
                    }
                };
                if ok {
                    wakeups.ring_all();
                    while let Some(message) = messages.next().await {
                        match message {
                            Ok(AsyncMessage::Notification(n)) => wakeups.ring(n.payload()),
                            Ok(_) => {}
                            Err(e) => {
                                tracing::warn!(error = %e, "the PostgreSQL LISTEN connection failed; reconnecting");
                                break;
                            }
                        }
                    }
                }
                drop(client);
            }
            Err(e) => {
                tracing::debug!(error = %e, "cannot open the PostgreSQL LISTEN connection; retrying");
            }
        }
        tokio::time::sleep(LISTEN_RETRY).await;
    }
}

/// Reads the queue's depth and oldest pending age per sink every [`WATCH_INTERVAL`] into the
/// metrics and the store's load gauges, and whether the database answers (`/readyz`).
pub(super) async fn watch(pool: Pool, gauges: Arc<Gauges>) {
    let mut known: HashSet<String> = HashSet::new();
    loop {
        let read = async {
            let client = pool.get().await.map_err(super::pool_error)?;
            client
                .query(
                    "SELECT sink, count(*), min(queued_at_ms) FROM hookwall.deliveries
                     WHERE state = 'pending' GROUP BY sink",
                    &[],
                )
                .await
                .map_err(pg)
        };
        match read.await {
            Ok(rows) => {
                let now = crate::clock::now_ms();
                let mut total = 0u64;
                let mut seen = HashSet::new();
                for r in &rows {
                    let sink: String = r.get(0);
                    let depth = unms(r.get(1));
                    let oldest = unms(r.get::<_, Option<i64>>(2).unwrap_or(0));
                    total += depth;
                    crate::telemetry::metrics::queue_oldest_pending(
                        &sink,
                        Duration::from_millis(now.saturating_sub(oldest)),
                    );
                    seen.insert(sink);
                }
                for gone in known.difference(&seen) {
                    crate::telemetry::metrics::queue_oldest_pending(gone, Duration::ZERO);
                }
                known = seen;
                gauges.set_pending(total);
                gauges.set_write_error(None);
            }
            Err(e) => {
                gauges.set_write_error(Some(e.to_string()));
            }
        }
        tokio::time::sleep(WATCH_INTERVAL).await;
    }
}
