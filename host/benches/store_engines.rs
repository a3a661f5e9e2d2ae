//! Durable-store candidates for issue #18, on one workload: redb with one row per event, fjall,
//! and a purpose-built append-only log (a prototype, defined below).
//! `cargo bench -p hookwall --bench store_engines`.
//!
//! An event is one ~1.3 KiB record (a 1 KiB body plus 254 bytes of id, source, headers and
//! delivery plan) keyed by its u64 seq, plus one dedupe mark (`bench\0<event id>`, 42 bytes →
//! 8-byte expiry ms). Events are committed in groups of G (64 and 256), one durable commit
//! (fdatasync) per group, as a group-committing writer would: every group is on disk before
//! the next one starts. Every engine is handed the same bytes; the bodies are pseudo-random, so
//! no engine's compression shrinks what it writes.
//!
//! Two groups of results, each per engine and G; criterion's "time" is per event:
//! - `store_engines_cpu/G=…/…`: the reported time is **process CPU time** (user + system, all
//!   threads, `CLOCK_PROCESS_CPUTIME_ID`) per event, not wall-clock time. Background threads
//!   (fjall's flushes and compactions) are billed when they run, which may be a later sample
//!   than the write that caused them; the engine stays open across warm-up and samples, so their
//!   cost lands in its own rows.
//! - `store_engines_wall/G=…/…`: wall-clock time per event.
//!
//! Each engine gets a fresh temporary directory per benchmark function.

use std::fs::{File, OpenOptions};
use std::io::Write as _;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use criterion::{Criterion, criterion_group, criterion_main};
use rustix::time::{ClockId, clock_gettime};

/// Group sizes: events per durable commit.
const GROUPS: [u64; 2] = [64, 256];
const BODY_LEN: usize = 1024;
/// Same cache budget for redb and fjall.
const CACHE_BYTES: usize = 64 << 20;
/// The prototype log rolls to a new segment file past this size.
const SEGMENT_BYTES: u64 = 128 << 20;
/// Dedupe marks expire a day after the event.
const MARK_TTL_MS: u64 = 24 * 3600 * 1000;

/// Everything but the body: id (36 bytes, its 16 hex digits are patched per event), source,
/// headers and the delivery plan: 254 bytes.
const META_TEMPLATE: &[u8] = b"id=evt-0000000000000000-0000-0000-00000\n\
source=bench\nmethod=POST\npath=/hooks/bench\n\
content-type: application/json\nuser-agent: bench/1.0\n\
x-signature: sha256=9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08\n\
deliveries=bench:normal:0:next=0\n";
/// Where the event id sits in the record, and its hex digits.
const ID: std::ops::Range<usize> = 3..39;
const ID_HEX: std::ops::Range<usize> = 7..23;

/// Generates the events: the same bytes for every engine.
struct Events {
    /// Pseudo-random bytes; each body is a 1 KiB window at an offset that depends on the seq.
    pool: Vec<u8>,
    record: Vec<u8>,
    mark_key: Vec<u8>,
    next_seq: u64,
}

/// One event, borrowed from [`Events`] until the next one is generated.
struct Event<'a> {
    seq: u64,
    record: &'a [u8],
    mark_key: &'a [u8],
    expires_at_ms: u64,
}

impl Events {
    fn new() -> Self {
        let mut state = 0x9e37_79b9_7f4a_7c15u64;
        let pool = (0..(1 << 20) / 8)
            .flat_map(|_| {
                // xorshift64: deterministic, incompressible enough.
                state ^= state << 13;
                state ^= state >> 7;
                state ^= state << 17;
                state.to_le_bytes()
            })
            .collect();
        Self {
            pool,
            record: Vec::with_capacity(META_TEMPLATE.len() + BODY_LEN),
            mark_key: Vec::with_capacity(64),
            next_seq: 0,
        }
    }

