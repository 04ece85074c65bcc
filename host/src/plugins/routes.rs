//! Plugin and alert routes.
//!
//! `PUT /plugins/{name}` takes the component (or a core module carrying its
//! component type) as the body; limits, schedule and config come as query
//! parameters (`?interval=30s&memory=64MiB&timeout=5s&config.threshold_ms=300`)
//! or as a JSON `manifest` parameter, so curl is enough to install one.

use std::collections::BTreeMap;
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use duckdb::types::Value as DuckValue;
use serde_json::{json, Value};

use super::componentize::componentize;
use super::registry::{valid_name, Installed, RegistryError, Settings};
use super::RunError;
use crate::error::Error;
use crate::live::routes::parse_since;
use crate::query::json::rows_as_values;
use crate::server::AppState;

/// `max_body_bytes` bounds what the upload route reads: the plugin size limit
/// is checked in the handler so an oversized upload still gets its 400 (a
/// server that stops reading mid-body leaves the client with a broken pipe).
pub fn routes(max_body_bytes: usize) -> Router<AppState> {
    Router::new()
        .route("/plugins", get(list))
        .route(
            "/plugins/{name}",
            get(show).put(upload).delete(remove).layer(DefaultBodyLimit::max(max_body_bytes)),
        )
        .route("/plugins/{name}/run", post(run))
        .route("/plugins/{name}/runs", get(runs))
        .route("/alerts", get(alerts))
        .route("/alerts/{id}/ack", post(ack))
}

impl From<RegistryError> for Error {
    fn from(e: RegistryError) -> Self {
        match e {
            RegistryError::BadName | RegistryError::Load(_) => Error::Invalid(e.to_string()),
            RegistryError::NotFound(_) => Error::NotFound(e.to_string()),
            RegistryError::Io(_) => Error::Internal(e.to_string()),
        }
    }
}

impl From<RunError> for Error {
    fn from(e: RunError) -> Self {
        match e {
            RunError::NotFound(_) => Error::NotFound(e.to_string()),
            RunError::Busy(_) => Error::Busy { message: e.to_string(), extra: Default::default() },
        }
    }
}

/// Admin routes need `Authorization: Bearer <DUCKGATE_ADMIN_TOKEN>` when a
/// token is configured.
fn authorize(app: &AppState, headers: &HeaderMap) -> Result<(), Error> {
    let Some(expected) = app.config.admin_token.as_deref() else { return Ok(()) };
    let given = headers
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or("");
    let same = given.len() == expected.len()
        && given.bytes().zip(expected.bytes()).fold(0u8, |acc, (a, b)| acc | (a ^ b)) == 0;
    if same {
        Ok(())
    } else {
        Err(Error::Unauthorized(
            "this route needs `Authorization: Bearer <token>` with the gateway's DUCKGATE_ADMIN_TOKEN".into(),
        ))
    }
}

fn settings_from_query(params: &[(String, String)]) -> Result<Settings, Error> {
    let mut settings = Settings::default();
    let bad = |key: &str, value: &str, what: &str| Error::invalid(format!("query parameter {key}={value:?} must be {what}"));
    let int = |key: &str, value: &str| value.trim().parse::<u64>().map_err(|_| bad(key, value, "a non-negative integer"));
    let duration_ms = |key: &str, value: &str| {
        humantime::parse_duration(value.trim())
            .map(|d| d.as_millis() as u64)
            .map_err(|_| bad(key, value, "a duration such as 500ms, 5s or 1m"))
    };
    let bytes = |key: &str, value: &str| {
        value.trim().parse::<bytesize::ByteSize>().map(|b| b.as_u64()).map_err(|_| bad(key, value, "a size such as 64MiB"))
    };
    for (key, value) in params {
        let l = &mut settings.limits;
        match key.as_str() {
            "manifest" => {
                let from_json: Settings = serde_json::from_str(value)
                    .map_err(|e| Error::invalid(format!("manifest is not a valid plugin manifest: {e}")))?;
                let config = std::mem::take(&mut settings.config);
                settings = Settings { config: from_json.config.into_iter().chain(config).collect(), ..from_json };
            }
            "interval_ms" => settings.interval_ms = Some(int(key, value)?),
            "interval" => settings.interval_ms = Some(duration_ms(key, value)?),
            "memory" => l.memory_bytes = Some(bytes(key, value)?),
            "memory_bytes" => l.memory_bytes = Some(int(key, value)?),
            "timeout" => l.timeout_ms = Some(duration_ms(key, value)?),
            "timeout_ms" => l.timeout_ms = Some(int(key, value)?),
            "rows_per_query" => l.rows_per_query = Some(int(key, value)?),
            "rows_per_invocation" => l.rows_per_invocation = Some(int(key, value)?),
            "host_calls" => l.host_calls = Some(int(key, value)?),
            "result_bytes" => l.result_bytes = Some(int(key, value)?),
            "alerts" => l.alerts = Some(int(key, value)?),
            other => match other.strip_prefix("config.") {
                Some(k) if !k.is_empty() => {
                    settings.config.insert(k.to_string(), value.clone());
                }
                _ => {
                    return Err(Error::invalid(format!(
                        "unknown query parameter {other:?}; use interval, memory, timeout, rows_per_query, rows_per_invocation, host_calls, result_bytes, alerts, config.<key> or manifest"
                    )))
                }
            },
        }
    }
    if settings.interval_ms == Some(0) {
        settings.interval_ms = None;
    }
    if matches!(settings.interval_ms, Some(ms) if ms < 100) {
        return Err(Error::invalid("interval must be at least 100ms"));
    }
    Ok(settings)
}

