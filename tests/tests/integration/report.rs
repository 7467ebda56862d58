//! The daily e-mail report: figures from seeded tenant data, new error kinds,
//! backup state, and the e-mail a real SMTP server receives.

use anyhow::{Context, Result};
use chrono::{DateTime, Duration, FixedOffset, Utc};
use serde_json::json;
use sqlx::PgPool;
use truffles_bot::platform::report::{self, Day};
use truffles_migrations::TenantDb;
use truffles_operator::tenant::platform::upsert_client;
use truffles_tests::TestDatabase;
use truffles_tests::managers::SmtpServer;

async fn tenant(db: &TestDatabase, name: &str, company: &str) -> Result<(uuid::Uuid, String)> {
    let tenant = TenantDb::for_client(name)?;
    truffles_migrations::provision_tenant(&db.pool, &tenant, "pw").await?;
    let record =
        upsert_client(&db.pool, name, "shops", company, &tenant.schema, &json!({})).await?;
    sqlx::query("UPDATE platform.clients SET status = 'active' WHERE id = $1")
        .bind(record.id)
        .execute(&db.pool)
        .await?;
    Ok((record.id, tenant.schema))
}

/// A customer's conversation: (seconds after `start`, role, action, facts).
async fn converse(
    pool: &PgPool,
    schema: &str,
    start: DateTime<Utc>,
    turns: &[(i64, &str, Option<&str>, i64)],
) -> Result<uuid::Uuid> {
    let conversation: uuid::Uuid = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
        "WITH u AS (INSERT INTO {schema}.users (channel, remote_jid) VALUES ('whatsapp', gen_random_uuid()::text) RETURNING id)
         INSERT INTO {schema}.conversations (user_id, channel, started_at) SELECT id, 'whatsapp', $1 FROM u RETURNING id"
    )))
    .bind(start)
    .fetch_one(pool)
    .await?;
    for (secs, role, action, facts) in turns {
        sqlx::query(sqlx::AssertSqlSafe(format!(
            "INSERT INTO {schema}.messages (conversation_id, role, content, metadata, created_at) VALUES ($1, $2, 'текст', $3, $4)"
        )))
        .bind(conversation)
        .bind(role)
        .bind(action.map_or_else(|| json!({}), |a| json!({"action": a, "facts": facts})))
        .bind(start + Duration::seconds(*secs))
        .execute(pool)
        .await?;
    }
    Ok(conversation)
}

async fn error(
    pool: &PgPool,
    schema: &str,
    stage: &str,
    kind: &str,
    at: DateTime<Utc>,
) -> Result<()> {
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {schema}.error_logs (stage, level, error_type, message, created_at) VALUES ($1, 'warning', $2, 'x', $3)"
    )))
    .bind(stage)
    .bind(kind)
    .bind(at)
    .execute(pool)
    .await?;
    Ok(())
}

