//! Delivers managers' notices in order per handover, with retries, falling
//! back to the second adapter when the card cannot reach the first; and
//! sweeps open handovers: reminders when nobody took one, return to the bot
//! after `auto_return_hours` (stuck handovers were production's top cause of
//! "the bot is silent").

use std::sync::Arc;

use anyhow::Result;
use serde_json::{Value, json};
use sqlx::Row;
use tracing::{Instrument, info_span};
use uuid::Uuid;

use super::adapter::{Kind, Notice, render_card};
use super::{Closing, close, queue_notice, view};
use crate::audit::Level;
use crate::outbox::sender::{Queue, record_failure};
use crate::runtime::Runtime;

/// Delivers while notices are due, then waits to be woken (a queued notice,
/// or the scheduler's timer for a retry). The sweep of open handovers is run
/// by the scheduler (`schedule.rs`) while any is open.
pub async fn run_notifier(rt: Arc<Runtime>) {
    // At start the scheduler's first look wakes it when notices are due.
    rt.wakes.managers.notified().await;
    loop {
        let failed = loop {
            match deliver_due(&rt).await {
                Ok(true) => continue,
                Ok(false) => break false,
                Err(e) => {
                    tracing::warn!(error = %format!("{e:#}"), "handover notices");
                    break true;
                }
            }
        };
        if failed {
            tokio::select! {
                () = rt.wakes.managers.notified() => {}
                () = tokio::time::sleep(AFTER_ERROR) => {}
            }
        } else {
            rt.wakes.managers.notified().await;
        }
    }
}

/// After an error the notifier looks again this soon.
const AFTER_ERROR: std::time::Duration = std::time::Duration::from_secs(5);

/// Reminders for handovers nobody took, and the timeout return to the bot.
pub(crate) async fn sweep(rt: &Runtime) -> Result<()> {
    let hours = rt.config.spec.handover.auto_return_hours;
    let expired: Vec<Uuid> = sqlx::query_scalar(
        "SELECT id FROM handovers WHERE status IN ('pending', 'notified', 'active')
           AND created_at < now() - make_interval(hours => $1)",
    )
    .bind(hours as i32)
    .fetch_all(&rt.db)
    .await?;
    for id in expired {
        let notes = super::timeout_note(hours);
        let how = Closing {
            status: "timeout",
            resolution: None,
            notes: Some(&notes),
            manager: None,
        };
        close(&rt.db, &rt.cache, id, &how).await?;
        tracing::info!(handover = %id, "handover timed out: the bot answers again");
    }
    for (i, after) in rt.config.tuning.handover_reminders.iter().enumerate() {
        let mut tx = rt.db.begin().await?;
        let due: Vec<Uuid> = sqlx::query_scalar(
            "UPDATE handovers SET reminders_sent = $1 + 1
             WHERE status IN ('pending', 'notified') AND reminders_sent = $1
               AND created_at < now() - make_interval(secs => $2)
             RETURNING id",
        )
        .bind(i as i32)
        .bind(after.as_secs_f64())
        .fetch_all(&mut *tx)
        .await?;
        let minutes = after.as_secs().div_ceil(60);
        for id in due {
            queue_notice(
                &mut *tx,
                id,
                Kind::Reminder,
                Some(&format!("ждёт менеджера больше {minutes} мин")),
                &format!("reminder:{id}:{i}"),
            )
            .await?;
        }
        tx.commit().await?;
    }
    Ok(())
}

