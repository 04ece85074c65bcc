//! The live telemetry store: a DuckDB file that duckgate owns and is the
//! only writer of, fed over OTLP/HTTP, read through a pool of connections
//! cloned from the same instance.
//!
//! DuckDB lets one process open a file read-write and nobody else open it at
//! all, so the seed's "separate read-only reader process" cannot work while
//! the writer runs. Readers here are connections of the writer's own
//! instance: they see committed snapshots (MVCC) and never block the writer.

pub mod alerts;
pub mod collector;
pub mod metrics;
pub mod otlp;
pub mod pool;
pub mod routes;
pub mod rows;
pub mod schema;
pub mod writer;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use duckdb::{Config as DuckConfig, Connection};

use metrics::Lookups;
use pool::{PoolSettings, ReadPool};
use writer::{Writer, WriterSettings};

/// Everything the live store is configured with (see [`crate::config::Config`]).
#[derive(Debug, Clone)]
pub struct LiveSettings {
    pub path: PathBuf,
    pub memory_limit: String,
    pub threads: Option<u32>,
    pub flush_interval: Duration,
    pub retention: Duration,
    pub retention_every: Duration,
    pub pool: PoolSettings,
    pub cache_ttl: Duration,
    pub cache_entries: u64,
    pub metrics_timeout: Duration,
    pub alert_dedup_window: Duration,
}

pub struct LiveStore {
    pub writer: Writer,
    pub pool: Arc<ReadPool>,
    pub lookups: Lookups,
    pub alerts: alerts::Alerts,
    pub deltas: otlp::Deltas,
    pub path: PathBuf,
}

impl LiveStore {
    /// Opens (or creates) the database, migrates it, locks it down and
    /// starts the writer.
    pub fn open(settings: &LiveSettings) -> anyhow::Result<Self> {
        if let Some(dir) = settings.path.parent() {
            std::fs::create_dir_all(dir)?;
        }
        let mut config = DuckConfig::default()
            .enable_autoload_extension(false)?
            .with("autoinstall_known_extensions", "false")?
            .max_memory(&settings.memory_limit)?;
        if let Some(threads) = settings.threads {
            config = config.threads(threads as i64)?;
        }
        let conn = Connection::open_with_flags(&settings.path, config).map_err(|e| {
            anyhow::anyhow!(
                "cannot open the live database {}: {e}; another duckgate may be using it (only one process can), or pass --live-db",
                settings.path.display()
            )
        })?;
        conn.execute_batch(schema::MIGRATIONS)?;
        let recorded: i64 = conn.query_row(
            "SELECT count(*) FROM duckgate_schema WHERE version = ?",
            [schema::VERSION],
            |r| r.get(0),
        )?;
        if recorded == 0 {
            conn.execute("INSERT INTO duckgate_schema VALUES (?, now()::TIMESTAMP)", [schema::VERSION])?;
        }
        // From here on no statement on this instance may touch other files or
        // change settings: readers' SQL comes from callers and plugins.
        conn.execute_batch("SET enable_external_access = false; SET lock_configuration = true;")?;
        let reader_source = conn.try_clone()?;
        let writer = Writer::start(
            conn,
            WriterSettings {
                flush_interval: settings.flush_interval,
                retention: settings.retention,
                retention_every: settings.retention_every,
                queue_capacity: 4096,
            },
        )?;
        let pool = Arc::new(ReadPool::new(reader_source, settings.pool.clone()));
        let lookups = Lookups::new(pool.clone(), settings.cache_ttl, settings.cache_entries, settings.metrics_timeout);
        let alerts = alerts::Alerts::new(writer.clone(), settings.alert_dedup_window);
        Ok(LiveStore { writer, pool, lookups, alerts, deltas: otlp::Deltas::new(100_000), path: settings.path.clone() })
    }
}
