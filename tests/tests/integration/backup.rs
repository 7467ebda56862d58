//! Backups (docs/architecture.md, "Platform jobs"): the tenant's job, as its own database role, writes
//! an encrypted archive and records it; a restore gives back exactly what was
//! saved, or nothing at all when the file or the key is wrong; retention
//! prunes; purging the tenant shreds its key.

use std::path::PathBuf;

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, Utc};
use serde_json::json;
use sqlx::PgPool;
use truffles_bot::backup::{self, ArchiveError, BackupError, DataKey, Job, Kind, Storage};
use truffles_migrations::TenantDb;
use truffles_operator::tenant::keys::ensure_data_key;
use truffles_operator::tenant::platform::{shred_keys, upsert_client};
use truffles_tests::runtime::{TenantRuntime, chatflow_text, price_list};
use truffles_tests::test_master_key;
use uuid::Uuid;

const PHONE: &str = "77015550123";

/// A tenant with its platform row, its data key (the operator's function) and a
/// backup directory of its own.
struct Fixture {
    rt: TenantRuntime,
    client_id: Uuid,
    key_hex: String,
    dir: PathBuf,
}

impl Fixture {
    async fn new(prefix: &str) -> Result<Self> {
        let rt = TenantRuntime::new(prefix, json!({})).await?;
        let tenant = TenantDb::for_client(&rt.name)?;
        let record = upsert_client(
            &rt.db.pool,
            &rt.name,
            "shops",
            "Flower shop",
            &tenant.schema,
            &json!({}),
        )
        .await?;
        let key_hex = ensure_data_key(&rt.db.pool, record.id, &test_master_key()).await?;
        let dir = std::env::temp_dir().join(format!("truffles-backups-{}", Uuid::new_v4()));
        std::fs::create_dir_all(&dir)?;
        Ok(Self {
            rt,
            client_id: record.id,
            key_hex,
            dir,
        })
    }

    fn storage(&self) -> Result<Storage> {
        Ok(Storage::from_url(
            &format!("file://{}", self.dir.display()),
            std::iter::empty::<(&str, &str)>(),
        )?)
    }

    fn job(&self, retention_days: u32) -> Result<Job> {
        Ok(Job {
            pool: self.rt.pool.clone(),
            tenant: self.rt.name.clone(),
            key: DataKey::from_hex(&self.key_hex)?,
            storage: self.storage()?,
            retention_days,
        })
    }

    fn file(&self, object_key: &str) -> PathBuf {
        self.dir.join(object_key)
    }
}

impl Drop for Fixture {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// A table's rows as one canonical JSON text (sorted), for comparison.
async fn rows_of(conn: &mut sqlx::PgConnection, relation: &str) -> Result<String> {
    sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "SELECT coalesce(jsonb_agg(to_jsonb(t) ORDER BY to_jsonb(t)::text), '[]')::text FROM {relation} t"
    )))
    .fetch_one(conn)
    .await
    .with_context(|| format!("reading {relation}"))
}

