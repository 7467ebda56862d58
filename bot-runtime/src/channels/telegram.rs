//! Telegram customers: the business's own bot (not the managers' group).
//! Updates arrive by webhook, with the secret token Telegram sends in
//! `X-Telegram-Bot-Api-Secret-Token` checked, or by long polling when the
//! runtime has no public HTTPS address. Replies go through teloxide's
//! `Throttle` (Telegram's per-chat and global limits: queued, never dropped),
//! split to Telegram's 4,096 characters by the outbox.

use std::time::Duration;

use serde_json::Value;
use teloxide::adaptors::Throttle;
use teloxide::adaptors::throttle::Limits;
use teloxide::net::Download;
use teloxide::prelude::*;
use teloxide::types::{FileId, Update, UpdateKind};
use teloxide::{ApiError, RequestError};

use super::message::{Channel, Ignored, Inbound, Media, MediaKind, SendError};

/// The customers' Telegram bot.
#[derive(Clone, Debug)]
pub struct TelegramConfig {
    pub api_base_url: String,
    pub token: String,
}

/// Header Telegram sends with the secret token given to `setWebhook`.
pub const SECRET_HEADER: &str = "x-telegram-bot-api-secret-token";
const SERVICE: &str = "Telegram";

/// Reads a customer's message from an update. Edits, button presses, group
/// and channel posts and other bots are not messages to answer.
pub fn parse_update(payload: &Value) -> Result<Inbound, Ignored> {
    // From text: teloxide's Update does not deserialize from a `Value`.
    let update: Update = serde_json::from_str(&payload.to_string())
        .map_err(|_| Ignored::NotAMessage("not a Telegram update"))?;
    let UpdateKind::Message(m) = &update.kind else {
        return Err(Ignored::NotAMessage("not a new message"));
    };
    read_message(m)
}

fn read_message(m: &Message) -> Result<Inbound, Ignored> {
    if !m.chat.is_private() {
        return Err(Ignored::NotPrivate);
    }
    let from = m.from.as_ref().ok_or(Ignored::NoSender)?;
    if from.is_bot {
        return Err(Ignored::NotAMessage("sent by a bot"));
    }
    let text = m
        .text()
        .map(str::trim)
        .filter(|t| !t.is_empty())
        .map(str::to_owned);
    let start = text
        .as_deref()
        .is_some_and(|t| t == "/start" || t.starts_with("/start "));
    let caption = m.caption().map(str::to_owned);
    let file = |kind, id: &FileId, mime: Option<String>, name: Option<String>, seconds| Media {
        kind,
        url: None,
        file_id: Some(id.0.clone()),
        mimetype: mime,
        file_name: name,
        caption: caption.clone(),
        seconds,
    };
    let media = if let Some(v) = m.voice() {
        Some(file(
            MediaKind::Voice,
            &v.file.id,
            v.mime_type.as_ref().map(ToString::to_string),
            None,
            Some(v.duration.seconds()),
        ))
    } else if let Some(a) = m.audio() {
        Some(file(
            MediaKind::Audio,
            &a.file.id,
            a.mime_type.as_ref().map(ToString::to_string),
            a.file_name.clone(),
            Some(a.duration.seconds()),
        ))
    } else if let Some(largest) = m.photo().and_then(<[_]>::last) {
        Some(file(MediaKind::Image, &largest.file.id, None, None, None))
    } else if let Some(d) = m.document() {
        Some(file(
            MediaKind::Document,
            &d.file.id,
            d.mime_type.as_ref().map(ToString::to_string),
            d.file_name.clone(),
            None,
        ))
    } else {
        m.video().map(|v| {
            file(
                MediaKind::Video,
                &v.file.id,
                v.mime_type.as_ref().map(ToString::to_string),
                v.file_name.clone(),
                Some(v.duration.seconds()),
            )
        })
    };
    if text.is_none() && media.is_none() {
        return Err(Ignored::Empty);
    }
    Ok(Inbound {
        channel: Channel::Telegram,
        // Message ids are per chat.
        message_id: format!("tg:{}:{}", m.chat.id.0, m.id.0),
        sender: m.chat.id.0.to_string(),
        sender_name: Some(from.full_name()),
        phone: None,
        text,
        media,
        timestamp: Some(m.date.timestamp()),
        from_me: false,
        language_hint: from.language_code.clone(),
        start,
    })
}

/// The secret token for one of the tenant's Telegram webhooks, derived from
/// its webhook secret (nothing more to store); `purpose` keeps the customers'
/// and the managers' bots apart. Telegram allows `[A-Za-z0-9_-]`.
pub fn webhook_token(webhook_secret: &str, purpose: &str) -> String {
    use hmac::{Hmac, Mac};
    let mut mac = <Hmac<sha2::Sha256> as Mac>::new_from_slice(webhook_secret.as_bytes())
        .expect("HMAC takes keys of any length");
    mac.update(purpose.as_bytes());
    hex::encode(mac.finalize().into_bytes())
}

