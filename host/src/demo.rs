//! `duckgate demo`: the whole gateway on its embedded defaults, exercised
//! through its own HTTP API the way a user would, with a readable account of
//! each step. It then keeps serving so the printed URLs can be tried.

use std::path::PathBuf;
use std::time::Duration;

use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceRequest;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use opentelemetry_proto::tonic::common::v1::{any_value, AnyValue, KeyValue};
use opentelemetry_proto::tonic::metrics::v1::{
    metric, AggregationTemporality, Histogram, HistogramDataPoint, Metric, ResourceMetrics, ScopeMetrics,
};
use opentelemetry_proto::tonic::resource::v1::Resource;
use opentelemetry_proto::tonic::trace::v1::{span, status, ResourceSpans, ScopeSpans, Span, Status};
use prost::Message;
use serde_json::{json, Value};

use crate::cli::print_table;
use crate::config::Config;
use crate::server;

/// The demo's services: name, typical latency (ms), share of failures.
const SERVICES: &[(&str, f64, f64)] = &[
    ("checkout", 35.0, 0.01),
    ("search", 900.0, 0.02),
    ("payments", 60.0, 0.30),
    ("inventory", 45.0, 0.25),
    ("email", 80.0, 0.35),
];

const BOUNDS_S: &[f64] = &[0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0];

fn kv(key: &str, value: any_value::Value) -> KeyValue {
    KeyValue { key: key.into(), value: Some(AnyValue { value: Some(value) }), ..Default::default() }
}

/// A small deterministic generator, so every demo run tells the same story.
struct Lcg(u64);

impl Lcg {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_mul(6364136223846793005).wrapping_add(1442695040888963407);
        ((self.0 >> 11) as f64) / ((1u64 << 53) as f64)
    }

    /// Roughly log-normal around `median`.
    fn latency(&mut self, median: f64) -> f64 {
        let z: f64 = (0..6).map(|_| self.next()).sum::<f64>() - 3.0;
        median * (0.45 * z).exp()
    }
}

fn traces(service: &str, median_ms: f64, failure: f64, rng: &mut Lcg, n: usize) -> ExportTraceServiceRequest {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let spans = (0..n)
        .map(|i| {
            let duration_ns = (rng.latency(median_ms) * 1e6) as u64;
            let start = now - (rng.next() * 120e9) as u64 - duration_ns;
            let failed = rng.next() < failure;
            let mut trace_id = [0u8; 16];
            trace_id[..8].copy_from_slice(&rng.0.to_be_bytes());
            trace_id[8..].copy_from_slice(&(i as u64).to_be_bytes());
            Span {
                trace_id: trace_id.to_vec(),
                span_id: (i as u64 + 1).to_be_bytes().to_vec(),
                name: format!("GET /{service}"),
                kind: span::SpanKind::Server as i32,
                start_time_unix_nano: start,
                end_time_unix_nano: start + duration_ns,
                attributes: vec![
                    kv("http.request.method", any_value::Value::StringValue("GET".into())),
                    kv("http.route", any_value::Value::StringValue(format!("/{service}"))),
                    kv("http.response.status_code", any_value::Value::IntValue(if failed { 500 } else { 200 })),
                ],
                status: Some(Status {
                    code: if failed { status::StatusCode::Error } else { status::StatusCode::Ok } as i32,
                    message: String::new(),
                }),
                ..Default::default()
            }
        })
        .collect();
    ExportTraceServiceRequest {
        resource_spans: vec![ResourceSpans {
            resource: Some(Resource { attributes: vec![kv("service.name", any_value::Value::StringValue(service.into()))], ..Default::default() }),
            scope_spans: vec![ScopeSpans { spans, ..Default::default() }],
            ..Default::default()
        }],
    }
}

