//! The `duckgate:plugin/host` functions, as seen from inside an invocation.
//!
//! Every call is counted; the call past the plugin's quota traps (some
//! functions, like `now-ms`, have no error to return, and a plugin spinning
//! on host calls must stop). Calls that can fail for reasons the plugin can
//! handle (bad SQL, a row limit, no data) return the WIT `error` instead.
//! Reads go through the live store's read-only pool and metric cache, so
//! plugin SQL gets exactly the refusals HTTP callers get.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use arrow::array::{Array, AsArray, RecordBatch};
use arrow::datatypes::{
    DataType, Date32Type, Decimal128Type, Float16Type, Float32Type, Float64Type, Int16Type, Int32Type,
    Int64Type, Int8Type, TimeUnit, UInt16Type, UInt32Type, UInt64Type, UInt8Type,
};
use duckdb::types::Value as DuckValue;
use wasmtime::component::ResourceTable;
use wasmtime::{ResourceLimiter, Trap};
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};

use super::bindings::duckgate::plugin::host::{self, Column, ColumnKind, Rows, Value};
use super::capture::Capture;
use super::limits::{LimitKind, Limits};
use super::receipt::LogLine;
use crate::live::alerts::{AlertRow, Severity as AlertSeverity};
use crate::live::pool::{Read, ReadError};
use crate::live::LiveStore;
use crate::query::json::write_value;

/// What an invocation may reach outside itself.
pub struct HostServices {
    pub live: Arc<LiveStore>,
}

/// Caps linear memory summed over every memory of the instance, and
/// remembers the peak and whether the cap refused a growth.
#[derive(Default)]
pub struct MemoryLimiter {
    pub limit: u64,
    pub total: u64,
    pub peak: u64,
    pub refused: bool,
}

impl ResourceLimiter for MemoryLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        let next = self.total.saturating_sub(current as u64) + desired as u64;
        if next > self.limit {
            self.refused = true;
            return Ok(false);
        }
        self.total = next;
        self.peak = self.peak.max(next);
        Ok(true)
    }

    fn table_growing(&mut self, _current: usize, desired: usize, _maximum: Option<usize>) -> wasmtime::Result<bool> {
        Ok(desired <= 1_000_000)
    }
}

/// Counters that end up in the receipt.
#[derive(Debug, Default, Clone)]
pub struct Usage {
    pub host_calls: u64,
    pub host_time: Duration,
    pub queries: u64,
    pub rows_read: u64,
    pub cache_hits: u64,
    pub alerts: u64,
}

/// A limit hit inside a host call; carried out of the trap to the receipt.
#[derive(Debug, thiserror::Error)]
#[error("{0:?} limit exceeded")]
pub struct LimitTrap(pub LimitKind);

/// The store data of one invocation.
pub struct Invocation {
    pub plugin: String,
    pub limits: Limits,
    pub deadline: Instant,
    pub config: Arc<HashMap<String, String>>,
    pub services: Arc<HostServices>,
    pub limiter: MemoryLimiter,
    pub usage: Usage,
    pub log: Vec<LogLine>,
    pub log_bytes: usize,
    pub log_truncated: bool,
    pub stdout: Capture,
    pub stderr: Capture,
    pub limit_hit: Option<LimitKind>,
    wasi: WasiCtx,
    table: ResourceTable,
}

/// Bytes of log lines (host `log` calls) kept per invocation.
const LOG_BYTES: usize = 64 * 1024;

impl Invocation {
    pub fn new(
        plugin: String,
        limits: Limits,
        config: Arc<HashMap<String, String>>,
        services: Arc<HostServices>,
    ) -> Self {
        let stdout = Capture::new(LOG_BYTES);
        let stderr = Capture::new(LOG_BYTES);
        // No preopened directories, no environment, no arguments, no sockets:
        // WASI gives a plugin clocks, randomness and captured stdio only.
        let wasi = WasiCtx::builder()
            .stdout(stdout.clone())
            .stderr(stderr.clone())
            .allow_tcp(false)
            .allow_udp(false)
            .allow_ip_name_lookup(false)
            .build();
        Invocation {
            plugin,
            deadline: Instant::now() + Duration::from_millis(limits.timeout_ms),
            limiter: MemoryLimiter { limit: limits.memory_bytes, ..Default::default() },
            limits,
            config,
            services,
            usage: Usage::default(),
            log: Vec::new(),
            log_bytes: 0,
            log_truncated: false,
            stdout,
            stderr,
            limit_hit: None,
            wasi,
            table: ResourceTable::new(),
        }
    }

