//! Handover to a human (docs/architecture.md, "Handover").
//!
//! The pipeline opens a handover (at most one open per conversation) and
//! queues the card for managers in the same transaction; the notifier
//! (`notifier.rs`) delivers the tenant's notices through its adapter, or the
//! fallback adapter when that fails. Managers act through Telegram buttons and
//! topic messages (`updates.rs`) or the reply webhook: take (first wins),
//! reply (relayed to the customer through the outbox, exactly once), return to
//! the bot / resolve. States: pending → notified → active → resolved | timeout.

pub mod adapter;
pub mod business_account;
pub mod crm;
pub mod email;
pub mod notifier;
pub mod telegram;
pub mod updates;
pub mod webhook;

use std::sync::Arc;

use serde_json::json;
use sqlx::{PgConnection, PgPool, Row};
use truffles_crds::client::HandoverAdapterType;
use uuid::Uuid;

use crate::audit;
use crate::channels::{Channel, Outgoing};
use crate::decide::Trigger;
use crate::fetch::Fetcher;
use crate::outbox;
use crate::pii::Pii;
use adapter::{
    Adapter, AdapterConfig, Broken, HandoverView, Kind, Manager, Resolution, WhatsappWeb,
};
use telegram::Telegram;

pub struct Request<'a> {
    pub conversation_id: Uuid,
    pub trigger: Trigger,
    pub value: &'a str,
    pub context_summary: String,
    pub adapter: HandoverAdapterType,
    pub language: &'a str,
}

pub fn adapter_name(adapter: HandoverAdapterType) -> String {
    serde_json::to_value(adapter)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "unknown".into())
}

/// Opens a handover unless one is open, and queues the managers' card;
/// returns whether a new one was opened. WhatsApp Web needs no notice
/// (managers answer from the same number), so it starts `notified`.
pub async fn open(tx: &mut PgConnection, req: &Request<'_>) -> sqlx::Result<bool> {
    let notify = req.adapter != HandoverAdapterType::WhatsappWeb;
    let status = if notify { "pending" } else { "notified" };
    let inserted: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO handovers (conversation_id, trigger_type, trigger_value, context_summary, adapter_type, status, notified_at, language)
         VALUES ($1, $2, $3, $4, $5, $6, CASE WHEN $6 = 'notified' THEN now() END, $7)
         ON CONFLICT (conversation_id) WHERE status IN ('pending', 'notified', 'active') DO NOTHING
         RETURNING id",
    )
    .bind(req.conversation_id)
    .bind(req.trigger.as_str())
    .bind(req.value)
    .bind(&req.context_summary)
    .bind(adapter_name(req.adapter))
    .bind(status)
    .bind(req.language)
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
            json!({"handover_id": id, "conversation_id": req.conversation_id, "event": "opened", "trigger": req.trigger.as_str(), "value": req.value}),
        )
        .await?;
        if notify {
            queue_notice(&mut *tx, id, Kind::Card, None, &format!("card:{id}")).await?;
        }
    }
    Ok(inserted.is_some())
}

/// Queues a notice for the managers; the same key queues once.
pub async fn queue_notice<'e>(
    db: impl sqlx::PgExecutor<'e>,
    handover: Uuid,
    kind: Kind,
    text: Option<&str>,
    key: &str,
) -> sqlx::Result<()> {
    sqlx::query(
        "INSERT INTO manager_outbox (handover_id, kind, body, idempotency_key)
         VALUES ($1, $2, $3, $4) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(handover)
    .bind(kind.as_str())
    .bind(json!({"text": text}))
    .bind(key)
    .execute(db)
    .await?;
    Ok(())
}

/// The open handover of a conversation, if any.
pub async fn open_of(db: &PgPool, conversation_id: Uuid) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM handovers WHERE conversation_id = $1 AND status IN ('pending', 'notified', 'active')",
    )
    .bind(conversation_id)
    .fetch_optional(db)
    .await
}

