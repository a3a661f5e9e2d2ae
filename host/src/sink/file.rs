//! `type = "file"`: append JSON lines, fsync, then confirm.

use std::path::PathBuf;

use tokio::io::AsyncWriteExt;
use tokio::sync::Mutex;

use super::{Sink, SinkError, json_line};
use crate::store::DeliveryRecord;

pub struct FileSink {
    path: PathBuf,
    /// Kept open between batches; reopened after an error (the file may have been rotated
    /// or its directory may have come back).
    file: Mutex<Option<tokio::fs::File>>,
}

impl FileSink {
    pub fn new(path: PathBuf) -> FileSink {
        FileSink {
            path,
            file: Mutex::new(None),
        }
    }
}

#[async_trait::async_trait]
impl Sink for FileSink {
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let mut buf = Vec::new();
        for d in batch {
            buf.extend_from_slice(&json_line(d));
        }
        let mut guard = self.file.lock().await;
        if guard.is_none() {
            let file = tokio::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&self.path)
                .await
                .map_err(|e| {
                    SinkError::transient(format!("cannot open {}: {e}", self.path.display()))
                })?;
            *guard = Some(file);
        }
        let file = guard.as_mut().expect("opened above");
        let written = async {
            file.write_all(&buf).await?;
            file.sync_data().await
        }
        .await;
        if let Err(e) = written {
            *guard = None;
            return Err(SinkError::transient(format!(
                "cannot write {}: {e}",
                self.path.display()
            )));
        }
        Ok(())
    }
}
