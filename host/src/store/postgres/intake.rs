//! Intake into the shared store: group commit. Each writer task takes whatever accept jobs are
//! queued (up to [`MAX_GROUP`]) and commits them in one transaction, a handful of statements
//! whatever the group's size: marks, events, deliveries and dead letters are each one
//! `INSERT … SELECT FROM UNNEST(arrays)`. Every job is answered after `COMMIT` returns, so an
//! acknowledged event is in the database; a failed commit answers every job of its group with
//! the error (the sender hears 503 and retries; nothing of the group was written).
//!
//! Duplicates: a copy inside the group is answered from the group's first; against what is
//! committed, `ON CONFLICT` decides, also against another replica's transaction running at
//! the same moment (the second waits for the first and then sees its row). Rows are inserted
//! in key order, so two groups never wait on each other in a cycle.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use deadpool_postgres::Pool;
use tokio::sync::{Mutex, mpsc, oneshot};
use tokio::task::JoinHandle;

use super::{Wakeups, encode_headers, ms, pg, pool_error, status_columns};
use crate::store::load::Gauges;
use crate::store::marks::DedupeMark;
use crate::store::records::{EventStatus, NewEvent};
use crate::store::{AcceptOutcome, StoreError};

/// Jobs committed in one transaction at most.
const MAX_GROUP: usize = 256;
/// Writer tasks: while one waits for its commit, the next builds and sends its group.
const WRITERS: usize = 2;

/// A request to a writer.
pub(super) enum Job {
    Accept {
        event: Box<NewEvent>,
        mark: Option<DedupeMark>,
        resp: oneshot::Sender<Result<AcceptOutcome, StoreError>>,
    },
    /// Stop this writer (after what it holds).
    Stop { resp: oneshot::Sender<()> },
}

/// Starts the writers on the shared job queue.
pub(super) fn spawn(
    pool: Pool,
    rx: mpsc::Receiver<Job>,
    order_keys: HashMap<String, String>,
    wakeups: Arc<Wakeups>,
    gauges: Arc<Gauges>,
) -> Vec<JoinHandle<()>> {
    let rx = Arc::new(Mutex::new(rx));
    let order_keys = Arc::new(order_keys);
    (0..WRITERS)
        .map(|_| {
            tokio::spawn(run(
                pool.clone(),
                rx.clone(),
                order_keys.clone(),
                wakeups.clone(),
                gauges.clone(),
            ))
        })
        .collect()
}

type Accept = (
    Box<NewEvent>,
    Option<DedupeMark>,
    oneshot::Sender<Result<AcceptOutcome, StoreError>>,
);

async fn run(
    pool: Pool,
    rx: Arc<Mutex<mpsc::Receiver<Job>>>,
    order_keys: Arc<HashMap<String, String>>,
    wakeups: Arc<Wakeups>,
    gauges: Arc<Gauges>,
) {
    loop {
        let mut group: Vec<Accept> = Vec::new();
        let mut stop = None;
        {
            let mut rx = rx.lock().await;
            let Some(first) = rx.recv().await else {
                return;
            };
            let mut next = Some(first);
            while let Some(job) = next.take() {
                match job {
                    Job::Accept { event, mark, resp } => group.push((event, mark, resp)),
                    Job::Stop { resp } => {
                        stop = Some(resp);
                        break;
                    }
                }
                if group.len() < MAX_GROUP {
                    next = rx.try_recv().ok();
                }
            }
        }
        if !group.is_empty() {
            gauges.commit_started();
            let result = commit(&pool, &group, &order_keys).await;
            gauges.commit_ended(None);
            match result {
                Ok((outcomes, sinks)) => {
                    gauges.set_write_error(None);
                    for sink in &sinks {
                        wakeups.ring(sink);
                    }
                    for ((_, _, resp), outcome) in group.into_iter().zip(outcomes) {
                        let _ = resp.send(Ok(outcome));
                    }
                }
                Err(e) => {
                    tracing::error!(error = %e, events = group.len(),
                        "cannot commit events to PostgreSQL; answered 503");
                    gauges.set_write_error(Some(e.to_string()));
                    for (_, _, resp) in group {
                        let _ = resp.send(Err(StoreError::Storage(e.to_string())));
                    }
                }
            }
        }
        if let Some(resp) = stop {
            let _ = resp.send(());
            return;
        }
    }
}