/// The handover an adapter handle (Telegram topic, card message) belongs to:
/// the open one, else the most recent.
pub async fn by_external_ref(db: &PgPool, external_ref: &str) -> sqlx::Result<Option<Uuid>> {
    sqlx::query_scalar(
        "SELECT id FROM handovers WHERE external_ref = $1
         ORDER BY (status IN ('pending', 'notified', 'active')) DESC, created_at DESC LIMIT 1",
    )
    .bind(external_ref)
    .fetch_optional(db)
    .await
}

/// A handover as managers see it (phone and name decrypted only for this).
pub async fn view(db: &PgPool, pii: &Pii, id: Uuid) -> sqlx::Result<Option<HandoverView>> {
    let row = sqlx::query(
        "SELECT h.id, h.conversation_id, h.status, h.trigger_type, h.trigger_value, h.context_summary,
                h.language, h.manager_name, h.external_ref, c.channel, u.name, u.phone_encrypted
         FROM handovers h JOIN conversations c ON c.id = h.conversation_id JOIN users u ON u.id = c.user_id
         WHERE h.id = $1",
    )
    .bind(id)
    .fetch_optional(db)
    .await?;
    let Some(r) = row else {
        return Ok(None);
    };
    let phone: Option<Vec<u8>> = r.try_get("phone_encrypted")?;
    Ok(Some(HandoverView {
        id: r.try_get("id")?,
        conversation_id: r.try_get("conversation_id")?,
        status: r.try_get("status")?,
        trigger: r.try_get("trigger_type")?,
        trigger_value: r.try_get("trigger_value")?,
        context: r
            .try_get::<Option<String>, _>("context_summary")?
            .unwrap_or_default(),
        user_name: r.try_get("name")?,
        phone: phone.and_then(|p| pii.decrypt(&p).ok()),
        channel: r.try_get("channel")?,
        language: r.try_get("language")?,
        manager_name: r.try_get("manager_name")?,
        external_ref: r.try_get("external_ref")?,
    }))
}

/// A handover's state, read under its row lock before a transition.
struct Locked {
    status: String,
    manager_id: Option<String>,
    manager_name: Option<String>,
    conversation_id: Uuid,
}

impl Locked {
    fn is_open(&self) -> bool {
        matches!(self.status.as_str(), "pending" | "notified" | "active")
    }

    /// The name of the manager who holds it, when that is not `manager`.
    fn held_by_other(&self, manager: &Manager) -> Option<String> {
        (self.status == "active" && self.manager_id.as_deref() != Some(manager.id.as_str()))
            .then(|| self.manager_name.clone().unwrap_or_default())
    }
}

async fn lock(tx: &mut PgConnection, id: Uuid) -> sqlx::Result<Option<Locked>> {
    let row = sqlx::query(
        "SELECT status, manager_id, manager_name, conversation_id FROM handovers WHERE id = $1 FOR UPDATE",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    row.map(|r| {
        Ok(Locked {
            status: r.try_get("status")?,
            manager_id: r.try_get("manager_id")?,
            manager_name: r.try_get("manager_name")?,
            conversation_id: r.try_get("conversation_id")?,
        })
    })
    .transpose()
}

/// What "Take" did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Taken {
    Taken,
    AlreadyYours,
    /// Another manager holds it (their name).
    Held(String),
    Closed,
    Unknown,
}

/// The first manager to take a handover owns it.
pub async fn take(db: &PgPool, id: Uuid, manager: &Manager) -> sqlx::Result<Taken> {
    let mut tx = db.begin().await?;
    let Some(h) = lock(&mut tx, id).await? else {
        return Ok(Taken::Unknown);
    };
    let outcome = match h.status.as_str() {
        _ if !h.is_open() => Taken::Closed,
        "pending" | "notified" => {
            sqlx::query(
                "UPDATE handovers SET status = 'active', manager_id = $2, manager_name = $3,
                        notified_at = coalesce(notified_at, now()) WHERE id = $1",
            )
            .bind(id)
            .bind(&manager.id)
            .bind(&manager.name)
            .execute(&mut *tx)
            .await?;
            audit::record(
                &mut *tx,
                "handover",
                "admin",
                json!({"handover_id": id, "event": "taken", "manager_id": manager.id}),
            )
            .await?;
            Taken::Taken
        }
        _ => match h.held_by_other(manager) {
            Some(owner) => Taken::Held(owner),
            None => Taken::AlreadyYours,
        },
    };
    tx.commit().await?;
    Ok(outcome)
}

