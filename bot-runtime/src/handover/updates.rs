//! Managers acting on handovers: Telegram updates (webhook or long polling)
//! and the reply webhook through which a CRM or the client's system answers.

use std::sync::Arc;

use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use serde_json::json;
use subtle::ConstantTimeEq;
use teloxide::types::Update;
use uuid::Uuid;

use super::adapter::{Manager, Resolution};
use super::telegram::{ManagerUpdate, Telegram, read_update, webhook_token};
use super::{Closed, Closing, Relayed, Taken, by_external_ref, close, relay, take};
use crate::audit::{Level, raw_input};
use crate::runtime::Runtime;

/// Long polling: for runtimes without a public HTTPS address.
pub async fn run_polling(rt: Arc<Runtime>, telegram: Arc<Telegram>) {
    let mut offset = 0;
    loop {
        match telegram.poll(offset).await {
            Ok(updates) => {
                for update in updates {
                    offset = offset.max(update.id.0 as i32 + 1);
                    if let Err(e) = handle_update(&rt, &telegram, &update).await {
                        // Telegram will not send it again: keep it for replay.
                        rt.report(
                            "handover",
                            Level::Warning,
                            "manager_update_failed",
                            &format!("{e:#}"),
                            serde_json::to_value(&update).ok(),
                        )
                        .await;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "polling the managers' Telegram group failed");
                tokio::time::sleep(crate::channels::telegram::POLL_BACKOFF).await;
            }
        }
    }
}

/// Registers the webhook, retrying until Telegram accepts it.
pub async fn register_webhook(rt: Arc<Runtime>, telegram: Arc<Telegram>, base: String) {
    let url = format!(
        "{}/t/{}/handover/telegram",
        base.trim_end_matches('/'),
        rt.config.client_name
    );
    let token = webhook_token(rt.config.webhook_secret.current());
    let mut wait = std::time::Duration::from_secs(5);
    loop {
        match telegram.set_webhook(&url, &token).await {
            Ok(()) => {
                tracing::info!("managers' Telegram webhook registered");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "registering the managers' Telegram webhook"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(std::time::Duration::from_secs(600));
    }
}

/// `POST /t/<name>/handover/telegram`: Telegram's webhook for the managers' group.
pub async fn telegram_webhook(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let Some(telegram) = rt.managers.telegram.clone() else {
        return not_found();
    };
    let token_ok = crate::channels::telegram::token_ok(
        &headers,
        rt.config.webhook_secret.current(),
        super::telegram::MANAGERS_BOT,
    );
    if !token_ok {
        return not_found();
    }
    let update: Update = match serde_json::from_slice(&body) {
        Ok(u) => u,
        Err(e) => {
            rt.report(
                "handover",
                Level::Warning,
                "malformed_update",
                &e.to_string(),
                Some(raw_input(&body)),
            )
            .await;
            return (
                StatusCode::BAD_REQUEST,
                axum::Json(json!({"error": "not a Telegram update"})),
            )
                .into_response();
        }
    };
    match handle_update(&rt, &telegram, &update).await {
        Ok(()) => StatusCode::OK.into_response(),
        // Telegram retries a failed delivery: handling is idempotent.
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "a managers' update failed");
            StatusCode::SERVICE_UNAVAILABLE.into_response()
        }
    }
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(json!({"error": "not found"})),
    )
        .into_response()
}

