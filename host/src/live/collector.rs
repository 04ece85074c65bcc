//! The built-in host collector: this machine's CPU and memory use, written
//! to `system_metrics_local` every interval (10 s by default), so alerts
//! have system data without any other agent.

use std::time::Duration;

use sysinfo::System;

use super::rows::{MetricRow, Rows};
use super::writer::Writer;

pub const CPU_METRIC: &str = "system.cpu.utilization";
pub const MEMORY_USED_METRIC: &str = "system.memory.usage";
pub const MEMORY_TOTAL_METRIC: &str = "system.memory.limit";
pub const MEMORY_UTILIZATION_METRIC: &str = "system.memory.utilization";

/// One sample of this host.
pub fn sample(system: &mut System) -> Rows {
    system.refresh_cpu_usage();
    system.refresh_memory();
    let now = chrono::Utc::now().timestamp_micros();
    let used = system.used_memory() as f64;
    let total = system.total_memory() as f64;
    let row = |name: &str, value: f64, unit: &str| MetricRow {
        timestamp_us: now,
        metric_name: name.into(),
        value,
        unit: unit.into(),
        metric_type: "gauge".into(),
        service_name: Some("duckgate-host".into()),
        attributes: "{}".into(),
    };
    Rows {
        metrics: vec![
            row(CPU_METRIC, system.global_cpu_usage() as f64, "%"),
            row(MEMORY_USED_METRIC, used, "By"),
            row(MEMORY_TOTAL_METRIC, total, "By"),
            row(MEMORY_UTILIZATION_METRIC, if total > 0.0 { used / total * 100.0 } else { 0.0 }, "%"),
        ],
        ..Rows::default()
    }
}

/// Samples forever; the first sample comes one interval after start, since
/// CPU usage needs two readings.
pub async fn run(writer: Writer, interval: Duration) {
    let mut system = match System::new() {
        Ok(system) => system,
        Err(e) => {
            tracing::warn!(error = %e, "host metrics are unavailable on this system");
            return;
        }
    };
    system.refresh_cpu_usage();
    let mut ticks = tokio::time::interval(interval);
    ticks.tick().await;
    loop {
        ticks.tick().await;
        let rows = sample(&mut system);
        if let Err(e) = writer.write(rows).await {
            tracing::warn!(error = %e, "host metrics sample not stored");
        }
    }
}
