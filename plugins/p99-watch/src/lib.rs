//! The guest SDK README's complete example, built and run by the tests.

use duckgate_guest::{alert, config_or, export_plugin, json, query, Cell, Plugin, Severity, Value};

struct P99Watch;

impl Plugin for P99Watch {
    fn run(_input: Value) -> Result<Value, String> {
        let threshold: f64 = config_or("threshold_ms", 500.0)?;
        let since_us = (duckgate_guest::now_ms() - 300_000) as i64 * 1000;
        let rows = query(
            "SELECT service_name, quantile_cont(duration_ms, 0.99) AS p99 FROM otel_spans_local \
             WHERE timestamp >= make_timestamp(?::BIGINT) GROUP BY 1 ORDER BY 1",
            &[Cell::Int(since_us)],
        )
        .map_err(|e| e.to_string())?;
        let mut slow = Vec::new();
        for row in rows.iter() {
            let service: String = row.get("service_name").map_err(|e| e.to_string())?;
            let p99: f64 = row.get("p99").map_err(|e| e.to_string())?;
            if p99 > threshold {
                alert("p99-watch", Severity::Warning)
                    .message(format!("{service} p99 {p99:.0} ms"))
                    .dedup_key(service.clone())
                    .emit()
                    .map_err(|e| e.to_string())?;
                slow.push(service);
            }
        }
        Ok(json!({ "slow": slow }))
    }
}

export_plugin!(P99Watch);