fn histogram(service: &str, median_ms: f64, rng: &mut Lcg, n: usize) -> ExportMetricsServiceRequest {
    let now = chrono::Utc::now().timestamp_nanos_opt().unwrap_or_default() as u64;
    let mut counts = vec![0u64; BOUNDS_S.len() + 1];
    for _ in 0..n {
        let s = rng.latency(median_ms) / 1000.0;
        counts[BOUNDS_S.iter().position(|b| s <= *b).unwrap_or(BOUNDS_S.len())] += 1;
    }
    let point = HistogramDataPoint {
        start_time_unix_nano: now - 60_000_000_000,
        time_unix_nano: now,
        count: n as u64,
        bucket_counts: counts,
        explicit_bounds: BOUNDS_S.to_vec(),
        attributes: vec![kv("http.request.method", any_value::Value::StringValue("GET".into()))],
        ..Default::default()
    };
    ExportMetricsServiceRequest {
        resource_metrics: vec![ResourceMetrics {
            resource: Some(Resource { attributes: vec![kv("service.name", any_value::Value::StringValue(service.into()))], ..Default::default() }),
            scope_metrics: vec![ScopeMetrics {
                metrics: vec![Metric {
                    name: "http.client.request.duration".into(),
                    unit: "s".into(),
                    data: Some(metric::Data::Histogram(Histogram {
                        data_points: vec![point],
                        aggregation_temporality: AggregationTemporality::Delta as i32,
                    })),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }],
    }
}

struct Api {
    base: String,
    http: reqwest::Client,
}

impl Api {
    async fn post_protobuf(&self, path: &str, body: Vec<u8>) -> anyhow::Result<()> {
        let resp = self.http.post(format!("{}{path}", self.base)).header("content-type", "application/x-protobuf").body(body).send().await?;
        anyhow::ensure!(resp.status().is_success(), "{path} answered {}", resp.status());
        Ok(())
    }

    async fn json(&self, req: reqwest::RequestBuilder) -> anyhow::Result<Value> {
        let resp = req.send().await?;
        let status = resp.status();
        let body: Value = resp.json().await?;
        anyhow::ensure!(status.is_success() || status.as_u16() == 422, "{status}: {body}");
        Ok(body)
    }

    async fn get(&self, path: &str) -> anyhow::Result<Value> {
        self.json(self.http.get(format!("{}{path}", self.base))).await
    }

    async fn post(&self, path: &str, body: &Value) -> anyhow::Result<Value> {
        self.json(self.http.post(format!("{}{path}", self.base)).json(body)).await
    }
}

fn step(text: &str) {
    println!("\n== {text}");
}

pub async fn run(config: Config, plugins_dir: PathBuf) -> anyhow::Result<()> {
    let port = config.port;
    let app = server::App::new(config)?;
    let serving = tokio::spawn(server::serve(app));
    let api = Api { base: format!("http://127.0.0.1:{port}"), http: reqwest::Client::new() };
    for _ in 0..100 {
        if api.get("/health").await.is_ok() {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    println!("duckgate is serving on http://127.0.0.1:{port}");

    step("1. Feeding synthetic telemetry over OTLP/HTTP (protobuf): 5 services, 600 spans each");
    let mut rng = Lcg(42);
    for (service, median, failure) in SERVICES {
        api.post_protobuf("/v1/traces", traces(service, *median, *failure, &mut rng, 600).encode_to_vec()).await?;
        api.post_protobuf("/v1/metrics", histogram(service, *median / 2.0, &mut rng, 400).encode_to_vec()).await?;
    }
    println!("   search is slow (~900 ms); payments, inventory and email fail 25-35% of requests");

    step("2. Latency percentiles and error rates per service (GET /metrics/percentile, /metrics/error-rate)");
    let mut rows = Vec::new();
    for (service, _, _) in SERVICES {
        let mut row = vec![service.to_string()];
        for p in [0.5, 0.95, 0.99] {
            let v = api.get(&format!("/metrics/percentile?service={service}&metric=duration&p={p}&window_ms=600000")).await?;
            row.push(format!("{:.1}", v["value"].as_f64().unwrap_or(f64::NAN)));
        }
        let e = api.get(&format!("/metrics/error-rate?service={service}&window_ms=600000")).await?;
        row.push(format!("{:.1}%", e["value"].as_f64().unwrap_or(0.0) * 100.0));
        let h = api.get(&format!("/metrics/percentile?service={service}&metric=http.client.request.duration&p=0.99&window_ms=600000")).await?;
        row.push(format!("{:.1}", h["value"].as_f64().unwrap_or(f64::NAN)));
        rows.push(row);
    }
    print_table(&["SERVICE", "P50 MS", "P95 MS", "P99 MS", "ERRORS", "CLIENT P99 MS (histogram)"], &rows);

    step(&format!("3. Installing the example plugins from {} (PUT /plugins/{{name}})", plugins_dir.display()));
    let install = [
        ("high-latency-alert", "interval=30s&config.threshold_ms=500"),
        ("error-correlation", "interval=30s"),
        ("latency-report", ""),
    ];
    for (name, query) in install {
        let path = plugins_dir.join(format!("{name}.wasm"));
        let bytes = std::fs::read(&path).map_err(|e| {
            anyhow::anyhow!("cannot read {}: {e}; build the plugins with scripts/build-plugins (scripts/demo does)", path.display())
        })?;
        let body = api.json(api.http.put(format!("{}/plugins/{name}?{query}", api.base)).body(bytes)).await?;
        let schedule = body["interval_ms"].as_u64().map(|ms| format!("every {} s", ms / 1000)).unwrap_or_else(|| "on demand".into());
        println!("   {name:<20} version {}  {schedule}", &body["version"].as_str().unwrap_or("?")[..12]);
    }

    step("4. Running the alert plugins now (they also run on their schedules)");
    for name in ["high-latency-alert", "error-correlation"] {
        let r = api.post(&format!("/plugins/{name}/run"), &json!({})).await?;
        let receipt = &r["receipt"];
        println!(
            "   {name:<20} {} in {:.1} ms: host calls {}, alerts {}",
            receipt["outcome"]["status"].as_str().unwrap_or("?"),
            receipt["wall_ms"].as_f64().unwrap_or(0.0),
            receipt["host_calls"],
            receipt["alerts"]
        );
    }
    let alerts = api.get("/alerts").await?;
    let rows: Vec<Vec<String>> = alerts["alerts"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|a| {
            vec![
                a["severity"].as_str().unwrap_or("").into(),
                a["plugin"].as_str().unwrap_or("").into(),
                a["name"].as_str().unwrap_or("").into(),
                a["message"].as_str().unwrap_or("").into(),
            ]
        })
        .collect();
    println!("   alerts raised (GET /alerts):");
    print_table(&["SEVERITY", "PLUGIN", "NAME", "MESSAGE"], &rows);

    step("5. The analysis plugin's report (POST /plugins/latency-report/run)");
    let report = api.post("/plugins/latency-report/run", &json!({"window_ms": 600000})).await?;
    let rows: Vec<Vec<String>> = report["output"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| {
            vec![
                s["service"].as_str().unwrap_or("").into(),
                s["status"].as_str().unwrap_or("").into(),
                format!("{:.0}", s["p99_ms"].as_f64().unwrap_or(0.0)),
                format!("{:.1}%", s["error_rate"].as_f64().unwrap_or(0.0) * 100.0),
                s["recommendations"].as_array().and_then(|r| r.first()).and_then(Value::as_str).unwrap_or("-").chars().take(70).collect(),
            ]
        })
        .collect();
    print_table(&["SERVICE", "STATUS", "P99 MS", "ERRORS", "FIRST RECOMMENDATION"], &rows);
    println!("   summary: {}", report["output"]["summary"]);

    step("6. Snapshot the report to the local object store as Parquet, then query it back (POST /snapshot, /query)");
    let data: Vec<Value> = report["output"]["services"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|s| json!({"service": s["service"], "status": s["status"], "p99_ms": s["p99_ms"], "error_rate": s["error_rate"], "created_at": chrono::Utc::now().timestamp_millis()}))
        .collect();
    let key = format!("demo/latency-report/{}.parquet", chrono::Utc::now().timestamp_millis());
    let snap = api
        .post("/snapshot", &json!({
            "table_name": "latency_report",
            "data": data,
            "columns": [
                {"source": "service", "target": "service", "type": "VARCHAR"},
                {"source": "status", "target": "status", "type": "VARCHAR"},
                {"source": "p99_ms", "target": "p99_ms", "type": "DOUBLE"},
                {"source": "error_rate", "target": "error_rate", "type": "DOUBLE"},
                {"source": "created_at", "target": "created_at", "type": "TIMESTAMP"}
            ],
            "s3_key": key,
        }))
        .await?;
    println!("   wrote {} ({} rows, {} bytes of ZSTD Parquet)", snap["s3_key"], snap["row_count"], snap["parquet_size_bytes"]);
    let q = api
        .post("/query", &json!({
            "sql": "SELECT status, count(*) AS services, round(max(p99_ms)) AS worst_p99_ms FROM report GROUP BY status ORDER BY worst_p99_ms DESC",
            "tables": [{"name": "report", "s3_path": "demo/latency-report/*.parquet"}],
        }))
        .await?;
    let columns: Vec<String> = q["columns"].as_array().into_iter().flatten().filter_map(|c| c.as_str().map(String::from)).collect();
    let rows: Vec<Vec<String>> = q["rows"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|r| columns.iter().map(|c| r[c].to_string().trim_matches('"').to_string()).collect())
        .collect();
    let headers: Vec<&str> = columns.iter().map(String::as_str).collect();
    print_table(&headers, &rows);

    step("Try it yourself");
    let base = &api.base;
    println!("   curl {base}/health");
    println!("   curl '{base}/metrics/percentile?service=search&metric=duration&p=0.99'");
    println!("   curl -X POST {base}/db/query -d '{{\"sql\": \"SELECT service_name, count(*) FROM otel_spans_local GROUP BY 1\"}}'");
    println!("   curl -X POST {base}/plugins/latency-report/run -d '{{}}'");
    println!("   duckgate plugin ls        duckgate alerts --follow");
    println!("\nServing until Ctrl-C.");
    serving.await??;
    Ok(())
}
