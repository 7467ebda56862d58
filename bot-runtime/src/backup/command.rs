//! `truffles-bot backup` and `truffles-bot restore`: configuration and the
//! summary lines a CronJob's log and exit code carry.

use std::path::PathBuf;
use truffles_crds::contract::env;

use anyhow::{Context, Result};
use chrono::{Utc, Weekday};
use sqlx::postgres::PgPoolOptions;

use super::{DataKey, Job, Kind, Storage};

#[derive(clap::Args, Debug)]
pub struct StorageArgs {
    #[arg(long, env = env::CLIENT_NAME)]
    pub client_name: String,
    /// The tenant's role (its runtime Secret's DATABASE_URL).
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    /// The tenant's data key, 64 hex characters (its runtime Secret).
    #[arg(long, env = env::BACKUP_KEY, hide_env_values = true)]
    pub backup_key: String,
    /// `file:///var/lib/truffles/backups` or `s3://bucket/prefix` (S3 settings
    /// from the standard AWS_* variables).
    #[arg(
        long,
        env = env::BACKUP_URL,
        default_value = "file:///var/lib/truffles/backups"
    )]
    pub storage_url: String,
}

#[derive(clap::Args, Debug)]
pub struct BackupArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    #[arg(long, env = env::BACKUP_RETENTION_DAYS, default_value_t = 30)]
    pub retention_days: u32,
    /// daily, weekly (the whole schema) or manual; by default weekly on the
    /// full-backup day and daily otherwise.
    #[arg(long, value_enum)]
    pub kind: Option<Kind>,
    #[arg(long, env = "TRUFFLES_FULL_BACKUP_DAY", default_value = "Sun")]
    pub full_backup_day: Weekday,
}

#[derive(clap::Args, Debug)]
pub struct RestoreArgs {
    #[command(flatten)]
    pub storage: StorageArgs,
    /// The backup's storage key, as the backup job printed it and
    /// platform.backups records it (`<tenant>/<kind>/<time>-<id>.tbk`).
    pub object_key: String,
    /// Where the client's export goes (`<table>.json` and `<table>.csv`).
    #[arg(long, default_value = "restore")]
    pub out: PathBuf,
}

impl StorageArgs {
    async fn open(&self) -> Result<(sqlx::PgPool, DataKey, Storage)> {
        let key = DataKey::from_hex(&self.backup_key).context("TRUFFLES_BACKUP_KEY")?;
        let storage = Storage::from_url(&self.storage_url, std::env::vars())?;
        let pool = PgPoolOptions::new()
            .max_connections(2)
            .connect(&self.database_url)
            .await
            .context("connecting to the tenant's database")?;
        Ok((pool, key, storage))
    }
}

pub async fn backup(args: BackupArgs) -> Result<()> {
    let (pool, key, storage) = args.storage.open().await?;
    let now = Utc::now();
    let kind = args
        .kind
        .unwrap_or_else(|| super::kind_for(now, args.full_backup_day));
    let job = Job {
        pool,
        tenant: args.storage.client_name.clone(),
        key,
        storage,
        retention_days: args.retention_days,
    };
    let report = job
        .run(kind, now)
        .await
        .with_context(|| format!("backup of {}", args.storage.client_name))?;
    tracing::info!(tenant = %args.storage.client_name, id = report.id, rows = report.rows, bytes = report.size_bytes, "backup written");
    println!("{report}");
    Ok(())
}

pub async fn restore(args: RestoreArgs) -> Result<()> {
    let (pool, key, storage) = args.storage.open().await?;
    let mut conn = pool.acquire().await.context("connecting")?;
    let restored = super::restore(&mut conn, &storage, &key, &args.object_key)
        .await
        .with_context(|| format!("restoring {}", args.object_key))?;
    let files = super::export_restored(&mut conn, &restored, &args.out).await?;
    for (table, rows) in &restored.tables {
        println!("{table}: {rows} rows");
    }
    if restored.erased > 0 {
        println!(
            "{} rows of persons erased since the backup left out",
            restored.erased
        );
    }
    println!(
        "{} ({}, {}) restored into temporary tables; {} files written to {}",
        args.object_key,
        restored.header.kind.as_str(),
        restored.header.period_end,
        files.len(),
        args.out.display()
    );
    Ok(())
}
