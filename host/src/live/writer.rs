//! The live database's only writer: one thread, one connection, group commit.
//!
//! Ingest requests hand their rows to this thread and wait. The thread
//! gathers everything that arrives within `--flush-interval-ms` (or until
//! 10,000 rows, or until an alert, event or ack arrives), appends it as
//! Arrow batches in one transaction, commits, and only then answers every
//! waiter. So an OTLP 200 means the rows are in
//! DuckDB's write-ahead log, and many small requests share one commit.
//!
//! Retention runs on the same thread between commits (deletes are writes);
//! readers are never blocked by it, since DuckDB readers see snapshots.

use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::mpsc::{self, RecvTimeoutError, SyncSender, TrySendError};
use std::sync::Arc;
use std::time::{Duration, Instant};

use duckdb::Connection;
use serde::Serialize;
use tokio::sync::oneshot;

use super::alerts::{AlertRow, Raised};
use super::rows::{buckets_batch, metrics_batch, spans_batch, Rows};
use super::schema::RETAINED;

/// Commit at this many rows even before the flush interval ends.
pub const MAX_BATCH_ROWS: usize = 10_000;

/// Rows per Arrow batch handed to the appender: keeps every batch small
/// however large one request is.
const APPEND_CHUNK: usize = 8192;

/// An event for `events_local` (from `/emit`, and later plugin alerts).
#[derive(Debug, Clone)]
pub struct EventRow {
    pub timestamp_us: i64,
    pub name: String,
    pub severity: String,
    pub source: String,
    pub data: String,
}

enum Command {
    Rows(Rows, Instant, oneshot::Sender<Result<(), String>>),
    Event(EventRow, oneshot::Sender<Result<i64, String>>),
    Alert(AlertRow, Duration, oneshot::Sender<Result<Raised, String>>),
    Ack(i64, oneshot::Sender<Result<bool, String>>),
}

#[derive(Debug, Default, Serialize, Clone)]
pub struct WriterStats {
    pub queued_requests: usize,
    pub rows_committed: u64,
    pub commits: u64,
    /// Time from the oldest request's arrival to its commit, last commit.
    pub last_commit_lag_ms: u64,
    pub last_commit_rows: u64,
    pub retention_deleted: u64,
}

#[derive(Default)]
struct Counters {
    queued: AtomicUsize,
    rows: AtomicU64,
    commits: AtomicU64,
    lag_ms: AtomicU64,
    last_rows: AtomicU64,
    deleted: AtomicU64,
}

/// A handle to the writer thread.
#[derive(Clone)]
pub struct Writer {
    tx: SyncSender<Command>,
    counters: Arc<Counters>,
}

#[derive(Debug, thiserror::Error)]
pub enum WriteError {
    #[error("the live store's write queue is full; retry shortly")]
    QueueFull,
    #[error("the live store's writer has stopped")]
    Stopped,
    #[error("the live store could not commit: {0}")]
    Commit(String),
}

pub struct WriterSettings {
    pub flush_interval: Duration,
    pub retention: Duration,
    pub retention_every: Duration,
    pub queue_capacity: usize,
}

impl Writer {
    /// Starts the writer thread on `conn` (the connection that opened the
    /// database file).
    pub fn start(conn: Connection, settings: WriterSettings) -> std::io::Result<Self> {
        let (tx, rx) = mpsc::sync_channel(settings.queue_capacity);
        let counters = Arc::new(Counters::default());
        let thread_counters = counters.clone();
        std::thread::Builder::new()
            .name("live-writer".into())
            .spawn(move || run(conn, rx, settings, thread_counters))?;
        Ok(Writer { tx, counters })
    }

    /// Queues rows and waits until they are committed.
    pub async fn write(&self, rows: Rows) -> Result<(), WriteError> {
        if rows.is_empty() {
            return Ok(());
        }
        let (done, wait) = oneshot::channel();
        self.send(Command::Rows(rows, Instant::now(), done))?;
        wait.await.map_err(|_| WriteError::Stopped)?.map_err(WriteError::Commit)
    }

