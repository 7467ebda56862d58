//! Instagram Direct through Meta's Graph API (Messenger Platform for
//! Instagram).
//!
//! Webhook: Meta first checks the URL with `GET ?hub.mode=subscribe&
//! hub.verify_token=…&hub.challenge=…` (answer the challenge when the token is
//! ours); every delivery is then a POST signed with the app secret in
//! `X-Hub-Signature-256: sha256=<HMAC-SHA256 of the body>`, holding
//! `{"object":"instagram","entry":[{"id","time","messaging":[event…]}]}`, and
//! each event is stored as its own inbox row. Replies: `POST
//! {base}/{version}/{account}/messages` with `{"recipient":{"id"},
//! "messaging_type":"RESPONSE","message":{"text"}}`, allowed within 24 hours
//! of the customer's last message.

use std::time::Duration;

use serde_json::{Value, json};

use super::message::{Channel, Ignored, Inbound, Media, MediaKind, SendError};

/// Instagram Direct through the Graph API.
#[derive(Clone, Debug)]
pub struct InstagramConfig {
    pub api_base_url: String,
    pub api_version: String,
    pub account_id: String,
    /// The Send API's access token.
    pub access_token: String,
    /// Signs every delivery (`X-Hub-Signature-256`).
    pub app_secret: Vec<u8>,
    /// Echoed in the subscription handshake.
    pub verify_token: String,
}

pub const SIGNATURE_HEADER: &str = "x-hub-signature-256";
const SERVICE: &str = "Instagram";
/// Replies are allowed this long after the customer's last message.
pub const MESSAGING_WINDOW: Duration = Duration::from_secs(24 * 3600);

/// The messaging events of one delivery, each as it will be stored.
pub fn events(delivery: &Value) -> Result<Vec<Value>, Ignored> {
    if delivery.get("object").and_then(Value::as_str) != Some("instagram") {
        return Err(Ignored::NotAMessage("not an Instagram delivery"));
    }
    let events: Vec<Value> = delivery
        .get("entry")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .flat_map(|entry| {
            entry
                .get("messaging")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default()
        })
        .collect();
    if events.is_empty() {
        return Err(Ignored::NotAMessage("no messaging events"));
    }
    Ok(events)
}

fn id_of<'a>(event: &'a Value, who: &str) -> Option<&'a str> {
    event
        .get(who)?
        .get("id")?
        .as_str()
        .filter(|s| !s.is_empty())
}

/// Reads one messaging event. Reads, reactions, deleted and unsupported
/// messages are not messages to answer; the business's own messages (echoes)
/// are `from_me`, addressed by the customer they went to.
pub fn parse_event(event: &Value) -> Result<Inbound, Ignored> {
    let message = event
        .get("message")
        .filter(|m| m.is_object())
        .ok_or(Ignored::NotAMessage(
            "not a message (read, reaction or postback)",
        ))?;
    let flag = |name: &str| message.get(name).and_then(Value::as_bool) == Some(true);
    if flag("is_deleted") || flag("is_unsupported") {
        return Err(Ignored::NotAMessage("deleted or unsupported message"));
    }
    let message_id = message
        .get("mid")
        .and_then(Value::as_str)
        .filter(|s| !s.is_empty())
        .ok_or(Ignored::NoMessageId)?;
    let from_me = flag("is_echo");
    let customer = if from_me {
        id_of(event, "recipient")
    } else {
        id_of(event, "sender")
    }
    .ok_or(Ignored::NoSender)?;
    let text = message
        .get("text")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let media = message
        .get("attachments")
        .and_then(Value::as_array)
        .and_then(|a| a.first())
        .map(|a| {
            let kind = match a.get("type").and_then(Value::as_str).unwrap_or("") {
                "image" => MediaKind::Image,
                "audio" => MediaKind::Voice,
                "video" | "ig_reel" | "reel" => MediaKind::Video,
                "file" => MediaKind::Document,
                _ => MediaKind::Other,
            };
            Media {
                kind,
                url: a
                    .pointer("/payload/url")
                    .and_then(Value::as_str)
                    .map(str::to_owned),
                file_id: None,
                mimetype: None,
                file_name: None,
                caption: None,
                seconds: None,
            }
        });
    if text.is_none() && media.is_none() {
        return Err(Ignored::Empty);
    }
    Ok(Inbound {
        channel: Channel::Instagram,
        message_id: message_id.to_owned(),
        sender: customer.to_owned(),
        sender_name: None,
        phone: None,
        text,
        media,
        timestamp: event
            .get("timestamp")
            .and_then(Value::as_i64)
            .map(|ms| ms / 1000),
        from_me,
        language_hint: None,
        start: false,
    })
}

pub struct InstagramClient {
    http: reqwest::Client,
    config: InstagramConfig,
}

impl InstagramClient {
    pub fn new(config: InstagramConfig) -> Self {
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .unwrap_or_default();
        Self { http, config }
    }

    pub fn app_secret(&self) -> &[u8] {
        &self.config.app_secret
    }

    pub fn verify_token(&self) -> &str {
        &self.config.verify_token
    }