/// Whether a webhook delivery carries the secret token of `purpose`
/// (`X-Telegram-Bot-Api-Secret-Token`), compared in constant time.
pub fn token_ok(headers: &axum::http::HeaderMap, webhook_secret: &str, purpose: &str) -> bool {
    use subtle::ConstantTimeEq;
    let given = headers
        .get(SECRET_HEADER)
        .map(|v| v.as_bytes())
        .unwrap_or_default();
    given
        .ct_eq(webhook_token(webhook_secret, purpose).as_bytes())
        .into()
}

/// What went wrong, without the request URL (it carries the bot token).
pub fn describe(e: &RequestError) -> String {
    match e {
        RequestError::Api(api) => api.to_string(),
        RequestError::RetryAfter(seconds) => {
            format!("rate limited for {} s", seconds.duration().as_secs())
        }
        RequestError::Network(n) => match std::error::Error::source(&**n) {
            _ if n.is_timeout() => "timed out".into(),
            Some(cause) => cause.to_string(),
            None => "the request failed".into(),
        },
        other => other.to_string(),
    }
}

fn send_error(e: RequestError) -> SendError {
    let why = describe(&e);
    match e {
        // The customer blocked the bot or deleted the account: retrying cannot help.
        RequestError::Api(
            ApiError::BotBlocked
            | ApiError::UserDeactivated
            | ApiError::ChatNotFound
            | ApiError::CantInitiateConversation,
        ) => SendError::Refused {
            service: SERVICE,
            why,
        },
        RequestError::Api(_) => SendError::Rejected {
            service: SERVICE,
            status: 400,
            body: why,
        },
        _ => SendError::Unreachable {
            service: SERVICE,
            why,
        },
    }
}

pub struct TelegramClient {
    bot: Throttle<Bot>,
}

impl TelegramClient {
    pub fn new(config: &TelegramConfig) -> Self {
        let mut bot = Bot::new(&config.token);
        // The CRD's pattern admits only http(s) URLs.
        if let Ok(url) = reqwest::Url::parse(&config.api_base_url) {
            bot = bot.set_api_url(url);
        }
        Self {
            bot: bot.throttle(Limits::default()),
        }
    }

    pub async fn send(&self, chat: &str, text: &str) -> Result<(), SendError> {
        let chat: i64 = chat.parse().map_err(|_| SendError::Refused {
            service: SERVICE,
            why: "the address is not a Telegram chat id".into(),
        })?;
        self.bot
            .send_message(ChatId(chat), text)
            .await
            .map(|_| ())
            .map_err(send_error)
    }

    /// Downloads a file the customer sent (`getFile`, then the file URL).
    pub async fn download(&self, file_id: &str, max_bytes: u32) -> Result<Vec<u8>, String> {
        let bot = self.bot.inner();
        let file = bot
            .get_file(FileId(file_id.to_owned()))
            .await
            .map_err(|e| describe(&e))?;
        if file.meta.size > max_bytes {
            return Err(format!("the file has {} bytes", file.meta.size));
        }
        let mut bytes = Vec::new();
        bot.download_file(&file.path, &mut bytes)
            .await
            .map_err(|e| match e {
                teloxide::DownloadError::Network(n) if n.is_timeout() => "timed out".to_owned(),
                teloxide::DownloadError::Network(n) => n
                    .status()
                    .map_or_else(|| "the download failed".to_owned(), |s| format!("HTTP {s}")),
                teloxide::DownloadError::Io(io) => io.to_string(),
            })?;
        Ok(bytes)
    }

    /// Long polling (when the runtime has no public HTTPS address).
    pub async fn poll(&self, offset: i32) -> Result<Vec<Update>, RequestError> {
        poll(self.bot.inner(), offset).await
    }

    pub async fn set_webhook(&self, url: &str, secret_token: &str) -> Result<(), String> {
        set_webhook(self.bot.inner(), url, secret_token).await
    }
}

/// One long poll of a bot's updates (the customers' and the managers' bots).
pub async fn poll(bot: &Bot, offset: i32) -> Result<Vec<Update>, RequestError> {
    use teloxide::payloads::GetUpdatesSetters;
    bot.get_updates().offset(offset).timeout(25).await
}

