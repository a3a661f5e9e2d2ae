//! `type = "stdout"`: one JSON line per delivery on standard output (logs go to stderr).
//!
//! A unit is confirmed once its bytes were written to file descriptor 1 without error. The
//! sink writes through its own duplicate of the descriptor, not `std::io::stdout()`, whose line
//! buffer would keep a failed unit's bytes and emit them glued to the next unit. The write runs
//! on the blocking pool (a slow reader of a pipe must not stall the async workers). A stream
//! cannot be cut back, so after a failed write the next unit starts with a newline: a partial
//! line stays a broken line of its own instead of corrupting the next one.

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;

use tokio::sync::Mutex;

use super::{Sink, SinkError, json_line};
use crate::store::DeliveryRecord;

/// The `stdout` sink: writes each delivery as a JSON line to standard output.
#[derive(Default)]
pub struct StdoutSink {
    state: Arc<Mutex<Out>>,
}

/// The duplicated descriptor, opened on first use.
#[derive(Default)]
struct Out {
    file: Option<File>,
    /// The last write failed, possibly after part of a line.
    torn: bool,
}

impl Out {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        if self.file.is_none() {
            self.file = Some(File::from(std::io::stdout().as_fd().try_clone_to_owned()?));
        }
        let file = self.file.as_mut().expect("opened above");
        if self.torn {
            file.write_all(b"\n")?;
            self.torn = false;
        }
        let written = file.write_all(bytes).and_then(|()| file.flush());
        self.torn = written.is_err();
        written
    }
}

#[async_trait::async_trait]
impl Sink for StdoutSink {
    async fn deliver(&self, batch: &[DeliveryRecord]) -> Result<(), SinkError> {
        let mut buf = Vec::new();
        for d in batch {
            buf.extend_from_slice(&json_line(d));
        }
        let mut out = self.state.clone().lock_owned().await;
        tokio::task::spawn_blocking(move || out.write(&buf))
            .await
            .map_err(|e| SinkError::transient(format!("stdout write task failed: {e}")))?
            .map_err(|e| SinkError::transient(format!("stdout: {e}")))
    }
}
