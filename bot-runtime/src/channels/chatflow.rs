//! WhatsApp through ChatFlow: the webhook it posts and the API it offers.
//!
//! Inbound (what a production deployment receives):
//! `{"messageType":"text","message":"вы кто","metadata":{"sender":"Zh.","timestamp":1764929737,
//! "messageId":"3F6E…","remoteJid":"77015705555@s.whatsapp.net"},"mediaData":null}`;
//! media carries `mediaData {type, url|base64, mimetype, fileName, size, caption, ptt, seconds}`
//! and `message: null`. Outbound: `GET {base}/api/v1/send-text?token=&instance_id=&jid=&msg=&msg_id=`.

use std::time::Duration;

use serde_json::Value;

use super::message::{Channel, Ignored, Inbound, Media, MediaKind, SendError};

/// How the WhatsApp channel (ChatFlow) is reached.
#[derive(Clone, Debug)]
pub struct ChatflowConfig {
    pub base_url: String,
    pub instance_id: String,
    pub token: String,
    /// When set, every webhook must carry a valid `X-Signature-256` header.
    pub signature_key: Option<Vec<u8>>,
}

fn str_field<'a>(v: &'a Value, key: &str) -> Option<&'a str> {
    v.get(key)?
        .as_str()
        .map(str::trim)
        .filter(|s| !s.is_empty())
}

/// Parses ChatFlow's webhook body. Wrong types count as missing fields: a
/// hostile or broken payload is ignored, never a crash.
pub fn parse_webhook(body: &Value) -> Result<Inbound, Ignored> {
    let meta = body
        .get("metadata")
        .filter(|m| m.is_object())
        .ok_or(Ignored::NoMessageId)?;
    let message_id = str_field(meta, "messageId").ok_or(Ignored::NoMessageId)?;
    let sender = str_field(meta, "remoteJid").ok_or(Ignored::NoSender)?;
    if sender.ends_with("@g.us") || sender.starts_with("status@") || sender.ends_with("@broadcast")
    {
        return Err(Ignored::NotPrivate);
    }
    let text = str_field(body, "message").map(str::to_owned);
    let media = body.get("mediaData").filter(|m| m.is_object()).map(|m| {
        let mimetype = str_field(m, "mimetype").map(str::to_owned);
        let declared =
            str_field(m, "type").unwrap_or_else(|| str_field(body, "messageType").unwrap_or(""));
        let voice = m.get("ptt").and_then(Value::as_bool) == Some(true);
        Media {
            kind: media_kind(declared, mimetype.as_deref(), voice),
            url: str_field(m, "url").map(str::to_owned),
            file_id: None,
            mimetype,
            file_name: str_field(m, "fileName").map(str::to_owned),
            caption: str_field(m, "caption").map(str::to_owned),
            seconds: m
                .get("seconds")
                .and_then(Value::as_u64)
                .and_then(|s| u32::try_from(s).ok()),
        }
    });
    if text.is_none() && media.is_none() {
        return Err(Ignored::Empty);
    }
    let phone = sender
        .split('@')
        .next()
        .filter(|p| {
            sender.ends_with("@s.whatsapp.net")
                && !p.is_empty()
                && p.bytes().all(|b| b.is_ascii_digit())
        })
        .map(str::to_owned);
    Ok(Inbound {
        channel: Channel::Whatsapp,
        message_id: message_id.to_owned(),
        sender: sender.to_owned(),
        sender_name: str_field(meta, "sender").map(str::to_owned),
        phone,
        text,
        media,
        timestamp: meta.get("timestamp").and_then(Value::as_i64),
        from_me: meta.get("fromMe").and_then(Value::as_bool) == Some(true),
        language_hint: None,
        start: false,
    })
}

fn media_kind(declared: &str, mimetype: Option<&str>, voice: bool) -> MediaKind {
    let mime = mimetype.unwrap_or("");
    match declared {
        _ if voice => MediaKind::Voice,
        "image" | "sticker" => MediaKind::Image,
        "audio" | "ptt" => MediaKind::Audio,
        "document" => MediaKind::Document,
        "video" => MediaKind::Video,
        _ if mime.starts_with("image/") => MediaKind::Image,
        _ if mime.starts_with("audio/") => MediaKind::Audio,
        _ if mime.starts_with("video/") => MediaKind::Video,
        _ if !mime.is_empty() => MediaKind::Document,
        _ => MediaKind::Other,
    }
}

const SERVICE: &str = "ChatFlow";

/// The ChatFlow API client.
#[derive(Clone)]
pub struct ChatflowClient {
    http: reqwest::Client,
    config: ChatflowConfig,
}

impl ChatflowClient {
    pub fn new(config: ChatflowConfig) -> Self {
        // Media sends can take over 30 s at ChatFlow.
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        Self { http, config }
    }

