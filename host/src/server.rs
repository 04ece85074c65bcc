//! The HTTP server: shared state, the route table, and graceful shutdown.
//!
//! Handlers are thin: they read the body, call the module that does the work
//! and turn its result into a response. Errors become HTTP in one place
//! ([`crate::error`]).

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::body::{Body, Bytes};
use axum::extract::rejection::BytesRejection;
use axum::extract::{DefaultBodyLimit, Request, State};
use axum::middleware::{self, Next};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use tower_http::catch_panic::CatchPanicLayer;
use tower_http::trace::TraceLayer;

use crate::admission::Gate;
use crate::live::pool::PoolSettings;
use crate::live::{LiveSettings, LiveStore};
use crate::plugins::host_api::HostServices;
use crate::plugins::registry::Registry;
use crate::plugins::runtime::{Runtime, RuntimeSettings};
use crate::plugins::Plugins;
use crate::config::Config;
use crate::error::{error_body, Error};
use crate::object_cache::ObjectCache;
use crate::objects::Stores;
use crate::config::QueryInstances;
use crate::query::sandbox::{InstanceSettings, Sandboxes};
use crate::query::shared::SharedInstances;
use crate::statement::Verdicts;
use crate::request;

/// Everything the handlers share. Built once at start-up.
pub struct App {
    pub config: Config,
    pub stores: Arc<Stores>,
    pub object_cache: ObjectCache,
    pub sandboxes: Sandboxes,
    /// Set when `/query` reuses instances (`DUCKGATE_QUERY_INSTANCES=shared`).
    pub shared: Option<SharedInstances>,
    /// Read-only verdicts on `/query` SQL.
    pub verdicts: Verdicts,
    pub queries: Gate,
    pub snapshots: Gate,
    pub live: Arc<LiveStore>,
    pub plugins: Arc<Plugins>,
    pub active_requests: AtomicUsize,
    pub started: Instant,
}

pub type AppState = Arc<App>;

impl App {
    pub fn new(config: Config) -> anyhow::Result<AppState> {
        config.validate().map_err(anyhow::Error::msg)?;
        std::fs::create_dir_all(&config.data_dir).map_err(|e| {
            anyhow::anyhow!("cannot create the data directory {}: {e}; pass --data-dir", config.data_dir.display())
        })?;
        let stores = Stores::new(
            config.object_store.as_deref(),
            config.default_object_dir(),
            config.s3_endpoint_allowlist.clone(),
        )?;
        let object_cache = ObjectCache::new(&config.object_cache_dir(), config.object_cache_size.as_u64())?;
        let sandboxes = Sandboxes::start(
            InstanceSettings {
                threads: config.duckdb_threads,
                memory_limit: config.duckdb_memory_limit.clone(),
                enable_object_cache: config.duckdb_enable_object_cache,
                temp_root: config.data_dir.join("cache").join("duckdb-tmp"),
            },
            config.max_concurrent_queries.clamp(1, 4),
        )?;
        let live = LiveStore::open(&LiveSettings {
            path: config.live_db_path(),
            memory_limit: config.duckdb_memory_limit.clone(),
            threads: config.duckdb_threads,
            flush_interval: Duration::from_millis(config.flush_interval_ms),
            retention: config.retention,
            retention_every: config.retention_interval,
            pool: PoolSettings {
                max_open: config.pool_max_open,
                max_idle: config.pool_max_idle,
                max_lifetime: config.pool_max_lifetime,
                slow_query: config.slow_query,
            },
            cache_ttl: config.metrics_cache_ttl,
            cache_entries: config.metrics_cache_entries,
            metrics_timeout: config.metrics_timeout,
            alert_dedup_window: config.alert_dedup_window,
        })?;
        let live = Arc::new(live);
        let runtime = Arc::new(Runtime::new(
            RuntimeSettings {
                cache_dir: config.data_dir.join("plugins").join("compiled"),
                defaults: config.plugin_limits(),
                memory_ceiling: config.plugin_memory_ceiling.as_u64(),
                max_concurrent: config.plugin_concurrency,
                max_queue: config.plugin_queue,
            },
            Arc::new(HostServices { live: live.clone() }),
        )?);
        let registry = Registry::open(config.data_dir.join("plugins"), runtime, config.plugin_run_history)?;
        let plugins = Plugins::new(registry);
        Ok(Arc::new(App {
            live,
            plugins,
            active_requests: AtomicUsize::new(0),
            queries: Gate::new(config.max_concurrent_queries, config.max_query_queue),
            snapshots: Gate::new(config.max_concurrent_snapshots, config.max_snapshot_queue),
            stores: Arc::new(stores),
            object_cache,
            shared: (config.query_instances == QueryInstances::Shared).then(|| SharedInstances::new(sandboxes.clone())),
            sandboxes,
            verdicts: Verdicts::new(10_000),
            started: Instant::now(),
            config,
        }))
    }
}

pub fn router(state: AppState) -> Router {
    let body_limit = state.config.max_body_size.as_u64() as usize;
    Router::new()
        .route("/health", get(health))
        .route("/pool-stats", get(pool_stats))
        .route("/snapshot-queue-stats", get(snapshot_queue_stats))
        .route("/snapshot", post(snapshot))
        .route("/query", post(query))
        .merge(crate::live::routes::routes())
        .merge(crate::plugins::routes::routes(body_limit.max(state.config.max_plugin_size.as_u64() as usize + 1)))
        .fallback(not_found)
        .method_not_allowed_fallback(method_not_allowed)
        .layer(DefaultBodyLimit::max(body_limit))
        .layer(CatchPanicLayer::custom(panic_response))
        .layer(middleware::from_fn_with_state(state.clone(), count_active))
        .layer(TraceLayer::new_for_http())
        .with_state(state)
}