/// Delivers one due notice; false when none is due. A notice waits for the
/// earlier ones of its handover (the card creates the topic the rest go to).
async fn deliver_due(rt: &Runtime) -> Result<bool> {
    let row = sqlx::query(
        "UPDATE manager_outbox SET status = 'sending', attempts = attempts + 1,
                                   next_attempt_at = now() + make_interval(secs => $1)
         WHERE id = (SELECT m.id FROM manager_outbox m
                     WHERE m.status IN ('pending', 'sending') AND m.next_attempt_at <= now()
                       AND NOT EXISTS (SELECT 1 FROM manager_outbox e WHERE e.handover_id = m.handover_id
                                       AND e.id < m.id AND e.status IN ('pending', 'sending'))
                     ORDER BY m.id FOR UPDATE SKIP LOCKED LIMIT 1)
         RETURNING id, handover_id, kind, body, idempotency_key, attempts",
    )
    .bind(rt.config.tuning.lease.as_secs_f64())
    .fetch_optional(&rt.db)
    .await?;
    let Some(row) = row else {
        return Ok(false);
    };
    let id: i64 = row.try_get("id")?;
    let handover: Uuid = row.try_get("handover_id")?;
    let key: String = row.try_get("idempotency_key")?;
    let attempts: i32 = row.try_get("attempts")?;
    let kind = Kind::parse(&row.try_get::<String, _>("kind")?);
    let body: Value = row.try_get("body")?;
    let span = info_span!("notify", tenant = %rt.config.client_name, handover = %handover, key = %key, attempt = attempts);
    async move {
        let (Some(kind), Some(view)) = (kind, view(&rt.db, &rt.pii, handover).await?) else {
            sqlx::query("UPDATE manager_outbox SET status = 'failed', last_error = 'the handover is gone' WHERE id = $1")
                .bind(id)
                .execute(&rt.db)
                .await?;
            return Ok(());
        };
        let adapter_type: String =
            sqlx::query_scalar("SELECT adapter_type FROM handovers WHERE id = $1")
                .bind(handover)
                .fetch_one(&rt.db)
                .await?;
        let notice = Notice {
            kind,
            card: render_card(&rt.config.spec.handover.notify_template, &view),
            text: body.get("text").and_then(Value::as_str).map(str::to_owned),
            key: key.clone(),
            reply_url: rt.config.public_url.as_deref().map(|base| {
                format!(
                    "{}/t/{}/handover/{handover}/reply",
                    base.trim_end_matches('/'),
                    rt.config.client_name
                )
            }),
            handover: view,
        };
        let mut used = adapter_type.clone();
        let mut primary_error = None;
        let mut result = match rt.managers.adapter(&adapter_type) {
            Some(a) => a.deliver(&notice).await.map_err(|e| e.to_string()),
            None => Err(format!("no `{adapter_type}` adapter is configured")),
        };
        // The card decides whether anyone hears of the customer: try the fallback.
        if let (Err(e), Kind::Card, Some(fallback)) = (&result, kind, rt.managers.fallback) {
            let fallback = super::adapter_name(fallback);
            if fallback != adapter_type
                && let Some(a) = rt.managers.adapter(&fallback)
            {
                tracing::warn!(error = %e, %fallback, "handover adapter failed: trying the fallback");
                primary_error = Some(e.clone());
                result = a.deliver(&notice).await.map_err(|e| e.to_string());
                used = fallback;
            }
        }
        match result {
            Ok(delivered) => {
                let mut tx = rt.db.begin().await?;
                sqlx::query("UPDATE manager_outbox SET status = 'sent', sent_at = now(), last_error = NULL WHERE id = $1")
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
                let response = (kind == Kind::Card).then(|| {
                    json!({"adapter": used, "response": delivered.response, "primary_error": primary_error})
                });
                sqlx::query(
                    "UPDATE handovers SET external_ref = coalesce($2, external_ref), adapter_type = $3,
                            adapter_response = coalesce($4, adapter_response),
                            status = CASE WHEN status = 'pending' THEN 'notified' ELSE status END,
                            notified_at = coalesce(notified_at, now())
                     WHERE id = $1",
                )
                .bind(handover)
                .bind(&delivered.external_ref)
                .bind(&used)
                .bind(response)
                .execute(&mut *tx)
                .await?;
                tx.commit().await?;
                tracing::info!(kind = kind.as_str(), adapter = %used, "managers notified");
            }
            Err(error) => {
                let error = match &primary_error {
                    Some(p) => format!("{adapter_type}: {p}; {used}: {error}"),
                    None => error,
                };
                let give_up =
                    record_failure(rt, Queue::ManagerOutbox, id, attempts, &error).await?;
                tracing::warn!(give_up, error = %error, "notifying managers failed");
                if kind == Kind::Card {
                    sqlx::query("UPDATE handovers SET adapter_response = $2 WHERE id = $1")
                        .bind(handover)
                        .bind(json!({"error": error, "attempts": attempts}))
                        .execute(&rt.db)
                        .await?;
                }
                let level = if give_up || kind == Kind::Card {
                    Level::Critical
                } else {
                    Level::Warning
                };
                rt.report(
                    "handover",
                    level,
                    "notify_failed",
                    &error,
                    Some(json!({"handover_id": handover, "kind": kind.as_str(), "attempts": attempts})),
                )
                .await;
            }
        }
        Ok::<_, anyhow::Error>(())
    }
    .instrument(span)
    .await?;
    Ok(true)
}
