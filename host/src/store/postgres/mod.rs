//! The shared store: the inbox, outbox, dead letters and dedupe marks in PostgreSQL, so that
//! every replica that uses the same database sees one queue (`[storage] backend = "postgres"`).
//!
//! - **Intake** ([`intake`]): accepted events are group-committed, many requests in one
//!   transaction with their deliveries, dead letters and dedupe marks (array inserts with
//!   `UNNEST`), and answered only after `COMMIT` returns. A mark is a row keyed by (source, key)
//!   and an event by (source, id): `ON CONFLICT` makes a second copy a duplicate, whichever
//!   replica it reached and however close together the copies came.
//! - **Delivery** ([`queue`]): a replica's worker claims due deliveries of its sink with
//!   `FOR UPDATE SKIP LOCKED`, leasing them (`lease_until`, the database's clock) and renewing
//!   the lease while it works; the outcome is recorded only while the lease is still its own.
//!   A replica that dies leaves its leases to expire, and the others claim those deliveries.
//!   Outcomes are group-committed too (whatever the attempts have queued, in one transaction);
//!   claims and lease renewals commit asynchronously (`synchronous_commit = off` for those
//!   transactions only): a lease lost in a database crash only means a delivery is sent again.
//!   Per-key order, a sink's concurrency and its rate are decided inside the claim, under a
//!   per-sink advisory lock, so they hold across replicas. Commits `NOTIFY` the sinks they
//!   queued for; every replica `LISTEN`s, and polls as a backstop.
//! - **Schema**: created and migrated at start by [refinery] (versioned SQL in
//!   `migrations/`), under an advisory lock so replicas starting together take turns; a schema
//!   newer than this binary knows is refused.
//!
//! The database's durability is Hookwall's: with `synchronous_commit = off` a committed (and
//! acknowledged) event can be lost in a database crash, so [`Shared::connect`] warns.

mod intake;
mod queue;

use std::collections::{BTreeMap, HashMap};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use deadpool_postgres::{Manager, ManagerConfig, Pool, RecyclingMethod, Runtime};
use tokio::sync::{Notify, mpsc, oneshot};
use tokio::task::JoinHandle;
use tokio_postgres::Row;
use tokio_postgres::config::SslMode;
use tokio_postgres_rustls::MakeRustlsConnect;

pub use queue::Claim;

use super::dlq::{LetterFilter, PruneCursor, PruneStep, Replay};
use super::listing::{EventFilter, EventPage, Outcome};
use super::load::{Gauges, StoreLoad};
use super::marks::DedupeMark;
use super::records::{
    Attempt, DeadLetter, DeliveryRecord, DeliveryState, EventRecord, EventStatus, NewEvent,
    Priority,
};
use super::writer::DeliveryUpdate;
use super::{AcceptOutcome, Backend, Outbox, StoreError};

mod embedded {
    refinery::embed_migrations!("src/store/postgres/migrations");
}

/// refinery's history table (in the connection's default schema).
const HISTORY_TABLE: &str = "hookwall_schema_history";
/// Key of the advisory lock replicas take turns on while migrating.
const MIGRATION_LOCK: i64 = 0x686f_6f6b_7761_6c6c; // "hookwall"
/// How long opening a connection may take.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);
/// How long a request waits for a pooled connection before it is answered 503.
const POOL_WAIT: Duration = Duration::from_secs(5);
/// A statement running longer than this is cancelled by the server.
const STATEMENT_TIMEOUT: Duration = Duration::from_secs(15);
/// Jobs queued for the intake writers beyond this make callers wait.
const INTAKE_QUEUE_DEPTH: usize = 4096;
/// Rows examined per listing call at most (as the embedded store's listing).
const MAX_SCAN: usize = 10_000;

/// How to reach and use the shared store (from `[storage]` and the sinks' config).
#[derive(Debug, Clone)]
pub struct SharedOptions {
    /// The `postgres://` URL.
    pub url: String,
    /// How long a claimed delivery stays leased without renewal.
    pub lease: Duration,
    /// Connections this replica opens at most.
    pub pool_size: usize,
    /// Each sink's `order_key` JSON pointer (`json:` stripped), for the sinks that have one.
    pub order_keys: HashMap<String, String>,
    /// `[storage] ca_file`: the CA certificates the database's certificate must chain to (with
    /// `sslmode=require`); `None`: the system's roots.
    pub ca_file: Option<PathBuf>,
}

/// The shared store's handle (cheap to clone).
#[derive(Clone)]
pub struct Shared {
    inner: Arc<Inner>,
}

