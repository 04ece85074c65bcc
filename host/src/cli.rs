//! The command-line client: `duckgate plugin ...` and `duckgate alerts`
//! talk to a running gateway over its HTTP API, print readable tables by
//! default and JSON with `--json`, and say what to do when something fails.

use std::path::PathBuf;
use std::time::Duration;

use clap::{Args, Subcommand};
use serde_json::Value;

#[derive(Debug, Clone, Args)]
pub struct Client {
    /// The gateway to talk to.
    #[arg(long, env = "DUCKGATE_URL", default_value = "http://127.0.0.1:3214", global = true)]
    pub url: String,

    /// Admin token for upload and delete (the gateway's DUCKGATE_ADMIN_TOKEN).
    #[arg(long, env = "DUCKGATE_ADMIN_TOKEN", hide_env_values = true, global = true)]
    pub token: Option<String>,

    /// Print JSON instead of tables.
    #[arg(long, global = true)]
    pub json: bool,
}

#[derive(Debug, Subcommand)]
pub enum PluginCommand {
    /// Upload (or replace) a plugin.
    Push {
        name: String,
        file: PathBuf,
        /// Run on this interval (e.g. 30s); omit for on-demand only.
        #[arg(long)]
        interval: Option<String>,
        /// Memory limit (e.g. 64MiB).
        #[arg(long)]
        memory: Option<String>,
        /// Time limit per run (e.g. 5s).
        #[arg(long)]
        timeout: Option<String>,
        /// A setting for the plugin, key=value; repeat for more.
        #[arg(long = "config", value_name = "KEY=VALUE")]
        config: Vec<String>,
    },
    /// List installed plugins.
    Ls,
    /// Run a plugin now and print its output and receipt.
    Run {
        name: String,
        /// JSON input for the plugin.
        #[arg(long, default_value = "{}")]
        input: String,
    },
    /// Show a plugin's recent runs.
    Runs {
        name: String,
        #[arg(long, default_value_t = 10)]
        limit: usize,
    },
    /// Uninstall a plugin.
    Rm { name: String },
    /// Turn a core wasm module into a component (what the gateway does on upload).
    Componentize {
        input: PathBuf,
        #[arg(short, long)]
        output: PathBuf,
    },
}

#[derive(Debug, Args)]
pub struct AlertsArgs {
    /// Keep printing new alerts as they arrive.
    #[arg(long)]
    pub follow: bool,
    #[arg(long)]
    pub plugin: Option<String>,
    #[arg(long)]
    pub severity: Option<String>,
    #[arg(long, default_value_t = 50)]
    pub limit: usize,
}

type CliResult = Result<(), String>;

impl Client {
    fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().timeout(Duration::from_secs(120)).build().expect("HTTP client")
    }

    fn endpoint(&self, path: &str) -> String {
        format!("{}{path}", self.url.trim_end_matches('/'))
    }

    async fn send(&self, request: reqwest::RequestBuilder) -> Result<(u16, Value), String> {
        let request = match &self.token {
            Some(token) => request.bearer_auth(token),
            None => request,
        };
        let response = request.send().await.map_err(|e| {
            if e.is_connect() {
                format!("cannot reach duckgate at {}: is `duckgate serve` running? Pass --url to point elsewhere", self.url)
            } else {
                format!("request to {} failed: {e}", self.url)
            }
        })?;
        let status = response.status().as_u16();
        let text = response.text().await.map_err(|e| format!("reading the answer failed: {e}"))?;
        let body = serde_json::from_str(&text).unwrap_or(Value::String(text));
        if status == 401 {
            return Err("the gateway wants an admin token: set DUCKGATE_ADMIN_TOKEN or pass --token".into());
        }
        Ok((status, body))
    }

    fn fail(status: u16, body: &Value) -> String {
        let message = body["error"].as_str().map(str::to_string).unwrap_or_else(|| body.to_string());
        format!("the gateway answered {status}: {message}")
    }
}