fn summary(app: &AppState, p: &Installed) -> Value {
    let name = &p.manifest.name;
    let last = app.plugins.registry.runs(name, 1).into_iter().next();
    json!({
        "name": name,
        "version": p.manifest.version,
        "interval_ms": p.manifest.settings.interval_ms,
        "limits": p.limits,
        "last_run": last.map(|r| json!({
            "started_at_ms": r.started_at_ms, "outcome": r.outcome, "wall_ms": r.wall_ms, "trigger": r.trigger
        })),
        "counters": app.plugins.registry.counters(name),
        "next_run_at_ms": app.plugins.scheduler.next_run_ms(name),
    })
}

async fn list(State(app): State<AppState>) -> Json<Value> {
    let plugins: Vec<Value> = app.plugins.registry.list().iter().map(|p| summary(&app, p)).collect();
    Json(json!({ "plugins": plugins, "runtime": app.plugins.runtime().stats() }))
}

async fn show(State(app): State<AppState>, Path(name): Path<String>) -> Result<Json<Value>, Error> {
    let p = app.plugins.registry.get(&name).ok_or_else(|| Error::NotFound(format!("no plugin named {name:?}")))?;
    let mut body = summary(&app, &p);
    body["versions"] = json!(p.manifest.versions);
    body["config"] = json!(p.manifest.settings.config);
    body["overrides"] = json!(p.manifest.settings.limits);
    body["created_at_ms"] = json!(p.manifest.created_at_ms);
    body["updated_at_ms"] = json!(p.manifest.updated_at_ms);
    Ok(Json(body))
}

async fn upload(
    State(app): State<AppState>,
    Path(name): Path<String>,
    headers: HeaderMap,
    Query(params): Query<Vec<(String, String)>>,
    body: Result<Bytes, BytesRejection>,
) -> Result<Response, Error> {
    authorize(&app, &headers)?;
    if !valid_name(&name) {
        return Err(RegistryError::BadName.into());
    }
    let limit = app.config.max_plugin_size.as_u64() as usize;
    let too_big = || Error::invalid(format!("the plugin is larger than the {limit}-byte limit (DUCKGATE_MAX_PLUGIN_SIZE)"));
    let body = body.map_err(|r| if r.status() == StatusCode::PAYLOAD_TOO_LARGE { too_big() } else { Error::invalid(r.body_text()) })?;
    if body.len() > limit {
        return Err(too_big());
    }
    if body.is_empty() {
        return Err(Error::invalid("the request body must be the plugin's .wasm file"));
    }
    let settings = settings_from_query(&params)?;
    let component = tokio::task::spawn_blocking(move || componentize(&body)).await?.map_err(Error::Invalid)?;
    let existed = app.plugins.registry.get(&name).is_some();
    let installed = app.plugins.install(&name, component, settings).await?;
    tracing::info!(plugin = %name, version = %installed.manifest.version, "plugin installed");
    let status = if existed { StatusCode::OK } else { StatusCode::CREATED };
    Ok((status, Json(summary(&app, &installed))).into_response())
}

async fn remove(State(app): State<AppState>, Path(name): Path<String>, headers: HeaderMap) -> Result<Json<Value>, Error> {
    authorize(&app, &headers)?;
    app.plugins.remove(&name)?;
    Ok(Json(json!({ "deleted": name })))
}

