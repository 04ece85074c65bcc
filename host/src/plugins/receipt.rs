//! The record of one invocation: what it used and how it ended.

use serde::{Deserialize, Serialize};

use super::limits::LimitKind;

/// How an invocation ended.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum Outcome {
    /// `run` returned a result.
    Ok,
    /// `run` returned an error of its own.
    Error { message: String },
    /// The guest trapped (panic, unreachable, stack overflow, ...).
    Trap { reason: String },
    /// The invocation hit its wall-time limit and was interrupted.
    Timeout { limit_ms: u64 },
    /// Another limit stopped it.
    Limit { limit: LimitKind, detail: String },
}

impl Outcome {
    pub fn is_ok(&self) -> bool {
        matches!(self, Outcome::Ok)
    }

    pub fn label(&self) -> &'static str {
        match self {
            Outcome::Ok => "ok",
            Outcome::Error { .. } => "error",
            Outcome::Trap { .. } => "trap",
            Outcome::Timeout { .. } => "timeout",
            Outcome::Limit { .. } => "limit",
        }
    }
}

/// One line the plugin logged (through `log` or stdout/stderr).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct LogLine {
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Receipt {
    pub plugin: String,
    /// "manual" (HTTP or CLI) or "schedule".
    #[serde(default)]
    pub trigger: String,
    /// The sha256 of the component that ran.
    pub version: String,
    pub started_at_ms: i64,
    pub wall_ms: f64,
    /// Time to instantiate the component (a fresh store from the pool).
    #[serde(default)]
    pub instantiate_us: f64,
    /// Time spent inside host calls.
    pub host_ms: f64,
    pub host_calls: u64,
    pub queries: u64,
    pub rows_read: u64,
    pub peak_memory_bytes: u64,
    pub cache_hits: u64,
    pub alerts: u64,
    pub outcome: Outcome,
    pub log: Vec<LogLine>,
    /// Set when the log reached its size bound and later lines were dropped.
    pub log_truncated: bool,
}