/// Counts requests in flight for `/health`; the guard also counts down a
/// request whose client went away mid-way.
async fn count_active(State(app): State<AppState>, request: Request, next: Next) -> Response {
    struct InFlight(AppState);
    impl Drop for InFlight {
        fn drop(&mut self) {
            self.0.active_requests.fetch_sub(1, Ordering::AcqRel);
        }
    }
    app.active_requests.fetch_add(1, Ordering::AcqRel);
    let _in_flight = InFlight(app);
    next.run(request).await
}

/// A panic in a handler is a bug; the caller still gets JSON.
fn panic_response(_: Box<dyn std::any::Any + Send + 'static>) -> Response {
    tracing::error!("a request handler panicked");
    error_body(StatusCode::INTERNAL_SERVER_ERROR, "internal error; the gateway logged it")
}

/// The sidecar's health body plus the seed SDK server's pool stats. Reads
/// counters only, so it answers even when DuckDB is saturated.
async fn health(State(app): State<AppState>) -> Json<serde_json::Value> {
    let pool = app.live.pool.stats();
    Json(json!({
        "status": "ok",
        "service": "duckdb-sidecar",
        "version": env!("CARGO_PKG_VERSION"),
        "uptime_ms": app.started.elapsed().as_millis() as u64,
        "active_requests": app.active_requests.load(Ordering::Acquire).saturating_sub(1),
        "db_stats": {
            "open_connections": pool.open_connections,
            "in_use": pool.in_use,
            "idle": pool.idle,
            "max_open": pool.max_open,
            "queries": pool.queries,
            "timeouts": pool.timeouts,
        },
        "writer": app.live.writer.stats(),
        "metrics_cache": app.live.lookups.stats(),
        "plugins": app.plugins.runtime().stats(),
    }))
}

/// The Node sidecar reported its DuckDB pool here; duckgate reports the
/// spare instances, both routes' queues and the object cache.
async fn pool_stats(State(app): State<AppState>) -> Json<serde_json::Value> {
    let queries = app.queries.stats();
    let idle = app.sandboxes.spares_ready();
    Json(json!({
        "enabled": true,
        "idle": idle,
        "active": queries.running,
        "total": idle + queries.running,
        "minSize": app.sandboxes.spares_target(),
        "instances": app.config.query_instances,
        "shared": app.shared.as_ref().map(SharedInstances::stats),
        "maxSize": queries.max_concurrent,
        "queries": queries,
        "snapshots": app.snapshots.stats(),
        "object_cache": app.object_cache.stats().await,
    }))
}

async fn snapshot_queue_stats(State(app): State<AppState>) -> Json<serde_json::Value> {
    let s = app.snapshots.stats();
    Json(json!({
        "maxConcurrent": s.max_concurrent,
        "maxQueue": s.max_queue,
        "running": s.running,
        "queued": s.queued,
        "completed": s.completed,
        "rejected": s.rejected,
        "queries": app.queries.stats(),
        "object_cache": app.object_cache.stats().await,
    }))
}

async fn snapshot(State(app): State<AppState>, headers: HeaderMap, body: Body) -> Result<Response, Error> {
    let body = request::sized_body(&headers, body, app.config.max_body_size.as_u64() as usize).await?;
    let result = crate::snapshot::run(&app, body).await?;
    Ok(Json(result).into_response())
}

async fn query(State(app): State<AppState>, body: Result<Bytes, BytesRejection>) -> Result<Response, Error> {
    let body = request::body(body, app.config.max_body_size.as_u64() as usize)?;
    let json = crate::query::run(&app, &body).await?;
    Ok(([(header::CONTENT_TYPE, "application/json")], json).into_response())
}

async fn not_found() -> Response {
    error_body(StatusCode::NOT_FOUND, "no such route; see the README for the routes duckgate serves")
}

async fn method_not_allowed() -> Response {
    error_body(StatusCode::METHOD_NOT_ALLOWED, "method not allowed on this route")
}

/// Serves until SIGINT or SIGTERM, then stops accepting and lets in-flight
/// requests finish.
pub async fn serve(state: AppState) -> anyhow::Result<()> {
    let addr = state.config.listen_addr();
    let listener = tokio::net::TcpListener::bind(addr)
        .await
        .map_err(|e| anyhow::anyhow!("cannot listen on {addr}: {e}; is another duckgate running? pass --port"))?;
    tracing::info!(
        %addr,
        data_dir = %state.config.data_dir.display(),
        object_store = %state.stores.default_description(),
        "duckgate listening"
    );
    tokio::spawn(crate::live::collector::run(state.live.writer.clone(), state.config.collector_interval));
    state.plugins.start_schedules();
    axum::serve(listener, router(state))
        .with_graceful_shutdown(shutdown_signal())
        .await?;
    tracing::info!("duckgate stopped");
    Ok(())
}

async fn shutdown_signal() {
    let ctrl_c = async {
        let _ = tokio::signal::ctrl_c().await;
    };
    let term = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut s) => {
                s.recv().await;
            }
            Err(_) => std::future::pending::<()>().await,
        }
    };
    tokio::select! {
        _ = ctrl_c => {},
        _ = term => {},
    }
    tracing::info!("shutdown requested; finishing in-flight requests");
}