async fn run(State(app): State<AppState>, Path(name): Path<String>, body: Result<Bytes, BytesRejection>) -> Result<Response, Error> {
    let body = crate::request::body(body, app.config.max_body_size.as_u64() as usize)?;
    let input = if body.iter().all(u8::is_ascii_whitespace) {
        "{}".to_string()
    } else {
        serde_json::from_slice::<Value>(&body).map_err(|_| Error::InvalidJson)?.to_string()
    };
    let result = app.plugins.run(&name, input, "manual").await?;
    let ok = result.receipt.outcome.is_ok();
    let mut body = json!({ "ok": ok, "output": result.output, "receipt": result.receipt });
    if !ok {
        body["error"] = json!(describe(&result.receipt.outcome));
    }
    let status = if ok { StatusCode::OK } else { StatusCode::UNPROCESSABLE_ENTITY };
    Ok((status, Json(body)).into_response())
}

fn describe(outcome: &super::receipt::Outcome) -> String {
    use super::receipt::Outcome;
    match outcome {
        Outcome::Ok => "ok".into(),
        Outcome::Error { message } => format!("the plugin returned an error: {message}"),
        Outcome::Trap { reason } => format!("the plugin trapped: {reason}"),
        Outcome::Timeout { limit_ms } => format!("the plugin ran past its {limit_ms} ms time limit and was stopped"),
        Outcome::Limit { detail, .. } => format!("the plugin hit its {detail}"),
    }
}

async fn runs(State(app): State<AppState>, Path(name): Path<String>, Query(q): Query<BTreeMap<String, String>>) -> Result<Json<Value>, Error> {
    if app.plugins.registry.get(&name).is_none() {
        return Err(Error::NotFound(format!("no plugin named {name:?}")));
    }
    let limit = match q.get("limit") {
        Some(v) => v.parse::<usize>().map_err(|_| Error::invalid("limit must be a positive integer"))?,
        None => 20,
    };
    Ok(Json(json!({ "runs": app.plugins.registry.runs(&name, limit.clamp(1, 1000)) })))
}

async fn alerts(State(app): State<AppState>, Query(q): Query<BTreeMap<String, String>>) -> Result<Json<Value>, Error> {
    let since = q.get("since").map(|s| parse_since(s)).transpose()?.unwrap_or(0);
    let plugin = q.get("plugin").cloned().unwrap_or_default();
    let severity = q.get("severity").cloned().unwrap_or_default().to_ascii_lowercase();
    if !severity.is_empty() && !["info", "warning", "critical"].contains(&severity.as_str()) {
        return Err(Error::invalid("severity must be info, warning or critical"));
    }
    let limit = match q.get("limit") {
        Some(v) => v.parse::<usize>().map_err(|_| Error::invalid("limit must be a positive integer"))?,
        None => 100,
    }
    .clamp(1, 1000);
    let result = app
        .live
        .pool
        .read(crate::live::pool::Read {
            sql: "SELECT id, plugin, name, severity, message, data, dedup_key, first_seen, last_seen, count, acked_at \
                  FROM alerts_local WHERE last_seen >= make_timestamp(?::BIGINT) AND (? = '' OR plugin = ?) \
                  AND (? = '' OR severity = ?) ORDER BY last_seen DESC, id DESC LIMIT ?"
                .into(),
            params: vec![since.into(), DuckValue::Text(plugin.clone()), DuckValue::Text(plugin), DuckValue::Text(severity.clone()), DuckValue::Text(severity), (limit as i64).into()],
            max_rows: limit,
            max_bytes: crate::live::pool::INTERNAL_MAX_BYTES,
            timeout: Duration::from_secs(10),
            trusted: true,
        })
        .await?;
    let mut rows = rows_as_values(&result.batches);
    for row in &mut rows {
        if let Some(Value::String(text)) = row.get("data") {
            let parsed = serde_json::from_str(text).unwrap_or(Value::String(text.clone()));
            row.insert("data".into(), parsed);
        }
    }
    Ok(Json(json!({ "alerts": rows, "count": rows.len() })))
}

async fn ack(State(app): State<AppState>, Path(id): Path<String>) -> Result<Json<Value>, Error> {
    let id: i64 = id.parse().map_err(|_| Error::invalid("alert id must be an integer"))?;
    let found = app
        .live
        .writer
        .ack_alert(id)
        .await
        .map_err(|e| Error::Busy { message: e.to_string(), extra: Default::default() })?;
    if !found {
        return Err(Error::NotFound(format!("no alert with id {id}")));
    }
    Ok(Json(json!({ "id": id, "acked": true })))
}
