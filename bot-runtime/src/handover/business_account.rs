//! WhatsApp Web and the Instagram app: a manager answering from the
//! business's own account holds the conversation (a manual handover), so the
//! bot stays silent; `/bot` from that account hands it back.

use anyhow::Result;
use serde_json::json;
use uuid::Uuid;

use crate::channels::Inbound;
use crate::decide::Trigger;
use crate::pipeline::respond::default_language;
use crate::pipeline::store::conversation;
use crate::runtime::Runtime;

/// A message sent from the business's own account (WhatsApp Web, the
/// Instagram app): a manager is talking, so the conversation is human-held
/// and the bot stays silent; `/bot` from that account hands it back. The
/// channel's echo of what the bot itself sent (or of one part of it) is
/// recognised by its text and ignored.
pub async fn from_business_number(rt: &Runtime, m: &Inbound) -> Result<()> {
    let text = m
        .text
        .clone()
        .or_else(|| m.media.as_ref().and_then(|x| x.caption.clone()))
        .unwrap_or_else(|| "[медиа]".into());
    let user: Option<Uuid> =
        sqlx::query_scalar("SELECT id FROM users WHERE channel = $2 AND remote_jid = $1")
            .bind(rt.pii.hash(&m.sender))
            .bind(m.channel.as_str())
            .fetch_optional(&rt.db)
            .await?;
    // A message to someone who never wrote to the bot: nothing to hold.
    let Some(user) = user else {
        return Ok(());
    };
    let manager = super::adapter::Manager {
        id: "whatsapp_web".into(),
        name: "WhatsApp Web".into(),
    };
    let mut tx = rt.db.begin().await?;
    let conv = conversation(&mut tx, rt, user, m.channel).await?;
    if text.trim() == "/bot" {
        tx.commit().await?;
        if let Some(open) = super::open_of(&rt.db, conv.id).await? {
            let how = super::Closing {
                status: "resolved",
                resolution: None,
                notes: Some("/bot"),
                manager: Some(&manager),
            };
            super::close(&rt.db, &rt.cache, open, &how).await?;
        }
        return Ok(());
    }
    let echo: bool = sqlx::query_scalar(
        "SELECT EXISTS (SELECT 1 FROM outbox WHERE conversation_id = $1
                        AND strpos(payload->>'text', $2) > 0
                        AND created_at > now() - interval '1 hour')",
    )
    .bind(conv.id)
    .bind(&text)
    .fetch_one(&mut *tx)
    .await?;
    if echo {
        return Ok(());
    }
    let request = super::Request {
        conversation_id: conv.id,
        trigger: Trigger::Manual,
        value: "whatsapp_web",
        context_summary: String::new(),
        // Nobody to notify: the manager is already talking.
        adapter: truffles_crds::client::HandoverAdapterType::WhatsappWeb,
        language: default_language(rt).code(),
    };
    if super::open(&mut tx, &request).await? {
        rt.metrics.handover(Trigger::Manual.as_str());
    }
    super::held_by(&mut tx, conv.id, &manager).await?;
    sqlx::query(
        "INSERT INTO messages (conversation_id, role, content, external_id, metadata, processed_at)
         VALUES ($1, 'manager', $2, $3, $4, now()) ON CONFLICT (external_id) DO NOTHING",
    )
    .bind(conv.id)
    .bind(&text)
    .bind(&m.message_id)
    .bind(json!({"from": "manager", "manager_id": manager.id}))
    .execute(&mut *tx)
    .await?;
    tx.commit().await?;
    tracing::info!("a manager writes from the business number: the bot stays silent");
    Ok(())
}
