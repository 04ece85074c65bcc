//! The live telemetry store end to end: a real OpenTelemetry SDK exports to
//! the real binary over OTLP/HTTP; answers are checked against values
//! computed here from the same generated data.

use std::collections::HashSet;
use std::io::Write;
use std::process::Command;
use std::time::{Duration, Instant};

use duckgate_e2e::Gateway;
use serde_json::{json, Value};

/// DuckDB's `quantile_cont`: linear interpolation between order statistics.
fn quantile_cont(values: &[f64], p: f64) -> f64 {
    let mut v = values.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let h = (v.len() - 1) as f64 * p;
    let (lo, hi) = (h.floor() as usize, h.ceil() as usize);
    v[lo] + (h - lo as f64) * (v[hi] - v[lo])
}

/// Prometheus `histogram_quantile`, by hand: OTel buckets are (b[i-1], b[i]].
fn histogram_quantile_by_hand(values_ms: &[f64], bounds_ms: &[f64], p: f64) -> f64 {
    let mut counts = vec![0u64; bounds_ms.len() + 1];
    for v in values_ms {
        let i = bounds_ms.iter().position(|b| v <= b).unwrap_or(bounds_ms.len());
        counts[i] += 1;
    }
    let total: u64 = counts.iter().sum();
    let rank = p * total as f64;
    let mut cumulative = 0u64;
    for (i, c) in counts.iter().enumerate() {
        let before = cumulative;
        cumulative += c;
        if *c == 0 || (cumulative as f64) < rank {
            continue;
        }
        if i == bounds_ms.len() {
            return bounds_ms[i - 1];
        }
        let lower = if i == 0 { 0.0 } else { bounds_ms[i - 1] };
        return lower + (bounds_ms[i] - lower) * (rank - before as f64) / *c as f64;
    }
    unreachable!()
}

fn close(a: f64, b: f64) -> bool {
    (a - b).abs() <= 1e-6 * b.abs().max(1.0)
}

fn send_with_python_sdk(gw: &Gateway, extra: &[&str]) -> Value {
    let out = tempfile::NamedTempFile::new().unwrap();
    let script = concat!(env!("CARGO_MANIFEST_DIR"), "/otel/send.py");
    let status = Command::new("python3")
        .arg(script)
        .args(["--endpoint", &gw.url(""), "--out", out.path().to_str().unwrap()])
        .args(extra)
        .status()
        .expect("python3 runs (scripts/test installs the OpenTelemetry SDK)");
    assert!(status.success(), "the OpenTelemetry exporter script failed");
    serde_json::from_str(&std::fs::read_to_string(out.path()).unwrap()).unwrap()
}

async fn db_query(gw: &Gateway, sql: &str) -> Value {
    let (status, body) = gw.post("/db/query", &json!({ "sql": sql })).await;
    assert_eq!(status, 200, "{sql}: {body}");
    body
}