struct Inner {
    pool: Pool,
    jobs: mpsc::Sender<intake::Job>,
    outcomes: mpsc::Sender<queue::Outcomes>,
    /// This replica's name in `lease_owner`: unique per process.
    replica: String,
    lease: Duration,
    order_keys: HashMap<String, String>,
    wakeups: Arc<Wakeups>,
    gauges: Arc<Gauges>,
    writers: Mutex<Vec<JoinHandle<()>>>,
    background: Mutex<Vec<JoinHandle<()>>>,
}

/// Per sink, a wake-up for its worker, rung by `NOTIFY` (any replica's commit) and by this
/// replica's own commits.
#[derive(Default)]
pub(crate) struct Wakeups(Mutex<HashMap<String, Arc<Notify>>>);

impl Wakeups {
    fn get(&self, sink: &str) -> Arc<Notify> {
        let mut map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        map.entry(sink.to_string()).or_default().clone()
    }

    fn ring(&self, sink: &str) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = map.get(sink) {
            n.notify_one();
        }
    }

    fn ring_all(&self) {
        let map = self.0.lock().unwrap_or_else(|e| e.into_inner());
        for n in map.values() {
            n.notify_one();
        }
    }
}

/// A PostgreSQL error as the store reports it (with the server's message, which
/// `tokio_postgres::Error`'s own text leaves out).
pub(crate) fn pg(e: tokio_postgres::Error) -> StoreError {
    StoreError::Storage(pg_message(&e))
}

/// `e` with the server's message and SQLSTATE when it has them.
fn pg_message(e: &tokio_postgres::Error) -> String {
    if let Some(db) = e.as_db_error() {
        return format!("postgres: {} ({})", db.message(), db.code().code());
    }
    // The driver's own text leaves out the cause (a refused certificate, a reset connection).
    let mut message = format!("postgres: {e}");
    let mut source = std::error::Error::source(e);
    while let Some(cause) = source {
        message.push_str(&format!(": {cause}"));
        source = cause.source();
    }
    message
}

fn pool_error(e: deadpool_postgres::PoolError) -> StoreError {
    match e {
        deadpool_postgres::PoolError::Backend(e) => pg(e),
        e => StoreError::Storage(format!("postgres: {e}")),
    }
}

fn connect_error(reason: impl std::fmt::Display) -> StoreError {
    StoreError::Connect(reason.to_string())
}

impl Shared {
    /// Connects, creates or migrates the schema, and starts the intake writers, the `LISTEN`
    /// connection and the queue gauges. Fails (for `hookwall serve` to refuse to start) when
    /// the database cannot be reached or its schema is newer than this binary's.
    pub async fn connect(options: SharedOptions) -> Result<Shared, StoreError> {
        let (config, tls) = pg_config(&options.url, options.ca_file.as_deref())?;
        migrate(&config, &tls).await?;
        let manager = Manager::from_config(
            config.clone(),
            tls.clone(),
            ManagerConfig {
                recycling_method: RecyclingMethod::Fast,
            },
        );
        let pool = Pool::builder(manager)
            .max_size(options.pool_size)
            .runtime(Runtime::Tokio1)
            .wait_timeout(Some(POOL_WAIT))
            .create_timeout(Some(CONNECT_TIMEOUT))
            .recycle_timeout(Some(CONNECT_TIMEOUT))
            .build()
            .map_err(connect_error)?;
        {
            let client = pool.get().await.map_err(connect_error)?;
            warn_if_commits_can_be_lost(&client).await?;
        }
        let wakeups = Arc::new(Wakeups::default());
        let gauges = Arc::new(Gauges::new(0));
        let (jobs, rx) = mpsc::channel(INTAKE_QUEUE_DEPTH);
        let writers = intake::spawn(
            pool.clone(),
            rx,
            options.order_keys.clone(),
            wakeups.clone(),
            gauges.clone(),
        );
        let replica = format!("{}/{}", hostname(), uuid::Uuid::now_v7());
        let (outcomes, outcome_rx) = mpsc::channel(INTAKE_QUEUE_DEPTH);
        let background = vec![
            tokio::spawn(queue::listen(config, tls, wakeups.clone())),
            tokio::spawn(queue::watch(pool.clone(), gauges.clone())),
            tokio::spawn(queue::recorder(pool.clone(), replica.clone(), outcome_rx)),
        ];
        tracing::info!(%replica, lease = ?options.lease, pool = options.pool_size,
            "the queue is shared through PostgreSQL");
        Ok(Shared {
            inner: Arc::new(Inner {
                pool,
                jobs,
                outcomes,
                replica,
                lease: options.lease,
                order_keys: options.order_keys,
                wakeups,
                gauges,
                writers: Mutex::new(writers),
                background: Mutex::new(background),
            }),
        })
    }

