//! Read connections to the live database: cloned from the writer's instance
//! (the only way to read a DuckDB file another connection writes), pooled
//! like the seed's `database/sql` pool (max open, max idle, lifetime), and
//! bounded in time and rows.
//!
//! Every caller statement is checked to be one read that calls no function
//! that acts ([`crate::statement`]); the instance has external access off
//! and its configuration locked. Statements run in autocommit: an explicit
//! READ ONLY transaction would add two statements to every read (about 60%
//! of a point lookup in DuckDB 2.0) and guard only against what the check
//! already refuses (`nextval`, `setval`: the only functions DuckDB lets
//! register a write). Internal lookups (percentiles, error
//! rates) use the same pool with their own fixed, parameterised SQL.

use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use arrow::array::RecordBatch;
use arrow::datatypes::SchemaRef;
use duckdb::types::Value as DuckValue;
use duckdb::Connection;
use serde::Serialize;
use tokio::sync::Semaphore;

use crate::cancel::{Cancel, CancelOnDrop};
use crate::statement::{Refusal, Verdicts};

#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub max_open: usize,
    pub max_idle: usize,
    pub max_lifetime: Duration,
    pub slow_query: Duration,
}

#[derive(Debug, Serialize, Clone)]
pub struct PoolStats {
    pub open_connections: usize,
    pub in_use: usize,
    pub idle: usize,
    pub max_open: usize,
    pub queries: u64,
    pub timeouts: u64,
}

/// A finished read: the schema, at most `max_rows` rows, and whether more existed.
#[derive(Debug)]
pub struct ReadResult {
    pub schema: SchemaRef,
    pub batches: Vec<RecordBatch>,
    pub rows: usize,
    pub truncated: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum ReadError {
    #[error("{0}")]
    Refused(Refusal),
    #[error("{0}")]
    Sql(String),
    #[error("query exceeded its {} ms timeout and was cancelled", .0.as_millis())]
    Timeout(Duration),
    #[error("the result is larger than {0} bytes; add a LIMIT, select fewer columns or aggregate")]
    TooLarge(usize),
    #[error("the live store failed: {0}")]
    Internal(String),
}

struct Idle {
    conn: Connection,
    created: Instant,
}

pub struct ReadPool {
    /// Clones are made from this one; `Connection` is not `Sync`.
    source: Mutex<Connection>,
    idle: Mutex<VecDeque<Idle>>,
    permits: Arc<Semaphore>,
    settings: PoolSettings,
    open: AtomicUsize,
    in_use: AtomicUsize,
    queries: AtomicU64,
    timeouts: AtomicU64,
    verdicts: Verdicts,
}

/// A statement to run: the caller's (checked) or one of duckgate's own.
pub struct Read {
    pub sql: String,
    pub params: Vec<DuckValue>,
    pub max_rows: usize,
    /// Bytes of Arrow data the result may hold; past it the read fails
    /// (rows alone do not bound memory: one row can hold a huge string).
    pub max_bytes: usize,
    pub timeout: Duration,
    pub trusted: bool,
}

/// Bytes an internal lookup may read.
pub const INTERNAL_MAX_BYTES: usize = 64 << 20;

impl ReadPool {
    pub fn new(source: Connection, settings: PoolSettings) -> Self {
        ReadPool {
            source: Mutex::new(source),
            idle: Mutex::new(VecDeque::new()),
            permits: Arc::new(Semaphore::new(settings.max_open)),
            settings,
            open: AtomicUsize::new(0),
            in_use: AtomicUsize::new(0),
            queries: AtomicU64::new(0),
            timeouts: AtomicU64::new(0),
            verdicts: Verdicts::new(10_000),
        }
    }

    pub fn stats(&self) -> PoolStats {
        PoolStats {
            open_connections: self.open.load(Ordering::Acquire),
            in_use: self.in_use.load(Ordering::Acquire),
            idle: self.idle.lock().expect("idle lock").len(),
            max_open: self.settings.max_open,
            queries: self.queries.load(Ordering::Relaxed),
            timeouts: self.timeouts.load(Ordering::Relaxed),
        }
    }

