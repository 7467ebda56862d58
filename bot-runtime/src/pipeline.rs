//! The message pipeline (SPEC steps 2–8): claim a customer's stored events,
//! normalize, remember, decide, answer through the outbox. Every step is
//! idempotent, so a runtime killed at any point is finished by the next one.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};
use tracing::{Instrument, info_span};
use uuid::Uuid;

use crate::audit::{self, Level};
use crate::channels::{self, Channel, Inbound, MediaKind, Outgoing};
use crate::decide::{self, Action, Classification, Language};
use crate::llm::{LlmError, Turn};
use crate::pii::log_tag;
use crate::runtime::Runtime;
use crate::texts::{Phrase, phrase};
use crate::{handover, outbox};

/// Turns the bot remembers (SPEC: last 10 messages).
const MEMORY_TURNS: usize = 10;
const MEMORY_TTL: Duration = Duration::from_secs(24 * 3600);
const FACTS: usize = 5;

/// One stored webhook event claimed for processing.
#[derive(Debug)]
struct Claimed {
    id: i64,
    channel: Channel,
    payload: Value,
    attempts: i32,
    received_at: DateTime<Utc>,
}

pub async fn run_worker(rt: Arc<Runtime>, worker: usize) {
    let tuning = rt.config.tuning.clone();
    loop {
        match claim(&rt).await {
            Ok(Some(rows)) => {
                process(&rt, rows).await;
                continue;
            }
            Ok(None) => {}
            Err(e) => tracing::warn!(worker, error = %e, "could not claim inbox events"),
        }
        tokio::select! {
            // A new event: give the customer's burst the window to complete.
            () = rt.inbox_wake.notified() => tokio::time::sleep(tuning.coalesce_window).await,
            () = tokio::time::sleep(tuning.poll_interval) => {}
        }
    }
}