/// Which jobs of a group lead (are written) and which follow an earlier job of the same group
/// with the same event key or dedupe mark (answered as its duplicate).
fn leaders(group: &[Accept]) -> Vec<Option<usize>> {
    let mut events: HashMap<(&str, &str), usize> = HashMap::new();
    let mut marks: HashMap<(&str, &str), usize> = HashMap::new();
    group
        .iter()
        .enumerate()
        .map(|(i, (event, mark, _))| {
            let key = (event.record.source.as_str(), event.record.id.as_str());
            let mark = mark.as_ref().map(|m| (m.source.as_str(), m.key.as_str()));
            if let Some(&j) = events.get(&key) {
                return Some(j);
            }
            if let Some(m) = mark
                && let Some(&j) = marks.get(&m)
            {
                return Some(j);
            }
            events.insert(key, i);
            if let Some(m) = mark {
                marks.insert(m, i);
            }
            None
        })
        .collect()
}

/// Commits `group` in one transaction: each job's outcome, and the sinks that got deliveries.
async fn commit(
    pool: &Pool,
    group: &[Accept],
    order_keys: &HashMap<String, String>,
) -> Result<(Vec<AcceptOutcome>, HashSet<String>), StoreError> {
    let follows = leaders(group);
    let mut outcome: Vec<Option<AcceptOutcome>> = vec![None; group.len()];
    let mut client = pool.get().await.map_err(pool_error)?;
    let tx = client.transaction().await.map_err(pg)?;
    let now = ms(crate::clock::now_ms());

    // 1. Marks: a new mark, or one replacing an expired mark, is ours; a live one is another
    //    event's, and ours is its duplicate.
    let mut with_mark: Vec<usize> = (0..group.len())
        .filter(|&i| follows[i].is_none() && group[i].1.is_some())
        .collect();
    with_mark.sort_by(|&a, &b| {
        let (ma, mb) = (group[a].1.as_ref(), group[b].1.as_ref());
        ma.map(|m| (&m.source, &m.key))
            .cmp(&mb.map(|m| (&m.source, &m.key)))
    });
    let mut marked_by_us: HashSet<usize> = HashSet::new();
    if !with_mark.is_empty() {
        let mark = |i: usize| group[i].1.as_ref().expect("filtered on marks");
        let sources: Vec<&str> = with_mark.iter().map(|&i| mark(i).source.as_str()).collect();
        let keys: Vec<&str> = with_mark.iter().map(|&i| mark(i).key.as_str()).collect();
        let ids: Vec<&str> = with_mark
            .iter()
            .map(|&i| group[i].0.record.id.as_str())
            .collect();
        let expiries: Vec<i64> = with_mark.iter().map(|&i| ms(mark(i).expires_ms)).collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO hookwall.dedupe_marks AS m (source, key, event_id, expires_ms)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[])
                 ON CONFLICT (source, key) DO UPDATE
                   SET event_id = EXCLUDED.event_id, expires_ms = EXCLUDED.expires_ms
                   WHERE m.expires_ms <= $5
                 RETURNING source, key",
            )
            .await
            .map_err(pg)?;
        let rows = tx
            .query(&stmt, &[&sources, &keys, &ids, &expiries, &now])
            .await
            .map_err(pg)?;
        let ours: HashSet<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut held = Vec::new();
        for &i in &with_mark {
            let m = mark(i);
            if ours.contains(&(m.source.clone(), m.key.clone())) {
                marked_by_us.insert(i);
            } else {
                held.push(i);
            }
        }
        if !held.is_empty() {
            let sources: Vec<&str> = held.iter().map(|&i| mark(i).source.as_str()).collect();
            let keys: Vec<&str> = held.iter().map(|&i| mark(i).key.as_str()).collect();
            let rows = tx
                .query(
                    "SELECT source, key, event_id FROM hookwall.dedupe_marks
                     WHERE (source, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
                    &[&sources, &keys],
                )
                .await
                .map_err(pg)?;
            let holders: HashMap<(String, String), String> = rows
                .iter()
                .map(|r| ((r.get(0), r.get(1)), r.get(2)))
                .collect();
            for &i in &held {
                let m = mark(i);
                let id = holders
                    .get(&(m.source.clone(), m.key.clone()))
                    .cloned()
                    .unwrap_or_else(|| group[i].0.record.id.clone());
                outcome[i] = Some(AcceptOutcome::Duplicate { id });
            }
        }
    }

    // 2. Events: an id already stored makes the job a duplicate (and takes back its mark).
    let mut writing: Vec<usize> = (0..group.len())
        .filter(|&i| follows[i].is_none() && outcome[i].is_none())
        .collect();
    writing.sort_by(|&a, &b| {
        let (ea, eb) = (&group[a].0.record, &group[b].0.record);
        (&ea.source, &ea.id).cmp(&(&eb.source, &eb.id))
    });
    if !writing.is_empty() {
        let record = |i: usize| &group[i].0.record;
        let headers: Vec<Vec<u8>> = writing
            .iter()
            .map(|&i| encode_headers(&record(i).headers))
            .collect::<Result<_, _>>()?;
        let statuses: Vec<(&str, Option<&str>)> = writing
            .iter()
            .map(|&i| status_columns(&record(i).status))
            .collect();
        let stmt = tx
            .prepare_cached(
                "INSERT INTO hookwall.events (source, id, received_at_ms, method, path, query,
                   headers, body, status, status_reason)
                 SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::text[], $5::text[],
                   $6::text[], $7::bytea[], $8::bytea[], $9::text[], $10::text[])
                 ON CONFLICT (source, id) DO NOTHING
                 RETURNING source, id",
            )
            .await
            .map_err(pg)?;
        let rows = tx
            .query(
                &stmt,
                &[
                    &writing
                        .iter()
                        .map(|&i| record(i).source.as_str())
                        .collect::<Vec<_>>(),
                    &writing
                        .iter()
                        .map(|&i| record(i).id.as_str())
                        .collect::<Vec<_>>(),
                    &writing
                        .iter()
                        .map(|&i| ms(record(i).received_at_ms))
                        .collect::<Vec<_>>(),
                    &writing
                        .iter()
                        .map(|&i| record(i).method.as_str())
                        .collect::<Vec<_>>(),
                    &writing
                        .iter()
                        .map(|&i| record(i).path.as_str())
                        .collect::<Vec<_>>(),
                    &writing
                        .iter()
                        .map(|&i| record(i).query.as_str())
                        .collect::<Vec<_>>(),
                    &headers,
                    &writing
                        .iter()
                        .map(|&i| record(i).body.as_slice())
                        .collect::<Vec<_>>(),
                    &statuses.iter().map(|s| s.0).collect::<Vec<_>>(),
                    &statuses.iter().map(|s| s.1).collect::<Vec<_>>(),
                ],
            )
            .await
            .map_err(pg)?;
        let stored: HashSet<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
        let mut unmark = Vec::new();
        for &i in &writing {
            let r = record(i);
            if stored.contains(&(r.source.clone(), r.id.clone())) {
                outcome[i] = Some(AcceptOutcome::Stored);
            } else {
                outcome[i] = Some(AcceptOutcome::Duplicate { id: r.id.clone() });
                if marked_by_us.contains(&i) {
                    unmark.push(i);
                }
            }
        }
        if !unmark.is_empty() {
            let mark = |i: usize| group[i].1.as_ref().expect("marked");
            tx.execute(
                "DELETE FROM hookwall.dedupe_marks
                 WHERE (source, key) IN (SELECT * FROM UNNEST($1::text[], $2::text[]))",
                &[
                    &unmark
                        .iter()
                        .map(|&i| mark(i).source.as_str())
                        .collect::<Vec<_>>(),
                    &unmark
                        .iter()
                        .map(|&i| mark(i).key.as_str())
                        .collect::<Vec<_>>(),
                ],
            )
            .await
            .map_err(pg)?;
        }
    }

    // 3. Deliveries and plugin dead letters of the stored events.
    let stored: Vec<&NewEvent> = (0..group.len())
        .filter(|&i| follows[i].is_none() && outcome[i] == Some(AcceptOutcome::Stored))
        .map(|i| &*group[i].0)
        .collect();
    let sinks = insert_deliveries(&tx, &stored, order_keys).await?;
    let letters: Vec<&NewEvent> = stored
        .iter()
        .copied()
        .filter(|e| matches!(e.record.status, EventStatus::DeadLettered { .. }))
        .collect();
    if !letters.is_empty() {
        let reason = |e: &NewEvent| match &e.record.status {
            EventStatus::DeadLettered { reason } => reason.clone(),
            _ => String::new(),
        };
        tx.execute(
            "INSERT INTO hookwall.dead_letters (source, event_id, reason, at_ms)
             SELECT * FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[])",
            &[
                &letters
                    .iter()
                    .map(|e| e.record.source.as_str())
                    .collect::<Vec<_>>(),
                &letters
                    .iter()
                    .map(|e| e.record.id.as_str())
                    .collect::<Vec<_>>(),
                &letters.iter().map(|e| reason(e)).collect::<Vec<_>>(),
                &letters
                    .iter()
                    .map(|e| ms(e.record.received_at_ms))
                    .collect::<Vec<_>>(),
            ],
        )
        .await
        .map_err(pg)?;
    }
    notify(&tx, &sinks).await?;
    tx.commit().await.map_err(pg)?;

    // Copies inside the group: the first's outcome, as a duplicate of the stored id.
    let mut answers = Vec::with_capacity(group.len());
    for i in 0..group.len() {
        let answer = match follows[i] {
            None => outcome[i].clone().unwrap_or(AcceptOutcome::Stored),
            Some(j) => match &outcome[j] {
                Some(AcceptOutcome::Duplicate { id }) => {
                    AcceptOutcome::Duplicate { id: id.clone() }
                }
                _ => AcceptOutcome::Duplicate {
                    id: group[j].0.record.id.clone(),
                },
            },
        };
        answers.push(answer);
    }
    Ok((answers, sinks))
}

