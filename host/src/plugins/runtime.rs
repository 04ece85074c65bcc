//! The wasmtime side: one engine, compiled components, invocations.
//!
//! - One `Engine` with the pooling allocator. Its reservation is bounded
//!   (slots × the memory ceiling, small guards) so it fits a small machine.
//! - Components are compiled once per content hash and kept in memory and on
//!   disk (wasmtime's serialized form), so a restart does not recompile.
//! - Each plugin version has an `InstancePre` (imports resolved once); each
//!   invocation gets a fresh `Store`, so nothing leaks between runs.
//! - Time is bounded twice: a ticker thread advances the engine's epoch every
//!   10 ms and a store's deadline (its time limit in ticks) traps guest code
//!   that computes past it; and the whole call is async under a timeout, so
//!   an invocation waiting in a host call (a DuckDB query, a WASI sleep) is
//!   cancelled at the deadline too, the query interrupted with it.
//! - Guest code runs on a blocking thread (driving its own future), so a
//!   plugin spinning until its deadline never stalls the HTTP server.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde::Serialize;
use sha2::{Digest, Sha256};
use wasmtime::component::{Component, HasSelf, Linker};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, Store};

use super::bindings::{Plugin, PluginPre};
use super::host_api::{trap_reason, HostServices, Invocation, TrapReason};
use super::limits::{LimitKind, Limits};
use super::receipt::{LogLine, Outcome, Receipt};
use crate::admission::{Gate, GateStats};

/// How often the epoch advances; the granularity of time limits.
pub const EPOCH_TICK: Duration = Duration::from_millis(10);

#[derive(Debug, Clone)]
pub struct RuntimeSettings {
    /// Compiled components are cached here.
    pub cache_dir: PathBuf,
    pub defaults: Limits,
    /// No plugin's memory limit may exceed this (pool slot size).
    pub memory_ceiling: u64,
    /// Invocations running at once, in all.
    pub max_concurrent: usize,
    /// Invocations waiting; beyond, refused.
    pub max_queue: usize,
}

/// A compiled plugin version, ready to instantiate.
pub struct Compiled {
    pub sha256: String,
    pub size: usize,
    pre: PluginPre<Invocation>,
}

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("not a WebAssembly component or module: {0}")]
    NotWasm(String),
    #[error("the component does not fit duckgate's plugin world: {0}")]
    WrongWorld(String),
    #[error("cannot compile the component: {0}")]
    Compile(String),
}

#[derive(Debug, thiserror::Error)]
#[error("plugin runtime is busy ({running} running, {queued} queued); retry shortly")]
pub struct Busy {
    pub running: usize,
    pub queued: usize,
}

#[derive(Debug, Default, Serialize, Clone)]
pub struct RuntimeStats {
    pub compiled_fresh: u64,
    pub loaded_from_disk: u64,
    pub loaded_from_memory: u64,
    pub invocations: u64,
    pub gate: Option<GateStats>,
}

pub struct Runtime {
    engine: Engine,
    linker: Linker<Invocation>,
    settings: RuntimeSettings,
    services: Arc<HostServices>,
    compiled: Mutex<HashMap<String, Arc<Compiled>>>,
    gate: Gate,
    compiled_fresh: AtomicU64,
    loaded_from_disk: AtomicU64,
    loaded_from_memory: AtomicU64,
    invocations: AtomicU64,
    stop_ticker: Arc<AtomicBool>,
}

impl Drop for Runtime {
    fn drop(&mut self) {
        self.stop_ticker.store(true, Ordering::Release);
    }
}

