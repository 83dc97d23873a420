//! `contact-operator`: parses flags, starts logging, and hands over to the library.

use clap::Parser;
use contact_operator::args::{Cli, Command, LogFormat};
use contact_operator::http::Health;
use contact_operator::metrics::Metrics;
use std::sync::Arc;
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
    let shutdown = async {
        let _ = tokio::signal::ctrl_c().await;
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
