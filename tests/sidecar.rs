//! The sidecar routes end to end: the real binary, real HTTP on loopback, a
//! real S3 server (s3s-fs) and real Parquet objects.

use std::time::{Duration, Instant};

use duckgate_e2e::{query_body, snapshot_body, Gateway, S3Server, ACCESS_KEY, BUCKET, SECRET_KEY};
use serde_json::{json, Value};

const ALL_TYPES: &[(&str, &str, &str)] = &[
    ("_id", "id", "VARCHAR"),
    ("n", "n_text", "VARCHAR"),
    ("big", "big", "BIGINT"),
    ("i", "i", "INTEGER"),
    ("s", "s", "SMALLINT"),
    ("d", "d", "DOUBLE"),
    ("f", "f", "FLOAT"),
    ("ok", "ok", "BOOLEAN"),
    ("price", "price", "DECIMAL(10,2)"),
    ("day", "day", "DATE"),
    ("_creationTime", "created_at", "TIMESTAMP"),
    ("_creationTime", "created_ms", "BIGINT"),
    ("seen", "seen", "TIMESTAMP"),
    ("doc", "doc", "JSON"),
];

fn all_types_rows() -> Value {
    json!([
        {"_id": "b", "n": 42, "big": "9007199254740993", "i": "17", "s": 3, "d": 2.5, "f": 1.5, "ok": true,
         "price": 99.99, "day": "2024-01-25", "_creationTime": 1706140800123.75, "seen": "2024-01-25 12:00:00+02:00",
         "doc": {"tags": ["x", "y"], "n": 1}},
        {"_id": "a", "n": 1.5, "big": -5, "i": 2147483647, "s": -32768, "d": "3.25", "f": "2", "ok": "false",
         "price": "12.345", "day": 1706140800000i64, "_creationTime": 1706140800000i64, "seen": "2024-01-25T00:00:00.5Z",
         "doc": [1, 2]},
        {"_id": "c", "extra": "ignored"}
    ])
}

async fn snapshot_ok(gw: &Gateway, body: &Value) -> Value {
    let (status, resp) = gw.post("/snapshot", body).await;
    assert_eq!(status, 200, "snapshot failed: {resp}");
    resp
}

async fn query_ok(gw: &Gateway, body: &Value) -> Value {
    let (status, resp) = gw.post("/query", body).await;
    assert_eq!(status, 200, "query failed: {resp}");
    resp
}

#[tokio::test(flavor = "multi_thread")]
async fn health_reports_the_sidecar_service() {
    let gw = Gateway::start().await;
    let (status, body) = gw.get("/health").await;
    assert_eq!(status, 200);
    assert_eq!(body["status"], "ok");
    assert_eq!(body["service"], "duckdb-sidecar");
    let (status, body) = gw.get("/no-such-route").await;
    assert_eq!(status, 404);
    assert!(body["error"].is_string());
}

#[tokio::test(flavor = "multi_thread")]
async fn every_type_round_trips_through_s3() {
    let s3 = S3Server::start();
    let gw = Gateway::start().await;
    let key = "tenant/types/1.parquet";
    let resp = snapshot_ok(&gw, &snapshot_body(key, ALL_TYPES, all_types_rows(), Some(s3.s3_config()))).await;
    assert_eq!(resp["s3_key"], key);
    assert_eq!(resp["row_count"], 3);
    let size = std::fs::metadata(s3.object_path(key)).expect("object in the bucket").len();
    assert_eq!(resp["parquet_size_bytes"], size);

    let types = query_ok(&gw, &query_body(
        "SELECT typeof(id) AS id, typeof(n_text) AS n_text, typeof(big) AS big, typeof(i) AS i, typeof(s) AS s, typeof(d) AS d, typeof(f) AS f, \
         typeof(ok) AS ok, typeof(price) AS price, typeof(day) AS day, typeof(created_at) AS created_at, typeof(created_ms) AS created_ms, \
         typeof(seen) AS seen, typeof(doc) AS doc FROM t LIMIT 1",
        &[("t", key)], Some(s3.s3_config()))).await;
    assert_eq!(types["rows"][0], json!({
        "id": "VARCHAR", "n_text": "VARCHAR", "big": "BIGINT", "i": "INTEGER", "s": "SMALLINT", "d": "DOUBLE",
        "f": "FLOAT", "ok": "BOOLEAN", "price": "DECIMAL(10,2)", "day": "DATE", "created_at": "TIMESTAMP",
        "created_ms": "BIGINT", "seen": "TIMESTAMP", "doc": "JSON"
    }));

    let result = query_ok(&gw, &query_body("SELECT * FROM t ORDER BY id", &[("t", key)], Some(s3.s3_config()))).await;
    assert_eq!(result["row_count"], 3);
    assert_eq!(result["columns"], json!(["id", "n_text", "big", "i", "s", "d", "f", "ok", "price", "day", "created_at", "created_ms", "seen", "doc"]));
    let rows = result["rows"].as_array().unwrap();
    assert_eq!(rows[0], json!({
        "id": "a", "n_text": "1.5", "big": -5, "i": 2147483647, "s": -32768, "d": 3.25, "f": 2.0, "ok": false,
        "price": 12.35, "day": "2024-01-25", "created_at": "2024-01-25T00:00:00.000Z", "created_ms": 1706140800000i64,
        "seen": "2024-01-25T00:00:00.500Z", "doc": "[1,2]"
    }));
    assert_eq!(rows[1], json!({
        "id": "b", "n_text": "42", "big": "9007199254740993", "i": 17, "s": 3, "d": 2.5, "f": 1.5, "ok": true,
        "price": 99.99, "day": "2024-01-25", "created_at": "2024-01-25T00:00:00.123750Z", "created_ms": 1706140800124i64,
        "seen": "2024-01-25T10:00:00.000Z", "doc": "{\"n\":1,\"tags\":[\"x\",\"y\"]}"
    }));
    // A missing source field is NULL in every column.
    let c = rows[2].as_object().unwrap();
    assert_eq!(c["id"], "c");
    assert!(c.iter().filter(|(k, _)| *k != "id").all(|(_, v)| v.is_null()), "{c:?}");

    // JSON columns are real JSON to DuckDB.
    let tags = query_ok(&gw, &query_body("SELECT doc->>'$.tags[1]' AS tag FROM t WHERE id = 'b'", &[("t", key)], Some(s3.s3_config()))).await;
    assert_eq!(tags["rows"][0]["tag"], "y");
}

