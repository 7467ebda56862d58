//! What the pipeline stores: the customer (user), the conversation, and the
//! conversation's memory (Redis first, PostgreSQL as the source of truth).

use std::time::Duration;

use anyhow::{Context, Result};
use sqlx::{PgConnection, Row};
use uuid::Uuid;

use crate::channels::{Channel, Inbound};
use crate::handover;
use crate::llm::Turn;
use crate::runtime::Runtime;

/// Turns the bot remembers (docs/architecture.md, "Product rules": the last 10 messages).
pub(super) const MEMORY_TURNS: usize = 10;
pub(super) const MEMORY_TTL: Duration = Duration::from_secs(24 * 3600);

pub(crate) struct Conversation {
    pub(crate) id: Uuid,
    pub(crate) status: String,
}

pub(super) async fn upsert_user(
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
pub(crate) async fn conversation(
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

/// The last turns for the LLM: Redis first, PostgreSQL (the source of truth)
/// when Redis misses or is down. Excludes the turn being processed.
pub(super) async fn memory(
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
pub(super) async fn remember(
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