#[tokio::test]
async fn a_full_backup_restores_exactly_the_source_and_exports_json_and_csv() -> Result<()> {
    let fx = Fixture::new("backup").await?;
    let rt = &fx.rt;
    // Real data: a conversation through the runtime (users with encrypted
    // phone numbers, messages, inbox, outbox, audit).
    let running = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&running);
    // One at a time: messages that arrive together are answered as one turn.
    for (n, text) in [(1, "Здравствуйте"), (2, "Сколько стоит букет из 25 роз?")]
    {
        rt.post(&url, &chatflow_text(&format!("B-{n}"), PHONE, text))
            .await?;
        rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", n)
            .await?;
    }
    running.stop().await;

    let report = fx.job(30)?.run(Kind::Weekly, Utc::now()).await?;
    assert!(report.rows >= 8, "{report}");
    let file = std::fs::read(fx.file(&report.object_key))?;
    assert_eq!(file.len() as u64, report.size_bytes);
    for clear in [PHONE.as_bytes(), "Сколько стоит".as_bytes()] {
        assert!(
            !file.windows(clear.len()).any(|w| w == clear),
            "plaintext in the backup file"
        );
    }
    // Recorded for the platform (the admin reads every tenant's rows).
    let (size, days): (i64, f64) = sqlx::query_as(
        "SELECT size_bytes, extract(epoch FROM expires_at - created_at)::float8 / 86400
         FROM platform.backups WHERE client_id = $1 AND storage_path = $2",
    )
    .bind(fx.client_id)
    .bind(&report.object_key)
    .fetch_one(&rt.db.pool)
    .await?;
    assert_eq!((size as u64, days.round() as i64), (report.size_bytes, 30));

    // Restore into temporary tables of one session: equal to the source, table by table.
    let mut conn = rt.pool.acquire().await?;
    let key = DataKey::from_hex(&fx.key_hex)?;
    let restored = backup::restore(&mut conn, &fx.storage()?, &key, &report.object_key).await?;
    let tables: Vec<&str> = restored.tables.iter().map(|(t, _)| t.as_str()).collect();
    for expected in [
        "users",
        "conversations",
        "messages",
        "inbox",
        "outbox",
        "audit_log",
    ] {
        assert!(tables.contains(&expected), "{expected} in {tables:?}");
    }
    assert!(!tables.contains(&"_sqlx_migrations"));
    for (table, count) in &restored.tables {
        let source = rows_of(&mut conn, &format!("\"{table}\"")).await?;
        let copy = rows_of(&mut conn, &format!("pg_temp.\"restored_{table}\"")).await?;
        assert_eq!(source, copy, "table {table}");
        let live: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM \"{table}\""
        )))
        .fetch_one(&mut *conn)
        .await?;
        assert_eq!(live as u64, *count, "table {table}");
    }

    // The client's export.
    let out = fx.dir.join("export");
    let files = backup::export_restored(&mut conn, &restored, &out).await?;
    assert_eq!(files.len(), restored.tables.len() * 2);
    let messages: Vec<serde_json::Value> =
        serde_json::from_slice(&std::fs::read(out.join("messages.json"))?)?;
    assert!(
        messages
            .iter()
            .any(|m| m["content"] == "Сколько стоит букет из 25 роз?")
    );
    let csv = std::fs::read_to_string(out.join("messages.csv"))?;
    let header = csv.lines().next().unwrap_or_default();
    assert!(
        header.contains("conversation_id") && header.contains("content"),
        "{header}"
    );
    assert_eq!(csv.matches("Сколько стоит букет").count(), 1);
    Ok(())
}

