//! Plugins end to end: real components built by scripts/build-plugins, run
//! by the real binary's wasmtime against really ingested telemetry, driven
//! over HTTP and through the CLI.

use std::path::PathBuf;
use std::process::Command;
use std::time::{Duration, Instant};

use duckgate_e2e::{duckgate_binary, Gateway};
use serde_json::{json, Value};

fn plugin(name: &str) -> Vec<u8> {
    let path = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/plugins")).join(format!("{name}.wasm"));
    std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}; build the plugins first with scripts/build-plugins (scripts/test does)", path.display()))
}

async fn push(gw: &Gateway, name: &str, file: &str, query: &str) -> (u16, Value) {
    let resp = gw.client.put(gw.url(&format!("/plugins/{name}?{query}"))).body(plugin(file)).send().await.unwrap();
    let status = resp.status().as_u16();
    (status, resp.json().await.unwrap())
}

async fn run(gw: &Gateway, name: &str, input: Value) -> (u16, Value) {
    gw.post(&format!("/plugins/{name}/run"), &input).await
}

fn now_ns() -> u128 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_nanos()
}

/// Spans for a service: `n` spans of `ms` milliseconds, `failing` of them errors.
async fn ingest(gw: &Gateway, service: &str, n: usize, ms: u64, failing: usize) {
    let spans: Vec<Value> = (0..n).map(|i| {
        let start = now_ns() - 5_000_000_000 - i as u128 * 1_000_000;
        json!({
            "traceId": format!("{:016x}{:016x}", service.len() as u64 * 7919 + ms, i + 1),
            "spanId": format!("{:016x}", i + 1), "name": "req", "kind": 2,
            "startTimeUnixNano": start.to_string(),
            "endTimeUnixNano": (start + ms as u128 * 1_000_000).to_string(),
            "status": {"code": if i < failing { 2 } else { 1 }}
        })
    }).collect();
    let body = json!({"resourceSpans": [{"resource": {"attributes": [{"key": "service.name", "value": {"stringValue": service}}]}, "scopeSpans": [{"spans": spans}]}]});
    let resp = gw.client.post(gw.url("/v1/traces")).header("content-type", "application/json").body(body.to_string()).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 200);
}

async fn alerts(gw: &Gateway, query: &str) -> Vec<Value> {
    let (status, body) = gw.get(&format!("/alerts?{query}")).await;
    assert_eq!(status, 200, "{body}");
    body["alerts"].as_array().unwrap().clone()
}

