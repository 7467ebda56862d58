//! Customers' webhooks: each channel authenticates its own way (ChatFlow: the
//! secret URL and an optional signature; Telegram: its secret-token header;
//! Instagram: Meta's signature), then every event takes the same path (`admit`).

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::body::Body;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use tracing::{Instrument, info_span};

use crate::audit::{self, Level};
use crate::channels::{self, Channel, Inbound, instagram, telegram};
use crate::pii::log_tag;
use crate::runtime::Runtime;

use super::auth::secret_matches;
use super::reply::{not_found, read_body, reply};

pub const SIGNATURE_HEADER: &str = "x-signature-256";
const DEDUP_TTL: Duration = Duration::from_secs(24 * 3600);
const RATE_WINDOW: Duration = Duration::from_secs(60);

/// The customers' channels: ChatFlow's secret URL, the Telegram bot's
/// webhook, Instagram's handshake and deliveries.
pub fn routes() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/t/{tenant}/webhook/{secret}", get(probe).post(webhook))
        .route(
            "/t/{tenant}/telegram",
            axum::routing::post(telegram_webhook),
        )
        .route(
            "/t/{tenant}/instagram",
            get(instagram_verify).post(instagram_webhook),
        )
}

/// ChatFlow's UI checks the URL with a GET.
async fn probe(
    State(rt): State<Arc<Runtime>>,
    Path((_tenant, secret)): Path<(String, String)>,
) -> Response {
    if !secret_matches(&rt, &secret) {
        return not_found();
    }
    reply(StatusCode::OK, json!({"status": "ok"}))
}

pub fn signature_valid(key: &[u8], body: &[u8], header: Option<&str>) -> bool {
    let Some(hex_sig) = header
        .map(str::trim)
        .map(|h| h.strip_prefix("sha256=").unwrap_or(h))
    else {
        return false;
    };
    let Ok(expected) = hex::decode(hex_sig) else {
        return false;
    };
    let Ok(mut mac) = <Hmac<Sha256> as Mac>::new_from_slice(key) else {
        return false;
    };
    mac.update(body);
    mac.verify_slice(&expected).is_ok()
}

async fn webhook(
    State(rt): State<Arc<Runtime>>,
    Path((_tenant, secret)): Path<(String, String)>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    // The URL's secret first: a stranger's body is never read.
    if !secret_matches(&rt, &secret) {
        rt.metrics.webhook("not_found");
        return not_found();
    }
    let body = match read_body(body, rt.config.tuning.max_body_bytes).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let span =
        info_span!("webhook", tenant = %rt.config.client_name, message_id = tracing::field::Empty);
    let response = accept(&rt, &headers, &body).instrument(span).await;
    rt.metrics.webhook(response.1);
    response.0
}

/// Returns the response and the outcome label of the metrics.
async fn accept(rt: &Runtime, headers: &HeaderMap, body: &[u8]) -> (Response, &'static str) {
    let chatflow_key = rt
        .config
        .chatflow
        .as_ref()
        .and_then(|c| c.signature_key.as_deref());
    if let Some(key) = chatflow_key {
        let header = headers.get(SIGNATURE_HEADER).and_then(|v| v.to_str().ok());
        if !signature_valid(key, body, header) {
            return bad_signature(rt, body.len());
        }
    }
    match json_body(rt, body).await {
        Ok(value) => admit(rt, Channel::Whatsapp, value).await,
        Err(refused) => refused,
    }
}

/// Unauthenticated: counted (the caller's metric) and logged, never stored —
/// anyone can send these, and rows would let them fill the tenant's tables.
fn bad_signature(rt: &Runtime, bytes: usize) -> (Response, &'static str) {
    tracing::warn!(
        tenant = %rt.config.client_name,
        bytes,
        "webhook signature missing or invalid"
    );
    (
        reply(
            StatusCode::UNAUTHORIZED,
            json!({"error": "invalid signature"}),
        ),
        "bad_signature",
    )
}

/// The body as JSON, or the 400 (recorded with the raw input for replay).
async fn json_body(rt: &Runtime, body: &[u8]) -> Result<Value, (Response, &'static str)> {
    match serde_json::from_slice(body) {
        Ok(v) => Ok(v),
        Err(e) => {
            let message = format!("the body is not JSON: {e}");
            tracing::warn!(%message, "malformed webhook");
            rt.report(
                "gateway",
                Level::Warning,
                "malformed_json",
                &message,
                Some(audit::raw_input(body)),
            )
            .await;
            Err((
                reply(StatusCode::BAD_REQUEST, json!({"error": message})),
                "malformed",
            ))
        }
    }
}

