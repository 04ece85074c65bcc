//! Object stores: the per-request `s3_config` of the sidecar protocol, the
//! configured default store, the endpoint allowlist, listing keys and globs,
//! and errors that never carry a credential.
//!
//! Clients are cached by their full configuration (secret included, hashed),
//! so a tenant's repeated requests reuse one connection pool instead of paying
//! a TLS handshake each time, and two tenants never share a client.

use std::fmt;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use futures::TryStreamExt;
use globset::{GlobBuilder, GlobMatcher};
use object_store::aws::AmazonS3Builder;
use object_store::local::LocalFileSystem;
use object_store::path::Path as ObjectPath;
use object_store::{ClientOptions, ObjectMeta, ObjectStore, ObjectStoreExt, RetryConfig};
use serde_json::Value;
use sha2::{Digest, Sha256};

use crate::error::Error;
use crate::request::Field;

/// `s3_config` of a request. `Debug` is written by hand so a stray `{:?}`
/// cannot print the secret.
#[derive(Clone)]
pub struct S3Config {
    pub endpoint: String,
    pub bucket: String,
    pub region: Option<String>,
    pub access_key_id: String,
    pub secret_access_key: String,
    pub force_path_style: Option<bool>,
}

impl fmt::Debug for S3Config {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("S3Config")
            .field("endpoint", &self.endpoint)
            .field("bucket", &self.bucket)
            .field("region", &self.region)
            .field("access_key_id", &"<redacted>")
            .field("secret_access_key", &"<redacted>")
            .field("force_path_style", &self.force_path_style)
            .finish()
    }
}

impl S3Config {
    /// Reads `s3_config` the way the Node sidecar validates it, naming the
    /// field that is wrong.
    pub fn from_json(value: &Value) -> Result<Self, Error> {
        let obj = Field::new("s3_config").object(value)?;
        let at = |name: &str| Field::new("s3_config").child(name);
        let endpoint = at("endpoint").required_str(obj)?.to_string();
        let url = url::Url::parse(&endpoint).map_err(|_| {
            Error::invalid("s3_config.endpoint must be an http(s) URL such as http://127.0.0.1:9000")
        })?;
        if !matches!(url.scheme(), "http" | "https") || url.host_str().is_none() {
            return Err(Error::invalid(
                "s3_config.endpoint must be an http(s) URL such as http://127.0.0.1:9000",
            ));
        }
        if url.path() != "/" && !url.path().is_empty() {
            return Err(Error::invalid("s3_config.endpoint must not have a path"));
        }
        Ok(S3Config {
            endpoint: endpoint.trim_end_matches('/').to_string(),
            bucket: at("bucket").required_str(obj)?.to_string(),
            region: at("region").optional_str(obj)?.map(str::to_string),
            access_key_id: at("accessKeyId").required_str(obj)?.to_string(),
            secret_access_key: at("secretAccessKey").required_str(obj)?.to_string(),
            force_path_style: at("forcePathStyle").optional_bool(obj)?,
        })
    }

    /// `host[:port]` of the endpoint, as matched against the allowlist.
    fn authority(&self) -> String {
        let url = url::Url::parse(&self.endpoint).expect("validated in from_json");
        let host = url.host_str().unwrap_or_default().to_ascii_lowercase();
        match url.port() {
            Some(port) => format!("{host}:{port}"),
            None => host,
        }
    }

    fn cache_key(&self) -> String {
        let mut h = Sha256::new();
        for part in [
            self.endpoint.as_str(),
            self.bucket.as_str(),
            self.region.as_deref().unwrap_or(""),
            self.access_key_id.as_str(),
            self.secret_access_key.as_str(),
            if self.force_path_style.unwrap_or(true) { "path" } else { "vhost" },
        ] {
            h.update(part.as_bytes());
            h.update([0]);
        }
        hex::encode(h.finalize())
    }
}

/// One bucket to read and write, with what is needed to name its objects in
/// the cache and to scrub its credentials from error text.
pub struct Bucket {
    store: Arc<dyn ObjectStore>,
    /// Identifies the bucket across clients: endpoint and bucket name.
    pub identity: String,
    /// Set for the local filesystem store: objects are already local files.
    pub local_root: Option<PathBuf>,
    secrets: Vec<String>,
}

impl Bucket {
    pub fn store(&self) -> &Arc<dyn ObjectStore> {
        &self.store
    }

