//! Admission control for a route: at most N requests run, at most M wait, and
//! everything beyond is refused at once.
//!
//! Refusing early (503 with `Retry-After` semantics left to the client) keeps
//! latency bounded under overload instead of letting an unbounded backlog eat
//! memory, which is what the Node sidecar's queues were for too.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::Arc;

use serde::Serialize;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Counts of one gate, as reported on the stats routes.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct GateStats {
    pub running: usize,
    pub queued: usize,
    pub max_concurrent: usize,
    pub max_queue: usize,
    pub completed: u64,
    pub rejected: u64,
}

pub struct Gate {
    permits: Arc<Semaphore>,
    max_concurrent: usize,
    max_queue: usize,
    queued: AtomicUsize,
    completed: Arc<AtomicU64>,
    rejected: AtomicU64,
}

/// Why a request was not admitted, with the counts at that moment.
#[derive(Debug)]
pub struct QueueFull {
    pub running: usize,
    pub queued: usize,
    pub max_queue: usize,
}

/// Held while a request runs; dropping it lets the next one in.
pub struct Admitted {
    _permit: OwnedSemaphorePermit,
    completed: Arc<AtomicU64>,
}

impl Drop for Admitted {
    fn drop(&mut self) {
        self.completed.fetch_add(1, Ordering::Relaxed);
    }
}

/// Decrements the queue count even when the waiting future is dropped
/// (the client went away while queued).
struct QueueSlot<'a>(&'a AtomicUsize);

impl Drop for QueueSlot<'_> {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

impl Gate {
    pub fn new(max_concurrent: usize, max_queue: usize) -> Self {
        Gate {
            permits: Arc::new(Semaphore::new(max_concurrent)),
            max_concurrent,
            max_queue,
            queued: AtomicUsize::new(0),
            completed: Arc::new(AtomicU64::new(0)),
            rejected: AtomicU64::new(0),
        }
    }

    /// Waits for a running slot, or fails at once if the queue is full.
    pub async fn admit(&self) -> Result<Admitted, QueueFull> {
        if let Ok(permit) = self.permits.clone().try_acquire_owned() {
            return Ok(self.admitted(permit));
        }
        let joined = self
            .queued
            .fetch_update(Ordering::AcqRel, Ordering::Acquire, |q| {
                (q < self.max_queue).then_some(q + 1)
            });
        if joined.is_err() {
            self.rejected.fetch_add(1, Ordering::Relaxed);
            return Err(QueueFull {
                running: self.running(),
                queued: self.queued.load(Ordering::Acquire),
                max_queue: self.max_queue,
            });
        }
        let _slot = QueueSlot(&self.queued);
        let permit = self
            .permits
            .clone()
            .acquire_owned()
            .await
            .expect("gate semaphore is never closed");
        Ok(self.admitted(permit))
    }

    fn admitted(&self, permit: OwnedSemaphorePermit) -> Admitted {
        Admitted {
            _permit: permit,
            completed: self.completed.clone(),
        }
    }

    fn running(&self) -> usize {
        self.max_concurrent - self.permits.available_permits()
    }

    pub fn stats(&self) -> GateStats {
        GateStats {
            running: self.running(),
            queued: self.queued.load(Ordering::Acquire),
            max_concurrent: self.max_concurrent,
            max_queue: self.max_queue,
            completed: self.completed.load(Ordering::Relaxed),
            rejected: self.rejected.load(Ordering::Relaxed),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn refuses_past_running_plus_queue_and_recovers() {
        let gate = Arc::new(Gate::new(1, 1));
        let first = gate.admit().await.unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit().await.map(|_| ()) });
        while gate.stats().queued == 0 {
            tokio::task::yield_now().await;
        }
        let refused = gate.admit().await.err().expect("third request must be refused");
        assert_eq!((refused.running, refused.queued, refused.max_queue), (1, 1, 1));
        drop(first);
        waiter.await.unwrap().unwrap();
        let stats = gate.stats();
        assert_eq!((stats.running, stats.queued, stats.rejected, stats.completed), (0, 0, 1, 2));
    }

    #[tokio::test]
    async fn a_dropped_waiter_leaves_the_queue() {
        let gate = Arc::new(Gate::new(1, 1));
        let _first = gate.admit().await.unwrap();
        let g = gate.clone();
        let waiter = tokio::spawn(async move { g.admit().await.map(|_| ()) });
        while gate.stats().queued == 0 {
            tokio::task::yield_now().await;
        }
        waiter.abort();
        let _ = waiter.await;
        assert_eq!(gate.stats().queued, 0);
    }
}