#[tokio::test]
async fn the_daily_report_counts_the_day_flags_problems_and_is_mailed() -> Result<()> {
    let db = TestDatabase::create().await?;
    truffles_migrations::migrate_platform(&db.pool).await?;
    let almaty = FixedOffset::east_opt(5 * 3600).context("offset")?;
    let day = Day::yesterday(Utc::now(), almaty);
    let hour = |h: i64| day.start + Duration::hours(h);

    let (flowers_id, flowers) = tenant(&db, "report-flowers", "Цветы Алматы").await?;
    let conversation = converse(
        &db.pool,
        &flowers,
        hour(1),
        &[
            (0, "user", None, 0),
            (2, "assistant", Some("answer"), 2),
            (3600, "user", None, 0),
            (3604, "assistant", Some("answer"), 0),
            (7200, "user", None, 0),
            (7201, "assistant", Some("greet"), 0),
        ],
    )
    .await?;
    // The evening before the day does not count.
    converse(
        &db.pool,
        &flowers,
        day.start - Duration::hours(1),
        &[(0, "user", None, 0)],
    )
    .await?;
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "INSERT INTO {flowers}.handovers (conversation_id, trigger_type, adapter_type, created_at) VALUES ($1, 'keyword', 'telegram', $2)"
    )))
    .bind(conversation)
    .bind(hour(3))
    .execute(&db.pool)
    .await?;
    error(&db.pool, &flowers, "send", "chatflow_error", hour(1)).await?;
    error(
        &db.pool,
        &flowers,
        "send",
        "chatflow_error",
        day.start - Duration::days(3),
    )
    .await?;
    error(&db.pool, &flowers, "rag", "knowledge_unavailable", hour(2)).await?;
    sqlx::query(
        "INSERT INTO platform.backups (client_id, type, storage_path, size_bytes, created_at, expires_at)
         VALUES ($1, 'daily', 'k', 8192, $2, $2 + interval '30 days')",
    )
    .bind(flowers_id)
    .bind(day.end - Duration::hours(2))
    .execute(&db.pool)
    .await?;

    let (_, dental) = tenant(&db, "report-dental", "Smile Dental").await?;
    converse(
        &db.pool,
        &dental,
        hour(5),
        &[(0, "user", None, 0), (20, "assistant", Some("answer"), 1)],
    )
    .await?;

    let report = report::collect(&db.pool, day).await?;
    let by_name = |name: &str| {
        report
            .clients
            .iter()
            .find(|c| c.name == name)
            .cloned()
            .with_context(|| format!("{name} in the report"))
    };
    let f = by_name("report-flowers")?;
    assert_eq!(
        (f.messages_in, f.messages_out, f.conversations, f.handovers),
        (3, 3, 1, 1)
    );
    assert_eq!((f.rag_queries, f.rag_hits, f.errors), (2, 1, 2));
    // Replies after 2 s, 4 s and 1 s.
    assert_eq!(f.response_p50_secs, Some(2.0));
    assert!((f.response_p90_secs.unwrap_or_default() - 3.6).abs() < 1e-9);
    assert!(f.backup_ok(&day));
    // One handover for one conversation; 2 errors for 3 messages; a 50% hit
    // rate is at the threshold, not below it.
    assert_eq!(
        f.warnings(&day),
        vec!["handover rate 100%", "error rate 67%"]
    );
    let d = by_name("report-dental")?;
    assert_eq!(
        d.warnings(&day),
        vec!["p90 response over 10 s", "no backup in the last day"]
    );
    assert_eq!(report.new_errors.len(), 1, "{:?}", report.new_errors);
    assert_eq!(
        (
            report.new_errors[0].client.as_str(),
            report.new_errors[0].error_type.as_str()
        ),
        ("report-flowers", "knowledge_unavailable")
    );

    let smtp = SmtpServer::start().await?;
    report::send(
        &format!("smtp://127.0.0.1:{}", smtp.port),
        "Truffles <reports@truffles.kz>",
        &["ops@truffles.kz".to_owned()],
        &report,
    )
    .await?;
    let mail = smtp
        .messages()
        .into_iter()
        .next()
        .context("a report e-mail")?;
    assert!(
        mail.contains(&format!("Subject: Truffles daily report {}", day.date)),
        "{mail}"
    );
    assert!(mail.contains("multipart/alternative"), "{mail}");
    // Decode the parts with a real MIME parser (Python's, present for aiosmtpd).
    let parts = std::process::Command::new("python3")
        .args([
            "-c",
            "import email,sys; m=email.message_from_string(sys.stdin.read()); \
             [print(p.get_content_type(), p.get_payload(decode=True).decode()) for p in m.walk() if not p.is_multipart()]",
        ])
        .stdin(std::process::Stdio::piped())
        .stdout(std::process::Stdio::piped())
        .spawn()
        .and_then(|mut child| {
            use std::io::Write;
            child.stdin.take().map(|mut s| s.write_all(mail.as_bytes()));
            child.wait_with_output()
        })?;
    let parts = String::from_utf8(parts.stdout)?;
    assert!(parts.starts_with("text/plain"), "{parts}");
    assert!(parts.contains("text/html"), "{parts}");
    assert!(
        parts.contains("Цветы Алматы") && parts.contains("Smile Dental"),
        "{parts}"
    );
    assert!(parts.contains("MISSING (never)"), "{parts}");
    assert!(parts.contains("rag / knowledge_unavailable × 1"), "{parts}");
    Ok(())
}