fn engine(settings: &RuntimeSettings) -> anyhow::Result<Engine> {
    let slots = (settings.max_concurrent as u32 * 2).max(4);
    let mut pool = PoolingAllocationConfig::default();
    pool.total_component_instances(slots)
        .total_core_instances(slots * 8)
        .total_memories(slots * 4)
        .total_tables(slots * 8)
        .total_stacks(slots)
        .max_memories_per_component(4)
        .max_memory_size(settings.memory_ceiling as usize);
    let mut config = Config::new();
    config
        .wasm_component_model(true)
        .epoch_interruption(true)
        .allocation_strategy(InstanceAllocationStrategy::Pooling(pool))
        // Bounded reservation: at most the ceiling per memory plus a small
        // guard, instead of the 4 GiB + 32 MiB default per slot.
        .memory_reservation(settings.memory_ceiling)
        .memory_guard_size(64 << 10)
        .memory_reservation_for_growth(0)
        .max_wasm_stack(1 << 20);
    Engine::new(&config).map_err(|e| anyhow::anyhow!("cannot create the wasm engine: {e}"))
}

impl Runtime {
    pub fn new(settings: RuntimeSettings, services: Arc<HostServices>) -> anyhow::Result<Self> {
        std::fs::create_dir_all(&settings.cache_dir)?;
        let engine = engine(&settings)?;
        let mut linker = Linker::<Invocation>::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(|e| anyhow::anyhow!("{e}"))?;
        Plugin::add_to_linker::<_, HasSelf<_>>(&mut linker, |state: &mut Invocation| state).map_err(|e| anyhow::anyhow!("{e}"))?;
        let stop_ticker = Arc::new(AtomicBool::new(false));
        let ticking = engine.clone();
        let stop = stop_ticker.clone();
        std::thread::Builder::new().name("wasm-epoch".into()).spawn(move || {
            while !stop.load(Ordering::Acquire) {
                std::thread::sleep(EPOCH_TICK);
                ticking.increment_epoch();
            }
        })?;
        Ok(Runtime {
            engine,
            linker,
            gate: Gate::new(settings.max_concurrent, settings.max_queue),
            settings,
            services,
            compiled: Mutex::new(HashMap::new()),
            compiled_fresh: AtomicU64::new(0),
            loaded_from_disk: AtomicU64::new(0),
            loaded_from_memory: AtomicU64::new(0),
            invocations: AtomicU64::new(0),
            stop_ticker,
        })
    }

    pub fn defaults(&self) -> &Limits {
        &self.settings.defaults
    }

    pub fn memory_ceiling(&self) -> u64 {
        self.settings.memory_ceiling
    }

    pub fn stats(&self) -> RuntimeStats {
        RuntimeStats {
            compiled_fresh: self.compiled_fresh.load(Ordering::Relaxed),
            loaded_from_disk: self.loaded_from_disk.load(Ordering::Relaxed),
            loaded_from_memory: self.loaded_from_memory.load(Ordering::Relaxed),
            invocations: self.invocations.load(Ordering::Relaxed),
            gate: Some(self.gate.stats()),
        }
    }

    /// Content hash of component bytes: the version of a plugin.
    pub fn sha256(bytes: &[u8]) -> String {
        hex::encode(Sha256::digest(bytes))
    }