    /// Stores an alert, merging it into an open alert with the same dedup
    /// key seen within `window`.
    pub async fn alert(&self, alert: AlertRow, window: Duration) -> Result<Raised, WriteError> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Alert(alert, window, done))?;
        wait.await.map_err(|_| WriteError::Stopped)?.map_err(WriteError::Commit)
    }

    /// Marks an alert acknowledged; false when there is no such alert.
    pub async fn ack_alert(&self, id: i64) -> Result<bool, WriteError> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Ack(id, done))?;
        wait.await.map_err(|_| WriteError::Stopped)?.map_err(WriteError::Commit)
    }

    /// Stores an event and returns its id once committed.
    pub async fn event(&self, event: EventRow) -> Result<i64, WriteError> {
        let (done, wait) = oneshot::channel();
        self.send(Command::Event(event, done))?;
        wait.await.map_err(|_| WriteError::Stopped)?.map_err(WriteError::Commit)
    }

    fn send(&self, command: Command) -> Result<(), WriteError> {
        self.counters.queued.fetch_add(1, Ordering::AcqRel);
        self.tx.try_send(command).map_err(|e| {
            self.counters.queued.fetch_sub(1, Ordering::AcqRel);
            match e {
                TrySendError::Full(_) => WriteError::QueueFull,
                TrySendError::Disconnected(_) => WriteError::Stopped,
            }
        })
    }

    pub fn stats(&self) -> WriterStats {
        let c = &self.counters;
        WriterStats {
            queued_requests: c.queued.load(Ordering::Acquire),
            rows_committed: c.rows.load(Ordering::Relaxed),
            commits: c.commits.load(Ordering::Relaxed),
            last_commit_lag_ms: c.lag_ms.load(Ordering::Relaxed),
            last_commit_rows: c.last_rows.load(Ordering::Relaxed),
            retention_deleted: c.deleted.load(Ordering::Relaxed),
        }
    }
}

fn run(conn: Connection, rx: mpsc::Receiver<Command>, settings: WriterSettings, counters: Arc<Counters>) {
    let mut next_retention = Instant::now() + settings.retention_every;
    loop {
        let wait = next_retention.saturating_duration_since(Instant::now());
        let first = match rx.recv_timeout(wait) {
            Ok(command) => command,
            Err(RecvTimeoutError::Timeout) => {
                retain(&conn, settings.retention, &counters);
                next_retention = Instant::now() + settings.retention_every;
                continue;
            }
            Err(RecvTimeoutError::Disconnected) => return,
        };
        // Gather a group: until the flush interval ends or the batch is full.
        // Alerts, events and acks are answered by a person or a plugin that
        // waits on them: they commit what is gathered at once.
        let deadline = Instant::now() + settings.flush_interval;
        let mut urgent = !matches!(first, Command::Rows(..));
        let mut group = vec![first];
        let mut rows: usize = group.iter().map(command_rows).sum();
        while rows < MAX_BATCH_ROWS && !urgent {
            match rx.recv_timeout(deadline.saturating_duration_since(Instant::now())) {
                Ok(command) => {
                    rows += command_rows(&command);
                    urgent = !matches!(command, Command::Rows(..));
                    group.push(command);
                }
                Err(_) => break,
            }
        }
        counters.queued.fetch_sub(group.len(), Ordering::AcqRel);
        // A bug in one group must not stop the only writer: its waiters see
        // their channel close (a retryable error) and the next group goes on.
        let committed = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| commit(&conn, group, &counters)));
        if committed.is_err() {
            tracing::error!("the live writer panicked on a group; its requests failed, the writer goes on");
            let _ = conn.execute_batch("ROLLBACK");
        }
        if Instant::now() >= next_retention {
            retain(&conn, settings.retention, &counters);
            next_retention = Instant::now() + settings.retention_every;
        }
    }
}

fn command_rows(command: &Command) -> usize {
    match command {
        Command::Rows(rows, _, _) => rows.len(),
        Command::Event(..) | Command::Alert(..) | Command::Ack(..) => 1,
    }
}