/// One new delivery's columns.
pub(super) struct Row<'a> {
    pub id: String,
    pub source: &'a str,
    pub event_id: &'a str,
    pub received_at_ms: u64,
    pub sink: &'a str,
    pub headers: Vec<u8>,
    /// `None`: the event's body.
    pub body: Option<&'a [u8]>,
    pub priority: i16,
    pub due_ms: u64,
    pub queued_at_ms: u64,
    pub order_key: Option<String>,
}

/// Queues the deliveries of `events` (each with the stable id `SOURCE:EVENT:SINK:N`, as the
/// embedded store gives them); returns the sinks they are for.
async fn insert_deliveries(
    tx: &deadpool_postgres::Transaction<'_>,
    events: &[&NewEvent],
    order_keys: &HashMap<String, String>,
) -> Result<HashSet<String>, StoreError> {
    let mut rows = Vec::new();
    for e in events {
        let r = &e.record;
        let mut per_sink: HashMap<&str, usize> = HashMap::new();
        for d in &e.deliveries {
            let n = per_sink.entry(d.sink.as_str()).or_default();
            rows.push(Row {
                id: format!("{}:{}:{}:{n}", r.source, r.id, d.sink),
                source: &r.source,
                event_id: &r.id,
                received_at_ms: r.received_at_ms,
                sink: &d.sink,
                headers: encode_headers(&d.headers)?,
                body: (d.body != r.body).then_some(d.body.as_slice()),
                priority: i16::from(d.priority.rank()),
                due_ms: r.received_at_ms,
                queued_at_ms: r.received_at_ms,
                order_key: order_keys
                    .get(&d.sink)
                    .and_then(|p| crate::event::order_key(p, &d.body)),
            });
            *n += 1;
        }
    }
    insert_rows(tx, &rows).await
}