    /// Counts a host call; the call past the quota traps.
    fn enter(&mut self) -> wasmtime::Result<Instant> {
        self.usage.host_calls += 1;
        if self.usage.host_calls > self.limits.host_calls {
            self.limit_hit = Some(LimitKind::HostCalls);
            return Err(wasmtime::Error::new(LimitTrap(LimitKind::HostCalls)));
        }
        Ok(Instant::now())
    }

    fn leave(&mut self, entered: Instant) {
        self.usage.host_time += entered.elapsed();
    }

    fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    pub fn push_log(&mut self, level: &str, message: &str) {
        if self.log_bytes + message.len() > LOG_BYTES {
            self.log_truncated = true;
            return;
        }
        self.log_bytes += message.len();
        self.log.push(LogLine { level: level.into(), message: message.into() });
    }

    async fn raise(&mut self, alert: host::Alert) -> Result<(), host::Error> {
        if self.usage.alerts >= self.limits.alerts {
            return Err(host::Error::QuotaExceeded(LimitKind::Alerts.describe(&self.limits)));
        }
        if alert.name.trim().is_empty() {
            return Err(host::Error::InvalidArgument("alert name must not be empty".into()));
        }
        let data: serde_json::Value = serde_json::from_str(&alert.data)
            .map_err(|e| host::Error::InvalidArgument(format!("alert data is not JSON: {e}")))?;
        let row = AlertRow {
            plugin: self.plugin.clone(),
            name: alert.name,
            severity: match alert.severity {
                host::Severity::Info => AlertSeverity::Info,
                host::Severity::Warning => AlertSeverity::Warning,
                host::Severity::Critical => AlertSeverity::Critical,
            },
            message: alert.message,
            data,
            dedup_key: alert.dedup_key,
        };
        let live = self.services.live.clone();
        live.alerts.raise(row).await.map_err(|e| host::Error::Unavailable(e.to_string()))?;
        self.usage.alerts += 1;
        Ok(())
    }

    fn read_error(&self, e: ReadError) -> host::Error {
        match e {
            ReadError::Refused(r) => host::Error::ReadOnly(r.to_string()),
            // An unknown table, view or function: the plugin named something absent.
            ReadError::Sql(m) if m.starts_with("Catalog Error") => host::Error::NotFound(m),
            ReadError::Sql(m) => host::Error::InvalidSql(m),
            ReadError::Timeout(_) => host::Error::Timeout(format!(
                "the invocation's {} ms ran out during the call; the query was cancelled",
                self.limits.timeout_ms
            )),
            ReadError::TooLarge(_) => host::Error::QuotaExceeded(e.to_string()),
            ReadError::Internal(m) => host::Error::Unavailable(m),
        }
    }

    async fn run_query(&mut self, sql: String, params: Vec<Value>) -> Result<Rows, host::Error> {
        let left_for_invocation = self.limits.rows_per_invocation.saturating_sub(self.usage.rows_read);
        if left_for_invocation == 0 {
            return Err(host::Error::RowLimit(self.limits.rows_per_invocation));
        }
        let per_query = self.limits.rows_per_query.min(left_for_invocation);
        let timeout = self.remaining();
        if timeout.is_zero() {
            return Err(host::Error::Timeout("the invocation has no time left".into()));
        }
        let read = Read {
            sql,
            params: params.iter().map(to_duck).collect(),
            max_rows: per_query as usize,
            // The rows are copied into the plugin's memory: more than its
            // whole memory cannot be useful.
            max_bytes: self.limits.memory_bytes as usize,
            timeout,
            trusted: false,
        };
        self.usage.queries += 1;
        let pool = self.services.live.pool.clone();
        let result = pool.read(read).await.map_err(|e| self.read_error(e))?;
        self.usage.rows_read += result.rows as u64;
        if result.truncated {
            return Err(host::Error::RowLimit(if per_query == self.limits.rows_per_query {
                self.limits.rows_per_query
            } else {
                self.limits.rows_per_invocation
            }));
        }
        Ok(to_rows(&result.schema, &result.batches))
    }
}

impl WasiView for Invocation {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl host::Host for Invocation {
    async fn query(&mut self, sql: String, params: Vec<Value>) -> wasmtime::Result<Result<Rows, host::Error>> {
        let entered = self.enter()?;
        let result = self.run_query(sql, params).await;
        self.leave(entered);
        Ok(result)
    }

