//! The pipeline's side of a handover: open one (or reuse the open one) and put
//! the conversation in human mode. Notifying managers through the tenant's
//! adapters (Telegram, CRM, e-mail, webhook) is the handover issue's work; the
//! `whatsappWeb` adapter needs no notification (managers answer from the same
//! number), so its handovers start as `notified`.

use sqlx::PgConnection;
use truffles_crds::client::HandoverAdapterType;
use uuid::Uuid;

use crate::audit;

pub struct Request<'a> {
    pub conversation_id: Uuid,
    /// intent | keyword | manual | timeout | error
    pub trigger: &'a str,
    pub value: &'a str,
    pub context_summary: String,
    pub adapter: HandoverAdapterType,
}

pub fn adapter_name(adapter: HandoverAdapterType) -> String {
    serde_json::to_value(adapter)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Opens a handover unless one is open; returns whether a new one was opened.
pub async fn open(tx: &mut PgConnection, req: &Request<'_>) -> sqlx::Result<bool> {
    let status = if req.adapter == HandoverAdapterType::WhatsappWeb {
        "notified"
    } else {
        "pending"
    };
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO handovers (conversation_id, trigger_type, trigger_value, context_summary, adapter_type, status, notified_at)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 = 'notified' THEN now() END)
         ON CONFLICT (conversation_id) WHERE status IN ('pending', 'notified', 'active') DO NOTHING
         RETURNING id",
    )
    .bind(req.conversation_id)
    .bind(req.trigger)
    .bind(req.value)
    .bind(&req.context_summary)
    .bind(adapter_name(req.adapter))
    .bind(status)
    .fetch_optional(&mut *tx)
    .await?;
    sqlx::query("UPDATE conversations SET status = 'handover' WHERE id = $1")
        .bind(req.conversation_id)
        .execute(&mut *tx)
        .await?;
    if let Some(id) = inserted {
        audit::record(
            &mut *tx,
            "handover",
            "system",
            serde_json::json!({"handover_id": id, "conversation_id": req.conversation_id, "trigger": req.trigger, "value": req.value}),
        )
        .await?;
    }
    Ok(inserted.is_some())
}

/// Returns a human-held conversation to the bot when its handover is older
/// than `auto_return_hours` (SPEC: return to bot on timeout).
pub async fn expire(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    auto_return_hours: u32,
) -> sqlx::Result<bool> {
    let expired = sqlx::query(
        "UPDATE handovers SET status = 'timeout', resolved_at = now()
         WHERE conversation_id = $1 AND status IN ('pending', 'notified', 'active')
           AND created_at < now() - make_interval(hours => $2)",
    )
    .bind(conversation_id)
    .bind(auto_return_hours as i32)
    .execute(&mut *tx)
    .await?
    .rows_affected()
        > 0;
    if expired {
        sqlx::query("UPDATE conversations SET status = 'active' WHERE id = $1")
            .bind(conversation_id)
            .execute(&mut *tx)
            .await?;
    }
    Ok(expired)
}
