//! Watches error rates across services and flags correlated failures.
//!
//! A service is spiking when its error rate is at least `rate_threshold`
//! (0.05) with at least `min_errors` (5) errors in `window_ms` (300000). Each
//! spiking service gets a warning; when `min_services` (3) or more spike at
//! once, one critical "correlated-errors" alert names them all, since that
//! usually means a shared dependency failed.

use duckgate_guest::{alert, config_or, error_rate, export_plugin, json, Plugin, Severity, Value};

struct ErrorCorrelation;

impl Plugin for ErrorCorrelation {
    fn run(input: Value) -> Result<Value, String> {
        let threshold: f64 = config_or("rate_threshold", 0.05)?;
        let min_errors: u64 = config_or("min_errors", 5)?;
        let min_services: usize = config_or("min_services", 3)?;
        let window_ms: u64 = input["window_ms"].as_u64().map(Ok).unwrap_or_else(|| config_or("window_ms", 300_000))?;
        let mut spiking = Vec::new();
        let mut rates = Vec::new();
        for service in duckgate_guest::services(window_ms).map_err(|e| e.to_string())? {
            let r = error_rate(&service, window_ms).map_err(|e| e.to_string())?;
            let spike = r.rate.is_some_and(|v| v >= threshold) && r.errors >= min_errors;
            if spike {
                alert("error-spike", Severity::Warning)
                    .message(format!("{service}: {} of {} requests failed", r.errors, r.total))
                    .data(json!({ "service": service, "rate": r.rate, "errors": r.errors, "total": r.total }))
                    .dedup_key(format!("error-spike:{service}"))
                    .emit()
                    .map_err(|e| e.to_string())?;
                spiking.push(service.clone());
            }
            rates.push(json!({ "service": service, "rate": r.rate, "errors": r.errors, "total": r.total, "spiking": spike }));
        }
        let correlated = spiking.len() >= min_services;
        if correlated {
            alert("correlated-errors", Severity::Critical)
                .message(format!("{} services are failing together: {}", spiking.len(), spiking.join(", ")))
                .data(json!({ "services": spiking, "window_ms": window_ms }))
                .dedup_key("correlated-errors")
                .emit()
                .map_err(|e| e.to_string())?;
        }
        Ok(json!({ "window_ms": window_ms, "services": rates, "spiking": spiking, "correlated": correlated }))
    }
}

export_plugin!(ErrorCorrelation);