    /// Sends `text` to the Instagram-scoped id `recipient`.
    pub async fn send(&self, recipient: &str, text: &str) -> Result<(), SendError> {
        let c = &self.config;
        let url = format!(
            "{}/{}/{}/messages",
            c.api_base_url.trim_end_matches('/'),
            c.api_version,
            c.account_id
        );
        let response = self
            .http
            .post(url)
            // In a header, not the query: URLs end up in logs.
            .bearer_auth(&c.access_token)
            .json(&json!({
                "recipient": {"id": recipient},
                "messaging_type": "RESPONSE",
                "message": {"text": text},
            }))
            .send()
            .await
            .map_err(|e| SendError::Unreachable {
                service: SERVICE,
                why: e.without_url().to_string(),
            })?;
        let status = response.status();
        if status.is_success() {
            return Ok(());
        }
        let body: Value = response.json().await.unwrap_or(Value::Null);
        Err(graph_error(status.as_u16(), &body))
    }
}

/// Graph API errors: `{"error":{"message","type","code","error_subcode"}}`.
fn graph_error(status: u16, body: &Value) -> SendError {
    let error = &body["error"];
    let code = error["code"].as_i64().unwrap_or(0);
    let subcode = error["error_subcode"].as_i64().unwrap_or(0);
    let message: String = error["message"]
        .as_str()
        .unwrap_or("no error message")
        .chars()
        .take(300)
        .collect();
    match (code, subcode) {
        // Outside the 24-hour window; the person is unavailable or blocked us.
        (10, 2_018_278) | (551, _) | (200, _) => SendError::Refused {
            service: SERVICE,
            why: format!("{message} (code {code}/{subcode})"),
        },
        // Rate limits: retried with backoff.
        (4 | 17 | 32 | 613, _) => SendError::Unreachable {
            service: SERVICE,
            why: format!("rate limited: {message}"),
        },
        _ => SendError::Rejected {
            service: SERVICE,
            status,
            body: format!("{message} (code {code}/{subcode})"),
        },
    }
}

/// Whether a reply may still go out (Meta's standard messaging window).
pub fn within_window(
    last_customer_message: Option<chrono::DateTime<chrono::Utc>>,
    now: chrono::DateTime<chrono::Utc>,
) -> bool {
    last_customer_message.is_some_and(|at| {
        now.signed_duration_since(at)
            .to_std()
            .is_ok_and(|age| age <= MESSAGING_WINDOW)
            || at > now
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn delivery(events: Value) -> Value {
        json!({"object": "instagram", "entry": [{"id": "17841400000000001", "time": 1_764_929_737_000_i64, "messaging": events}]})
    }

    fn event(message: Value) -> Value {
        json!({"sender": {"id": "6201"}, "recipient": {"id": "17841400000000001"}, "timestamp": 1_764_929_737_000_i64, "message": message})
    }

    #[test]
    fn a_delivery_yields_each_messaging_event() {
        let d = delivery(json!([
            event(json!({"mid": "m1", "text": "Привет"})),
            event(json!({"mid": "m2", "text": "Цена?"}))
        ]));
        let found = events(&d).expect("events");
        assert_eq!(found.len(), 2);
        let m = parse_event(&found[1]).expect("a message");
        assert_eq!(
            (m.channel, m.message_id.as_str(), m.sender.as_str()),
            (Channel::Instagram, "m2", "6201")
        );
        assert_eq!(m.text.as_deref(), Some("Цена?"));
        assert_eq!(m.timestamp, Some(1_764_929_737));
        assert!(events(&json!({"object": "page", "entry": []})).is_err());
        assert!(events(&delivery(json!([]))).is_err());
    }

    #[test]
    fn attachments_echoes_and_other_events() {
        let m = parse_event(&event(json!({"mid": "m3", "attachments": [{"type": "audio", "payload": {"url": "https://cdn.example/a.mp4"}}]}))).expect("voice");
        let media = m.media.expect("media");
        assert_eq!(
            (media.kind, media.url.as_deref()),
            (MediaKind::Voice, Some("https://cdn.example/a.mp4"))
        );
        let echo = parse_event(&json!({"sender": {"id": "17841400000000001"}, "recipient": {"id": "6201"}, "message": {"mid": "m4", "text": "Ответ менеджера", "is_echo": true}})).expect("echo");
        assert!(echo.from_me);
        assert_eq!(echo.sender, "6201", "addressed by the customer");
        assert!(matches!(
            parse_event(&json!({"sender": {"id": "6201"}, "read": {"mid": "m1"}})),
            Err(Ignored::NotAMessage(_))
        ));
        assert!(matches!(
            parse_event(&event(json!({"mid": "m5", "is_deleted": true}))),
            Err(Ignored::NotAMessage(_))
        ));
        assert_eq!(
            parse_event(&event(json!({"text": "no id"}))),
            Err(Ignored::NoMessageId)
        );
        assert_eq!(
            parse_event(&event(json!({"mid": "m6"}))),
            Err(Ignored::Empty)
        );
    }

    #[test]
    fn graph_errors_are_classified() {
        let window = json!({"error": {"message": "This message is sent outside of allowed window.", "type": "OAuthException", "code": 10, "error_subcode": 2_018_278}});
        assert!(graph_error(400, &window).is_permanent());
        let limited = json!({"error": {"message": "Calls to this api have exceeded the rate limit.", "code": 613}});
        assert!(matches!(
            graph_error(400, &limited),
            SendError::Unreachable { .. }
        ));
        let token = json!({"error": {"message": "Invalid OAuth access token.", "code": 190}});
        assert!(matches!(
            graph_error(401, &token),
            SendError::Rejected { status: 401, .. }
        ));
    }

    #[test]
    fn the_window_is_24_hours_from_the_customers_last_message() {
        let now = chrono::Utc::now();
        assert!(within_window(Some(now - chrono::Duration::hours(23)), now));
        assert!(!within_window(Some(now - chrono::Duration::hours(25)), now));
        assert!(!within_window(None, now), "never wrote: no window");
    }
}
