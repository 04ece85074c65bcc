//! The `duckgate` command line: `serve` runs the gateway.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use duckgate::config::Config;
use duckgate::server;

#[derive(Parser)]
#[command(name = "duckgate", version, about = "A WebAssembly-extensible query gateway over DuckDB")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the gateway (defaults: port 3214, ./data, a local object store).
    Serve(Config),
}

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_target(false);
    if format == "json" {
        builder.json().init();
    } else {
        builder.init();
    }
}

fn main() -> std::process::ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Command::Serve(config) => {
            init_logging(&config.log_format);
            run_serve(config)
        }
    };
    match result {
        Ok(()) => std::process::ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("duckgate: {e:#}");
            std::process::ExitCode::FAILURE
        }
    }
}

fn run_serve(config: Config) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(async {
        let app = server::App::new(config)?;
        server::serve(app).await
    });
    // Interrupted DuckDB work stops within moments; don't hang on anything else.
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    result
}
