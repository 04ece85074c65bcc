//! HTTP routes of the live store: OTLP ingest, the read API the seed's SDK
//! server offered its scripts, and events.
//!
//! Each route has its own timeout, as in the seed: queries 30 s, metric
//! lookups 10 s, system lookups 5 s. A timeout interrupts the DuckDB work.

use std::collections::HashMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use opentelemetry_proto::tonic::collector::metrics::v1::ExportMetricsServiceResponse;
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceResponse;
use duckdb::types::Value as DuckValue;
use serde_json::{json, Value};

use super::collector::{CPU_METRIC, MEMORY_TOTAL_METRIC, MEMORY_USED_METRIC, MEMORY_UTILIZATION_METRIC};
use super::otlp::{self, Encoding};
use super::pool::{param, Read, INTERNAL_MAX_BYTES};
use super::writer::EventRow;
use crate::error::Error;
use crate::query::json::{rows_as_values, write_columns_and_rows};
use crate::request::{self, Field};
use crate::server::AppState;

pub const SYSTEM_TIMEOUT: Duration = Duration::from_secs(5);

pub fn routes() -> Router<AppState> {
    Router::new()
        .route("/v1/traces", post(ingest_traces))
        .route("/v1/metrics", post(ingest_metrics))
        .route("/db/query", post(db_query))
        .route("/metrics/percentile", get(percentile))
        .route("/metrics/error-rate", get(error_rate))
        .route("/traces/slow", get(slow_traces))
        .route("/system/cpu", get(system_cpu))
        .route("/system/memory", get(system_memory))
        .route("/emit", post(emit))
        .route("/events", get(events))
}

/// An OTLP failure in the OTLP way: a `google.rpc.Status` in the request's
/// encoding, with the status code the exporter retries on (or not).
fn otlp_error(status: StatusCode, message: &str, encoding: Encoding) -> Response {
    let body = match encoding {
        Encoding::Json => serde_json::to_vec(&json!({"code": grpc_code(status), "message": message})).unwrap_or_default(),
        Encoding::Protobuf => {
            use prost::Message;
            #[derive(Clone, PartialEq, prost::Message)]
            struct RpcStatus {
                #[prost(int32, tag = "1")]
                code: i32,
                #[prost(string, tag = "2")]
                message: String,
            }
            RpcStatus { code: grpc_code(status), message: message.to_string() }.encode_to_vec()
        }
    };
    let mut response = (status, [(header::CONTENT_TYPE, encoding.content_type())], body).into_response();
    if status == StatusCode::SERVICE_UNAVAILABLE {
        response.headers_mut().insert(header::RETRY_AFTER, "1".parse().expect("static header"));
    }
    response
}

fn grpc_code(status: StatusCode) -> i32 {
    match status {
        StatusCode::BAD_REQUEST | StatusCode::PAYLOAD_TOO_LARGE => 3,
        StatusCode::SERVICE_UNAVAILABLE => 14,
        StatusCode::UNSUPPORTED_MEDIA_TYPE => 12,
        _ => 13,
    }
}

fn otlp_payload(
    app: &AppState,
    headers: &HeaderMap,
    body: Result<Bytes, BytesRejection>,
) -> Result<(Vec<u8>, Encoding), Response> {
    let content_type = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok());
    let Some(encoding) = Encoding::from_content_type(content_type) else {
        return Err(otlp_error(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "send application/x-protobuf or application/json",
            Encoding::Json,
        ));
    };
    let limit = app.config.max_body_size.as_u64() as usize;
    let body = body.map_err(|r| otlp_error(r.status(), &r.body_text(), encoding))?;
    let gzip = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.eq_ignore_ascii_case("gzip"));
    let bytes = otlp::decompress(&body, gzip, limit).map_err(|e| {
        let status = match e {
            otlp::DecodeError::TooLarge(_) => StatusCode::PAYLOAD_TOO_LARGE,
            _ => StatusCode::BAD_REQUEST,
        };
        otlp_error(status, &e.to_string(), encoding)
    })?;
    Ok((bytes, encoding))
}

