//! Configuration: one typed struct, read once at start-up from flags and the
//! environment.
//!
//! Every variable of the Node sidecar keeps its name and default so a
//! deployment can swap the sidecar for duckgate without touching its
//! environment. Each variable is also a flag; a flag wins over the variable.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::PathBuf;
use std::time::Duration;

use bytesize::ByteSize;
use clap::{ArgAction, Args};

/// The default port, shared with the Node sidecar.
pub const DEFAULT_PORT: u16 = 3214;

/// How `/query` gets its DuckDB instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, serde::Serialize)]
#[serde(rename_all = "lowercase")]
pub enum QueryInstances {
    Fresh,
    Shared,
}

/// `duckgate serve` options.
#[derive(Debug, Clone, Args)]
pub struct Config {
    /// HTTP port.
    #[arg(long, env = "PORT", default_value_t = DEFAULT_PORT)]
    pub port: u16,

    /// Address to listen on. Anything but loopback exposes the gateway to the
    /// network: put it behind TLS and set DUCKGATE_ADMIN_TOKEN.
    #[arg(long, env = "DUCKGATE_HOST", default_value_t = IpAddr::V4(Ipv4Addr::LOCALHOST))]
    pub host: IpAddr,

    /// Worker threads of each DuckDB instance (DuckDB's default, one per core, when unset).
    #[arg(long, env = "DUCKDB_THREADS")]
    pub duckdb_threads: Option<u32>,

    /// Memory limit of each DuckDB instance, in DuckDB's syntax.
    #[arg(long, env = "DUCKDB_MEMORY_LIMIT", default_value = "6GB")]
    pub duckdb_memory_limit: String,

    /// DuckDB's object cache (Parquet metadata) inside an instance.
    #[arg(long, env = "DUCKDB_ENABLE_OBJECT_CACHE", default_value_t = true, action = ArgAction::Set)]
    pub duckdb_enable_object_cache: bool,

    /// At most this many `/query` requests run at once.
    #[arg(long, env = "SIDECAR_MAX_CONCURRENT_QUERIES", default_value_t = 12)]
    pub max_concurrent_queries: usize,

    /// At most this many `/query` requests wait; beyond, 503 at once.
    #[arg(long, env = "SIDECAR_MAX_QUERY_QUEUE", default_value_t = 200)]
    pub max_query_queue: usize,

    /// At most this many `/snapshot` requests run at once.
    #[arg(long, env = "SIDECAR_MAX_CONCURRENT_SNAPSHOTS", default_value_t = 4)]
    pub max_concurrent_snapshots: usize,

    /// At most this many `/snapshot` requests wait; beyond, 503 at once.
    #[arg(long, env = "SIDECAR_MAX_SNAPSHOT_QUEUE", default_value_t = 100)]
    pub max_snapshot_queue: usize,

    /// Where `/query` runs: `fresh`, a new DuckDB instance per request (the
    /// Node sidecar's isolation), or `shared`, one locked-down instance per
    /// exact set of tables and object versions, reused with a new connection
    /// per request: several times faster, see docs/benchmarks.md.
    #[arg(long, env = "DUCKGATE_QUERY_INSTANCES", value_enum, default_value_t = QueryInstances::Fresh)]
    pub query_instances: QueryInstances,

    /// A `/query` running longer is interrupted inside DuckDB and answered 504.
    #[arg(long, env = "SIDECAR_QUERY_TIMEOUT_MS", default_value_t = 30_000)]
    pub query_timeout_ms: u64,

    /// Where duckgate keeps its state: the local object store, the object
    /// cache, the live database and plugins.
    #[arg(long, env = "DUCKGATE_DATA_DIR", default_value = "./data")]
    pub data_dir: PathBuf,

    /// The object store used when a request has no `s3_config`: a directory
    /// path, `file:///abs/path`, or `s3://bucket` (credentials, region and
    /// endpoint from the usual AWS_* variables). Default: <data-dir>/objects.
    #[arg(long, env = "DUCKGATE_OBJECT_STORE")]
    pub object_store: Option<String>,

    /// Comma-separated host[:port] list. When set, an `s3_config.endpoint`
    /// outside it is refused with 403 before any connection is made.
    #[arg(long, env = "DUCKGATE_S3_ENDPOINT_ALLOWLIST", value_delimiter = ',')]
    pub s3_endpoint_allowlist: Option<Vec<String>>,

    /// Bytes of S3 objects kept in the local read-through cache (LRU).
    #[arg(long, env = "DUCKGATE_OBJECT_CACHE_SIZE", default_value = "2GiB")]
    pub object_cache_size: ByteSize,

    /// Largest `/query` response; a larger result is refused with a hint
    /// to add a LIMIT, instead of exhausting memory.
    #[arg(long, env = "DUCKGATE_MAX_RESULT_SIZE", default_value = "256MB")]
    pub max_result_size: ByteSize,

