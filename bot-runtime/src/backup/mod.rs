//! Backups of one tenant (`truffles-bot backup`, the daily CronJob) and their
//! restore (`truffles-bot restore`).
//!
//! The job runs as the tenant's own database role: it reads the tenant schema,
//! writes an encrypted file ([`archive`]) to the storage ([`storage`]), and records
//! it in `platform.backups`, whose row-level security shows a tenant role its
//! own rows only. The data key is the tenant's (`TRUFFLES_BACKUP_KEY`, in its
//! runtime Secret); the operator keeps it wrapped by the platform master key in
//! `platform.tenant_keys`, and a purge deletes both, which leaves the tenant's
//! old backups unreadable (crypto-shredding).
//!
//! A restore authenticates and reads the whole file first, then loads it into
//! temporary tables (`restored_<table>`) in one session and writes each as JSON
//! and CSV for the client: the live tables are never touched. Rows of persons
//! erased since the backup (`erased_rows`) are left out.

pub mod archive;
pub mod command;
pub mod storage;

use std::path::{Path, PathBuf};

use chrono::{DateTime, Datelike, Duration, Utc, Weekday};
use sqlx::{AssertSqlSafe, PgConnection, PgPool};

pub use archive::{ArchiveError, DataKey, Kind};
pub use storage::{Storage, StorageError};

#[derive(Debug, thiserror::Error)]
pub enum BackupError {
    #[error("{action}: {source}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
    #[error(transparent)]
    Archive(#[from] ArchiveError),
    #[error(transparent)]
    Storage(#[from] StorageError),
    #[error("writing the client export {path}: {source}")]
    Export {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the backup holds table {0:?}, which this tenant schema does not have")]
    UnknownTable(String),
}

fn failed(action: &'static str) -> impl FnOnce(sqlx::Error) -> BackupError {
    move |source| BackupError::Database { action, source }
}

/// The daily job makes a full backup on this weekday, a daily one otherwise.
pub fn kind_for(now: DateTime<Utc>, full_backup_day: Weekday) -> Kind {
    if now.weekday() == full_backup_day {
        Kind::Weekly
    } else {
        Kind::Daily
    }
}

/// Storage key of a new backup: tenant, kind, time, and a random tail so two
/// manual backups in one second do not overwrite each other.
pub fn object_key(tenant: &str, kind: Kind, now: DateTime<Utc>) -> String {
    let tail = uuid::Uuid::new_v4().simple().to_string();
    format!(
        "{tenant}/{}/{}-{}.tbk",
        kind.as_str(),
        now.format("%Y%m%dT%H%M%SZ"),
        &tail[..8]
    )
}

/// One tenant's backup job.
pub struct Job {
    /// The tenant schema, as the tenant's role (its search_path is the schema).
    pub pool: PgPool,
    pub tenant: String,
    pub key: DataKey,
    pub storage: Storage,
    pub retention_days: u32,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    pub id: i64,
    pub object_key: String,
    pub kind: Kind,
    pub rows: u64,
    pub size_bytes: u64,
    pub expires_at: DateTime<Utc>,
    pub pruned: u64,
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "backup {} ({}): {} rows, {} bytes, kept until {}; {} expired backup(s) pruned",
            self.object_key,
            self.kind.as_str(),
            self.rows,
            self.size_bytes,
            self.expires_at.format("%Y-%m-%d"),
            self.pruned
        )
    }
}

/// Rows of the period for a daily backup: the messages written in it, and the
/// conversations, their customers and handovers those messages belong to.
const DAILY: [(&str, &str); 4] = [
    (
        "users",
        "SELECT to_jsonb(u)::text FROM users u WHERE u.id IN (
           SELECT c.user_id FROM conversations c WHERE c.id IN (
             SELECT conversation_id FROM messages WHERE created_at >= $1 AND created_at < $2)
           OR (c.started_at >= $1 AND c.started_at < $2))",
    ),
    (
        "conversations",
        "SELECT to_jsonb(c)::text FROM conversations c WHERE c.id IN (
           SELECT conversation_id FROM messages WHERE created_at >= $1 AND created_at < $2)
         OR (c.started_at >= $1 AND c.started_at < $2)",
    ),
    (
        "handovers",
        "SELECT to_jsonb(h)::text FROM handovers h WHERE h.conversation_id IN (
           SELECT conversation_id FROM messages WHERE created_at >= $1 AND created_at < $2)",
    ),
    (
        "messages",
        "SELECT to_jsonb(m)::text FROM messages m
         WHERE m.created_at >= $1 AND m.created_at < $2 ORDER BY m.created_at, m.id",
    ),
];

/// Tables of the tenant schema a full backup holds (all but sqlx's bookkeeping).
async fn schema_tables(pool: &PgPool) -> Result<Vec<String>, BackupError> {
    sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE'
           AND table_name <> '_sqlx_migrations' ORDER BY table_name",
    )
    .fetch_all(pool)
    .await
    .map_err(failed("listing the tenant's tables"))
}

