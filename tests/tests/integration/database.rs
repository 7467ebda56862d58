//! Migrations and tenant isolation against a real PostgreSQL server.
//! Each test has its own database; roles are server-wide, so each test also uses
//! tenant names of its own.

use anyhow::{Context, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, Connection, PgConnection};
use truffles_migrations::{TenantDb, drop_tenant, migrate_platform, provision_tenant};
use truffles_tests::TestDatabase;

const INSUFFICIENT_PRIVILEGE: &str = "42501";
const UNIQUE_VIOLATION: &str = "23505";

fn sql_state(err: &sqlx::Error) -> Option<String> {
    err.as_database_error()
        .and_then(|e| e.code())
        .map(|c| c.into_owned())
}

async fn tenant_pool(db: &TestDatabase, tenant: &TenantDb, password: &str) -> Result<PgPool> {
    let options = tenant.connect_options(&db.options, password);
    PgPoolOptions::new()
        .max_connections(2)
        .connect_with(options)
        .await
        .context("connecting as the tenant role")
}

#[tokio::test]
async fn platform_migrations_apply_twice_and_seed_prompt_templates() -> Result<()> {
    let db = TestDatabase::create().await?;
    migrate_platform(&db.pool).await?;
    migrate_platform(&db.pool)
        .await
        .context("migrations must be idempotent")?;

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = 'platform' ORDER BY 1",
    )
    .fetch_all(&db.pool)
    .await?;
    for expected in [
        "audit_log",
        "backups",
        "billing_reminders",
        "clients",
        "daily_stats",
        "error_logs",
        "prompts",
        "subscriptions",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "platform.{expected} missing from {tables:?}"
        );
    }

    let templates: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM platform.prompts WHERE client_id IS NULL AND is_active ORDER BY name",
    )
    .fetch_all(&db.pool)
    .await?;
    assert!(
        templates.contains(&"fallback_critical".to_string()),
        "{templates:?}"
    );
    assert!(templates.contains(&"classify".to_string()), "{templates:?}");

    // Constraints encode the data model's vocabularies.
    let bad_status = sqlx::query("INSERT INTO platform.clients (name, namespace, company_name, status, schema_name) VALUES ('x', 'ns', 'X', 'paused', 'tenant_x')")
        .execute(&db.pool)
        .await
        .expect_err("unknown status must be rejected");
    assert_eq!(
        sql_state(&bad_status).as_deref(),
        Some("23514"),
        "{bad_status}"
    );
    Ok(())
}

#[tokio::test]
async fn tenant_schema_is_provisioned_with_its_tables_and_is_idempotent() -> Result<()> {
    let db = TestDatabase::create().await?;
    migrate_platform(&db.pool).await?;
    let tenant = TenantDb::for_client("flower-shop")?;
    provision_tenant(&db.pool, &tenant, "first-password").await?;
    provision_tenant(&db.pool, &tenant, "rotated-password")
        .await
        .context("provisioning must be idempotent")?;

    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
    )
    .bind(&tenant.schema)
    .fetch_all(&db.pool)
    .await?;
    for expected in [
        "audit_log",
        "conversations",
        "documents",
        "error_logs",
        "handovers",
        "inbox",
        "messages",
        "outbox",
        "prompts",
        "users",
    ] {
        assert!(
            tables.iter().any(|t| t == expected),
            "{}.{expected} missing from {tables:?}",
            tenant.schema
        );
    }

    // The rotated password is the one that works.
    assert!(tenant_pool(&db, &tenant, "first-password").await.is_err());
    let pool = tenant_pool(&db, &tenant, "rotated-password").await?;

    // The runtime's role works unqualified in its own schema (search_path).
    let user_id: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO users (channel, remote_jid, name) VALUES ('whatsapp', '77015705555@s.whatsapp.net', 'Zh.') RETURNING id",
    )
    .fetch_one(&pool)
    .await?;
    let conversation: uuid::Uuid = sqlx::query_scalar(
        "INSERT INTO conversations (user_id, channel) VALUES ($1, 'whatsapp') RETURNING id",
    )
    .bind(user_id)
    .fetch_one(&pool)
    .await?;
    // A second open conversation on the same channel is refused.
    let dup = sqlx::query("INSERT INTO conversations (user_id, channel) VALUES ($1, 'whatsapp')")
        .bind(user_id)
        .execute(&pool)
        .await
        .expect_err("one open conversation per user and channel");
    assert_eq!(sql_state(&dup).as_deref(), Some(UNIQUE_VIOLATION));

    // One open handover per conversation.
    sqlx::query("INSERT INTO handovers (conversation_id, trigger_type, adapter_type) VALUES ($1, 'keyword', 'telegram')")
        .bind(conversation)
        .execute(&pool)
        .await?;
    let second = sqlx::query("INSERT INTO handovers (conversation_id, trigger_type, adapter_type) VALUES ($1, 'intent', 'telegram')")
        .bind(conversation)
        .execute(&pool)
        .await
        .expect_err("one open handover per conversation");
    assert_eq!(sql_state(&second).as_deref(), Some(UNIQUE_VIOLATION));
    Ok(())
}

