//! The managers' side in tests: a fake Telegram Bot API (forum topics,
//! buttons, updates), fakes of the CRMs and of a client's webhook that check
//! the request shapes those services document, and a real SMTP server.

use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::{Json, Router};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};

use crate::fakes::{lock, serve};

/// Polls `probe` until it returns `Some`, or fails after `within` with `what`.
pub async fn eventually<T>(
    what: &str,
    within: Duration,
    mut probe: impl FnMut() -> Option<T>,
) -> Result<T> {
    let deadline = tokio::time::Instant::now() + within;
    loop {
        if let Some(v) = probe() {
            return Ok(v);
        }
        if tokio::time::Instant::now() > deadline {
            bail!("{what}: not within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// A message the bot posted in the managers' group.
#[derive(Clone, Debug, PartialEq)]
pub struct GroupMessage {
    pub id: i64,
    pub thread: Option<i64>,
    pub text: String,
    /// `callback_data` of the inline buttons.
    pub buttons: Vec<String>,
}

#[derive(Default)]
struct TelegramState {
    token: String,
    chat: i64,
    next_id: i64,
    topics: HashSet<i64>,
    topic_names: Vec<String>,
    messages: Vec<GroupMessage>,
    pinned: Vec<i64>,
    answers: Vec<(String, String, bool)>,
    updates: Vec<Value>,
    next_update: i64,
    webhook: Option<(String, String)>,
    down: bool,
    violations: Vec<String>,
}

/// The Telegram Bot API for one forum supergroup: `POST /bot<token>/<method>`
/// with JSON, answers `{"ok":true,"result":..}` or `{"ok":false,"error_code","description"}`.
#[derive(Clone)]
pub struct FakeTelegram {
    pub url: String,
    pub chat: i64,
    state: Arc<Mutex<TelegramState>>,
}

pub(crate) fn tg_error(code: u16, description: &str) -> Response {
    (
        StatusCode::from_u16(code).unwrap_or(StatusCode::BAD_REQUEST),
        Json(json!({"ok": false, "error_code": code, "description": description})),
    )
        .into_response()
}

pub(crate) fn tg_ok(result: Value) -> Response {
    Json(json!({"ok": true, "result": result})).into_response()
}

impl FakeTelegram {
    pub async fn start(token: &str, chat: i64) -> Result<Self> {
        let state = Arc::new(Mutex::new(TelegramState {
            token: token.into(),
            chat,
            next_id: 100,
            next_update: 1,
            ..TelegramState::default()
        }));
        let app = Router::new()
            .route("/{bot}/{method}", post(telegram_method))
            .with_state(state.clone());
        let addr = serve(app).await?;
        Ok(Self {
            url: format!("http://{addr}"),
            chat,
            state,
        })
    }

    pub fn messages(&self) -> Vec<GroupMessage> {
        lock(&self.state).messages.clone()
    }

    pub fn topics_created(&self) -> Vec<String> {
        lock(&self.state).topic_names.clone()
    }

    pub fn pinned(&self) -> Vec<i64> {
        lock(&self.state).pinned.clone()
    }

    /// Button presses answered: (query id, text, shown as an alert).
    pub fn answers(&self) -> Vec<(String, String, bool)> {
        lock(&self.state).answers.clone()
    }

    pub fn webhook(&self) -> Option<(String, String)> {
        lock(&self.state).webhook.clone()
    }

    /// Requests that broke the documented shapes (must stay empty).
    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    /// While down, every method answers HTTP 502 (what a proxy says when Telegram is away).
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    /// A manager deletes the topic.
    pub fn delete_topic(&self, thread: i64) {
        lock(&self.state).topics.remove(&thread);
    }

    /// Waits for a message in the group whose text contains `needle`.
    pub async fn wait_message(&self, needle: &str, within: Duration) -> Result<GroupMessage> {
        eventually(
            &format!("a group message containing {needle:?}"),
            within,
            || {
                self.messages()
                    .into_iter()
                    .find(|m| m.text.contains(needle))
            },
        )
        .await
    }

    fn push(&self, update: impl FnOnce(i64) -> Value) -> Value {
        let mut s = lock(&self.state);
        let id = s.next_update;
        s.next_update += 1;
        let update = update(id);
        s.updates.push(update.clone());
        update
    }

    fn group(&self) -> Value {
        json!({"id": self.chat, "type": "supergroup", "title": "Менеджеры", "is_forum": true})
    }

    fn user(user: i64, name: &str) -> Value {
        json!({"id": user, "is_bot": false, "first_name": name})
    }

    /// A manager writes `text` in a topic; returns the update (as delivered).
    pub fn manager_writes(&self, thread: i64, user: i64, name: &str, text: &str) -> Value {
        let message_id = {
            let mut s = lock(&self.state);
            s.next_id += 1;
            s.next_id
        };
        self.push(|id| {
            json!({"update_id": id, "message": {
                "message_id": message_id, "date": 1_764_929_737, "chat": self.group(),
                "from": Self::user(user, name), "message_thread_id": thread,
                "is_topic_message": true, "text": text}})
        })
    }

    /// A manager sends a photo in a topic.
    pub fn manager_sends_photo(&self, thread: i64, user: i64, name: &str) -> Value {
        self.push(|id| {
            json!({"update_id": id, "message": {
                "message_id": 9000 + id, "date": 1_764_929_737, "chat": self.group(),
                "from": Self::user(user, name), "message_thread_id": thread, "is_topic_message": true,
                "photo": [{"file_id": "AgAD", "file_unique_id": "u1", "width": 90, "height": 90}]}})
        })
    }

    /// A manager presses a button of `card`.
    pub fn press(&self, card: &GroupMessage, data: &str, user: i64, name: &str) -> Value {
        self.push(|id| {
            json!({"update_id": id, "callback_query": {
                "id": format!("cq{id}"), "from": Self::user(user, name), "chat_instance": "42",
                "data": data,
                "message": {"message_id": card.id, "date": 1_764_929_737, "chat": self.group(),
                            "text": card.text, "message_thread_id": card.thread, "is_topic_message": card.thread.is_some()}}})
        })
    }
}

/// The queued updates `getUpdates` with `offset` returns.
pub(crate) fn due_updates(updates: &[Value], offset: i64) -> Vec<Value> {
    updates
        .iter()
        .filter(|u| u["update_id"].as_i64().unwrap_or(0) >= offset)
        .cloned()
        .collect()
}

/// What `setWebhook` accepts: an HTTPS URL and a secret token of 1–256
/// characters `[A-Za-z0-9_-]`.
pub(crate) fn webhook_acceptable(url: &str, token: &str) -> bool {
    url.starts_with("https://")
        && (1..=256).contains(&token.len())
        && token
            .chars()
            .all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '-')
}

/// Telegram's HTML parse mode: only its tags, `<` only opening a tag, `&` only
/// as `&lt;` `&gt;` `&amp;` `&quot;` or a numeric entity.
fn telegram_html(text: &str) -> Result<(), String> {
    const TAGS: [&str; 16] = [
        "b",
        "strong",
        "i",
        "em",
        "u",
        "ins",
        "s",
        "strike",
        "del",
        "span",
        "tg-spoiler",
        "a",
        "tg-emoji",
        "code",
        "pre",
        "blockquote",
    ];
    let mut rest = text;
    while let Some(at) = rest.find(['<', '&']) {
        let tail = &rest[at..];
        if tail.starts_with('<') {
            let end = tail.find('>').ok_or("unclosed start tag")?;
            let name = tail[1..end].trim_start_matches('/');
            let name = name.split([' ', '=']).next().unwrap_or("");
            if !TAGS.contains(&name) {
                return Err(format!("unsupported start tag {name:?}"));
            }
            rest = &tail[end + 1..];
        } else {
            let end = tail.find(';').ok_or("unfinished entity")?;
            let entity = &tail[1..end];
            let numeric = entity
                .strip_prefix('#')
                .is_some_and(|n| !n.is_empty() && n.chars().all(|c| c.is_ascii_digit()));
            if !(numeric || ["lt", "gt", "amp", "quot"].contains(&entity)) {
                return Err(format!("unsupported entity &{entity};"));
            }
            rest = &tail[end + 1..];
        }
    }
    Ok(())
}

fn chat_matches(v: &Value, chat: i64) -> bool {
    match v {
        Value::Number(n) => n.as_i64() == Some(chat),
        Value::String(s) => s.parse::<i64>().ok() == Some(chat),
        _ => false,
    }
}

/// The Bot API takes JSON, or multipart/form-data for methods that may carry a
/// file (teloxide sends `setWebhook` that way); both become one JSON object.
pub(crate) async fn request_fields(request: axum::extract::Request) -> Value {
    use axum::extract::FromRequest;
    let multipart = request
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("multipart/form-data"));
    if multipart {
        let mut fields = serde_json::Map::new();
        if let Ok(mut form) = axum::extract::Multipart::from_request(request, &()).await {
            while let Ok(Some(field)) = form.next_field().await {
                let name = field.name().unwrap_or("").to_owned();
                let text = field.text().await.unwrap_or_default();
                let value = serde_json::from_str(&text).unwrap_or(Value::String(text));
                fields.insert(name, value);
            }
        }
        return Value::Object(fields);
    }
    match Json::<Value>::from_request(request, &()).await {
        Ok(Json(v)) => v,
        Err(_) => Value::Null,
    }
}

async fn telegram_method(
    State(state): State<Arc<Mutex<TelegramState>>>,
    Path((bot, method)): Path<(String, String)>,
    request: axum::extract::Request,
) -> Response {
    let body = request_fields(request).await;
    let method = method.to_ascii_lowercase();
    if method == "getupdates" {
        // Long polling: wait a little for updates, as Telegram holds the request.
        for _ in 0..6 {
            {
                let s = lock(&state);
                if s.down {
                    return (StatusCode::BAD_GATEWAY, "bad gateway").into_response();
                }
                let offset = body.get("offset").and_then(Value::as_i64).unwrap_or(0);
                let due = due_updates(&s.updates, offset);
                if !due.is_empty() {
                    return tg_ok(json!(due));
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        return tg_ok(json!([]));
    }
    let mut s = lock(&state);
    if s.down {
        return (StatusCode::BAD_GATEWAY, "bad gateway").into_response();
    }
    if bot != format!("bot{}", s.token) {
        return tg_error(401, "Unauthorized");
    }
    let chat = s.chat;
    let violation = |s: &mut TelegramState, why: String| {
        s.violations.push(format!("{method}: {why}"));
        tg_error(400, &format!("Bad Request: {why}"))
    };
    match method.as_str() {
        "createforumtopic" => {
            if !chat_matches(&body["chat_id"], chat) {
                return violation(&mut s, "chat not found".into());
            }
            let name = body["name"].as_str().unwrap_or("");
            if name.is_empty() || name.chars().count() > 128 {
                return violation(&mut s, format!("invalid topic name {name:?}"));
            }
            s.next_id += 1;
            let thread = s.next_id;
            s.topics.insert(thread);
            s.topic_names.push(name.to_owned());
            tg_ok(json!({"message_thread_id": thread, "name": name, "icon_color": 7_322_096}))
        }
        "sendmessage" => {
            if !chat_matches(&body["chat_id"], chat) {
                return violation(&mut s, "chat not found".into());
            }
            let text = body["text"].as_str().unwrap_or("").to_owned();
            if text.is_empty() || text.chars().count() > 4096 {
                return violation(&mut s, "message text is empty or too long".into());
            }
            if body["parse_mode"] == "HTML"
                && let Err(why) = telegram_html(&text)
            {
                return violation(&mut s, format!("can't parse entities: {why}"));
            }
            let thread = body.get("message_thread_id").and_then(Value::as_i64);
            if let Some(t) = thread
                && !s.topics.contains(&t)
            {
                return tg_error(400, "Bad Request: message thread not found");
            }
            let mut buttons = Vec::new();
            if let Some(rows) = body.pointer("/reply_markup/inline_keyboard") {
                for button in rows
                    .as_array()
                    .into_iter()
                    .flatten()
                    .flat_map(|r| r.as_array().cloned().unwrap_or_default())
                {
                    let data = button["callback_data"].as_str().unwrap_or("");
                    if button["text"].as_str().is_none_or(str::is_empty)
                        || data.is_empty()
                        || data.len() > 64
                    {
                        return violation(&mut s, format!("BUTTON_DATA_INVALID {button}"));
                    }
                    buttons.push(data.to_owned());
                }
            }
            s.next_id += 1;
            let id = s.next_id;
            s.messages.push(GroupMessage {
                id,
                thread,
                text: text.clone(),
                buttons,
            });
            let mut message = json!({"message_id": id, "date": 1_764_929_737,
                "chat": {"id": chat, "type": "supergroup", "title": "Менеджеры", "is_forum": true},
                "from": {"id": 1, "is_bot": true, "first_name": "Truffles"}, "text": text});
            if let Some(t) = thread {
                message["message_thread_id"] = json!(t);
                message["is_topic_message"] = json!(true);
            }
            tg_ok(message)
        }
        "pinchatmessage" => {
            let Some(id) = body["message_id"].as_i64() else {
                return violation(&mut s, "message_id is required".into());
            };
            s.pinned.push(id);
            tg_ok(json!(true))
        }
        "answercallbackquery" => {
            let Some(id) = body["callback_query_id"].as_str() else {
                return violation(&mut s, "callback_query_id is required".into());
            };
            let text = body["text"].as_str().unwrap_or("").to_owned();
            if text.chars().count() > 200 {
                return violation(&mut s, "answer text over 200 characters".into());
            }
            let alert = body["show_alert"].as_bool().unwrap_or(false);
            s.answers.push((id.to_owned(), text, alert));
            tg_ok(json!(true))
        }
        "setwebhook" => {
            let url = body["url"].as_str().unwrap_or("").to_owned();
            let token = body["secret_token"].as_str().unwrap_or("").to_owned();
            if !webhook_acceptable(&url, &token) {
                return violation(&mut s, "bad webhook url or secret_token".into());
            }
            s.webhook = Some((url, token));
            tg_ok(json!(true))
        }
        _ => tg_error(404, "Not Found: method not found"),
    }
}

/// One request a CRM or webhook fake accepted.
#[derive(Clone, Debug)]
pub struct Call {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Value,
}

impl Call {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Service {
    /// A client's own endpoint for the `webhook`/`custom` adapters.
    Webhook,
    Bitrix,
    Amocrm,
    Hubspot,
}

#[derive(Default)]
struct ServiceState {
    calls: Vec<Call>,
    violations: Vec<String>,
    down: bool,
    next_id: i64,
}

/// A fake of one manager-side service checking its documented request shapes.
#[derive(Clone)]
pub struct FakeService {
    pub url: String,
    pub service: Service,
    /// Webhook: the signing key; CRMs: the token.
    pub secret: String,
    state: Arc<Mutex<ServiceState>>,
}

impl FakeService {
    pub async fn start(service: Service, secret: &str) -> Result<Self> {
        let state = Arc::new(Mutex::new(ServiceState {
            next_id: 100,
            ..ServiceState::default()
        }));
        let shared = (service, secret.to_owned(), state.clone());
        let app = Router::new()
            .fallback(post(service_call))
            .with_state(Arc::new(shared));
        let addr = serve(app).await?;
        Ok(Self {
            url: format!("http://{addr}"),
            service,
            secret: secret.into(),
            state,
        })
    }

    /// The adapter's base URL as a tenant configures it.
    pub fn base_url(&self) -> String {
        match self.service {
            Service::Webhook => format!("{}/hooks/truffles", self.url),
            Service::Bitrix => format!("{}/rest/1/", self.url),
            Service::Amocrm | Service::Hubspot => self.url.clone(),
        }
    }

    pub fn calls(&self) -> Vec<Call> {
        lock(&self.state).calls.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }

    /// While down, every request gets HTTP 503.
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    pub async fn wait_calls(&self, n: usize, within: Duration) -> Result<Vec<Call>> {
        eventually(&format!("{n} calls to {:?}", self.service), within, || {
            let calls = self.calls();
            (calls.len() >= n).then_some(calls)
        })
        .await
    }
}

type Shared = Arc<(Service, String, Arc<Mutex<ServiceState>>)>;

async fn service_call(
    State(shared): State<Shared>,
    uri: axum::http::Uri,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Response {
    let (service, secret, state) = (&shared.0, &shared.1, &shared.2);
    let path = uri.path().to_owned();
    let mut s = lock(state);
    if s.down {
        return (StatusCode::SERVICE_UNAVAILABLE, "unavailable").into_response();
    }
    let json: Value = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => {
            s.violations.push(format!("{path}: body is not JSON: {e}"));
            return (StatusCode::BAD_REQUEST, "invalid JSON").into_response();
        }
    };
    let header = |name: &str| {
        headers
            .get(name)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned()
    };
    let bearer_ok = header("authorization") == format!("Bearer {secret}");
    let problems = match service {
        Service::Webhook => webhook_problems(secret, &headers, &body, &json),
        Service::Bitrix => bitrix_problems(secret, &path, &json),
        Service::Amocrm if !bearer_ok => {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"title": "Unauthorized", "status": 401})),
            )
                .into_response();
        }
        Service::Hubspot if !bearer_ok => {
            return (
                StatusCode::UNAUTHORIZED,
                Json(json!({"status": "error", "category": "INVALID_AUTHENTICATION"})),
            )
                .into_response();
        }
        Service::Amocrm => amocrm_problems(&path, &json),
        Service::Hubspot => hubspot_problems(&path, &json),
    };
    if let Some(why) = problems {
        s.violations.push(format!("{path}: {why}"));
        return (StatusCode::BAD_REQUEST, Json(json!({"error": why}))).into_response();
    }
    s.next_id += 1;
    let id = s.next_id;
    s.calls.push(Call {
        path: path.clone(),
        headers: headers
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_str().unwrap_or("").to_owned()))
            .collect(),
        body: json,
    });
    match service {
        Service::Webhook => Json(json!({"ok": true})).into_response(),
        Service::Bitrix => Json(json!({"result": id, "time": {"duration": 0.01}})).into_response(),
        Service::Amocrm if path.ends_with("/notes") => Json(json!({"_embedded": {"notes": [{"id": id, "request_id": "0"}]}})).into_response(),
        Service::Amocrm => Json(json!([{"id": id, "contact_id": id + 1000, "company_id": null, "request_id": ["0"], "merged": false}])).into_response(),
        Service::Hubspot => (StatusCode::CREATED, Json(json!({"id": id.to_string(), "properties": {}}))).into_response(),
    }
}