/// Table names come from our own catalog; still, only plain identifiers pass.
fn quoted(table: &str) -> Result<String, BackupError> {
    if !table.is_empty()
        && table
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        Ok(format!("\"{table}\""))
    } else {
        Err(BackupError::UnknownTable(table.to_owned()))
    }
}

impl Job {
    /// Makes one backup of `kind` at `now`, records it, and prunes expired ones.
    pub async fn run(&self, kind: Kind, now: DateTime<Utc>) -> Result<Report, BackupError> {
        use futures::TryStreamExt;

        let mut writer = archive::Writer::new();
        // A daily backup starts where the previous one ended, so a missed night
        // leaves no gap; the first covers the last day.
        let previous_end: Option<DateTime<Utc>> = sqlx::query_scalar(
            "SELECT max(period_end) FROM platform.backups
             WHERE client_id = platform.session_client_id() AND deleted_at IS NULL",
        )
        .fetch_one(&self.pool)
        .await
        .map_err(failed("reading the previous backup"))?;
        let period_start = match kind {
            Kind::Daily => Some(
                previous_end
                    .filter(|end| *end < now)
                    .unwrap_or(now - Duration::days(1)),
            ),
            Kind::Weekly | Kind::Manual => None,
        };
        let queries: Vec<(String, String)> = match kind {
            Kind::Daily => DAILY
                .iter()
                .map(|(t, q)| ((*t).to_owned(), (*q).to_owned()))
                .collect(),
            Kind::Weekly | Kind::Manual => schema_tables(&self.pool)
                .await?
                .into_iter()
                .map(|t| {
                    Ok((
                        t.clone(),
                        format!("SELECT to_jsonb(t)::text FROM {} t", quoted(&t)?),
                    ))
                })
                .collect::<Result<_, BackupError>>()?,
        };
        for (table, sql) in &queries {
            writer.table(table);
            let mut query = sqlx::query_scalar::<_, String>(AssertSqlSafe(sql.as_str()));
            if let Some(start) = period_start {
                query = query.bind(start).bind(now);
            }
            let mut rows = query.fetch(&self.pool);
            while let Some(row) = rows.try_next().await.map_err(failed("reading rows"))? {
                writer.push(table, &row)?;
            }
        }
        let header = archive::Header {
            format: 1,
            tenant: self.tenant.clone(),
            kind,
            created_at: now.to_rfc3339(),
            period_start: period_start.map(|s| s.to_rfc3339()),
            period_end: now.to_rfc3339(),
            tables: Vec::new(),
            key_id: String::new(),
        };
        let file = writer.seal(header, &self.key)?;
        let (header, _) = archive::header(&file)?;
        let rows = header.tables.iter().map(|(_, n)| n).sum();
        let size_bytes = file.len() as u64;
        let sha256 = {
            use sha2::Digest;
            hex::encode(sha2::Sha256::digest(&file))
        };
        let key = object_key(&self.tenant, kind, now);
        self.storage.put(&key, file).await?;
        let expires_at = now + Duration::days(i64::from(self.retention_days));
        let id: i64 = sqlx::query_scalar(
            "INSERT INTO platform.backups
               (client_id, type, storage_path, size_bytes, sha256, period_start, period_end, created_at, expires_at)
             VALUES (platform.session_client_id(), $1, $2, $3, $4, $5, $6, $6, $7) RETURNING id",
        )
        .bind(kind.as_str())
        .bind(&key)
        .bind(i64::try_from(size_bytes).unwrap_or(i64::MAX))
        .bind(&sha256)
        .bind(period_start)
        .bind(now)
        .bind(expires_at)
        .fetch_one(&self.pool)
        .await
        .map_err(failed("recording the backup in platform.backups"))?;
        let pruned = self.prune(now).await?;
        Ok(Report {
            id,
            object_key: key,
            kind,
            rows,
            size_bytes,
            expires_at,
            pruned,
        })
    }

    /// Deletes the files of expired backups and marks them deleted. A file
    /// already gone is fine; a row is marked only after its file is gone.
    pub async fn prune(&self, now: DateTime<Utc>) -> Result<u64, BackupError> {
        let expired: Vec<(i64, String)> = sqlx::query_as(
            "SELECT id, storage_path FROM platform.backups
             WHERE client_id = platform.session_client_id()
               AND deleted_at IS NULL AND expires_at <= $1 ORDER BY id",
        )
        .bind(now)
        .fetch_all(&self.pool)
        .await
        .map_err(failed("listing expired backups"))?;
        for (id, key) in &expired {
            self.storage.delete(key).await?;
            sqlx::query("UPDATE platform.backups SET deleted_at = now() WHERE id = $1")
                .bind(id)
                .execute(&self.pool)
                .await
                .map_err(failed("marking a pruned backup"))?;
        }
        Ok(expired.len() as u64)
    }
}