/// Inserts pending delivery rows (seqs from the table's identity, in the rows' order).
pub(super) async fn insert_rows(
    tx: &deadpool_postgres::Transaction<'_>,
    rows: &[Row<'_>],
) -> Result<HashSet<String>, StoreError> {
    if rows.is_empty() {
        return Ok(HashSet::new());
    }
    let stmt = tx
        .prepare_cached(
            "INSERT INTO hookwall.deliveries (id, source, event_id, received_at_ms, sink, headers,
               body, priority, state, due_ms, queued_at_ms, order_key)
             SELECT id, source, event_id, received_at_ms, sink, headers, body, priority,
               'pending', due_ms, queued_at_ms, order_key
             FROM UNNEST($1::text[], $2::text[], $3::text[], $4::int8[], $5::text[], $6::bytea[],
               $7::bytea[], $8::int2[], $9::int8[], $10::int8[], $11::text[])
               WITH ORDINALITY AS u(id, source, event_id, received_at_ms, sink, headers, body,
                 priority, due_ms, queued_at_ms, order_key, n)
             ORDER BY n",
        )
        .await
        .map_err(pg)?;
    tx.execute(
        &stmt,
        &[
            &rows.iter().map(|r| r.id.as_str()).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.source).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.event_id).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| ms(r.received_at_ms))
                .collect::<Vec<_>>(),
            &rows.iter().map(|r| r.sink).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| r.headers.as_slice())
                .collect::<Vec<_>>(),
            &rows.iter().map(|r| r.body).collect::<Vec<_>>(),
            &rows.iter().map(|r| r.priority).collect::<Vec<_>>(),
            &rows.iter().map(|r| ms(r.due_ms)).collect::<Vec<_>>(),
            &rows.iter().map(|r| ms(r.queued_at_ms)).collect::<Vec<_>>(),
            &rows
                .iter()
                .map(|r| r.order_key.as_deref())
                .collect::<Vec<_>>(),
        ],
    )
    .await
    .map_err(pg)?;
    Ok(rows.iter().map(|r| r.sink.to_string()).collect())
}

/// Tells every replica's workers of `sinks` when the transaction commits.
pub(super) async fn notify(
    tx: &deadpool_postgres::Transaction<'_>,
    sinks: &HashSet<String>,
) -> Result<(), StoreError> {
    if sinks.is_empty() {
        return Ok(());
    }
    let sinks: Vec<&str> = sinks.iter().map(String::as_str).collect();
    tx.execute(
        "SELECT pg_notify('hookwall_queue', s) FROM UNNEST($1::text[]) AS s",
        &[&sinks],
    )
    .await
    .map_err(pg)?;
    Ok(())
}