#[tokio::test(flavor = "multi_thread")]
async fn query_values_have_sensible_json() {
    let gw = Gateway::start().await;
    let r = query_ok(&gw, &query_body(
        "SELECT 9007199254740993::BIGINT AS big, 170141183460469231731687303715884105727::HUGEINT AS huge, \
         12::HUGEINT AS small_huge, 1.25::DECIMAL(5,2) AS dec, DATE '2024-02-29' AS day, \
         TIMESTAMP '2024-01-25 10:11:12.5' AS ts, [1, 2, NULL] AS list, {'a': 1, 'b': 'x'} AS st, NULL AS nothing, \
         'nan'::DOUBLE AS nan, MAP {'k': 1} AS m, count(*) AS n",
        &[], None)).await;
    assert_eq!(r["rows"][0], json!({
        "big": "9007199254740993", "huge": "170141183460469231731687303715884105727", "small_huge": 12,
        "dec": 1.25, "day": "2024-02-29", "ts": "2024-01-25T10:11:12.500Z", "list": [1, 2, null],
        "st": {"a": 1, "b": "x"}, "nothing": null, "nan": null, "m": {"k": 1}, "n": 1
    }));
    let empty = query_ok(&gw, &query_body("SELECT 1 AS a, 'x' AS b WHERE false", &[], None)).await;
    assert_eq!(empty, json!({"columns": ["a", "b"], "rows": [], "row_count": 0}));
}

