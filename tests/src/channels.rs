//! Fakes of the customer channels beyond WhatsApp: a business's Telegram bot
//! (the Bot API methods the runtime calls, with private chats) and Instagram's
//! Graph API Send endpoint. Both check the documented request shapes and
//! limits and record what they refuse.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use serde_json::{Value, json};

use crate::fakes::{lock, serve, voice_note};
use crate::managers::eventually;

/// One message the bot sent.
#[derive(Clone, Debug, PartialEq)]
pub struct BotMessage {
    pub chat: i64,
    pub text: String,
}

#[derive(Default)]
struct BotState {
    token: String,
    sent: Vec<BotMessage>,
    /// When each chat was last written to (Telegram: about 1 message/s per chat).
    recent: HashMap<i64, Vec<Instant>>,
    files: HashMap<String, (String, Vec<u8>)>,
    updates: Vec<Value>,
    webhook: Option<(String, String)>,
    blocked: Vec<i64>,
    violations: Vec<String>,
}

/// The Telegram Bot API of a business's customer-facing bot:
/// `POST /bot<token>/<method>` and `GET /file/bot<token>/<path>`.
#[derive(Clone)]
pub struct FakeTelegramBot {
    pub url: String,
    state: Arc<Mutex<BotState>>,
}

use crate::managers::{due_updates, tg_error as error, tg_ok as ok};

impl FakeTelegramBot {
    pub async fn start(token: &str) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(BotState {
            token: token.into(),
            ..BotState::default()
        }));
        let app = Router::new()
            .route("/{bot}/{method}", post(bot_method))
            .route("/file/{bot}/{*path}", get(file))
            .with_state(state.clone());
        let addr = serve(app).await?;
        Ok(Self {
            url: format!("http://{addr}"),
            state,
        })
    }

    pub fn sent(&self) -> Vec<BotMessage> {
        lock(&self.state).sent.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    /// `(url, secret_token)` of the registered webhook.
    pub fn webhook(&self) -> Option<(String, String)> {
        lock(&self.state).webhook.clone()
    }

    /// A file the customer sent, downloadable through `getFile`.
    pub fn add_file(&self, file_id: &str, path: &str, bytes: &[u8]) {
        lock(&self.state)
            .files
            .insert(file_id.into(), (path.into(), bytes.to_vec()));
    }

    /// An update for long polling (`getUpdates`).
    pub fn queue_update(&self, update: Value) {
        lock(&self.state).updates.push(update);
    }

    /// The customer blocked the bot: sends to them are refused (403).
    pub fn block(&self, chat: i64) {
        lock(&self.state).blocked.push(chat);
    }

    pub async fn wait_sent(&self, n: usize, within: Duration) -> anyhow::Result<Vec<BotMessage>> {
        eventually(&format!("the bot sending {n} messages"), within, || {
            Some(self.sent()).filter(|sent| sent.len() >= n)
        })
        .await
    }
}

