//! What one plugin invocation may use. Each limit has a global default (from
//! the command line) and may be overridden per plugin.

use serde::{Deserialize, Serialize};

/// No invocation may run longer than a day.
pub const MAX_TIMEOUT_MS: u64 = 24 * 3600 * 1000;

/// The limits an invocation runs under.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Limits {
    /// Linear memory, summed over all of the instance's memories.
    pub memory_bytes: u64,
    /// Wall time of one invocation, host calls included.
    pub timeout_ms: u64,
    /// Rows one query may return; more is a `row-limit` error.
    pub rows_per_query: u64,
    /// Rows all queries of one invocation may return together.
    pub rows_per_invocation: u64,
    /// Host calls of one invocation; the call past it traps.
    pub host_calls: u64,
    /// Bytes of the JSON result (and, separately, of captured output).
    pub result_bytes: u64,
    /// Alerts one invocation may raise.
    pub alerts: u64,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            timeout_ms: 5_000,
            rows_per_query: 10_000,
            rows_per_invocation: 100_000,
            host_calls: 100_000,
            result_bytes: 1 << 20,
            alerts: 100,
        }
    }
}

/// Per-plugin overrides; unset fields take the global default.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LimitOverrides {
    pub memory_bytes: Option<u64>,
    pub timeout_ms: Option<u64>,
    pub rows_per_query: Option<u64>,
    pub rows_per_invocation: Option<u64>,
    pub host_calls: Option<u64>,
    pub result_bytes: Option<u64>,
    pub alerts: Option<u64>,
}

impl LimitOverrides {
    /// The effective limits, with `ceiling` capping memory (the pooling
    /// allocator reserved no more than that per memory).
    pub fn resolve(&self, defaults: &Limits, memory_ceiling: u64) -> Limits {
        Limits {
            memory_bytes: self.memory_bytes.unwrap_or(defaults.memory_bytes).min(memory_ceiling),
            timeout_ms: self.timeout_ms.unwrap_or(defaults.timeout_ms).clamp(1, MAX_TIMEOUT_MS),
            rows_per_query: self.rows_per_query.unwrap_or(defaults.rows_per_query),
            rows_per_invocation: self.rows_per_invocation.unwrap_or(defaults.rows_per_invocation),
            host_calls: self.host_calls.unwrap_or(defaults.host_calls),
            result_bytes: self.result_bytes.unwrap_or(defaults.result_bytes),
            alerts: self.alerts.unwrap_or(defaults.alerts),
        }
    }
}

/// Which limit stopped an invocation.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum LimitKind {
    Memory,
    Time,
    RowsPerQuery,
    RowsPerInvocation,
    HostCalls,
    ResultSize,
    Alerts,
}

impl LimitKind {
    pub fn describe(&self, limits: &Limits) -> String {
        match self {
            LimitKind::Memory => format!("memory limit of {} bytes", limits.memory_bytes),
            LimitKind::Time => format!("time limit of {} ms", limits.timeout_ms),
            LimitKind::RowsPerQuery => format!("limit of {} rows per query", limits.rows_per_query),
            LimitKind::RowsPerInvocation => format!("limit of {} rows per invocation", limits.rows_per_invocation),
            LimitKind::HostCalls => format!("limit of {} host calls per invocation", limits.host_calls),
            LimitKind::ResultSize => format!("result size limit of {} bytes", limits.result_bytes),
            LimitKind::Alerts => format!("limit of {} alerts per invocation", limits.alerts),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn overrides_fall_back_to_defaults_and_memory_is_capped() {
        let o = LimitOverrides { timeout_ms: Some(100), memory_bytes: Some(1 << 40), ..Default::default() };
        let l = o.resolve(&Limits::default(), 256 << 20);
        assert_eq!(l.timeout_ms, 100);
        assert_eq!(l.memory_bytes, 256 << 20);
        assert_eq!(l.rows_per_query, 10_000);
    }
}
