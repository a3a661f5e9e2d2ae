//! `type = "stdout"`: one JSON line per delivery on standard output (logs go to stderr).
//!
//! A unit is confirmed once its bytes were written to file descriptor 1 without error. The
//! sink writes through its own duplicate of the descriptor, not `std::io::stdout()`, whose line
//! buffer would keep a failed unit's bytes and emit them glued to the next unit. The write runs
//! on the blocking pool (a slow reader of a pipe must not stall the async workers). A stream
//! cannot be cut back, so after a failed write the next unit starts with a newline: a partial
//! line stays a broken line of its own instead of corrupting the next one.
//!
//! `timeout` bounds an attempt: waiting for the descriptor (the previous unit's write) plus the
//! write. A pipe whose reader stopped reading blocks the write once its buffer is full, and a
//! blocking write cannot be interrupted: the attempt fails at its timeout (transient, retried
//! with backoff) and the write goes on in the background, still holding the sink's lock, so
//! the next unit waits for it (within its own timeout) and never interleaves with it. Should
//! the reader resume, the abandoned write completes: those lines were already counted failed,
//! and they are written again by the retry (at least once: readers dedupe on `delivery_id`).

use std::fs::File;
use std::io::Write;
use std::os::fd::AsFd;
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

use super::{Sink, SinkError, blocking_write, json_line};
use crate::store::DeliveryRecord;

/// The `stdout` sink: writes each delivery as a JSON line to standard output.
pub struct StdoutSink {
    /// Held across the blocking write until it returns, also after its attempt timed out.
    state: Arc<Mutex<Out>>,
    /// The bound on one attempt: waiting for the descriptor, writing.
    timeout: Duration,
}

impl StdoutSink {
    /// A sink writing to standard output (duplicated on the first unit), each attempt bounded
    /// by `timeout`.
    pub fn new(timeout: Duration) -> StdoutSink {
        StdoutSink {
            state: Arc::default(),
            timeout,
        }
    }
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
        let deadline = tokio::time::Instant::now() + self.timeout;
        let mut out = tokio::time::timeout_at(deadline, self.state.clone().lock_owned())
            .await
            .map_err(|_| {
                SinkError::transient(format!(
                    "stdout: the previous write has not returned after {:?} (nobody reads the \
                     pipe?); not writing next to it",
                    self.timeout
                ))
            })?;
        let written = blocking_write(deadline, move |claim| {
            let written = out.write(&buf);
            claim.finish();
            written
        })
        .await
        .map_err(|e| SinkError::transient(format!("stdout: {e}")))?;
        match written {
            Some(written) => written.map_err(|e| SinkError::transient(format!("stdout: {e}"))),
            None => Err(SinkError::transient(format!(
                "stdout: the write did not finish within {:?} (nobody reads the pipe?); it is \
                 abandoned",
                self.timeout
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::io::Read;

    use super::*;
    use crate::store::DeliveryRecord;

    fn record(id: &str, body: &[u8]) -> DeliveryRecord {
        super::super::test_record(id, body)
    }

    /// A sink writing into a pipe nobody reads yet, instead of the process's stdout.
    fn into_pipe(timeout: Duration) -> (StdoutSink, std::io::PipeReader) {
        let (reader, writer) = std::io::pipe().unwrap();
        let sink = StdoutSink::new(timeout);
        sink.state.try_lock().unwrap().file = Some(File::from(std::os::fd::OwnedFd::from(writer)));
        (sink, reader)
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_pipe_nobody_reads_times_out_and_the_next_unit_waits_for_the_stuck_write() {
        let timeout = Duration::from_millis(300);
        let (sink, mut reader) = into_pipe(timeout);
        // More than a pipe's buffer (64 KiB on Linux), in one unit.
        let big = format!("\"{}\"", "x".repeat(256 * 1024));
        let started = std::time::Instant::now();
        let e = sink
            .deliver(&[record("shop:big:out:0", big.as_bytes())])
            .await
            .unwrap_err();
        assert!(!e.permanent && e.message.contains("did not finish"), "{e}");
        assert!(started.elapsed() < Duration::from_secs(5), "bounded");
        assert!(super::super::writes_in_progress() >= 1, "still stuck");
        // The next unit does not write next to the stuck one: it waits, then fails too.
        let e = sink
            .deliver(&[record("shop:next:out:0", b"{}")])
            .await
            .unwrap_err();
        assert!(!e.permanent && e.message.contains("previous write"), "{e}");

        // The reader comes back: the stuck write completes, and the next unit follows it whole.
        let drain = std::thread::spawn(move || {
            let mut all = Vec::new();
            reader.read_to_end(&mut all).unwrap();
            all
        });
        let mut delivered = false;
        for _ in 0..50 {
            if sink
                .deliver(&[record("shop:next:out:0", b"{}")])
                .await
                .is_ok()
            {
                delivered = true;
                break;
            }
        }
        assert!(delivered, "delivers again once the pipe is read");
        drop(sink);
        let all = String::from_utf8(drain.join().unwrap()).unwrap();
        let lines: Vec<serde_json::Value> = all
            .lines()
            .map(|l| serde_json::from_str(l).expect("whole JSON lines only"))
            .collect();
        let ids: Vec<&str> = lines
            .iter()
            .map(|l| l["delivery_id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["shop:big:out:0", "shop:next:out:0"]);
    }
}
