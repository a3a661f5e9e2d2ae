//! Dedupe marks: "an event with this key from this source was accepted; until `expires_ms`,
//! copies are duplicates".
//!
//! A mark is written by the writer in the same transaction as the event it stands for, so a
//! crash can never leave an event without its mark (a retry would be delivered twice) or a mark
//! without its event (a retry would be refused and the event lost). Because one writer thread
//! applies accepts in order, concurrent copies of one event resolve to exactly one `Stored`.
//!
//! Tables:
//! - `dedupe`: (source, key) → (expires ms, event id);
//! - `dedupe_expiry`: (expires ms, source, key) → () — lets the purge find expired marks in
//!   order without scanning live ones.

use std::path::Path;

use redb::{ReadableTable, TableDefinition};

use super::writer::Tables;
use super::{Embedded, StoreError};

pub(super) const DEDUPE: TableDefinition<(&str, &str), (u64, &str)> =
    TableDefinition::new("dedupe");
pub(super) const DEDUPE_EXPIRY: TableDefinition<(u64, &str, &str), ()> =
    TableDefinition::new("dedupe_expiry");

/// A dedupe mark to commit with an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DedupeMark {
    /// The source's name; keys are scoped by source.
    pub source: String,
    /// The dedupe key the source's `dedupe` setting took from the request.
    pub key: String,
    /// When the mark lapses, in milliseconds since the Unix epoch (received time plus TTL).
    pub expires_ms: u64,
}

impl Embedded {
    /// The id of the event that holds an unexpired mark for (`source`, `key`) at `now_ms`.
    /// A cheap MVCC read; the writer's check at commit stays the authority.
    pub fn marked(
        &self,
        source: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DEDUPE).map_err(StoreError::storage)?;
        let found = table.get((source, key)).map_err(StoreError::storage)?;
        Ok(found.and_then(|v| {
            let (expires, id) = v.value();
            (expires > now_ms).then(|| id.to_string())
        }))
    }

    /// Removes up to `limit` marks that expired before `now_ms`, in one commit; returns how
    /// many. Bounded so the purge never holds the writer for long.
    pub async fn purge_expired_marks(
        &self,
        now_ms: u64,
        limit: usize,
    ) -> Result<usize, StoreError> {
        self.ask(|resp| super::writer::Job::PurgeMarks {
            now_ms,
            limit,
            resp,
        })
        .await
    }

    /// Number of dedupe marks kept (expired ones included until purged).
    pub fn mark_count(&self) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata as _;
        let txn = self.inner.db.begin_read()?;
        let table = txn.open_table(DEDUPE).map_err(StoreError::storage)?;
        table.len().map_err(StoreError::storage)
    }
}

/// Inside the writer's transaction: the event id holding a live mark, if any.
pub(super) fn live_mark(
    t: &Tables,
    mark: &DedupeMark,
    now_ms: u64,
) -> Result<Option<String>, StoreError> {
    let found = t
        .dedupe
        .get((mark.source.as_str(), mark.key.as_str()))
        .map_err(StoreError::storage)?;
    Ok(found.and_then(|v| {
        let (expires, id) = v.value();
        (expires > now_ms).then(|| id.to_string())
    }))
}

/// Inside the writer's transaction: sets the mark for `event_id`, replacing an expired one.
pub(super) fn put_mark(
    t: &mut Tables,
    mark: &DedupeMark,
    event_id: &str,
) -> Result<(), StoreError> {
    let (table, expiry) = (&mut t.dedupe, &mut t.dedupe_expiry);
    let key = (mark.source.as_str(), mark.key.as_str());
    let old = table
        .insert(key, (mark.expires_ms, event_id))
        .map_err(StoreError::storage)?
        .map(|v| v.value().0);
    if let Some(old_expires) = old {
        expiry
            .remove((old_expires, key.0, key.1))
            .map_err(StoreError::storage)?;
    }
    expiry
        .insert((mark.expires_ms, key.0, key.1), ())
        .map_err(StoreError::storage)?;
    Ok(())
}

/// Inside the writer's transaction: deletes up to `limit` marks expired at `now_ms`.
pub(super) fn purge(t: &mut Tables, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
    let (table, expiry) = (&mut t.dedupe, &mut t.dedupe_expiry);
    let expired: Vec<(u64, String, String)> = expiry
        .range((0u64, "", "")..(now_ms, "", ""))
        .map_err(StoreError::storage)?
        .take(limit)
        .map(|row| {
            row.map(|(k, _)| {
                let (at, source, key) = k.value();
                (at, source.to_string(), key.to_string())
            })
            .map_err(StoreError::storage)
        })
        .collect::<Result<_, _>>()?;
    for (at, source, key) in &expired {
        expiry
            .remove((*at, source.as_str(), key.as_str()))
            .map_err(StoreError::storage)?;
        table
            .remove((source.as_str(), key.as_str()))
            .map_err(StoreError::storage)?;
    }
    Ok(expired.len())
}

/// Writes `count` live marks (`source`, `PREFIX-N`) expiring at `expires_ms` straight into the
/// store in `dir` (created if missing; it must not be running), in transactions of 200,000:
/// how `loadgen fill-marks` sets up the ten-million-marks memory measurement (issue #18). Not
/// for production use: the marks stand for no event.
#[doc(hidden)]
pub fn preload(
    dir: &Path,
    source: &str,
    prefix: &str,
    count: u64,
    expires_ms: u64,
) -> Result<(), StoreError> {
    const STEP: u64 = 200_000;
    std::fs::create_dir_all(dir).map_err(StoreError::storage)?;
    let path = dir.join(super::DB_FILE);
    if !path.exists() {
        super::cell::create_new(&path).map_err(StoreError::storage)?;
    }
    let db = super::cell::create(&path).map_err(StoreError::storage)?;
    let mut done = 0;
    while done < count {
        let txn = db.begin_write().map_err(StoreError::storage)?;
        {
            let mut table = txn.open_table(DEDUPE).map_err(StoreError::storage)?;
            let mut expiry = txn.open_table(DEDUPE_EXPIRY).map_err(StoreError::storage)?;
            for n in done..count.min(done + STEP) {
                let key = format!("{prefix}-{n}");
                table
                    .insert((source, key.as_str()), (expires_ms, key.as_str()))
                    .map_err(StoreError::storage)?;
                expiry
                    .insert((expires_ms, source, key.as_str()), ())
                    .map_err(StoreError::storage)?;
            }
        }
        txn.commit().map_err(StoreError::storage)?;
        done = count.min(done + STEP);
    }
    Ok(())
}