    /// Largest accepted request body; larger bodies get 413.
    #[arg(long, env = "DUCKGATE_MAX_BODY_SIZE", default_value = "50MB")]
    pub max_body_size: ByteSize,

    /// The live telemetry database. Default: <data-dir>/live.duckdb.
    #[arg(long, env = "DUCKGATE_LIVE_DB")]
    pub live_db: Option<PathBuf>,

    /// The live writer commits at least this often (and at 10,000 rows); an
    /// OTLP request is answered once its rows are committed.
    #[arg(long, env = "DUCKGATE_FLUSH_INTERVAL_MS", default_value_t = 200)]
    pub flush_interval_ms: u64,

    /// Live rows older than this are deleted.
    #[arg(long, env = "DUCKGATE_RETENTION", default_value = "1h", value_parser = humantime::parse_duration)]
    pub retention: Duration,

    /// How often the retention job runs.
    #[arg(long, env = "DUCKGATE_RETENTION_INTERVAL", default_value = "60s", value_parser = humantime::parse_duration)]
    pub retention_interval: Duration,

    /// Read connections to the live database, at most.
    #[arg(long, env = "DUCKGATE_POOL_MAX_OPEN", default_value_t = 20)]
    pub pool_max_open: usize,

    /// Idle read connections kept warm.
    #[arg(long, env = "DUCKGATE_POOL_MAX_IDLE", default_value_t = 5)]
    pub pool_max_idle: usize,

    /// A read connection is retired after this long.
    #[arg(long, env = "DUCKGATE_POOL_MAX_LIFETIME", default_value = "5m", value_parser = humantime::parse_duration)]
    pub pool_max_lifetime: Duration,

    /// Live reads slower than this are logged with their duration.
    #[arg(long, env = "DUCKGATE_SLOW_QUERY", default_value = "1s", value_parser = humantime::parse_duration)]
    pub slow_query: Duration,

    /// Rows a live query returns at most (`max_rows` may ask for fewer).
    #[arg(long, env = "DUCKGATE_MAX_ROWS", default_value_t = 10_000)]
    pub max_rows: usize,

    /// Timeout of `/db/query`.
    #[arg(long, env = "DUCKGATE_DB_QUERY_TIMEOUT", default_value = "30s", value_parser = humantime::parse_duration)]
    pub db_query_timeout: Duration,

    /// Timeout of percentile, error-rate and trace lookups.
    #[arg(long, env = "DUCKGATE_METRICS_TIMEOUT", default_value = "10s", value_parser = humantime::parse_duration)]
    pub metrics_timeout: Duration,

    /// How long a percentile or error-rate answer is served from cache.
    #[arg(long, env = "DUCKGATE_METRICS_CACHE_TTL", default_value = "2s", value_parser = humantime::parse_duration)]
    pub metrics_cache_ttl: Duration,

    /// Cached percentile and error-rate answers, at most.
    #[arg(long, env = "DUCKGATE_METRICS_CACHE_ENTRIES", default_value_t = 10_000)]
    pub metrics_cache_entries: u64,

    /// How often the built-in collector samples host CPU and memory.
    #[arg(long, env = "DUCKGATE_COLLECTOR_INTERVAL", default_value = "10s", value_parser = humantime::parse_duration)]
    pub collector_interval: Duration,

    /// Alerts with the same dedup key within this window are merged.
    #[arg(long, env = "DUCKGATE_ALERT_DEDUP_WINDOW", default_value = "10m", value_parser = humantime::parse_duration)]
    pub alert_dedup_window: Duration,

    /// Bearer token required by admin routes (plugin upload and delete).
    /// Required when listening on a non-loopback address.
    #[arg(long, env = "DUCKGATE_ADMIN_TOKEN", hide_env_values = true)]
    pub admin_token: Option<String>,

    /// Largest plugin upload.
    #[arg(long, env = "DUCKGATE_MAX_PLUGIN_SIZE", default_value = "20MB")]
    pub max_plugin_size: ByteSize,

    /// Default linear memory of a plugin invocation.
    #[arg(long, env = "DUCKGATE_PLUGIN_MEMORY", default_value = "64MiB")]
    pub plugin_memory: ByteSize,

    /// No plugin may be given more memory than this (sizes the instance pool).
    #[arg(long, env = "DUCKGATE_PLUGIN_MEMORY_CEILING", default_value = "256MiB")]
    pub plugin_memory_ceiling: ByteSize,

    /// Default wall time of a plugin invocation.
    #[arg(long, env = "DUCKGATE_PLUGIN_TIMEOUT", default_value = "5s", value_parser = humantime::parse_duration)]
    pub plugin_timeout: Duration,

    /// Default rows one plugin query may return.
    #[arg(long, env = "DUCKGATE_PLUGIN_ROWS_PER_QUERY", default_value_t = 10_000)]
    pub plugin_rows_per_query: u64,

