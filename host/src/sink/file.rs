//! `type = "file"`: append JSON lines, fsync, then confirm.
//!
//! A unit is confirmed only once its bytes are written *and* fsynced, both checked: the write
//! goes through `std::fs::File` on the blocking pool, because tokio's `File` hands the bytes to a
//! background task and reports a failed write only at a later call, where `sync_data` drops it
//! (a full disk then looked like a delivery). A failed or short write is a failed attempt
//! (retried, then dead-lettered) and the file is cut back to its length before the unit, so no
//! partial line is left for the next unit to be glued onto. When even that truncation fails,
//! the sink remembers the length and truncates before it writes anything else.
//!
//! `timeout` bounds an attempt: waiting for the file (the previous unit's write) plus the write
//! and fsync. A blocking write cannot be interrupted, so one that outlives its attempt (a hung
//! disk or NFS mount) goes on in the background, and this is what keeps the file sound:
//!
//! - It still owns the sink's lock, which it releases only once it has returned. The next
//!   attempt waits for the lock within its own timeout, and fails (transient, retried with
//!   backoff) if the stuck write has not returned by then: a unit is never written next to, or
//!   into the middle of, an unfinished one. A stuck disk thus costs one blocked thread, not one
//!   per attempt.
//! - Its unit was reported failed and will be sent again, so when the abandoned write does
//!   complete it cuts its own lines back off (the same truncation as a failed write) before it
//!   releases the lock: the file holds each confirmed unit once, and an abandoned unit not at
//!   all. Whether the write finished in time or was abandoned is settled once, by whichever of
//!   the write and the attempt's deadline comes first, so the two never disagree.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{Claim, Sink, SinkError, blocking_write, json_line};
use crate::store::DeliveryRecord;

/// The `file` sink: appends each unit's deliveries as JSON lines to one file, fsynced.
pub struct FileSink {
    path: PathBuf,
    /// Held for the whole write (units to one file never interleave), across the blocking call,
    /// until it returns, also after its attempt timed out.
    state: Arc<Mutex<Appender>>,
    /// The bound on one attempt: waiting for the lock, writing, fsyncing.
    timeout: Duration,
}

impl FileSink {
    /// A sink appending to `path`; the file is opened (created if absent) on the first unit.
    /// Each attempt is bounded by `timeout`.
    pub fn new(path: PathBuf, timeout: Duration) -> FileSink {
        FileSink {
            path,
            state: Arc::new(Mutex::new(Appender::default())),
            timeout,
        }
    }
}

/// The open file and what a failed unit left to clean up.
#[derive(Default)]
struct Appender {
    /// Kept open between units; reopened after a failed unit whose bytes were cut off (the file
    /// may have been rotated or its directory may have come back).
    file: Option<File>,
    /// A failed unit's partial bytes are still in `file` past this length: cut them off (through
    /// the same handle, never a reopened path) before writing anything else.
    torn_at: Option<u64>,
}

impl Appender {
    /// Appends `bytes` and fsyncs them; on any error the file is as it was before. Once they
    /// are durable, `claim` says whether the attempt still waits for them: if it gave up (timed
    /// out, so the unit will be sent again), they are cut back off and the answer is an error.
    fn append(&mut self, path: &Path, bytes: &[u8], claim: &Claim) -> std::io::Result<()> {
        let start = self.append_durably(path, bytes)?;
        if claim.finish() {
            return Ok(());
        }
        let file = self.file.as_ref().expect("written above");
        match cut(file, start) {
            Ok(()) => self.file = None,
            Err(_) => self.torn_at = Some(start),
        }
        Err(std::io::Error::other(
            "the write finished after its attempt timed out; cut back off",
        ))
    }

    /// Appends `bytes` and fsyncs them: the length before them, or an error with the file as it
    /// was before.
    fn append_durably(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<u64> {
        if self.file.is_none() {
            let file = File::options().create(true).append(true).open(path)?;
            // The file may be new: its directory entry must be durable too, or a power loss
            // right after the first fsync can lose the whole file on some filesystems.
            sync_dir(path)?;
            self.file = Some(file);
        }
        let file = self.file.as_mut().expect("opened above");
        if let Some(len) = self.torn_at {
            cut(file, len)?;
            self.torn_at = None;
        }
        let start = file.metadata()?.len();
        let written = file.write_all(bytes).and_then(|()| file.sync_data());
        if let Err(e) = written {
            match cut(file, start) {
                Ok(()) => self.file = None,
                Err(_) => self.torn_at = Some(start),
            }
            return Err(e);
        }
        debug_assert!(
            file.metadata()
                .is_ok_and(|m| m.len() >= start + bytes.len() as u64)
        );
        Ok(start)
    }
}

/// Fsyncs the directory holding `path` (its entries: a file created there).
fn sync_dir(path: &Path) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(p) if !p.as_os_str().is_empty() => p,
        _ => Path::new("."),
    };
    File::open(dir)?.sync_all()
}

