//! Alerts raised by plugins, deduplicated: an alert whose dedup key matches
//! an unacknowledged alert seen within the dedup window bumps that alert's
//! count and last-seen time (and takes its newest message and data) instead
//! of adding a row, so a check that fires every tick makes one alert.
//!
//! Alerts live in the live database (`alerts_local`) but outside the
//! telemetry retention: they are the record operators act on.

use std::time::Duration;

use duckdb::Connection;
use serde::{Deserialize, Serialize};

use super::writer::{WriteError, Writer};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Info,
    Warning,
    Critical,
}

impl Severity {
    pub fn as_str(&self) -> &'static str {
        match self {
            Severity::Info => "info",
            Severity::Warning => "warning",
            Severity::Critical => "critical",
        }
    }
}

#[derive(Debug, Clone)]
pub struct AlertRow {
    pub plugin: String,
    pub name: String,
    pub severity: Severity,
    pub message: String,
    pub data: serde_json::Value,
    pub dedup_key: Option<String>,
}

/// The stored alert an emit landed in.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
pub struct Raised {
    pub id: i64,
    /// True when merged into an existing alert.
    pub merged: bool,
}

/// Raises alerts through the live writer.
#[derive(Clone)]
pub struct Alerts {
    writer: Writer,
    window: Duration,
}

impl Alerts {
    pub fn new(writer: Writer, window: Duration) -> Self {
        Alerts { writer, window }
    }

    pub async fn raise(&self, alert: AlertRow) -> Result<Raised, WriteError> {
        self.writer.alert(alert, self.window).await
    }
}

/// Runs inside the writer's transaction.
pub(super) fn store(conn: &Connection, alert: &AlertRow, window: Duration) -> duckdb::Result<Raised> {
    let now = chrono::Utc::now().timestamp_micros();
    let data = alert.data.to_string();
    if let Some(key) = &alert.dedup_key {
        let since = now - window.as_micros() as i64;
        let open: Option<i64> = conn
            .query_row(
                "SELECT id FROM alerts_local WHERE plugin = ? AND dedup_key = ? AND acked_at IS NULL \
                 AND last_seen >= make_timestamp(?::BIGINT) ORDER BY id DESC LIMIT 1",
                duckdb::params![alert.plugin, key, since],
                |r| r.get(0),
            )
            .map(Some)
            .or_else(|e| if matches!(e, duckdb::Error::QueryReturnedNoRows) { Ok(None) } else { Err(e) })?;
        if let Some(id) = open {
            conn.execute(
                "UPDATE alerts_local SET count = count + 1, last_seen = make_timestamp(?::BIGINT), \
                 message = ?, data = ?::JSON, severity = ? WHERE id = ?",
                duckdb::params![now, alert.message, data, alert.severity.as_str(), id],
            )?;
            return Ok(Raised { id, merged: true });
        }
    }
    let id = conn.query_row(
        "INSERT INTO alerts_local (plugin, name, severity, message, data, dedup_key, first_seen, last_seen, count) \
         VALUES (?, ?, ?, ?, ?::JSON, ?, make_timestamp(?::BIGINT), make_timestamp(?::BIGINT), 1) RETURNING id",
        duckdb::params![alert.plugin, alert.name, alert.severity.as_str(), alert.message, data, alert.dedup_key, now, now],
        |r| r.get(0),
    )?;
    Ok(Raised { id, merged: false })
}

/// Runs inside the writer's transaction.
pub(super) fn ack(conn: &Connection, id: i64) -> duckdb::Result<bool> {
    let now = chrono::Utc::now().timestamp_micros();
    let changed = conn.execute(
        "UPDATE alerts_local SET acked_at = coalesce(acked_at, make_timestamp(?::BIGINT)) WHERE id = ?",
        duckdb::params![now, id],
    )?;
    Ok(changed > 0)
}
