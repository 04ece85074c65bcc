//! The README's main job: `duckgate demo` on its own data directory shows
//! every capability and then keeps serving until it is stopped.

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use duckgate_e2e::{duckgate_binary, free_port};

#[test]
fn the_demo_shows_every_capability_then_serves_until_stopped() {
    let data = tempfile::tempdir().unwrap();
    let port = free_port();
    let mut child = Command::new(duckgate_binary())
        .args(["demo", "--port", &port.to_string(), "--plugins-dir", concat!(env!("CARGO_MANIFEST_DIR"), "/../dist/plugins"), "--data-dir"])
        .arg(data.path())
        .env("RUST_LOG", "warn")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = tx.send(line);
        }
    });
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut out = String::new();
    while !out.contains("Serving until Ctrl-C.") {
        let line = rx.recv_timeout(deadline.saturating_duration_since(Instant::now())).unwrap_or_else(|_| panic!("the demo did not finish its tour:\n{out}"));
        out.push_str(&line);
        out.push('\n');
    }
    for expected in [
        "Feeding synthetic telemetry over OTLP",
        "search     ",
        "high-latency-alert   ok",
        "error-correlation    ok",
        "correlated-errors",
        "search: p99 latency",
        "summary: {\"critical\":",
        "(5 rows,",
        "critical  4",
    ] {
        assert!(out.contains(expected), "missing {expected:?} in:\n{out}");
    }
    // Still serving: the URLs it printed work.
    let health = Command::new("curl").args(["-sf", &format!("http://127.0.0.1:{port}/health")]).output().unwrap();
    assert!(String::from_utf8_lossy(&health.stdout).contains("\"status\":\"ok\""));
    Command::new("kill").arg("-TERM").arg(child.id().to_string()).status().unwrap();
    let status = child.wait().unwrap();
    assert!(status.success(), "the demo stops cleanly on SIGTERM: {status}");
}
