//! A plugin's stdout or stderr, kept in memory up to a bound.
//!
//! wasmtime-wasi's `MemoryOutputPipe` traps the guest once full, and Rust's
//! `println!` panics when a write fails; a chatty plugin would die of its own
//! logging. This sink accepts every write, keeps the first `capacity` bytes
//! and remembers that it dropped the rest.

use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::io::AsyncWrite;
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::p2::{OutputStream, Pollable, StreamError};

#[derive(Clone)]
pub struct Capture {
    inner: Arc<Mutex<Captured>>,
    capacity: usize,
}

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

impl Capture {
    pub fn new(capacity: usize) -> Self {
        Capture { inner: Arc::new(Mutex::new(Captured::default())), capacity }
    }

    fn push(&self, bytes: &[u8]) {
        let mut c = self.inner.lock().expect("capture lock");
        let room = self.capacity.saturating_sub(c.bytes.len());
        if bytes.len() > room {
            c.truncated = true;
        }
        c.bytes.extend_from_slice(&bytes[..bytes.len().min(room)]);
    }

    /// The captured text and whether some was dropped.
    pub fn take(&self) -> (String, bool) {
        let mut c = self.inner.lock().expect("capture lock");
        let text = String::from_utf8_lossy(&std::mem::take(&mut c.bytes)).into_owned();
        (text, c.truncated)
    }
}

#[wasmtime_wasi::async_trait]
impl OutputStream for Capture {
    fn write(&mut self, bytes: Bytes) -> Result<(), StreamError> {
        self.push(&bytes);
        Ok(())
    }
    fn flush(&mut self) -> Result<(), StreamError> {
        Ok(())
    }
    fn check_write(&mut self) -> Result<usize, StreamError> {
        Ok(64 * 1024)
    }
}

#[wasmtime_wasi::async_trait]
impl Pollable for Capture {
    async fn ready(&mut self) {}
}

impl AsyncWrite for Capture {
    fn poll_write(self: Pin<&mut Self>, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        self.push(buf);
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_shutdown(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn keeps_the_first_bytes_and_flags_the_rest() {
        let c = Capture::new(5);
        c.push(b"hel");
        c.push(b"lo world");
        assert_eq!(c.take(), ("hello".to_string(), true));
    }
}