    /// Turns an object store error into an API error with no secret in it.
    pub fn error(&self, context: &str, err: object_store::Error) -> Error {
        let mapped = match &err {
            object_store::Error::NotFound { .. } => {
                return Error::NotFound(self.scrub(&format!("{context}: object not found")))
            }
            object_store::Error::Unauthenticated { .. } | object_store::Error::PermissionDenied { .. } => {
                format!("{context}: the object store refused the credentials; check s3_config.accessKeyId and secretAccessKey")
            }
            object_store::Error::Precondition { .. } => {
                format!("{context}: the object changed while it was read; retry the request")
            }
            other => format!("{context}: object store request failed: {}", summarize(&root_cause(other))),
        };
        Error::Upstream(self.scrub(&mapped))
    }

    fn scrub(&self, text: &str) -> String {
        let mut out = text.to_string();
        for secret in self.secrets.iter().filter(|s| !s.is_empty()) {
            out = out.replace(secret.as_str(), "***");
        }
        out
    }

    /// The objects a table's `s3_path` names: one key, or every key matching a
    /// glob (`*`, `?`, `[..]`, `{a,b}`, and `**` across `/`), sorted by key.
    pub async fn resolve(&self, field: &str, s3_path: &str) -> Result<Vec<ObjectMeta>, Error> {
        let s3_path = s3_path.trim_start_matches('/');
        let glob_at = s3_path.find(['*', '?', '[', '{']);
        let Some(glob_at) = glob_at else {
            let path = parse_key(field, s3_path)?;
            return match self.store.head(&path).await {
                Ok(meta) => Ok(vec![meta]),
                Err(object_store::Error::NotFound { .. }) => Err(Error::NotFound(format!(
                    "{field} \"{s3_path}\" does not exist in the bucket"
                ))),
                Err(err) => Err(self.error(&format!("reading {field}"), err)),
            };
        };
        let matcher = glob(field, s3_path)?;
        let prefix = &s3_path[..glob_at];
        let prefix = prefix.rfind('/').map(|i| &prefix[..i]).unwrap_or("");
        let prefix = (!prefix.is_empty())
            .then(|| parse_key(field, prefix))
            .transpose()?;
        let mut found: Vec<ObjectMeta> = self
            .store
            .list(prefix.as_ref())
            .try_filter(|meta| std::future::ready(matcher.is_match(meta.location.as_ref())))
            .try_collect()
            .await
            .map_err(|err| self.error(&format!("listing {field}"), err))?;
        if found.is_empty() {
            return Err(Error::NotFound(format!(
                "{field} \"{s3_path}\" matched no objects"
            )));
        }
        found.sort_by(|a, b| a.location.cmp(&b.location));
        Ok(found)
    }
}

fn glob(field: &str, pattern: &str) -> Result<GlobMatcher, Error> {
    GlobBuilder::new(pattern)
        .literal_separator(true)
        .build()
        .map(|g| g.compile_matcher())
        .map_err(|e| Error::invalid(format!("{field} is not a valid glob: {e}")))
}

/// An object key as the store sees it; refuses `..`, empty segments and the like.
pub fn parse_key(field: &str, key: &str) -> Result<ObjectPath, Error> {
    let key = key.trim_start_matches('/');
    if key.is_empty() {
        return Err(Error::invalid(format!("{field} must be a non-empty string")));
    }
    ObjectPath::parse(key).map_err(|e| Error::invalid(format!("{field} is not a valid object key: {e}")))
}

/// Keeps what went wrong and drops what the remote server said: a caller
/// must not be able to read an arbitrary endpoint's response through our
/// error messages.
fn summarize(text: &str) -> String {
    let cut = text.find(": <").or_else(|| text.find(": {")).unwrap_or(text.len());
    let mut out: String = text[..cut].chars().take(300).collect();
    if out.len() < text.len() {
        out.push_str(" ...");
    }
    out
}

