//! The store's seam: [`Backend`] is what every stage above needs from the durable inbox and
//! outbox, whichever engine keeps it; [`Store`] is the cloneable handle they hold.
//!
//! Two backends implement it: [`Embedded`] (redb and the log on local disk, one process) and
//! [`Shared`] (PostgreSQL, shared by every replica). They differ in how deliveries leave the
//! queue, so [`Backend::outbox`] hands the delivery stage the one it has: the embedded store
//! feeds one process's workers from its commits, the shared one lets workers on any replica
//! claim due deliveries under a lease.

use std::ops::Deref;
use std::path::Path;
use std::sync::Arc;

use super::dlq::{LetterFilter, PruneCursor, PruneStep, Replay};
use super::listing::{EventFilter, EventPage};
use super::load::StoreLoad;
use super::marks::DedupeMark;
use super::postgres::Shared;
use super::records::{DeadLetter, DeliveryRecord, EventRecord, NewEvent};
use super::writer::DeliveryUpdate;
use super::{AcceptOutcome, Embedded, StoreError};

/// Where a backend's deliveries leave from (see the module docs).
pub enum Outbox<'a> {
    /// One process owns the queue: its workers are fed by the embedded store's commits.
    Local(&'a Embedded),
    /// Replicas share the queue: workers claim due deliveries under a lease.
    Shared(&'a Shared),
}

/// What the stages above the store need from it, whichever engine keeps it.
#[async_trait::async_trait]
pub trait Backend: Send + Sync {
    /// Durably stores an event with its deliveries (and its dead letter, if its plugins
    /// failed), and `mark` with it; returns once the commit is durable. A live mark for the
    /// same (source, key), or an event with the same id, makes it a duplicate: nothing written.
    async fn accept_marked(
        &self,
        event: NewEvent,
        mark: Option<DedupeMark>,
    ) -> Result<AcceptOutcome, StoreError>;

    /// [`Backend::accept_marked`] without a dedupe mark.
    async fn accept(&self, event: NewEvent) -> Result<AcceptOutcome, StoreError> {
        self.accept_marked(event, None).await
    }

    /// Records the results of delivery attempts in one commit.
    async fn update_deliveries(&self, updates: Vec<DeliveryUpdate>) -> Result<(), StoreError>;

    /// The event `id` of `source`, and its deliveries.
    async fn event(
        &self,
        source: &str,
        id: &str,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError>;

    /// One delivery by its seq.
    async fn delivery(&self, seq: u64) -> Result<Option<DeliveryRecord>, StoreError>;

    /// Up to `limit` events matching `filter`, newest first, starting strictly before `after`
    /// (a previous page's `next`).
    async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<EventPage, StoreError>;

    /// Dead letters matching `filter`, newest first, at most `limit`.
    async fn dead_letters_matching(
        &self,
        filter: &LetterFilter,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, StoreError>;

    /// The newest `limit` dead letters, newest first.
    async fn dead_letters(&self, limit: usize) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        self.dead_letters_matching(&LetterFilter::All, limit).await
    }

    /// Entries in the dead-letter queue.
    async fn dead_letter_count(&self) -> Result<u64, StoreError>;

    /// Dead-letters every pending delivery of `sink` (no longer configured) with `reason`.
    async fn dead_letter_sink(&self, sink: &str, reason: &str) -> Result<usize, StoreError>;

    /// Commits replays; returns how many letters were replayed.
    async fn replay(&self, replays: Vec<Replay>) -> Result<usize, StoreError>;

    /// Removes dead letters without delivering them; returns how many were removed.
    async fn purge_letters(&self, letters: Vec<u64>) -> Result<usize, StoreError>;

    /// One retention step over the events received before `before_ms` (see
    /// [`Embedded::prune_settled`]).
    async fn prune_settled(
        &self,
        before_ms: u64,
        from: Option<&PruneCursor>,
        limit: usize,
        scan: usize,
    ) -> Result<PruneStep, StoreError>;

    /// The id of the event that holds an unexpired mark for (`source`, `key`) at `now_ms`.
    async fn marked(
        &self,
        source: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError>;

    /// Removes up to `limit` marks that expired before `now_ms`; returns how many.
    async fn purge_expired_marks(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError>;

    /// Number of dedupe marks kept (expired ones included until purged).
    async fn mark_count(&self) -> Result<u64, StoreError>;

    /// Number of deliveries waiting for `sink` (due now or later).
    async fn pending_count(&self, sink: &str) -> Result<u64, StoreError>;

    /// The sinks that have pending deliveries.
    async fn pending_sinks(&self) -> Result<Vec<String>, StoreError>;

    /// The value of `key` in `namespace` that is live at `now_ms`.
    async fn kv_get(
        &self,
        namespace: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError>;

    /// Sets `key` in `namespace`, expiring at `expires_at_ms` (never: `None`).
    async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<(), StoreError>;

    /// Removes `key` from `namespace`; true when it was there.
    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError>;

    /// Sets `key` only if its value live at `now_ms` equals `expected`.
    async fn kv_compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: &[u8],
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, StoreError>;

    /// The current backlog and commit latency (cheap: no I/O).
    fn load(&self) -> StoreLoad;

    /// Why the store cannot take writes right now, or `None` when it can.
    fn write_error(&self) -> Option<String>;

    /// Where deliveries leave from.
    fn outbox(&self) -> Outbox<'_>;

    /// Stops taking writes and makes what was committed durable.
    async fn close(&self);
}

/// A cheap, cloneable handle to the store, whichever [`Backend`] keeps it.
#[derive(Clone)]
pub struct Store(Arc<dyn Backend>);

impl Store {
    /// Opens (or creates) the embedded store in directory `dir`, fsyncing every commit.
    pub fn open(dir: &Path) -> Result<Store, StoreError> {
        Ok(Store::from(Embedded::open(dir)?))
    }

    /// Opens the embedded store; see [`Embedded::open_with`].
    pub fn open_with(dir: &Path, fsync: bool) -> Result<Store, StoreError> {
        Ok(Store::from(Embedded::open_with(dir, fsync)?))
    }
}

impl From<Embedded> for Store {
    fn from(store: Embedded) -> Store {
        Store(Arc::new(store))
    }
}

impl From<Shared> for Store {
    fn from(store: Shared) -> Store {
        Store(Arc::new(store))
    }
}

impl Deref for Store {
    type Target = dyn Backend;

    fn deref(&self) -> &Self::Target {
        &*self.0
    }
}

#[async_trait::async_trait]
impl Backend for Embedded {
    async fn accept_marked(
        &self,
        event: NewEvent,
        mark: Option<DedupeMark>,
    ) -> Result<AcceptOutcome, StoreError> {
        Embedded::accept_marked(self, event, mark).await
    }

    async fn update_deliveries(&self, updates: Vec<DeliveryUpdate>) -> Result<(), StoreError> {
        Embedded::update_deliveries(self, updates).await
    }

    async fn event(
        &self,
        source: &str,
        id: &str,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError> {
        Embedded::event(self, source, id)
    }

    async fn delivery(&self, seq: u64) -> Result<Option<DeliveryRecord>, StoreError> {
        Embedded::delivery(self, seq)
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        Embedded::list_events(self, filter, after, limit)
    }

    async fn dead_letters_matching(
        &self,
        filter: &LetterFilter,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        Embedded::dead_letters_matching(self, filter, limit)
    }

    async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        Embedded::dead_letter_count(self)
    }

    async fn dead_letter_sink(&self, sink: &str, reason: &str) -> Result<usize, StoreError> {
        Embedded::dead_letter_sink(self, sink, reason).await
    }

    async fn replay(&self, replays: Vec<Replay>) -> Result<usize, StoreError> {
        Embedded::replay(self, replays).await
    }

    async fn purge_letters(&self, letters: Vec<u64>) -> Result<usize, StoreError> {
        Embedded::purge_letters(self, letters).await
    }

    async fn prune_settled(
        &self,
        before_ms: u64,
        from: Option<&PruneCursor>,
        limit: usize,
        scan: usize,
    ) -> Result<PruneStep, StoreError> {
        Embedded::prune_settled(self, before_ms, from, limit, scan).await
    }

    async fn marked(
        &self,
        source: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        Embedded::marked(self, source, key, now_ms)
    }

    async fn purge_expired_marks(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        Embedded::purge_expired_marks(self, now_ms, limit).await
    }

    async fn mark_count(&self) -> Result<u64, StoreError> {
        Embedded::mark_count(self)
    }

    async fn pending_count(&self, sink: &str) -> Result<u64, StoreError> {
        Embedded::pending_count(self, sink)
    }

    async fn pending_sinks(&self) -> Result<Vec<String>, StoreError> {
        Embedded::pending_sinks(self)
    }

    async fn kv_get(
        &self,
        namespace: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        Embedded::kv_get(self, namespace, key, now_ms)
    }

    async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        Embedded::kv_set(self, namespace, key, value, expires_at_ms).await
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        Embedded::kv_delete(self, namespace, key).await
    }

    async fn kv_compare_and_swap(
        &self,
        namespace: &str,
        key: &str,
        expected: Option<Vec<u8>>,
        value: &[u8],
        expires_at_ms: Option<u64>,
        now_ms: u64,
    ) -> Result<bool, StoreError> {
        Embedded::kv_compare_and_swap(self, namespace, key, expected, value, expires_at_ms, now_ms)
            .await
    }

    fn load(&self) -> StoreLoad {
        Embedded::load(self)
    }

    fn write_error(&self) -> Option<String> {
        Embedded::write_error(self)
    }

    fn outbox(&self) -> Outbox<'_> {
        Outbox::Local(self)
    }

    async fn close(&self) {
        Embedded::close(self).await
    }
}
