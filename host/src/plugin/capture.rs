//! Guest stderr as the host keeps it: the tail of what the current call wrote, for the
//! dead-letter reason of a call that traps (a Rust guest's panic message goes there).
//!
//! Invariants: a write never fails (a guest's diagnostics must not be what kills it), at most its
//! capacity in bytes is kept (the newest: a panic message comes last), and
//! [`Capture::clear`] before each call of a reused instance means a reason never carries another
//! event's output. wasmtime-wasi's `MemoryOutputPipe` has neither property: it traps the guest
//! once full and never empties, so a pooled plugin printing 100 B per event trapped on about its
//! 21st event, with earlier events' text in the dead letter.

use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// Bytes a guest may hand over in one write: any size works (nothing is refused), this only
/// shapes how a guest chunks its output.
const WRITE_BUDGET: usize = 64 * 1024;

/// A bounded, resettable capture of one stream; clones share it.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Mutex<Tail>>,
}

struct Tail {
    capacity: usize,
    bytes: Vec<u8>,
    /// Whether older bytes of this call were dropped to keep the newest.
    cut: bool,
}

impl Capture {
    /// An empty capture keeping at most `capacity` bytes.
    pub fn new(capacity: usize) -> Capture {
        Capture {
            inner: Arc::new(Mutex::new(Tail {
                capacity,
                bytes: Vec::new(),
                cut: false,
            })),
        }
    }

    fn tail(&self) -> std::sync::MutexGuard<'_, Tail> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Forgets what earlier calls wrote.
    pub fn clear(&self) {
        let mut tail = self.tail();
        tail.bytes.clear();
        tail.cut = false;
    }

    /// What was written since the last [`Capture::clear`], trimmed, as text; `…` marks that
    /// older bytes were dropped.
    pub fn text(&self) -> String {
        let tail = self.tail();
        let text = String::from_utf8_lossy(&tail.bytes);
        let text = text.trim();
        match (tail.cut, text.is_empty()) {
            (true, false) => format!("…{text}"),
            _ => text.to_string(),
        }
    }

    /// Appends `bytes`, dropping the oldest beyond the capacity.
    fn push(&self, bytes: &[u8]) {
        let mut tail = self.tail();
        let capacity = tail.capacity;
        let keep = &bytes[bytes.len().saturating_sub(capacity)..];
        let excess = (tail.bytes.len() + keep.len()).saturating_sub(capacity);
        if excess > 0 || keep.len() < bytes.len() {
            tail.cut = true;
        }
        tail.bytes.drain(..excess);
        tail.bytes.extend_from_slice(keep);
        debug_assert!(tail.bytes.len() <= capacity);
    }
}

impl IsTerminal for Capture {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for Capture {
    fn p2_stream(&self) -> Box<dyn OutputStream> {
        Box::new(self.clone())
    }

    fn async_stream(&self) -> Box<dyn AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> StreamResult<()> {
        self.push(&bytes);
        Ok(())
    }

    fn flush(&mut self) -> StreamResult<()> {
        Ok(())
    }

    fn check_write(&mut self) -> StreamResult<usize> {
        Ok(WRITE_BUDGET)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_newest_bytes_and_never_refuses_a_write() {
        let mut c = Capture::new(8);
        for _ in 0..100 {
            c.write(Bytes::from_static(b"0123456789")).unwrap();
            assert!(c.check_write().unwrap() > 0);
        }
        c.write(Bytes::from_static(b"panic!")).unwrap();
        assert_eq!(c.text(), "…89panic!");
    }

    #[test]
    fn clear_forgets_earlier_calls() {
        let mut c = Capture::new(16);
        c.write(Bytes::from_static(b"event one")).unwrap();
        c.clear();
        assert_eq!(c.text(), "");
        c.write(Bytes::from_static(b"event two")).unwrap();
        assert_eq!(c.text(), "event two");
    }
}