    /// A connection from the pool, waiting at most [`POOL_WAIT`].
    async fn client(&self) -> Result<deadpool_postgres::Object, StoreError> {
        self.inner.pool.get().await.map_err(pool_error)
    }

    /// Sink `sink`'s wake-up: rung when any replica commits a delivery for it.
    pub fn wakeup(&self, sink: &str) -> Arc<Notify> {
        self.inner.wakeups.get(sink)
    }

    /// How long this replica's claims are leased for.
    pub fn lease(&self) -> Duration {
        self.inner.lease
    }
}

/// The URL parsed, with Hookwall's timeouts added where the URL sets none, and how to make TLS
/// connections. TLS is used only with `sslmode=require`, and then the server's certificate is
/// verified (against `ca_file`, else the system's roots) and its name checked against the URL's
/// host; `prefer` (the default) and `disable` connect in plain text, so a server offering TLS
/// with a certificate nobody can verify (Debian's default snakeoil) still works as before.
fn pg_config(
    url: &str,
    ca_file: Option<&Path>,
) -> Result<(tokio_postgres::Config, MakeRustlsConnect), StoreError> {
    let mut config: tokio_postgres::Config = url
        .parse()
        .map_err(|e| connect_error(format!("storage.url is not a PostgreSQL URL: {e}")))?;
    if config.get_ssl_mode() != SslMode::Require {
        config.ssl_mode(SslMode::Disable);
    }
    let client = crate::tls::client_config(ca_file, None, b"postgresql")
        .map_err(|e| connect_error(format!("storage.ca_file: {e}")))?;
    let tls = MakeRustlsConnect::new(client);
    if config.get_connect_timeout().is_none() {
        config.connect_timeout(CONNECT_TIMEOUT);
    }
    config.keepalives(true);
    config.keepalives_idle(Duration::from_secs(30));
    if config.get_application_name().is_none() {
        config.application_name("hookwall");
    }
    let timeout = format!("-c statement_timeout={}", STATEMENT_TIMEOUT.as_millis());
    let options = match config.get_options() {
        Some(o) => format!("{o} {timeout}"),
        None => timeout,
    };
    config.options(&options);
    Ok((config, tls))
}

fn hostname() -> String {
    std::env::var("HOSTNAME")
        .ok()
        .filter(|h| !h.is_empty())
        .or_else(|| {
            std::fs::read_to_string("/etc/hostname")
                .ok()
                .map(|h| h.trim().to_string())
        })
        .unwrap_or_else(|| "hookwall".into())
}

/// The newest schema version this binary knows.
fn known_version() -> i64 {
    embedded::migrations::runner()
        .get_migrations()
        .iter()
        .map(|m| i64::from(m.version()))
        .max()
        .unwrap_or(0)
}

/// Creates or migrates the schema on its own connection, under [`MIGRATION_LOCK`]; refuses a
/// schema newer than [`known_version`].
async fn migrate(
    config: &tokio_postgres::Config,
    tls: &MakeRustlsConnect,
) -> Result<(), StoreError> {
    let (mut client, connection) = config
        .connect(tls.clone())
        .await
        .map_err(|e| connect_error(format!("cannot connect: {}", pg_message(&e))))?;
    let driver = tokio::spawn(connection);
    let result = async {
        client
            .execute("SELECT pg_advisory_lock($1)", &[&MIGRATION_LOCK])
            .await
            .map_err(pg)?;
        let applied = schema_version(&client).await?;
        refuse_newer(applied)?;
        let report = embedded::migrations::runner()
            .set_migration_table_name(HISTORY_TABLE)
            .run_async(&mut client)
            .await
            .map_err(|e| StoreError::Connect(format!("schema migration failed: {e}")))?;
        for m in report.applied_migrations() {
            tracing::info!(version = m.version(), name = m.name(), "schema migrated");
        }
        Ok(())
    }
    .await;
    let _ = client
        .execute("SELECT pg_advisory_unlock($1)", &[&MIGRATION_LOCK])
        .await;
    drop(client);
    let _ = driver.await;
    result
}

/// The schema version recorded in the database (`None`: not created yet).
async fn schema_version(client: &tokio_postgres::Client) -> Result<Option<i64>, StoreError> {
    let exists: Option<String> = client
        .query_one("SELECT to_regclass($1)::text", &[&HISTORY_TABLE])
        .await
        .map_err(pg)?
        .get(0);
    if exists.is_none() {
        return Ok(None);
    }
    Ok(client
        .query_one(
            &format!("SELECT max(version)::bigint FROM {HISTORY_TABLE}"),
            &[],
        )
        .await
        .map_err(pg)?
        .get(0))
}