#[tokio::test]
async fn a_person_erased_after_a_backup_is_left_out_of_its_restore() -> Result<()> {
    const OTHER: &str = "77015550199";
    let fx = Fixture::new("erasure").await?;
    let rt = &fx.rt;
    let running = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&running);
    for (n, phone, text) in [
        (
            1,
            PHONE,
            "Меня зовут Айгерим, сколько стоит букет из 25 роз?",
        ),
        (2, OTHER, "Есть ли тюльпаны?"),
        (3, PHONE, "Позовите менеджера"),
    ] {
        let mut message = chatflow_text(&format!("G-{n}"), phone, text);
        if phone == OTHER {
            message["metadata"]["sender"] = json!("Ержан");
        }
        rt.post(&url, &message).await?;
        rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", n)
            .await?;
    }
    running.stop().await;
    let before = fx.job(30)?.run(Kind::Weekly, Utc::now()).await?;

    let pii = truffles_bot::pii::Pii::new(&truffles_tests::runtime::PII_KEY);
    let cache = truffles_bot::cache::Cache::new(&rt.name, None)?;
    let erased = truffles_bot::person::erase(&rt.pool, &pii, &cache, "cli", PHONE).await?;
    assert_eq!(erased.customers, 1);
    // What the erasure keeps about itself: table names and row ids, nothing else.
    let listed: Vec<(String, i64)> =
        sqlx::query_as("SELECT table_name, count(*) FROM erased_rows GROUP BY 1 ORDER BY 1")
            .fetch_all(&rt.pool)
            .await?;
    let listed_tables: Vec<&str> = listed.iter().map(|(t, _)| t.as_str()).collect();
    for table in ["conversations", "inbox", "messages", "outbox", "users"] {
        assert!(listed_tables.contains(&table), "{table} in {listed:?}");
    }

    // The backup from before the erasure still holds the person (encrypted);
    // its restore does not give them back, and keeps everyone else.
    let mut conn = rt.pool.acquire().await?;
    let key = DataKey::from_hex(&fx.key_hex)?;
    let restored = backup::restore(&mut conn, &fx.storage()?, &key, &before.object_key).await?;
    let listed_total: i64 = listed.iter().map(|(_, n)| n).sum();
    assert!(
        restored.erased > 0 && restored.erased <= listed_total as u64,
        "{restored:?}"
    );
    let users = restored
        .tables
        .iter()
        .find(|(t, _)| t == "users")
        .map(|(_, n)| *n);
    assert_eq!(users, Some(1), "only the other customer comes back");
    let out = fx.dir.join("export");
    backup::export_restored(&mut conn, &restored, &out).await?;
    let mut exported = String::new();
    for entry in std::fs::read_dir(&out)? {
        exported.push_str(&std::fs::read_to_string(entry?.path())?);
    }
    for trace in [PHONE, "Айгерим", "Позовите менеджера", "букет из 25 роз"]
    {
        assert!(
            !exported.contains(trace),
            "{trace} came back from the backup"
        );
    }
    assert!(
        exported.contains("Есть ли тюльпаны?"),
        "the other customer is restored"
    );
    Ok(())
}

/// Seeds one customer with a conversation holding an old and a recent message.
async fn seed_two_days(pool: &PgPool) -> Result<()> {
    sqlx::raw_sql(
        "WITH u AS (INSERT INTO users (channel, remote_jid, name) VALUES ('whatsapp', 'hash-1', 'Айгерим') RETURNING id),
              c AS (INSERT INTO conversations (user_id, channel, started_at)
                    SELECT id, 'whatsapp', now() - interval '3 days' FROM u RETURNING id)
         INSERT INTO messages (conversation_id, role, content, created_at)
         SELECT id, 'user', 'старое сообщение', now() - interval '3 days' FROM c
         UNION ALL SELECT id, 'user', 'новое сообщение', now() - interval '1 hour' FROM c",
    )
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::test]
async fn a_daily_backup_holds_its_period_and_a_bad_file_or_key_restores_nothing() -> Result<()> {
    let fx = Fixture::new("daily").await?;
    seed_two_days(&fx.rt.pool).await?;
    let report = fx.job(30)?.run(Kind::Daily, Utc::now()).await?;
    let key = DataKey::from_hex(&fx.key_hex)?;
    let storage = fx.storage()?;
    let mut conn = fx.rt.pool.acquire().await?;
    let restored = backup::restore(&mut conn, &storage, &key, &report.object_key).await?;
    assert_eq!(
        restored.tables,
        vec![
            ("users".to_owned(), 1),
            ("conversations".to_owned(), 1),
            ("handovers".to_owned(), 0),
            ("messages".to_owned(), 1)
        ]
    );
    let content: String = sqlx::query_scalar("SELECT content FROM pg_temp.restored_messages")
        .fetch_one(&mut *conn)
        .await?;
    assert_eq!(content, "новое сообщение");
    drop(conn);

    // A key that is not the tenant's: refused, nothing loaded.
    let wrong = DataKey::from_hex(&"ab".repeat(32))?;
    let mut conn = fx.rt.pool.acquire().await?.detach();
    let err = backup::restore(&mut conn, &storage, &wrong, &report.object_key)
        .await
        .expect_err("wrong key");
    assert!(
        matches!(err, BackupError::Archive(ArchiveError::WrongKey { .. })),
        "{err}"
    );
    // One flipped bit, or a truncated copy: refused whole.
    let path = fx.file(&report.object_key);
    let original = std::fs::read(&path)?;
    let mut flipped = original.clone();
    let last = flipped.len() - 40;
    flipped[last] ^= 0x20;
    for damaged in [flipped, original[..original.len() / 2].to_vec()] {
        std::fs::write(&path, &damaged)?;
        let err = backup::restore(&mut conn, &storage, &key, &report.object_key)
            .await
            .expect_err("damaged");
        assert!(
            matches!(err, BackupError::Archive(ArchiveError::Tampered)),
            "{err}"
        );
    }
    let loaded: bool =
        sqlx::query_scalar("SELECT to_regclass('pg_temp.restored_messages') IS NOT NULL")
            .fetch_one(&mut conn)
            .await?;
    assert!(!loaded, "no table was created from a refused file");
    Ok(())
}

