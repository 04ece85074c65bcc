//! A local read-through cache of S3 objects, bounded in bytes (LRU-ish,
//! moka's TinyLFU), keyed by endpoint, bucket, key and ETag.
//!
//! Most of each Node sidecar query was S3 round trips for objects that had
//! not changed. Here an unchanged object costs one HEAD (or one LIST for a
//! glob); a changed object has a new ETag, so a new key, and is fetched again.
//! DuckDB then reads a local file.
//!
//! A file may be evicted while a query still reads it: entries are
//! reference-counted, and a file is deleted when the last holder lets go.
//! Every download gets a unique file name so a re-download never collides
//! with a file that is still being read.

use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use futures::StreamExt;
use object_store::path::Path as ObjectPath;
use object_store::{GetOptions, ObjectMeta, ObjectStore};
use serde::Serialize;
use sha2::{Digest, Sha256};
use tokio::io::AsyncWriteExt;

use crate::error::Error;
use crate::objects::Bucket;

/// A local copy of one object version. Deleted on drop when it is ours.
#[derive(Debug)]
pub struct LocalObject {
    pub path: PathBuf,
    pub size: u64,
    owned: bool,
}

impl Drop for LocalObject {
    fn drop(&mut self) {
        if self.owned {
            let _ = std::fs::remove_file(&self.path);
        }
    }
}

#[derive(Debug, Clone, Serialize)]
pub struct CacheStats {
    pub hits: u64,
    pub misses: u64,
    pub bytes: u64,
    pub entries: u64,
    pub capacity_bytes: u64,
    pub bytes_fetched: u64,
}

pub struct ObjectCache {
    dir: PathBuf,
    entries: moka::future::Cache<String, Arc<LocalObject>>,
    capacity: u64,
    hits: AtomicU64,
    misses: AtomicU64,
    bytes_fetched: AtomicU64,
    downloads: AtomicU64,
}

impl ObjectCache {
    /// Creates the cache in `dir`, emptying what an earlier run left there
    /// (the index lives in memory, so those files are orphans).
    pub fn new(dir: &Path, capacity: u64) -> anyhow::Result<Self> {
        if dir.exists() {
            std::fs::remove_dir_all(dir)?;
        }
        std::fs::create_dir_all(dir)?;
        let entries = moka::future::Cache::builder()
            .max_capacity(capacity)
            .weigher(|_: &String, v: &Arc<LocalObject>| v.size.min(u32::MAX as u64).max(1) as u32)
            .build();
        Ok(ObjectCache {
            dir: dir.to_path_buf(),
            entries,
            capacity,
            hits: AtomicU64::new(0),
            misses: AtomicU64::new(0),
            bytes_fetched: AtomicU64::new(0),
            downloads: AtomicU64::new(0),
        })
    }

    /// A local file with the content of `meta`'s version of the object.
    pub async fn get(&self, bucket: &Bucket, meta: &ObjectMeta) -> Result<Arc<LocalObject>, Error> {
        if let Some(root) = &bucket.local_root {
            // Already a local file: read it in place.
            return Ok(Arc::new(LocalObject {
                path: root.join(meta.location.as_ref()),
                size: meta.size,
                owned: false,
            }));
        }
        let key = cache_key(bucket, meta);
        let mut loaded_here = false;
        let entry = self
            .entries
            .try_get_with(key, async {
                loaded_here = true;
                self.download(bucket, meta).await.map(Arc::new)
            })
            .await
            .map_err(|e: Arc<Error>| Error::clone(&e))?;
        if loaded_here {
            self.misses.fetch_add(1, Ordering::Relaxed);
        } else {
            self.hits.fetch_add(1, Ordering::Relaxed);
        }
        Ok(entry)
    }

    async fn download(&self, bucket: &Bucket, meta: &ObjectMeta) -> Result<LocalObject, Error> {
        let n = self.downloads.fetch_add(1, Ordering::Relaxed);
        let path = self.dir.join(format!("{}-{n}.parquet", &cache_key(bucket, meta)[..16]));
        let options = GetOptions { if_match: meta.e_tag.clone(), ..GetOptions::default() };
        let context = format!("reading \"{}\"", meta.location);
        let result = get_opts(bucket.store(), &meta.location, options)
            .await
            .map_err(|e| bucket.error(&context, e))?;
        // Owns the file from here on, so a failed download leaves nothing behind.
        let mut local = LocalObject { path: path.clone(), size: 0, owned: true };
        let mut file = tokio::fs::File::create(&path).await.map_err(Error::internal)?;
        let mut stream = result.into_stream();
        while let Some(chunk) = stream.next().await {
            let chunk = chunk.map_err(|e| bucket.error(&context, e))?;
            local.size += chunk.len() as u64;
            file.write_all(&chunk).await.map_err(Error::internal)?;
        }
        file.flush().await.map_err(Error::internal)?;
        self.bytes_fetched.fetch_add(local.size, Ordering::Relaxed);
        Ok(local)
    }

    pub async fn stats(&self) -> CacheStats {
        // Brings moka's size accounting up to date with recent inserts.
        self.entries.run_pending_tasks().await;
        CacheStats {
            hits: self.hits.load(Ordering::Relaxed),
            misses: self.misses.load(Ordering::Relaxed),
            bytes: self.entries.weighted_size(),
            entries: self.entries.entry_count(),
            capacity_bytes: self.capacity,
            bytes_fetched: self.bytes_fetched.load(Ordering::Relaxed),
        }
    }
}

async fn get_opts(
    store: &Arc<dyn ObjectStore>,
    location: &ObjectPath,
    options: GetOptions,
) -> object_store::Result<object_store::GetResult> {
    store.get_opts(location, options).await
}

fn cache_key(bucket: &Bucket, meta: &ObjectMeta) -> String {
    let version = match &meta.e_tag {
        Some(etag) => etag.clone(),
        None => format!("{}|{}", meta.last_modified.timestamp_nanos_opt().unwrap_or_default(), meta.size),
    };
    let mut h = Sha256::new();
    for part in [bucket.identity.as_str(), meta.location.as_ref(), version.as_str()] {
        h.update(part.as_bytes());
        h.update([0]);
    }
    hex::encode(h.finalize())
}
