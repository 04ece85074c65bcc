//! Stopping DuckDB work that runs on a blocking thread.
//!
//! `InterruptHandle::interrupt` stops the statement running now, but DuckDB
//! clears a pending interrupt when the next statement starts: an interrupt
//! that lands between two statements of one request is lost. So cancelling
//! also sets a flag the work checks before each statement, and the waiter
//! repeats the interrupt until the work has returned.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use duckdb::{Connection, InterruptHandle};
use tokio::task::JoinHandle;

#[derive(Clone)]
pub struct Cancel {
    flag: Arc<AtomicBool>,
    handle: Arc<InterruptHandle>,
}

impl Cancel {
    pub fn new(conn: &Connection) -> Self {
        Cancel { flag: Arc::new(AtomicBool::new(false)), handle: conn.interrupt_handle() }
    }

    /// Checked by the work before each statement.
    pub fn is_cancelled(&self) -> bool {
        self.flag.load(Ordering::Acquire)
    }

    pub fn cancel(&self) {
        self.flag.store(true, Ordering::Release);
        self.handle.interrupt();
    }

    /// Cancels and waits (up to `limit`) for the work to return, repeating
    /// the interrupt meanwhile. True when the work has stopped.
    pub async fn stop<T>(&self, work: &mut JoinHandle<T>, limit: Duration) -> bool {
        let until = tokio::time::Instant::now() + limit;
        loop {
            self.cancel();
            match tokio::time::timeout(Duration::from_millis(20), &mut *work).await {
                Ok(_) => return true,
                Err(_) if tokio::time::Instant::now() < until => continue,
                Err(_) => return false,
            }
        }
    }
}

/// Cancels when dropped unless disarmed: covers a client that goes away
/// while its query runs.
pub struct CancelOnDrop(Option<Cancel>);

impl CancelOnDrop {
    pub fn new(cancel: Cancel) -> Self {
        CancelOnDrop(Some(cancel))
    }

    pub fn disarm(&mut self) {
        self.0 = None;
    }
}

impl Drop for CancelOnDrop {
    fn drop(&mut self) {
        if let Some(cancel) = self.0.take() {
            cancel.cancel();
        }
    }
}
