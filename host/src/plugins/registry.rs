//! Installed plugins: their versions, manifests and run history, kept under
//! `<data-dir>/plugins` so they survive restarts (kill -9 included).
//!
//! Layout: `blobs/<sha256>.wasm` (every uploaded version, by content),
//! `manifests/<name>.json` (the current version, limits, schedule, config;
//! replaced atomically by rename), `runs/<name>.jsonl` (receipts, bounded).
//! A version swap replaces one `Arc` in the map: invocations that already
//! hold the old version finish on it.

use std::collections::{BTreeMap, HashMap, VecDeque};
use std::io::{BufRead, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, RwLock};

use serde::{Deserialize, Serialize};

use super::limits::{LimitOverrides, Limits};
use super::receipt::Receipt;
use super::runtime::{Compiled, LoadError, Runtime};

/// How many versions a manifest remembers.
const VERSION_HISTORY: usize = 20;

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct VersionInfo {
    pub sha256: String,
    pub size: usize,
    pub uploaded_at_ms: i64,
}

/// What an operator sets when installing a plugin.
#[derive(Debug, Clone, Default, Serialize, Deserialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Settings {
    #[serde(default)]
    pub limits: LimitOverrides,
    /// Run every this many milliseconds; none for on-demand only.
    #[serde(default)]
    pub interval_ms: Option<u64>,
    #[serde(default)]
    pub config: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
pub struct Manifest {
    pub name: String,
    pub version: String,
    pub versions: Vec<VersionInfo>,
    #[serde(flatten)]
    pub settings: Settings,
    pub created_at_ms: i64,
    pub updated_at_ms: i64,
}

/// A plugin ready to run: its manifest and its compiled current version.
pub struct Installed {
    pub manifest: Manifest,
    pub compiled: Arc<Compiled>,
    pub config: Arc<HashMap<String, String>>,
    pub limits: Limits,
}

/// Receipts of one plugin, newest last, plus counters.
#[derive(Default)]
struct History {
    receipts: VecDeque<Receipt>,
    runs: u64,
    failures: u64,
    consecutive_failures: u64,
    lines_in_file: usize,
}