#[tokio::test]
async fn inbox_message_id_is_the_deduplication_fallback() -> Result<()> {
    let db = TestDatabase::create().await?;
    migrate_platform(&db.pool).await?;
    let tenant = TenantDb::for_client("dedup-shop")?;
    provision_tenant(&db.pool, &tenant, "pw-dedup").await?;
    let pool = tenant_pool(&db, &tenant, "pw-dedup").await?;

    let insert = "INSERT INTO inbox (channel, message_id, payload) VALUES ('whatsapp', $1, $2) ON CONFLICT (message_id) DO NOTHING";
    let payload = serde_json::json!({"messageType": "text", "message": "вы кто"});
    let first = sqlx::query(insert)
        .bind("3F6E61E2301EC33CF87A")
        .bind(&payload)
        .execute(&pool)
        .await?;
    let again = sqlx::query(insert)
        .bind("3F6E61E2301EC33CF87A")
        .bind(&payload)
        .execute(&pool)
        .await?;
    assert_eq!((first.rows_affected(), again.rows_affected()), (1, 0));
    Ok(())
}

#[tokio::test]
async fn a_tenant_role_cannot_read_another_tenant_or_the_platform() -> Result<()> {
    let db = TestDatabase::create().await?;
    migrate_platform(&db.pool).await?;
    let a = TenantDb::for_client("tenant-a")?;
    let b = TenantDb::for_client("tenant-b")?;
    provision_tenant(&db.pool, &a, "pw-a").await?;
    provision_tenant(&db.pool, &b, "pw-b").await?;

    let pool_b = tenant_pool(&db, &b, "pw-b").await?;
    sqlx::query(
        "INSERT INTO users (channel, remote_jid) VALUES ('whatsapp', '77001112233@s.whatsapp.net')",
    )
    .execute(&pool_b)
    .await?;

    let mut conn_a = PgConnection::connect_with(&a.connect_options(&db.options, "pw-a")).await?;
    for forbidden in [
        format!("SELECT count(*) FROM {}.users", b.schema),
        format!("SELECT count(*) FROM {}.messages", b.schema),
        "SELECT count(*) FROM platform.clients".to_string(),
        "SELECT count(*) FROM platform.prompts".to_string(),
        "SELECT count(*) FROM _sqlx_migrations".to_string(),
    ] {
        let err = sqlx::query(AssertSqlSafe(forbidden.as_str()))
            .execute(&mut conn_a)
            .await
            .expect_err("must be denied");
        assert_eq!(
            sql_state(&err).as_deref(),
            Some(INSUFFICIENT_PRIVILEGE),
            "{forbidden}: {err}"
        );
    }
    // Writing into another tenant is denied too.
    let write = format!(
        "INSERT INTO {}.users (channel, remote_jid) VALUES ('whatsapp', 'x')",
        b.schema
    );
    let err = sqlx::query(AssertSqlSafe(write))
        .execute(&mut conn_a)
        .await
        .expect_err("must be denied");
    assert_eq!(sql_state(&err).as_deref(), Some(INSUFFICIENT_PRIVILEGE));

    // A tenant can change rows but not the structure of its own schema.
    let err = sqlx::query("DROP TABLE messages")
        .execute(&mut conn_a)
        .await
        .expect_err("must be denied");
    assert_eq!(sql_state(&err).as_deref(), Some(INSUFFICIENT_PRIVILEGE));
    let own: i64 = sqlx::query_scalar("SELECT count(*) FROM users")
        .fetch_one(&mut conn_a)
        .await?;
    assert_eq!(own, 0, "tenant A sees only its own (empty) users table");
    Ok(())
}

#[tokio::test]
async fn dropping_a_tenant_removes_its_schema_and_role() -> Result<()> {
    let db = TestDatabase::create().await?;
    migrate_platform(&db.pool).await?;
    let tenant = TenantDb::for_client("gone-shop")?;
    provision_tenant(&db.pool, &tenant, "pw-gone").await?;
    drop_tenant(&db.pool, &tenant).await?;
    drop_tenant(&db.pool, &tenant)
        .await
        .context("dropping twice is harmless")?;

    let schemas: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_namespace WHERE nspname = $1")
        .bind(&tenant.schema)
        .fetch_one(&db.pool)
        .await?;
    let roles: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&tenant.role)
        .fetch_one(&db.pool)
        .await?;
    assert_eq!((schemas, roles), (0, 0));
    assert!(
        tenant_pool(&db, &tenant, "pw-gone").await.is_err(),
        "the role can no longer log in"
    );
    Ok(())
}

#[tokio::test]
async fn a_migrated_tenant_schema_is_reported_current() -> Result<()> {
    let db = TestDatabase::create().await?;
    migrate_platform(&db.pool).await?;
    let tenant = TenantDb::for_client("current-shop")?;
    assert!(
        !truffles_migrations::tenant_is_current(&db.pool, &tenant).await?,
        "no schema yet"
    );
    provision_tenant(&db.pool, &tenant, "pw-current").await?;
    assert!(truffles_migrations::tenant_is_current(&db.pool, &tenant).await?);
    // A schema behind the embedded migrations is not current.
    sqlx::raw_sql(AssertSqlSafe(format!(
        "DELETE FROM {}._sqlx_migrations",
        tenant.schema
    )))
    .execute(&db.pool)
    .await?;
    assert!(!truffles_migrations::tenant_is_current(&db.pool, &tenant).await?);
    Ok(())
}