    /// Sends `text` to `jid`; `idempotency_key` becomes ChatFlow's `msg_id`.
    pub async fn send(
        &self,
        jid: &str,
        text: &str,
        idempotency_key: &str,
    ) -> Result<(), SendError> {
        let url = format!(
            "{}/api/v1/send-text",
            self.config.base_url.trim_end_matches('/')
        );
        let response = self
            .http
            .get(url)
            .query(&[
                ("token", self.config.token.as_str()),
                ("instance_id", self.config.instance_id.as_str()),
                ("jid", jid),
                ("msg", text),
                ("msg_id", idempotency_key),
            ])
            .send()
            .await
            // Without the URL: it carries the token.
            .map_err(|e| SendError::Unreachable {
                service: SERVICE,
                why: e.without_url().to_string(),
            })?;
        let status = response.status();
        let body = response.text().await.unwrap_or_default();
        // ChatFlow reports failures in the JSON even with HTTP 200 for some calls.
        let refused = serde_json::from_str::<Value>(&body)
            .ok()
            .and_then(|v| v.get("success").and_then(Value::as_bool))
            == Some(false);
        if status.is_success() && !refused {
            Ok(())
        } else {
            Err(SendError::Rejected {
                service: SERVICE,
                status: status.as_u16(),
                body: body.chars().take(300).collect(),
            })
        }
    }

    /// Whether the API answers at all (any HTTP status counts).
    pub async fn reachable(&self, timeout: Duration) -> bool {
        self.http
            .get(&self.config.base_url)
            .timeout(timeout)
            .send()
            .await
            .is_ok()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn a_text_message_is_parsed() {
        let body = json!({"messageType":"text","message":"вы кто","metadata":{"sender":"Zh.","timestamp":1764929737,"messageId":"3F6E61E2301EC33CF87A","remoteJid":"77015705555@s.whatsapp.net"},"mediaData":null,"nodeData":{}});
        let m = parse_webhook(&body).expect("a message");
        assert_eq!(m.message_id, "3F6E61E2301EC33CF87A");
        assert_eq!(m.sender, "77015705555@s.whatsapp.net");
        assert_eq!(m.phone.as_deref(), Some("77015705555"));
        assert_eq!(m.text.as_deref(), Some("вы кто"));
        assert_eq!(m.sender_name.as_deref(), Some("Zh."));
        assert!(m.media.is_none());
    }

    #[test]
    fn messages_from_the_business_number_are_marked() {
        let body = json!({"messageType":"text","message":"Добрый день, это Дина","metadata":{"messageId":"B1","remoteJid":"77015705555@s.whatsapp.net","fromMe":true}});
        assert!(parse_webhook(&body).expect("a message").from_me);
        let body = json!({"messageType":"text","message":"hi","metadata":{"messageId":"B2","remoteJid":"77015705555@s.whatsapp.net","fromMe":"yes"}});
        assert!(!parse_webhook(&body).expect("a message").from_me);
    }

    #[test]
    fn a_voice_note_without_text_is_media() {
        let body = json!({"messageType":"audio","message":null,"metadata":{"messageId":"A1","remoteJid":"77015705555@s.whatsapp.net"},
            "mediaData":{"type":"audio","url":"https://cdn/x.ogg","mimetype":"audio/ogg; codecs=opus","ptt":true,"seconds":7}});
        let m = parse_webhook(&body).expect("a message");
        let media = m.media.expect("media");
        assert_eq!(media.kind, MediaKind::Voice);
        assert_eq!(media.seconds, Some(7));
        assert!(m.text.is_none());
    }

    #[test]
    fn a_photo_keeps_its_caption() {
        let body = json!({"messageType":"image","message":null,"metadata":{"messageId":"A2","remoteJid":"7701@s.whatsapp.net"},
            "mediaData":{"type":"image","url":"https://cdn/p.jpg","mimetype":"image/jpeg","caption":"сколько стоит?"}});
        let media = parse_webhook(&body)
            .expect("a message")
            .media
            .expect("media");
        assert_eq!(media.kind, MediaKind::Image);
        assert_eq!(media.caption.as_deref(), Some("сколько стоит?"));
    }

    #[test]
    fn broken_and_hostile_payloads_are_ignored_not_fatal() {
        let cases = [
            (json!({}), Ignored::NoMessageId),
            (json!({"metadata": "x"}), Ignored::NoMessageId),
            (
                json!({"metadata": {"messageId": 5, "remoteJid": "7@s.whatsapp.net"}}),
                Ignored::NoMessageId,
            ),
            (
                json!({"message": "hi", "metadata": {"messageId": "1"}}),
                Ignored::NoSender,
            ),
            (
                json!({"message": "  ", "metadata": {"messageId": "1", "remoteJid": "7@s.whatsapp.net"}}),
                Ignored::Empty,
            ),
            (
                json!({"message": ["x"], "metadata": {"messageId": "1", "remoteJid": "7@s.whatsapp.net"}}),
                Ignored::Empty,
            ),
            (
                json!({"message": "hi", "metadata": {"messageId": "1", "remoteJid": "1203@g.us"}}),
                Ignored::NotPrivate,
            ),
            (
                json!({"message": "hi", "metadata": {"messageId": "1", "remoteJid": "status@broadcast"}}),
                Ignored::NotPrivate,
            ),
        ];
        for (body, expected) in cases {
            assert_eq!(parse_webhook(&body), Err(expected), "{body}");
        }
    }
}
