//! Write duckgate plugins in plain Rust.
//!
//! A plugin implements [`Plugin`] and names its type in [`export_plugin!`].
//! From `run` it may query live telemetry ([`query`]), ask for percentiles
//! and error rates ([`percentile`], [`error_rate`]), raise alerts
//! ([`alert`]), log ([`info`], [`warn`], ...) and read its own settings
//! ([`config`]). Everything else a plugin might reach for (files, network,
//! environment) does not exist inside the sandbox.
//!
//! ```ignore
//! use duckgate_guest::{export_plugin, json, percentile, Plugin, Severity, Value};
//!
//! struct SlowCheckout;
//!
//! impl Plugin for SlowCheckout {
//!     fn run(_input: Value) -> Result<Value, String> {
//!         let p99 = percentile("checkout", "duration", 0.99, 300_000).map_err(|e| e.to_string())?;
//!         if p99.unwrap_or(0.0) > 500.0 {
//!             duckgate_guest::alert("slow-checkout", Severity::Warning)
//!                 .message(format!("checkout p99 is {:.0} ms", p99.unwrap_or(0.0)))
//!                 .emit()
//!                 .map_err(|e| e.to_string())?;
//!         }
//!         Ok(json!({ "p99_ms": p99 }))
//!     }
//! }
//!
//! export_plugin!(SlowCheckout);
//! ```

use std::fmt;

pub use serde_json::{json, Value};

// Lets the generated bindings name this crate the same way from inside it
// and from the plugin crates that expand `export_plugin!`.
extern crate self as duckgate_guest;

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../wit",
        world: "duckgate:plugin/plugin",
        pub_export_macro: true,
        export_macro_name: "__export_plugin_world",
        default_bindings_module: "duckgate_guest::bindings",
        runtime_path: "duckgate_guest::__rt",
    });
}

#[doc(hidden)]
pub use wit_bindgen::rt as __rt;

use bindings::duckgate::plugin::host;

pub use host::{Column, ColumnKind, Level, Severity, Value as Cell};

/// What a host call can fail with (`Debug` and `Display` name the case).
pub use host::Error;



/// A plugin: one entry point from JSON input to JSON output.
pub trait Plugin {
    /// `input` is `{}` for a scheduled run, the caller's JSON for an
    /// on-demand one. An `Err` is reported to the operator as the run's error.
    fn run(input: Value) -> Result<Value, String>;
}

/// Exports a [`Plugin`] type as the component's `run`. Use it once per plugin.
#[macro_export]
macro_rules! export_plugin {
    ($plugin:ty) => {
        const _: () = {
            struct __DuckgatePlugin;
            impl $crate::bindings::Guest for __DuckgatePlugin {
                fn run(input: ::std::string::String) -> ::std::result::Result<::std::string::String, ::std::string::String> {
                    $crate::__run::<$plugin>(input)
                }
            }
            $crate::bindings::__export_plugin_world!(__DuckgatePlugin with_types_in $crate::bindings);
        };
    };
}

#[doc(hidden)]
pub fn __run<P: Plugin>(input: String) -> Result<String, String> {
    let input = if input.trim().is_empty() {
        Value::Object(Default::default())
    } else {
        serde_json::from_str(&input).map_err(|e| format!("input is not JSON: {e}"))?
    };
    let output = P::run(input)?;
    serde_json::to_string(&output).map_err(|e| format!("output is not serializable: {e}"))
}

/// A query parameter or result value.
impl From<i64> for Cell {
    fn from(v: i64) -> Self {
        Cell::Int(v)
    }
}
impl From<i32> for Cell {
    fn from(v: i32) -> Self {
        Cell::Int(v as i64)
    }
}
impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Float(v)
    }
}
impl From<bool> for Cell {
    fn from(v: bool) -> Self {
        Cell::Boolean(v)
    }
}
impl From<&str> for Cell {
    fn from(v: &str) -> Self {
        Cell::Text(v.to_string())
    }
}
impl From<String> for Cell {
    fn from(v: String) -> Self {
        Cell::Text(v)
    }
}

/// A query result.
pub struct Rows {
    inner: host::Rows,
}

impl Rows {
    pub fn columns(&self) -> &[Column] {
        &self.inner.columns
    }

    pub fn len(&self) -> usize {
        self.inner.rows.len()
    }

    pub fn is_empty(&self) -> bool {
        self.inner.rows.is_empty()
    }

    pub fn iter(&self) -> impl Iterator<Item = Row<'_>> {
        self.inner.rows.iter().map(move |cells| Row { columns: &self.inner.columns, cells })
    }

    /// The first row, if any.
    pub fn first(&self) -> Option<Row<'_>> {
        self.iter().next()
    }
}

/// One row of a [`Rows`]; read cells by column name with [`Row::get`].
pub struct Row<'a> {
    columns: &'a [Column],
    cells: &'a [Cell],
}

/// Why a cell could not be read as the requested type.
#[derive(Debug, Clone, PartialEq)]
pub struct CellError(pub String);

impl fmt::Display for CellError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CellError {}

impl<'a> Row<'a> {
    /// The cell of column `name` as `T`: `row.get::<f64>("p99")`. Ask for
    /// `Option<T>` when the cell may be NULL.
    pub fn get<T: FromCell>(&self, name: &str) -> Result<T, CellError> {
        let i = self
            .columns
            .iter()
            .position(|c| c.name == name)
            .ok_or_else(|| CellError(format!("no column named {name:?}")))?;
        T::from_cell(&self.cells[i]).map_err(|why| CellError(format!("column {name:?}: {why}")))
    }

    pub fn cells(&self) -> &[Cell] {
        self.cells
    }
}