async fn bot_method(
    State(state): State<Arc<Mutex<BotState>>>,
    Path((bot, method)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    // JSON, or multipart for methods that may carry files (setWebhook).
    let body = crate::managers::request_fields(request).await;
    let method = method.to_ascii_lowercase();
    if method == "getupdates" {
        let offset = body.get("offset").and_then(Value::as_i64).unwrap_or(0);
        for _ in 0..6 {
            let due = due_updates(&lock(&state).updates, offset);
            if !due.is_empty() {
                return ok(json!(due));
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return ok(json!([]));
    }
    let mut s = lock(&state);
    if bot != format!("bot{}", s.token) {
        return error(401, "Unauthorized");
    }
    match method.as_str() {
        "sendmessage" => {
            let Some(chat) = body["chat_id"]
                .as_i64()
                .or_else(|| body["chat_id"].as_str().and_then(|c| c.parse().ok()))
            else {
                return refuse(&mut s, &method, "chat_id is required".into());
            };
            let text = body["text"].as_str().unwrap_or("").to_owned();
            // "1-4096 characters after entities parsing".
            if text.trim().is_empty() || text.chars().count() > 4096 {
                return refuse(
                    &mut s,
                    &method,
                    format!(
                        "message text is empty or too long ({} characters)",
                        text.chars().count()
                    ),
                );
            }
            if chat < 0 {
                return refuse(
                    &mut s,
                    &method,
                    "the customers' bot writes to private chats".into(),
                );
            }
            if s.blocked.contains(&chat) {
                return error(403, "Forbidden: bot was blocked by the user");
            }
            let now = Instant::now();
            let recent = s.recent.entry(chat).or_default();
            recent.retain(|t| now.duration_since(*t) < Duration::from_secs(1));
            recent.push(now);
            if recent.len() > 2 {
                s.violations.push(format!(
                    "sendmessage: more than 2 messages per second to chat {chat}"
                ));
                return (
                    StatusCode::TOO_MANY_REQUESTS,
                    axum::Json(json!({"ok": false, "error_code": 429, "description": "Too Many Requests: retry after 1", "parameters": {"retry_after": 1}})),
                )
                    .into_response();
            }
            let id = s.sent.len() as i64 + 1;
            s.sent.push(BotMessage {
                chat,
                text: text.clone(),
            });
            ok(json!({"message_id": id, "date": 1_764_929_737,
                "chat": {"id": chat, "type": "private", "first_name": "Customer"},
                "from": {"id": 1, "is_bot": true, "first_name": "Shop"}, "text": text}))
        }
        "getfile" => {
            let id = body["file_id"].as_str().unwrap_or("");
            match s.files.get(id) {
                Some((path, bytes)) => {
                    ok(json!({"file_id": id, "file_unique_id": format!("u-{id}"),
                    "file_size": bytes.len(), "file_path": path}))
                }
                None => error(400, "Bad Request: invalid file_id"),
            }
        }
        "setwebhook" => {
            let url = body["url"].as_str().unwrap_or("").to_owned();
            let token = body["secret_token"].as_str().unwrap_or("").to_owned();
            if !crate::managers::webhook_acceptable(&url, &token) {
                return refuse(&mut s, &method, "bad webhook url or secret_token".into());
            }
            s.webhook = Some((url, token));
            ok(json!(true))
        }
        _ => error(404, "Not Found: method not found"),
    }
}

fn refuse(s: &mut BotState, method: &str, why: String) -> Response {
    s.violations.push(format!("{method}: {why}"));
    error(400, &format!("Bad Request: {why}"))
}

async fn file(
    State(state): State<Arc<Mutex<BotState>>>,
    Path((bot, path)): Path<(String, String)>,
) -> Response {
    let s = lock(&state);
    if bot != format!("bot{}", s.token) {
        return StatusCode::UNAUTHORIZED.into_response();
    }
    match s.files.values().find(|(p, _)| *p == path) {
        Some((_, bytes)) => bytes.clone().into_response(),
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

/// One message the Send API accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct DirectMessage {
    pub recipient: String,
    pub text: String,
}

#[derive(Default)]
struct GraphState {
    version: String,
    account: String,
    token: String,
    sent: Vec<DirectMessage>,
    violations: Vec<String>,
}

/// Instagram's Send API: `POST /{version}/{account}/messages`, bearer token,
/// `{"recipient":{"id"},"messaging_type":"RESPONSE","message":{"text"}}`.
#[derive(Clone)]
pub struct FakeInstagram {
    pub url: String,
    state: Arc<Mutex<GraphState>>,
}

impl FakeInstagram {
    pub async fn start(version: &str, account: &str, token: &str) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(GraphState {
            version: version.into(),
            account: account.into(),
            token: token.into(),
            ..GraphState::default()
        }));
        let app = Router::new()
            .route("/{version}/{account}/messages", post(send_api))
            // Where an audio attachment's payload.url points.
            .route("/cdn/voice", get(voice_note))
            .with_state(state.clone());
        let addr = serve(app).await?;
        Ok(Self {
            url: format!("http://{addr}"),
            state,
        })
    }

    pub fn sent(&self) -> Vec<DirectMessage> {
        lock(&self.state).sent.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    pub async fn wait_sent(
        &self,
        n: usize,
        within: Duration,
    ) -> anyhow::Result<Vec<DirectMessage>> {
        eventually(&format!("Instagram getting {n} messages"), within, || {
            Some(self.sent()).filter(|sent| sent.len() >= n)
        })
        .await
    }
}

fn graph_error(status: StatusCode, code: i64, message: &str) -> Response {
    (
        status,
        axum::Json(json!({"error": {"message": message, "type": "OAuthException", "code": code, "fbtrace_id": "Ax1"}})),
    )
        .into_response()
}

async fn send_api(
    State(state): State<Arc<Mutex<GraphState>>>,
    Path((version, account)): Path<(String, String)>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let mut s = lock(&state);
    let bearer = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    if bearer != Some(s.token.as_str()) {
        return graph_error(StatusCode::UNAUTHORIZED, 190, "Invalid OAuth access token.");
    }
    if version != s.version || account != s.account {
        s.violations
            .push(format!("POST /{version}/{account}/messages"));
        return graph_error(StatusCode::BAD_REQUEST, 100, "Unsupported post request.");
    }
    let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
    let recipient = body
        .pointer("/recipient/id")
        .and_then(Value::as_str)
        .unwrap_or("");
    let text = body
        .pointer("/message/text")
        .and_then(Value::as_str)
        .unwrap_or("");
    let why = if recipient.is_empty() {
        Some("recipient.id is required".to_owned())
    } else if body["messaging_type"] != "RESPONSE" {
        Some(format!(
            "messaging_type {} (a reply is RESPONSE)",
            body["messaging_type"]
        ))
    } else if text.trim().is_empty() || text.chars().count() >= 1000 {
        Some(format!(
            "text must be 1 to 999 characters, got {}",
            text.chars().count()
        ))
    } else {
        None
    };
    if let Some(why) = why {
        s.violations.push(why.clone());
        return graph_error(StatusCode::BAD_REQUEST, 100, &why);
    }
    s.sent.push(DirectMessage {
        recipient: recipient.into(),
        text: text.into(),
    });
    axum::Json(json!({"recipient_id": recipient, "message_id": format!("m_{}", s.sent.len())}))
        .into_response()
}
