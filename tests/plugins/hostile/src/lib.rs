//! Misbehaves in the way its input (or its `attack` config) asks, so tests
//! can prove each limit holds: `{"attack": "loop" | "alloc" | "recurse" |
//! "calls" | "rows" | "write" | "file" | "env" | "print" | "busy" | "panic" |
//! "big-output"}`.

use duckgate_guest::{config, json, now_ms, percentile, query, Plugin, Value};

struct Hostile;

#[inline(never)]
fn recurse(depth: u64, pad: &mut [u8; 256]) -> u64 {
    if depth == u64::MAX {
        return 0;
    }
    pad[(depth % 256) as usize] = depth as u8;
    let mut next = [0u8; 256];
    next.copy_from_slice(pad);
    1 + recurse(depth + 1, &mut next) + next[3] as u64
}

impl Plugin for Hostile {
    fn run(input: Value) -> Result<Value, String> {
        // Scheduled runs get `{}`: the attack then comes from the config.
        let attack = input["attack"].as_str().map(String::from).or_else(|| config("attack")).unwrap_or_default();
        match attack.as_str() {
            "loop" => {
                let mut x: u64 = 0;
                loop {
                    x = std::hint::black_box(x.wrapping_add(1));
                }
            }
            "sleep" => {
                std::thread::sleep(std::time::Duration::from_secs(3600));
                Ok(json!("woke up"))
            }
            "alloc" => {
                let mut hoard: Vec<Vec<u8>> = Vec::new();
                loop {
                    hoard.push(vec![1u8; 1 << 20]);
                    std::hint::black_box(&hoard);
                }
            }
            "recurse" => Ok(json!(recurse(0, &mut [0u8; 256]))),
            "calls" => {
                let mut n: u64 = 0;
                for _ in 0..1_000_000u32 {
                    n = n.wrapping_add(now_ms() & 1);
                }
                Ok(json!({ "calls": 1_000_000, "n": n }))
            }
            "rows" => {
                let rows = input["rows"].as_u64().unwrap_or(20_000) as i64;
                let result = query("SELECT range AS i FROM range(?::BIGINT)", &[rows.into()]);
                match result {
                    Ok(r) => Ok(json!({ "rows": r.len() })),
                    Err(e) => Err(format!("{e:?}")),
                }
            }
            "slow-query" => match query("SELECT sum(hash(i)) AS s FROM range(1000000000000) t(i)", &[]) {
                Ok(_) => Ok(json!("finished")),
                Err(e) => Err(format!("{e:?}")),
            },
            "missing-table" => match query("SELECT * FROM no_such_table", &[]) {
                Ok(_) => Ok(json!("found")),
                Err(e) => Err(format!("{e:?}")),
            },
            "write" => match query("CREATE TABLE stolen AS SELECT * FROM otel_spans_local", &[]) {
                Ok(_) => Ok(json!("wrote")),
                Err(e) => Err(format!("{e:?}")),
            },
            "file" => match std::fs::read_to_string("/etc/passwd") {
                Ok(text) => Ok(json!({ "read": text.len() })),
                Err(e) => Err(format!("file: {e}")),
            },
            "env" => Ok(json!({ "vars": std::env::vars().count() })),
            "print" => {
                println!("hello from the sandbox");
                eprintln!("and to stderr");
                Ok(json!("printed"))
            }
            "busy" => {
                let ms = input["ms"].as_u64().or_else(|| config("ms").and_then(|m| m.parse().ok())).unwrap_or(100);
                let start = now_ms();
                let mut spins: u64 = 0;
                while now_ms() < start + ms {
                    for _ in 0..10_000 {
                        spins = std::hint::black_box(spins + 1);
                    }
                }
                Ok(json!({ "spins": spins }))
            }
            "panic" => panic!("hostile plugin panicked on purpose"),
            // Not hostile: for benchmarks of instantiation and host calls.
            "noop" => Ok(json!(null)),
            "percentile-loop" => {
                let n = input["n"].as_u64().unwrap_or(1000);
                let service = input["service"].as_str().unwrap_or("svc-0");
                let mut last = None;
                for _ in 0..n {
                    last = percentile(service, "duration", 0.99, 600_000).map_err(|e| format!("{e:?}"))?;
                }
                Ok(json!({ "calls": n, "last": last }))
            }
            "big-output" => Ok(json!("x".repeat(input["bytes"].as_u64().unwrap_or(10 << 20) as usize))),
            other => Err(format!("unknown attack {other:?}")),
        }
    }
}

duckgate_guest::export_plugin!(Hostile);