fn root_cause(err: &(dyn std::error::Error + 'static)) -> String {
    let mut parts = vec![err.to_string()];
    let mut source = err.source();
    while let Some(s) = source {
        let text = s.to_string();
        if !parts.iter().any(|p| p.contains(&text)) {
            parts.push(text);
        }
        source = s.source();
    }
    parts.join(": ")
}

/// The stores duckgate talks to: the configured default and per-request S3.
pub struct Stores {
    default: Arc<Bucket>,
    clients: moka::sync::Cache<String, Arc<Bucket>>,
    allowlist: Option<Vec<String>>,
}

impl Stores {
    pub fn new(
        default_store: Option<&str>,
        default_dir: PathBuf,
        allowlist: Option<Vec<String>>,
    ) -> anyhow::Result<Self> {
        let default = match default_store {
            Some(spec) if spec.starts_with("s3://") => {
                let bucket = spec.trim_start_matches("s3://").trim_end_matches('/');
                anyhow::ensure!(!bucket.is_empty() && !bucket.contains('/'),
                    "--object-store s3://BUCKET takes a bucket name only, got {spec:?}");
                let store = AmazonS3Builder::from_env()
                    .with_bucket_name(bucket)
                    .with_retry(retry_config())
                    .with_client_options(client_options())
                    .build()
                    .map_err(|e| anyhow::anyhow!("cannot configure {spec}: {e}"))?;
                Bucket {
                    store: Arc::new(store),
                    identity: format!("env|{bucket}"),
                    local_root: None,
                    secrets: ["AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"]
                        .iter()
                        .filter_map(|v| std::env::var(v).ok())
                        .collect(),
                }
            }
            other => {
                let dir = match other {
                    Some(spec) => PathBuf::from(spec.strip_prefix("file://").unwrap_or(spec)),
                    None => default_dir,
                };
                std::fs::create_dir_all(&dir)
                    .map_err(|e| anyhow::anyhow!("cannot create object directory {}: {e}", dir.display()))?;
                let dir = dir.canonicalize()?;
                let store = LocalFileSystem::new_with_prefix(&dir)?;
                Bucket {
                    store: Arc::new(store),
                    identity: format!("file|{}", dir.display()),
                    local_root: Some(dir),
                    secrets: Vec::new(),
                }
            }
        };
        let allowlist = allowlist
            .map(|list| list.into_iter().map(|h| h.trim().to_ascii_lowercase()).filter(|h| !h.is_empty()).collect());
        Ok(Stores {
            default: Arc::new(default),
            clients: moka::sync::Cache::builder()
                .max_capacity(256)
                .time_to_idle(Duration::from_secs(600))
                .build(),
            allowlist,
        })
    }

    pub fn default_bucket(&self) -> Arc<Bucket> {
        self.default.clone()
    }

    /// A description of the default store for logs and `/health`.
    pub fn default_description(&self) -> String {
        match &self.default.local_root {
            Some(dir) => format!("local directory {}", dir.display()),
            None => self.default.identity.trim_start_matches("env|").to_string(),
        }
    }

    /// The bucket a request names, or the default one when it names none.
    /// Refuses endpoints outside the allowlist before any connection is made.
    pub fn bucket_for(&self, config: Option<&S3Config>) -> Result<Arc<Bucket>, Error> {
        let Some(config) = config else {
            return Ok(self.default.clone());
        };
        if let Some(allow) = &self.allowlist {
            let authority = config.authority();
            let host_only = authority.split(':').next().unwrap_or_default().to_string();
            if !allow.iter().any(|a| *a == authority || *a == host_only) {
                return Err(Error::Forbidden(format!(
                    "s3_config.endpoint host {authority} is not in DUCKGATE_S3_ENDPOINT_ALLOWLIST"
                )));
            }
        }
        self.clients
            .try_get_with(config.cache_key(), || build_s3(config).map(Arc::new))
            .map_err(|e: Arc<Error>| Error::invalid(e.to_string()))
    }
}

/// The endpoint object_store should call: as given for path-style requests;
/// with the bucket prepended to the host for virtual-hosted style.
fn endpoint_for(config: &S3Config) -> Result<String, Error> {
    if config.force_path_style.unwrap_or(true) {
        return Ok(config.endpoint.clone());
    }
    let mut url = url::Url::parse(&config.endpoint).expect("validated in from_json");
    let host = format!("{}.{}", config.bucket, url.host_str().unwrap_or_default());
    url.set_host(Some(&host))
        .map_err(|e| Error::invalid(format!("s3_config.endpoint cannot take the bucket as a host prefix: {e}")))?;
    Ok(url.as_str().trim_end_matches('/').to_string())
}

fn build_s3(config: &S3Config) -> Result<Bucket, Error> {
    let path_style = config.force_path_style.unwrap_or(true);
    let endpoint = endpoint_for(config)?;
    let store = AmazonS3Builder::new()
        .with_endpoint(endpoint)
        .with_bucket_name(&config.bucket)
        .with_region(config.region.clone().unwrap_or_else(|| "us-east-1".into()))
        .with_access_key_id(&config.access_key_id)
        .with_secret_access_key(&config.secret_access_key)
        .with_allow_http(true)
        .with_virtual_hosted_style_request(!path_style)
        .with_retry(retry_config())
        .with_client_options(client_options())
        .build()
        .map_err(|e| Error::invalid(format!("s3_config is not usable: {e}")))?;
    Ok(Bucket {
        store: Arc::new(store),
        // Credentials are part of the identity: a cached object is served
        // only to callers using the credentials that fetched it.
        identity: format!("s3|{}|{}|{}", config.endpoint, config.bucket, &config.cache_key()[..16]),
        local_root: None,
        secrets: vec![config.secret_access_key.clone(), config.access_key_id.clone()],
    })
}

/// Fail fast: a caller waiting on an unreachable endpoint should get a 502 in
/// seconds, not after object_store's default three minutes of retries.
fn retry_config() -> RetryConfig {
    RetryConfig {
        max_retries: 2,
        retry_timeout: Duration::from_secs(10),
        ..RetryConfig::default()
    }
}

fn client_options() -> ClientOptions {
    ClientOptions::new()
        .with_connect_timeout(Duration::from_secs(5))
        .with_timeout(Duration::from_secs(120))
        .with_allow_http(true)
}

/// Re-exported for request parsing of `s3_config`.
pub fn s3_config_field(body: &serde_json::Map<String, Value>) -> Result<Option<S3Config>, Error> {
    match body.get("s3_config") {
        None | Some(Value::Null) => Ok(None),
        Some(v) => S3Config::from_json(v).map(Some),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn config(endpoint: &str) -> S3Config {
        S3Config::from_json(&json!({
            "endpoint": endpoint, "bucket": "b", "accessKeyId": "AKIDEXAMPLE", "secretAccessKey": "s3cr3t"
        }))
        .unwrap()
    }

    #[test]
    fn debug_never_shows_credentials() {
        let text = format!("{:?}", config("http://127.0.0.1:9000"));
        assert!(!text.contains("s3cr3t") && !text.contains("AKIDEXAMPLE"), "{text}");
    }

    #[test]
    fn allowlist_matches_host_and_port() {
        let stores = Stores::new(None, tempfile::tempdir().unwrap().keep(), Some(vec!["minio:9000".into(), "s3.example.com".into()])).unwrap();
        assert!(stores.bucket_for(Some(&config("http://minio:9000"))).is_ok());
        assert!(stores.bucket_for(Some(&config("https://s3.example.com"))).is_ok());
        let refused = stores.bucket_for(Some(&config("http://169.254.169.254"))).err().unwrap();
        assert_eq!(refused.status(), 403);
        assert!(stores.bucket_for(Some(&config("http://minio:9001"))).is_err());
    }

    #[test]
    fn field_errors_name_the_field() {
        let err = S3Config::from_json(&json!({"endpoint": "http://x", "bucket": ""})).err().unwrap();
        assert_eq!(err.to_string(), "s3_config.bucket must be a non-empty string");
        let err = S3Config::from_json(&json!({"endpoint": "ftp://x", "bucket": "b"})).err().unwrap();
        assert!(err.to_string().starts_with("s3_config.endpoint"), "{err}");
    }

    #[test]
    fn upstream_bodies_are_not_passed_on() {
        let text = "Server returned non-2xx status code: 403 Forbidden: <?xml version=\"1.0\"?><Secret>internal</Secret>";
        let s = summarize(text);
        assert!(s.contains("403 Forbidden") && !s.contains("internal"), "{s}");
    }

    #[test]
    fn virtual_hosted_style_puts_the_bucket_in_the_host() {
        let mut c = config("https://s3.eu-west-1.amazonaws.com");
        assert_eq!(endpoint_for(&c).unwrap(), "https://s3.eu-west-1.amazonaws.com");
        c.force_path_style = Some(false);
        assert_eq!(endpoint_for(&c).unwrap(), "https://b.s3.eu-west-1.amazonaws.com");
        c.endpoint = "http://minio.local:9000".into();
        assert_eq!(endpoint_for(&c).unwrap(), "http://b.minio.local:9000");
    }

    #[test]
    fn scrubbed_errors_hold_no_secret() {
        let bucket = build_s3(&config("http://127.0.0.1:1")).unwrap();
        let err = bucket.error("x", object_store::Error::Generic {
            store: "S3",
            source: "signature for AKIDEXAMPLE with s3cr3t failed".into(),
        });
        let text = err.to_string();
        assert!(!text.contains("s3cr3t") && !text.contains("AKIDEXAMPLE"), "{text}");
    }
}