/// One event of any channel, in the form it is stored: parsed, rate-limited,
/// deduplicated and stored. Events that are no message get a 200 (the
/// channel would only retry them) and an error_logs row.
async fn admit(rt: &Runtime, channel: Channel, value: Value) -> (Response, &'static str) {
    let inbound = match channels::parse(channel, &value) {
        Ok(m) => m,
        Err(why) => {
            tracing::info!(reason = %why, channel = channel.as_str(), "webhook ignored");
            rt.report(
                "gateway",
                Level::Info,
                "ignored",
                &why.to_string(),
                Some(value),
            )
            .await;
            return (
                reply(
                    StatusCode::OK,
                    json!({"status": "ignored", "reason": why.to_string()}),
                ),
                "ignored",
            );
        }
    };
    tracing::Span::current().record("message_id", inbound.message_id.as_str());
    if inbound.stale(chrono::Utc::now().timestamp()) {
        // A 200: a provider would only retry it. Counted, not stored.
        tracing::warn!(
            sent_at = inbound.timestamp,
            "webhook event older than the replay window: not stored"
        );
        return (reply(StatusCode::OK, json!({"status": "stale"})), "stale");
    }
    if let Some(limited) = rate_limited(rt, &inbound).await {
        return (limited, "rate_limited");
    }
    store(rt, &inbound, &value).await
}

/// `POST /t/<name>/telegram`: the customers' bot's webhook. Telegram sends the
/// secret token given to `setWebhook`; anything else is a 404.
async fn telegram_webhook(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let token_ok = telegram::token_ok(&headers, rt.config.webhook_secret.current(), CUSTOMER_BOT);
    if rt.channels.telegram.is_none() || !token_ok {
        rt.metrics.webhook("not_found");
        return not_found();
    }
    let body = match read_body(body, rt.config.tuning.max_body_bytes).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let span = info_span!("webhook", tenant = %rt.config.client_name, channel = "telegram", message_id = tracing::field::Empty);
    let (response, outcome) = async {
        match json_body(&rt, &body).await {
            Ok(value) => admit(&rt, Channel::Telegram, value).await,
            Err(refused) => refused,
        }
    }
    .instrument(span)
    .await;
    rt.metrics.webhook(outcome);
    response
}

/// The purpose of the customers' bot's webhook token (the managers' bot has its own).
pub const CUSTOMER_BOT: &str = "telegram-customers";

#[derive(serde::Deserialize)]
struct Verification {
    #[serde(rename = "hub.mode")]
    mode: Option<String>,
    #[serde(rename = "hub.verify_token")]
    verify_token: Option<String>,
    #[serde(rename = "hub.challenge")]
    challenge: Option<String>,
}

/// `GET /t/<name>/instagram`: Meta's subscription handshake.
async fn instagram_verify(
    State(rt): State<Arc<Runtime>>,
    axum::extract::Query(q): axum::extract::Query<Verification>,
) -> Response {
    let Some(instagram) = rt.channels.instagram.as_ref() else {
        return not_found();
    };
    let token_ok: bool = q
        .verify_token
        .as_deref()
        .unwrap_or_default()
        .as_bytes()
        .ct_eq(instagram.verify_token().as_bytes())
        .into();
    match (q.mode.as_deref(), q.challenge) {
        (Some("subscribe"), Some(challenge)) if token_ok => {
            tracing::info!("Instagram webhook subscription verified");
            (StatusCode::OK, challenge).into_response()
        }
        _ => {
            tracing::warn!("Instagram webhook verification refused");
            (StatusCode::FORBIDDEN, "verification failed").into_response()
        }
    }
}