/// Carries out one update from the managers' group and answers the manager.
pub async fn handle_update(
    rt: &Runtime,
    telegram: &Telegram,
    update: &Update,
) -> anyhow::Result<()> {
    let Some(action) = read_update(update, telegram.chat(), telegram.use_topics()) else {
        return Ok(());
    };
    let query = match &update.kind {
        teloxide::types::UpdateKind::CallbackQuery(q) => Some(q),
        _ => None,
    };
    let manager = action.manager().clone();
    match action {
        ManagerUpdate::Take { handover, .. } => {
            let outcome = take(&rt.db, handover, &manager).await?;
            let (text, alert) = match &outcome {
                Taken::Taken => ("Разговор ваш".to_owned(), false),
                Taken::AlreadyYours => ("Разговор уже ваш".to_owned(), false),
                Taken::Held(owner) => (format!("Разговор уже взял(а) {owner}"), true),
                Taken::Closed => ("Разговор уже вернулся к боту".to_owned(), true),
                Taken::Unknown => ("Разговор не найден".to_owned(), true),
            };
            if let Some(q) = query {
                telegram.answer(q, &text, alert).await;
            }
            if outcome == Taken::Taken {
                let view = super::view(&rt.db, &rt.pii, handover).await?;
                telegram
                    .say(
                        view.and_then(|v| v.external_ref).as_deref(),
                        format!("✋ {} взял(а) разговор", manager.name),
                    )
                    .await;
            }
        }
        ManagerUpdate::Return { handover, .. } => {
            let outcome = finish(rt, handover, &manager, None).await?;
            if let Some(q) = query {
                telegram
                    .answer(q, &closed_text(&outcome), outcome != Closed::Closed)
                    .await;
            }
        }
        ManagerUpdate::Resolve {
            handover,
            resolution,
            ..
        } => {
            let outcome = finish(rt, handover, &manager, Some(resolution)).await?;
            if let Some(q) = query {
                telegram
                    .answer(q, &closed_text(&outcome), outcome != Closed::Closed)
                    .await;
            }
        }
        ManagerUpdate::Close { external_ref, .. } => {
            let outcome = match by_external_ref(&rt.db, &external_ref).await? {
                Some(id) => finish(rt, id, &manager, None).await?,
                None => Closed::Unknown,
            };
            if outcome != Closed::Closed {
                telegram
                    .say(Some(&external_ref), closed_text(&outcome))
                    .await;
            }
        }
        ManagerUpdate::Reply {
            external_ref,
            text,
            key,
            ..
        } => {
            let outcome = match by_external_ref(&rt.db, &external_ref).await? {
                Some(id) => relay(&rt.db, &rt.pii, id, &manager, &text, &key).await?,
                None => Relayed::Unknown,
            };
            match outcome {
                Relayed::Queued => rt.wakes.outbox.notify_one(),
                Relayed::Duplicate => {}
                Relayed::Held(owner) => {
                    telegram
                        .say(
                            Some(&external_ref),
                            format!("Разговор ведёт {owner}: сообщение клиенту не отправлено"),
                        )
                        .await
                }
                Relayed::Closed | Relayed::Unknown => {
                    telegram
                        .say(
                            Some(&external_ref),
                            "Разговор у бота: сообщение клиенту не отправлено".into(),
                        )
                        .await
                }
            }
        }
        ManagerUpdate::Unsupported { external_ref, .. } => {
            telegram
                .say(
                    Some(&external_ref),
                    "Клиенту передаётся только текст: напишите сообщение текстом".into(),
                )
                .await;
        }
    }
    rt.wakes.managers.notify_one();
    Ok(())
}

async fn finish(
    rt: &Runtime,
    id: Uuid,
    manager: &Manager,
    resolution: Option<Resolution>,
) -> sqlx::Result<Closed> {
    let how = Closing {
        status: "resolved",
        resolution,
        notes: None,
        manager: Some(manager),
    };
    close(&rt.db, &rt.cache, id, &how).await
}

fn closed_text(outcome: &Closed) -> String {
    match outcome {
        Closed::Closed => "Разговор вернулся к боту".into(),
        Closed::Held(owner) => format!("Разговор ведёт {owner}: закрыть может только он(а)"),
        Closed::AlreadyClosed => "Разговор уже вернулся к боту".into(),
        Closed::Unknown => "Разговор не найден".into(),
    }
}

/// The reply webhook's body.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ReplyBody {
    /// The manager's answer for the customer.
    #[serde(default)]
    pub text: Option<String>,
    /// The CRM's id of this message: the same id is relayed once.
    #[serde(default)]
    pub message_id: Option<String>,
    #[serde(default)]
    pub manager: Option<ReplyManager>,
    /// Return the conversation to the bot (after the text, if any).
    #[serde(default)]
    pub close: bool,
    /// solved | transferred | spam | other
    #[serde(default)]
    pub resolution: Option<String>,
}

#[derive(Debug, Deserialize)]
pub struct ReplyManager {
    pub id: String,
    #[serde(default)]
    pub name: Option<String>,
}