/// Refuses a schema a newer Hookwall migrated.
fn refuse_newer(applied: Option<i64>) -> Result<(), StoreError> {
    let known = known_version();
    match applied {
        Some(v) if v > known => Err(StoreError::Connect(format!(
            "the database's Hookwall schema is version {v}, newer than this binary knows \
             ({known}): a newer Hookwall migrated it; run that version (or newer)"
        ))),
        _ => Ok(()),
    }
}

/// What `hookwall check` says of the database at `url`, changing nothing: reachable, and its
/// schema current, to be created or migrated by `hookwall serve`; an error if unreachable or
/// newer than this binary.
pub async fn inspect(url: &str, ca_file: Option<&Path>) -> Result<String, StoreError> {
    let (config, tls) = pg_config(url, ca_file)?;
    let (client, connection) = config
        .connect(tls)
        .await
        .map_err(|e| connect_error(format!("cannot connect: {}", pg_message(&e))))?;
    let driver = tokio::spawn(connection);
    let result = async {
        let applied = schema_version(&client).await?;
        refuse_newer(applied)?;
        warn_if_commits_can_be_lost(&client).await?;
        let known = known_version();
        Ok(match applied {
            None => "reachable; schema not created yet (hookwall serve creates it)".to_string(),
            Some(v) if v < known => {
                format!("reachable; schema version {v} (hookwall serve migrates it to {known})")
            }
            Some(v) => format!("reachable; schema version {v} (current)"),
        })
    }
    .await;
    drop(client);
    let _ = driver.await;
    result
}

/// Warns when the server acknowledges commits before they are durable.
async fn warn_if_commits_can_be_lost(client: &tokio_postgres::Client) -> Result<(), StoreError> {
    let row = client
        .query_one("SHOW synchronous_commit", &[])
        .await
        .map_err(pg)?;
    let setting: String = row.get(0);
    if setting == "off" {
        tracing::warn!(synchronous_commit = %setting,
            "PostgreSQL runs with synchronous_commit = off: a database crash can lose commits \
             Hookwall has already acknowledged to senders; set it to on (the default)");
    }
    let fsync: String = client
        .query_one("SHOW fsync", &[])
        .await
        .map_err(pg)?
        .get(0);
    if fsync == "off" {
        tracing::warn!(
            "PostgreSQL runs with fsync = off: a crash of its machine can lose \
             acknowledged events and corrupt the database"
        );
    }
    Ok(())
}

/// Milliseconds as PostgreSQL's `bigint`.
fn ms(v: u64) -> i64 {
    i64::try_from(v).unwrap_or(i64::MAX)
}

fn unms(v: i64) -> u64 {
    u64::try_from(v).unwrap_or(0)
}

fn encode_headers(headers: &[(String, String)]) -> Result<Vec<u8>, StoreError> {
    postcard::to_stdvec(headers).map_err(StoreError::storage)
}

fn decode_headers(
    bytes: &[u8],
    what: impl FnOnce() -> String,
) -> Result<Vec<(String, String)>, StoreError> {
    postcard::from_bytes(bytes).map_err(|e| StoreError::Corrupt {
        what: what(),
        reason: e.to_string(),
    })
}

/// An event status as its two columns.
fn status_columns(status: &EventStatus) -> (&'static str, Option<&str>) {
    match status {
        EventStatus::Forwarded => ("forwarded", None),
        EventStatus::Dropped { reason } => ("dropped", Some(reason)),
        EventStatus::DeadLettered { reason } => ("dead_lettered", Some(reason)),
    }
}

fn status_of(status: &str, reason: Option<String>) -> EventStatus {
    let reason = reason.unwrap_or_default();
    match status {
        "dropped" => EventStatus::Dropped { reason },
        "dead_lettered" => EventStatus::DeadLettered { reason },
        _ => EventStatus::Forwarded,
    }
}

/// The columns [`event_of`] reads, from `hookwall.events e`.
const EVENT_COLUMNS: &str = "e.source, e.id, e.received_at_ms, e.method, e.path, e.query, e.headers, e.body, e.status, \
     e.status_reason";