#[tokio::test]
async fn retention_prunes_and_each_tenant_sees_only_its_own_backups() -> Result<()> {
    let fx = Fixture::new("retention").await?;
    seed_two_days(&fx.rt.pool).await?;
    let now = Utc::now();
    let job = fx.job(1)?;
    let first = job.run(Kind::Daily, now).await?;
    assert_eq!(first.pruned, 0);
    // Two days later the first backup has expired: its file and row go.
    let second = job.run(Kind::Daily, now + Duration::days(2)).await?;
    assert_eq!(second.pruned, 1, "{second}");
    assert!(!fx.file(&first.object_key).exists());
    assert!(fx.file(&second.object_key).exists());
    let deleted: Vec<(String, bool)> = sqlx::query_as(
        "SELECT storage_path, deleted_at IS NOT NULL FROM platform.backups WHERE client_id = $1 ORDER BY id",
    )
    .bind(fx.client_id)
    .fetch_all(&fx.rt.db.pool)
    .await?;
    assert_eq!(
        deleted,
        vec![(first.object_key, true), (second.object_key.clone(), false)]
    );
    // The daily period continues where the last one ended.
    let (start,): (Option<DateTime<Utc>>,) =
        sqlx::query_as("SELECT period_start FROM platform.backups WHERE storage_path = $1")
            .bind(&second.object_key)
            .fetch_one(&fx.rt.db.pool)
            .await?;
    assert_eq!(
        start.map(|s| s.timestamp()),
        Some(now.timestamp()),
        "no gap after the first backup"
    );

    // A second tenant in the same database: row-level security hides the first one's backups.
    let other = TenantDb::for_client(&format!(
        "other-{}",
        &Uuid::new_v4().simple().to_string()[..8]
    ))?;
    truffles_migrations::provision_tenant(&fx.rt.db.pool, &other, "other-pw").await?;
    upsert_client(
        &fx.rt.db.pool,
        &other.role.replace("tenant_", "").replace('_', "-"),
        "shops",
        "Other",
        &other.schema,
        &json!({}),
    )
    .await?;
    let other_pool =
        PgPool::connect_with(other.connect_options(&fx.rt.db.options, "other-pw")).await?;
    let visible: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.backups")
        .fetch_one(&other_pool)
        .await?;
    assert_eq!(visible, 0);
    let forged = sqlx::query(
        "INSERT INTO platform.backups (client_id, type, storage_path, size_bytes, expires_at)
         VALUES ($1, 'manual', 'x', 0, now())",
    )
    .bind(fx.client_id)
    .execute(&other_pool)
    .await;
    assert!(
        forged.is_err(),
        "a tenant cannot record backups for another"
    );
    for table in ["platform.clients", "platform.tenant_keys"] {
        let read = sqlx::query(sqlx::AssertSqlSafe(format!("SELECT * FROM {table}")))
            .execute(&other_pool)
            .await;
        assert!(read.is_err(), "a tenant role reads {table}");
    }
    Ok(())
}

