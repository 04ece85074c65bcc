//! The `duckgate` command line: `serve` runs the gateway; `plugin` and
//! `alerts` talk to a running one.

use clap::{Parser, Subcommand};
use tracing_subscriber::EnvFilter;

use duckgate::cli::{self, AlertsArgs, Client, PluginCommand};
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
    /// Start the gateway on its defaults and show every capability working.
    Demo {
        #[command(flatten)]
        config: Config,
        /// Where the example plugins were built (scripts/build-plugins).
        #[arg(long, default_value = "dist/plugins")]
        plugins_dir: std::path::PathBuf,
    },
    /// Manage plugins on a running gateway.
    Plugin {
        #[command(flatten)]
        client: Client,
        #[command(subcommand)]
        command: PluginCommand,
    },
    /// List alerts raised by plugins (`--follow` to keep watching).
    Alerts {
        #[command(flatten)]
        client: Client,
        #[command(flatten)]
        args: AlertsArgs,
    },
}

fn init_logging(format: &str) {
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info,tower_http=warn"));
    // Logs go to stderr, colored only on a terminal, so stdout stays for output.
    let builder = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_target(false)
        .with_writer(std::io::stderr)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()));
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
        Command::Demo { config, plugins_dir } => {
            init_logging(&config.log_format);
            run_demo(config, plugins_dir)
        }
        Command::Plugin { client, command } => run_client(cli::plugin(&client, command)),
        Command::Alerts { client, args } => run_client(cli::alerts(&client, args)),
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

fn run_client(work: impl std::future::Future<Output = Result<(), String>>) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_current_thread().enable_all().build()?;
    runtime.block_on(work).map_err(anyhow::Error::msg)
}

fn run_demo(config: Config, plugins_dir: std::path::PathBuf) -> anyhow::Result<()> {
    let runtime = tokio::runtime::Builder::new_multi_thread().enable_all().build()?;
    let result = runtime.block_on(duckgate::demo::run(config, plugins_dir));
    runtime.shutdown_timeout(std::time::Duration::from_secs(10));
    result
}