/// The columns [`delivery_of`] reads, from `hookwall.deliveries d` joined with its event `e`.
const DELIVERY_COLUMNS: &str = "d.seq, d.id, d.event_id, d.source, d.received_at_ms, d.sink, \
     d.headers, COALESCE(d.body, e.body), d.priority, d.attempts::text, d.state, d.due_ms, \
     d.settled_at_ms, d.note, d.queued_at_ms";

/// `FROM` for [`DELIVERY_COLUMNS`].
const DELIVERIES_JOINED: &str = "hookwall.deliveries d JOIN hookwall.events e \
     ON e.source = d.source AND e.id = d.event_id";

fn event_of(row: &Row, deliveries: Vec<u64>) -> Result<EventRecord, StoreError> {
    let source: String = row.get(0);
    let id: String = row.get(1);
    let headers: Vec<u8> = row.get(6);
    let headers = decode_headers(&headers, || format!("event {source}:{id}"))?;
    Ok(EventRecord {
        received_at_ms: unms(row.get(2)),
        method: row.get(3),
        path: row.get(4),
        query: row.get(5),
        headers,
        body: row.get(7),
        status: status_of(row.get::<_, &str>(8), row.get(9)),
        deliveries,
        id,
        source,
    })
}

fn delivery_of(row: &Row) -> Result<DeliveryRecord, StoreError> {
    let seq = unms(row.get(0));
    let what = || format!("delivery {seq}");
    let headers: Vec<u8> = row.get(6);
    let attempts: String = row.get(9);
    let attempts: Vec<Attempt> =
        serde_json::from_str(&attempts).map_err(|e| StoreError::Corrupt {
            what: what(),
            reason: e.to_string(),
        })?;
    let note = || row.get::<_, Option<String>>(13).unwrap_or_default();
    let state = match row.get::<_, &str>(10) {
        "pending" => DeliveryState::Pending {
            due_ms: unms(row.get::<_, Option<i64>>(11).unwrap_or(0)),
        },
        "delivered" => DeliveryState::Delivered {
            at_ms: unms(row.get::<_, Option<i64>>(12).unwrap_or(0)),
        },
        "dead" => DeliveryState::Dead { reason: note() },
        _ => DeliveryState::Resolved { note: note() },
    };
    Ok(DeliveryRecord {
        seq,
        id: row.get(1),
        event_id: row.get(2),
        source: row.get(3),
        received_at_ms: unms(row.get(4)),
        sink: row.get(5),
        headers: decode_headers(&headers, what)?,
        body: row.get(7),
        priority: Priority::from_rank(row.get::<_, i16>(8) as u8),
        attempts,
        state,
        queued_at_ms: unms(row.get(14)),
    })
}

fn letter_of(row: &Row) -> (u64, DeadLetter) {
    (
        unms(row.get(0)),
        DeadLetter {
            source: row.get(1),
            event_id: row.get(2),
            delivery: row.get::<_, Option<i64>>(3).map(unms),
            sink: row.get(4),
            reason: row.get(5),
            at_ms: unms(row.get(6)),
        },
    )
}

const LETTER_COLUMNS: &str = "seq, source, event_id, delivery, sink, reason, at_ms";

impl Shared {
    /// The deliveries of events `keys` (source, id), by event, oldest first.
    async fn deliveries_of(
        &self,
        client: &impl tokio_postgres::GenericClient,
        keys: &[(String, String)],
    ) -> Result<HashMap<(String, String), Vec<DeliveryRecord>>, StoreError> {
        let (sources, ids): (Vec<&str>, Vec<&str>) =
            keys.iter().map(|(s, i)| (s.as_str(), i.as_str())).unzip();
        let rows = client
            .query(
                &format!(
                    "SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES_JOINED} \
                     WHERE (d.source, d.event_id) IN \
                       (SELECT * FROM UNNEST($1::text[], $2::text[])) \
                     ORDER BY d.seq"
                ),
                &[&sources, &ids],
            )
            .await
            .map_err(pg)?;
        let mut out: HashMap<(String, String), Vec<DeliveryRecord>> = HashMap::new();
        for row in &rows {
            let d = delivery_of(row)?;
            out.entry((d.source.clone(), d.event_id.clone()))
                .or_default()
                .push(d);
        }
        Ok(out)
    }
}