/// How a handover ends.
pub struct Closing<'a> {
    /// `resolved` (a manager) or `timeout`.
    pub status: &'a str,
    pub resolution: Option<Resolution>,
    pub notes: Option<&'a str>,
    /// Who closed it; `None` for the timeout.
    pub manager: Option<&'a Manager>,
}

/// What closing did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Closed {
    Closed,
    /// Another manager holds it (their name); only they can close it.
    Held(String),
    AlreadyClosed,
    Unknown,
}

/// Returns the conversation to the bot, tells the managers' side, and drops
/// the cached memory (the human part of the conversation is only in PostgreSQL).
pub async fn close(
    db: &PgPool,
    cache: &crate::cache::Cache,
    id: Uuid,
    how: &Closing<'_>,
) -> sqlx::Result<Closed> {
    let mut tx = db.begin().await?;
    let outcome = close_in(&mut tx, id, how).await?;
    if let Some(conversation) = outcome {
        tx.commit().await?;
        let _ = cache.delete(&format!("conversation:{conversation}")).await;
        return Ok(Closed::Closed);
    }
    // Nothing changed: say why.
    let Some(h) = lock(&mut tx, id).await? else {
        return Ok(Closed::Unknown);
    };
    Ok(match how.manager.and_then(|m| h.held_by_other(m)) {
        Some(owner) if h.is_open() => Closed::Held(owner),
        _ => Closed::AlreadyClosed,
    })
}

/// Closes an open handover within the caller's transaction; returns its
/// conversation, or `None` when it is unknown, closed or held by another manager.
async fn close_in(
    tx: &mut PgConnection,
    id: Uuid,
    how: &Closing<'_>,
) -> sqlx::Result<Option<Uuid>> {
    let Some(h) = lock(&mut *tx, id).await? else {
        return Ok(None);
    };
    let conversation = h.conversation_id;
    if !h.is_open() || how.manager.and_then(|m| h.held_by_other(m)).is_some() {
        return Ok(None);
    }
    sqlx::query(
        "UPDATE handovers SET status = $2, resolved_at = now(), resolution_type = $3, resolution_notes = $4,
                manager_id = coalesce(manager_id, $5), manager_name = coalesce(manager_name, $6)
         WHERE id = $1",
    )
    .bind(id)
    .bind(how.status)
    .bind(how.resolution.map(Resolution::as_str))
    .bind(how.notes)
    .bind(how.manager.map(|m| m.id.as_str()))
    .bind(how.manager.map(|m| m.name.as_str()))
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE conversations SET status = 'active' WHERE id = $1 AND status = 'handover'")
        .bind(conversation)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut *tx,
        "handover",
        if how.manager.is_some() {
            "admin"
        } else {
            "system"
        },
        json!({"handover_id": id, "event": how.status, "resolution": how.resolution.map(Resolution::as_str),
               "manager_id": how.manager.map(|m| m.id.as_str())}),
    )
    .await?;
    let text = match how.manager {
        Some(m) => format!(
            "{} ({})",
            m.name,
            how.resolution.map_or("закрыто", Resolution::as_str)
        ),
        None => how.notes.unwrap_or("время вышло").to_owned(),
    };
    queue_notice(
        &mut *tx,
        id,
        Kind::Closed,
        Some(&text),
        &format!("closed:{id}"),
    )
    .await?;
    Ok(Some(conversation))
}

/// What relaying a manager's message did.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Relayed {
    Queued,
    /// The same message was relayed before (a redelivered update).
    Duplicate,
    Held(String),
    Closed,
    Unknown,
}

