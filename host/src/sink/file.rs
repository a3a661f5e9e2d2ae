//! `type = "file"`: append JSON lines, fsync, then confirm.
//!
//! A unit is confirmed only once its bytes are written *and* fsynced, both checked: the write
//! goes through `std::fs::File` on the blocking pool, because tokio's `File` hands the bytes to a
//! background task and reports a failed write only at a later call, where `sync_data` drops it
//! (a full disk then looked like a delivery). A failed or short write is a failed attempt
//! (retried, then dead-lettered) and the file is cut back to its length before the unit, so no
//! partial line is left for the next unit to be glued onto. When even that truncation fails,
//! the sink remembers the length and truncates before it writes anything else.

use std::fs::File;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{Sink, SinkError, json_line};
use crate::store::DeliveryRecord;

/// The `file` sink: appends each unit's deliveries as JSON lines to one file, fsynced.
pub struct FileSink {
    path: PathBuf,
    /// Held for the whole write (units to one file never interleave), across the blocking call.
    state: Arc<Mutex<Appender>>,
}

impl FileSink {
    /// A sink appending to `path`; the file is opened (created if absent) on the first unit.
    pub fn new(path: PathBuf) -> FileSink {
        FileSink {
            path,
            state: Arc::new(Mutex::new(Appender::default())),
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
    /// Appends `bytes` and fsyncs them; on any error the file is as it was before.
    fn append(&mut self, path: &Path, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(File::options().create(true).append(true).open(path)?);
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
        Ok(())
    }
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
        let mut state = self.state.clone().lock_owned().await;
        let path = self.path.clone();
        let written = tokio::task::spawn_blocking(move || state.append(&path, &buf))
            .await
            .map_err(|e| SinkError::transient(format!("file write task failed: {e}")))?;
        written
            .map_err(|e| SinkError::transient(format!("cannot write {}: {e}", self.path.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_failed_write_whose_cut_fails_is_cut_before_the_next_write() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("out.jsonl");
        let mut appender = Appender::default();
        appender.append(&path, b"{\"a\":1}\n").unwrap();
        // A handle that can neither write nor truncate: the unit fails and the length to cut
        // back to is remembered.
        appender.file = Some(File::open(&path).unwrap());
        assert!(appender.append(&path, b"{\"b\":2}\n").is_err());
        assert_eq!(appender.torn_at, Some(8));
        assert!(
            appender.file.is_some(),
            "the torn file is cut through the same handle"
        );
        // The handle works again, with a partial line past the remembered length.
        let mut writable = File::options().append(true).open(&path).unwrap();
        writable.write_all(b"{\"b\":").unwrap();
        appender.file = Some(writable);
        appender.append(&path, b"{\"c\":3}\n").unwrap();
        assert_eq!(appender.torn_at, None);
        assert_eq!(
            std::fs::read_to_string(&path).unwrap(),
            "{\"a\":1}\n{\"c\":3}\n"
        );
    }
}
