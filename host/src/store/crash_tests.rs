//! Power loss, modelled (issue #18, "Durability, proven"): the store runs on an in-memory
//! disk that records every write, length change and sync it makes; then, for every point of
//! that history, the images a power cut there could leave are rebuilt and opened as a store.
//!
//! The model follows the ALICE paper (and Vector's crash-model tests): what was synced
//! survives; of what was written after the last sync, any subset may survive, in any order,
//! and a write may be torn at a 512-byte sector. Each image must open, hold every event whose
//! `accept` returned before the cut (with its deliveries), and take new writes.
//!
//! The database file is created whole or not at all (`cell::create_new`: a temporary name,
//! synced, renamed): a cut before that leaves no file, modelled as an empty disk.
//!
//! The log (`log.rs`) is modelled too: the appender reports each write and sync of the log into
//! the same history, so a cut keeps the log as synced before it (plus none, all, or a torn
//! garbage tail of what was written after). This is what proves the write-ahead order: were a
//! commit to point at log bytes not yet synced, the `Lost` image of a cut right after it
//! would miss them.

use std::io;
use std::sync::{Arc, Mutex};

use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use redb::StorageBackend;

use super::tests::event;
use super::*;

/// What the store did to its file, in order.
#[derive(Debug, Clone)]
enum Op {
    Write {
        offset: u64,
        data: Vec<u8>,
    },
    SetLen(u64),
    Sync,
    /// The log was written (`synced` false) or synced up to `end` of its segment 1.
    Log {
        end: u64,
        synced: bool,
    },
}

/// The file as the running process sees it, and the history that made it.
#[derive(Debug, Default)]
struct Disk {
    live: Vec<u8>,
    ops: Vec<Op>,
}

/// A redb storage backend on a [`Disk`] that records each operation.
#[derive(Debug, Clone, Default)]
struct Recording(Arc<Mutex<Disk>>);

impl Recording {
    /// A disk holding `image`, as found after a power cut.
    fn holding(image: Vec<u8>) -> Recording {
        Recording(Arc::new(Mutex::new(Disk {
            live: image,
            ops: Vec::new(),
        })))
    }

    fn disk(&self) -> std::sync::MutexGuard<'_, Disk> {
        self.0.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Operations so far.
    fn len_ops(&self) -> usize {
        self.disk().ops.len()
    }
}

/// Applies `op` to `image` (`torn`: only the write's first `torn` bytes reach the disk).
fn apply(image: &mut Vec<u8>, op: &Op, torn: Option<usize>) {
    match op {
        Op::Write { offset, data } => {
            let data = &data[..torn.unwrap_or(data.len()).min(data.len())];
            let end = *offset as usize + data.len();
            if image.len() < end {
                image.resize(end, 0);
            }
            image[*offset as usize..end].copy_from_slice(data);
        }
        Op::SetLen(len) => image.resize(*len as usize, 0),
        Op::Sync | Op::Log { .. } => {}
    }
}

impl StorageBackend for Recording {
    fn len(&self) -> Result<u64, io::Error> {
        Ok(self.disk().live.len() as u64)
    }

    fn read(&self, offset: u64, out: &mut [u8]) -> Result<(), io::Error> {
        let disk = self.disk();
        let end = offset as usize + out.len();
        let bytes = disk
            .live
            .get(offset as usize..end)
            .ok_or_else(|| io::Error::new(io::ErrorKind::UnexpectedEof, "read past the end"))?;
        out.copy_from_slice(bytes);
        Ok(())
    }

    fn set_len(&self, len: u64) -> Result<(), io::Error> {
        let mut disk = self.disk();
        let op = Op::SetLen(len);
        apply(&mut disk.live, &op, None);
        disk.ops.push(op);
        Ok(())
    }

    fn sync_data(&self) -> Result<(), io::Error> {
        self.disk().ops.push(Op::Sync);
        Ok(())
    }

    fn write(&self, offset: u64, data: &[u8]) -> Result<(), io::Error> {
        let mut disk = self.disk();
        let op = Op::Write {
            offset,
            data: data.to_vec(),
        };
        apply(&mut disk.live, &op, None);
        disk.ops.push(op);
        Ok(())
    }
}

/// A database on `disk`, as the store opens its file (same cache).
fn database_on(disk: Recording) -> Result<redb::Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(cell::CACHE_BYTES)
        .create_with_backend(disk)
}

/// How the unsynced tail of a crash point reaches the disk.
#[derive(Debug, Clone, Copy)]
enum Tail {
    /// None of it.
    Lost,
    /// All of it, in order.
    Whole,
    /// A random subset, some writes torn at a sector, from this seed.
    Some(u64),
}

/// The image a power cut after the first `cut` operations of `ops` leaves, with `tail`.
fn image_at(ops: &[Op], cut: usize, tail: Tail) -> Vec<u8> {
    let synced = ops[..cut]
        .iter()
        .rposition(|op| matches!(op, Op::Sync))
        .map_or(0, |i| i + 1);
    let mut image = Vec::new();
    for op in &ops[..synced] {
        apply(&mut image, op, None);
    }
    let unsynced = &ops[synced..cut];
    match tail {
        Tail::Lost => {}
        Tail::Whole => unsynced.iter().for_each(|op| apply(&mut image, op, None)),
        Tail::Some(seed) => {
            let mut rng = StdRng::seed_from_u64(seed);
            // Any subset in any order: the disk may have written them in another order.
            let mut chosen: Vec<&Op> = unsynced.iter().filter(|_| rng.random_bool(0.5)).collect();
            for i in (1..chosen.len()).rev() {
                chosen.swap(i, rng.random_range(0..=i));
            }
            for op in chosen {
                let torn = match op {
                    Op::Write { data, .. } if data.len() > 512 && rng.random_bool(0.3) => {
                        Some(512 * rng.random_range(0..data.len() / 512))
                    }
                    _ => None,
                };
                apply(&mut image, op, torn);
            }
        }
    }
    image
}

