//! Harness for duckgate's end-to-end tests: a real S3 server (s3s-fs, the
//! S3 protocol over a directory) on 127.0.0.1, and the real `duckgate`
//! binary started as a child process and spoken to over HTTP.
//!
//! The S3 server counts the requests it serves by kind, so a test can prove
//! that a cached query made no GET of object bytes.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hyper_util::rt::{TokioExecutor, TokioIo};
use hyper_util::server::conn::auto::Builder as ConnBuilder;
use serde_json::{json, Value};

pub const ACCESS_KEY: &str = "duckgate-test-key";
pub const SECRET_KEY: &str = "duckgate-test-secret-0123456789";
pub const BUCKET: &str = "analytics";

/// Requests the S3 server has answered, by kind.
#[derive(Default)]
pub struct S3Counts {
    pub get_object: AtomicU64,
    pub head: AtomicU64,
    pub list: AtomicU64,
    pub put: AtomicU64,
}

/// An in-process S3 server on its own thread and runtime, so it keeps
/// serving while a test blocks.
pub struct S3Server {
    pub addr: SocketAddr,
    pub root: tempfile::TempDir,
    pub counts: Arc<S3Counts>,
    runtime: Option<tokio::runtime::Runtime>,
}

impl Drop for S3Server {
    fn drop(&mut self) {
        // Tests drop the server inside their own async runtime, where a
        // blocking shutdown is not allowed.
        if let Some(runtime) = self.runtime.take() {
            runtime.shutdown_background();
        }
    }
}

impl S3Server {
    pub fn start() -> Self {
        let root = tempfile::tempdir().expect("temp dir");
        std::fs::create_dir_all(root.path().join(BUCKET)).expect("bucket dir");
        let counts = Arc::new(S3Counts::default());
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime");
        // Bound here with std: tests call this from inside their own runtime,
        // where blocking on another one is not allowed.
        let std_listener = std::net::TcpListener::bind("127.0.0.1:0").expect("bind S3 server");
        std_listener.set_nonblocking(true).expect("nonblocking");
        let addr = std_listener.local_addr().expect("addr");
        let fs = s3s_fs::FileSystem::new(root.path()).expect("s3s-fs");
        let mut builder = s3s::service::S3ServiceBuilder::new(fs);
        builder.set_auth(s3s::auth::SimpleAuth::from_single(ACCESS_KEY, SECRET_KEY));
        let service = builder.build();
        let task_counts = counts.clone();
        runtime.spawn(async move {
            let listener = tokio::net::TcpListener::from_std(std_listener).expect("listener");
            let http = ConnBuilder::new(TokioExecutor::new());
            loop {
                let Ok((socket, _)) = listener.accept().await else { continue };
                let service = service.clone();
                let counts = task_counts.clone();
                let counted = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    count(&counts, &req);
                    let service = service.clone();
                    async move { hyper::service::Service::call(&service, req).await }
                });
                let conn = http.serve_connection(TokioIo::new(socket), counted).into_owned();
                tokio::spawn(async move {
                    let _ = conn.await;
                });
            }
        });
        S3Server { addr, root, counts, runtime: Some(runtime) }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// The `s3_config` a client sends for this server.
    pub fn s3_config(&self) -> Value {
        json!({
            "endpoint": self.endpoint(),
            "bucket": BUCKET,
            "region": "us-east-1",
            "accessKeyId": ACCESS_KEY,
            "secretAccessKey": SECRET_KEY,
            "forcePathStyle": true,
        })
    }

    /// Where an object lives on disk (s3s-fs keeps one file per object).
    pub fn object_path(&self, key: &str) -> PathBuf {
        self.root.path().join(BUCKET).join(key)
    }

    pub fn get_objects(&self) -> u64 {
        self.counts.get_object.load(Ordering::SeqCst)
    }
}

fn count(counts: &S3Counts, req: &hyper::Request<hyper::body::Incoming>) {
    let query = req.uri().query().unwrap_or("");
    let path_segments = req.uri().path().trim_matches('/').split('/').count();
    let counter = match *req.method() {
        hyper::Method::GET if query.contains("list-type") || path_segments <= 1 => &counts.list,
        hyper::Method::GET => &counts.get_object,
        hyper::Method::HEAD => &counts.head,
        hyper::Method::PUT => &counts.put,
        _ => return,
    };
    counter.fetch_add(1, Ordering::SeqCst);
}

/// The `duckgate` binary built by the same `cargo test` run.
pub fn duckgate_binary() -> PathBuf {
    if let Ok(path) = std::env::var("DUCKGATE_BIN") {
        return PathBuf::from(path);
    }
    // Tests run from target/<profile>/deps/, the bench binary from
    // target/<profile>/: the duckgate binary is in target/<profile>/.
    let exe = std::env::current_exe().expect("current exe");
    let mut profile_dir = exe.parent().expect("exe dir");
    if profile_dir.ends_with("deps") {
        profile_dir = profile_dir.parent().expect("target profile dir");
    }
    let bin = profile_dir.join("duckgate");
    assert!(
        bin.exists(),
        "{} does not exist: build it first with `cargo build --release -p duckgate` (scripts/test does)",
        bin.display()
    );
    bin
}