/// One OTLP export: read and decode the payload off the async runtime,
/// store its rows (answered once committed), reply in the request's encoding.
async fn ingest<M, D>(app: AppState, headers: HeaderMap, body: Result<Bytes, BytesRejection>, decode: D) -> Response
where
    M: prost::Message + serde::Serialize + Send + 'static,
    D: FnOnce(&[u8], Encoding) -> Result<(super::rows::Rows, M), otlp::DecodeError> + Send + 'static,
{
    let (bytes, encoding) = match otlp_payload(&app, &headers, body) {
        Ok(v) => v,
        Err(r) => return r,
    };
    let (rows, response) = match tokio::task::spawn_blocking(move || decode(&bytes, encoding)).await {
        Ok(Ok(v)) => v,
        Ok(Err(e)) => return otlp_error(StatusCode::BAD_REQUEST, &e.to_string(), encoding),
        Err(e) => return otlp_error(StatusCode::INTERNAL_SERVER_ERROR, &e.to_string(), encoding),
    };
    if let Err(e) = app.live.writer.write(rows).await {
        // Retryable for the exporter: the queue is full or the writer is down.
        return otlp_error(StatusCode::SERVICE_UNAVAILABLE, &e.to_string(), encoding);
    }
    (StatusCode::OK, [(header::CONTENT_TYPE, encoding.content_type())], otlp::encode(&response, encoding)).into_response()
}

async fn ingest_traces(State(app): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    ingest::<ExportTraceServiceResponse, _>(app, headers, body, otlp::traces).await
}

async fn ingest_metrics(State(app): State<AppState>, headers: HeaderMap, body: Result<Bytes, BytesRejection>) -> Response {
    let live = app.live.clone();
    ingest::<ExportMetricsServiceResponse, _>(app, headers, body, move |bytes, encoding| otlp::metrics(bytes, encoding, &live.deltas)).await
}

async fn db_query(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, Error> {
    let body = request::body(body, app.config.max_body_size.as_u64() as usize)?;
    let obj = request::json_object(&body)?;
    let sql = Field::new("sql").required_str(&obj)?.to_string();
    let params = match obj.get("params") {
        None | Some(Value::Null) => Vec::new(),
        Some(Value::Array(items)) => items.iter().map(param).collect(),
        Some(_) => return Err(Error::invalid("params must be an array")),
    };
    let cap = app.config.max_rows;
    let max_rows = match Field::new("max_rows").optional_u64(&obj)? {
        Some(0) => return Err(Error::invalid("max_rows must be at least 1")),
        Some(n) => (n as usize).min(cap),
        None => cap,
    };
    let result = app
        .live
        .pool
        .read(Read {
            sql,
            params,
            max_rows,
            max_bytes: app.config.max_result_size.as_u64() as usize,
            timeout: app.config.db_query_timeout(),
            trusted: false,
        })
        .await?;
    let columns: Vec<String> = result.schema.fields().iter().map(|f| f.name().clone()).collect();
    let mut out = Vec::with_capacity(1024);
    out.push(b'{');
    let count = write_columns_and_rows(&mut out, &columns, &result.batches);
    out.extend_from_slice(format!(",\"count\":{count},\"truncated\":{}}}", result.truncated).as_bytes());
    Ok(([(header::CONTENT_TYPE, "application/json")], out).into_response())
}

type Params = Query<HashMap<String, String>>;

fn required<'a>(q: &'a HashMap<String, String>, name: &str) -> Result<&'a str, Error> {
    q.get(name)
        .map(String::as_str)
        .filter(|s| !s.trim().is_empty())
        .ok_or_else(|| Error::invalid(format!("query parameter {name} is required")))
}

fn number<T: std::str::FromStr>(q: &HashMap<String, String>, name: &str, default: Option<T>, what: &str) -> Result<T, Error> {
    match q.get(name) {
        None => default.ok_or_else(|| Error::invalid(format!("query parameter {name} is required ({what})"))),
        Some(v) => v.trim().parse().map_err(|_| Error::invalid(format!("query parameter {name} must be {what}, got {v:?}"))),
    }
}