/// What a restore loaded: (table, rows), each in `pg_temp.restored_<table>`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Restored {
    pub header: archive::Header,
    pub tables: Vec<(String, u64)>,
    /// Rows of the file left out because their person was erased since.
    pub erased: u64,
}

/// Rows per INSERT: one JSON array each, well under PostgreSQL's limits.
const RESTORE_BATCH: usize = 500;

/// Reads and authenticates the backup `object_key`, then loads it into
/// temporary tables of `conn`'s session (they vanish with the session). The file
/// is checked whole before the first row is written.
pub async fn restore(
    conn: &mut PgConnection,
    storage: &Storage,
    key: &DataKey,
    object_key: &str,
) -> Result<Restored, BackupError> {
    let file = storage.get(object_key).await?;
    let (header, lines) = archive::open(&file, key)?;
    let mut tables = Vec::new();
    let mut erased = 0;
    for (table, _) in &header.tables {
        let source = quoted(table)?;
        let temp = quoted(&format!("restored_{table}"))?;
        let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(table)
            .fetch_one(&mut *conn)
            .await
            .map_err(failed("checking the restored table"))?;
        if !exists {
            return Err(BackupError::UnknownTable(table.clone()));
        }
        sqlx::raw_sql(AssertSqlSafe(format!(
            "DROP TABLE IF EXISTS pg_temp.{temp}; CREATE TEMPORARY TABLE {temp} (LIKE {source})"
        )))
        .execute(&mut *conn)
        .await
        .map_err(failed("creating a temporary table"))?;
        let rows: Vec<&serde_json::Value> = lines
            .iter()
            .filter(|l| &l.table == table)
            .map(|l| &l.row)
            .collect();
        for batch in rows.chunks(RESTORE_BATCH) {
            sqlx::query(AssertSqlSafe(format!(
                "INSERT INTO pg_temp.{temp} SELECT * FROM jsonb_populate_recordset(NULL::pg_temp.{temp}, $1)"
            )))
            .bind(sqlx::types::Json(batch))
            .execute(&mut *conn)
            .await
            .map_err(failed("loading rows into a temporary table"))?;
        }
        let mut loaded = rows.len() as u64;
        if crate::person::PERSONAL_TABLES.contains(&table.as_str()) {
            let left_out = sqlx::query(AssertSqlSafe(format!(
                "DELETE FROM pg_temp.{temp} r USING erased_rows e
                 WHERE e.table_name = $1 AND e.row_id = r.id::text"
            )))
            .bind(table)
            .execute(&mut *conn)
            .await
            .map_err(failed("leaving erased persons out"))?
            .rows_affected();
            loaded -= left_out;
            erased += left_out;
        }
        tables.push((table.clone(), loaded));
    }
    Ok(Restored {
        header,
        tables,
        erased,
    })
}

/// Writes each restored table as `<table>.json` (an array of rows) and
/// `<table>.csv` (with a header line) into `out`, for the client.
pub async fn export_restored(
    conn: &mut PgConnection,
    restored: &Restored,
    out: &Path,
) -> Result<Vec<PathBuf>, BackupError> {
    use futures::TryStreamExt;

    let io = |path: &Path| {
        let path = path.to_owned();
        move |source| BackupError::Export { path, source }
    };
    tokio::fs::create_dir_all(out).await.map_err(io(out))?;
    let mut written = Vec::new();
    for (table, _) in &restored.tables {
        let temp = quoted(&format!("restored_{table}"))?;
        let json: String = sqlx::query_scalar(AssertSqlSafe(format!(
            "SELECT coalesce(jsonb_agg(to_jsonb(r)), '[]'::jsonb)::text FROM pg_temp.{temp} r"
        )))
        .fetch_one(&mut *conn)
        .await
        .map_err(failed("exporting a restored table as JSON"))?;
        let json_path = out.join(format!("{table}.json"));
        tokio::fs::write(&json_path, json)
            .await
            .map_err(io(&json_path))?;
        let mut csv = Vec::new();
        let mut copy = conn
            .copy_out_raw(&format!(
                "COPY (SELECT * FROM pg_temp.{temp}) TO STDOUT WITH (FORMAT csv, HEADER)"
            ))
            .await
            .map_err(failed("exporting a restored table as CSV"))?;
        while let Some(chunk) = copy.try_next().await.map_err(failed("reading CSV"))? {
            csv.extend_from_slice(&chunk);
        }
        drop(copy);
        let csv_path = out.join(format!("{table}.csv"));
        tokio::fs::write(&csv_path, csv)
            .await
            .map_err(io(&csv_path))?;
        written.extend([json_path, csv_path]);
    }
    Ok(written)
}
