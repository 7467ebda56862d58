//! `truffles-bot`: one tenant's runtime and the jobs its CronJobs run.

use std::sync::Arc;

use anyhow::Result;
use clap::{Parser, Subcommand};
use truffles_bot::config::{Config, ServeArgs};
use truffles_bot::knowledge::NoKnowledge;
use truffles_bot::runtime::{self, Runtime};

#[derive(Parser)]
#[command(
    name = "truffles-bot",
    version,
    about = "Truffles per-tenant bot runtime"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The webhook server, message pipeline and outbox of one tenant.
    Serve(ServeArgs),
}

#[tokio::main]
async fn main() -> Result<()> {
    // Two rustls providers in one tree make rustls panic unless one is chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = Config::load(args)?;
            let mut running = runtime::start(Runtime::new(config, Arc::new(NoKnowledge))?).await?;
            tokio::select! {
                result = running.wait() => result,
                _ = tokio::signal::ctrl_c() => Ok(()),
            }
        }
    }
}