/// Relays a manager's message to the customer through the outbox, exactly
/// once per `key`. The first manager to answer takes the handover.
pub async fn relay(
    db: &PgPool,
    pii: &Pii,
    id: Uuid,
    manager: &Manager,
    text: &str,
    key: &str,
) -> anyhow::Result<Relayed> {
    let mut tx = db.begin().await?;
    let Some(h) = lock(&mut tx, id).await? else {
        return Ok(Relayed::Unknown);
    };
    let conversation = h.conversation_id;
    if !h.is_open() {
        return Ok(Relayed::Closed);
    }
    if let Some(owner) = h.held_by_other(manager) {
        return Ok(Relayed::Held(owner));
    }
    let stored: Option<Uuid> = sqlx::query_scalar(
        "INSERT INTO messages (conversation_id, role, content, external_id, metadata, processed_at)
         VALUES ($1, 'manager', $2, $3, $4, now()) ON CONFLICT (external_id) DO NOTHING RETURNING id",
    )
    .bind(conversation)
    .bind(text)
    .bind(key)
    .bind(json!({"from": "manager", "manager_id": manager.id, "handover_id": id}))
    .fetch_optional(&mut *tx)
    .await?;
    let Some(message_id) = stored else {
        return Ok(Relayed::Duplicate);
    };
    let (address, channel): (Option<Vec<u8>>, String) = sqlx::query_as(
        "SELECT u.address_encrypted, c.channel FROM conversations c JOIN users u ON u.id = c.user_id WHERE c.id = $1",
    )
    .bind(conversation)
    .fetch_one(&mut *tx)
    .await?;
    let address = address
        .and_then(|a| pii.decrypt(&a).ok())
        .ok_or_else(|| anyhow::anyhow!("the customer's address cannot be decrypted"))?;
    outbox::queue(
        &mut *tx,
        pii,
        Some(conversation),
        Some(message_id),
        outbox::Recipient {
            channel: Channel::from_db(&channel).unwrap_or_default(),
            address: &address,
        },
        &Outgoing::Text {
            text: text.to_owned(),
        },
        key,
    )
    .await?;
    sqlx::query(
        "UPDATE handovers SET status = 'active', manager_id = coalesce(manager_id, $2),
                manager_name = coalesce(manager_name, $3), first_response_at = coalesce(first_response_at, now()),
                notified_at = coalesce(notified_at, now())
         WHERE id = $1",
    )
    .bind(id)
    .bind(&manager.id)
    .bind(&manager.name)
    .execute(&mut *tx)
    .await?;
    sqlx::query("UPDATE conversations SET last_message_at = now() WHERE id = $1")
        .bind(conversation)
        .execute(&mut *tx)
        .await?;
    audit::record(
        &mut *tx,
        "handover",
        "admin",
        json!({"handover_id": id, "event": "manager_reply", "manager_id": manager.id, "message_id": key}),
    )
    .await?;
    tx.commit().await?;
    Ok(Relayed::Queued)
}

/// Returns a human-held conversation to the bot when its handover is older
/// than `auto_return_hours` (checked when the customer writes; the notifier
/// sweeps the rest).
pub async fn expire(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    auto_return_hours: u32,
) -> sqlx::Result<bool> {
    let expired: Option<Uuid> = sqlx::query_scalar(
        "SELECT id FROM handovers
         WHERE conversation_id = $1 AND status IN ('pending', 'notified', 'active')
           AND created_at < now() - make_interval(hours => $2)",
    )
    .bind(conversation_id)
    .bind(auto_return_hours as i32)
    .fetch_optional(&mut *tx)
    .await?;
    let Some(id) = expired else {
        return Ok(false);
    };
    let notes = timeout_note(auto_return_hours);
    let how = Closing {
        status: "timeout",
        resolution: None,
        notes: Some(&notes),
        manager: None,
    };
    Ok(close_in(tx, id, &how).await?.is_some())
}

/// Why a handover went back to the bot by itself (for the managers).
pub fn timeout_note(hours: u32) -> String {
    format!("менеджер не ответил за {hours} ч")
}