fn window(q: &HashMap<String, String>) -> Result<u64, Error> {
    let w: u64 = number(q, "window_ms", Some(300_000), "a positive number of milliseconds")?;
    if w == 0 || w > super::metrics::MAX_WINDOW_MS {
        return Err(Error::invalid(format!(
            "query parameter window_ms must be between 1 and {} milliseconds",
            super::metrics::MAX_WINDOW_MS
        )));
    }
    Ok(w)
}

async fn percentile(State(app): State<AppState>, Query(q): Params) -> Result<Json<Value>, Error> {
    let service = required(&q, "service")?;
    let metric = q.get("metric").map(String::as_str).filter(|m| !m.is_empty()).unwrap_or("http.server.request.duration");
    let p: f64 = number(&q, "p", None, "a number in (0, 1]")?;
    if !(p > 0.0 && p <= 1.0) {
        return Err(Error::invalid(format!("query parameter p must be a number in (0, 1], got {p}")));
    }
    let window_ms = window(&q)?;
    let (value, _) = app.live.lookups.percentile(service, metric, p, window_ms).await?;
    Ok(Json(serde_json::to_value(value).map_err(Error::internal)?))
}

async fn error_rate(State(app): State<AppState>, Query(q): Params) -> Result<Json<Value>, Error> {
    let service = required(&q, "service")?;
    let window_ms = window(&q)?;
    let (value, _) = app.live.lookups.error_rate(service, window_ms).await?;
    Ok(Json(serde_json::to_value(value).map_err(Error::internal)?))
}

async fn internal_read(app: &AppState, sql: &str, params: Vec<duckdb::types::Value>, timeout: Duration, max_rows: usize) -> Result<Vec<serde_json::Map<String, Value>>, Error> {
    let result = app
        .live
        .pool
        .read(Read { sql: sql.into(), params, max_rows, max_bytes: INTERNAL_MAX_BYTES, timeout, trusted: true })
        .await?;
    Ok(rows_as_values(&result.batches))
}

async fn slow_traces(State(app): State<AppState>, Query(q): Params) -> Result<Json<Value>, Error> {
    let service = q.get("service").cloned().unwrap_or_default();
    let min: f64 = number(&q, "min_duration_ms", Some(0.0), "a number of milliseconds")?;
    let window_ms = window(&q)?;
    let limit: usize = number(&q, "limit", Some(20), "a positive integer")?;
    let limit = limit.clamp(1, 1000);
    let cutoff = super::metrics::cutoff_us(chrono::Utc::now(), window_ms);
    let rows = internal_read(
        &app,
        "SELECT trace_id, span_id, service_name, span_name, duration_ms, timestamp, http_status, http_method, http_route, is_error \
         FROM otel_spans_local WHERE (? = '' OR service_name = ?) AND duration_ms >= ? AND timestamp >= make_timestamp(?::BIGINT) \
         ORDER BY duration_ms DESC LIMIT ?",
        vec![service.clone().into(), DuckValue::Text(service.to_string()), min.into(), cutoff.into(), (limit as i64).into()],
        app.config.metrics_timeout(),
        limit,
    )
    .await?;
    Ok(Json(json!({ "traces": rows, "count": rows.len(), "window_ms": window_ms })))
}

async fn latest(app: &AppState, metric: &str) -> Result<Option<serde_json::Map<String, Value>>, Error> {
    let rows = internal_read(
        app,
        "SELECT value, unit, timestamp FROM system_metrics_local WHERE metric_name = ? ORDER BY timestamp DESC LIMIT 1",
        vec![DuckValue::Text(metric.to_string())],
        SYSTEM_TIMEOUT,
        1,
    )
    .await?;
    Ok(rows.into_iter().next())
}