    /// Default rows one plugin invocation may read in all.
    #[arg(long, env = "DUCKGATE_PLUGIN_ROWS_PER_INVOCATION", default_value_t = 100_000)]
    pub plugin_rows_per_invocation: u64,

    /// Default host calls per plugin invocation.
    #[arg(long, env = "DUCKGATE_PLUGIN_HOST_CALLS", default_value_t = 100_000)]
    pub plugin_host_calls: u64,

    /// Default size of a plugin's JSON result.
    #[arg(long, env = "DUCKGATE_PLUGIN_RESULT_SIZE", default_value = "1MiB")]
    pub plugin_result_size: ByteSize,

    /// Plugin invocations running at once, in all.
    #[arg(long, env = "DUCKGATE_PLUGIN_CONCURRENCY", default_value_t = 5)]
    pub plugin_concurrency: usize,

    /// Plugin invocations waiting for a slot; beyond, 503.
    #[arg(long, env = "DUCKGATE_PLUGIN_QUEUE", default_value_t = 50)]
    pub plugin_queue: usize,

    /// Run receipts kept per plugin.
    #[arg(long, env = "DUCKGATE_PLUGIN_RUN_HISTORY", default_value_t = 100)]
    pub plugin_run_history: usize,

    /// Log format: `text` for people, `json` for log pipelines.
    #[arg(long, env = "DUCKGATE_LOG_FORMAT", default_value = "text", value_parser = ["text", "json"])]
    pub log_format: String,
}

impl Config {
    pub fn listen_addr(&self) -> SocketAddr {
        SocketAddr::new(self.host, self.port)
    }

    pub fn query_timeout(&self) -> Duration {
        Duration::from_millis(self.query_timeout_ms)
    }

    pub fn live_db_path(&self) -> PathBuf {
        self.live_db.clone().unwrap_or_else(|| self.data_dir.join("live.duckdb"))
    }

    pub fn db_query_timeout(&self) -> Duration {
        self.db_query_timeout
    }

    pub fn metrics_timeout(&self) -> Duration {
        self.metrics_timeout
    }

    pub fn plugin_limits(&self) -> crate::plugins::limits::Limits {
        crate::plugins::limits::Limits {
            memory_bytes: self.plugin_memory.as_u64(),
            timeout_ms: self.plugin_timeout.as_millis() as u64,
            rows_per_query: self.plugin_rows_per_query,
            rows_per_invocation: self.plugin_rows_per_invocation,
            host_calls: self.plugin_host_calls,
            result_bytes: self.plugin_result_size.as_u64(),
            alerts: 100,
        }
    }

    pub fn object_cache_dir(&self) -> PathBuf {
        self.data_dir.join("cache").join("objects")
    }

    pub fn default_object_dir(&self) -> PathBuf {
        self.data_dir.join("objects")
    }

    /// Rejects combinations that cannot work, with a message saying what to change.
    pub fn validate(&self) -> Result<(), String> {
        if self.max_concurrent_queries == 0 {
            return Err("SIDECAR_MAX_CONCURRENT_QUERIES must be at least 1".into());
        }
        if self.max_concurrent_snapshots == 0 {
            return Err("SIDECAR_MAX_CONCURRENT_SNAPSHOTS must be at least 1".into());
        }
        if self.query_timeout_ms == 0 {
            return Err("SIDECAR_QUERY_TIMEOUT_MS must be at least 1".into());
        }
        if self.pool_max_open == 0 {
            return Err("DUCKGATE_POOL_MAX_OPEN must be at least 1".into());
        }
        if self.max_rows == 0 {
            return Err("DUCKGATE_MAX_ROWS must be at least 1".into());
        }
        if self.flush_interval_ms == 0 {
            return Err("DUCKGATE_FLUSH_INTERVAL_MS must be at least 1".into());
        }
        if self.collector_interval.is_zero() {
            return Err("DUCKGATE_COLLECTOR_INTERVAL must be positive".into());
        }
        if !self.host.is_loopback() && self.admin_token.as_deref().is_none_or(str::is_empty) {
            return Err(format!(
                "refusing to listen on {} without an admin token: set DUCKGATE_ADMIN_TOKEN (or --admin-token), or listen on 127.0.0.1",
                self.host
            ));
        }
        if self.plugin_concurrency == 0 {
            return Err("DUCKGATE_PLUGIN_CONCURRENCY must be at least 1".into());
        }
        if self.plugin_memory > self.plugin_memory_ceiling {
            return Err("DUCKGATE_PLUGIN_MEMORY must not exceed DUCKGATE_PLUGIN_MEMORY_CEILING".into());
        }
        if self.duckdb_threads == Some(0) {
            return Err("DUCKDB_THREADS must be at least 1 (or unset for one per core)".into());
        }
        Ok(())
    }
}
