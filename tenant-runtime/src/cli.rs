//! The command line: `serve` (default), `openapi`, `simulator`, `demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{Application, shutdown_signal};
use crate::channels::simulator::{SimSettings, Simulator};
use crate::config::Settings;
use crate::demo;

/// Contact tenant runtime.
#[derive(Debug, Parser)]
#[command(name = "contact-runtime", version, about)]
pub struct Cli {
    /// YAML settings file (also `CONTACT_CONFIG`); `CONTACT_*` variables override it.
    #[arg(long, global = true)]
    pub config: Option<PathBuf>,
    /// What to run (default: serve).
    #[command(subcommand)]
    pub command: Option<Command>,
}

/// Subcommands.
#[derive(Debug, Subcommand)]
pub enum Command {
    /// Serve the API, webhooks and outbox sender.
    Serve,
    /// Print the OpenAPI document (`contact-runtime openapi > tenant-runtime/openapi.json`).
    Openapi,
    /// Run the Conversation API simulator for the channel apps of the settings.
    Simulator {
        /// Address to listen on.
        #[arg(long, default_value = "127.0.0.1:9090")]
        listen: SocketAddr,
        /// Runtime base URL that receives the signed callbacks.
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        runtime_url: String,
        /// Do not send delivery reports for accepted messages.
        #[arg(long)]
        no_delivery_reports: bool,
    },
    /// Run the runtime on SQLite plus the simulator, seeded with demo users, skills, categories.
    Demo(demo::DemoArgs),
    /// Take an encrypted snapshot of the database (key in CONTACT_BACKUP_KEY) and prune old ones.
    Backup(crate::backup::BackupArgs),
    /// Restore a backup into an empty database (key in CONTACT_BACKUP_KEY).
    Restore(crate::backup::RestoreArgs),
}

/// Parses arguments, sets up logging, runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for the whole process (ring, as kube uses in the operator); installing
    // it explicitly keeps reqwest from having to guess. An error means one is installed already.
    crate::install_tls_provider();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONTACT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: failed to start the async runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("error: {e}");
            let mut source = e.source();
            while let Some(s) = source {
                eprintln!("  caused by: {s}");
                source = s.source();
            }
            ExitCode::FAILURE
        }
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", crate::http::api::openapi_json());
            Ok(())
        }
        Command::Serve => {
            let settings = Settings::load(cli.config.as_deref())?;
            let app = Application::build(settings).await?;
            app.run_until(shutdown_signal()).await?;
            Ok(())
        }
        Command::Simulator {
            listen,
            runtime_url,
            no_delivery_reports,
        } => {
            let settings = Settings::load(cli.config.as_deref())?;
            let mut sim = SimSettings::for_runtime(&settings, listen, &runtime_url);
            sim.delivery_reports = !no_delivery_reports;
            let sim = Simulator::bind(sim).await?;
            tracing::info!(addr = %sim.local_addr(), "simulator listening");
            sim.run_until(shutdown_signal()).await?;
            Ok(())
        }
        Command::Demo(args) => demo::run(args).await,
        Command::Backup(args) => crate::backup::run_backup(cli.config.as_deref(), args).await,
        Command::Restore(args) => crate::backup::run_restore(cli.config.as_deref(), args).await,
    }
}