/// Claims every due event of one sender whose burst has been quiet for the
/// coalescing window. Claims are serialized per tenant (a transaction-scoped
/// advisory lock), so two workers or replicas never hold the same sender.
async fn claim(rt: &Runtime) -> Result<Option<Vec<Claimed>>> {
    let tuning = &rt.config.tuning;
    let mut tx = rt.db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.inbox-claim'))")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "WITH candidate AS (
             SELECT sender FROM inbox i
             WHERE status IN ('pending', 'processing') AND next_attempt_at <= now()
               AND NOT EXISTS (SELECT 1 FROM inbox p WHERE p.sender = i.sender
                               AND p.status = 'processing' AND p.next_attempt_at > now())
             GROUP BY sender
             HAVING max(received_at) <= now() - make_interval(secs => $1)
             ORDER BY min(id) LIMIT 1)
         UPDATE inbox SET status = 'processing', attempts = attempts + 1,
                          next_attempt_at = now() + make_interval(secs => $2)
         WHERE sender = (SELECT sender FROM candidate)
           AND status IN ('pending', 'processing') AND next_attempt_at <= now()
         RETURNING id, channel, payload, attempts, received_at",
    )
    .bind(tuning.coalesce_window.as_secs_f64())
    .bind(tuning.lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut claimed = rows
        .into_iter()
        .map(|r| {
            let channel: String = r.try_get("channel")?;
            Ok(Claimed {
                id: r.try_get("id")?,
                // The table's CHECK admits only the three.
                channel: Channel::from_db(&channel).unwrap_or_default(),
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
                received_at: r.try_get("received_at")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
    claimed.sort_by_key(|c| c.id);
    Ok(Some(claimed))
}

async fn process(rt: &Runtime, rows: Vec<Claimed>) {
    let last_id = rows
        .last()
        .and_then(|r| channels::parse(r.channel, &r.payload).ok())
        .map(|m| m.message_id);
    let span = info_span!("turn", tenant = %rt.config.client_name, message_id = last_id.as_deref().unwrap_or(""));
    async {
        if let Err(e) = handle(rt, &rows).await {
            fail(rt, &rows, &e).await;
        }
    }
    .instrument(span)
    .await
}

/// Puts a failed turn back with backoff, or gives up after the last attempt:
/// recorded with its input for replay, and the customer gets the apology.
async fn fail(rt: &Runtime, rows: &[Claimed], error: &anyhow::Error) {
    let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(1);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let give_up = attempts >= rt.config.tuning.max_inbox_attempts;
    let message = format!("{error:#}");
    tracing::error!(attempts, give_up, error = %message, "turn failed");
    let backoff = outbox::backoff_seconds(attempts);
    let updated = sqlx::query(
        "UPDATE inbox SET status = CASE WHEN $2 THEN 'failed' ELSE 'pending' END,
                          next_attempt_at = now() + make_interval(secs => $3), last_error = $4
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .bind(give_up)
    .bind(backoff)
    .bind(&message)
    .execute(&rt.db)
    .await;
    if let Err(e) = updated {
        // The lease runs out and the turn is retried anyway.
        tracing::error!(error = %e, "could not record the failure");
    }
    let input = json!(rows.iter().map(|r| &r.payload).collect::<Vec<_>>());
    let level = if give_up {
        Level::Critical
    } else {
        Level::Warning
    };
    rt.report("pipeline", level, "turn_failed", &message, Some(input))
        .await;
    if give_up
        && let Some(last) = rows
            .last()
            .and_then(|r| channels::parse(r.channel, &r.payload).ok())
    {
        apologize(rt, &last).await;
    }
}

/// Where the answer to a customer's message goes: back on its channel.
fn recipient(m: &Inbound) -> outbox::Recipient<'_> {
    outbox::Recipient {
        channel: m.channel,
        address: &m.sender,
    }
}

/// The last step of the fallback chain when a turn cannot be processed at all.
async fn apologize(rt: &Runtime, last: &Inbound) {
    let language = last
        .text
        .as_deref()
        .and_then(decide::detect_language)
        .unwrap_or_else(|| default_language(rt));
    let apology = Outgoing::Text {
        text: phrase(Phrase::Apology, language).into(),
    };
    let queued = outbox::queue(
        &rt.db,
        &rt.pii,
        None,
        None,
        recipient(last),
        &apology,
        &last.message_id,
    )
    .await;
    match queued {
        Ok(()) => rt.outbox_wake.notify_one(),
        Err(e) => tracing::error!(error = %e, "could not queue the apology"),
    }
}

/// A customer's message as text for the bot, and whether anything in it was
/// understood (an untranscribed voice note is not).
async fn normalize(rt: &Runtime, m: &Inbound) -> (String, bool) {
    let mut parts = Vec::new();
    let mut understood = false;
    if let Some(text) = &m.text {
        parts.push(text.clone());
        understood = true;
    }
    if let Some(media) = &m.media {
        match media.kind {
            MediaKind::Voice | MediaKind::Audio => match transcribe(rt, m.channel, media).await {
                Some(text) => {
                    parts.push(text);
                    understood = true;
                }
                None => parts.push("[голосовое сообщение]".into()),
            },
            MediaKind::Image => parts.push("[фото]".into()),
            MediaKind::Video => parts.push("[видео]".into()),
            MediaKind::Document => parts.push(format!(
                "[документ: {}]",
                media.file_name.as_deref().unwrap_or("файл")
            )),
            MediaKind::Other => parts.push("[вложение]".into()),
        }
        if let Some(caption) = &media.caption
            && m.text.as_deref() != Some(caption)
        {
            parts.push(caption.clone());
            understood = true;
        }
        understood |= media.kind != MediaKind::Voice && media.kind != MediaKind::Audio;
    }
    (parts.join("\n"), understood)
}

/// Speech-to-text of a voice note; `None` when not configured or failing.
async fn transcribe(rt: &Runtime, channel: Channel, media: &channels::Media) -> Option<String> {
    const MAX_AUDIO: usize = 25 * 1024 * 1024;
    if !rt.llm.configured() {
        return None;
    }
    let audio = match (&media.url, &media.file_id, &rt.channels.telegram) {
        (Some(url), _, _) => match rt
            .http
            .get(url)
            .timeout(Duration::from_secs(20))
            .send()
            .await
            .and_then(|r| r.error_for_status())
        {
            Ok(r) => r.bytes().await.ok()?.to_vec(),
            Err(e) => {
                tracing::warn!(error = %e.without_url(), "could not download a voice message");
                return None;
            }
        },
        // Telegram names files by id; the download URL carries the bot token.
        (None, Some(id), Some(telegram)) if channel == Channel::Telegram => {
            match telegram.download(id, MAX_AUDIO as u32).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, "could not download a voice message");
                    return None;
                }
            }
        }
        _ => return None,
    };
    if audio.len() > MAX_AUDIO {
        return None;
    }
    match rt.llm.transcribe(audio, "voice.ogg").await {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(error = %e, "speech-to-text failed");
            None
        }
    }
}

struct Conversation {
    id: Uuid,
    status: String,
}

