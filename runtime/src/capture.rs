//! Guest stdout and stderr, captured in bounded buffers.
//!
//! wasmtime-wasi's `MemoryOutputPipe` fails the guest's write once it is full, so a
//! chatty guest would die of its own `println!`. [`Capture`] instead accepts every
//! write, keeps the first [`Capture::new`]`(limit)` bytes between two drains, counts the
//! rest as dropped, and always remembers the last few KiB (the "stderr tail" reported
//! with a failure).

use std::collections::VecDeque;
use std::io;
use std::pin::Pin;
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll};

use bytes::Bytes;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamResult};

/// How much of the end of a stream is kept for failure reports.
const TAIL: usize = 2048;
/// The largest single write the guest is offered.
const PERMIT: usize = 64 << 10;

/// One captured output stream; clones share the buffer.
#[derive(Clone)]
pub(crate) struct Capture {
    inner: Arc<Mutex<Buffer>>,
}

struct Buffer {
    limit: usize,
    head: Vec<u8>,
    dropped: u64,
    tail: VecDeque<u8>,
}

/// What a stream received since the last drain.
pub(crate) struct Drained {
    /// The first bytes written, up to the limit.
    pub(crate) head: Vec<u8>,
    /// How many bytes did not fit.
    pub(crate) dropped: u64,
}

impl Capture {
    /// A capture keeping at most `limit` bytes between drains.
    pub(crate) fn new(limit: usize) -> Self {
        let buffer = Buffer { limit, head: Vec::new(), dropped: 0, tail: VecDeque::with_capacity(TAIL) };
        Capture { inner: Arc::new(Mutex::new(buffer)) }
    }

    fn lock(&self) -> MutexGuard<'_, Buffer> {
        // A panic while holding this lock cannot leave the buffer inconsistent.
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn push(&self, bytes: &[u8]) {
        let mut b = self.lock();
        let room = b.limit.saturating_sub(b.head.len());
        let kept = bytes.len().min(room);
        b.head.extend_from_slice(&bytes[..kept]);
        b.dropped += (bytes.len() - kept) as u64;
        let recent = &bytes[bytes.len().saturating_sub(TAIL)..];
        let overflow = (b.tail.len() + recent.len()).saturating_sub(TAIL);
        b.tail.drain(..overflow);
        b.tail.extend(recent);
    }

    /// Takes what was written since the last drain.
    pub(crate) fn drain(&self) -> Drained {
        let mut b = self.lock();
        Drained { head: std::mem::take(&mut b.head), dropped: std::mem::take(&mut b.dropped) }
    }

    /// Takes the last bytes written (up to 2 KiB) and forgets them.
    pub(crate) fn take_tail(&self) -> String {
        let mut b = self.lock();
        let tail: Vec<u8> = b.tail.drain(..).collect();
        String::from_utf8_lossy(&tail).into_owned()
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

    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
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
        Ok(PERMIT)
    }
}

impl tokio::io::AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_head_counts_the_rest_and_remembers_the_tail() {
        let c = Capture::new(10);
        c.push(b"0123456");
        c.push(b"789abcdef");
        let d = c.drain();
        assert_eq!(d.head, b"0123456789");
        assert_eq!(d.dropped, 6);
        assert_eq!(c.take_tail(), "0123456789abcdef");
        assert_eq!(c.take_tail(), "");
        // A drain makes room again.
        c.push(b"xyz");
        assert_eq!(c.drain().head, b"xyz");
    }

    #[test]
    fn tail_is_bounded() {
        let c = Capture::new(0);
        for _ in 0..100 {
            c.push(&[b'a'; 100]);
        }
        c.push(b"END");
        let tail = c.take_tail();
        assert_eq!(tail.len(), TAIL);
        assert!(tail.ends_with("aaEND"));
        assert_eq!(c.drain().dropped, 10_003);
    }
}