#[tokio::test(flavor = "multi_thread")]
async fn example_plugins_alert_and_report_on_real_telemetry() {
    let gw = Gateway::start().await;
    ingest(&gw, "checkout", 50, 20, 0).await;
    ingest(&gw, "search", 50, 1500, 0).await;
    for failing in ["payments", "ledger", "email"] {
        ingest(&gw, failing, 40, 30, 20).await;
    }

    let (status, body) = push(&gw, "high-latency-alert", "high-latency-alert", "config.threshold_ms=500").await;
    assert_eq!(status, 201, "{body}");
    let (status, out) = run(&gw, "high-latency-alert", json!({})).await;
    assert_eq!(status, 200, "{out}");
    let report = out["output"]["services"].as_array().unwrap();
    let flagged: Vec<&str> = report.iter().filter(|s| s["alert"] == true).map(|s| s["service"].as_str().unwrap()).collect();
    assert_eq!(flagged, vec!["search"]);
    assert_eq!(out["receipt"]["alerts"], 1);
    assert!(out["receipt"]["host_calls"].as_u64().unwrap() >= 6);
    let raised = alerts(&gw, "plugin=high-latency-alert").await;
    assert_eq!(raised.len(), 1);
    assert_eq!((raised[0]["name"].as_str(), raised[0]["severity"].as_str()), (Some("high-latency"), Some("critical")));
    assert_eq!(raised[0]["data"]["service"], "search");
    // The same condition again merges into the same alert.
    run(&gw, "high-latency-alert", json!({})).await;
    let raised = alerts(&gw, "plugin=high-latency-alert").await;
    assert_eq!((raised.len(), raised[0]["count"].as_i64()), (1, Some(2)));

    push(&gw, "error-correlation", "error-correlation", "").await;
    let (_, out) = run(&gw, "error-correlation", json!({})).await;
    let mut spiking: Vec<&str> = out["output"]["spiking"].as_array().unwrap().iter().map(|s| s.as_str().unwrap()).collect();
    spiking.sort();
    assert_eq!(spiking, vec!["email", "ledger", "payments"]);
    assert_eq!(out["output"]["correlated"], true);
    let critical = alerts(&gw, "plugin=error-correlation&severity=critical").await;
    assert_eq!(critical.len(), 1);
    assert_eq!(critical[0]["name"], "correlated-errors");

    push(&gw, "latency-report", "latency-report", "").await;
    let (status, out) = run(&gw, "latency-report", json!({"window_ms": 600000})).await;
    assert_eq!(status, 200, "{out}");
    let by_service = |name: &str| out["output"]["services"].as_array().unwrap().iter().find(|s| s["service"] == name).cloned().unwrap();
    assert_eq!(by_service("checkout")["status"], "healthy");
    assert_eq!(by_service("checkout")["p99_ms"], 20.0);
    assert_eq!(by_service("search")["status"], "critical");
    assert_eq!(by_service("payments")["status"], "critical");
    assert_eq!(by_service("payments")["error_rate"], 0.5);
    assert!(!by_service("search")["recommendations"].as_array().unwrap().is_empty());
    assert_eq!(out["output"]["summary"], json!({"healthy": 1, "warning": 0, "critical": 4}));
    // The second identical lookups came from the cache.
    let (_, again) = run(&gw, "latency-report", json!({"window_ms": 600000})).await;
    assert!(again["receipt"]["cache_hits"].as_u64().unwrap() > 0, "{}", again["receipt"]);

    // Acknowledging an alert.
    let id = critical[0]["id"].as_i64().unwrap();
    let (status, _) = gw.post(&format!("/alerts/{id}/ack"), &json!({})).await;
    assert_eq!(status, 200);
    assert!(alerts(&gw, "plugin=error-correlation").await[0]["acked_at"].is_string());
    let (status, _) = gw.post("/alerts/999999/ack", &json!({})).await;
    assert_eq!(status, 404);
}