/// The tenant's adapters (primary and fallback), built once at start. An
/// adapter that cannot be built (a missing Secret key) fails every delivery
/// with the reason, so the fallback takes over and the reason is recorded.
pub struct Managers {
    adapters: Vec<Arc<dyn Adapter>>,
    pub fallback: Option<HandoverAdapterType>,
    /// The managers' Telegram group, whose updates the runtime reads.
    pub telegram: Option<Arc<Telegram>>,
    /// Keys that authenticate the reply webhook: signing keys (HMAC) and
    /// `replyToken`s (bearer, for CRMs that cannot sign).
    pub signing_keys: Vec<Vec<u8>>,
    pub reply_tokens: Vec<String>,
}

/// Adapters' settings as the runtime reads them.
#[derive(Clone, Debug)]
pub struct HandoverConfig {
    pub primary: AdapterConfig,
    pub fallback: Option<AdapterConfig>,
    /// Messages per minute to a managers' Telegram group.
    pub telegram_per_minute: u32,
}

impl Managers {
    pub fn build(config: &HandoverConfig, fetch: &Fetcher, tenant: &str) -> Self {
        let mut managers = Self {
            adapters: Vec::new(),
            fallback: config.fallback.as_ref().map(|f| f.spec.adapter_type),
            telegram: None,
            signing_keys: Vec::new(),
            reply_tokens: Vec::new(),
        };
        for c in std::iter::once(&config.primary).chain(config.fallback.as_ref()) {
            let kind = c.spec.adapter_type;
            if managers.adapters.iter().any(|a| a.kind() == kind) {
                continue;
            }
            if let Some(key) = c.secrets.get("signingKey").filter(|k| !k.is_empty()) {
                managers.signing_keys.push(key.as_bytes().to_vec());
            }
            if let Some(token) = c.secrets.get("replyToken").filter(|k| !k.is_empty()) {
                managers.reply_tokens.push(token.clone());
            }
            let built: Result<Arc<dyn Adapter>, adapter::AdapterError> = match kind {
                HandoverAdapterType::Telegram => {
                    Telegram::new(c, config.telegram_per_minute).map(|t| {
                        let t = Arc::new(t);
                        managers.telegram = Some(t.clone());
                        t as Arc<dyn Adapter>
                    })
                }
                HandoverAdapterType::Webhook | HandoverAdapterType::Custom => {
                    webhook::Webhook::new(c, fetch.clone(), tenant).map(|w| Arc::new(w) as _)
                }
                HandoverAdapterType::Email => email::Email::new(c).map(|e| Arc::new(e) as _),
                HandoverAdapterType::Bitrix
                | HandoverAdapterType::Amocrm
                | HandoverAdapterType::Hubspot => {
                    crm::Crm::new(c, fetch.clone()).map(|c| Arc::new(c) as _)
                }
                HandoverAdapterType::WhatsappWeb => Ok(Arc::new(WhatsappWeb) as _),
            };
            managers.adapters.push(built.unwrap_or_else(|e| {
                tracing::error!(adapter = %adapter_name(kind), error = %e, "handover adapter not usable");
                Arc::new(Broken {
                    kind,
                    error: e.to_string(),
                })
            }));
        }
        managers
    }

    pub fn adapter(&self, name: &str) -> Option<&Arc<dyn Adapter>> {
        self.adapters
            .iter()
            .find(|a| adapter_name(a.kind()) == name)
    }
}

/// A manager answering from the business's own account holds the open
/// handover: it is active, with the first response now.
pub async fn held_by(
    tx: &mut PgConnection,
    conversation_id: Uuid,
    manager: &Manager,
) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE handovers SET status = 'active', manager_id = coalesce(manager_id, $2),
                manager_name = coalesce(manager_name, $3), first_response_at = coalesce(first_response_at, now())
         WHERE conversation_id = $1 AND status IN ('pending', 'notified', 'active')",
    )
    .bind(conversation_id)
    .bind(&manager.id)
    .bind(&manager.name)
    .execute(tx)
    .await?;
    Ok(())
}
