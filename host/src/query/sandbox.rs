//! Fresh, locked-down DuckDB instances for `/query`, one per request.
//!
//! "Fresh" is the sidecar's isolation promise: no table, setting or temp
//! file survives a request. Opening an instance costs about 11 ms of CPU
//! here (DuckDB registers every built-in function in a new catalog) and
//! closing one a few more, so both happen off the request path: a background
//! thread keeps a few spare, never-used, warmed-up instances ready, and
//! another closes used ones. In the default mode each instance serves
//! exactly one request; [`super::shared`] keeps one per table set instead.
//!
//! Lock-down, applied after the request's views exist: external access off
//! (DuckDB may then read only the files listed in `allowed_paths`, the
//! request's own cached objects, and its own temporary directory), extension
//! auto-install and auto-load off, and the configuration locked so the
//! caller's SQL cannot undo any of it. Each instance spills to a directory
//! of its own, removed with it, so no request can read the spill files of
//! another instance.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use duckdb::{Config, Connection};
use object_store::ObjectMeta;

use crate::object_cache::LocalObject;

/// How every instance is configured (the sidecar's DUCKDB_* variables).
#[derive(Debug, Clone)]
pub struct InstanceSettings {
    pub threads: Option<u32>,
    pub memory_limit: String,
    pub enable_object_cache: bool,
    /// Parent of the instances' private temporary directories.
    pub temp_root: PathBuf,
}

/// A fresh instance and its private spill directory, removed after it.
pub struct Sandbox {
    conn: Option<Connection>,
    temp_dir: PathBuf,
}

impl Sandbox {
    pub fn conn(&self) -> &Connection {
        self.conn.as_ref().expect("present until drop")
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        drop(self.conn.take());
        let _ = std::fs::remove_dir_all(&self.temp_dir);
    }
}

static INSTANCES: AtomicU64 = AtomicU64::new(0);

impl InstanceSettings {
    fn open(&self) -> duckdb::Result<Sandbox> {
        let temp_dir = self.temp_root.join(format!("{}-{}", std::process::id(), INSTANCES.fetch_add(1, Ordering::Relaxed)));
        let mut config = Config::default()
            .with("temp_directory", temp_dir.to_string_lossy())?
            .enable_autoload_extension(false)?
            .with("autoinstall_known_extensions", "false")?
            .with("allow_community_extensions", "false")?
            .max_memory(&self.memory_limit)?
            .enable_object_cache(self.enable_object_cache)?;
        if let Some(threads) = self.threads {
            config = config.threads(threads as i64)?;
        }
        let conn = Connection::open_in_memory_with_flags(config)?;
        // Pay the first-statement costs here, in the background, not in a
        // request: binding, the parser, the JSON functions the check uses.
        conn.query_row("SELECT json_serialize_sql('SELECT 1')", [], |r| r.get::<_, String>(0))?;
        Ok(Sandbox { conn: Some(conn), temp_dir })
    }
}

struct Spares {
    ready: Mutex<Vec<Sandbox>>,
    wanted: Condvar,
    target: usize,
}

/// Hands out never-used instances, refilled in the background.
#[derive(Clone)]
pub struct Sandboxes {
    settings: Arc<InstanceSettings>,
    spares: Arc<Spares>,
    retired: std::sync::mpsc::Sender<(Sandbox, Vec<Arc<LocalObject>>)>,
}

impl Sandboxes {
    /// Checks the settings by opening one instance (so a bad
    /// DUCKDB_MEMORY_LIMIT fails at start-up, not on the first request),
    /// then starts the refill thread.
    pub fn start(settings: InstanceSettings, spares: usize) -> anyhow::Result<Self> {
        if settings.temp_root.exists() {
            std::fs::remove_dir_all(&settings.temp_root)?;
        }
        std::fs::create_dir_all(&settings.temp_root)?;
        let first = settings
            .open()
            .map_err(|e| anyhow::anyhow!("cannot open DuckDB with DUCKDB_THREADS/DUCKDB_MEMORY_LIMIT/DUCKDB_ENABLE_OBJECT_CACHE as set: {e}"))?;
        let (retired, to_close) = std::sync::mpsc::channel::<(Sandbox, Vec<Arc<LocalObject>>)>();
        std::thread::Builder::new().name("duckdb-reaper".into()).spawn(move || {
            for (sandbox, objects) in to_close {
                drop(sandbox);
                drop(objects);
            }
        })?;
        let sandboxes = Sandboxes {
            settings: Arc::new(settings),
            spares: Arc::new(Spares { ready: Mutex::new(vec![first]), wanted: Condvar::new(), target: spares }),
            retired,
        };
        let refill = sandboxes.clone();
        std::thread::Builder::new()
            .name("duckdb-spares".into())
            .spawn(move || refill.refill_forever())?;
        Ok(sandboxes)
    }