async fn upsert_user(
    tx: &mut PgConnection,
    rt: &Runtime,
    m: &Inbound,
) -> Result<(Uuid, Option<String>)> {
    let address_hash = rt.pii.hash(&m.sender);
    let channel = m.channel.as_str();
    let phone_hash = m.phone.as_deref().map(|p| rt.pii.hash(p));
    let phone_encrypted = m.phone.as_deref().map(|p| rt.pii.encrypt(p));
    let row = sqlx::query(
        "INSERT INTO users (channel, remote_jid, phone_hash, phone_encrypted, address_encrypted, name)
         VALUES ($6, $1, $2, $3, $4, $5)
         ON CONFLICT (channel, remote_jid) DO UPDATE
             SET last_active_at = now(), name = coalesce(EXCLUDED.name, users.name)
         RETURNING id, language",
    )
    .bind(address_hash)
    .bind(phone_hash)
    .bind(phone_encrypted)
    .bind(rt.pii.encrypt(&m.sender))
    .bind(&m.sender_name)
    .bind(channel)
    .fetch_one(&mut *tx)
    .await
    .context("storing the customer")?;
    Ok((row.try_get("id")?, row.try_get("language")?))
}

/// The customer's open conversation, or a new one after a long silence.
async fn conversation(
    tx: &mut PgConnection,
    rt: &Runtime,
    user_id: Uuid,
    channel: Channel,
) -> Result<Conversation> {
    let open = sqlx::query(
        "SELECT id, status, last_message_at < now() - make_interval(secs => $2) AS stale
         FROM conversations WHERE user_id = $1 AND channel = $3 AND status <> 'closed' FOR UPDATE",
    )
    .bind(user_id)
    .bind(rt.config.tuning.session_gap.as_secs_f64())
    .bind(channel.as_str())
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(row) = open {
        let id: Uuid = row.try_get("id")?;
        let mut status: String = row.try_get("status")?;
        if status == "handover"
            && handover::expire(tx, id, rt.config.spec.handover.auto_return_hours).await?
        {
            status = "active".into();
        }
        let stale: bool = row.try_get("stale")?;
        if !(stale && status == "active") {
            return Ok(Conversation { id, status });
        }
        sqlx::query("UPDATE conversations SET status = 'closed', closed_at = now() WHERE id = $1")
            .bind(id)
            .execute(&mut *tx)
            .await?;
    }
    let id: Uuid = sqlx::query_scalar(
        "INSERT INTO conversations (user_id, channel) VALUES ($1, $2) RETURNING id",
    )
    .bind(user_id)
    .bind(channel.as_str())
    .fetch_one(&mut *tx)
    .await?;
    Ok(Conversation {
        id,
        status: "active".into(),
    })
}

