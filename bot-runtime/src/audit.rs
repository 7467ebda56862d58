//! The tenant's audit trail and error log ("Everything is logged and can
//! be reconstructed"). Error rows keep the input so it can be replayed.

use serde_json::Value;
use sqlx::PgExecutor;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Level {
    Critical,
    Warning,
    Info,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Critical => "critical",
            Self::Warning => "warning",
            Self::Info => "info",
        }
    }
}

pub async fn record<'e>(
    db: impl PgExecutor<'e>,
    action: &str,
    actor: &str,
    details: Value,
) -> sqlx::Result<()> {
    record_by(db, action, actor, None, details).await
}

/// An admin's act, with the credential it came with (`actor_id`: the admin
/// token, the previous one during a rotation, or the command line).
pub async fn record_by<'e>(
    db: impl PgExecutor<'e>,
    action: &str,
    actor: &str,
    actor_id: Option<&str>,
    details: Value,
) -> sqlx::Result<()> {
    sqlx::query("INSERT INTO audit_log (action, actor, actor_id, details) VALUES ($1, $2, $3, $4)")
        .bind(action)
        .bind(actor)
        .bind(actor_id)
        .bind(details)
        .execute(db)
        .await?;
    Ok(())
}

/// Stores an error with its input; failures to store are only logged (the
/// database may be what failed).
pub async fn error<'e>(
    db: impl PgExecutor<'e>,
    stage: &str,
    level: Level,
    error_type: &str,
    message: &str,
    input: Option<Value>,
) {
    // The error and its audit row in one statement (audit action `error`).
    let stored = sqlx::query(
        "WITH e AS (INSERT INTO error_logs (stage, level, error_type, message, input_data)
                    VALUES ($1, $2, $3, $4, $5) RETURNING id)
         INSERT INTO audit_log (action, actor, details)
         SELECT 'error', 'system', jsonb_build_object('error_log_id', e.id, 'stage', $1::text,
                                                      'level', $2::text, 'error_type', $3::text)
         FROM e",
    )
    .bind(stage)
    .bind(level.as_str())
    .bind(error_type)
    .bind(message)
    .bind(input)
    .execute(db)
    .await;
    if let Err(e) = stored {
        tracing::error!(stage, error_type, error = %e, "could not store an error_logs row");
    }
}

/// Raw bytes as a JSON value for replay: the text (lossy UTF-8) up to a cap.
pub fn raw_input(body: &[u8]) -> Value {
    const CAP: usize = 64 * 1024;
    let text = String::from_utf8_lossy(&body[..body.len().min(CAP)]);
    serde_json::json!({"raw": text, "bytes": body.len(), "truncated": body.len() > CAP})
}

/// How long error rows keep the customer's input (docs/architecture.md, "Product rules": logs are
/// anonymized after 7 days).
pub const ERROR_INPUT_RETENTION: std::time::Duration =
    std::time::Duration::from_secs(7 * 24 * 3600);

/// A phone number or WhatsApp id in free text: ten or more digits, possibly
/// with `+`, spaces, dashes or parentheses between them (PostgreSQL regex).
const PHONE_PATTERN: &str = r"\+?[0-9][0-9 ()-]{8,}[0-9]";

/// The retention job: error rows older than `older_than` lose their input
/// (the raw webhook or query, with the customer's number and words) and have
/// phone numbers masked in their message. Returns how many rows changed;
/// running it again changes nothing.
pub async fn anonymize_old_errors<'e>(
    db: impl PgExecutor<'e>,
    older_than: std::time::Duration,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE error_logs
            SET input_data = NULL,
                message = regexp_replace(message, $2, '[phone]', 'g'),
                stack = regexp_replace(stack, $2, '[phone]', 'g')
          WHERE created_at < now() - make_interval(secs => $1)
            AND (input_data IS NOT NULL OR message ~ $2 OR stack ~ $2)",
    )
    .bind(older_than.as_secs_f64())
    .bind(PHONE_PATTERN)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// The retention job's other half: handled inbox events older than
/// `older_than` lose the raw webhook and the sender's address (both carry the
/// phone number). The message id stays, so a very late redelivery is still
/// recognised as a duplicate. Pending and in-flight events are untouched.
pub async fn anonymize_old_inbox<'e>(
    db: impl PgExecutor<'e>,
    older_than: std::time::Duration,
) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "UPDATE inbox SET payload = '{}'::jsonb, sender = ''
          WHERE received_at < now() - make_interval(secs => $1)
            AND status IN ('done', 'ignored', 'failed')
            AND (payload <> '{}'::jsonb OR sender <> '')",
    )
    .bind(older_than.as_secs_f64())
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}