#[tokio::test]
async fn shredding_the_tenants_key_leaves_its_backups_unreadable() -> Result<()> {
    let fx = Fixture::new("shred").await?;
    seed_two_days(&fx.rt.pool).await?;
    let report = fx.job(30)?.run(Kind::Manual, Utc::now()).await?;
    // The operator's purge step (the runtime Secret, the other copy, is deleted with the tenant).
    shred_keys(&fx.rt.db.pool, fx.client_id).await?;
    let remaining: i64 =
        sqlx::query_scalar("SELECT count(*) FROM platform.tenant_keys WHERE client_id = $1")
            .bind(fx.client_id)
            .fetch_one(&fx.rt.db.pool)
            .await?;
    assert_eq!(remaining, 0);
    // Whatever key the platform holds for this client now is a new one.
    let new_key = ensure_data_key(&fx.rt.db.pool, fx.client_id, &test_master_key()).await?;
    assert_ne!(new_key, fx.key_hex);
    let mut conn = fx.rt.pool.acquire().await?;
    let err = backup::restore(
        &mut conn,
        &fx.storage()?,
        &DataKey::from_hex(&new_key)?,
        &report.object_key,
    )
    .await
    .expect_err("unreadable after shredding");
    assert!(
        matches!(err, BackupError::Archive(ArchiveError::WrongKey { .. })),
        "{err}"
    );
    // The same key twice from the platform while it exists.
    assert_eq!(
        ensure_data_key(&fx.rt.db.pool, fx.client_id, &test_master_key()).await?,
        new_key
    );
    Ok(())
}

#[tokio::test]
async fn s3_storage_holds_restores_and_prunes_backups() -> Result<()> {
    let endpoint = truffles_tests::env_var("TRUFFLES_S3_ENDPOINT")?;
    let bucket = format!("backups-{}", &Uuid::new_v4().simple().to_string()[..8]);
    let created = reqwest::Client::new()
        .put(format!("{endpoint}/{bucket}"))
        .send()
        .await?;
    anyhow::ensure!(
        created.status().is_success(),
        "creating the bucket: {}",
        created.status()
    );
    let fx = Fixture::new("s3").await?;
    seed_two_days(&fx.rt.pool).await?;
    // What the CronJob's AWS_* variables carry.
    let options = [
        ("AWS_ENDPOINT", endpoint.as_str()),
        ("AWS_ALLOW_HTTP", "true"),
        ("AWS_REGION", "us-east-1"),
        ("AWS_ACCESS_KEY_ID", "truffles"),
        ("AWS_SECRET_ACCESS_KEY", "truffles-secret"),
    ];
    let storage = Storage::from_url(&format!("s3://{bucket}/shops"), options)?;
    let job = Job {
        storage: storage.clone(),
        ..fx.job(1)?
    };
    let now = Utc::now();
    let first = job.run(Kind::Weekly, now).await?;
    assert!(storage.get(&first.object_key).await?.len() as u64 == first.size_bytes);

    let mut conn = fx.rt.pool.acquire().await?;
    let restored = backup::restore(
        &mut conn,
        &storage,
        &DataKey::from_hex(&fx.key_hex)?,
        &first.object_key,
    )
    .await?;
    let messages = restored
        .tables
        .iter()
        .find(|(t, _)| t == "messages")
        .map(|(_, n)| *n);
    assert_eq!(messages, Some(2));

    let second = job.run(Kind::Daily, now + Duration::days(2)).await?;
    assert_eq!(second.pruned, 1);
    assert!(matches!(
        storage.get(&first.object_key).await,
        Err(backup::StorageError::NotFound(_))
    ));
    assert!(storage.get(&second.object_key).await.is_ok());
    Ok(())
}