    fn next(&mut self) -> Event<'_> {
        self.next_seq += 1;
        let seq = self.next_seq;
        self.record.clear();
        self.record.extend_from_slice(META_TEMPLATE);
        for (i, digit) in self.record[ID_HEX].iter_mut().enumerate() {
            *digit = b"0123456789abcdef"[(seq >> (60 - 4 * i)) as usize & 0xf];
        }
        let offset = (seq as usize * 1031) % (self.pool.len() - BODY_LEN);
        self.record
            .extend_from_slice(&self.pool[offset..offset + BODY_LEN]);
        self.mark_key.clear();
        self.mark_key.extend_from_slice(b"bench\0");
        self.mark_key.extend_from_slice(&self.record[ID]);
        Event {
            seq,
            record: &self.record,
            mark_key: &self.mark_key,
            expires_at_ms: 1_767_225_600_000 + seq + MARK_TTL_MS,
        }
    }
}

/// A store under test: writes `n` events from `events` (record + mark each) and makes them
/// durable with one commit before returning.
trait Engine {
    fn commit_group(&mut self, events: &mut Events, n: u64);
}

const REDB_EVENTS: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("events");
const REDB_MARKS: redb::TableDefinition<&[u8], u64> = redb::TableDefinition::new("marks");

/// redb, one row per event in `events` and one per mark in `marks`, one write transaction per
/// group.
struct Redb(redb::Database);

impl Redb {
    fn open(dir: &Path) -> Self {
        let db = redb::Database::builder()
            .set_cache_size(CACHE_BYTES)
            .create(dir.join("bench.redb"))
            .unwrap();
        Self(db)
    }
}

impl Engine for Redb {
    fn commit_group(&mut self, events: &mut Events, n: u64) {
        let mut txn = self.0.begin_write().unwrap();
        // The default in redb 3; spelled out because the comparison depends on it.
        txn.set_durability(redb::Durability::Immediate).unwrap();
        {
            let mut records = txn.open_table(REDB_EVENTS).unwrap();
            let mut marks = txn.open_table(REDB_MARKS).unwrap();
            for _ in 0..n {
                let e = events.next();
                records.insert(e.seq, e.record).unwrap();
                marks.insert(e.mark_key, e.expires_at_ms).unwrap();
            }
        }
        txn.commit().unwrap();
    }
}

/// fjall, keyspaces `events` (big-endian seq → record) and `marks` (key → LE expiry), one
/// write batch per group persisted with fdatasync.
struct Fjall {
    db: fjall::Database,
    records: fjall::Keyspace,
    marks: fjall::Keyspace,
}

impl Fjall {
    fn open(dir: &Path) -> Self {
        let db = fjall::Database::builder(dir)
            .cache_size(CACHE_BYTES as u64)
            .open()
            .unwrap();
        let records = db
            .keyspace("events", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        let marks = db
            .keyspace("marks", fjall::KeyspaceCreateOptions::default)
            .unwrap();
        Self { db, records, marks }
    }
}

impl Engine for Fjall {
    fn commit_group(&mut self, events: &mut Events, n: u64) {
        let mut batch = fjall::OwnedWriteBatch::with_capacity(self.db.clone(), 2 * n as usize)
            .durability(Some(fjall::PersistMode::SyncData));
        for _ in 0..n {
            let e = events.next();
            batch.insert(&self.records, &e.seq.to_be_bytes()[..], e.record);
            batch.insert(&self.marks, e.mark_key, &e.expires_at_ms.to_le_bytes()[..]);
        }
        batch.commit().unwrap();
    }
}

/// The purpose-built log (prototype). Segment files `<n>.log`; a record is `u32 len (LE) |
/// u32 CRC32C of payload (LE) | payload`, the payload `kind | seq (LE) | bytes`. An event is
/// one `RECORD` (bytes = the record) and one `MARK` (bytes = expiry (LE) | key). A group is
/// encoded into one reused buffer, then one `write_all` and one `sync_data`. A group never
/// straddles segments; creating a segment fsyncs the directory so its name is durable too.
struct Log {
    dir: PathBuf,
    file: File,
    segment: u64,
    segment_len: u64,
    buf: Vec<u8>,
}

const KIND_RECORD: u8 = 1;
const KIND_MARK: u8 = 2;

impl Log {
    fn open(dir: &Path) -> Self {
        let file = Self::create_segment(dir, 0);
        Self {
            dir: dir.to_owned(),
            file,
            segment: 0,
            segment_len: 0,
            buf: Vec::with_capacity(512 << 10),
        }
    }

    fn create_segment(dir: &Path, n: u64) -> File {
        let file = OpenOptions::new()
            .create_new(true)
            .append(true)
            .open(dir.join(format!("{n:020}.log")))
            .unwrap();
        File::open(dir).unwrap().sync_all().unwrap();
        file
    }

