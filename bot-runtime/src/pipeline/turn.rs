//! One turn: the customer's claimed messages are normalized, stored and
//! decided on; the reply, the handover or silence is committed at once.

use anyhow::Result;
use serde_json::json;
use sqlx::types::chrono::Utc;
use uuid::Uuid;

use super::claim::Claimed;
use super::commit::{commit_reply, finish_silently, forward_to_managers};
use super::respond::{Decision, decide, default_language, normalize};
use super::store::{conversation, memory, remember, upsert_user};
use crate::audit::{self, Level};
use crate::channels::{self, Inbound};
use crate::decide::{Language, ReplyKind};
use crate::handover;
use crate::pii::log_tag;
use crate::runtime::Runtime;
use crate::texts::{Phrase, phrase};

pub(super) async fn handle(rt: &Runtime, rows: &[Claimed]) -> Result<()> {
    let mut messages = Vec::new();
    for row in rows {
        match channels::parse(row.channel, &row.payload) {
            Ok(m) => messages.push(m),
            // The gateway validated it; a row that no longer parses is kept for replay.
            Err(why) => {
                rt.report(
                    "pipeline",
                    Level::Warning,
                    "unparseable",
                    &why.to_string(),
                    Some(row.payload.clone()),
                )
                .await
            }
        }
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let (ours, messages): (Vec<Inbound>, Vec<Inbound>) =
        messages.into_iter().partition(|m| m.from_me);
    for m in &ours {
        handover::business_account::from_business_number(rt, m).await?;
    }
    let Some(last) = messages.last().cloned() else {
        let status = if ours.is_empty() { "ignored" } else { "done" };
        sqlx::query("UPDATE inbox SET status = $2, processed_at = now() WHERE id = ANY($1)")
            .bind(&ids)
            .bind(status)
            .execute(&rt.db)
            .await?;
        return Ok(());
    };
    tracing::info!(user = %log_tag(&rt.pii, &last.sender), events = messages.len(), "turn");
    let external_ids: Vec<String> = messages.iter().map(|m| m.message_id.clone()).collect();
    let mut texts = Vec::new();
    let mut understood = false;
    for m in &messages {
        let (text, ok) = normalize(rt, m).await;
        understood |= ok;
        texts.push(text);
    }

    // Store the customer, the conversation and the messages.
    let mut tx = rt.db.begin().await?;
    let (user_id, user_language) = upsert_user(&mut tx, rt, &last).await?;
    let conv = conversation(&mut tx, rt, user_id, last.channel).await?;
    for (m, text) in messages.iter().zip(&texts) {
        let meta =
            json!({"media": m.media, "sender_name": m.sender_name, "timestamp": m.timestamp});
        let stored: Option<Uuid> = sqlx::query_scalar(
            "INSERT INTO messages (conversation_id, role, content, external_id, metadata)
             VALUES ($1, 'user', $2, $3, $4) ON CONFLICT (external_id) DO NOTHING RETURNING id",
        )
        .bind(conv.id)
        .bind(text)
        .bind(&m.message_id)
        .bind(meta)
        .fetch_optional(&mut *tx)
        .await?;
        if stored.is_some() {
            audit::record(
                &mut *tx,
                "message_in",
                "user",
                json!({"conversation_id": conv.id, "message_id": m.message_id}),
            )
            .await?;
        }
    }
    sqlx::query("UPDATE conversations SET last_message_at = now() WHERE id = $1")
        .bind(conv.id)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;

    // Answered before a crash: finish without answering twice.
    let answered: bool =
        sqlx::query_scalar("SELECT EXISTS (SELECT 1 FROM outbox WHERE idempotency_key = ANY($1))")
            .bind(&external_ids)
            .fetch_one(&rt.db)
            .await?;
    if answered || conv.status == "handover" {
        if conv.status == "handover" && !answered {
            tracing::info!("a human is handling the conversation: the bot stays silent");
            forward_to_managers(rt, conv.id, &messages, &texts).await?;
        }
        finish_silently(rt, &ids, &external_ids).await?;
        return Ok(());
    }

    let text = texts.join("\n");
    let (history, cached) = memory(rt, conv.id, &external_ids).await?;
    // The customer's app language (Telegram) until their words tell.
    let hinted = last
        .language_hint
        .as_deref()
        .and_then(|code| Language::from_code(code.split(['-', '_']).next().unwrap_or(code)));
    let user_language = user_language
        .as_deref()
        .and_then(Language::from_code)
        .or(hinted);
    let decision = if messages.iter().all(|m| m.start) {
        // Telegram's /start: the customer opened the bot.
        let language = user_language.unwrap_or_else(|| default_language(rt));
        Decision {
            reply: phrase(Phrase::Greeting, language).into(),
            intent: "greeting".into(),
            confidence: 1.0,
            language,
            action: ReplyKind::Greeting,
            handover: None,
            model: None,
            facts: 0,
        }
    } else if understood {
        decide(rt, conv.id, &text, &history, user_language).await?
    } else {
        let language = user_language.unwrap_or_else(|| default_language(rt));
        Decision {
            reply: phrase(Phrase::VoiceNotUnderstood, language).into(),
            intent: "unclear".into(),
            confidence: 0.0,
            language,
            action: ReplyKind::VoiceNotUnderstood,
            handover: None,
            model: None,
            facts: 0,
        }
    };
    commit_reply(
        rt,
        &conv,
        user_id,
        &last,
        &ids,
        &external_ids,
        &decision,
        &history,
        &text,
    )
    .await?;

    let first = rows
        .iter()
        .map(|r| r.received_at)
        .min()
        .unwrap_or_else(Utc::now);
    rt.metrics
        .response_time((Utc::now() - first).num_milliseconds() as f64 / 1000.0);
    remember(rt, conv.id, history, cached, &text, &decision.reply).await;
    Ok(())
}