/// Types a cell converts into.
pub trait FromCell: Sized {
    fn from_cell(cell: &Cell) -> Result<Self, String>;
}

impl FromCell for f64 {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        match cell {
            Cell::Float(v) => Ok(*v),
            Cell::Int(v) => Ok(*v as f64),
            other => Err(format!("expected a number, got {other:?}")),
        }
    }
}

impl FromCell for i64 {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        match cell {
            Cell::Int(v) | Cell::Timestamp(v) => Ok(*v),
            Cell::Float(v) if v.fract() == 0.0 => Ok(*v as i64),
            other => Err(format!("expected an integer, got {other:?}")),
        }
    }
}

impl FromCell for u64 {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        let v = i64::from_cell(cell)?;
        u64::try_from(v).map_err(|_| format!("expected a non-negative integer, got {v}"))
    }
}

impl FromCell for bool {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        match cell {
            Cell::Boolean(v) => Ok(*v),
            other => Err(format!("expected a boolean, got {other:?}")),
        }
    }
}

impl FromCell for String {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        match cell {
            Cell::Text(v) | Cell::Json(v) => Ok(v.clone()),
            other => Err(format!("expected text, got {other:?}")),
        }
    }
}

impl<T: FromCell> FromCell for Option<T> {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        match cell {
            Cell::Null => Ok(None),
            other => T::from_cell(other).map(Some),
        }
    }
}

/// Any cell as JSON (timestamps as microseconds, dates as days).
impl FromCell for Value {
    fn from_cell(cell: &Cell) -> Result<Self, String> {
        Ok(match cell {
            Cell::Null => Value::Null,
            Cell::Boolean(v) => Value::Bool(*v),
            Cell::Int(v) | Cell::Timestamp(v) => Value::from(*v),
            Cell::Date(v) => Value::from(*v),
            Cell::Float(v) => serde_json::Number::from_f64(*v).map(Value::Number).unwrap_or(Value::Null),
            Cell::Text(v) => Value::String(v.clone()),
            Cell::Json(v) => serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone())),
        })
    }
}

/// Runs one read-only SQL statement over live telemetry; `?` placeholders
/// bind `params` in order.
pub fn query(sql: &str, params: &[Cell]) -> Result<Rows, Error> {
    host::query(sql, params).map(|inner| Rows { inner })
}

/// Every service with spans or histogram data in the last `window_ms`
/// milliseconds, sorted.
pub fn services(window_ms: u64) -> Result<Vec<String>, Error> {
    let since_us = (now_ms().saturating_sub(window_ms) * 1000) as i64;
    let rows = query(
        "SELECT service_name FROM otel_spans_local WHERE timestamp >= make_timestamp(?::BIGINT) \
         UNION SELECT service_name FROM histogram_buckets_local WHERE timestamp >= make_timestamp(?::BIGINT) \
         ORDER BY 1",
        &[Cell::Int(since_us), Cell::Int(since_us)],
    )?;
    rows.iter()
        .map(|r| r.get::<String>("service_name").map_err(|e| Error::Unavailable(e.to_string())))
        .collect()
}

/// The `p`-quantile of `metric` for `service` over the last `window_ms`
/// milliseconds, in milliseconds; `None` without data.
pub fn percentile(service: &str, metric: &str, p: f64, window_ms: u64) -> Result<Option<f64>, Error> {
    host::percentile(service, metric, p, window_ms)
}

pub use host::ErrorStats;

/// Failed share of `service`'s requests over the last `window_ms` milliseconds.
pub fn error_rate(service: &str, window_ms: u64) -> Result<ErrorStats, Error> {
    host::error_rate(service, window_ms)
}

/// Starts an alert; finish with [`AlertBuilder::emit`].
pub fn alert(name: &str, severity: Severity) -> AlertBuilder {
    AlertBuilder {
        alert: host::Alert {
            name: name.to_string(),
            severity,
            message: String::new(),
            data: "{}".to_string(),
            dedup_key: None,
        },
    }
}

pub struct AlertBuilder {
    alert: host::Alert,
}

impl AlertBuilder {
    pub fn message(mut self, message: impl Into<String>) -> Self {
        self.alert.message = message.into();
        self
    }

    /// Structured details; should be a JSON object.
    pub fn data(mut self, data: Value) -> Self {
        self.alert.data = data.to_string();
        self
    }

    /// Alerts with the same key within the host's dedup window are merged.
    pub fn dedup_key(mut self, key: impl Into<String>) -> Self {
        self.alert.dedup_key = Some(key.into());
        self
    }

    pub fn emit(self) -> Result<(), Error> {
        host::emit_alert(&self.alert)
    }
}

pub fn log(level: Level, message: &str) {
    host::log(level, message)
}

pub fn debug(message: &str) {
    host::log(Level::Debug, message)
}

pub fn info(message: &str) {
    host::log(Level::Info, message)
}

pub fn warn(message: &str) {
    host::log(Level::Warn, message)
}

pub fn error(message: &str) {
    host::log(Level::Error, message)
}

/// Milliseconds since the Unix epoch.
pub fn now_ms() -> u64 {
    host::now_ms()
}

/// The plugin's own setting `key`, if set.
pub fn config(key: &str) -> Option<String> {
    host::config(key)
}

/// The setting `key` parsed as `T`, or `default` when unset. A set value
/// that does not parse is an error naming the key.
pub fn config_or<T: std::str::FromStr>(key: &str, default: T) -> Result<T, String> {
    match config(key) {
        None => Ok(default),
        Some(text) => text
            .trim()
            .parse()
            .map_err(|_| format!("config {key} = {text:?} is not valid")),
    }
}
