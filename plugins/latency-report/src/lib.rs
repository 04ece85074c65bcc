//! An on-demand analysis: per-service p50/p95/p99 and error rate, a status
//! (healthy, warning, critical) and recommendations, as JSON.
//!
//! Input: `{"window_ms": 300000, "services": [..]}`, both optional. Config:
//! `warn_p99_ms` (500), `critical_p99_ms` (1000), `warn_error_rate` (0.01),
//! `critical_error_rate` (0.05).

use duckgate_guest::{config_or, error_rate, export_plugin, json, percentile, Plugin, Value};

struct LatencyReport;

const METRIC: &str = "http.server.request.duration";

impl Plugin for LatencyReport {
    fn run(input: Value) -> Result<Value, String> {
        let warn_p99: f64 = config_or("warn_p99_ms", 500.0)?;
        let crit_p99: f64 = config_or("critical_p99_ms", 1000.0)?;
        let warn_rate: f64 = config_or("warn_error_rate", 0.01)?;
        let crit_rate: f64 = config_or("critical_error_rate", 0.05)?;
        let window_ms = input["window_ms"].as_u64().unwrap_or(300_000);
        let services: Vec<String> = match input["services"].as_array() {
            Some(list) => list.iter().filter_map(|s| s.as_str().map(String::from)).collect(),
            None => duckgate_guest::services(window_ms).map_err(|e| e.to_string())?,
        };
        let mut report = Vec::new();
        let (mut healthy, mut warning, mut critical) = (0, 0, 0);
        for service in &services {
            let p = |q: f64| percentile(service, METRIC, q, window_ms).map_err(|e| e.to_string());
            let (p50, p95, p99) = (p(0.5)?, p(0.95)?, p(0.99)?);
            let errors = error_rate(service, window_ms).map_err(|e| e.to_string())?;
            let rate = errors.rate.unwrap_or(0.0);
            let p99v = p99.unwrap_or(0.0);
            let mut recommendations = Vec::new();
            if p99v > crit_p99 {
                recommendations.push(format!("p99 {p99v:.0} ms is above {crit_p99} ms: look at the slowest traces (GET /traces/slow?service={service}) and the service's dependencies"));
            } else if p99v > warn_p99 {
                recommendations.push(format!("p99 {p99v:.0} ms is above {warn_p99} ms: check recent deploys and saturation"));
            }
            if rate >= crit_rate {
                recommendations.push(format!("{:.1}% of requests fail: check the error spans and roll back recent changes", rate * 100.0));
            } else if rate >= warn_rate {
                recommendations.push(format!("{:.1}% of requests fail: watch the trend", rate * 100.0));
            }
            if p99.is_some() && p50.is_some_and(|m| m > 0.0 && p99v / m > 10.0) {
                recommendations.push("p99 is over 10x p50: a long tail, often a slow dependency or lock contention".into());
            }
            let status = if p99v > crit_p99 || rate >= crit_rate {
                critical += 1;
                "critical"
            } else if p99v > warn_p99 || rate >= warn_rate {
                warning += 1;
                "warning"
            } else {
                healthy += 1;
                "healthy"
            };
            report.push(json!({
                "service": service,
                "p50_ms": p50, "p95_ms": p95, "p99_ms": p99,
                "error_rate": errors.rate, "errors": errors.errors, "requests": errors.total,
                "status": status,
                "recommendations": recommendations,
            }));
        }
        Ok(json!({
            "generated_at_ms": duckgate_guest::now_ms(),
            "window_ms": window_ms,
            "services": report,
            "summary": { "healthy": healthy, "warning": warning, "critical": critical },
        }))
    }
}

export_plugin!(LatencyReport);