/// The log's length a cut after the first `cut` operations of `ops` leaves, with `tail`:
/// what was synced, plus (`Whole`) what was written after.
fn log_at(ops: &[Op], cut: usize, tail: Tail) -> u64 {
    let last = |synced_only: bool| {
        ops[..cut]
            .iter()
            .rev()
            .find_map(|op| match op {
                Op::Log { end, synced } if *synced || !synced_only => Some(*end),
                _ => None,
            })
            .unwrap_or(0)
    };
    match tail {
        Tail::Whole => last(false),
        Tail::Lost | Tail::Some(_) => last(true),
    }
}

/// Writes the first `len` bytes of the log segment of the store in `from` as the log of the
/// store in `to`, with half a record of garbage after them if `torn`.
fn copy_log(from: &std::path::Path, to: &std::path::Path, len: u64, torn: bool) {
    let (from, to) = (from.join(super::log::LOG_DIR), to.join(super::log::LOG_DIR));
    std::fs::create_dir_all(&to).unwrap();
    assert_eq!(super::log::list(&from).unwrap(), vec![1], "one segment");
    let name = super::log::segment_name(1);
    let mut bytes = std::fs::read(from.join(&name)).unwrap();
    bytes.truncate(len as usize);
    if torn {
        bytes.extend_from_slice(&[200, 0, 0, 0, 1, 2, 3, 4, 1, 9, 9]);
    }
    std::fs::write(to.join(&name), bytes).unwrap();
}

/// Every image a power cut at any point of a run of group commits could leave opens as a
/// store that holds each event acknowledged before the cut, and takes new writes.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_acknowledged_event_survives_a_power_cut_at_any_point() {
    let dir = tempfile::tempdir().unwrap();
    let disk = Recording::default();
    let heard = disk.clone();
    super::log::observe::register(
        &dir.path().join(super::log::LOG_DIR),
        Arc::new(move |head, synced| {
            assert_eq!(head.segment, 1);
            heard.disk().ops.push(Op::Log {
                end: head.end,
                synced,
            });
        }),
    );
    let db = database_on(disk.clone()).unwrap();
    // Before this, a cut leaves no file: the store is created whole or not at all.
    let born = disk.len_ops();
    let store = Embedded::start(dir.path(), db, true).unwrap();
    // (event id, operations done when its accept returned)
    let mut acked: Vec<(String, usize)> = Vec::new();
    for group in 0..6 {
        // Several at once share a group commit; one alone gets its own.
        let size = if group % 2 == 0 { 5 } else { 1 };
        let tasks: Vec<_> = (0..size)
            .map(|i| {
                let (store, disk) = (store.clone(), disk.clone());
                let id = format!("g{group}-{i}");
                tokio::spawn(async move {
                    let outcome = store.accept(event(&id, &["a", "b"])).await.unwrap();
                    assert_eq!(outcome, AcceptOutcome::Stored);
                    (id, disk.len_ops())
                })
            })
            .collect();
        for task in tasks {
            acked.push(task.await.unwrap());
        }
    }
    store.close().await;
    drop(store);
    let ops = disk.disk().ops.clone();
    let syncs = ops.iter().filter(|op| matches!(op, Op::Sync)).count();
    assert!(syncs >= 6, "{syncs} syncs for 6 group commits");

    let mut images = 0;
    for cut in 0..=ops.len() {
        let tails = [Tail::Lost, Tail::Whole, Tail::Some(cut as u64)];
        for tail in tails {
            let image = if cut < born {
                Vec::new()
            } else {
                image_at(&ops, cut, tail)
            };
            // The log as the cut leaves it, the third kind with a torn garbage tail.
            let here = tempfile::tempdir().unwrap();
            let log_len = log_at(&ops, cut, tail);
            copy_log(
                dir.path(),
                here.path(),
                log_len,
                matches!(tail, Tail::Some(_)),
            );
            let reopened = database_on(Recording::holding(image))
                .map_err(|e| e.to_string())
                .and_then(|db| Embedded::start(here.path(), db, true).map_err(|e| e.to_string()))
                .unwrap_or_else(|e| panic!("cut after op {cut} ({tail:?}): does not open: {e}"));
            for (id, at) in acked.iter().filter(|(_, at)| *at <= cut) {
                let found = reopened.event("demo", id).unwrap();
                let (_, deliveries) = found.unwrap_or_else(|| {
                    panic!("cut after op {cut} ({tail:?}): {id}, acknowledged at op {at}, is lost")
                });
                assert_eq!(deliveries.len(), 2, "cut after op {cut} ({tail:?}): {id}");
            }
            let outcome = reopened.accept(event("after", &["a"])).await;
            assert!(
                matches!(outcome, Ok(AcceptOutcome::Stored)),
                "cut after op {cut} ({tail:?}): a new write after the cut: {outcome:?}"
            );
            reopened.close().await;
            images += 1;
        }
    }
    assert_eq!(images, 3 * (ops.len() + 1));
}