/// Truncates `file` to `len` and makes that durable.
fn cut(file: &File, len: u64) -> std::io::Result<()> {
    file.set_len(len)?;
    file.sync_all()
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let mut buf = Vec::new();
        for d in batch {
            buf.extend_from_slice(&json_line(d));
        }
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut state = tokio::time::timeout_at(deadline, self.state.clone().lock_owned())
            .await
            .map_err(|_| {
                SinkError::transient(format!(
                    "{}: the previous write has not returned after {:?} (a hung disk?); \
                     not writing next to it",
                    self.path.display(),
                    self.timeout
                ))
            })?;
        let path = self.path.clone();
        let written = blocking_write(deadline, move |claim| state.append(&path, &buf, claim))
            .await
            .map_err(|e| SinkError::transient(format!("{}: {e}", self.path.display())))?;
        match written {
            Some(written) => written.map_err(|e| {
                SinkError::transient(format!("cannot write {}: {e}", self.path.display()))
            }),
            None => Err(SinkError::transient(format!(
                "writing {} did not finish within {:?} (a hung disk?); the write is abandoned \
                 and its lines will be cut off if it completes",
                self.path.display(),
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::DeliveryRecord;

    /// The claim of an attempt that waits for its write.
    fn waited() -> Claim {
        Claim::default()
    }

    fn record(id: &str) -> DeliveryRecord {
        super::super::test_record(id, b"{}")
    }

    #[test]
    fn a_write_that_completes_after_its_attempt_gave_up_is_cut_back_off() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut appender = Appender::default();
        appender.append(&path, b"{\"a\":1}\n", &waited()).unwrap();
        let gave_up = Claim::default();
        assert!(gave_up.abandon());
        let e = appender
            .append(&path, b"{\"b\":2}\n", &gave_up)
            .unwrap_err();
        assert!(e.to_string().contains("timed out"), "{e}");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "{\"a\":1}\n");
        // The retry writes the unit once.
        appender.append(&path, b"{\"b\":2}\n", &waited()).unwrap();
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"b\":2}\n"
        );
    }

    /// A FIFO without a reader: opening it for writing blocks, like a hung disk.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_hung_write_times_out_and_keeps_the_file_until_it_returns() {
        let dir = tempfile::tempdir().unwrap();
        let fifo = dir.path().join("hung");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let timeout = Duration::from_millis(300);
        let sink = FileSink::new(fifo.clone(), timeout);
        let started = std::time::Instant::now();
        let e = sink.deliver(&[record("shop:a:disk:0")]).await.unwrap_err();
        assert!(!e.permanent && e.message.contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "bounded");
        assert!(super::super::writes_in_progress() >= 1, "still stuck");
        let e = sink.deliver(&[record("shop:b:disk:0")]).await.unwrap_err();
        assert!(!e.permanent && e.message.contains("previous write"), "{e}");

        // The stuck call returns (a reader opens the FIFO): the lock is free again, and the
        // next attempt gets as far as the file (which, being a FIFO, cannot be fsynced).
        let reader = std::thread::spawn(move || std::fs::read(&fifo));
        let mut freed = false;
        for _ in 0..20 {
            match sink.deliver(&[record("shop:b:disk:0")]).await {
                Err(e) if e.message.contains("previous write") => continue,
                _ => {
                    freed = true;
                    break;
                }
            }
        }
        assert!(freed, "the lock is released once the stuck write returns");
        drop(sink);
        let _ = reader.join();
    }

    #[test]
    fn a_failed_write_whose_cut_fails_is_cut_before_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut appender = Appender::default();
        appender.append(&path, b"{\"a\":1}\n", &waited()).unwrap();
        // A handle that can neither write nor truncate: the unit fails and the length to cut
        // back to is remembered.
        appender.file = Some(File::open(&path).unwrap());
        assert!(appender.append(&path, b"{\"b\":2}\n", &waited()).is_err());
        assert_eq!(appender.torn_at, Some(8));
        assert!(
            appender.file.is_some(),
            "the torn file is cut through the same handle"
        );
        // The handle works again, with a partial line past the remembered length.
        let mut writable = File::options().append(true).open(&path).unwrap();
        writable.write_all(b"{\"b\":").unwrap();
        appender.file = Some(writable);
        appender.append(&path, b"{\"c\":3}\n", &waited()).unwrap();
        assert_eq!(appender.torn_at, None);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"c\":3}\n"
        );
    }
}
