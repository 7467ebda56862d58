//! `truffles-bot`: one tenant's runtime and the jobs its CronJobs run.

use anyhow::{Context, Result, bail};
use clap::Parser;
use truffles_bot::cli::{Cli, Command, KnowledgeSyncArgs};
use truffles_bot::config::Config;
use truffles_bot::runtime::Runtime;
use truffles_bot::serve;
use truffles_crds::contract::ADMIN_PORT;

/// `RUST_LOG` (info by default) without two warnings Qdrant Edge logs at every
/// start: its process-wide feature flags and mmap check are set only by
/// Qdrant's own `main`, not reachable through qdrant-edge's API, and their
/// defaults are what an Edge shard uses anyway.
fn log_filter() -> tracing_subscriber::EnvFilter {
    let filter =
        tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into());
    [
        "qdrant_edge::common::flags=error",
        "qdrant_edge::common::mmap=error",
    ]
    .into_iter()
    .filter_map(|d| d.parse().ok())
    .fold(filter, |f, d| f.add_directive(d))
}

#[tokio::main]
async fn main() -> Result<()> {
    // Two rustls providers in one tree make rustls panic unless one is chosen.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .json()
        .with_current_span(true)
        .with_env_filter(log_filter())
        .init();
    match Cli::parse().command {
        Command::Serve(args) => {
            let config = Config::load(*args)?;
            let mut running = serve::start(Runtime::from_config(config)?).await?;
            tokio::select! {
                result = running.wait() => result,
                signal = shutdown_signal() => signal,
            }
        }
        Command::Health(args) => truffles_bot::platform::health::run(*args).await,
        Command::Backup(args) => truffles_bot::backup::command::backup(*args).await,
        Command::Restore(args) => truffles_bot::backup::command::restore(*args).await,
        Command::Person(args) => truffles_bot::person::run(*args).await,
        Command::Report(args) => truffles_bot::platform::report::run(*args).await,
        Command::KnowledgeSync(KnowledgeSyncArgs {
            client_name,
            admin_token,
            runtime_url,
        }) => {
            let base =
                runtime_url.unwrap_or_else(|| format!("http://{client_name}-bot:{ADMIN_PORT}"));
            let url = format!(
                "{}/t/{client_name}/admin/knowledge/sync",
                base.trim_end_matches('/')
            );
            let response = reqwest::Client::new()
                .post(&url)
                .bearer_auth(admin_token)
                .timeout(std::time::Duration::from_secs(3600))
                .send()
                .await
                .with_context(|| format!("the runtime at {base} is unreachable"))?;
            let status = response.status();
            let body = response.text().await.unwrap_or_default();
            if !status.is_success() {
                bail!("knowledge sync failed: HTTP {status}: {body}");
            }
            println!("{body}");
            Ok(())
        }
    }
}

/// The kubelet stops a pod with SIGTERM; a terminal with SIGINT.
async fn shutdown_signal() -> Result<()> {
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    Ok(())
}