    async fn percentile(&mut self, service: String, metric: String, p: f64, window_ms: u64) -> wasmtime::Result<Result<Option<f64>, host::Error>> {
        let entered = self.enter()?;
        let result = if !(p > 0.0 && p <= 1.0) {
            Err(host::Error::InvalidArgument(format!("p must be in (0, 1], got {p}")))
        } else if window_ms == 0 {
            Err(host::Error::InvalidArgument("window-ms must be positive".into()))
        } else {
            let live = self.services.live.clone();
            match live.lookups.percentile(&service, &metric, p, window_ms).await {
                Ok((value, hit)) => {
                    self.usage.cache_hits += hit as u64;
                    Ok(value.value)
                }
                Err(e) => Err(self.read_error(e)),
            }
        };
        self.leave(entered);
        Ok(result)
    }

    async fn error_rate(&mut self, service: String, window_ms: u64) -> wasmtime::Result<Result<host::ErrorStats, host::Error>> {
        let entered = self.enter()?;
        let result = if window_ms == 0 {
            Err(host::Error::InvalidArgument("window-ms must be positive".into()))
        } else {
            let live = self.services.live.clone();
            match live.lookups.error_rate(&service, window_ms).await {
                Ok((value, hit)) => {
                    self.usage.cache_hits += hit as u64;
                    Ok(host::ErrorStats { rate: value.value, errors: value.errors, total: value.total })
                }
                Err(e) => Err(self.read_error(e)),
            }
        };
        self.leave(entered);
        Ok(result)
    }

    async fn emit_alert(&mut self, alert: host::Alert) -> wasmtime::Result<Result<(), host::Error>> {
        let entered = self.enter()?;
        let result = self.raise(alert).await;
        self.leave(entered);
        Ok(result)
    }

    fn log(&mut self, level: host::Level, message: String) -> wasmtime::Result<()> {
        let entered = self.enter()?;
        let level = match level {
            host::Level::Trace => "trace",
            host::Level::Debug => "debug",
            host::Level::Info => "info",
            host::Level::Warn => "warn",
            host::Level::Error => "error",
        };
        self.push_log(level, &message);
        self.leave(entered);
        Ok(())
    }

    fn now_ms(&mut self) -> wasmtime::Result<u64> {
        let entered = self.enter()?;
        let now = chrono::Utc::now().timestamp_millis().max(0) as u64;
        self.leave(entered);
        Ok(now)
    }