/// `POST /t/<name>/instagram`: a signed delivery of one or more events.
/// Meta retries a delivery that is not answered 200; events already stored
/// are then duplicates.
async fn instagram_webhook(
    State(rt): State<Arc<Runtime>>,
    headers: HeaderMap,
    body: Body,
) -> Response {
    let Some(instagram) = rt.channels.instagram.as_ref() else {
        return not_found();
    };
    // The signature covers the body, so it must be read; a delivery without
    // one is refused before that.
    if !headers
        .get(instagram::SIGNATURE_HEADER)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|h| h.starts_with("sha256="))
    {
        let (response, outcome) = bad_signature(&rt, 0);
        rt.metrics.webhook(outcome);
        return response;
    }
    let body = match read_body(body, rt.config.tuning.max_body_bytes).await {
        Ok(body) => body,
        Err(refused) => return refused,
    };
    let span = info_span!("webhook", tenant = %rt.config.client_name, channel = "instagram", message_id = tracing::field::Empty);
    async {
        // Meta's header always carries the "sha256=" prefix.
        let header = headers
            .get(instagram::SIGNATURE_HEADER)
            .and_then(|v| v.to_str().ok())
            .filter(|h| h.starts_with("sha256="));
        if !signature_valid(instagram.app_secret(), &body, header) {
            let (response, outcome) = bad_signature(&rt, body.len());
            rt.metrics.webhook(outcome);
            return response;
        }
        let delivery = match json_body(&rt, &body).await {
            Ok(v) => v,
            Err((response, outcome)) => {
                rt.metrics.webhook(outcome);
                return response;
            }
        };
        let events = match instagram::events(&delivery) {
            Ok(events) => events,
            Err(why) => {
                rt.report(
                    "gateway",
                    Level::Info,
                    "ignored",
                    &why.to_string(),
                    Some(delivery),
                )
                .await;
                rt.metrics.webhook("ignored");
                return reply(
                    StatusCode::OK,
                    json!({"status": "ignored", "reason": why.to_string()}),
                );
            }
        };
        let mut outcomes = Vec::new();
        for event in events {
            let (response, outcome) = admit(&rt, Channel::Instagram, event).await;
            rt.metrics.webhook(outcome);
            if outcome == "unavailable" {
                return response;
            }
            outcomes.push(outcome);
        }
        reply(
            StatusCode::OK,
            json!({"status": "received", "events": outcomes}),
        )
    }
    .instrument(span)
    .await
}

async fn rate_limited(rt: &Runtime, inbound: &Inbound) -> Option<Response> {
    let runtime = &rt.config.spec.runtime;
    let user = log_tag(&rt.pii, &inbound.sender);
    let checks = [
        (
            "rate_limit:tenant".to_owned(),
            u64::from(runtime.rate_limit_per_minute),
        ),
        (
            format!("rate_limit:user:{user}"),
            u64::from(runtime.user_rate_limit_per_minute),
        ),
    ];
    for (key, limit) in checks {
        let count = rt.cache.count_or_local(&key, RATE_WINDOW).await;
        if count > limit {
            tracing::warn!(key, limit, "rate limit exceeded");
            return Some(reply(
                StatusCode::TOO_MANY_REQUESTS,
                json!({"error": "rate limit exceeded", "limit_per_minute": limit}),
            ));
        }
    }
    None
}

/// The outcome of an event refused because the tenant's backlog is full.
const BACKPRESSURE: &str = "backpressure";

/// Deduplicates and stores the event: ACK only once it is durable, and only
/// while the tenant's backlog has room (`backlog.rs`).
async fn store(rt: &Runtime, inbound: &Inbound, value: &Value) -> (Response, &'static str) {
    if let Some((why, first)) = rt
        .backlog
        .check(&rt.db, &rt.metrics, &rt.config.tuning)
        .await
    {
        tracing::warn!(reason = %why, "backlog full: the event is refused for a later delivery");
        if first {
            rt.report("gateway", Level::Critical, "backlog_full", &why, None)
                .await;
        }
        let mut refused = reply(
            StatusCode::SERVICE_UNAVAILABLE,
            json!({"error": "the tenant's backlog is full, retry later", "reason": why}),
        );
        refused.headers_mut().insert(
            axum::http::header::RETRY_AFTER,
            axum::http::HeaderValue::from(crate::backlog::RETRY_AFTER_SECONDS),
        );
        return (refused, BACKPRESSURE);
    }
    let dedup_key = format!("dedup:{}", inbound.message_id);
    match rt.cache.mark_once(&dedup_key, DEDUP_TTL).await {
        Ok(false) => {
            tracing::info!("duplicate delivery (Redis)");
            return (
                reply(StatusCode::OK, json!({"status": "duplicate"})),
                "duplicate",
            );
        }
        Ok(true) => {}
        // PostgreSQL's unique message id still catches duplicates.
        Err(e) => tracing::warn!(error = %e, "deduplication falls back to PostgreSQL"),
    }
    let inserted = sqlx::query_scalar::<_, i64>(
        // A replayed webhook of an erased person is a duplicate too.
        "INSERT INTO inbox (channel, message_id, payload, sender)
         SELECT $4, $1, $2, $3 WHERE NOT EXISTS (SELECT FROM erased_messages
             WHERE message_hash = encode(sha256(convert_to($1, 'UTF8')), 'hex'))
         ON CONFLICT (message_id) DO NOTHING RETURNING id",
    )
    .bind(&inbound.message_id)
    .bind(value)
    // Keyed hash: the inbox only groups a customer's events by it.
    .bind(channels::sender_key(
        &rt.pii,
        inbound.channel,
        &inbound.sender,
    ))
    .bind(inbound.channel.as_str())
    .fetch_optional(&rt.db)
    .await;
    match inserted {
        Ok(Some(_)) => {
            rt.metrics.message("in");
            rt.probes.postgres_answered(true);
            crate::schedule::announce(rt, crate::wake::Queue::Inbox);
            (
                reply(StatusCode::OK, json!({"status": "accepted"})),
                "accepted",
            )
        }
        Ok(None) => {
            tracing::info!("duplicate delivery (PostgreSQL)");
            (
                reply(StatusCode::OK, json!({"status": "duplicate"})),
                "duplicate",
            )
        }
        Err(e) => {
            // Not stored: let the sender retry, and do not let the dedup mark
            // swallow that retry.
            let _ = rt.cache.delete(&dedup_key).await;
            rt.probes.postgres_answered(false);
            tracing::error!(error = %e, "could not store the webhook event");
            rt.metrics.error("critical");
            (
                reply(
                    StatusCode::SERVICE_UNAVAILABLE,
                    json!({"error": "temporarily unavailable, retry later"}),
                ),
                "unavailable",
            )
        }
    }
}

