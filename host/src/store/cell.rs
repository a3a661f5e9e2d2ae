//! The open database, replaceable: after a failed write (a full disk, an I/O error) redb
//! refuses every later transaction ("a previous I/O error occurred"), so the only way back is
//! to close the file and open it again. The writer thread does that ([`DbCell::reopen`]) once
//! space is back; readers take a short-lived handle per read and see
//! [`StoreError::Unavailable`] while the file is being reopened.

use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

use super::StoreError;

/// How long a reopen waits for in-flight reads to let go of the old database.
const REOPEN_WAIT: Duration = Duration::from_secs(2);

/// The store's database, shared by the writer and every reader.
pub(super) struct DbCell {
    path: PathBuf,
    db: RwLock<Option<Arc<Database>>>,
}

impl DbCell {
    pub(super) fn new(path: &Path, db: Database) -> DbCell {
        DbCell {
            path: path.to_path_buf(),
            db: RwLock::new(Some(Arc::new(db))),
        }
    }

    /// The database, or `Unavailable` while it is being reopened.
    pub(super) fn get(&self) -> Result<Arc<Database>, StoreError> {
        self.db
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
            .ok_or(StoreError::Unavailable)
    }

    pub(super) fn begin_read(&self) -> Result<ReadTransaction, StoreError> {
        self.get()?.begin_read().map_err(StoreError::storage)
    }

    pub(super) fn begin_write(&self) -> Result<WriteTransaction, StoreError> {
        self.get()?.begin_write().map_err(StoreError::storage)
    }

    /// Closes the database and opens the file again (redb repairs it if the last commit did
    /// not finish). Called by the writer thread only, so no write runs meanwhile.
    pub(super) fn reopen(&self) -> Result<(), StoreError> {
        let mut slot = self.db.write().unwrap_or_else(|e| e.into_inner());
        if let Some(old) = slot.take() {
            // Readers hold clones for the length of one read; wait for them to finish.
            let deadline = Instant::now() + REOPEN_WAIT;
            let mut old = old;
            loop {
                match Arc::try_unwrap(old) {
                    Ok(db) => {
                        drop(db);
                        break;
                    }
                    Err(still_shared) if Instant::now() < deadline => {
                        old = still_shared;
                        std::thread::sleep(Duration::from_millis(5));
                    }
                    Err(still_shared) => {
                        *slot = Some(still_shared);
                        return Err(StoreError::Storage(
                            "cannot reopen the store: reads still hold it".into(),
                        ));
                    }
                }
            }
        }
        let db = create(&self.path).map_err(StoreError::storage)?;
        *slot = Some(Arc::new(db));
        Ok(())
    }
}

/// redb's page cache, at most. Its default (1 GiB) let a burst of large bodies grow the
/// process by hundreds of MiB (329 MiB peak in `loadgen compare -c 256`'s verify scenario); the
/// store reads back only pending deliveries and recent events, which this holds. 64 → 32 MiB
/// took the full path's peak RSS from 132–137 to 112–117 MiB at 256 connections with no
/// measurable CPU cost (3 alternating rounds each, 174–216 vs 174–213 µs per request); 16 MiB
/// saved nothing more (the cache no longer fills).
pub(super) const CACHE_BYTES: usize = 32 << 20;

/// Creates a new, empty database at `path` so that a crash at any point leaves either no file
/// or a whole one: it is made under a temporary name, synced, renamed, and the directory
/// synced. The crash model (`crash_tests.rs`) found that a power cut after redb's first write
/// of a new file and before its first sync leaves a file redb refuses ("invalid data"), which
/// would stop every later start.
pub(super) fn create_new(path: &Path) -> std::io::Result<()> {
    let mut name = path.as_os_str().to_owned();
    name.push(".new");
    let temporary = PathBuf::from(name);
    // Left by a crash while creating: never a store anything was acknowledged from.
    match std::fs::remove_file(&temporary) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(e),
        _ => {}
    }
    drop(create(&temporary).map_err(std::io::Error::other)?);
    std::fs::File::open(&temporary)?.sync_all()?;
    std::fs::rename(&temporary, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

/// Opens (or creates) the database at `path` with [`CACHE_BYTES`] of cache.
pub(super) fn create(path: &Path) -> Result<Database, redb::DatabaseError> {
    redb::Builder::new()
        .set_cache_size(CACHE_BYTES)
        .create(path)
}