/// Appends every queued write in one transaction, then answers the waiters.
fn commit(conn: &Connection, group: Vec<Command>, counters: &Counters) {
    let oldest = group
        .iter()
        .filter_map(|c| match c {
            Command::Rows(_, at, _) => Some(*at),
            Command::Event(..) | Command::Alert(..) | Command::Ack(..) => None,
        })
        .min()
        .unwrap_or_else(Instant::now);
    let mut all = Rows::default();
    let mut row_waiters = Vec::new();
    let mut events = Vec::new();
    let mut alerts = Vec::new();
    let mut acks = Vec::new();
    for command in group {
        match command {
            Command::Rows(rows, _, done) => {
                all.extend(rows);
                row_waiters.push(done);
            }
            Command::Event(event, done) => events.push((event, done)),
            Command::Alert(alert, window, done) => alerts.push((alert, window, done)),
            Command::Ack(id, done) => acks.push((id, done)),
        }
    }
    let total = all.len() + events.len() + alerts.len() + acks.len();
    let result = (|| -> duckdb::Result<(Vec<i64>, Vec<Raised>, Vec<bool>)> {
        conn.execute_batch("BEGIN TRANSACTION")?;
        let appended = (|| {
            if !all.spans.is_empty() {
                let mut appender = conn.appender("otel_spans_local")?;
                for chunk in all.spans.chunks(APPEND_CHUNK) {
                    appender.append_record_batch(spans_batch(chunk))?;
                }
                appender.flush()?;
            }
            if !all.buckets.is_empty() {
                let mut appender = conn.appender("histogram_buckets_local")?;
                for chunk in all.buckets.chunks(APPEND_CHUNK) {
                    appender.append_record_batch(buckets_batch(chunk))?;
                }
                appender.flush()?;
            }
            if !all.metrics.is_empty() {
                let mut appender = conn.appender("system_metrics_local")?;
                for chunk in all.metrics.chunks(APPEND_CHUNK) {
                    appender.append_record_batch(metrics_batch(chunk))?;
                }
                appender.flush()?;
            }
            let mut ids = Vec::with_capacity(events.len());
            let mut insert = conn.prepare(
                "INSERT INTO events_local (timestamp, name, severity, source, data) \
                 VALUES (make_timestamp(?::BIGINT), ?, ?, ?, ?::JSON) RETURNING id",
            )?;
            for (e, _) in &events {
                ids.push(insert.query_row(duckdb::params![e.timestamp_us, e.name, e.severity, e.source, e.data], |r| r.get(0))?);
            }
            let mut raised = Vec::with_capacity(alerts.len());
            for (alert, window, _) in &alerts {
                raised.push(super::alerts::store(conn, alert, *window)?);
            }
            let mut acked = Vec::with_capacity(acks.len());
            for (id, _) in &acks {
                acked.push(super::alerts::ack(conn, *id)?);
            }
            Ok((ids, raised, acked))
        })();
        match appended {
            Ok(done) => {
                conn.execute_batch("COMMIT")?;
                Ok(done)
            }
            Err(e) => {
                let _ = conn.execute_batch("ROLLBACK");
                Err(e)
            }
        }
    })();
    match result {
        Ok((ids, raised, acked)) => {
            counters.rows.fetch_add(total as u64, Ordering::Relaxed);
            counters.commits.fetch_add(1, Ordering::Relaxed);
            counters.last_rows.store(total as u64, Ordering::Relaxed);
            counters.lag_ms.store(oldest.elapsed().as_millis() as u64, Ordering::Relaxed);
            for done in row_waiters {
                let _ = done.send(Ok(()));
            }
            for ((_, done), id) in events.into_iter().zip(ids) {
                let _ = done.send(Ok(id));
            }
            for ((_, _, done), r) in alerts.into_iter().zip(raised) {
                let _ = done.send(Ok(r));
            }
            for ((_, done), found) in acks.into_iter().zip(acked) {
                let _ = done.send(Ok(found));
            }
        }
        Err(e) => {
            tracing::error!(error = %e, rows = total, "live store commit failed");
            let message = e.to_string();
            for done in row_waiters {
                let _ = done.send(Err(message.clone()));
            }
            for (_, done) in events {
                let _ = done.send(Err(message.clone()));
            }
            for (_, _, done) in alerts {
                let _ = done.send(Err(message.clone()));
            }
            for (_, done) in acks {
                let _ = done.send(Err(message.clone()));
            }
        }
    }
}

/// Deletes rows older than the retention period from every live table.
fn retain(conn: &Connection, retention: Duration, counters: &Counters) {
    let cutoff_us = chrono::Utc::now().timestamp_micros() - retention.as_micros() as i64;
    let mut deleted = 0;
    for (table, column) in RETAINED {
        let sql = format!("DELETE FROM {table} WHERE {column} < make_timestamp(?::BIGINT)");
        match conn.execute(&sql, [cutoff_us]) {
            Ok(n) => deleted += n,
            Err(e) => tracing::warn!(table, error = %e, "retention delete failed"),
        }
    }
    counters.deleted.fetch_add(deleted as u64, Ordering::Relaxed);
    if deleted > 0 {
        tracing::info!(deleted, "retention removed old rows");
    }
}