fn webhook_problems(key: &str, headers: &HeaderMap, body: &[u8], json: &Value) -> Option<String> {
    let ts = headers
        .get("x-truffles-timestamp")?
        .to_str()
        .ok()?
        .to_owned();
    let given = headers
        .get("x-truffles-signature")?
        .to_str()
        .ok()?
        .to_owned();
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(key.as_bytes()).ok()?;
    mac.update(format!("{ts}.").as_bytes());
    mac.update(body);
    let expected = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    if given != expected {
        return Some("bad signature".into());
    }
    if headers.get("idempotency-key").is_none() {
        return Some("no Idempotency-Key".into());
    }
    let event = json["event"].as_str().unwrap_or("");
    if !event.starts_with("handover.") || json["handover"]["id"].as_str().is_none() {
        return Some(format!("not a handover event: {json}"));
    }
    None
}

fn bitrix_problems(token: &str, path: &str, json: &Value) -> Option<String> {
    let Some(method) = path.strip_prefix(&format!("/rest/1/{token}/")) else {
        return Some("wrong webhook token (NO_AUTH_FOUND)".into());
    };
    match method {
        "crm.lead.add.json" => {
            let f = &json["fields"];
            if f["TITLE"].as_str().is_none_or(str::is_empty) {
                return Some("fields.TITLE is required".into());
            }
            if let Some(phones) = f.get("PHONE")
                && !phones.as_array().is_some_and(|p| {
                    p.iter().all(|p| {
                        p["VALUE"].as_str().is_some_and(|v| v.starts_with('+'))
                            && ["WORK", "MOBILE", "HOME", "OTHER"]
                                .contains(&p["VALUE_TYPE"].as_str().unwrap_or(""))
                    })
                })
            {
                return Some(format!("PHONE must be [{{VALUE, VALUE_TYPE}}]: {phones}"));
            }
            None
        }
        "crm.timeline.comment.add.json" => {
            let f = &json["fields"];
            (f["ENTITY_ID"].as_i64().is_none()
                || f["ENTITY_TYPE"] != "lead"
                || f["COMMENT"].as_str().is_none_or(str::is_empty))
            .then(|| format!("ENTITY_ID, ENTITY_TYPE=lead and COMMENT are required: {f}"))
        }
        other => Some(format!("unknown method {other}")),
    }
}

