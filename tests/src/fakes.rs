//! Local fakes of the SaaS the runtime talks to (ChatFlow, an OpenAI-compatible
//! LLM). They check the request shapes the real services document and refuse
//! anything else the way the real ones do.

use std::collections::HashSet;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::extract::{Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::IntoResponse;
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

pub(crate) async fn serve(app: Router) -> anyhow::Result<SocketAddr> {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok(addr)
}

/// A voice note as the channels' media URLs serve it (Ogg/Opus, what the
/// fake transcription endpoint accepts).
pub(crate) async fn voice_note() -> impl IntoResponse {
    (
        [("content-type", "audio/ogg")],
        b"OggS\0fake-opus-voice".to_vec(),
    )
}

pub(crate) fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

/// One text message ChatFlow accepted.
#[derive(Clone, Debug, PartialEq)]
pub struct Sent {
    pub jid: String,
    pub msg: String,
    pub msg_id: String,
}

#[derive(Default)]
struct ChatflowState {
    token: String,
    instance_id: String,
    sent: Vec<Sent>,
    failures_left: u32,
    /// Sends whose text contains this fail, as many times as the count says.
    failing_text: Option<(String, u32)>,
    calls: u32,
    /// Downloads of the media URL.
    media_downloads: u32,
}

/// ChatFlow's send API: `GET /api/v1/send-text?token&instance_id&jid&msg&msg_id`.
#[derive(Clone)]
pub struct FakeChatflow {
    pub url: String,
    state: Arc<Mutex<ChatflowState>>,
}

impl FakeChatflow {
    pub async fn start(token: &str, instance_id: &str) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(ChatflowState {
            token: token.into(),
            instance_id: instance_id.into(),
            ..ChatflowState::default()
        }));
        let app = Router::new()
            .route("/", get(|| async { "ChatFlow" }))
            .route("/api/v1/send-text", get(send_text))
            // Where ChatFlow's mediaData.url points: a voice note.
            .route(
                "/media/voice.ogg",
                get(
                    |State(state): State<Arc<Mutex<ChatflowState>>>| async move {
                        lock(&state).media_downloads += 1;
                        voice_note().await
                    },
                ),
            )
            .with_state(state.clone());
        let addr = serve(app).await?;
        Ok(Self {
            url: format!("http://{addr}"),
            state,
        })
    }

    /// Messages accepted so far.
    /// How many times the media URL was downloaded.
    pub fn media_downloads(&self) -> u32 {
        lock(&self.state).media_downloads
    }

    pub fn sent(&self) -> Vec<Sent> {
        lock(&self.state).sent.clone()
    }

    /// All send calls, accepted or not.
    pub fn calls(&self) -> u32 {
        lock(&self.state).calls
    }

    /// The next `n` sends fail with HTTP 502.
    pub fn fail_next(&self, n: u32) {
        lock(&self.state).failures_left = n;
    }

    /// The next `n` sends of a message containing `text` fail with HTTP 502;
    /// other messages go through (a test about one message is not disturbed
    /// by another send that happens to come first).
    pub fn fail_next_of(&self, text: &str, n: u32) {
        lock(&self.state).failing_text = Some((text.to_owned(), n));
    }

    /// Waits for the first message accepted for the chat of `phone`. The
    /// outbox delivers at least once (a runtime stopped between a send and
    /// its record sends it again after a restart), so a test finds a reply
    /// by its recipient, not by its position.
    pub async fn wait_sent_to(&self, phone: &str, within: Duration) -> anyhow::Result<Sent> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Some(s) = self.sent().into_iter().find(|s| s.jid.starts_with(phone)) {
                return Ok(s);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!("ChatFlow got no message for {phone} within {within:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits until `n` messages were accepted.
    pub async fn wait_sent(&self, n: usize, within: Duration) -> anyhow::Result<Vec<Sent>> {
        let deadline = tokio::time::Instant::now() + within;
        loop {
            let sent = self.sent();
            if sent.len() >= n {
                return Ok(sent);
            }
            if tokio::time::Instant::now() > deadline {
                anyhow::bail!(
                    "ChatFlow got {} of {n} messages within {within:?}: {sent:?}",
                    sent.len()
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
}

async fn send_text(
    State(state): State<Arc<Mutex<ChatflowState>>>,
    Query(q): Query<std::collections::HashMap<String, String>>,
) -> impl IntoResponse {
    let mut s = lock(&state);
    s.calls += 1;
    let text_fails = match (&mut s.failing_text, q.get("msg")) {
        (Some((needle, left)), Some(msg)) if *left > 0 && msg.contains(needle.as_str()) => {
            *left -= 1;
            true
        }
        _ => false,
    };
    if text_fails || s.failures_left > 0 {
        if !text_fails {
            s.failures_left -= 1;
        }
        return (
            StatusCode::BAD_GATEWAY,
            Json(json!({"success": false, "message": "upstream error"})),
        );
    }
    let missing: Vec<&str> = ["token", "instance_id", "jid", "msg", "msg_id"]
        .into_iter()
        .filter(|k| q.get(*k).is_none_or(|v| v.is_empty()))
        .collect();
    if !missing.is_empty() {
        let message = format!("Parameter [{}] are required!", missing.join(", "));
        return (
            StatusCode::OK,
            Json(json!({"success": false, "message": message})),
        );
    }
    if q["token"] != s.token || q["instance_id"] != s.instance_id {
        return (
            StatusCode::UNAUTHORIZED,
            Json(json!({"success": false, "message": "invalid token"})),
        );
    }
    let jid = &q["jid"];
    let valid_jid = jid
        .strip_suffix("@s.whatsapp.net")
        .is_some_and(|n| !n.is_empty() && n.bytes().all(|b| b.is_ascii_digit()));
    if !valid_jid {
        return (
            StatusCode::OK,
            Json(json!({"success": false, "message": "invalid jid"})),
        );
    }
    s.sent.push(Sent {
        jid: jid.clone(),
        msg: q["msg"].clone(),
        msg_id: q["msg_id"].clone(),
    });
    (
        StatusCode::OK,
        Json(json!({"success": true, "message": "sent"})),
    )
}

#[derive(Default)]
struct LlmState {
    api_key: String,
    down: HashSet<String>,
    hang: bool,
    latency: Duration,
    /// Model of every accepted or failed completion call, in order.
    calls: Vec<String>,
    /// System prompt of every answering (not classifying) call, in order.
    prompts: Vec<String>,
}

/// An OpenAI-compatible chat completions endpoint. Classification requests
/// (`response_format: json_object`) get an intent by keywords; other requests
/// are answered from the facts in the system prompt, so a test sees whether
/// the bot's answer is grounded.
#[derive(Clone)]
pub struct FakeLlm {
    /// Base URL including `/v1`.
    pub url: String,
    state: Arc<Mutex<LlmState>>,
}

impl FakeLlm {
    pub async fn start(api_key: &str) -> anyhow::Result<Self> {
        let state = Arc::new(Mutex::new(LlmState {
            api_key: api_key.into(),
            ..LlmState::default()
        }));
        let app = Router::new()
            .route(
                "/v1/models",
                get(|| async { Json(json!({"object": "list", "data": []})) }),
            )
            .route("/v1/chat/completions", post(completions))
            .route("/v1/audio/transcriptions", post(transcriptions))
            .with_state(state.clone());
        let addr = serve(app).await?;
        Ok(Self {
            url: format!("http://{addr}/v1"),
            state,
        })
    }

    /// `model` answers HTTP 500 from now on (or again, with `false`).
    pub fn set_down(&self, model: &str, down: bool) {
        let mut s = lock(&self.state);
        if down {
            s.down.insert(model.into());
        } else {
            s.down.remove(model);
        }
    }

    /// Every completion takes at least `latency` (a real model's think time).
    pub fn set_latency(&self, latency: Duration) {
        lock(&self.state).latency = latency;
    }

    /// Every completion waits (a slow model) until unset.
    pub fn set_hang(&self, hang: bool) {
        lock(&self.state).hang = hang;
    }

    pub fn calls(&self) -> Vec<String> {
        lock(&self.state).calls.clone()
    }

    /// The system prompts of the answering calls (classifications excluded).
    pub fn prompts(&self) -> Vec<String> {
        lock(&self.state).prompts.clone()
    }
}

/// `POST /v1/audio/transcriptions` (multipart `file` and `model`): the voice
/// note "says" a price question.
async fn transcriptions(mut form: axum::extract::Multipart) -> (StatusCode, Json<Value>) {
    let (mut file, mut model) = (None, None);
    while let Ok(Some(field)) = form.next_field().await {
        match field.name() {
            Some("file") => {
                let named = field.file_name().is_some_and(|n| !n.is_empty());
                let bytes = field.bytes().await.unwrap_or_default();
                file = (named && bytes.starts_with(b"OggS")).then_some(bytes.len());
            }
            Some("model") => model = field.text().await.ok().filter(|m| !m.is_empty()),
            _ => {}
        }
    }
    if file.is_none() || model.is_none() {
        return bad_request("file (an audio file with a name) and model are required");
    }
    (
        StatusCode::OK,
        Json(
            json!({"text": "Сколько стоит букет из 25 роз?", "usage": {"type": "duration", "seconds": 4}}),
        ),
    )
}

fn bad_request(message: &str) -> (StatusCode, Json<Value>) {
    (
        StatusCode::BAD_REQUEST,
        Json(
            json!({"error": {"message": message, "type": "invalid_request_error", "param": null, "code": null}}),
        ),
    )
}

async fn completions(
    State(state): State<Arc<Mutex<LlmState>>>,
    headers: HeaderMap,
    Json(body): Json<Value>,
) -> (StatusCode, Json<Value>) {
    let (hang, latency, down, key) = {
        let s = lock(&state);
        let model = body["model"].as_str().unwrap_or_default().to_owned();
        (
            s.hang,
            s.latency,
            s.down.contains(&model),
            s.api_key.clone(),
        )
    };
    tokio::time::sleep(latency).await;
    if hang {
        tokio::time::sleep(Duration::from_secs(3600)).await;
    }
    if headers.get("authorization").and_then(|v| v.to_str().ok()) != Some(&format!("Bearer {key}"))
    {
        return (
            StatusCode::UNAUTHORIZED,
            Json(
                json!({"error": {"message": "Incorrect API key provided", "type": "invalid_request_error", "param": null, "code": "invalid_api_key"}}),
            ),
        );
    }
    let Some(model) = body["model"].as_str().filter(|m| !m.is_empty()) else {
        return bad_request("you must provide a model parameter");
    };
    let Some(messages) = body["messages"].as_array().filter(|m| !m.is_empty()) else {
        return bad_request("messages must be a non-empty array");
    };
    let well_formed = messages.iter().all(|m| {
        matches!(m["role"].as_str(), Some("system" | "user" | "assistant"))
            && m["content"].is_string()
    });
    if !well_formed {
        return bad_request("each message needs a role and string content");
    }
    lock(&state).calls.push(model.to_owned());
    if down {
        return (
            StatusCode::INTERNAL_SERVER_ERROR,
            Json(
                json!({"error": {"message": "The server had an error", "type": "server_error", "param": null, "code": null}}),
            ),
        );
    }
    let system = messages[0]["content"].as_str().unwrap_or_default();
    let last_user = messages
        .iter()
        .rev()
        .find(|m| m["role"] == "user")
        .and_then(|m| m["content"].as_str())
        .unwrap_or_default()
        .to_lowercase();
    if body["response_format"]["type"] != "json_object" {
        lock(&state).prompts.push(system.to_owned());
    }
    let content = if body["response_format"]["type"] == "json_object" {
        let intent = if last_user.contains("привет") || last_user.contains("здравств")
        {
            "greeting"
        } else if last_user.contains("стоит") || last_user.contains("цена") {
            "question_price"
        } else if last_user.contains("жалоб") {
            "complaint"
        } else if last_user.contains("погод") {
            "off_topic"
        } else {
            "question_other"
        };
        // A topic only when the prompt offers it, as a model would.
        let topic = (system.contains("- booking_change:") && last_user.contains("сдвин"))
            .then_some("booking_change");
        json!({"intent": intent, "confidence": 0.9, "language": "ru", "entities": {}, "topic": topic})
            .to_string()
    } else if let Some((_, facts)) = system.split_once("База знаний:") {
        let facts: Vec<&str> = facts
            .lines()
            .filter_map(|l| l.trim().strip_prefix("- "))
            .collect();
        if facts.is_empty() {
            "К сожалению, у меня нет этой информации.".into()
        } else {
            format!("По нашим данным: {}", facts.join("; "))
        }
    } else {
        format!("[{model}] Здравствуйте! Чем могу помочь?")
    };
    (
        StatusCode::OK,
        Json(json!({
            "id": "chatcmpl-test", "object": "chat.completion", "created": 1764929737, "model": model,
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content, "refusal": null}, "logprobs": null, "finish_reason": "stop"}],
            "usage": {"prompt_tokens": 10, "completion_tokens": 10, "total_tokens": 20}
        })),
    )
}
