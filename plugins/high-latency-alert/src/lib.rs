//! Alerts when a service's latency percentile is above a threshold.
//!
//! Config: `threshold_ms` (500), `p` (0.99), `window_ms` (300000), `metric`
//! (`http.server.request.duration`, answered from histograms or spans) and
//! optionally `services` (comma-separated; default: every service seen in
//! the window). Input may override `services` and `window_ms`. Above twice
//! the threshold the alert is critical. One alert per service, deduplicated.

use duckgate_guest::{alert, config, config_or, export_plugin, json, percentile, Plugin, Severity, Value};

struct HighLatencyAlert;

impl Plugin for HighLatencyAlert {
    fn run(input: Value) -> Result<Value, String> {
        let threshold: f64 = config_or("threshold_ms", 500.0)?;
        let p: f64 = config_or("p", 0.99)?;
        let window_ms: u64 = input["window_ms"].as_u64().map(Ok).unwrap_or_else(|| config_or("window_ms", 300_000))?;
        let metric = config("metric").unwrap_or_else(|| "http.server.request.duration".into());
        let services: Vec<String> = match (input["services"].as_array(), config("services")) {
            (Some(list), _) => list.iter().filter_map(|s| s.as_str().map(String::from)).collect(),
            (None, Some(list)) => list.split(',').map(|s| s.trim().to_string()).filter(|s| !s.is_empty()).collect(),
            (None, None) => duckgate_guest::services(window_ms).map_err(|e| e.to_string())?,
        };
        let mut report = Vec::new();
        let mut alerts = 0;
        for service in &services {
            let value = percentile(service, &metric, p, window_ms).map_err(|e| e.to_string())?;
            let over = value.is_some_and(|v| v > threshold);
            if over {
                let v = value.unwrap_or_default();
                let severity = if v > 2.0 * threshold { Severity::Critical } else { Severity::Warning };
                alert("high-latency", severity)
                    .message(format!("{service}: p{} latency {v:.1} ms is above {threshold} ms", p * 100.0))
                    .data(json!({ "service": service, "percentile": p, "value_ms": v, "threshold_ms": threshold, "window_ms": window_ms }))
                    .dedup_key(format!("high-latency:{service}"))
                    .emit()
                    .map_err(|e| e.to_string())?;
                alerts += 1;
            }
            report.push(json!({ "service": service, "value_ms": value, "threshold_ms": threshold, "alert": over }));
        }
        Ok(json!({ "percentile": p, "window_ms": window_ms, "services": report, "alerts": alerts }))
    }
}

export_plugin!(HighLatencyAlert);