    /// Compiles (or finds) a component and checks it fits the plugin world:
    /// it must export `run` and import nothing the host does not provide.
    /// CPU-heavy on a miss: call from a blocking thread.
    pub fn load(&self, component_bytes: &[u8]) -> Result<Arc<Compiled>, LoadError> {
        let sha = Self::sha256(component_bytes);
        if let Some(found) = self.compiled.lock().expect("compiled lock").get(&sha) {
            self.loaded_from_memory.fetch_add(1, Ordering::Relaxed);
            return Ok(found.clone());
        }
        if !wasmparser::Parser::is_component(component_bytes) {
            return Err(LoadError::NotWasm("expected a component (run it through `duckgate plugin componentize`)".into()));
        }
        let cached = self.settings.cache_dir.join(format!("{sha}-{}.cwasm", engine_tag(&self.engine)));
        let component = match cached.exists().then(|| {
            // Safety: only duckgate writes this directory, with bytes produced
            // by `Component::serialize` of this same engine configuration
            // (the file name carries the wasmtime version).
            unsafe { Component::deserialize_file(&self.engine, &cached) }
        }) {
            Some(Ok(component)) => {
                self.loaded_from_disk.fetch_add(1, Ordering::Relaxed);
                component
            }
            _ => {
                let component = Component::new(&self.engine, component_bytes).map_err(|e| {
                    if wasmparser::validate(component_bytes).is_err() {
                        LoadError::NotWasm(format!("{e:#}"))
                    } else {
                        LoadError::Compile(format!("{e:#}"))
                    }
                })?;
                self.compiled_fresh.fetch_add(1, Ordering::Relaxed);
                match component.serialize() {
                    Ok(bytes) => {
                        let tmp = cached.with_extension("tmp");
                        if std::fs::write(&tmp, bytes).and_then(|_| std::fs::rename(&tmp, &cached)).is_err() {
                            tracing::warn!(path = %cached.display(), "could not cache the compiled plugin");
                        }
                    }
                    Err(e) => tracing::warn!(error = %e, "could not serialize the compiled plugin"),
                }
                component
            }
        };
        let instance_pre = self
            .linker
            .instantiate_pre(&component)
            .map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let pre = PluginPre::new(instance_pre).map_err(|e| LoadError::WrongWorld(format!("{e:#}")))?;
        let compiled = Arc::new(Compiled { sha256: sha.clone(), size: component_bytes.len(), pre });
        self.compiled.lock().expect("compiled lock").insert(sha, compiled.clone());
        Ok(compiled)
    }

    /// Drops a version from memory (its disk copy stays for a re-upload).
    pub fn forget(&self, sha256: &str) {
        self.compiled.lock().expect("compiled lock").remove(sha256);
    }

    /// Runs a plugin once: admission (concurrency and queue), then a fresh
    /// store on a blocking thread. Returns the output (when `run` succeeded)
    /// and the receipt; never fails for anything the plugin does.
    pub async fn invoke(
        self: &Arc<Self>,
        plugin: &str,
        compiled: Arc<Compiled>,
        config: Arc<HashMap<String, String>>,
        limits: Limits,
        input: String,
    ) -> Result<(Option<String>, Receipt), Busy> {
        let admitted = self.gate.admit().await.map_err(|full| Busy { running: full.running, queued: full.queued })?;
        let runtime = self.clone();
        let plugin = plugin.to_string();
        let handle = tokio::runtime::Handle::current();
        let result = tokio::task::spawn_blocking(move || {
            let result = handle.block_on(runtime.invoke_on_this_thread(&plugin, &compiled, config, limits, input));
            drop(admitted);
            result
        })
        .await;
        Ok(result.unwrap_or_else(|e| {
            (
                None,
                Receipt {
                    plugin: String::new(),
                    trigger: String::new(),
                    version: String::new(),
                    started_at_ms: chrono::Utc::now().timestamp_millis(),
                    wall_ms: 0.0,
                    instantiate_us: 0.0,
                    host_ms: 0.0,
                    host_calls: 0,
                    queries: 0,
                    rows_read: 0,
                    peak_memory_bytes: 0,
                    cache_hits: 0,
                    alerts: 0,
                    outcome: Outcome::Trap { reason: format!("host worker failed: {e}") },
                    log: Vec::new(),
                    log_truncated: false,
                },
            )
        }))
    }

    async fn invoke_on_this_thread(
        &self,
        plugin: &str,
        compiled: &Compiled,
        config: Arc<HashMap<String, String>>,
        limits: Limits,
        input: String,
    ) -> (Option<String>, Receipt) {
        self.invocations.fetch_add(1, Ordering::Relaxed);
        let started_at_ms = chrono::Utc::now().timestamp_millis();
        let started = Instant::now();
        let state = Invocation::new(plugin.to_string(), limits, config, self.services.clone());
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limiter);
        let ticks = (limits.timeout_ms / EPOCH_TICK.as_millis() as u64).max(1) + 1;
        store.set_epoch_deadline(ticks);
        store.epoch_deadline_trap();

