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

    /// Largest accepted request body; larger bodies get 413.
    #[arg(long, env = "DUCKGATE_MAX_BODY_SIZE", default_value = "50MB")]
    pub max_body_size: ByteSize,

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
        if self.duckdb_threads == Some(0) {
            return Err("DUCKDB_THREADS must be at least 1 (or unset for one per core)".into());
        }
        Ok(())
    }
}