fn amocrm_problems(path: &str, json: &Value) -> Option<String> {
    if path == "/api/v4/leads/complex" {
        let lead = json.get(0)?;
        if lead["name"].as_str().is_none_or(str::is_empty) {
            return Some("lead name is required".into());
        }
        let contact = lead.pointer("/_embedded/contacts/0")?;
        if contact["first_name"].as_str().is_none() {
            return Some("contact first_name is required".into());
        }
        if let Some(fields) = contact.get("custom_fields_values") {
            let ok = fields.as_array().is_some_and(|f| {
                f.iter().all(|f| {
                    f["field_code"] == "PHONE"
                        && f["values"][0]["value"].as_str().is_some()
                        && f["values"][0]["enum_code"] == "WORK"
                })
            });
            if !ok {
                return Some(format!("bad custom_fields_values: {fields}"));
            }
        }
        return None;
    }
    let is_notes = path.starts_with("/api/v4/leads/") && path.ends_with("/notes");
    if is_notes
        && json.get(0).is_some_and(|n| {
            n["note_type"] == "common"
                && n["params"]["text"].as_str().is_some_and(|t| !t.is_empty())
        })
    {
        return None;
    }
    Some(format!("unexpected request {path}: {json}"))
}

fn hubspot_problems(path: &str, json: &Value) -> Option<String> {
    match path {
        "/crm/v3/objects/contacts" => json["properties"]["firstname"]
            .as_str()
            .is_none()
            .then(|| "properties.firstname is required".into()),
        "/crm/v3/objects/notes" => {
            let p = &json["properties"];
            let ts_ok = p["hs_timestamp"]
                .as_str()
                .is_some_and(|t| sqlx::types::chrono::DateTime::parse_from_rfc3339(t).is_ok());
            let assoc = &json["associations"][0];
            let assoc_ok = assoc["to"]["id"].as_str().is_some()
                && assoc["types"][0]["associationCategory"] == "HUBSPOT_DEFINED"
                && assoc["types"][0]["associationTypeId"] == 202;
            (!ts_ok || p["hs_note_body"].as_str().is_none() || !assoc_ok).then(|| {
                format!("a note needs hs_timestamp, hs_note_body and a contact association: {json}")
            })
        }
        other => Some(format!("unknown path {other}")),
    }
}

