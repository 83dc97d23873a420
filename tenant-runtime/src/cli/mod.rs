//! The command line: `serve` (default), `openapi`, `simulator`, `demo` ([`demo`]), `backup`,
//! `restore`. The top floor: it may use everything, nothing uses it.

mod demo;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};

use crate::app::{Application, shutdown_signal};
use crate::channels::simulator::{SimSettings, Simulator};
use crate::config::Settings;

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
    Backup {
        /// What to back up and how long to keep it.
        #[command(flatten)]
        args: crate::backup::BackupArgs,
        /// Also write the result line (or, on failure, the error) to this file: the container's
        /// termination-message path, where the operator reads it into `status.lastBackup`.
        #[arg(long, value_name = "PATH")]
        termination_log: Option<PathBuf>,
    },
    /// Restore a backup into an empty database (key in CONTACT_BACKUP_KEY).
    Restore(crate::backup::RestoreArgs),
}

/// Parses arguments, sets up logging, runs the command.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    // One TLS provider for the whole process (ring, as kube uses in the operator); installing
    // it explicitly keeps reqwest from having to guess. An error means one is installed already.
    crate::install_tls_provider();
    let logs = tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("CONTACT_LOG")
                .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr);
    let format = std::env::var("CONTACT_LOG_FORMAT").ok();
    if json_logs(
        format.as_deref(),
        std::io::IsTerminal::is_terminal(&std::io::stderr()),
    ) {
        logs.json().init();
    } else {
        logs.init();
    }
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

/// Whether log lines are JSON: as `CONTACT_LOG_FORMAT` (`json` or `text`) says, else JSON unless
/// stderr is a terminal, so a container's log (collected from a pipe) holds one JSON object a
/// line rather than text with colour codes.
fn json_logs(format: Option<&str>, stderr_is_terminal: bool) -> bool {
    match format {
        Some("json") => true,
        Some("text") => false,
        _ => !stderr_is_terminal,
    }
}

/// Runs one command.
pub async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command.unwrap_or(Command::Serve) {
        Command::Openapi => {
            print!("{}", crate::http::openapi::openapi_json());
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
        Command::Backup {
            args,
            termination_log: None,
        } => crate::backup::run_backup(cli.config.as_deref(), args).await,
        Command::Backup {
            args,
            termination_log: Some(path),
        } => backup_with_termination_log(cli.config.as_deref(), args, &path).await,
        Command::Restore(args) => crate::backup::run_restore(cli.config.as_deref(), args).await,
    }
}

/// `backup` that also leaves its outcome in `path` for the kubelet to pick up as the
/// container's termination message: the result line on success, the error chain on failure
/// (so a failed backup's reason reaches the tenant's status without reading logs).
async fn backup_with_termination_log(
    config: Option<&std::path::Path>,
    args: crate::backup::BackupArgs,
    path: &std::path::Path,
) -> anyhow::Result<()> {
    let outcome = async {
        let key = crate::backup::key_from_env()?;
        let settings = Settings::load(config)?;
        let store = crate::storage::Store::connect(
            &settings.database_url,
            &crate::storage::ConnectOptions::default(),
        )
        .await?;
        let result = crate::backup::backup(
            &store,
            &args.dir,
            &key,
            crate::storage::now_ms(),
            args.retain_days,
        )
        .await;
        store.close().await;
        anyhow::Ok(serde_json::to_string(&result?)?)
    }
    .await;
    let message = match &outcome {
        Ok(line) => line.clone(),
        Err(e) => format!("{e:#}"),
    };
    // The kubelet reads at most 4 KiB of the message.
    let message: String = message.chars().take(4000).collect();
    if let Err(e) = std::fs::write(path, &message) {
        tracing::warn!(path = %path.display(), error = %e, "failed to write the termination log");
    }
    let line = outcome?;
    println!("{line}");
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn logs_are_json_off_a_terminal_unless_told_otherwise() {
        assert!(json_logs(None, false));
        assert!(!json_logs(None, true));
        assert!(json_logs(Some("json"), true));
        assert!(!json_logs(Some("text"), false));
        assert!(!json_logs(Some("bogus"), true));
    }

    #[test]
    fn the_termination_log_flag_parses() {
        let cli = Cli::try_parse_from([
            "contact-runtime",
            "backup",
            "--dir",
            "/backups",
            "--termination-log",
            "/dev/termination-log",
        ])
        .expect("parses");
        assert!(matches!(
            cli.command,
            Some(Command::Backup { termination_log: Some(p), .. }) if p == std::path::Path::new("/dev/termination-log")
        ));
    }

    #[tokio::test]
    async fn a_failed_backup_leaves_its_error_in_the_termination_log() {
        // Without CONTACT_BACKUP_KEY (tests never set it) the backup fails before any I/O.
        let dir = tempfile::tempdir().expect("tempdir");
        let log = dir.path().join("termination-log");
        let args = crate::backup::BackupArgs {
            dir: dir.path().join("backups"),
            retain_days: 14,
        };
        let err = backup_with_termination_log(None, args, &log)
            .await
            .expect_err("no key, no backup");
        let written = std::fs::read_to_string(&log).expect("the log was written");
        assert_eq!(written, format!("{err:#}"));
        assert!(written.contains("not set"), "{written}");
    }
}