    fn refill_forever(&self) {
        loop {
            {
                let ready = self.spares.ready.lock().expect("spares lock");
                let _unused = self
                    .spares
                    .wanted
                    .wait_while(ready, |r| r.len() >= self.spares.target)
                    .expect("spares lock");
            }
            match self.settings.open() {
                Ok(conn) => self.spares.ready.lock().expect("spares lock").push(conn),
                Err(e) => {
                    tracing::error!(error = %e, "could not open a spare DuckDB instance");
                    std::thread::sleep(std::time::Duration::from_secs(1));
                }
            }
        }
    }

    /// A never-used instance: a spare if one is ready, else a new one.
    pub fn take(&self) -> duckdb::Result<Sandbox> {
        let spare = self.spares.ready.lock().expect("spares lock").pop();
        self.spares.wanted.notify_one();
        match spare {
            Some(conn) => Ok(conn),
            None => self.settings.open(),
        }
    }

    /// Closes a used instance in the background (closing takes milliseconds),
    /// then releases the cached files it read.
    pub fn retire(&self, sandbox: Sandbox, objects: Vec<Arc<LocalObject>>) {
        if let Err(returned) = self.retired.send((sandbox, objects)) {
            drop(returned.0);
        }
    }

    pub fn spares_ready(&self) -> usize {
        self.spares.ready.lock().expect("spares lock").len()
    }

    pub fn spares_target(&self) -> usize {
        self.spares.target
    }
}

/// One object version as a table sees it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct ObjectVersion {
    path: PathBuf,
    e_tag: Option<String>,
    size: u64,
    modified_ns: i64,
}

/// A request's tables, in request order: each SQL name with the exact
/// versions of its objects and their local files. Shared instances are
/// keyed by it.
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct TableSet(Vec<(String, Vec<ObjectVersion>)>);

impl TableSet {
    /// Adds a table read from `objects` (the cache's files for `metas`).
    pub fn push(&mut self, name: &str, metas: &[ObjectMeta], objects: &[Arc<LocalObject>]) {
        let versions = metas
            .iter()
            .zip(objects)
            .map(|(meta, local)| ObjectVersion {
                path: local.path.clone(),
                e_tag: meta.e_tag.clone(),
                size: meta.size,
                modified_ns: meta.last_modified.timestamp_nanos_opt().unwrap_or_default(),
            })
            .collect();
        self.0.push((name.to_string(), versions));
    }
}

/// Creates the request's views, then locks the instance down.
pub fn prepare(conn: &Connection, tables: &TableSet) -> duckdb::Result<()> {
    let mut sql = String::new();
    let mut allowed = Vec::new();
    for (name, versions) in &tables.0 {
        let files: Vec<String> = versions.iter().map(|v| quote_literal(&v.path.to_string_lossy())).collect();
        allowed.extend(files.iter().cloned());
        sql.push_str(&format!(
            "CREATE VIEW {} AS SELECT * FROM read_parquet([{}]);\n",
            quote_identifier(name),
            files.join(", ")
        ));
    }
    sql.push_str(&format!("SET allowed_paths = [{}];\n", allowed.join(", ")));
    sql.push_str("SET enable_external_access = false;\nSET lock_configuration = true;\n");
    conn.execute_batch(&sql)
}

/// `"name"` with embedded quotes doubled: any table name is one identifier.
pub fn quote_identifier(name: &str) -> String {
    format!("\"{}\"", name.replace('"', "\"\""))
}

fn quote_literal(text: &str) -> String {
    format!("'{}'", text.replace('\'', "''"))
}