/// A real SMTP server (aiosmtpd, from PyPI) that stores what it receives in a Maildir.
pub struct SmtpServer {
    child: std::process::Child,
    maildir: std::path::PathBuf,
    pub port: u16,
}

impl SmtpServer {
    pub async fn start() -> Result<Self> {
        let port = crate::free_port()?;
        let maildir =
            std::env::temp_dir().join(format!("truffles-mail-{}", uuid::Uuid::new_v4().simple()));
        let child = std::process::Command::new("python3")
            .args([
                "-m",
                "aiosmtpd",
                "-n",
                "-l",
                &format!("127.0.0.1:{port}"),
                "-c",
                "aiosmtpd.handlers.Mailbox",
            ])
            .arg(&maildir)
            .spawn()
            .context("python3 -m aiosmtpd (installed by scripts/testenv.sh)")?;
        for _ in 0..100 {
            if tokio::net::TcpStream::connect(("127.0.0.1", port))
                .await
                .is_ok()
            {
                return Ok(Self {
                    child,
                    maildir,
                    port,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        bail!("aiosmtpd did not listen on {port}")
    }

    /// The raw messages received so far.
    pub fn messages(&self) -> Vec<String> {
        std::fs::read_dir(self.maildir.join("new"))
            .map(|dir| {
                dir.filter_map(|e| e.ok())
                    .filter_map(|e| std::fs::read_to_string(e.path()).ok())
                    .collect()
            })
            .unwrap_or_default()
    }
}

impl Drop for SmtpServer {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.maildir);
    }
}