#[tokio::test(flavor = "multi_thread")]
async fn parquet_is_zstd_sorted_with_50k_row_groups() {
    let s3 = S3Server::start();
    let gw = Gateway::start().await;
    let rows: Vec<Value> = (0..120_000)
        .map(|i| json!({"id": format!("r{i}"), "created_at": 1_700_000_000_000i64 + ((i * 7919) % 120_000) as i64}))
        .collect();
    let key = "sorted/1.parquet";
    snapshot_ok(&gw, &snapshot_body(key, &[("id", "id", "VARCHAR"), ("created_at", "created_at", "TIMESTAMP")], json!(rows), Some(s3.s3_config()))).await;

    use parquet::file::reader::{FileReader, SerializedFileReader};
    let reader = SerializedFileReader::new(std::fs::File::open(s3.object_path(key)).unwrap()).unwrap();
    let meta = reader.metadata();
    let groups: Vec<i64> = meta.row_groups().iter().map(|g| g.num_rows()).collect();
    assert_eq!(groups, vec![50_000, 50_000, 20_000]);
    for g in meta.row_groups() {
        for c in g.columns() {
            assert!(matches!(c.compression(), parquet::basic::Compression::ZSTD(_)), "{:?}", c.compression());
        }
    }
    let sorted = query_ok(&gw, &query_body(
        "SELECT count(*) AS out_of_order FROM (SELECT created_at < lag(created_at) OVER () AS bad FROM t) WHERE bad",
        &[("t", key)], Some(s3.s3_config()))).await;
    assert_eq!(sorted["rows"][0]["out_of_order"], 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn globs_read_every_matching_object_and_nothing_else() {
    let s3 = S3Server::start();
    let gw = Gateway::start().await;
    let cols = &[("v", "v", "INTEGER")];
    for (key, n) in [("chunks/snap1/chunk_000.parquet", 3), ("chunks/snap1/chunk_001.parquet", 4), ("chunks/snap1/chunk_002.parquet", 5),
                     ("chunks/snap1/deeper/chunk_x.parquet", 100), ("chunks/snap2/chunk_000.parquet", 1000)] {
        let data: Vec<Value> = (0..n).map(|i| json!({"v": i})).collect();
        snapshot_ok(&gw, &snapshot_body(key, cols, json!(data), Some(s3.s3_config()))).await;
    }
    let r = query_ok(&gw, &query_body("SELECT count(*) AS n FROM t", &[("t", "chunks/snap1/*.parquet")], Some(s3.s3_config()))).await;
    assert_eq!(r["rows"][0]["n"], 12);
    let r = query_ok(&gw, &query_body("SELECT count(*) AS n FROM t", &[("t", "/chunks/snap1/**/*.parquet")], Some(s3.s3_config()))).await;
    assert_eq!(r["rows"][0]["n"], 112);
    let (status, body) = gw.post("/query", &query_body("SELECT 1", &[("t", "chunks/none/*.parquet")], Some(s3.s3_config()))).await;
    assert_eq!(status, 404, "{body}");
    assert!(body["error"].as_str().unwrap().contains("tables[0].s3_path"), "{body}");
    let (status, body) = gw.post("/query", &query_body("SELECT 1", &[("t", "chunks/missing.parquet")], Some(s3.s3_config()))).await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn the_cache_reads_an_unchanged_object_once_and_a_changed_one_again() {
    let s3 = S3Server::start();
    let gw = Gateway::start().await;
    let key = "cached/orders.parquet";
    let cols = &[("v", "v", "BIGINT")];
    snapshot_ok(&gw, &snapshot_body(key, cols, json!([{"v": 1}, {"v": 2}]), Some(s3.s3_config()))).await;
    let sum = json!("SELECT sum(v) AS s FROM orders");
    let body = query_body(sum.as_str().unwrap(), &[("orders", key)], Some(s3.s3_config()));

    let before = s3.get_objects();
    assert_eq!(query_ok(&gw, &body).await["rows"][0]["s"], 3);
    assert_eq!(s3.get_objects(), before + 1, "the first query fetches the object");
    for _ in 0..3 {
        assert_eq!(query_ok(&gw, &body).await["rows"][0]["s"], 3);
    }
    assert_eq!(s3.get_objects(), before + 1, "repeated queries must not GET object bytes again");
    let (_, stats) = gw.get("/pool-stats").await;
    assert_eq!(stats["object_cache"]["misses"], 1);
    assert_eq!(stats["object_cache"]["hits"], 3);
    assert!(stats["object_cache"]["bytes"].as_u64().unwrap() > 0);

    snapshot_ok(&gw, &snapshot_body(key, cols, json!([{"v": 10}, {"v": 20}, {"v": 30}]), Some(s3.s3_config()))).await;
    assert_eq!(query_ok(&gw, &body).await["rows"][0]["s"], 60, "a changed object is read again");
    assert_eq!(s3.get_objects(), before + 2);
}

#[tokio::test(flavor = "multi_thread")]
async fn refused_sql_has_no_effect() {
    let gw = Gateway::start().await;
    let scratch = tempfile::tempdir().unwrap();
    let p = |name: &str| scratch.path().join(name).to_string_lossy().to_string();
    let attempts = vec![
        (format!("COPY (SELECT 1) TO '{}'", p("copy.csv")), p("copy.csv")),
        (format!("SELECT 1; COPY (SELECT 1) TO '{}'", p("batch.csv")), p("batch.csv")),
        (format!("ATTACH '{}' AS x", p("attached.db")), p("attached.db")),
        (format!("EXPORT DATABASE '{}'", p("export")), p("export")),
        ("INSTALL httpfs".into(), String::new()),
        ("LOAD httpfs".into(), String::new()),
        ("SET enable_external_access = true".into(), String::new()),
        ("PRAGMA enable_profiling".into(), String::new()),
        ("SELECT * FROM read_csv('/etc/passwd')".into(), String::new()),
        ("SELECT * FROM read_text('/etc/hostname')".into(), String::new()),
        ("CREATE TABLE x AS SELECT 1".into(), String::new()),
        (format!("SELECT * FROM glob('{}/cache/**')", gw.data_dir.display()), String::new()),
        ("SELECT * FROM read_blob('.tmp/*')".into(), String::new()),
        ("SELECT * FROM add_parquet_key('k', '0123456789112345')".into(), String::new()),
        ("SELECT * FROM query('SELECT 1')".into(), String::new()),
    ];
    for (sql, file) in attempts {
        let (status, body) = gw.post("/query", &query_body(&sql, &[], None)).await;
        assert_eq!(status, 400, "{sql} must be refused, got {body}");
        let error = body["error"].as_str().expect("error message");
        assert!(!error.contains("root:"), "{sql} leaked file content: {error}");
        if !file.is_empty() {
            assert!(!std::path::Path::new(&file).exists(), "{sql} created {file}");
        }
    }
    // Table names are identifiers, never SQL.
    let evil = format!("t\" AS SELECT 1; COPY (SELECT 1) TO '{}'; --", p("inject.csv"));
    let s3less_key = "inject/x.parquet";
    snapshot_ok(&gw, &snapshot_body(s3less_key, &[("v", "v", "INTEGER")], json!([{"v": 7}]), None)).await;
    let r = query_ok(&gw, &query_body(&format!("SELECT v FROM \"{}\"", evil.replace('"', "\"\"")), &[(&evil, s3less_key)], None)).await;
    assert_eq!(r["rows"][0]["v"], 7);
    assert!(!scratch.path().join("inject.csv").exists());
}

#[tokio::test(flavor = "multi_thread")]
async fn sql_errors_are_400_with_duckdbs_message() {
    let gw = Gateway::start().await;
    for (sql, needle) in [("SELEC 1", "syntax error"), ("SELECT nope FROM range(1)", "nope"), ("SELECT * FROM missing_table", "missing_table")] {
        let (status, body) = gw.post("/query", &query_body(sql, &[], None)).await;
        assert_eq!(status, 400, "{sql}: {body}");
        assert!(body["error"].as_str().unwrap().contains(needle), "{sql}: {body}");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn bad_requests_name_the_field_or_row() {
    let s3 = S3Server::start();
    let gw = Gateway::start().await;
    let (status, body) = gw.post_raw("/query", "{not json").await;
    assert_eq!((status, body), (400, json!({"error": "Invalid JSON"})));
    let (status, body) = gw.post_raw("/snapshot", "[1,").await;
    assert_eq!((status, body), (400, json!({"error": "Invalid JSON"})));

    let cases = [
        ("/query", json!({"tables": []}), "sql must be a non-empty string"),
        ("/query", json!({"sql": "SELECT 1", "tables": [{"name": "t"}]}), "tables[0].s3_path must be a non-empty string"),
        ("/query", json!({"sql": "SELECT 1", "tables": "t"}), "tables must be an array"),
        ("/query", json!({"sql": "SELECT 1", "s3_config": {"endpoint": "http://x:9000", "bucket": "b", "accessKeyId": "k"}}), "s3_config.secretAccessKey must be a non-empty string"),
        ("/snapshot", json!({"table_name": "t", "data": [], "columns": [], "s3_key": "k"}), "columns must be non-empty"),
        ("/snapshot", json!({"table_name": "t", "data": {}, "columns": [{"source": "a", "target": "a", "type": "INTEGER"}], "s3_key": "k"}), "data must be an array"),
        ("/snapshot", json!({"table_name": "t", "data": [], "columns": [{"source": "a", "target": "a", "type": "INTEGER; DROP"}], "s3_key": "k"}), "columns[0].type"),
        ("/snapshot", json!({"data": [], "columns": [{"source": "a", "target": "a", "type": "INTEGER"}], "s3_key": "k"}), "table_name must be a non-empty string"),
        ("/snapshot", json!({"table_name": "t", "data": [], "columns": [{"source": "a", "target": "a", "type": "INTEGER"}]}), "s3_key must be a non-empty string"),
    ];
    for (route, body, expected) in cases {
        let (status, resp) = gw.post(route, &body).await;
        assert_eq!(status, 400, "{route} {body}: {resp}");
        assert!(resp["error"].as_str().unwrap().contains(expected), "{route}: expected {expected:?}, got {resp}");
    }

    // A value that cannot be converted names row and column, and writes nothing.
    let body = snapshot_body("bad/rows.parquet", &[("n", "n", "BIGINT")], json!([{"n": 1}, {"n": 2}, {"n": "three"}]), Some(s3.s3_config()));
    let (status, resp) = gw.post("/snapshot", &body).await;
    assert_eq!(status, 400);
    assert_eq!(resp["error"], "data[2].n (column \"n\"): cannot convert \"three\" to BIGINT");
    assert!(!s3.object_path("bad/rows.parquet").exists());
    assert_eq!(s3.counts.put.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test(flavor = "multi_thread")]
async fn s3_failures_are_502_without_secrets() {
    let s3 = S3Server::start();
    let log = tempfile::NamedTempFile::new().unwrap();
    let gw = Gateway::builder().env("RUST_LOG", "debug").stderr_to(log.path()).start().await;
    let closed_port = duckgate_e2e::free_port();
    let unreachable = json!({"endpoint": format!("http://127.0.0.1:{closed_port}"), "bucket": BUCKET,
                             "accessKeyId": ACCESS_KEY, "secretAccessKey": SECRET_KEY, "forcePathStyle": true});
    let mut wrong = s3.s3_config();
    wrong["secretAccessKey"] = json!("wrong-secret-value-xyz");
    for config in [unreachable, wrong] {
        let started = Instant::now();
        let (status, body) = gw.post("/snapshot", &snapshot_body("x/y.parquet", &[("a", "a", "INTEGER")], json!([{"a": 1}]), Some(config.clone()))).await;
        assert_eq!(status, 502, "{body}");
        let (qstatus, qbody) = gw.post("/query", &query_body("SELECT * FROM t", &[("t", "x/y.parquet")], Some(config.clone()))).await;
        assert_eq!(qstatus, 502, "{qbody}");
        assert!(started.elapsed() < Duration::from_secs(60), "S3 failures must fail fast");
        for text in [body.to_string(), qbody.to_string()] {
            for secret in [SECRET_KEY, "wrong-secret-value-xyz", ACCESS_KEY] {
                assert!(!text.contains(secret), "error leaks a credential: {text}");
            }
        }
    }
    let logs = std::fs::read_to_string(log.path()).unwrap();
    assert!(logs.contains("request failed") || logs.contains("502"), "the failure is logged");
    for secret in [SECRET_KEY, "wrong-secret-value-xyz"] {
        assert!(!logs.contains(secret), "logs leak a secret");
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_allowlist_refuses_other_endpoints_before_connecting() {
    let s3 = S3Server::start();
    let gw = Gateway::builder().env("DUCKGATE_S3_ENDPOINT_ALLOWLIST", "minio.internal:9000, s3.amazonaws.com").start().await;
    let counts_before = (s3.get_objects(), s3.counts.head.load(std::sync::atomic::Ordering::SeqCst));
    let (status, body) = gw.post("/snapshot", &snapshot_body("a/b.parquet", &[("a", "a", "INTEGER")], json!([{"a": 1}]), Some(s3.s3_config()))).await;
    assert_eq!(status, 403, "{body}");
    assert!(body["error"].as_str().unwrap().contains("DUCKGATE_S3_ENDPOINT_ALLOWLIST"));
    let (status, _) = gw.post("/query", &query_body("SELECT 1", &[("t", "a/b.parquet")], Some(s3.s3_config()))).await;
    assert_eq!(status, 403);
    assert_eq!(s3.counts.put.load(std::sync::atomic::Ordering::SeqCst), 0);
    assert_eq!((s3.get_objects(), s3.counts.head.load(std::sync::atomic::Ordering::SeqCst)), counts_before);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_results_are_refused_with_a_hint() {
    let gw = Gateway::builder().env("DUCKGATE_MAX_RESULT_SIZE", "1MB").start().await;
    let (status, body) = gw.post("/query", &query_body("SELECT range AS i, 'padding' AS p FROM range(1000000)", &[], None)).await;
    assert_eq!(status, 400, "{body}");
    assert!(body["error"].as_str().unwrap().contains("add a LIMIT"), "{body}");
    let r = query_ok(&gw, &query_body("SELECT range AS i FROM range(10000)", &[], None)).await;
    assert_eq!(r["row_count"], 10000);
}

#[tokio::test(flavor = "multi_thread")]
async fn oversized_bodies_get_413_as_json() {
    let gw = Gateway::start().await;
    let big = format!("{{\"sql\": \"SELECT 1\", \"pad\": \"{}\"}}", "x".repeat(51 * 1024 * 1024));
    let (status, body) = gw.post_raw("/query", big).await;
    assert_eq!(status, 413);
    assert!(body["error"].as_str().unwrap().contains("limit"), "{body}");
}

#[tokio::test(flavor = "multi_thread")]
async fn saturation_gives_503_at_once() {
    let gw = Gateway::builder()
        .env("SIDECAR_MAX_CONCURRENT_QUERIES", "1")
        .env("SIDECAR_MAX_QUERY_QUEUE", "1")
        .env("SIDECAR_QUERY_TIMEOUT_MS", "4000")
        .start()
        .await;
    let slow = query_body("SELECT sum(hash(i)) AS s FROM range(1000000000000) t(i)", &[], None);
    let a = tokio::spawn({ let c = gw.client.clone(); let u = gw.url("/query"); let b = slow.clone(); async move { c.post(u).json(&b).send().await.unwrap().status().as_u16() } });
    wait_for(&gw, |s| s["queries"]["running"] == 1).await;
    let b = tokio::spawn({ let c = gw.client.clone(); let u = gw.url("/query"); let b = slow.clone(); async move { c.post(u).json(&b).send().await.unwrap().status().as_u16() } });
    wait_for(&gw, |s| s["queries"]["queued"] == 1).await;
    let started = Instant::now();
    let (status, body) = gw.post("/query", &query_body("SELECT 1", &[], None)).await;
    assert_eq!(status, 503, "{body}");
    assert!(body["error"].as_str().unwrap().contains("busy"));
    assert!(started.elapsed() < Duration::from_secs(2), "503 must be immediate");
    assert_eq!(a.await.unwrap(), 504);
    let b_status = b.await.unwrap();
    assert!(b_status == 504, "the queued query shares the deadline: {b_status}");
    let (_, stats) = gw.get("/pool-stats").await;
    assert_eq!(stats["queries"]["rejected"], 1);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_timed_out_query_is_interrupted_inside_duckdb() {
    let gw = Gateway::builder().env("SIDECAR_QUERY_TIMEOUT_MS", "1000").start().await;
    let started = Instant::now();
    let (status, body) = gw.post("/query", &query_body("SELECT sum(hash(i)) FROM range(1000000000000) t(i)", &[], None)).await;
    assert_eq!(status, 504, "{body}");
    assert!(body["error"].as_str().unwrap().contains("SIDECAR_QUERY_TIMEOUT_MS"));
    assert!(started.elapsed() < Duration::from_secs(8));
    // The DuckDB work holds the query slot until it really stops.
    wait_for(&gw, |s| s["queries"]["running"] == 0).await;
    // And the process is idle again: under 0.3 CPU-seconds in the next second
    // (the query alone burned about one per core per second).
    let cpu = |pid: u32| -> f64 {
        let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap();
        let fields: Vec<&str> = stat.rsplit(')').next().unwrap().split_whitespace().collect();
        (fields[11].parse::<f64>().unwrap() + fields[12].parse::<f64>().unwrap()) / 100.0
    };
    let before = cpu(gw.pid());
    tokio::time::sleep(Duration::from_secs(1)).await;
    let used = cpu(gw.pid()) - before;
    assert!(used < 0.3, "duckgate still burns CPU after the timeout: {used} s in 1 s");
    // It still serves.
    assert_eq!(query_ok(&gw, &query_body("SELECT 42 AS x", &[], None)).await["rows"][0]["x"], 42);
}

#[tokio::test(flavor = "multi_thread")]
async fn a_200k_row_payload_and_the_local_store() {
    let gw = Gateway::start().await;
    let rows: Vec<Value> = (0..200_000)
        .map(|i| json!({"id": format!("id-{i}"), "created_at": 1_706_140_800_000i64 + i, "service": format!("svc-{}", i % 5),
                        "duration_ms": (i % 1000) as f64 / 3.0, "status": 200 + (i % 3), "ok": i % 7 != 0}))
        .collect();
    let cols = &[("id", "id", "VARCHAR"), ("created_at", "created_at", "TIMESTAMP"), ("service", "service", "VARCHAR"),
                 ("duration_ms", "duration_ms", "DOUBLE"), ("status", "status", "INTEGER"), ("ok", "ok", "BOOLEAN")];
    let resp = snapshot_ok(&gw, &snapshot_body("local/big.parquet", cols, json!(rows), None)).await;
    assert_eq!(resp["row_count"], 200_000);
    let on_disk = gw.data_dir.join("objects/local/big.parquet");
    assert_eq!(std::fs::metadata(&on_disk).expect("object in the local store").len(), resp["parquet_size_bytes"].as_u64().unwrap());
    let r = query_ok(&gw, &query_body(
        "SELECT count(*) AS n, count(DISTINCT service) AS services, sum(CASE WHEN ok THEN 0 ELSE 1 END) AS failed FROM spans",
        &[("spans", "local/big.parquet")], None)).await;
    assert_eq!(r["rows"][0], json!({"n": 200_000, "services": 5, "failed": (0..200_000).filter(|i| i % 7 == 0).count()}));
}

#[tokio::test(flavor = "multi_thread")]
async fn sigterm_finishes_in_flight_requests() {
    let mut gw = Gateway::builder().env("SIDECAR_QUERY_TIMEOUT_MS", "2000").start().await;
    let client = gw.client.clone();
    let url = gw.url("/query");
    let in_flight = tokio::spawn(async move {
        let body = query_body("SELECT sum(hash(i)) FROM range(1000000000000) t(i)", &[], None);
        let resp = client.post(url).json(&body).send().await.expect("in-flight request is answered");
        (resp.status().as_u16(), resp.json::<Value>().await.expect("JSON body"))
    });
    wait_for(&gw, |s| s["queries"]["running"] == 1).await;
    let status = tokio::task::spawn_blocking(move || {
        let status = gw.signal_and_wait("TERM");
        (status, gw)
    });
    let (code, body) = in_flight.await.unwrap();
    assert_eq!(code, 504, "{body}");
    let (exit, _gw) = status.await.unwrap();
    assert!(exit.success(), "duckgate exits cleanly on SIGTERM: {exit}");
}

async fn wait_for(gw: &Gateway, ready: impl Fn(&Value) -> bool) {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let (_, stats) = gw.get("/pool-stats").await;
        if ready(&stats) {
            return;
        }
        assert!(Instant::now() < deadline, "condition not reached: {stats}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test(flavor = "multi_thread")]
async fn the_default_store_can_be_an_s3_bucket_from_the_environment() {
    let s3 = S3Server::start();
    let gw = Gateway::builder()
        .arg("--object-store").arg(format!("s3://{BUCKET}"))
        .env("AWS_ENDPOINT_URL", s3.endpoint())
        .env("AWS_ALLOW_HTTP", "true")
        .env("AWS_REGION", "us-east-1")
        .env("AWS_ACCESS_KEY_ID", ACCESS_KEY)
        .env("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
        .start()
        .await;
    snapshot_ok(&gw, &snapshot_body("env/x.parquet", &[("v", "v", "INTEGER")], json!([{"v": 5}, {"v": 6}]), None)).await;
    assert!(s3.object_path("env/x.parquet").exists(), "written to the S3 bucket, not the local directory");
    let r = query_ok(&gw, &query_body("SELECT sum(v) AS s FROM t", &[("t", "env/*.parquet")], None)).await;
    assert_eq!(r["rows"][0]["s"], 11);
}

/// `DUCKGATE_QUERY_INSTANCES=shared`: one instance per exact table set,
/// reused with a new connection per request, never across table sets or
/// object versions, and as locked down as a fresh one.
#[tokio::test(flavor = "multi_thread")]
async fn shared_instances_are_reused_only_for_the_same_table_set() {
    let s3 = S3Server::start();
    let gw = Gateway::builder()
        .env("DUCKGATE_QUERY_INSTANCES", "shared")
        .env("SIDECAR_QUERY_TIMEOUT_MS", "1500")
        .start()
        .await;
    let shared = |stats: &Value| (stats["shared"]["built"].as_u64().unwrap(), stats["shared"]["reused"].as_u64().unwrap());
    let key = "shared/orders.parquet";
    let cols = &[("v", "v", "BIGINT")];
    snapshot_ok(&gw, &snapshot_body(key, cols, json!([{"v": 1}, {"v": 2}, {"v": 3}]), Some(s3.s3_config()))).await;
    let orders = |sql: &str| query_body(sql, &[("orders", key)], Some(s3.s3_config()));

    assert_eq!(query_ok(&gw, &orders("SELECT sum(v) AS s FROM orders")).await["rows"][0]["s"], 6);
    assert_eq!(query_ok(&gw, &orders("SELECT max(v) AS m FROM orders")).await["rows"][0]["m"], 3);
    let (_, stats) = gw.get("/pool-stats").await;
    assert_eq!(stats["instances"], "shared", "{stats}");
    assert_eq!(shared(&stats), (1, 1), "the second query reuses the first one's instance: {stats}");

    // Concurrent requests on one instance each get their own, correct answer.
    let mut tasks = Vec::new();
    for i in 0..8i64 {
        let (client, url, body) = (gw.client.clone(), gw.url("/query"), orders(&format!("SELECT sum(v) + {i} AS s FROM orders")));
        tasks.push(tokio::spawn(async move {
            let r: Value = client.post(url).json(&body).send().await.unwrap().json().await.unwrap();
            (i, r["rows"][0]["s"].as_i64())
        }));
    }
    for task in tasks {
        let (i, s) = task.await.unwrap();
        assert_eq!(s, Some(6 + i));
    }

    // Another table set (same object, other name) gets an instance of its own.
    let renamed = query_body("SELECT count(*) AS n FROM o2", &[("o2", key)], Some(s3.s3_config()));
    assert_eq!(query_ok(&gw, &renamed).await["rows"][0]["n"], 3);
    let unknown = gw.post("/query", &orders("SELECT count(*) AS n FROM o2")).await;
    assert_eq!(unknown.0, 400, "a table of another set is not visible: {}", unknown.1);

    // A changed object is a new table set: new instance, new data.
    let (built_before, _) = shared(&gw.get("/pool-stats").await.1);
    snapshot_ok(&gw, &snapshot_body(key, cols, json!([{"v": 10}, {"v": 20}, {"v": 30}]), Some(s3.s3_config()))).await;
    assert_eq!(query_ok(&gw, &orders("SELECT sum(v) AS s FROM orders")).await["rows"][0]["s"], 60);
    assert_eq!(shared(&gw.get("/pool-stats").await.1).0, built_before + 1);

    // Locked down like a fresh instance, and nothing a request tries survives it.
    for sql in [
        "SET threads = 1",
        "CREATE TABLE leftover AS SELECT 1",
        "SELECT * FROM add_parquet_key('k', '0123456789112345')",
        "SELECT * FROM read_csv('/etc/passwd')",
    ] {
        let (status, body) = gw.post("/query", &orders(sql)).await;
        assert_eq!(status, 400, "{sql} must be refused: {body}");
    }
    let names = query_ok(&gw, &orders("SELECT string_agg(table_name, ',') AS t FROM duckdb_tables()")).await;
    assert_eq!(names["rows"][0]["t"], Value::Null, "no table was left behind: {names}");

    // A runaway query is interrupted on its own connection; the instance serves on.
    let (status, body) = gw.post("/query", &orders("SELECT sum(hash(i)) FROM range(1000000000000) t(i), orders")).await;
    assert_eq!(status, 504, "{body}");
    wait_for(&gw, |s| s["queries"]["running"] == 0).await;
    let (_, reused_before) = shared(&gw.get("/pool-stats").await.1);
    assert_eq!(query_ok(&gw, &orders("SELECT sum(v) AS s FROM orders")).await["rows"][0]["s"], 60);
    assert_eq!(shared(&gw.get("/pool-stats").await.1).1, reused_before + 1);
}

/// /snapshot reads its body into one buffer sized from Content-Length; a
/// chunked body (no length) works too, and both are bounded.
#[tokio::test(flavor = "multi_thread")]
async fn snapshot_bodies_may_be_chunked_and_are_bounded_either_way() {
    let gw = Gateway::builder().env("DUCKGATE_MAX_BODY_SIZE", "1MB").start().await;
    let body = serde_json::to_vec(&snapshot_body("chunked/x.parquet", &[("v", "v", "INTEGER")], json!([{"v": 1}, {"v": 2}]), None)).unwrap();
    let chunks: Vec<Result<Vec<u8>, std::io::Error>> = body.chunks(7).map(|c| Ok(c.to_vec())).collect();
    let (status, r) = gw.post_raw("/snapshot", reqwest::Body::wrap_stream(futures::stream::iter(chunks))).await;
    assert_eq!(status, 200, "{r}");
    assert_eq!(r["row_count"], 2);
    let sum = query_ok(&gw, &query_body("SELECT sum(v) AS s FROM t", &[("t", "chunked/x.parquet")], None)).await;
    assert_eq!(sum["rows"][0]["s"], 3);

    // Raw HTTP: the gateway answers 413 before reading a body it refuses,
    // which HTTP clients that are still sending report as a broken pipe.
    let declared = raw_post(&gw, "Content-Length: 2000000\r\n", &[]).await;
    assert!(declared.starts_with("HTTP/1.1 413"), "{declared}");
    assert!(declared.contains("limit"), "{declared}");
    let chunk = vec![b' '; 256 * 1024];
    let chunked = raw_post(&gw, "Transfer-Encoding: chunked\r\n", &[chunk.as_slice(); 5]).await;
    assert!(chunked.starts_with("HTTP/1.1 413"), "{chunked}");
}

/// Sends a POST /snapshot with the given framing header and chunks (chunked
/// framing when `framing` says so), then reads the whole response.
async fn raw_post(gw: &Gateway, framing: &str, chunks: &[&[u8]]) -> String {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let addr = gw.url("").trim_start_matches("http://").trim_end_matches('/').to_string();
    let mut stream = tokio::net::TcpStream::connect(addr).await.unwrap();
    let head = format!("POST /snapshot HTTP/1.1\r\nHost: gateway\r\nContent-Type: application/json\r\n{framing}\r\n");
    stream.write_all(head.as_bytes()).await.unwrap();
    for chunk in chunks {
        let frame = [format!("{:x}\r\n", chunk.len()).as_bytes(), chunk, b"\r\n"].concat();
        stream.write_all(&frame).await.unwrap();
    }
    let mut response = Vec::new();
    let _ = tokio::time::timeout(std::time::Duration::from_secs(10), stream.read_to_end(&mut response)).await;
    String::from_utf8_lossy(&response).to_string()
}
