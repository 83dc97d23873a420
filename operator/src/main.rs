//! `contact-operator`: parses flags, starts logging, and hands over to the library.

use clap::Parser;
use contact_operator::args::{Cli, Command, LogFormat};
use contact_operator::http::Health;
use contact_operator::metrics::Metrics;
use std::sync::Arc;
use tokio::signal::unix::{SignalKind, signal};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let Cli { command } = Cli::parse();
    let Command::Run(args) = command;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    match args.log_format {
        LogFormat::Json => tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .init(),
        LogFormat::Text => tracing_subscriber::fmt().with_env_filter(filter).init(),
    }
    let settings = args.settings()?;
    let client = kube::Client::try_default().await?;
    // As PID 1 in a container nothing stops the process on SIGTERM unless it handles it: the
    // kubelet would kill it after the grace period and the Lease would stay held until it expired.
    // Registered before anything else runs, so an early SIGTERM is not lost.
    let mut terminate = signal(SignalKind::terminate())?;
    let shutdown = async move {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = terminate.recv() => {}
        }
    };
    contact_operator::run::run(
        client,
        settings,
        Arc::new(Metrics::default()),
        Arc::new(Health::default()),
        shutdown,
    )
    .await?;
    Ok(())
}
