//! `truffles-bot`: one tenant's runtime and the jobs its CronJobs run.

use anyhow::{Context, Result, bail};
use clap::{Parser, Subcommand};
use truffles_bot::config::{Config, ServeArgs};
use truffles_bot::runtime::Runtime;
use truffles_bot::serve;

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
    /// The webhook server, message pipeline, outbox and knowledge base of one tenant.
    Serve(Box<ServeArgs>),
    /// The knowledge-sync CronJob: asks the tenant's runtime (which holds the
    /// Qdrant Edge shard) to sync now and prints the report.
    KnowledgeSync {
        #[arg(long, env = "TRUFFLES_CLIENT_NAME")]
        client_name: String,
        #[arg(long, env = "TRUFFLES_WEBHOOK_SECRET", hide_env_values = true)]
        webhook_secret: String,
        /// The runtime's Service (default `http://<client>-bot:8080`).
        #[arg(long, env = "TRUFFLES_RUNTIME_URL")]
        runtime_url: Option<String>,
    },
    /// The platform's health check: PostgreSQL, Redis, Qdrant, the LLM and
    /// ChatFlow APIs, with Telegram alerts to the admin and /metrics.
    Health(Box<truffles_bot::platform::health::HealthArgs>),
    /// The backup CronJob: the tenant's conversations and messages of the period
    /// (the whole schema on the full-backup day), encrypted, to the backup
    /// storage; recorded in platform.backups; expired backups pruned.
    Backup(Box<truffles_bot::backup::command::BackupArgs>),
    /// Loads one backup into temporary tables and writes it as JSON and CSV for
    /// the client; the live tables are not touched.
    Restore(Box<truffles_bot::backup::command::RestoreArgs>),
    /// One end user's rights: `export` everything about them as JSON, or
    /// `erase` them from the database and Redis (audited).
    Person(Box<truffles_bot::person::PersonArgs>),
    /// The platform's daily e-mail report: per client the day's figures,
    /// new error kinds and backup state.
    Report(Box<truffles_bot::platform::report::ReportArgs>),
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
        Command::KnowledgeSync {
            client_name,
            webhook_secret,
            runtime_url,
        } => {
            let base = runtime_url.unwrap_or_else(|| format!("http://{client_name}-bot:8080"));
            let url = format!(
                "{}/t/{client_name}/admin/knowledge/sync",
                base.trim_end_matches('/')
            );
            let response = reqwest::Client::new()
                .post(&url)
                .bearer_auth(webhook_secret)
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