/// Points Telegram at a runtime's webhook, with the secret token it must send.
pub async fn set_webhook(bot: &Bot, url: &str, secret_token: &str) -> Result<(), String> {
    use teloxide::payloads::SetWebhookSetters;
    let url = reqwest::Url::parse(url).map_err(|e| format!("webhook URL: {e}"))?;
    bot.set_webhook(url)
        .secret_token(secret_token.to_owned())
        .await
        .map(|_| ())
        .map_err(|e| describe(&e))
}

/// How long a failed poll waits before the next one.
pub const POLL_BACKOFF: Duration = Duration::from_secs(5);

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn message(extra: Value) -> Value {
        let mut m = json!({
            "message_id": 7, "date": 1_764_929_737,
            "chat": {"id": 5_550_101, "type": "private", "first_name": "Айгерим"},
            "from": {"id": 5_550_101, "is_bot": false, "first_name": "Айгерим", "last_name": "Н.", "language_code": "kk"}
        });
        if let (Some(m), Some(extra)) = (m.as_object_mut(), extra.as_object()) {
            m.extend(extra.clone());
        }
        json!({"update_id": 1, "message": m})
    }

    #[test]
    fn a_text_message_is_read_with_its_language() {
        let m = parse_update(&message(json!({"text": "Сәлеметсіз бе"}))).expect("a message");
        assert_eq!(m.channel, Channel::Telegram);
        assert_eq!(m.message_id, "tg:5550101:7");
        assert_eq!(m.sender, "5550101");
        assert_eq!(m.sender_name.as_deref(), Some("Айгерим Н."));
        assert_eq!(m.language_hint.as_deref(), Some("kk"));
        assert_eq!(m.text.as_deref(), Some("Сәлеметсіз бе"));
        assert!(!m.start && m.phone.is_none());
    }

    #[test]
    fn start_is_marked() {
        let m = parse_update(&message(json!({"text": "/start promo"}))).expect("a message");
        assert!(m.start);
    }

    #[test]
    fn voice_photo_and_documents_keep_their_file_ids_and_captions() {
        let voice = parse_update(&message(json!({"voice": {"file_id": "V1", "file_unique_id": "u", "duration": 4, "mime_type": "audio/ogg"}})))
            .expect("voice");
        let media = voice.media.expect("media");
        assert_eq!(
            (media.kind, media.file_id.as_deref(), media.seconds),
            (MediaKind::Voice, Some("V1"), Some(4))
        );
        assert!(media.url.is_none(), "no URL: it would carry the bot token");

        let photo = parse_update(&message(json!({"caption": "сколько стоит?", "photo": [
            {"file_id": "small", "file_unique_id": "a", "width": 90, "height": 90},
            {"file_id": "large", "file_unique_id": "b", "width": 1280, "height": 1280}]})))
        .expect("photo");
        let media = photo.media.expect("media");
        assert_eq!(
            (media.kind, media.file_id.as_deref()),
            (MediaKind::Image, Some("large"))
        );
        assert_eq!(media.caption.as_deref(), Some("сколько стоит?"));

        let doc = parse_update(&message(json!({"document": {"file_id": "D1", "file_unique_id": "d", "file_name": "заказ.pdf", "mime_type": "application/pdf"}})))
            .expect("document");
        assert_eq!(
            doc.media.expect("media").file_name.as_deref(),
            Some("заказ.pdf")
        );
    }

    #[test]
    fn groups_bots_edits_and_garbage_are_ignored() {
        let mut group = message(json!({"text": "hi"}));
        group["message"]["chat"] = json!({"id": -100_123, "type": "supergroup", "title": "g"});
        assert_eq!(parse_update(&group), Err(Ignored::NotPrivate));
        let mut bot = message(json!({"text": "hi"}));
        bot["message"]["from"]["is_bot"] = json!(true);
        assert!(matches!(parse_update(&bot), Err(Ignored::NotAMessage(_))));
        let mut edit = message(json!({"text": "hi"}));
        edit["edited_message"] = edit["message"].take();
        if let Some(o) = edit.as_object_mut() {
            o.remove("message");
        }
        assert!(matches!(parse_update(&edit), Err(Ignored::NotAMessage(_))));
        assert!(matches!(
            parse_update(&json!({"update_id": "x"})),
            Err(Ignored::NotAMessage(_))
        ));
        assert_eq!(
            parse_update(&message(json!({"text": "   "}))),
            Err(Ignored::Empty)
        );
    }

    #[test]
    fn webhook_tokens_differ_per_bot_and_are_telegram_safe() {
        let a = webhook_token("secret", "telegram-customers");
        assert_eq!(a, webhook_token("secret", "telegram-customers"));
        assert_ne!(a, webhook_token("secret", "telegram-managers"));
        assert_ne!(a, webhook_token("other", "telegram-customers"));
        assert!(a.len() <= 256 && a.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