#[tokio::test(flavor = "multi_thread")]
async fn an_otel_sdk_exports_and_percentiles_and_error_rates_are_exact() {
    let gw = Gateway::builder().arg("--flush-interval-ms").arg("50").start().await;
    let generated = send_with_python_sdk(&gw, &["--gzip"]);
    let bounds_ms: Vec<f64> = generated["boundaries_s"].as_array().unwrap().iter().map(|b| b.as_f64().unwrap() * 1000.0).collect();

    for service in ["svc-0", "svc-1", "svc-2"] {
        let spans: Vec<&Value> = generated["spans"].as_array().unwrap().iter().filter(|s| s["service"] == service).collect();
        let durations: Vec<f64> = spans.iter().map(|s| s["duration_ms"].as_f64().unwrap()).collect();
        for p in [0.5, 0.95, 0.99] {
            let (status, body) = gw.get(&format!("/metrics/percentile?service={service}&metric=duration&p={p}&window_ms=600000")).await;
            assert_eq!(status, 200, "{body}");
            assert_eq!(body["source"], "spans");
            assert_eq!(body["count"], durations.len());
            let expected = quantile_cont(&durations, p);
            assert!(close(body["value"].as_f64().unwrap(), expected), "{service} p{p}: got {body}, expected {expected}");
        }
        let errors = spans.iter().filter(|s| s["is_error"] == true).count();
        let (_, rate) = gw.get(&format!("/metrics/error-rate?service={service}&window_ms=600000")).await;
        assert_eq!((rate["errors"].as_u64().unwrap(), rate["total"].as_u64().unwrap()), (errors as u64, spans.len() as u64), "{rate}");
        assert!(close(rate["value"].as_f64().unwrap(), errors as f64 / spans.len() as f64));

        // Histograms: exported twice cumulatively, counted once.
        let values_ms: Vec<f64> = generated["histograms"].as_array().unwrap().iter()
            .filter(|h| h["service"] == service).map(|h| h["value_s"].as_f64().unwrap() * 1000.0).collect();
        for p in [0.5, 0.9, 0.99] {
            let (_, body) = gw.get(&format!("/metrics/percentile?service={service}&metric=http.server.request.duration&p={p}&window_ms=600000")).await;
            assert_eq!(body["source"], "histogram", "{body}");
            assert_eq!(body["count"], values_ms.len(), "each observation counted once: {body}");
            let expected = histogram_quantile_by_hand(&values_ms, &bounds_ms, p);
            assert!(close(body["value"].as_f64().unwrap(), expected), "{service} histogram p{p}: got {body}, expected {expected}");
        }
        // The seed's view, with its column names, weighted by count.
        let beyla = db_query(&gw, &format!(
            "SELECT sum(count)::BIGINT AS n, (sum(count) FILTER (WHERE http_status_code >= 500))::BIGINT AS failed, \
             count(DISTINCT http_route) AS routes, min(latency_bucket_ms) AS smallest FROM beyla_http_metrics_local WHERE service_name = '{service}'")).await;
        let failed = generated["histograms"].as_array().unwrap().iter().filter(|h| h["service"] == service && h["http_status"] == 500).count();
        assert_eq!(beyla["rows"][0]["n"], values_ms.len());
        assert_eq!(beyla["rows"][0]["failed"].as_u64().unwrap_or(0), failed as u64);
        assert_eq!(beyla["rows"][0]["routes"], 1);
    }
    // HTTP fields from both the current and the old attribute names.
    let http = db_query(&gw, "SELECT count(*) FILTER (WHERE http_method = 'GET') AS gets, count(*) FILTER (WHERE http_method = 'POST') AS posts, \
        count(*) FILTER (WHERE http_status IS NULL OR http_route IS NULL) AS missing FROM otel_spans_local").await;
    assert_eq!(http["rows"][0]["missing"], 0);
    assert_eq!(http["rows"][0]["gets"], http["rows"][0]["posts"]);
    // Gauges land in system_metrics_local.
    let gauges = db_query(&gw, "SELECT service_name, value FROM system_metrics_local WHERE metric_name = 'app.queue.depth' ORDER BY 1 LIMIT 1").await;
    assert_eq!(gauges["rows"][0]["value"], 40.0);
    // No data is a null value, not an error.
    let (status, body) = gw.get("/metrics/percentile?service=nobody&p=0.99").await;
    assert_eq!(status, 200);
    assert!(body["value"].is_null(), "{body}");
}

fn otlp_json_span(trace_id: &str, span_id: &str, service: &str, start_ns: u128, duration_ms: u64) -> Value {
    json!({
        "resourceSpans": [{
            "resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]},
            "scopeSpans": [{"spans": [{
                "traceId": trace_id, "spanId": span_id, "name": "op", "kind": 2,
                "startTimeUnixNano": start_ns.to_string(),
                "endTimeUnixNano": (start_ns + duration_ms as u128 * 1_000_000).to_string(),
                "attributes": [{"key": "http.response.status_code", "value": {"intValue": "503"}}],
                "status": {"code": 2}
            }]}]
        }]
    })
}

fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

#[tokio::test(flavor = "multi_thread")]
async fn otlp_json_gzip_partial_success_and_bad_payloads() {
    let gw = Gateway::builder().arg("--flush-interval-ms").arg("20").start().await;
    let mut body = otlp_json_span("5b8efff798038103d269b633813fc60c", "eee19b7ec3c1b174", "json-svc", now_ns(), 12);
    let mut bad = body["resourceSpans"][0]["scopeSpans"][0]["spans"][0].clone();
    bad["traceId"] = json!("abcd");
    body["resourceSpans"][0]["scopeSpans"][0]["spans"].as_array_mut().unwrap().push(bad);
    let text = body.to_string();
    let mut gz = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    gz.write_all(text.as_bytes()).unwrap();
    let resp = gw.client.post(gw.url("/v1/traces"))
        .header("content-type", "application/json").header("content-encoding", "gzip")
        .body(gz.finish().unwrap()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let answer: Value = resp.json().await.unwrap();
    assert_eq!(answer["partialSuccess"]["rejectedSpans"], 1, "{answer}");
    assert!(answer["partialSuccess"]["errorMessage"].as_str().unwrap().contains("trace_id"));
    // Committed before the 200: visible at once.
    let stored = db_query(&gw, "SELECT service_name, duration_ms, is_error, http_status, trace_id FROM otel_spans_local").await;
    assert_eq!(stored["rows"], json!([{"service_name": "json-svc", "duration_ms": 12.0, "is_error": true, "http_status": 503, "trace_id": "5b8efff798038103d269b633813fc60c"}]));

    let garbage = gw.client.post(gw.url("/v1/traces")).header("content-type", "application/x-protobuf")
        .body(vec![0xff, 0xff, 0xff, 0x01]).send().await.unwrap();
    assert_eq!(garbage.status().as_u16(), 400);
    let wrong_type = gw.client.post(gw.url("/v1/metrics")).header("content-type", "text/plain").body("x").send().await.unwrap();
    assert_eq!(wrong_type.status().as_u16(), 415);
    let bad_gzip = gw.client.post(gw.url("/v1/traces")).header("content-type", "application/json")
        .header("content-encoding", "gzip").body("not gzip").send().await.unwrap();
    assert_eq!(bad_gzip.status().as_u16(), 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn db_query_refuses_writes_caps_rows_and_interrupts_runaways() {
    let gw = Gateway::builder().arg("--db-query-timeout").arg("1s").env("DUCKGATE_MAX_RESULT_SIZE", "10MB").start().await;
    // Rows alone do not bound memory: bytes do.
    let (status, body) = gw.post("/db/query", &json!({"sql": "SELECT repeat('x', 1000000) AS big FROM range(50)"})).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("add a LIMIT"), "{body}");
    let sequence_before = db_query(&gw, "SELECT last_value FROM duckdb_sequences() WHERE sequence_name = 'events_id_seq'").await;
    for sql in [
        "INSERT INTO events_local (timestamp, name, severity, source) VALUES (now(), 'x', 'info', 'x')",
        "DELETE FROM otel_spans_local",
        "DROP TABLE otel_spans_local",
        "CREATE TABLE x (a INT)",
        "UPDATE alerts_local SET count = 0",
        "ATTACH '/tmp/duckgate-attach.db' AS x",
        "COPY otel_spans_local TO '/tmp/duckgate-copy.csv'",
        "INSTALL httpfs",
        "LOAD json",
        "SET threads = 1",
        "PRAGMA database_list",
        "SELECT * FROM read_csv('/etc/passwd')",
        "SELECT * FROM read_parquet('/tmp/*.parquet')",
        "SELECT 1; DELETE FROM events_local",
        "CHECKPOINT",
        "SELECT * FROM checkpoint()",
        "SELECT nextval('events_id_seq') AS n",
        "SELECT * FROM query('SELECT nextval(''events_id_seq'')')",
        "SELECT * FROM add_parquet_key('k', '0123456789112345')",
        "SELECT * FROM arrow_scan(1, 2, 3)",
        "SELECT * FROM duckdb_prepared_statements()",
    ] {
        let (status, body) = gw.post("/db/query", &json!({ "sql": sql })).await;
        assert_eq!(status, 400, "{sql} must be refused: {body}");
    }
    let sequence = "SELECT last_value FROM duckdb_sequences() WHERE sequence_name = 'events_id_seq'";
    assert_eq!(db_query(&gw, sequence).await["rows"], sequence_before["rows"], "a refused nextval advanced the sequence");
    assert!(!std::path::Path::new("/tmp/duckgate-copy.csv").exists());
    assert!(!std::path::Path::new("/tmp/duckgate-attach.db").exists());

    let r = db_query(&gw, "SELECT range AS i FROM range(25000)").await;
    assert_eq!((r["count"].as_u64(), r["truncated"].as_bool()), (Some(10_000), Some(true)));
    let (_, r) = gw.post("/db/query", &json!({"sql": "SELECT range AS i FROM range(?::BIGINT)", "params": [30], "max_rows": 20})).await;
    assert_eq!((r["count"].as_u64(), r["truncated"].as_bool()), (Some(20), Some(true)), "{r}");
    let (_, r) = gw.post("/db/query", &json!({"sql": "SELECT ? AS s, ?::INT + 1 AS n", "params": ["x", 41]})).await;
    assert_eq!(r["rows"], json!([{"s": "x", "n": 42}]));
    assert_eq!(r["truncated"], false);

    let started = Instant::now();
    let (status, body) = gw.post("/db/query", &json!({"sql": "SELECT sum(hash(i)) FROM range(1000000000000) t(i)"})).await;
    assert_eq!(status, 504, "{body}");
    assert!(started.elapsed() < Duration::from_secs(8));
    let (_, health) = gw.get("/health").await;
    assert_eq!(health["db_stats"]["in_use"], 0, "the interrupted query gave its connection back: {health}");
    assert!(health["db_stats"]["timeouts"].as_u64().unwrap() >= 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn readers_are_not_blocked_by_commits() {
    let gw = Gateway::builder().arg("--flush-interval-ms").arg("10").start().await;
    // One big commit, timed from the client.
    let spans: Vec<Value> = (0..40_000u64).map(|i| json!({
        "traceId": format!("{:032x}", i + 1), "spanId": format!("{:016x}", i + 1), "name": "bulk",
        "startTimeUnixNano": (now_ns() - 1_000_000).to_string(), "endTimeUnixNano": now_ns().to_string()
    })).collect();
    let payload = json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": "bulk"}}]}, "scopeSpans": [{"spans": spans}]}]}).to_string();

    let reader = {
        let client = gw.client.clone();
        let url = gw.url("/db/query");
        tokio::spawn(async move {
            let mut latencies = Vec::new();
            let stop = Instant::now() + Duration::from_secs(6);
            while Instant::now() < stop {
                let t = Instant::now();
                let resp = client.post(&url).json(&json!({"sql": "SELECT count(*) AS n FROM events_local"})).send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                latencies.push(t.elapsed().as_secs_f64());
                tokio::time::sleep(Duration::from_millis(2)).await;
            }
            latencies
        })
    };
    let mut writes = Vec::new();
    for _ in 0..4 {
        let t = Instant::now();
        let resp = gw.client.post(gw.url("/v1/traces")).header("content-type", "application/json").body(payload.clone()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
        writes.push(t.elapsed().as_secs_f64());
    }
    let mut latencies = reader.await.unwrap();
    latencies.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let p99 = latencies[latencies.len() * 99 / 100];
    let write = writes.iter().cloned().fold(f64::MAX, f64::min);
    // Readers blocked by commits would wait about a whole write; they don't.
    assert!(p99 < write * 0.5, "reader p99 {p99:.4}s vs fastest 40k-span write {write:.4}s");
    let n = db_query(&gw, "SELECT count(*) AS n FROM otel_spans_local WHERE service_name = 'bulk'").await;
    assert_eq!(n["rows"][0]["n"], 4 * 40_000, "every acknowledged request's spans are stored (OTLP has no dedup)");
}

#[tokio::test(flavor = "multi_thread")]
async fn retention_removes_old_rows_only() {
    let gw = Gateway::builder().arg("--retention").arg("1h").arg("--retention-interval").arg("1s").start().await;
    let old = now_ns() - 2 * 3600 * 1_000_000_000;
    for (trace, start) in [("00000000000000000000000000000001", old), ("00000000000000000000000000000002", now_ns())] {
        let resp = gw.client.post(gw.url("/v1/traces")).header("content-type", "application/json")
            .body(otlp_json_span(trace, "0000000000000001", "ret", start, 5).to_string()).send().await.unwrap();
        assert_eq!(resp.status().as_u16(), 200);
    }
    let deadline = Instant::now() + Duration::from_secs(15);
    loop {
        let r = db_query(&gw, "SELECT trace_id FROM otel_spans_local ORDER BY 1").await;
        if r["rows"] == json!([{"trace_id": "00000000000000000000000000000002"}]) {
            break;
        }
        assert!(Instant::now() < deadline, "retention did not remove the old span: {r}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn kill_9_during_ingest_keeps_every_acknowledged_row() {
    let data = tempfile::tempdir().unwrap();
    let mut gw = Gateway::builder().data_dir(data.path()).arg("--flush-interval-ms").arg("20").start().await;
    let acked = std::sync::Arc::new(std::sync::Mutex::new(Vec::<String>::new()));
    let mut senders = Vec::new();
    for sender in 0..4u64 {
        let client = gw.client.clone();
        let url = gw.url("/v1/traces");
        let acked = acked.clone();
        senders.push(tokio::spawn(async move {
            for i in 0..10_000u64 {
                let trace = format!("{:016x}{:016x}", sender + 1, i + 1);
                let body = otlp_json_span(&trace, "00000000000000aa", "k9", now_ns(), 1).to_string();
                match client.post(&url).header("content-type", "application/json").body(body).send().await {
                    Ok(r) if r.status().as_u16() == 200 => acked.lock().unwrap().push(trace),
                    _ => return,
                }
            }
        }));
    }
    while acked.lock().unwrap().len() < 300 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    gw.signal_and_wait("KILL");
    for s in senders {
        let _ = s.await;
    }
    let acked: HashSet<String> = acked.lock().unwrap().iter().cloned().collect();
    drop(gw);
    let gw = Gateway::builder().data_dir(data.path()).start().await;
    let stored = db_query(&gw, "SELECT count(*) AS n FROM otel_spans_local WHERE service_name = 'k9'").await;
    assert!(stored["rows"][0]["n"].as_u64().unwrap() >= acked.len() as u64);
    let mut missing = 0;
    for chunk in acked.iter().collect::<Vec<_>>().chunks(5000) {
        let list = chunk.iter().map(|t| format!("'{t}'")).collect::<Vec<_>>().join(",");
        let (_, r) = gw.post("/db/query", &json!({"sql": format!("SELECT count(*) AS n FROM otel_spans_local WHERE trace_id IN ({list})")})).await;
        missing += chunk.len() as u64 - r["rows"][0]["n"].as_u64().unwrap();
    }
    assert_eq!(missing, 0, "{missing} of {} acknowledged spans were lost", acked.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn lookups_are_cached_and_validated() {
    let gw = Gateway::builder().arg("--metrics-cache-ttl").arg("60s").start().await;
    let resp = gw.client.post(gw.url("/v1/traces")).header("content-type", "application/json")
        .body(otlp_json_span("000000000000000000000000000000aa", "00000000000000aa", "cached", now_ns(), 7).to_string()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
    let url = "/metrics/percentile?service=cached&metric=duration&p=0.9&window_ms=60000";
    let (_, first) = gw.get(url).await;
    let (_, h1) = gw.get("/health").await;
    let (_, second) = gw.get(url).await;
    let (_, h2) = gw.get("/health").await;
    assert_eq!(first, second);
    assert_eq!(first["value"], 7.0);
    assert_eq!(h2["metrics_cache"]["hits"].as_u64().unwrap(), h1["metrics_cache"]["hits"].as_u64().unwrap() + 1);
    assert_eq!(h2["db_stats"]["queries"], h1["db_stats"]["queries"], "a cache hit never touches DuckDB");
    for bad in ["p=0", "p=1.5", "p=abc", "service=&p=0.5", "service=x&p=0.5&window_ms=0"] {
        let q = if bad.starts_with("service") { bad.to_string() } else { format!("service=x&{bad}") };
        let (status, body) = gw.get(&format!("/metrics/percentile?{q}")).await;
        assert_eq!(status, 400, "{q}: {body}");
        assert!(body["error"].is_string());
    }
    let (status, _) = gw.get("/metrics/error-rate?window_ms=1000").await;
    assert_eq!(status, 400);
}

#[tokio::test(flavor = "multi_thread")]
async fn events_slow_traces_system_metrics_and_health() {
    let gw = Gateway::builder().arg("--collector-interval").arg("300ms").start().await;
    let (status, a) = gw.post("/emit", &json!({"name": "deploy", "severity": "info", "data": {"version": "1.2.3"}})).await;
    assert_eq!(status, 200, "{a}");
    let (_, b) = gw.post("/emit", &json!({"name": "db-down", "severity": "critical"})).await;
    assert!(b["id"].as_i64().unwrap() > a["id"].as_i64().unwrap());
    let (status, _) = gw.post("/emit", &json!({"name": "x", "severity": "loud"})).await;
    assert_eq!(status, 400);
    let (status, body) = gw.post("/emit", &json!({"severity": "info"})).await;
    assert_eq!((status, body["error"].as_str().unwrap()), (400, "name must be a non-empty string"));
    let (_, events) = gw.get("/events?severity=critical").await;
    assert_eq!(events["count"], 1);
    assert_eq!(events["events"][0]["name"], "db-down");
    let (_, events) = gw.get("/events").await;
    assert_eq!(events["events"][1]["data"], json!({"version": "1.2.3"}));

    for (i, ms) in [5u64, 500, 50].iter().enumerate() {
        let body = otlp_json_span(&format!("{:032x}", i + 1), "0000000000000001", "slowsvc", now_ns(), *ms).to_string();
        gw.client.post(gw.url("/v1/traces")).header("content-type", "application/json").body(body).send().await.unwrap();
    }
    let (_, slow) = gw.get("/traces/slow?service=slowsvc&min_duration_ms=10&limit=5").await;
    let durations: Vec<f64> = slow["traces"].as_array().unwrap().iter().map(|t| t["duration_ms"].as_f64().unwrap()).collect();
    assert_eq!(durations, vec![500.0, 50.0]);

    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let (_, cpu) = gw.get("/system/cpu").await;
        let (_, mem) = gw.get("/system/memory").await;
        if cpu["value"].is_number() && mem["used_bytes"].is_number() {
            assert!(mem["total_bytes"].as_f64().unwrap() >= mem["used_bytes"].as_f64().unwrap());
            break;
        }
        assert!(Instant::now() < deadline, "the collector wrote no host metrics: {cpu} {mem}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (_, health) = gw.get("/health").await;
    assert_eq!(health["status"], "ok");
    for key in ["active_requests", "db_stats", "writer", "metrics_cache"] {
        assert!(!health[key].is_null(), "health lacks {key}: {health}");
    }
    assert!(health["writer"]["commits"].as_u64().unwrap() > 0);
}