impl History {
    fn push(&mut self, receipt: Receipt, limit: usize) {
        self.runs += 1;
        if receipt.outcome.is_ok() {
            self.consecutive_failures = 0;
        } else {
            self.failures += 1;
            self.consecutive_failures += 1;
        }
        self.receipts.push_back(receipt);
        while self.receipts.len() > limit {
            self.receipts.pop_front();
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct Counters {
    pub runs: u64,
    pub failures: u64,
    pub consecutive_failures: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("plugin name must be 1-64 characters of a-z, 0-9, '-' or '_', starting with a letter or digit")]
    BadName,
    #[error("no plugin named {0:?}")]
    NotFound(String),
    #[error(transparent)]
    Load(#[from] LoadError),
    #[error("cannot store the plugin: {0}")]
    Io(#[from] std::io::Error),
}

pub struct Registry {
    dir: PathBuf,
    runtime: Arc<Runtime>,
    plugins: RwLock<BTreeMap<String, Arc<Installed>>>,
    history: Mutex<HashMap<String, History>>,
    history_limit: usize,
}

pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name.bytes().next().is_some_and(|b| b.is_ascii_lowercase() || b.is_ascii_digit())
        && name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-' || b == b'_')
}

fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let tmp = path.with_extension("tmp");
    let mut file = std::fs::File::create(&tmp)?;
    file.write_all(bytes)?;
    file.sync_all()?;
    std::fs::rename(&tmp, path)?;
    if let Some(dir) = path.parent() {
        std::fs::File::open(dir)?.sync_all()?;
    }
    Ok(())
}

impl Registry {
    /// Opens the registry and loads every installed plugin. Compiled code
    /// comes from the runtime's disk cache, so nothing is recompiled.
    pub fn open(dir: PathBuf, runtime: Arc<Runtime>, history_limit: usize) -> anyhow::Result<Self> {
        for sub in ["blobs", "manifests", "runs"] {
            std::fs::create_dir_all(dir.join(sub))?;
        }
        let registry = Registry {
            dir,
            runtime,
            plugins: RwLock::new(BTreeMap::new()),
            history: Mutex::new(HashMap::new()),
            history_limit,
        };
        for entry in std::fs::read_dir(registry.dir.join("manifests"))? {
            let path = entry?.path();
            if path.extension().and_then(|e| e.to_str()) != Some("json") {
                continue;
            }
            match registry.load_manifest(&path) {
                Ok(installed) => {
                    let name = installed.manifest.name.clone();
                    registry.load_history(&name);
                    registry.plugins.write().expect("plugins lock").insert(name, Arc::new(installed));
                }
                Err(e) => tracing::error!(path = %path.display(), error = %e, "could not load an installed plugin"),
            }
        }
        Ok(registry)
    }

    fn load_manifest(&self, path: &Path) -> anyhow::Result<Installed> {
        let manifest: Manifest = serde_json::from_slice(&std::fs::read(path)?)?;
        let bytes = std::fs::read(self.blob_path(&manifest.version))?;
        let compiled = self.runtime.load(&bytes)?;
        Ok(self.installed(manifest, compiled))
    }

    fn installed(&self, manifest: Manifest, compiled: Arc<Compiled>) -> Installed {
        let limits = manifest.settings.limits.resolve(self.runtime.defaults(), self.runtime.memory_ceiling());
        let config = Arc::new(manifest.settings.config.iter().map(|(k, v)| (k.clone(), v.clone())).collect());
        Installed { manifest, compiled, config, limits }
    }

    fn blob_path(&self, sha: &str) -> PathBuf {
        self.dir.join("blobs").join(format!("{sha}.wasm"))
    }

    pub fn runtime(&self) -> &Arc<Runtime> {
        &self.runtime
    }

    /// Installs a version (component bytes already validated as a component)
    /// with its settings; replaces the current version atomically. Compiling
    /// is CPU-heavy: call from a blocking thread.
    pub fn install(&self, name: &str, component: &[u8], settings: Settings) -> Result<Arc<Installed>, RegistryError> {
        if !valid_name(name) {
            return Err(RegistryError::BadName);
        }
        let compiled = self.runtime.load(component)?;
        let now = chrono::Utc::now().timestamp_millis();
        let blob = self.blob_path(&compiled.sha256);
        if !blob.exists() {
            write_atomically(&blob, component)?;
        }
        let previous = self.get(name);
        let mut versions = previous.as_ref().map(|p| p.manifest.versions.clone()).unwrap_or_default();
        if versions.last().map(|v| &v.sha256) != Some(&compiled.sha256) {
            versions.push(VersionInfo { sha256: compiled.sha256.clone(), size: compiled.size, uploaded_at_ms: now });
        }
        if versions.len() > VERSION_HISTORY {
            versions.drain(..versions.len() - VERSION_HISTORY);
        }
        let manifest = Manifest {
            name: name.to_string(),
            version: compiled.sha256.clone(),
            versions,
            settings,
            created_at_ms: previous.as_ref().map(|p| p.manifest.created_at_ms).unwrap_or(now),
            updated_at_ms: now,
        };
        write_atomically(
            &self.dir.join("manifests").join(format!("{name}.json")),
            &serde_json::to_vec_pretty(&manifest).expect("manifests serialize"),
        )?;
        let installed = Arc::new(self.installed(manifest, compiled));
        self.plugins.write().expect("plugins lock").insert(name.to_string(), installed.clone());
        Ok(installed)
    }

    pub fn get(&self, name: &str) -> Option<Arc<Installed>> {
        self.plugins.read().expect("plugins lock").get(name).cloned()
    }

    pub fn list(&self) -> Vec<Arc<Installed>> {
        self.plugins.read().expect("plugins lock").values().cloned().collect()
    }

    /// Uninstalls a plugin: its manifest and history go; blobs stay (other
    /// plugins may share a version, and they are small).
    pub fn remove(&self, name: &str) -> Result<(), RegistryError> {
        let removed = self.plugins.write().expect("plugins lock").remove(name);
        if removed.is_none() {
            return Err(RegistryError::NotFound(name.to_string()));
        }
        std::fs::remove_file(self.dir.join("manifests").join(format!("{name}.json")))?;
        let _ = std::fs::remove_file(self.runs_path(name));
        self.history.lock().expect("history lock").remove(name);
        Ok(())
    }

    fn runs_path(&self, name: &str) -> PathBuf {
        self.dir.join("runs").join(format!("{name}.jsonl"))
    }

    fn load_history(&self, name: &str) {
        let Ok(file) = std::fs::File::open(self.runs_path(name)) else { return };
        let mut history = History::default();
        for line in std::io::BufReader::new(file).lines().map_while(Result::ok) {
            history.lines_in_file += 1;
            if let Ok(receipt) = serde_json::from_str::<Receipt>(&line) {
                history.push(receipt, self.history_limit);
            }
        }
        self.history.lock().expect("history lock").insert(name.to_string(), history);
    }

    /// Records a run: in memory (bounded) and appended to the plugin's file,
    /// which is compacted to the bound when it grows past twice that.
    pub fn record(&self, name: &str, receipt: &Receipt) {
        let mut all = self.history.lock().expect("history lock");
        let history = all.entry(name.to_string()).or_default();
        history.push(receipt.clone(), self.history_limit);
        let path = self.runs_path(name);
        let line = serde_json::to_string(receipt).expect("receipts serialize");
        let result = if history.lines_in_file + 1 > 2 * self.history_limit {
            let text: String = history.receipts.iter().map(|r| serde_json::to_string(r).expect("receipts serialize") + "\n").collect();
            history.lines_in_file = history.receipts.len();
            write_atomically(&path, text.as_bytes())
        } else {
            history.lines_in_file += 1;
            std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(&path)
                .and_then(|mut f| f.write_all(format!("{line}\n").as_bytes()))
        };
        if let Err(e) = result {
            tracing::warn!(plugin = name, error = %e, "could not persist a run receipt");
        }
    }

    /// The newest `limit` receipts, newest first.
    pub fn runs(&self, name: &str, limit: usize) -> Vec<Receipt> {
        self.history
            .lock()
            .expect("history lock")
            .get(name)
            .map(|h| h.receipts.iter().rev().take(limit).cloned().collect())
            .unwrap_or_default()
    }

    pub fn counters(&self, name: &str) -> Counters {
        let all = self.history.lock().expect("history lock");
        let h = all.get(name);
        Counters {
            runs: h.map_or(0, |h| h.runs),
            failures: h.map_or(0, |h| h.failures),
            consecutive_failures: h.map_or(0, |h| h.consecutive_failures),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::valid_name;

    #[test]
    fn names_are_safe_file_names() {
        assert!(valid_name("high-latency-alert"));
        assert!(valid_name("a1_b"));
        for bad in ["", "-x", "A", "../x", "a/b", "a.b", &"x".repeat(65)] {
            assert!(!valid_name(bad), "{bad}");
        }
    }
}
