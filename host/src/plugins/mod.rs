//! WebAssembly plugins: sandboxed components that call duckgate's host API.
//!
//! The seed ran scripts as Deno processes that called the SDK server over
//! HTTP. A plugin here is a component with one export (`run`) and the
//! imports of `wit/plugin.wit`: typed calls into the live store, no
//! filesystem, no network, and per-invocation limits on memory, time, rows,
//! host calls and result size. [`runtime`] owns wasmtime; [`host_api`]
//! implements the imports; [`limits`] and [`receipt`] describe a run.

pub mod capture;
pub mod componentize;
pub mod host_api;
pub mod limits;
pub mod receipt;
pub mod registry;
pub mod routes;
pub mod runtime;
pub mod scheduler;

use std::sync::Arc;

use receipt::Receipt;
use registry::{Installed, Registry, RegistryError, Settings};
use runtime::{Busy, Runtime};
use scheduler::Scheduler;

/// Installed plugins, their runtime and their schedules.
pub struct Plugins {
    pub registry: Registry,
    pub scheduler: Scheduler,
}

/// The result of one run: the plugin's JSON output when it succeeded.
pub struct RunResult {
    pub output: Option<serde_json::Value>,
    pub receipt: Receipt,
}

impl Plugins {
    pub fn new(registry: Registry) -> Arc<Self> {
        Arc::new(Plugins { registry, scheduler: Scheduler::default() })
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        self.registry.runtime()
    }

    /// Starts the schedules of every installed plugin (after a restart).
    pub fn start_schedules(self: &Arc<Self>) {
        for installed in self.registry.list() {
            self.scheduler.sync(self, &installed.manifest.name, installed.manifest.settings.interval_ms);
        }
    }

    /// Installs or replaces a plugin and (re)schedules it.
    pub async fn install(self: &Arc<Self>, name: &str, component: Vec<u8>, settings: Settings) -> Result<Arc<Installed>, RegistryError> {
        let this = self.clone();
        let owned = name.to_string();
        let installed = tokio::task::spawn_blocking(move || this.registry.install(&owned, &component, settings))
            .await
            .map_err(|e| RegistryError::Io(std::io::Error::other(e.to_string())))??;
        self.scheduler.sync(self, name, installed.manifest.settings.interval_ms);
        Ok(installed)
    }

    pub fn remove(self: &Arc<Self>, name: &str) -> Result<(), RegistryError> {
        self.registry.remove(name)?;
        self.scheduler.sync(self, name, None);
        Ok(())
    }

    /// Runs the current version of `name` once and records the receipt.
    pub async fn run(&self, name: &str, input: String, trigger: &str) -> Result<RunResult, RunError> {
        let installed = self.registry.get(name).ok_or_else(|| RunError::NotFound(name.to_string()))?;
        let (output, mut receipt) = self
            .runtime()
            .invoke(name, installed.compiled.clone(), installed.config.clone(), installed.limits, input)
            .await?;
        receipt.plugin = name.to_string();
        receipt.trigger = trigger.to_string();
        self.registry.record(name, &receipt);
        let output = output.map(|text| serde_json::from_str(&text).unwrap_or(serde_json::Value::String(text)));
        Ok(RunResult { output, receipt })
    }
}

#[derive(Debug, thiserror::Error)]
pub enum RunError {
    #[error("no plugin named {0:?}; list them with GET /plugins")]
    NotFound(String),
    #[error(transparent)]
    Busy(#[from] Busy),
}

/// Host-side bindings generated from the WIT package.
pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "duckgate:plugin/plugin",
        // Calls that wait on DuckDB or the writer are async, so a timed-out
        // invocation is cancelled by dropping it, host call and all.
        imports: {
            "duckgate:plugin/host.query": async | trappable,
            "duckgate:plugin/host.percentile": async | trappable,
            "duckgate:plugin/host.error-rate": async | trappable,
            "duckgate:plugin/host.emit-alert": async | trappable,
            default: trappable,
        },
        exports: { default: async },
    });
}