/// Registers the customers' bot's webhook, retrying until Telegram accepts it.
pub async fn register_telegram_webhook(rt: Arc<Runtime>, base: String) {
    let Some(bot) = rt.channels.telegram.as_ref() else {
        return;
    };
    let url = format!(
        "{}/t/{}/telegram",
        base.trim_end_matches('/'),
        rt.config.client_name
    );
    let token = telegram::webhook_token(rt.config.webhook_secret.current(), CUSTOMER_BOT);
    let mut wait = Duration::from_secs(5);
    loop {
        match bot.set_webhook(&url, &token).await {
            Ok(()) => {
                tracing::info!("customers' Telegram webhook registered");
                return;
            }
            Err(e) => tracing::warn!(error = %e, "registering the customers' Telegram webhook"),
        }
        tokio::time::sleep(wait).await;
        wait = (wait * 2).min(Duration::from_secs(600));
    }
}

/// Long polling for runtimes without a public HTTPS address: each update
/// takes the webhook's path. An update that cannot be stored is asked for
/// again (the offset does not move past it).
pub async fn poll_telegram(rt: Arc<Runtime>) {
    let Some(bot) = rt.channels.telegram.as_ref() else {
        return;
    };
    let mut offset = 0;
    loop {
        match bot.poll(offset).await {
            Ok(updates) => {
                for update in updates {
                    let Ok(value) = serde_json::to_value(&update) else {
                        continue;
                    };
                    let span = info_span!("webhook", tenant = %rt.config.client_name, channel = "telegram", message_id = tracing::field::Empty);
                    let (_, outcome) = admit(&rt, Channel::Telegram, value).instrument(span).await;
                    rt.metrics.webhook(outcome);
                    if outcome == "unavailable" {
                        tokio::time::sleep(telegram::POLL_BACKOFF).await;
                        break;
                    }
                    if outcome == BACKPRESSURE {
                        // Asked for again once the backlog has room.
                        tokio::time::sleep(Duration::from_secs(
                            crate::backlog::RETRY_AFTER_SECONDS,
                        ))
                        .await;
                        break;
                    }
                    offset = offset.max(update.id.0 as i32 + 1);
                }
            }
            Err(e) => {
                tracing::warn!(error = %telegram::describe(&e), "polling the customers' Telegram bot failed");
                tokio::time::sleep(telegram::POLL_BACKOFF).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn signatures_are_checked() {
        let key = b"k3y";
        let body = br#"{"message":"hi"}"#;
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("any key length");
        mac.update(body);
        let good = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
        assert!(signature_valid(key, body, Some(&good)));
        assert!(signature_valid(
            key,
            body,
            Some(good.trim_start_matches("sha256="))
        ));
        assert!(!signature_valid(key, b"{}", Some(&good)));
        assert!(!signature_valid(b"other", body, Some(&good)));
        assert!(!signature_valid(key, body, None));
        assert!(!signature_valid(key, body, Some("sha256=zz")));
    }
}
