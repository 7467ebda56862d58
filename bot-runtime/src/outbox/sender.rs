//! The outbox's sender loop: due rows through the conversation's channel,
//! with retries, backoff and the channel's circuit breaker.

use std::sync::Arc;
use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use sqlx::Row;
use tracing::{Instrument, info_span};

use super::{backoff_seconds, part_key};
use crate::audit::{self, Level};
use crate::channels::{self, Channel, Outgoing, SendError, instagram};
use crate::runtime::Runtime;

/// Delivers while rows are due, then waits to be woken: by a queued reply,
/// the scheduler's timer for a retry, or (rows held back by an open breaker)
/// the breaker's half-open time.
pub async fn run_sender(rt: Arc<Runtime>) {
    // At start the scheduler's first look wakes it when rows are due.
    rt.wakes.outbox.notified().await;
    loop {
        let wait = match send_due(&rt).await {
            Ok(Sent::One) => continue,
            Ok(Sent::Nothing) => None,
            Ok(Sent::HeldBack) => Some(crate::breaker::OPEN_FOR),
            Err(e) => {
                tracing::warn!(error = %e, "outbox");
                Some(AFTER_ERROR)
            }
        };
        match wait {
            None => rt.wakes.outbox.notified().await,
            Some(wait) => {
                tokio::select! {
                    () = rt.wakes.outbox.notified() => {}
                    () = tokio::time::sleep(wait) => {}
                }
            }
        }
    }
}

/// After an error the sender looks again this soon (a database that is
/// back, a row that could not be read).
const AFTER_ERROR: Duration = Duration::from_secs(5);

/// What one look at the outbox did.
enum Sent {
    One,
    Nothing,
    /// Due rows wait for a channel's breaker.
    HeldBack,
}

/// The queues that deliver with retries: the customers' and the managers'.
#[derive(Clone, Copy)]
pub enum Queue {
    Outbox,
    ManagerOutbox,
}

/// Records a failed delivery of a claimed row: `pending` again after the
/// backoff, or `failed` once the attempts are spent. Returns whether it gave up.
pub async fn record_failure(
    rt: &Runtime,
    queue: Queue,
    id: i64,
    attempts: i32,
    error: &str,
) -> Result<bool> {
    let give_up = attempts >= rt.config.tuning.max_send_attempts;
    // The table name comes from the enum, never from input.
    let table = match queue {
        Queue::Outbox => "outbox",
        Queue::ManagerOutbox => "manager_outbox",
    };
    sqlx::query(sqlx::AssertSqlSafe(format!(
        "UPDATE {table} SET status = CASE WHEN $2 THEN 'failed' ELSE 'pending' END,
                next_attempt_at = now() + make_interval(secs => $3), last_error = $4
         WHERE id = $1"
    )))
    .bind(id)
    .bind(give_up)
    .bind(backoff_seconds(attempts))
    .bind(error)
    .execute(&rt.db)
    .await?;
    // The retry's time may be the earliest now.
    rt.wakes.schedule.notify_one();
    Ok(give_up)
}