        let deadline = tokio::time::Instant::now() + std::time::Duration::from_millis(limits.timeout_ms);
        let mut instantiated = Duration::ZERO;
        let call = async {
            let instance = compiled.pre.instantiate_async(&mut store).await?;
            instantiated = started.elapsed();
            instance.call_run(&mut store, &input).await
        };
        // Dropping the call on timeout cancels whatever it awaits.
        let result = tokio::time::timeout_at(deadline, call).await;
        let wall = started.elapsed();
        let state = store.data_mut();
        let (outcome, output) = match result {
            Err(_elapsed) => (Outcome::Timeout { limit_ms: limits.timeout_ms }, None),
            Ok(result) => match result {
            Ok(Ok(output)) if output.len() as u64 > limits.result_bytes => (
                Outcome::Limit {
                    limit: LimitKind::ResultSize,
                    detail: format!("the result is {} bytes; {}", output.len(), LimitKind::ResultSize.describe(&limits)),
                },
                None,
            ),
            Ok(Ok(output)) => (Outcome::Ok, Some(output)),
            Ok(Err(message)) => (Outcome::Error { message }, None),
            Err(err) => (classify(&err, state, &limits), None),
            },
        };
        let mut log = std::mem::take(&mut state.log);
        let mut log_truncated = state.log_truncated;
        for (level, capture) in [("stdout", &state.stdout), ("stderr", &state.stderr)] {
            let (text, truncated) = capture.take();
            log_truncated |= truncated;
            log.extend(text.lines().map(|line| LogLine { level: level.into(), message: line.into() }));
        }
        let receipt = Receipt {
            plugin: plugin.to_string(),
            trigger: String::new(),
            version: compiled.sha256.clone(),
            started_at_ms,
            wall_ms: wall.as_secs_f64() * 1000.0,
            instantiate_us: instantiated.as_secs_f64() * 1e6,
            host_ms: state.usage.host_time.as_secs_f64() * 1000.0,
            host_calls: state.usage.host_calls,
            queries: state.usage.queries,
            rows_read: state.usage.rows_read,
            peak_memory_bytes: state.limiter.peak,
            cache_hits: state.usage.cache_hits,
            alerts: state.usage.alerts,
            outcome,
            log,
            log_truncated,
        };
        (output, receipt)
    }
}

/// Names the reason a call into the guest failed.
fn classify(err: &wasmtime::Error, state: &Invocation, limits: &Limits) -> Outcome {
    match trap_reason(err) {
        TrapReason::Timeout => Outcome::Timeout { limit_ms: limits.timeout_ms },
        TrapReason::Limit(kind) => Outcome::Limit { limit: kind, detail: kind.describe(limits) },
        // A refused memory.grow makes Rust's allocator abort, which traps
        // as `unreachable`: the limiter saw the real cause.
        TrapReason::Trap(_) if state.limiter.refused => Outcome::Limit {
            limit: LimitKind::Memory,
            detail: LimitKind::Memory.describe(limits),
        },
        TrapReason::Trap(reason) => {
            if let Some(kind) = state.limit_hit {
                Outcome::Limit { limit: kind, detail: kind.describe(limits) }
            } else if reason.contains("instance") && reason.contains("pool") {
                Outcome::Trap { reason: format!("no free instance slot: {reason}") }
            } else {
                Outcome::Trap { reason }
            }
        }
    }
}

/// Distinguishes compiled artifacts of different wasmtime builds and
/// engine settings, so a stale file is recompiled rather than rejected.
fn engine_tag(engine: &Engine) -> String {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    engine.precompile_compatibility_hash().hash(&mut h);
    format!("{:016x}", h.finish())
}