    fn push(&mut self, kind: u8, seq: u64, parts: [&[u8]; 2]) {
        let len = 1 + 8 + parts[0].len() + parts[1].len();
        self.buf
            .extend_from_slice(&u32::try_from(len).unwrap().to_le_bytes());
        let crc_at = self.buf.len();
        self.buf.extend_from_slice(&[0; 4]);
        let payload_at = self.buf.len();
        self.buf.push(kind);
        self.buf.extend_from_slice(&seq.to_le_bytes());
        self.buf.extend_from_slice(parts[0]);
        self.buf.extend_from_slice(parts[1]);
        let crc = crc32c::crc32c(&self.buf[payload_at..]);
        self.buf[crc_at..payload_at].copy_from_slice(&crc.to_le_bytes());
    }

    fn flush_group(&mut self) {
        let len = self.buf.len() as u64;
        if self.segment_len > 0 && self.segment_len + len > SEGMENT_BYTES {
            // The current segment is already durable: every group was synced.
            self.segment += 1;
            self.file = Self::create_segment(&self.dir, self.segment);
            self.segment_len = 0;
        }
        self.file.write_all(&self.buf).unwrap();
        self.file.sync_data().unwrap();
        self.segment_len += len;
        self.buf.clear();
    }
}

impl Engine for Log {
    fn commit_group(&mut self, events: &mut Events, n: u64) {
        for _ in 0..n {
            let e = events.next();
            let (seq, expiry) = (e.seq, e.expires_at_ms.to_le_bytes());
            // `e` borrows `events`, not `self`: both records are encoded straight into the buffer.
            self.push(KIND_RECORD, seq, [e.record, &[]]);
            self.push(KIND_MARK, seq, [&expiry, e.mark_key]);
        }
        self.flush_group();
    }
}

/// The row layout of today's store (`host/src/store`): per event the record (with its body),
/// one delivery (with the body again), a pending row, a time-index row, the mark and its expiry
/// row, and `next_seq` per commit. One durable transaction per group.
struct RedbToday(redb::Database);

const T_EVENTS: redb::TableDefinition<&str, &[u8]> = redb::TableDefinition::new("events");
const T_DELIVERIES: redb::TableDefinition<u64, &[u8]> = redb::TableDefinition::new("deliveries");
const T_PENDING: redb::TableDefinition<(&str, u8, u64, u64), ()> =
    redb::TableDefinition::new("pending");
const T_TIMES: redb::TableDefinition<(u64, &str), ()> = redb::TableDefinition::new("event_times");
const T_DEDUPE: redb::TableDefinition<(&str, &str), (u64, &str)> =
    redb::TableDefinition::new("dedupe");
const T_EXPIRY: redb::TableDefinition<(u64, &str, &str), ()> =
    redb::TableDefinition::new("dedupe_expiry");
const T_META: redb::TableDefinition<&str, u64> = redb::TableDefinition::new("meta");

/// Writes today's rows for one event; `small` replaces the event's and the delivery's record
/// with a ~60-byte reference (where the full record sits in a log), as a store that keeps the
/// records in a log and only the index rows in redb would.
fn today_rows(txn: &redb::WriteTransaction, events: &mut Events, n: u64, small: Option<&mut Log>) {
    let mut ev = txn.open_table(T_EVENTS).unwrap();
    let mut de = txn.open_table(T_DELIVERIES).unwrap();
    let mut pe = txn.open_table(T_PENDING).unwrap();
    let mut ti = txn.open_table(T_TIMES).unwrap();
    let mut dd = txn.open_table(T_DEDUPE).unwrap();
    let mut dx = txn.open_table(T_EXPIRY).unwrap();
    let mut me = txn.open_table(T_META).unwrap();
    let mut log = small;
    let mut seq = 0;
    for _ in 0..n {
        let e = events.next();
        seq = e.seq;
        let id = std::str::from_utf8(&e.record[ID]).unwrap().to_owned();
        let key = format!("bench:{id}");
        let reference = [7u8; 60];
        let (event_row, delivery_row): (&[u8], &[u8]) = match log.as_deref_mut() {
            Some(log) => {
                log.push(KIND_RECORD, seq, [e.record, &[]]);
                (&reference, &reference)
            }
            None => (e.record, &e.record[META_TEMPLATE.len() - 40..]),
        };
        ev.insert(key.as_str(), event_row).unwrap();
        de.insert(seq, delivery_row).unwrap();
        pe.insert(("sink", 1, e.expires_at_ms - MARK_TTL_MS, seq), ())
            .unwrap();
        ti.insert((e.expires_at_ms - MARK_TTL_MS, key.as_str()), ())
            .unwrap();
        dd.insert(("bench", id.as_str()), (e.expires_at_ms, id.as_str()))
            .unwrap();
        dx.insert((e.expires_at_ms, "bench", id.as_str()), ())
            .unwrap();
    }
    me.insert("next_seq", seq).unwrap();
}

impl Engine for RedbToday {
    fn commit_group(&mut self, events: &mut Events, n: u64) {
        let txn = self.0.begin_write().unwrap();
        today_rows(&txn, events, n, None);
        txn.commit().unwrap();
    }
}

/// Records in the log (one write + fdatasync per group), today's index rows in redb with small
/// values, committed without fsync after the log's (the log being the write-ahead log).
struct LogIndex {
    log: Log,
    db: redb::Database,
}

impl Engine for LogIndex {
    fn commit_group(&mut self, events: &mut Events, n: u64) {
        let mut txn = self.db.begin_write().unwrap();
        txn.set_durability(redb::Durability::None).unwrap();
        today_rows(&txn, events, n, Some(&mut self.log));
        self.log.flush_group();
        txn.commit().unwrap();
    }
}

const ENGINES: [&str; 5] = ["redb", "fjall", "log", "redb_today", "log_index"];

fn open(engine: &str, dir: &Path) -> Box<dyn Engine> {
    match engine {
        "redb" => Box::new(Redb::open(dir)),
        "fjall" => Box::new(Fjall::open(dir)),
        "log" => Box::new(Log::open(dir)),
        "redb_today" => Box::new(RedbToday(Redb::open(dir).0)),
        "log_index" => Box::new(LogIndex {
            log: Log::open(dir),
            db: Redb::open(dir).0,
        }),
        _ => unreachable!(),
    }
}

/// Process CPU time (user + system, every thread, exited ones included).
fn cpu_now() -> Duration {
    let t = clock_gettime(ClockId::ProcessCPUTime);
    Duration::new(t.tv_sec as u64, t.tv_nsec as u32)
}

#[derive(Clone, Copy)]
enum Clock {
    Cpu,
    Wall,
}

/// Runs `iters` events rounded up to whole groups of `g`, returns the time scaled to `iters`
/// events (criterion divides by `iters`).
fn run(engine: &mut dyn Engine, events: &mut Events, g: u64, iters: u64, clock: Clock) -> Duration {
    let groups = iters.div_ceil(g);
    let (cpu0, wall0) = (cpu_now(), Instant::now());
    for _ in 0..groups {
        engine.commit_group(events, g);
    }
    let spent = match clock {
        Clock::Cpu => cpu_now() - cpu0,
        Clock::Wall => wall0.elapsed(),
    };
    let scaled = spent.as_nanos() * u128::from(iters) / u128::from(groups * g);
    Duration::from_nanos(u64::try_from(scaled).unwrap())
}

fn bench(c: &mut Criterion) {
    let mut events = Events::new();
    for (name, clock) in [
        ("store_engines_cpu", Clock::Cpu),
        ("store_engines_wall", Clock::Wall),
    ] {
        for g in GROUPS {
            let mut group = c.benchmark_group(format!("{name}/G={g}"));
            group
                .sample_size(10)
                .warm_up_time(Duration::from_secs(2))
                .measurement_time(Duration::from_secs(5));
            for engine in ENGINES {
                let dir = tempfile::tempdir().unwrap();
                let mut store = open(engine, dir.path());
                group.bench_function(engine, |b| {
                    b.iter_custom(|iters| run(store.as_mut(), &mut events, g, iters, clock))
                });
                // Closes the store (fjall joins its background threads) before the next one runs.
                drop(store);
                drop(dir);
            }
            group.finish();
        }
    }
}

criterion_group!(benches, bench);
criterion_main!(benches);