/// A running `duckgate serve`, killed when dropped.
pub struct Gateway {
    pub port: u16,
    pub data_dir: PathBuf,
    child: Child,
    _data: Option<tempfile::TempDir>,
    pub client: reqwest::Client,
}

pub struct GatewayBuilder {
    args: Vec<String>,
    envs: Vec<(String, String)>,
    data_dir: Option<PathBuf>,
    stderr: Option<PathBuf>,
}

impl GatewayBuilder {
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.args.push(arg.into());
        self
    }

    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.envs.push((key.into(), value.into()));
        self
    }

    /// Sends the gateway's logs (stderr) to a file, for tests that read them.
    pub fn stderr_to(mut self, file: &Path) -> Self {
        self.stderr = Some(file.to_path_buf());
        self
    }

    pub fn data_dir(mut self, dir: &Path) -> Self {
        self.data_dir = Some(dir.to_path_buf());
        self
    }

    pub async fn start(self) -> Gateway {
        let (data_dir, holder) = match self.data_dir {
            Some(dir) => (dir, None),
            None => {
                let t = tempfile::tempdir().expect("temp dir");
                (t.path().to_path_buf(), Some(t))
            }
        };
        let port = free_port();
        let mut cmd = Command::new(duckgate_binary());
        cmd.arg("serve")
            .arg("--port")
            .arg(port.to_string())
            .arg("--data-dir")
            .arg(&data_dir)
            .args(&self.args)
            .env_remove("PORT")
            .env("RUST_LOG", std::env::var("DUCKGATE_TEST_LOG").unwrap_or_else(|_| "warn".into()))
            .stdin(Stdio::null());
        for (k, v) in &self.envs {
            cmd.env(k, v);
        }
        if let Some(path) = &self.stderr {
            cmd.stderr(std::fs::File::create(path).expect("log file"));
        }
        let child = cmd.spawn().expect("spawn duckgate");
        let mut gateway = Gateway {
            port,
            data_dir,
            child,
            _data: holder,
            client: reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("client"),
        };
        gateway.wait_ready().await;
        gateway
    }
}

impl Gateway {
    pub fn builder() -> GatewayBuilder {
        GatewayBuilder { args: Vec::new(), envs: Vec::new(), data_dir: None, stderr: None }
    }

    pub async fn start() -> Gateway {
        Self::builder().start().await
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://127.0.0.1:{}{path}", self.port)
    }

    async fn wait_ready(&mut self) {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            if let Ok(Some(status)) = self.child.try_wait() {
                panic!("duckgate exited during start-up: {status}");
            }
            if let Ok(resp) = self.client.get(self.url("/health")).send().await {
                if resp.status().is_success() {
                    return;
                }
            }
            assert!(Instant::now() < deadline, "duckgate did not become healthy within 60 s");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// POSTs JSON; returns the status and the parsed body.
    pub async fn post(&self, path: &str, body: &Value) -> (u16, Value) {
        let resp = self.client.post(self.url(path)).json(body).send().await.expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} answered non-JSON ({status}): {text}"));
        (status, value)
    }

    /// POSTs raw bytes as JSON content.
    pub async fn post_raw(&self, path: &str, body: impl Into<reqwest::Body>) -> (u16, Value) {
        let resp = self
            .client
            .post(self.url(path))
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .expect("request");
        let status = resp.status().as_u16();
        let text = resp.text().await.expect("body");
        let value = serde_json::from_str(&text).unwrap_or_else(|_| panic!("{path} answered non-JSON ({status}): {text}"));
        (status, value)
    }

    pub async fn get(&self, path: &str) -> (u16, Value) {
        let resp = self.client.get(self.url(path)).send().await.expect("request");
        let status = resp.status().as_u16();
        (status, resp.json().await.expect("JSON body"))
    }

    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// Sends a signal and waits for the process to exit.
    pub fn signal_and_wait(&mut self, signal: &str) -> std::process::ExitStatus {
        Command::new("kill").arg(format!("-{signal}")).arg(self.child.id().to_string()).status().expect("kill");
        self.child.wait().expect("wait")
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.try_wait(), Ok(None))
    }
}

impl Drop for Gateway {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").expect("bind").local_addr().expect("addr").port()
}

/// A `/snapshot` request body.
pub fn snapshot_body(key: &str, columns: &[(&str, &str, &str)], data: Value, s3_config: Option<Value>) -> Value {
    let mut body = json!({
        "table_name": "t",
        "data": data,
        "columns": columns.iter().map(|(s, t, ty)| json!({"source": s, "target": t, "type": ty})).collect::<Vec<_>>(),
        "s3_key": key,
    });
    if let Some(config) = s3_config {
        body["s3_config"] = config;
    }
    body
}

/// A `/query` request body.
pub fn query_body(sql: &str, tables: &[(&str, &str)], s3_config: Option<Value>) -> Value {
    let mut body = json!({
        "sql": sql,
        "tables": tables.iter().map(|(n, p)| json!({"name": n, "s3_path": p})).collect::<Vec<_>>(),
    });
    if let Some(config) = s3_config {
        body["s3_config"] = config;
    }
    body
}