/// `POST /t/<name>/handover/<id>/reply`: signed like our deliveries
/// (`X-Truffles-Timestamp`, `X-Truffles-Signature` with the adapter's
/// `signingKey`) over `<id>.<body>`, or `Authorization: Bearer <replyToken>`.
pub async fn reply_webhook(
    State(rt): State<Arc<Runtime>>,
    Path((_tenant, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let answer =
        |status: StatusCode, body: serde_json::Value| (status, axum::Json(body)).into_response();
    if !reply_authorized(&rt, &headers, &id, &body) {
        return answer(
            StatusCode::UNAUTHORIZED,
            json!({"error": "missing or invalid signature"}),
        );
    }
    let Ok(id) = Uuid::parse_str(&id) else {
        return answer(StatusCode::NOT_FOUND, json!({"error": "no such handover"}));
    };
    let reply: ReplyBody = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            rt.report(
                "handover",
                Level::Warning,
                "malformed_reply",
                &e.to_string(),
                Some(raw_input(&body)),
            )
            .await;
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": format!("invalid body: {e}")}),
            );
        }
    };
    let text = reply
        .text
        .as_deref()
        .map(str::trim)
        .filter(|t| !t.is_empty());
    if text.is_none() && !reply.close {
        return answer(
            StatusCode::BAD_REQUEST,
            json!({"error": "nothing to do: give `text`, `close` or both"}),
        );
    }
    let resolution = match reply.resolution.as_deref().map(Resolution::parse) {
        None => None,
        Some(Some(r)) => Some(r),
        Some(None) => {
            return answer(
                StatusCode::BAD_REQUEST,
                json!({"error": "resolution must be solved, transferred, spam or other"}),
            );
        }
    };
    let manager = match &reply.manager {
        Some(m) => Manager {
            id: format!("crm:{}", m.id),
            name: m.name.clone().unwrap_or_else(|| m.id.clone()),
        },
        None => Manager {
            id: "crm".into(),
            name: "CRM".into(),
        },
    };
    let outcome = async {
        let mut relayed = None;
        if let Some(text) = text {
            let key = match &reply.message_id {
                Some(m) => format!("reply:{id}:{m}"),
                None => format!(
                    "reply:{id}:{}",
                    hex::encode(<sha2::Sha256 as sha2::Digest>::digest(&body))
                ),
            };
            relayed = Some(relay(&rt.db, &rt.pii, id, &manager, text, &key).await?);
        }
        let mut closed = None;
        if reply.close && !matches!(relayed, Some(Relayed::Held(_) | Relayed::Unknown)) {
            let how = Closing {
                status: "resolved",
                resolution,
                notes: None,
                manager: Some(&manager),
            };
            closed = Some(close(&rt.db, &rt.cache, id, &how).await?);
        }
        Ok::<_, anyhow::Error>((relayed, closed))
    }
    .await;
    rt.wakes.outbox.notify_one();
    rt.wakes.managers.notify_one();
    match outcome {
        Ok((Some(Relayed::Unknown), _)) | Ok((None, Some(Closed::Unknown))) => {
            answer(StatusCode::NOT_FOUND, json!({"error": "no such handover"}))
        }
        Ok((Some(Relayed::Held(owner)), _)) | Ok((None, Some(Closed::Held(owner)))) => answer(
            StatusCode::CONFLICT,
            json!({"error": format!("another manager holds this conversation: {owner}")}),
        ),
        Ok((Some(Relayed::Closed), _)) => answer(
            StatusCode::CONFLICT,
            json!({"error": "the conversation is back with the bot: the message was not sent"}),
        ),
        Ok((relayed, closed)) => answer(
            StatusCode::OK,
            json!({
                "relayed": relayed.map(|r| if r == Relayed::Duplicate { "duplicate" } else { "queued" }),
                "closed": closed.map(|c| c == Closed::Closed),
            }),
        ),
        Err(e) => {
            let message = format!("{e:#}");
            tracing::warn!(error = %message, "a reply webhook failed");
            answer(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the reply could not be stored; retry later"}),
            )
        }
    }
}

fn reply_authorized(rt: &Runtime, headers: &HeaderMap, id: &str, body: &[u8]) -> bool {
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default()
    };
    let now = sqlx::types::chrono::Utc::now().timestamp();
    let (ts, sig) = (
        header(super::webhook::TIMESTAMP_HEADER),
        header(super::webhook::SIGNATURE_HEADER),
    );
    if !sig.is_empty()
        && rt.managers.signing_keys.iter().any(|k| {
            super::webhook::verify(k, ts, sig, &super::webhook::reply_payload(id, body), now)
        })
    {
        return true;
    }
    let bearer = header("authorization")
        .strip_prefix("Bearer ")
        .unwrap_or_default();
    !bearer.is_empty()
        && rt
            .managers
            .reply_tokens
            .iter()
            .any(|t| bool::from(t.as_bytes().ct_eq(bearer.as_bytes())))
}
