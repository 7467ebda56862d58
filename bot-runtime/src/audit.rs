//! The tenant's audit trail and error log (SPEC: "Everything is logged and can
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
    sqlx::query("INSERT INTO audit_log (action, actor, details) VALUES ($1, $2, $3)")
        .bind(action)
        .bind(actor)
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
    // The error and its audit row in one statement (SPEC: action `error`).
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