/// What the bot answers to a turn.
#[derive(Debug)]
struct Decision {
    reply: String,
    intent: String,
    confidence: f32,
    language: Language,
    action: &'static str,
    handover: Option<(&'static str, String)>,
    model: Option<String>,
    facts: usize,
}

async fn handle(rt: &Runtime, rows: &[Claimed]) -> Result<()> {
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
        from_business_number(rt, m).await?;
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
            action: "greet",
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
            action: "voice_not_understood",
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

async fn mark_done(tx: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE inbox SET status = 'done', processed_at = now(), last_error = NULL WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}

/// A message sent from the business's own account (WhatsApp Web, the
/// Instagram app): a manager is talking, so the conversation is human-held
/// and the bot stays silent; `/bot` from that account hands it back. The
/// channel's echo of what the bot itself sent (or of one part of it) is
/// recognised by its text and ignored.
async fn from_business_number(rt: &Runtime, m: &Inbound) -> Result<()> {
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
    let manager = handover::telegram::Manager {
        id: "whatsapp_web".into(),
        name: "WhatsApp Web".into(),
    };
    let mut tx = rt.db.begin().await?;
    let conv = conversation(&mut tx, rt, user, m.channel).await?;
    if text.trim() == "/bot" {
        tx.commit().await?;
        if let Some(open) = handover::open_of(&rt.db, conv.id).await? {
            let how = handover::Closing {
                status: "resolved",
                resolution: None,
                notes: Some("/bot"),
                manager: Some(&manager),
            };
            handover::close(&rt.db, &rt.cache, open, &how).await?;
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
    let request = handover::Request {
        conversation_id: conv.id,
        trigger: "manual",
        value: "whatsapp_web",
        context_summary: String::new(),
        // Nobody to notify: the manager is already talking.
        adapter: truffles_crds::client::HandoverAdapterType::WhatsappWeb,
        language: default_language(rt).code(),
    };
    if handover::open(&mut tx, &request).await? {
        rt.metrics.handover("manual");
    }
    sqlx::query(
        "UPDATE handovers SET status = 'active', manager_id = coalesce(manager_id, $2),
                manager_name = coalesce(manager_name, $3), first_response_at = coalesce(first_response_at, now())
         WHERE conversation_id = $1 AND status IN ('pending', 'notified', 'active')",
    )
    .bind(conv.id)
    .bind(&manager.id)
    .bind(&manager.name)
    .execute(&mut *tx)
    .await?;
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

/// While a human holds the conversation, the customer's messages go to the
/// managers (into the Telegram topic, the CRM lead, the client's webhook).
async fn forward_to_managers(
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
    rt.manager_wake.notify_one();
    Ok(())
}

async fn finish_silently(rt: &Runtime, ids: &[i64], external_ids: &[String]) -> Result<()> {
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
async fn commit_reply(
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
    let meta = json!({"action": d.action, "model": d.model, "facts": d.facts});
    let reply_id: Uuid = sqlx::query_scalar(
        "INSERT INTO messages (conversation_id, role, content, intent, confidence, language, metadata, processed_at)
         VALUES ($1, 'assistant', $2, $3, $4, $5, $6, now()) RETURNING id",
    )
    .bind(conv.id)
    .bind(&d.reply)
    .bind(&d.intent)
    .bind(d.confidence)
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
            trigger,
            value,
            context_summary: context_summary(history, text),
            adapter: rt.config.spec.handover.adapter.adapter_type,
            language: d.language.code(),
        };
        if handover::open(&mut tx, &request).await? {
            rt.metrics.handover(trigger);
        }
    }
    sqlx::query("UPDATE messages SET processed_at = now(), intent = $2, confidence = $3, language = $4 WHERE external_id = ANY($1)")
        .bind(external_ids)
        .bind(&d.intent)
        .bind(d.confidence)
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
    rt.outbox_wake.notify_one();
    rt.manager_wake.notify_one();
    tracing::info!(intent = %d.intent, action = d.action, "reply queued");
    Ok(())
}

/// The last turns for the LLM: Redis first, PostgreSQL (the source of truth)
/// when Redis misses or is down. Excludes the turn being processed.
async fn memory(
    rt: &Runtime,
    conversation_id: Uuid,
    current: &[String],
) -> Result<(Vec<Turn>, bool)> {
    let key = format!("conversation:{conversation_id}");
    if let Ok(items) = rt.cache.list(&key).await
        && !items.is_empty()
    {
        let turns: Vec<Turn> = items
            .iter()
            .filter_map(|i| serde_json::from_str(i).ok())
            .collect();
        return Ok((turns, true));
    }
    let rows = sqlx::query(
        "SELECT role, content FROM messages
         WHERE conversation_id = $1 AND content IS NOT NULL AND role <> 'system'
           AND (external_id IS NULL OR NOT external_id = ANY($2))
         ORDER BY created_at DESC, id DESC LIMIT $3",
    )
    .bind(conversation_id)
    .bind(current)
    .bind(MEMORY_TURNS as i64)
    .fetch_all(&rt.db)
    .await?;
    let mut turns = rows
        .into_iter()
        .map(|r| {
            let role: String = r.try_get("role")?;
            Ok(Turn {
                role: if role == "user" {
                    role
                } else {
                    "assistant".into()
                },
                content: r.try_get("content")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
    turns.reverse();
    Ok((turns, false))
}

/// Appends the turn to the Redis memory (rebuilt in full after a miss).
async fn remember(
    rt: &Runtime,
    conversation_id: Uuid,
    history: Vec<Turn>,
    cached: bool,
    text: &str,
    reply: &str,
) {
    let key = format!("conversation:{conversation_id}");
    let mut items = if cached { Vec::new() } else { history };
    items.push(Turn {
        role: "user".into(),
        content: text.into(),
    });
    items.push(Turn {
        role: "assistant".into(),
        content: reply.into(),
    });
    let items: Vec<String> = items
        .iter()
        .filter_map(|t| serde_json::to_string(t).ok())
        .collect();
    if !cached {
        let _ = rt.cache.delete(&key).await;
    }
    if let Err(e) = rt
        .cache
        .push_capped(&key, &items, MEMORY_TURNS as isize, MEMORY_TTL)
        .await
    {
        // A stale list would mislead the bot; without one PostgreSQL answers.
        tracing::debug!(error = %e, "conversation memory not cached");
        let _ = rt.cache.delete(&key).await;
    }
}

/// The last turns as a transcript for the manager, in the customer's words.
fn context_summary(history: &[Turn], text: &str) -> String {
    let mut lines: Vec<String> = history
        .iter()
        .rev()
        .take(6)
        .rev()
        .map(|t| {
            format!(
                "{}: {}",
                if t.role == "user" {
                    "Клиент"
                } else {
                    "Бот"
                },
                t.content
            )
        })
        .collect();
    lines.push(format!("Клиент: {text}"));
    let summary = lines.join("\n");
    summary
        .chars()
        .rev()
        .take(1500)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

fn default_language(rt: &Runtime) -> Language {
    rt.config
        .spec
        .languages
        .first()
        .and_then(|l| serde_json::to_value(l).ok())
        .and_then(|v| v.as_str().and_then(Language::from_code))
        .unwrap_or(Language::Ru)
}

fn language_name(l: Language) -> &'static str {
    match l {
        Language::Ru => "Russian",
        Language::Kk => "Kazakh",
        Language::En => "English",
    }
}

/// The tenant's prompt: the spec's override, then its prompts table.
async fn prompt(rt: &Runtime, name: &str) -> Option<String> {
    if let Some(p) = rt.config.spec.prompts.iter().find(|p| p.name == name) {
        return Some(p.text.clone());
    }
    sqlx::query_scalar("SELECT text FROM prompts WHERE name = $1 AND is_active")
        .bind(name)
        .fetch_optional(&rt.db)
        .await
        .ok()
        .flatten()
}

fn fill(template: &str, rt: &Runtime, context: &str) -> String {
    template
        .replace("{company}", &rt.config.spec.company_name)
        .replace("{context}", context)
}

/// A fixed phrase, or the tenant's own text for it in Russian.
async fn tenant_phrase(rt: &Runtime, p: Phrase, prompt_name: &str, language: Language) -> String {
    if language == Language::Ru
        && let Some(text) = prompt(rt, prompt_name).await
    {
        return text;
    }
    phrase(p, language).to_owned()
}

async fn classify(rt: &Runtime, text: &str, history: &[Turn]) -> Classification {
    if rt.llm.configured() {
        let system = prompt(rt, "classify").await.unwrap_or_else(|| {
            "Classify the customer's last message. Answer JSON {\"intent\", \"confidence\", \"language\", \"entities\"}.".into()
        });
        match rt
            .llm
            .complete(&fill(&system, rt, ""), history, text, true, Some(0.0))
            .await
        {
            Ok(c) => match decide::parse_classification(&c.text) {
                Some(parsed) => return parsed,
                None => {
                    tracing::warn!("the LLM's classification is not valid JSON; using keywords")
                }
            },
            Err(e) => tracing::warn!(error = %e, "classification falls back to keywords"),
        }
    }
    let by_keywords = decide::classify_by_keywords(text);
    // Keywords found nothing specific: ask the embedding model which example
    // phrase the message is closest to.
    if matches!(by_keywords.intent.as_str(), "question_other" | "unclear")
        && let Some(examples) = &rt.examples
    {
        match examples.classify(text).await {
            Ok(Some(c)) => return c,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "example-phrase classification failed")
            }
        }
    }
    by_keywords
}

async fn recent_clarifications(rt: &Runtime, conversation_id: Uuid) -> Result<usize> {
    let intents: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT metadata->>'action' FROM messages WHERE conversation_id = $1 AND role = 'assistant'
         ORDER BY created_at DESC LIMIT 2",
    )
    .bind(conversation_id)
    .fetch_all(&rt.db)
    .await?;
    Ok(intents
        .iter()
        .take_while(|a| a.as_deref() == Some("clarify"))
        .count())
}

async fn decide(
    rt: &Runtime,
    conversation_id: Uuid,
    text: &str,
    history: &[Turn],
    user_language: Option<Language>,
) -> Result<Decision> {
    let spec = &rt.config.spec;
    let guess = decide::detect_language(text)
        .or(user_language)
        .unwrap_or_else(|| default_language(rt));
    if let Some(keyword) = decide::handover_keyword(text, &spec.handover.keywords) {
        return Ok(Decision {
            reply: tenant_phrase(rt, Phrase::HandoverNotice, "handover_notice", guess).await,
            intent: "human_request".into(),
            confidence: 1.0,
            language: guess,
            action: "handover",
            handover: Some(("keyword", keyword)),
            model: None,
            facts: 0,
        });
    }
    let c = classify(rt, text, history).await;
    // Letters decide over the model's guess: Kazakh has letters Russian lacks.
    let language = decide::detect_language(text)
        .or(c.language)
        .or(user_language)
        .unwrap_or(guess);
    let clarifications = recent_clarifications(rt, conversation_id).await?;
    let action = decide::route(&c, &spec.handover.intents, clarifications);
    let mut d = Decision {
        reply: String::new(),
        intent: c.intent.clone(),
        confidence: c.confidence,
        language,
        action: "",
        handover: None,
        model: None,
        facts: 0,
    };
    match action {
        Action::Handover { trigger, value } => {
            d.action = "handover";
            d.reply = tenant_phrase(rt, Phrase::HandoverNotice, "handover_notice", language).await;
            d.handover = Some((trigger, value));
        }
        Action::Greet | Action::Clarify | Action::Decline => {
            // (action label, the tenant's prompt, the fixed phrase without an LLM)
            let (label, prompt_name, fallback) = match action {
                Action::Greet => ("greet", "greeting", Phrase::Greeting),
                Action::Clarify => ("clarify", "clarify", Phrase::Clarify),
                _ => ("decline", "off_topic", Phrase::OffTopic),
            };
            d.action = label;
            (d.reply, d.model) = generate(rt, prompt_name, text, history, language, fallback).await;
        }
        Action::Answer => answer(rt, text, history, &mut d).await,
    }
    Ok(d)
}

/// Greeting, clarification or decline: the LLM with the tenant's prompt, the
/// fixed phrase when the LLM is absent or failing (not worth a handover).
async fn generate(
    rt: &Runtime,
    prompt_name: &str,
    text: &str,
    history: &[Turn],
    language: Language,
    fallback: Phrase,
) -> (String, Option<String>) {
    if rt.llm.configured()
        && let Some(template) = prompt(rt, prompt_name).await
    {
        let system = format!(
            "{}\nReply in {}.",
            fill(&template, rt, ""),
            language_name(language)
        );
        if let Ok(c) = rt.llm.complete(&system, history, text, false, None).await {
            return (c.text, Some(c.model));
        }
    }
    (phrase(fallback, language).to_owned(), None)
}

/// A question: retrieve facts, answer only from them. The SPEC's fallback
/// chain ends here: primary → fallback model → the tenant's static text →
/// the hardcoded apology, with an automatic handover.
async fn answer(rt: &Runtime, text: &str, history: &[Turn], d: &mut Decision) {
    d.action = "answer";
    let facts = match rt.knowledge.search(text, FACTS).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "knowledge lookup failed");
            rt.report(
                "rag",
                Level::Warning,
                "knowledge_unavailable",
                &format!("{e:#}"),
                Some(json!({"query": text})),
            )
            .await;
            Vec::new()
        }
    };
    rt.metrics.rag(!facts.is_empty());
    d.facts = facts.len();
    if !rt.llm.configured() {
        // Retrieval-only: the best passage itself, or an honest "don't know".
        d.reply = match facts.first() {
            Some(f) => f.content.clone(),
            None => phrase(Phrase::NoAnswer, d.language).into(),
        };
        return;
    }
    let context = if facts.is_empty() {
        "(нет данных)".to_owned()
    } else {
        facts
            .iter()
            .map(|f| format!("- {}", f.content))
            .collect::<Vec<_>>()
            .join("\n")
    };
    let template = prompt(rt, "answer")
        .await
        .unwrap_or_else(|| "Answer only from these facts:\n{context}".into());
    let system = format!(
        "{}\nReply in {}.",
        fill(&template, rt, &context),
        language_name(d.language)
    );
    match rt.llm.complete(&system, history, text, false, None).await {
        Ok(c) => {
            d.reply = c.text;
            d.model = Some(c.model);
        }
        Err(e) => {
            let level = if matches!(e, LlmError::Exhausted) {
                Level::Critical
            } else {
                Level::Warning
            };
            rt.report(
                "llm",
                level,
                "llm_unavailable",
                &e.to_string(),
                Some(json!({"query": text})),
            )
            .await;
            d.action = "fallback";
            d.reply = tenant_phrase(rt, Phrase::Apology, "fallback_critical", d.language).await;
            d.handover = Some(("error", "llm_unavailable".into()));
        }
    }
}