    fn checkout(&self) -> Result<Idle, ReadError> {
        let mut idle = self.idle.lock().expect("idle lock");
        while let Some(conn) = idle.pop_front() {
            if conn.created.elapsed() < self.settings.max_lifetime {
                return Ok(conn);
            }
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
        drop(idle);
        let conn = self
            .source
            .lock()
            .expect("source lock")
            .try_clone()
            .map_err(|e| ReadError::Internal(e.to_string()))?;
        self.open.fetch_add(1, Ordering::AcqRel);
        Ok(Idle { conn, created: Instant::now() })
    }

    fn checkin(&self, conn: Idle, healthy: bool) {
        let mut idle = self.idle.lock().expect("idle lock");
        if healthy && idle.len() < self.settings.max_idle && conn.created.elapsed() < self.settings.max_lifetime {
            idle.push_back(conn);
        } else {
            self.open.fetch_sub(1, Ordering::AcqRel);
        }
    }

    /// Runs one read within its timeout; waiting for a connection counts.
    pub async fn read(self: &Arc<Self>, read: Read) -> Result<ReadResult, ReadError> {
        let started = Instant::now();
        let deadline = started + read.timeout;
        let timeout = read.timeout;
        let permit = tokio::time::timeout_at(deadline.into(), self.permits.clone().acquire_owned())
            .await
            .map_err(|_| {
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                ReadError::Timeout(timeout)
            })?
            .expect("pool semaphore is never closed");
        let conn = self.checkout()?;
        self.in_use.fetch_add(1, Ordering::AcqRel);
        self.queries.fetch_add(1, Ordering::Relaxed);
        let cancel = Cancel::new(&conn.conn);
        let mut guard = CancelOnDrop::new(cancel.clone());
        let work_cancel = cancel.clone();
        let pool = self.clone();
        let sql_for_log = if read.trusted { None } else { Some(read.sql.clone()) };
        let mut work = tokio::task::spawn_blocking(move || {
            let result = run_read(&conn.conn, &read, &work_cancel, &pool.verdicts);
            // Only a connection whose result was read to the end goes back:
            // DuckDB may keep a stream abandoned early (row cap, byte cap,
            // error, cancel) open on its connection. A new clone costs little.
            let healthy = matches!(&result, Ok(r) if !r.truncated) && !work_cancel.is_cancelled();
            pool.in_use.fetch_sub(1, Ordering::AcqRel);
            pool.checkin(conn, healthy);
            drop(permit);
            result
        });
        let result = match tokio::time::timeout_at(deadline.into(), &mut work).await {
            Ok(joined) => {
                guard.disarm();
                joined.map_err(|e| ReadError::Internal(e.to_string()))?
            }
            Err(_) => {
                guard.disarm();
                cancel.stop(&mut work, Duration::from_secs(5)).await;
                self.timeouts.fetch_add(1, Ordering::Relaxed);
                Err(ReadError::Timeout(timeout))
            }
        };
        let elapsed = started.elapsed();
        if elapsed >= self.settings.slow_query {
            tracing::warn!(duration_ms = elapsed.as_millis() as u64, sql = sql_for_log.as_deref().unwrap_or("(internal lookup)"), "slow query");
        }
        result
    }
}

fn run_read(
    conn: &Connection,
    read: &Read,
    cancel: &Cancel,
    verdicts: &Verdicts,
) -> Result<ReadResult, ReadError> {
    if cancel.is_cancelled() {
        return Err(ReadError::Timeout(read.timeout));
    }
    if !read.trusted {
        verdicts.check(conn, &read.sql).map_err(|r| match r {
            Refusal::Syntax(m) => ReadError::Sql(m),
            other => ReadError::Refused(other),
        })?;
    }
    if cancel.is_cancelled() {
        return Err(ReadError::Timeout(read.timeout));
    }
    stream_rows(conn, read, cancel)
}

fn stream_rows(conn: &Connection, read: &Read, cancel: &Cancel) -> Result<ReadResult, ReadError> {
    let sql_error = |e: duckdb::Error| {
        let text = e.to_string();
        if text.starts_with("Out of Memory Error") || text.starts_with("Internal Error") || text.starts_with("FATAL") {
            ReadError::Internal(text)
        } else {
            ReadError::Sql(text)
        }
    };
    // Cached per connection. A statement whose stream is abandoned (row or
    // byte cap, error, cancel) would keep its result open, but such a
    // connection is never returned to the pool (see `read`).
    let mut stmt = conn.prepare_cached(&read.sql).map_err(sql_error)?;
    let stream = stmt
        .stream_arrow(duckdb::params_from_iter(read.params.iter()))
        .map_err(sql_error)?;
    let schema = stream.get_schema();
    let mut batches = Vec::new();
    let mut rows = 0;
    let mut bytes = 0;
    let mut truncated = false;
    for batch in stream {
        if cancel.is_cancelled() {
            return Err(ReadError::Timeout(read.timeout));
        }
        let batch = batch.map_err(sql_error)?;
        bytes += batch.get_array_memory_size();
        if bytes > read.max_bytes {
            return Err(ReadError::TooLarge(read.max_bytes));
        }
        if rows + batch.num_rows() > read.max_rows {
            let keep = read.max_rows - rows;
            if keep > 0 {
                batches.push(batch.slice(0, keep));
            }
            rows += keep;
            truncated = true;
            break;
        }
        rows += batch.num_rows();
        batches.push(batch);
    }
    Ok(ReadResult { schema, batches, rows, truncated })
}

/// A JSON parameter as a DuckDB value.
pub fn param(value: &serde_json::Value) -> DuckValue {
    match value {
        serde_json::Value::Null => DuckValue::Null,
        serde_json::Value::Bool(b) => DuckValue::Boolean(*b),
        serde_json::Value::Number(n) => match (n.as_i64(), n.as_f64()) {
            (Some(i), _) => DuckValue::BigInt(i),
            (None, Some(f)) => DuckValue::Double(f),
            _ => DuckValue::Text(n.to_string()),
        },
        serde_json::Value::String(s) => DuckValue::Text(s.clone()),
        other => DuckValue::Text(other.to_string()),
    }
}