#[async_trait::async_trait]
impl Backend for Shared {
    async fn accept_marked(
        &self,
        event: NewEvent,
        mark: Option<DedupeMark>,
    ) -> Result<AcceptOutcome, StoreError> {
        let (resp, rx) = oneshot::channel();
        self.inner
            .jobs
            .send(intake::Job::Accept {
                event: Box::new(event),
                mark,
                resp,
            })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn update_deliveries(&self, updates: Vec<DeliveryUpdate>) -> Result<(), StoreError> {
        if updates.is_empty() {
            return Ok(());
        }
        let (resp, rx) = oneshot::channel();
        self.inner
            .outcomes
            .send(queue::Outcomes { updates, resp })
            .await
            .map_err(|_| StoreError::Closed)?;
        rx.await.map_err(|_| StoreError::Closed)?
    }

    async fn event(
        &self,
        source: &str,
        id: &str,
    ) -> Result<Option<(EventRecord, Vec<DeliveryRecord>)>, StoreError> {
        let client = self.client().await?;
        let Some(row) = client
            .query_opt(
                &format!("SELECT {EVENT_COLUMNS} FROM hookwall.events e WHERE e.source = $1 AND e.id = $2"),
                &[&source, &id],
            )
            .await
            .map_err(pg)?
        else {
            return Ok(None);
        };
        let key = (source.to_string(), id.to_string());
        let deliveries = self
            .deliveries_of(&**client, std::slice::from_ref(&key))
            .await?
            .remove(&key)
            .unwrap_or_default();
        let event = event_of(&row, deliveries.iter().map(|d| d.seq).collect())?;
        Ok(Some((event, deliveries)))
    }

    async fn delivery(&self, seq: u64) -> Result<Option<DeliveryRecord>, StoreError> {
        let client = self.client().await?;
        client
            .query_opt(
                &format!("SELECT {DELIVERY_COLUMNS} FROM {DELIVERIES_JOINED} WHERE d.seq = $1"),
                &[&ms(seq)],
            )
            .await
            .map_err(pg)?
            .map(|row| delivery_of(&row))
            .transpose()
    }

    async fn list_events(
        &self,
        filter: &EventFilter,
        after: Option<(u64, String)>,
        limit: usize,
    ) -> Result<EventPage, StoreError> {
        let client = self.client().await?;
        // The cursor is (received ms, `SOURCE:ID`), as the embedded store's; source names
        // never hold `:`, so it splits at the first one.
        let (mut at, mut src, mut id) = match &after {
            Some((at, key)) => {
                let (s, i) = key.split_once(':').unwrap_or((key.as_str(), ""));
                (ms(*at), s.to_string(), i.to_string())
            }
            None => (i64::MAX, String::new(), String::new()),
        };
        let since = ms(filter.since_ms.unwrap_or(0));
        if let Some(until) = filter.until_ms
            && ms(until) <= at
        {
            (at, src, id) = (ms(until), String::new(), String::new());
        }
        let mut page = EventPage {
            events: Vec::new(),
            next: None,
        };
        let mut scanned = 0usize;
        let chunk = (limit.max(1) * 2).min(1000) as i64;
        loop {
            let rows = client
                .query(
                    &format!(
                        "SELECT {EVENT_COLUMNS} FROM hookwall.events e \
                         WHERE (e.received_at_ms, e.source, e.id) < ($1, $2, $3) \
                           AND e.received_at_ms >= $4 AND ($5::text IS NULL OR e.source = $5) \
                         ORDER BY e.received_at_ms DESC, e.source DESC, e.id DESC LIMIT $6"
                    ),
                    &[&at, &src, &id, &since, &filter.source, &chunk],
                )
                .await
                .map_err(pg)?;
            let keys: Vec<(String, String)> = rows.iter().map(|r| (r.get(0), r.get(1))).collect();
            let mut deliveries = self.deliveries_of(&**client, &keys).await?;
            for (row, key) in rows.iter().zip(&keys) {
                if page.events.len() >= limit {
                    page.next = page
                        .events
                        .last()
                        .map(|(e, _, _)| (e.received_at_ms, super::event_key(&e.source, &e.id)));
                    return Ok(page);
                }
                scanned += 1;
                let ds = deliveries.remove(key).unwrap_or_default();
                let event = event_of(row, ds.iter().map(|d| d.seq).collect())?;
                (at, src, id) = (ms(event.received_at_ms), key.0.clone(), key.1.clone());
                let outcome = Outcome::of(&event, &ds);
                if filter.outcome.is_some_and(|o| o != outcome) {
                    if scanned >= MAX_SCAN {
                        page.next = Some((unms(at), super::event_key(&src, &id)));
                        return Ok(page);
                    }
                    continue;
                }
                page.events.push((event, ds, outcome));
            }
            if (rows.len() as i64) < chunk {
                return Ok(page);
            }
        }
    }

    async fn dead_letters_matching(
        &self,
        filter: &LetterFilter,
        limit: usize,
    ) -> Result<Vec<(u64, DeadLetter)>, StoreError> {
        let client = self.client().await?;
        let limit = limit as i64;
        let base = format!("SELECT {LETTER_COLUMNS} FROM hookwall.dead_letters");
        let rows = match filter {
            LetterFilter::All => {
                client
                    .query(&format!("{base} ORDER BY seq DESC LIMIT $1"), &[&limit])
                    .await
            }
            LetterFilter::Seq(seq) => {
                client
                    .query(&format!("{base} WHERE seq = $1"), &[&ms(*seq)])
                    .await
            }
            LetterFilter::Source(s) => {
                client
                    .query(
                        &format!("{base} WHERE source = $1 ORDER BY seq DESC LIMIT $2"),
                        &[s, &limit],
                    )
                    .await
            }
            LetterFilter::Sink(s) => {
                client
                    .query(
                        &format!("{base} WHERE sink = $1 ORDER BY seq DESC LIMIT $2"),
                        &[s, &limit],
                    )
                    .await
            }
        }
        .map_err(pg)?;
        Ok(rows.iter().map(letter_of).collect())
    }

    async fn dead_letter_count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM hookwall.dead_letters", &[])
            .await
            .map_err(pg)?;
        Ok(unms(row.get(0)))
    }

