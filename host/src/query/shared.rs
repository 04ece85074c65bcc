//! Reused, locked-down DuckDB instances for `/query`
//! (`DUCKGATE_QUERY_INSTANCES=shared`; the default is a fresh instance per
//! request, see [`super::sandbox`]).
//!
//! A fresh instance costs about 12 ms of CPU to open and 2 ms to close, and
//! it starts cold; on 2 cores that caps `/query` near 100 requests/s
//! whatever the query. In `shared` mode an instance is built once per exact
//! table set (each table's name and the exact versions of its objects:
//! path, ETag, size, modification time) and then serves every request that
//! names the same set, each on a new connection of its own.
//!
//! What this keeps from "fresh": a caller's statement is one checked read,
//! external access is off and the configuration locked, so a request cannot
//! leave anything behind (no table, view, macro, setting, variable or file)
//! for the next. What is shared is duckgate's own views over the same
//! immutable files and DuckDB's caches of them. A different table set, other
//! credentials (their cached files differ) or a changed object never meets
//! the instance. Idle instances close after a minute; at most
//! [`MAX_INSTANCES`] stay open.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use duckdb::Connection;
use serde::Serialize;

use super::sandbox::{self, Sandbox, Sandboxes, TableSet};
use crate::error::Error;
use crate::object_cache::LocalObject;

/// Instances kept open at most (each holds a catalog of a few MB).
pub const MAX_INSTANCES: u64 = 16;
const IDLE: Duration = Duration::from_secs(60);

/// An instance with one table set's views, locked down.
pub struct SharedInstance {
    sandbox: Mutex<Option<Sandbox>>,
    /// The files its views read stay on disk while it lives.
    objects: Vec<Arc<LocalObject>>,
    sandboxes: Sandboxes,
}

impl SharedInstance {
    fn connect(&self) -> duckdb::Result<Connection> {
        self.sandbox.lock().expect("instance lock").as_ref().expect("present until drop").conn().try_clone()
    }
}

impl Drop for SharedInstance {
    fn drop(&mut self) {
        if let Some(sandbox) = self.sandbox.get_mut().ok().and_then(Option::take) {
            self.sandboxes.retire(sandbox, std::mem::take(&mut self.objects));
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct SharedStats {
    pub open: u64,
    pub built: u64,
    pub reused: u64,
}

#[derive(Clone)]
pub struct SharedInstances {
    instances: moka::sync::Cache<TableSet, Arc<SharedInstance>>,
    sandboxes: Sandboxes,
    built: Arc<AtomicU64>,
    reused: Arc<AtomicU64>,
}

impl SharedInstances {
    pub fn new(sandboxes: Sandboxes) -> Self {
        let instances: moka::sync::Cache<TableSet, Arc<SharedInstance>> =
            moka::sync::Cache::builder().max_capacity(MAX_INSTANCES).time_to_idle(IDLE).build();
        // moka expires entries only when the cache is used; without this an
        // idle gateway would keep its last instances open.
        let expiring = instances.clone();
        let _ = std::thread::Builder::new().name("duckdb-shared-idle".into()).spawn(move || loop {
            std::thread::sleep(IDLE / 4);
            expiring.run_pending_tasks();
        });
        SharedInstances { instances, sandboxes, built: Arc::default(), reused: Arc::default() }
    }

    /// A new connection to the instance for `set`, built if there is none
    /// (concurrent requests for one new set build it once).
    /// Blocking: building creates views, which reads Parquet footers.
    pub fn connect(
        &self,
        set: &TableSet,
        objects: Vec<Arc<LocalObject>>,
    ) -> Result<(Connection, Arc<SharedInstance>), Error> {
        let mut built_here = false;
        let instance = self
            .instances
            .try_get_with_by_ref(set, || {
                built_here = true;
                let sandbox = self.sandboxes.take().map_err(|e| Error::internal(format!("cannot open DuckDB: {e}")))?;
                if let Err(e) = sandbox::prepare(sandbox.conn(), set) {
                    self.sandboxes.retire(sandbox, objects);
                    return Err(super::tables_error(e));
                }
                Ok(Arc::new(SharedInstance {
                    sandbox: Mutex::new(Some(sandbox)),
                    objects,
                    sandboxes: self.sandboxes.clone(),
                }))
            })
            .map_err(|e: Arc<Error>| Error::clone(&e))?;
        if built_here {
            self.built.fetch_add(1, Ordering::Relaxed);
        } else {
            self.reused.fetch_add(1, Ordering::Relaxed);
        }
        let conn = instance.connect().map_err(|e| Error::internal(format!("cannot connect to DuckDB: {e}")))?;
        Ok((conn, instance))
    }

    pub fn stats(&self) -> SharedStats {
        self.instances.run_pending_tasks();
        SharedStats {
            open: self.instances.entry_count(),
            built: self.built.load(Ordering::Relaxed),
            reused: self.reused.load(Ordering::Relaxed),
        }
    }
}