/// Sends one due row; false when none is due. A row claimed by a runtime that
/// died is due again when its lease runs out (stuck rows recover). Rows of a
/// channel whose breaker is open wait; the others go on.
async fn send_due(rt: &Runtime) -> Result<Sent> {
    if !rt.channels.any() {
        return Ok(Sent::Nothing);
    }
    // Only the tenant's own channels: this runs on every poll of an idle runtime.
    let mut open = Vec::new();
    for channel in [Channel::Whatsapp, Channel::Telegram, Channel::Instagram] {
        if rt.channels.sender(channel).is_some() && !rt.breakers.allows(channel.service()).await {
            open.push(channel.as_str());
        }
    }
    let row = sqlx::query(
        "UPDATE outbox SET status = 'sending', attempts = attempts + 1,
                           next_attempt_at = now() + make_interval(secs => $1)
         WHERE id = (SELECT id FROM outbox WHERE status IN ('pending', 'sending') AND next_attempt_at <= now()
                       AND NOT channel = ANY($2)
                     ORDER BY id FOR UPDATE SKIP LOCKED LIMIT 1)
         RETURNING id, conversation_id, channel, recipient, payload, idempotency_key, attempts, parts_sent",
    )
    .bind(rt.config.tuning.lease.as_secs_f64())
    .bind(&open)
    .fetch_optional(&rt.db)
    .await?;
    let Some(row) = row else {
        return Ok(if open.is_empty() {
            Sent::Nothing
        } else {
            Sent::HeldBack
        });
    };
    let id: i64 = row.try_get("id")?;
    let key: String = row.try_get("idempotency_key")?;
    let attempts: i32 = row.try_get("attempts")?;
    let channel_name: String = row.try_get("channel")?;
    let span = info_span!("send", tenant = %rt.config.client_name, channel = %channel_name, message_id = %key, attempt = attempts);
    async {
        let channel = Channel::from_db(&channel_name)
            .ok_or_else(|| anyhow::anyhow!("unknown channel {channel_name:?}"))?;
        let recipient: String = row.try_get("recipient")?;
        let conversation: Option<uuid::Uuid> = row.try_get("conversation_id")?;
        let Outgoing::Text { text } = serde_json::from_value(row.try_get("payload")?)?;
        let address = rt
            .pii
            .open_address(&recipient)
            .ok_or_else(|| anyhow::anyhow!("the recipient cannot be decrypted"))?;
        if channel == Channel::Instagram && !instagram_window_open(rt, conversation).await? {
            let closed = SendError::Refused {
                service: "Instagram",
                why: "the customer's last message is more than 24 hours old (Meta's messaging window)".into(),
            };
            return failed(rt, id, attempts, &closed).await;
        }
        let parts = channels::split(&text, channel.max_text());
        let mut sent: i32 = row.try_get("parts_sent")?;
        for (index, part) in parts.iter().enumerate().skip(sent.max(0) as usize) {
            let result = rt
                .channels
                .send(channel, &address, part, &part_key(&key, index))
                .await;
            // A refusal says nothing about the service's health.
            rt.breakers
                .record(channel.service(), result.as_ref().is_ok() || result.as_ref().is_err_and(SendError::is_permanent))
                .await;
            if let Err(e) = result {
                return failed(rt, id, attempts, &e).await;
            }
            sent = index as i32 + 1;
            if sent < parts.len() as i32 {
                sqlx::query("UPDATE outbox SET parts_sent = $2 WHERE id = $1")
                    .bind(id)
                    .bind(sent)
                    .execute(&rt.db)
                    .await?;
            }
        }
        let mut tx = rt.db.begin().await?;
        sqlx::query("UPDATE outbox SET status = 'sent', sent_at = now(), last_error = NULL, parts_sent = $2 WHERE id = $1")
            .bind(id)
            .bind(sent)
            .execute(&mut *tx)
            .await?;
        audit::record(&mut *tx, "message_out", "system", json!({"conversation_id": conversation, "message_id": key, "attempts": attempts, "channel": channel.as_str(), "parts": parts.len()}))
            .await?;
        tx.commit().await?;
        rt.metrics.message("out");
        tracing::info!(parts = parts.len(), "reply sent");
        Ok::<_, anyhow::Error>(())
    }
    .instrument(span)
    .await?;
    Ok(Sent::One)
}

/// Instagram lets a business answer within 24 hours of the customer's last message.
async fn instagram_window_open(rt: &Runtime, conversation: Option<uuid::Uuid>) -> Result<bool> {
    let last: Option<chrono::DateTime<chrono::Utc>> = sqlx::query_scalar(
        "SELECT max(created_at) FROM messages WHERE conversation_id = $1 AND role = 'user'",
    )
    .bind(conversation)
    .fetch_one(&rt.db)
    .await?;
    Ok(instagram::within_window(last, chrono::Utc::now()))
}

async fn failed(rt: &Runtime, id: i64, attempts: i32, error: &SendError) -> Result<()> {
    let message = error.to_string();
    // A refusal is final: no retries.
    let attempts = if error.is_permanent() {
        attempts.max(rt.config.tuning.max_send_attempts)
    } else {
        attempts
    };
    let give_up = record_failure(rt, Queue::Outbox, id, attempts, &message).await?;
    tracing::warn!(give_up, error = %message, "sending failed");
    if give_up {
        tell_manager(rt, id, &message).await?;
    }
    let level = if give_up {
        Level::Critical
    } else {
        Level::Warning
    };
    rt.report(
        "send",
        level,
        "send_failed",
        &message,
        Some(json!({"outbox_id": id, "attempts": attempts})),
    )
    .await;
    Ok(())
}

/// A manager's reply that could not be delivered is reported back to the
/// managers (in the handover's Telegram topic, the CRM, the webhook).
async fn tell_manager(rt: &Runtime, outbox_id: i64, error: &str) -> Result<()> {
    let row = sqlx::query(
        "SELECT (m.metadata->>'handover_id')::uuid AS handover, m.content
         FROM outbox o JOIN messages m ON m.id = o.message_id
         WHERE o.id = $1 AND m.role = 'manager'",
    )
    .bind(outbox_id)
    .fetch_optional(&rt.db)
    .await?;
    let Some(row) = row else {
        return Ok(());
    };
    let handover: Option<uuid::Uuid> = row.try_get("handover")?;
    let content: Option<String> = row.try_get("content")?;
    if let Some(handover) = handover {
        let excerpt: String = content.unwrap_or_default().chars().take(200).collect();
        crate::handover::queue_notice(
            &rt.db,
            handover,
            crate::handover::adapter::Kind::DeliveryFailed,
            Some(&format!("«{excerpt}» ({error})")),
            &format!("undelivered:{outbox_id}"),
        )
        .await?;
        rt.wakes.managers.notify_one();
    }
    Ok(())
}
