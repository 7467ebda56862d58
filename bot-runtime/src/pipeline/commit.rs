//! Committing a turn: the reply queued in the outbox with the stored
//! messages and audit in one transaction, or the turn finished silently while
//! a manager holds the conversation.

use anyhow::Result;
use serde_json::json;
use uuid::Uuid;

use super::claim::mark_done;
use super::respond::{Decision, context_summary};
use super::store::Conversation;
use crate::channels::{Inbound, Outgoing};
use crate::llm::Turn;
use crate::runtime::Runtime;
use crate::{handover, outbox};

/// Where the answer to a customer's message goes: back on its channel.
pub(super) fn recipient(m: &Inbound) -> outbox::Recipient<'_> {
    outbox::Recipient {
        channel: m.channel,
        address: &m.sender,
    }
}

/// While a human holds the conversation, the customer's messages go to the
/// managers (into the Telegram topic, the CRM lead, the client's webhook).
pub(super) async fn forward_to_managers(
    rt: &Runtime,
    conversation_id: Uuid,
    messages: &[Inbound],
    texts: &[String],
) -> Result<()> {
    let Some(handover) = handover::open_of(&rt.db, conversation_id).await? else {
        return Ok(());
    };
    for (m, text) in messages.iter().zip(texts) {
        handover::queue_notice(
            &rt.db,
            handover,
            handover::adapter::Kind::CustomerMessage,
            Some(text),
            &format!("in:{}", m.message_id),
        )
        .await?;
    }
    rt.wakes.managers.notify_one();
    Ok(())
}

pub(super) async fn finish_silently(
    rt: &Runtime,
    ids: &[i64],
    external_ids: &[String],
) -> Result<()> {
    let mut tx = rt.db.begin().await?;
    sqlx::query("UPDATE messages SET processed_at = coalesce(processed_at, now()) WHERE external_id = ANY($1)")
        .bind(external_ids)
        .execute(&mut *tx)
        .await?;
    mark_done(&mut tx, ids).await?;
    tx.commit().await?;
    Ok(())
}

#[allow(clippy::too_many_arguments)]
pub(super) async fn commit_reply(
    rt: &Runtime,
    conv: &Conversation,
    user_id: Uuid,
    last: &Inbound,
    ids: &[i64],
    external_ids: &[String],
    d: &Decision,
    history: &[Turn],
    text: &str,
) -> Result<()> {
    let mut tx = rt.db.begin().await?;
    let meta = json!({"action": d.action.as_str(), "model": d.model, "facts": d.facts});
    let reply_id: Uuid = sqlx::query_scalar(
        "INSERT INTO messages (conversation_id, role, content, intent, confidence, language, metadata, processed_at)
         VALUES ($1, 'assistant', $2, $3, $4, $5, $6, now()) RETURNING id",
    )
    .bind(conv.id)
    .bind(&d.reply)
    .bind(&d.intent)
    .bind(storable(d.confidence))
    .bind(d.language.code())
    .bind(meta)
    .fetch_one(&mut *tx)
    .await?;
    let reply = Outgoing::Text {
        text: d.reply.clone(),
    };
    outbox::queue(
        &mut *tx,
        &rt.pii,
        Some(conv.id),
        Some(reply_id),
        recipient(last),
        &reply,
        &last.message_id,
    )
    .await?;
    if let Some((trigger, value)) = &d.handover {
        let request = handover::Request {
            conversation_id: conv.id,
            trigger: *trigger,
            value,
            context_summary: context_summary(history, text),
            adapter: rt.config.spec.handover.adapter.adapter_type,
            language: d.language.code(),
        };
        if handover::open(&mut tx, &request).await? {
            rt.metrics.handover(trigger.as_str());
        }
    }
    sqlx::query("UPDATE messages SET processed_at = now(), intent = $2, confidence = $3, language = $4 WHERE external_id = ANY($1)")
        .bind(external_ids)
        .bind(&d.intent)
        .bind(storable(d.confidence))
        .bind(d.language.code())
        .execute(&mut *tx)
        .await?;
    sqlx::query("UPDATE users SET language = $2 WHERE id = $1")
        .bind(user_id)
        .bind(d.language.code())
        .execute(&mut *tx)
        .await?;
    mark_done(&mut tx, ids).await?;
    tx.commit().await?;
    rt.wakes.outbox.notify_one();
    rt.wakes.managers.notify_one();
    tracing::info!(intent = %d.intent, action = d.action.as_str(), "reply queued");
    Ok(())
}

/// A confidence as the `messages` table takes it (0..=1): a cosine of two
/// equal vectors can come out a hair above 1, and nothing may fail a turn
/// over that.
fn storable(confidence: f32) -> f32 {
    if confidence.is_finite() {
        confidence.clamp(0.0, 1.0)
    } else {
        0.0
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn confidences_are_stored_within_the_tables_range() {
        use super::storable;
        assert_eq!(storable(1.000_000_1), 1.0);
        assert_eq!(storable(-0.2), 0.0);
        assert_eq!(storable(f32::NAN), 0.0);
        assert_eq!(storable(f32::INFINITY), 0.0);
        assert_eq!(storable(0.42), 0.42);
    }
}