    async fn dead_letter_sink(&self, sink: &str, reason: &str) -> Result<usize, StoreError> {
        queue::dead_letter_sink(self, sink, reason).await
    }

    async fn replay(&self, replays: Vec<Replay>) -> Result<usize, StoreError> {
        queue::replay(self, replays).await
    }

    async fn purge_letters(&self, letters: Vec<u64>) -> Result<usize, StoreError> {
        queue::purge(self, letters).await
    }

    async fn prune_settled(
        &self,
        before_ms: u64,
        _from: Option<&PruneCursor>,
        limit: usize,
        _scan: usize,
    ) -> Result<PruneStep, StoreError> {
        // Settled: no plugin dead letter, no delivery pending or dead. Rows another replica's
        // retention holds are skipped, not waited for; the deliveries go with their event
        // (ON DELETE CASCADE).
        let client = self.client().await?;
        let row = client
            .query_one(
                "WITH gone AS (
                   DELETE FROM hookwall.events e WHERE (e.source, e.id) IN (
                     SELECT c.source, c.id FROM hookwall.events c
                     WHERE c.received_at_ms < $1 AND c.status <> 'dead_lettered'
                       AND NOT EXISTS (SELECT 1 FROM hookwall.deliveries d
                         WHERE d.source = c.source AND d.event_id = c.id
                           AND d.state IN ('pending', 'dead'))
                       AND NOT EXISTS (SELECT 1 FROM hookwall.dead_letters l
                         WHERE l.source = c.source AND l.event_id = c.id)
                     ORDER BY c.received_at_ms LIMIT $2
                     FOR UPDATE SKIP LOCKED)
                   RETURNING 1)
                 SELECT count(*) FROM gone",
                &[&ms(before_ms), &(limit.max(1) as i64)],
            )
            .await
            .map_err(pg)?;
        let pruned = unms(row.get(0)) as usize;
        Ok(PruneStep {
            pruned,
            examined: pruned,
            // A full step may leave more behind: the caller goes on (the cursor is not used).
            next: (pruned >= limit.max(1)).then(|| (before_ms, String::new())),
        })
    }

    async fn marked(
        &self,
        source: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<String>, StoreError> {
        let client = self.client().await?;
        let stmt = client
            .prepare_cached(
                "SELECT event_id FROM hookwall.dedupe_marks \
                 WHERE source = $1 AND key = $2 AND expires_ms > $3",
            )
            .await
            .map_err(pg)?;
        let row = client
            .query_opt(&stmt, &[&source, &key, &ms(now_ms)])
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn purge_expired_marks(&self, now_ms: u64, limit: usize) -> Result<usize, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM hookwall.dedupe_marks WHERE ctid = ANY (ARRAY(
                   SELECT ctid FROM hookwall.dedupe_marks WHERE expires_ms <= $1 LIMIT $2))",
                &[&ms(now_ms), &(limit as i64)],
            )
            .await
            .map_err(pg)?;
        Ok(n as usize)
    }

    async fn mark_count(&self) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one("SELECT count(*) FROM hookwall.dedupe_marks", &[])
            .await
            .map_err(pg)?;
        Ok(unms(row.get(0)))
    }

    async fn pending_count(&self, sink: &str) -> Result<u64, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_one(
                "SELECT count(*) FROM hookwall.deliveries WHERE sink = $1 AND state = 'pending'",
                &[&sink],
            )
            .await
            .map_err(pg)?;
        Ok(unms(row.get(0)))
    }

    async fn pending_sinks(&self) -> Result<Vec<String>, StoreError> {
        let client = self.client().await?;
        let rows = client
            .query(
                "SELECT DISTINCT sink FROM hookwall.deliveries WHERE state = 'pending' ORDER BY sink",
                &[],
            )
            .await
            .map_err(pg)?;
        Ok(rows.iter().map(|r| r.get(0)).collect())
    }

    async fn kv_get(
        &self,
        namespace: &str,
        key: &str,
        now_ms: u64,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let client = self.client().await?;
        let row = client
            .query_opt(
                "SELECT value FROM hookwall.plugin_kv WHERE plugin = $1 AND key = $2 \
                 AND (expires_ms IS NULL OR expires_ms > $3)",
                &[&namespace, &key, &ms(now_ms)],
            )
            .await
            .map_err(pg)?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn kv_set(
        &self,
        namespace: &str,
        key: &str,
        value: &[u8],
        expires_at_ms: Option<u64>,
    ) -> Result<(), StoreError> {
        let client = self.client().await?;
        client
            .execute(
                "INSERT INTO hookwall.plugin_kv (plugin, key, value, expires_ms) \
                 VALUES ($1, $2, $3, $4) ON CONFLICT (plugin, key) \
                 DO UPDATE SET value = EXCLUDED.value, expires_ms = EXCLUDED.expires_ms",
                &[&namespace, &key, &value, &expires_at_ms.map(ms)],
            )
            .await
            .map_err(pg)?;
        Ok(())
    }

    async fn kv_delete(&self, namespace: &str, key: &str) -> Result<bool, StoreError> {
        let client = self.client().await?;
        let n = client
            .execute(
                "DELETE FROM hookwall.plugin_kv WHERE plugin = $1 AND key = $2",
                &[&namespace, &key],
            )
            .await
            .map_err(pg)?;
        Ok(n > 0)
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
        let client = self.client().await?;
        let expires = expires_at_ms.map(ms);
        // One statement each way, so no other write comes between the check and the set.
        let n = match expected {
            None => {
                client
                    .execute(
                        "INSERT INTO hookwall.plugin_kv AS kv (plugin, key, value, expires_ms) \
                     VALUES ($1, $2, $3, $4) ON CONFLICT (plugin, key) \
                     DO UPDATE SET value = EXCLUDED.value, expires_ms = EXCLUDED.expires_ms \
                     WHERE kv.expires_ms IS NOT NULL AND kv.expires_ms <= $5",
                        &[&namespace, &key, &value, &expires, &ms(now_ms)],
                    )
                    .await
            }
            Some(old) => {
                client
                    .execute(
                        "UPDATE hookwall.plugin_kv SET value = $3, expires_ms = $4 \
                     WHERE plugin = $1 AND key = $2 AND value = $5 \
                       AND (expires_ms IS NULL OR expires_ms > $6)",
                        &[&namespace, &key, &value, &expires, &old, &ms(now_ms)],
                    )
                    .await
            }
        }
        .map_err(pg)?;
        Ok(n > 0)
    }

    fn load(&self) -> StoreLoad {
        self.inner.gauges.snapshot()
    }

    fn write_error(&self) -> Option<String> {
        self.inner.gauges.write_error()
    }

    fn outbox(&self) -> Outbox<'_> {
        Outbox::Shared(self)
    }

    async fn close(&self) {
        let writers =
            std::mem::take(&mut *self.inner.writers.lock().unwrap_or_else(|e| e.into_inner()));
        for _ in &writers {
            let (resp, rx) = oneshot::channel();
            if self
                .inner
                .jobs
                .send(intake::Job::Stop { resp })
                .await
                .is_ok()
            {
                let _ = rx.await;
            }
        }
        for w in writers {
            let _ = w.await;
        }
        for task in std::mem::take(
            &mut *self
                .inner
                .background
                .lock()
                .unwrap_or_else(|e| e.into_inner()),
        ) {
            task.abort();
        }
    }
}

/// Each sink's `order_key` pointer, from the sinks' config.
pub fn order_keys(sinks: &BTreeMap<String, crate::config::SinkConfig>) -> HashMap<String, String> {
    sinks
        .iter()
        .filter_map(|(name, s)| {
            let pointer = s.order_key.as_deref()?.strip_prefix("json:")?;
            Some((name.clone(), pointer.to_string()))
        })
        .collect()
}

#[cfg(test)]
mod tests;