    fn config(&mut self, key: String) -> wasmtime::Result<Option<String>> {
        let entered = self.enter()?;
        let value = self.config.get(&key).cloned();
        self.leave(entered);
        Ok(value)
    }
}

fn to_duck(value: &Value) -> DuckValue {
    match value {
        Value::Null => DuckValue::Null,
        Value::Boolean(b) => DuckValue::Boolean(*b),
        Value::Int(i) => DuckValue::BigInt(*i),
        Value::Float(f) => DuckValue::Double(*f),
        Value::Text(s) | Value::Json(s) => DuckValue::Text(s.clone()),
        Value::Timestamp(us) => DuckValue::Timestamp(duckdb::types::TimeUnit::Microsecond, *us),
        Value::Date(days) => DuckValue::Date32(*days),
    }
}

fn kind_of(data_type: &DataType) -> ColumnKind {
    match data_type {
        DataType::Boolean => ColumnKind::Boolean,
        DataType::Int8 | DataType::Int16 | DataType::Int32 | DataType::Int64 | DataType::UInt8 | DataType::UInt16 | DataType::UInt32 => ColumnKind::Int,
        DataType::Decimal128(_, 0) => ColumnKind::Int,
        DataType::Float16 | DataType::Float32 | DataType::Float64 | DataType::Decimal128(_, _) => ColumnKind::Float,
        DataType::Utf8 | DataType::LargeUtf8 | DataType::Utf8View => ColumnKind::Text,
        DataType::Timestamp(_, _) => ColumnKind::Timestamp,
        DataType::Date32 => ColumnKind::Date,
        _ => ColumnKind::Json,
    }
}

fn cell(array: &dyn Array, row: usize, kind: ColumnKind) -> Value {
    if array.is_null(row) {
        return Value::Null;
    }
    let as_json = || {
        let mut out = Vec::new();
        write_value(&mut out, array, row);
        Value::Json(String::from_utf8_lossy(&out).into_owned())
    };
    match (kind, array.data_type()) {
        (ColumnKind::Boolean, _) => Value::Boolean(array.as_boolean().value(row)),
        (ColumnKind::Int, DataType::Int8) => Value::Int(array.as_primitive::<Int8Type>().value(row) as i64),
        (ColumnKind::Int, DataType::Int16) => Value::Int(array.as_primitive::<Int16Type>().value(row) as i64),
        (ColumnKind::Int, DataType::Int32) => Value::Int(array.as_primitive::<Int32Type>().value(row) as i64),
        (ColumnKind::Int, DataType::Int64) => Value::Int(array.as_primitive::<Int64Type>().value(row)),
        (ColumnKind::Int, DataType::UInt8) => Value::Int(array.as_primitive::<UInt8Type>().value(row) as i64),
        (ColumnKind::Int, DataType::UInt16) => Value::Int(array.as_primitive::<UInt16Type>().value(row) as i64),
        (ColumnKind::Int, DataType::UInt32) => Value::Int(array.as_primitive::<UInt32Type>().value(row) as i64),
        (ColumnKind::Int, DataType::Decimal128(_, _)) => match i64::try_from(array.as_primitive::<Decimal128Type>().value(row)) {
            Ok(v) => Value::Int(v),
            Err(_) => as_json(),
        },
        (ColumnKind::Float, DataType::Float16) => Value::Float(array.as_primitive::<Float16Type>().value(row).to_f64()),
        (ColumnKind::Float, DataType::Float32) => Value::Float(array.as_primitive::<Float32Type>().value(row) as f64),
        (ColumnKind::Float, DataType::Float64) => Value::Float(array.as_primitive::<Float64Type>().value(row)),
        (ColumnKind::Float, DataType::Decimal128(_, scale)) => {
            Value::Float(array.as_primitive::<Decimal128Type>().value(row) as f64 / 10f64.powi(*scale as i32))
        }
        (ColumnKind::Text, DataType::Utf8) => Value::Text(array.as_string::<i32>().value(row).to_string()),
        (ColumnKind::Text, DataType::LargeUtf8) => Value::Text(array.as_string::<i64>().value(row).to_string()),
        (ColumnKind::Text, DataType::Utf8View) => Value::Text(array.as_string_view().value(row).to_string()),
        (ColumnKind::Timestamp, DataType::Timestamp(unit, _)) => {
            let raw = match unit {
                TimeUnit::Second => array.as_primitive::<arrow::datatypes::TimestampSecondType>().value(row).saturating_mul(1_000_000),
                TimeUnit::Millisecond => array.as_primitive::<arrow::datatypes::TimestampMillisecondType>().value(row).saturating_mul(1000),
                TimeUnit::Microsecond => array.as_primitive::<arrow::datatypes::TimestampMicrosecondType>().value(row),
                TimeUnit::Nanosecond => array.as_primitive::<arrow::datatypes::TimestampNanosecondType>().value(row) / 1000,
            };
            Value::Timestamp(raw)
        }
        (ColumnKind::Date, DataType::Date32) => Value::Date(array.as_primitive::<Date32Type>().value(row)),
        (ColumnKind::Int, DataType::UInt64) => match i64::try_from(array.as_primitive::<UInt64Type>().value(row)) {
            Ok(v) => Value::Int(v),
            Err(_) => as_json(),
        },
        _ => as_json(),
    }
}

fn to_rows(schema: &arrow::datatypes::SchemaRef, batches: &[RecordBatch]) -> Rows {
    let columns: Vec<Column> = schema
        .fields()
        .iter()
        .map(|f| Column { name: f.name().clone(), kind: kind_of(f.data_type()) })
        .collect();
    let mut rows = Vec::new();
    for batch in batches {
        for r in 0..batch.num_rows() {
            rows.push(
                batch
                    .columns()
                    .iter()
                    .zip(&columns)
                    .map(|(array, column)| cell(array.as_ref(), r, column.kind))
                    .collect(),
            );
        }
    }
    Rows { columns, rows }
}

/// Reads a trap's cause: a limit this module raised, or wasmtime's own.
pub fn trap_reason(err: &wasmtime::Error) -> TrapReason {
    if let Some(limit) = err.downcast_ref::<LimitTrap>() {
        return TrapReason::Limit(limit.0);
    }
    match err.downcast_ref::<Trap>() {
        Some(Trap::Interrupt) => TrapReason::Timeout,
        Some(Trap::StackOverflow) => TrapReason::Trap("stack overflow (recursion too deep)".into()),
        Some(Trap::UnreachableCodeReached) => TrapReason::Trap("unreachable executed (the plugin panicked or aborted)".into()),
        // Rust guests keep their stack in linear memory: recursion that runs
        // past it shows up as an out-of-bounds access, not a wasm stack overflow.
        Some(Trap::MemoryOutOfBounds) => TrapReason::Trap(
            "out-of-bounds memory access (for Rust plugins usually a stack overflow: recursion too deep)".into(),
        ),
        Some(trap) => TrapReason::Trap(trap.to_string()),
        None => TrapReason::Trap(format!("{err:#}")),
    }
}

pub enum TrapReason {
    Timeout,
    Limit(LimitKind),
    Trap(String),
}