pub async fn plugin(client: &Client, command: PluginCommand) -> CliResult {
    match command {
        PluginCommand::Push { name, file, interval, memory, timeout, config } => {
            let bytes = std::fs::read(&file).map_err(|e| format!("cannot read {}: {e}", file.display()))?;
            let mut query: Vec<(String, String)> = Vec::new();
            for (key, value) in [("interval", interval), ("memory", memory), ("timeout", timeout)] {
                if let Some(v) = value {
                    query.push((key.into(), v));
                }
            }
            for pair in config {
                let (k, v) = pair.split_once('=').ok_or_else(|| format!("--config {pair:?} must be KEY=VALUE"))?;
                query.push((format!("config.{k}"), v.to_string()));
            }
            let request = client.http().put(client.endpoint(&format!("/plugins/{name}"))).query(&query).body(bytes);
            let (status, body) = client.send(request).await?;
            if !(200..300).contains(&status) {
                return Err(Client::fail(status, &body));
            }
            if client.json {
                println!("{body}");
            } else {
                let verb = if status == 201 { "installed" } else { "updated" };
                println!("{verb} {name} version {}", short(&body["version"]));
                if let Some(ms) = body["interval_ms"].as_u64() {
                    println!("runs every {}", humantime::format_duration(Duration::from_millis(ms)));
                }
            }
            Ok(())
        }
        PluginCommand::Ls => {
            let (status, body) = client.send(client.http().get(client.endpoint("/plugins"))).await?;
            if status != 200 {
                return Err(Client::fail(status, &body));
            }
            if client.json {
                println!("{body}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = body["plugins"]
                .as_array()
                .map(|list| {
                    list.iter()
                        .map(|p| {
                            vec![
                                text(&p["name"]),
                                short(&p["version"]),
                                p["interval_ms"].as_u64().map(|ms| humantime::format_duration(Duration::from_millis(ms)).to_string()).unwrap_or_else(|| "on demand".into()),
                                text(&p["counters"]["runs"]),
                                text(&p["counters"]["failures"]),
                                p["last_run"]["outcome"]["status"].as_str().unwrap_or("-").to_string(),
                            ]
                        })
                        .collect()
                })
                .unwrap_or_default();
            if rows.is_empty() {
                println!("no plugins installed; add one with `duckgate plugin push <name> <file.wasm>`");
            } else {
                print_table(&["NAME", "VERSION", "SCHEDULE", "RUNS", "FAILURES", "LAST"], &rows);
            }
            Ok(())
        }
        PluginCommand::Run { name, input } => {
            let input: Value = serde_json::from_str(&input).map_err(|e| format!("--input is not JSON: {e}"))?;
            let request = client.http().post(client.endpoint(&format!("/plugins/{name}/run"))).json(&input);
            let (status, body) = client.send(request).await?;
            if client.json {
                println!("{body}");
            } else if status == 200 || status == 422 {
                let r = &body["receipt"];
                if status == 200 {
                    println!("{}", serde_json::to_string_pretty(&body["output"]).unwrap_or_default());
                } else {
                    println!("run failed: {}", text(&body["error"]));
                }
                println!(
                    "-- {} in {:.1} ms ({:.1} ms in {} host calls, {} queries, {} rows, {} alerts, peak memory {})",
                    text(&r["outcome"]["status"]),
                    r["wall_ms"].as_f64().unwrap_or(0.0),
                    r["host_ms"].as_f64().unwrap_or(0.0),
                    text(&r["host_calls"]),
                    text(&r["queries"]),
                    text(&r["rows_read"]),
                    text(&r["alerts"]),
                    bytesize::ByteSize(r["peak_memory_bytes"].as_u64().unwrap_or(0)),
                );
                for line in r["log"].as_array().into_iter().flatten() {
                    println!("   [{}] {}", text(&line["level"]), text(&line["message"]));
                }
            }
            match status {
                200 => Ok(()),
                422 => Err(format!("plugin {name} did not succeed")),
                _ => Err(Client::fail(status, &body)),
            }
        }
        PluginCommand::Runs { name, limit } => {
            let request = client.http().get(client.endpoint(&format!("/plugins/{name}/runs"))).query(&[("limit", limit)]);
            let (status, body) = client.send(request).await?;
            if status != 200 {
                return Err(Client::fail(status, &body));
            }
            if client.json {
                println!("{body}");
                return Ok(());
            }
            let rows: Vec<Vec<String>> = body["runs"]
                .as_array()
                .into_iter()
                .flatten()
                .map(|r| {
                    vec![
                        time(r["started_at_ms"].as_i64()),
                        text(&r["trigger"]),
                        text(&r["outcome"]["status"]),
                        format!("{:.1}", r["wall_ms"].as_f64().unwrap_or(0.0)),
                        text(&r["host_calls"]),
                        text(&r["alerts"]),
                    ]
                })
                .collect();
            print_table(&["STARTED", "TRIGGER", "OUTCOME", "MS", "HOST CALLS", "ALERTS"], &rows);
            Ok(())
        }
        PluginCommand::Rm { name } => {
            let (status, body) = client.send(client.http().delete(client.endpoint(&format!("/plugins/{name}")))).await?;
            if status != 200 {
                return Err(Client::fail(status, &body));
            }
            if client.json {
                println!("{body}");
            } else {
                println!("removed {name}");
            }
            Ok(())
        }
        PluginCommand::Componentize { input, output } => {
            let bytes = std::fs::read(&input).map_err(|e| format!("cannot read {}: {e}", input.display()))?;
            let component = crate::plugins::componentize::componentize(&bytes).map_err(|e| format!("{}: {e}", input.display()))?;
            std::fs::write(&output, component).map_err(|e| format!("cannot write {}: {e}", output.display()))
        }
    }
}

pub async fn alerts(client: &Client, args: AlertsArgs) -> CliResult {
    let mut since: Option<String> = None;
    let mut seen = std::collections::HashSet::new();
    loop {
        let mut query: Vec<(&str, String)> = vec![("limit", args.limit.to_string())];
        if let Some(p) = &args.plugin {
            query.push(("plugin", p.clone()));
        }
        if let Some(s) = &args.severity {
            query.push(("severity", s.clone()));
        }
        if let Some(s) = &since {
            query.push(("since", s.clone()));
        }
        let (status, body) = client.send(client.http().get(client.endpoint("/alerts")).query(&query)).await?;
        if status != 200 {
            return Err(Client::fail(status, &body));
        }
        let mut alerts: Vec<Value> = body["alerts"].as_array().cloned().unwrap_or_default();
        alerts.reverse();
        let fresh: Vec<Value> = alerts
            .into_iter()
            .filter(|a| seen.insert((a["id"].as_i64(), a["count"].as_i64())))
            .collect();
        if client.json {
            for a in &fresh {
                println!("{a}");
            }
        } else if !fresh.is_empty() || since.is_none() {
            let rows: Vec<Vec<String>> = fresh
                .iter()
                .map(|a| {
                    vec![
                        text(&a["id"]),
                        text(&a["last_seen"]),
                        text(&a["severity"]),
                        text(&a["plugin"]),
                        text(&a["name"]),
                        text(&a["count"]),
                        text(&a["message"]),
                    ]
                })
                .collect();
            if rows.is_empty() {
                println!("no alerts");
            } else {
                print_table(&["ID", "LAST SEEN", "SEVERITY", "PLUGIN", "NAME", "COUNT", "MESSAGE"], &rows);
            }
        }
        if !args.follow {
            return Ok(());
        }
        since = Some((chrono::Utc::now().timestamp_millis() - 60_000).to_string());
        tokio::time::sleep(Duration::from_secs(2)).await;
    }
}

fn text(v: &Value) -> String {
    match v {
        Value::String(s) => s.clone(),
        Value::Null => "-".into(),
        other => other.to_string(),
    }
}

fn short(v: &Value) -> String {
    v.as_str().map(|s| s.chars().take(12).collect()).unwrap_or_else(|| "-".into())
}

fn time(ms: Option<i64>) -> String {
    ms.and_then(chrono::DateTime::from_timestamp_millis)
        .map(|t| t.format("%Y-%m-%d %H:%M:%S").to_string())
        .unwrap_or_else(|| "-".into())
}

/// Left-aligned columns, two spaces apart.
pub fn print_table(headers: &[&str], rows: &[Vec<String>]) {
    let mut widths: Vec<usize> = headers.iter().map(|h| h.len()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            widths[i] = widths[i].max(cell.chars().count());
        }
    }
    let line = |cells: Vec<&str>| {
        let mut out = String::new();
        for (i, cell) in cells.iter().enumerate() {
            if i + 1 == cells.len() {
                out.push_str(cell);
            } else {
                out.push_str(&format!("{cell:<w$}  ", w = widths[i]));
            }
        }
        println!("{}", out.trim_end());
    };
    line(headers.to_vec());
    for row in rows {
        line(row.iter().map(String::as_str).collect());
    }
}