#[tokio::test(flavor = "multi_thread")]
async fn hostile_plugins_hit_their_limits_and_the_host_keeps_serving() {
    let gw = Gateway::builder().arg("--plugin-timeout").arg("1s").arg("--plugin-host-calls").arg("10000").start().await;
    let (status, body) = push(&gw, "hostile", "hostile", "").await;
    assert_eq!(status, 201, "{body}");
    let outcome = |v: &Value| v["receipt"]["outcome"].clone();

    let started = Instant::now();
    let (status, r) = run(&gw, "hostile", json!({"attack": "loop"})).await;
    assert_eq!(status, 422);
    assert_eq!(outcome(&r)["status"], "timeout", "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));
    let (status, _) = gw.get("/health").await;
    assert_eq!(status, 200, "the host keeps serving");

    // Waiting in WASI is bounded by the same limit.
    let started = Instant::now();
    let (status, r) = run(&gw, "hostile", json!({"attack": "sleep"})).await;
    assert_eq!((status, outcome(&r)["status"].as_str()), (422, Some("timeout")), "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));

    // A query the plugin waits on is cancelled in DuckDB at the deadline.
    let started = Instant::now();
    let (status, r) = run(&gw, "hostile", json!({"attack": "slow-query"})).await;
    assert_eq!(status, 422);
    assert!(["timeout", "error"].contains(&outcome(&r)["status"].as_str().unwrap()), "{r}");
    assert!(r.to_string().contains("imeout"), "{r}");
    assert!(started.elapsed() < Duration::from_secs(5));
    // The cancelled query gives its connection back once DuckDB has stopped
    // (moments after the invocation ended; a query left running would hold it
    // for hours).
    let stop_by = Instant::now() + Duration::from_secs(3);
    loop {
        let (_, health) = gw.get("/health").await;
        if health["db_stats"]["in_use"] == 0 {
            break;
        }
        assert!(Instant::now() < stop_by, "the DuckDB query did not stop: {health}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }

    let (_, r) = run(&gw, "hostile", json!({"attack": "alloc"})).await;
    assert_eq!((outcome(&r)["status"].as_str(), outcome(&r)["limit"].as_str()), (Some("limit"), Some("memory")), "{r}");
    assert!(r["receipt"]["peak_memory_bytes"].as_u64().unwrap() <= 64 << 20);

    let (_, r) = run(&gw, "hostile", json!({"attack": "recurse"})).await;
    assert_eq!(outcome(&r)["status"], "trap", "{r}");
    assert!(outcome(&r)["reason"].as_str().unwrap().contains("stack overflow"), "{r}");
    let (status, _) = run(&gw, "hostile", json!({"attack": "noop"})).await;
    assert_eq!(status, 200, "a trapped instance leaves nothing behind");

    let (_, r) = run(&gw, "hostile", json!({"attack": "calls"})).await;
    assert_eq!((outcome(&r)["status"].as_str(), outcome(&r)["limit"].as_str()), (Some("limit"), Some("host_calls")), "{r}");
    assert_eq!(r["receipt"]["host_calls"], 10_001);

    let (_, r) = run(&gw, "hostile", json!({"attack": "rows", "rows": 20000})).await;
    assert_eq!(outcome(&r)["status"], "error");
    assert!(outcome(&r)["message"].as_str().unwrap().contains("RowLimit(10000)"), "{r}");
    let (status, r) = run(&gw, "hostile", json!({"attack": "rows", "rows": 500})).await;
    assert_eq!((status, r["output"]["rows"].as_u64()), (200, Some(500)));

    let (_, r) = run(&gw, "hostile", json!({"attack": "write"})).await;
    assert!(outcome(&r)["message"].as_str().unwrap().contains("ReadOnly"), "{r}");

    let (_, r) = run(&gw, "hostile", json!({"attack": "missing-table"})).await;
    assert!(outcome(&r)["message"].as_str().unwrap().contains("NotFound"), "{r}");

    let (_, r) = run(&gw, "hostile", json!({"attack": "file"})).await;
    assert_eq!(outcome(&r)["status"], "error");
    assert!(outcome(&r)["message"].as_str().unwrap().starts_with("file:"), "{r}");

    let (_, r) = run(&gw, "hostile", json!({"attack": "env"})).await;
    assert_eq!(r["output"]["vars"], 0, "no environment: {r}");

    let (status, r) = run(&gw, "hostile", json!({"attack": "print"})).await;
    assert_eq!(status, 200);
    let log = r["receipt"]["log"].as_array().unwrap();
    assert!(log.iter().any(|l| l["level"] == "stdout" && l["message"] == "hello from the sandbox"), "{log:?}");
    assert!(log.iter().any(|l| l["level"] == "stderr" && l["message"] == "and to stderr"), "{log:?}");

    let (_, r) = run(&gw, "hostile", json!({"attack": "panic"})).await;
    assert_eq!(outcome(&r)["status"], "trap", "{r}");

    let (_, r) = run(&gw, "hostile", json!({"attack": "big-output", "bytes": 2_000_000})).await;
    assert_eq!(outcome(&r)["limit"], "result_size", "{r}");

    // Every run was recorded.
    let (_, runs) = gw.get("/plugins/hostile/runs?limit=100").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 16);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_hundred_concurrent_invocations_finish_or_get_503() {
    let gw = Gateway::builder().arg("--plugin-concurrency").arg("5").arg("--plugin-queue").arg("20").start().await;
    push(&gw, "busy", "hostile", "config.attack=busy&config.ms=50").await;
    let mut tasks = Vec::new();
    for _ in 0..100 {
        let client = gw.client.clone();
        let url = gw.url("/plugins/busy/run");
        tasks.push(tokio::spawn(async move {
            let resp = tokio::time::timeout(Duration::from_secs(60), client.post(url).json(&json!({})).send()).await;
            resp.expect("no invocation hangs").unwrap().status().as_u16()
        }));
    }
    let mut ok = 0;
    let mut busy = 0;
    for t in tasks {
        match t.await.unwrap() {
            200 => ok += 1,
            503 => busy += 1,
            other => panic!("unexpected status {other}"),
        }
    }
    assert_eq!(ok + busy, 100);
    assert!(ok >= 25, "at least running + queued succeed: {ok}");
    let (_, runs) = gw.get("/plugins/busy").await;
    assert_eq!(runs["counters"]["runs"], ok, "every admitted run is recorded");
}

#[tokio::test(flavor = "multi_thread")]
async fn uploads_are_validated_and_nothing_bad_is_stored() {
    let gw = Gateway::builder().env("DUCKGATE_ADMIN_TOKEN", "s3cret-token").arg("--max-plugin-size").arg("2MB").start().await;
    let put = |name: &str, body: Vec<u8>, token: Option<&str>| {
        let mut req = gw.client.put(gw.url(&format!("/plugins/{name}"))).body(body);
        if let Some(t) = token {
            req = req.bearer_auth(t);
        }
        req.send()
    };
    let resp = put("x", plugin("latency-report"), None).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    let resp = put("x", plugin("latency-report"), Some("wrong")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
    for (body, why) in [
        (b"definitely not wasm".to_vec(), "not WebAssembly"),
        (vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00, 0xff], "component"),
        (vec![0u8; 3_000_000], "limit"),
        (wrong_world_component(), "world"),
    ] {
        let resp = put("bad", body, Some("s3cret-token")).await.unwrap();
        let status = resp.status().as_u16();
        let answer: Value = resp.json().await.unwrap();
        assert_eq!(status, 400, "{answer}");
        assert!(answer["error"].as_str().unwrap().contains(why), "expected {why:?} in {answer}");
    }
    let (_, list) = gw.get("/plugins").await;
    assert_eq!(list["plugins"], json!([]));
    let blobs = std::fs::read_dir(gw.data_dir.join("plugins/blobs")).unwrap().count();
    assert_eq!(blobs, 0, "nothing stored");
    let resp = put("Bad Name", plugin("latency-report"), Some("s3cret-token")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 400);
    let resp = put("ok", plugin("latency-report"), Some("s3cret-token")).await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let resp = gw.client.delete(gw.url("/plugins/ok")).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 401);
}

/// A valid component that does not export duckgate's `run`: `(component)`.
fn wrong_world_component() -> Vec<u8> {
    vec![0x00, 0x61, 0x73, 0x6d, 0x0d, 0x00, 0x01, 0x00]
}

#[tokio::test(flavor = "multi_thread")]
async fn plugins_schedules_history_and_alerts_survive_restarts_without_recompiling() {
    let data = tempfile::tempdir().unwrap();
    let gw = Gateway::builder().data_dir(data.path()).start().await;
    ingest(&gw, "slowpoke", 20, 2000, 0).await;
    let (status, _) = push(&gw, "hla", "high-latency-alert", "config.threshold_ms=100&interval=1h&timeout=3s").await;
    assert_eq!(status, 201);
    run(&gw, "hla", json!({})).await;
    let (_, before) = gw.get("/plugins/hla").await;
    drop(gw);

    let mut gw = Gateway::builder().data_dir(data.path()).start().await;
    let (_, after) = gw.get("/plugins/hla").await;
    for key in ["version", "versions", "interval_ms", "config", "limits", "counters"] {
        assert_eq!(after[key], before[key], "{key} survives a restart");
    }
    assert_eq!(after["limits"]["timeout_ms"], 3000);
    let (_, list) = gw.get("/plugins").await;
    assert_eq!(list["runtime"]["compiled_fresh"], 0, "no recompilation: {}", list["runtime"]);
    assert_eq!(list["runtime"]["loaded_from_disk"], 1);
    assert!(after["next_run_at_ms"].as_i64().unwrap() > 0, "the schedule is running again");
    assert_eq!(alerts(&gw, "plugin=hla").await.len(), 1);
    run(&gw, "hla", json!({})).await;

    gw.signal_and_wait("KILL");
    let gw = Gateway::builder().data_dir(data.path()).start().await;
    let (_, runs) = gw.get("/plugins/hla/runs").await;
    assert_eq!(runs["runs"].as_array().unwrap().len(), 2, "both runs survive kill -9");
    assert_eq!(alerts(&gw, "plugin=hla").await[0]["count"], 2);
    let (_, list) = gw.get("/plugins").await;
    assert_eq!(list["runtime"]["compiled_fresh"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_version_swap_under_load_loses_no_invocation() {
    let gw = Gateway::start().await;
    push(&gw, "swap", "hostile", "config.attack=busy&config.ms=5").await;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let mut workers = Vec::new();
    for _ in 0..3 {
        let client = gw.client.clone();
        let url = gw.url("/plugins/swap/run");
        let stop = stop.clone();
        workers.push(tokio::spawn(async move {
            let mut versions = std::collections::BTreeMap::<String, u32>::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let resp = client.post(&url).json(&json!({})).send().await.unwrap();
                assert_eq!(resp.status().as_u16(), 200);
                let body: Value = resp.json().await.unwrap();
                *versions.entry(body["receipt"]["version"].as_str().unwrap().to_string()).or_default() += 1;
            }
            versions
        }));
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    let (status, swapped) = push(&gw, "swap", "latency-report", "").await;
    assert_eq!(status, 200);
    tokio::time::sleep(Duration::from_millis(500)).await;
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let mut seen = std::collections::BTreeMap::<String, u32>::new();
    for w in workers {
        for (v, n) in w.await.unwrap() {
            *seen.entry(v).or_default() += n;
        }
    }
    assert_eq!(seen.len(), 2, "runs on both versions: {seen:?}");
    assert!(seen.contains_key(swapped["version"].as_str().unwrap()));
    let (_, detail) = gw.get("/plugins/swap").await;
    assert_eq!(detail["counters"]["runs"].as_u64().unwrap(), seen.values().sum::<u32>() as u64);
    assert_eq!(detail["counters"]["failures"], 0);
    assert_eq!(detail["versions"].as_array().unwrap().len(), 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn schedules_keep_their_interval_and_never_overlap() {
    let gw = Gateway::start().await;
    push(&gw, "tick", "hostile", "config.attack=busy&config.ms=50&interval=300ms").await;
    push(&gw, "slow-tick", "hostile", "config.attack=busy&config.ms=450&interval=200ms").await;
    tokio::time::sleep(Duration::from_millis(2600)).await;
    let runs = |body: &Value| -> Vec<(f64, f64)> {
        let mut r: Vec<(f64, f64)> = body["runs"].as_array().unwrap().iter()
            .map(|r| (r["started_at_ms"].as_f64().unwrap(), r["wall_ms"].as_f64().unwrap())).collect();
        r.sort_by(|a, b| a.0.partial_cmp(&b.0).unwrap());
        r
    };
    let (_, tick) = gw.get("/plugins/tick/runs?limit=100").await;
    let tick = runs(&tick);
    assert!((6..=9).contains(&tick.len()), "about one run per 300 ms: {tick:?}");
    // Ticks sit on a fixed grid, so jitter in one start does not accumulate:
    // the mean gap is the interval even on a loaded machine.
    let mean_gap = (tick.last().unwrap().0 - tick[0].0) / (tick.len() - 1) as f64;
    assert!((270.0..=330.0).contains(&mean_gap), "interval kept: mean gap {mean_gap} ms in {tick:?}");
    for w in tick.windows(2) {
        assert!(w[1].0 - w[0].0 >= 150.0, "never fires twice for one tick: {w:?}");
    }
    let (_, slow) = gw.get("/plugins/slow-tick/runs?limit=100").await;
    let slow = runs(&slow);
    assert!(slow.len() >= 3);
    for w in slow.windows(2) {
        assert!(w[0].0 + w[0].1 <= w[1].0 + 1.0, "runs never overlap: {w:?}");
        assert!(w[1].0 - w[0].0 >= 390.0, "missed ticks are skipped, not queued: {w:?}");
    }
    assert!(slow.iter().all(|(_, wall)| *wall >= 440.0));
}

fn cli(url: &str, args: &[&str]) -> (bool, String, String) {
    let out = Command::new(duckgate_binary()).args(args).arg("--url").arg(url).output().unwrap();
    (out.status.success(), String::from_utf8_lossy(&out.stdout).into(), String::from_utf8_lossy(&out.stderr).into())
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cli_manages_the_whole_lifecycle() {
    let gw = Gateway::start().await;
    ingest(&gw, "api", 30, 900, 0).await;
    let url = gw.url("");
    let wasm = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/plugins/high-latency-alert.wasm"));
    let url2 = url.clone();
    let wasm_s = wasm.to_string_lossy().to_string();
    let (ok, out, err) = tokio::task::spawn_blocking(move || cli(&url2, &["plugin", "push", "hla", &wasm_s, "--interval", "1h", "--timeout", "2s", "--config", "threshold_ms=250"])).await.unwrap();
    assert!(ok, "{out}{err}");
    assert!(out.contains("installed hla"), "{out}");

    let u = url.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || cli(&u, &["plugin", "ls"])).await.unwrap();
    assert!(ok);
    assert!(out.lines().next().unwrap().starts_with("NAME"), "{out}");
    assert!(out.contains("hla") && out.contains("1h"), "{out}");

    let u = url.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || cli(&u, &["plugin", "run", "hla", "--json"])).await.unwrap();
    assert!(ok);
    let body: Value = serde_json::from_str(out.trim()).unwrap();
    assert_eq!(body["output"]["alerts"], 1);

    let u = url.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || cli(&u, &["alerts"])).await.unwrap();
    assert!(ok);
    assert!(out.contains("high-latency") && out.contains("hla"), "{out}");

    let u = url.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || cli(&u, &["plugin", "runs", "hla"])).await.unwrap();
    assert!(ok && out.contains("manual"), "{out}");

    let u = url.clone();
    let (ok, _, err) = tokio::task::spawn_blocking(move || cli(&u, &["plugin", "run", "nope"])).await.unwrap();
    assert!(!ok && err.contains("no plugin named"), "{err}");

    let u = url.clone();
    let (ok, out, _) = tokio::task::spawn_blocking(move || cli(&u, &["plugin", "rm", "hla"])).await.unwrap();
    assert!(ok && out.contains("removed hla"));
    let (_, list) = gw.get("/plugins").await;
    assert_eq!(list["plugins"], json!([]));

    let dead = format!("http://127.0.0.1:{}", duckgate_e2e::free_port());
    let (ok, _, err) = tokio::task::spawn_blocking(move || cli(&dead, &["plugin", "ls"])).await.unwrap();
    assert!(!ok && err.contains("is `duckgate serve` running?"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_guest_sdk_readme_example_is_the_built_plugin_and_runs() {
    let readme = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../guest-sdk/README.md")).unwrap();
    let block = readme.split("`src/lib.rs`:\n\n```rust\n").nth(1).and_then(|rest| rest.split("```").next()).expect("README example");
    let source = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../plugins/p99-watch/src/lib.rs")).unwrap();
    assert!(source.ends_with(block), "plugins/p99-watch/src/lib.rs must be the README's example verbatim");

    let gw = Gateway::start().await;
    ingest(&gw, "quick", 20, 10, 0).await;
    ingest(&gw, "sluggish", 20, 900, 0).await;
    let (status, body) = push(&gw, "p99-watch", "p99-watch", "config.threshold_ms=500").await;
    assert_eq!(status, 201, "{body}");
    let (status, out) = run(&gw, "p99-watch", json!({})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"], json!({"slow": ["sluggish"]}));
    assert_eq!(alerts(&gw, "plugin=p99-watch").await[0]["message"], "sluggish p99 900 ms");
}

#[test]
fn refuses_to_listen_beyond_loopback_without_an_admin_token() {
    let data = tempfile::tempdir().unwrap();
    let out = Command::new(duckgate_binary())
        .args(["serve", "--host", "0.0.0.0", "--port", &duckgate_e2e::free_port().to_string(), "--data-dir"])
        .arg(data.path())
        .env_remove("DUCKGATE_ADMIN_TOKEN")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("DUCKGATE_ADMIN_TOKEN"), "{err}");
}

#[tokio::test(flavor = "multi_thread")]
async fn failing_schedules_back_off() {
    let gw = Gateway::start().await;
    push(&gw, "failing", "hostile", "config.attack=panic&interval=200ms").await;
    tokio::time::sleep(Duration::from_millis(2900)).await;
    let (_, body) = gw.get("/plugins/failing/runs?limit=100").await;
    let mut starts: Vec<f64> = body["runs"].as_array().unwrap().iter().map(|r| r["started_at_ms"].as_f64().unwrap()).collect();
    starts.sort_by(|a, b| a.partial_cmp(b).unwrap());
    // Without backoff, about 14 runs; with it: 0.2 s, then +0.4, +0.8, +1.6.
    assert!((3..=4).contains(&starts.len()), "{starts:?}");
    let gaps: Vec<f64> = starts.windows(2).map(|w| w[1] - w[0]).collect();
    assert!(gaps.windows(2).all(|g| g[1] > g[0] * 1.5), "each wait doubles: {gaps:?}");
    let (_, detail) = gw.get("/plugins/failing").await;
    assert_eq!(detail["counters"]["consecutive_failures"], starts.len());
}

#[tokio::test(flavor = "multi_thread")]
async fn a_core_module_carrying_its_component_type_is_wrapped_on_upload() {
    let core = PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/plugins/core/latency-report.wasm"));
    let bytes = std::fs::read(&core).unwrap_or_else(|e| panic!("{}: {e}; scripts/build-plugins writes core modules there", core.display()));
    assert!(!bytes.starts_with(&[0x00, 0x61, 0x73, 0x6d, 0x0d]), "a core module, not a component");
    let gw = Gateway::start().await;
    ingest(&gw, "core-svc", 10, 5, 0).await;
    let resp = gw.client.put(gw.url("/plugins/from-core")).body(bytes).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 201);
    let (status, out) = run(&gw, "from-core", json!({"window_ms": 600000})).await;
    assert_eq!(status, 200, "{out}");
    assert_eq!(out["output"]["services"][0]["service"], "core-svc");
}

#[tokio::test(flavor = "multi_thread")]
async fn a_json_manifest_sets_limits_schedule_and_config() {
    let gw = Gateway::start().await;
    let manifest = json!({"interval_ms": 3_600_000, "limits": {"timeout_ms": 1500, "memory_bytes": 33554432}, "config": {"threshold_ms": "250"}});
    let query = format!("manifest={}&config.extra=1", urlencode(&manifest.to_string()));
    let (status, body) = push(&gw, "m", "high-latency-alert", &query).await;
    assert_eq!(status, 201, "{body}");
    let (_, detail) = gw.get("/plugins/m").await;
    assert_eq!(detail["interval_ms"], 3_600_000);
    assert_eq!((detail["limits"]["timeout_ms"].as_u64(), detail["limits"]["memory_bytes"].as_u64()), (Some(1500), Some(33554432)));
    assert_eq!(detail["config"], json!({"threshold_ms": "250", "extra": "1"}));
    let (status, body) = push(&gw, "m", "high-latency-alert", "manifest=%7B%22nope%22%3A1%7D").await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("manifest"), "{body}");
}

fn urlencode(text: &str) -> String {
    text.bytes().map(|b| if b.is_ascii_alphanumeric() { (b as char).to_string() } else { format!("%{b:02X}") }).collect()
}