async fn system_cpu(State(app): State<AppState>) -> Result<Json<Value>, Error> {
    let cpu = latest(&app, CPU_METRIC).await?;
    Ok(Json(json!({
        "metric": CPU_METRIC,
        "value": cpu.as_ref().map(|r| r["value"].clone()),
        "unit": "%",
        "timestamp": cpu.as_ref().map(|r| r["timestamp"].clone()),
    })))
}

async fn system_memory(State(app): State<AppState>) -> Result<Json<Value>, Error> {
    let used = latest(&app, MEMORY_USED_METRIC).await?;
    let total = latest(&app, MEMORY_TOTAL_METRIC).await?;
    let utilization = latest(&app, MEMORY_UTILIZATION_METRIC).await?;
    let value = |r: &Option<serde_json::Map<String, Value>>| r.as_ref().map(|r| r["value"].clone()).unwrap_or(Value::Null);
    Ok(Json(json!({
        "used_bytes": value(&used),
        "total_bytes": value(&total),
        "utilization_percent": value(&utilization),
        "timestamp": used.as_ref().map(|r| r["timestamp"].clone()),
    })))
}

pub const SEVERITIES: &[&str] = &["debug", "info", "warning", "error", "critical"];

async fn emit(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Json<Value>, Error> {
    let body = request::body(body, app.config.max_body_size.as_u64() as usize)?;
    let obj = request::json_object(&body)?;
    let name = Field::new("name").required_str(&obj)?.to_string();
    let severity = Field::new("severity").optional_str(&obj)?.unwrap_or("info").to_ascii_lowercase();
    if !SEVERITIES.contains(&severity.as_str()) {
        return Err(Error::invalid(format!("severity must be one of {}", SEVERITIES.join(", "))));
    }
    let data = obj.get("data").cloned().unwrap_or_else(|| json!({}));
    let id = app
        .live
        .writer
        .event(EventRow {
            timestamp_us: chrono::Utc::now().timestamp_micros(),
            name,
            severity,
            source: "emit".into(),
            data: data.to_string(),
        })
        .await
        .map_err(|e| Error::Busy { message: e.to_string(), extra: Default::default() })?;
    Ok(Json(json!({ "id": id })))
}

/// `since` as epoch milliseconds or an ISO 8601 timestamp.
pub fn parse_since(text: &str) -> Result<i64, Error> {
    if let Ok(ms) = text.trim().parse::<i64>() {
        return ms.checked_mul(1000).ok_or_else(|| Error::invalid("since is out of range"));
    }
    chrono::DateTime::parse_from_rfc3339(text.trim())
        .map(|t| t.timestamp_micros())
        .map_err(|_| Error::invalid(format!("since must be epoch milliseconds or an ISO 8601 timestamp, got {text:?}")))
}

async fn events(State(app): State<AppState>, Query(q): Params) -> Result<Json<Value>, Error> {
    let since = q.get("since").map(|s| parse_since(s)).transpose()?.unwrap_or(0);
    let severity = q.get("severity").cloned().unwrap_or_default().to_ascii_lowercase();
    if !severity.is_empty() && !SEVERITIES.contains(&severity.as_str()) {
        return Err(Error::invalid(format!("severity must be one of {}", SEVERITIES.join(", "))));
    }
    let limit: usize = number(&q, "limit", Some(100), "a positive integer")?;
    let limit = limit.clamp(1, 1000);
    let mut rows = internal_read(
        &app,
        "SELECT id, timestamp, name, severity, source, data FROM events_local \
         WHERE timestamp >= make_timestamp(?::BIGINT) AND (? = '' OR severity = ?) ORDER BY id DESC LIMIT ?",
        vec![since.into(), DuckValue::Text(severity.clone()), DuckValue::Text(severity), (limit as i64).into()],
        app.config.metrics_timeout(),
        limit,
    )
    .await?;
    for row in &mut rows {
        if let Some(Value::String(text)) = row.get("data") {
            let parsed = serde_json::from_str(text).unwrap_or(Value::String(text.clone()));
            row.insert("data".into(), parsed);
        }
    }
    Ok(Json(json!({ "events": rows, "count": rows.len() })))
}
