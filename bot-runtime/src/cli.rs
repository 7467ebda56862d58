//! The `truffles-bot` command line: `serve` (one tenant's runtime) and the
//! jobs its CronJobs and the platform run. In the library so the contract
//! test can read every variable each subcommand takes.

use clap::{Parser, Subcommand};
use truffles_crds::contract::env;

use crate::config::ServeArgs;

#[derive(Parser)]
#[command(
    name = "truffles-bot",
    version,
    about = "Truffles per-tenant bot runtime"
)]
pub struct Cli {
    #[command(subcommand)]
    pub command: Command,
}

#[derive(Subcommand)]
pub enum Command {
    /// The webhook server, message pipeline, outbox and knowledge base of one tenant.
    Serve(Box<ServeArgs>),
    /// The knowledge-sync CronJob: asks the tenant's runtime (which holds the
    /// Qdrant Edge shard) to sync now and prints the report.
    KnowledgeSync(KnowledgeSyncArgs),
    /// The platform's health check: PostgreSQL, Redis, Qdrant, the LLM and
    /// ChatFlow APIs, with Telegram alerts to the admin and /metrics.
    Health(Box<crate::platform::health::HealthArgs>),
    /// The backup CronJob: the tenant's conversations and messages of the period
    /// (the whole schema on the full-backup day), encrypted, to the backup
    /// storage; recorded in platform.backups; expired backups pruned.
    Backup(Box<crate::backup::command::BackupArgs>),
    /// Loads one backup into temporary tables and writes it as JSON and CSV for
    /// the client; the live tables are not touched.
    Restore(Box<crate::backup::command::RestoreArgs>),
    /// One end user's rights: `export` everything about them as JSON, or
    /// `erase` them from the database and Redis (audited).
    Person(Box<crate::person::PersonArgs>),
    /// The platform's daily e-mail report: per client the day's figures,
    /// new error kinds and backup state.
    Report(Box<crate::platform::report::ReportArgs>),
}

#[derive(clap::Args, Debug)]
pub struct KnowledgeSyncArgs {
    #[arg(long, env = env::CLIENT_NAME)]
    pub client_name: String,
    #[arg(long, env = env::ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: String,
    /// The runtime's admin port (default `http://<client>-bot:8081`).
    #[arg(long, env = "TRUFFLES_RUNTIME_URL")]
    pub runtime_url: Option<String>,
}
