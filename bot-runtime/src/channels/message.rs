//! What every channel shares: the channel itself, a customer's message as
//! the pipeline sees it, a reply, and how a send fails. The channel modules
//! build and send these; nothing here knows a provider.

use std::future::Future;
use std::pin::Pin;

use serde::{Deserialize, Serialize};

/// A conversation's channel, as the database stores it.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Channel {
    #[default]
    Whatsapp,
    Telegram,
    Instagram,
}

impl Channel {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Whatsapp => "whatsapp",
            Self::Telegram => "telegram",
            Self::Instagram => "instagram",
        }
    }

    pub fn from_db(value: &str) -> Option<Self> {
        match value {
            "whatsapp" => Some(Self::Whatsapp),
            "telegram" => Some(Self::Telegram),
            "instagram" => Some(Self::Instagram),
            _ => None,
        }
    }

    /// The longest text one message may carry, in UTF-16 code units (what
    /// Telegram counts; a safe measure for the others too).
    pub fn max_text(self) -> usize {
        match self {
            // WhatsApp takes 65,536 characters; ChatFlow passes them through.
            Self::Whatsapp => 65_536,
            Self::Telegram => 4_096,
            // Meta's Send API: "text must be UTF-8 and less than 1000 characters".
            Self::Instagram => 999,
        }
    }

    /// The circuit breaker's service name for sends on this channel.
    pub fn service(self) -> &'static str {
        match self {
            Self::Whatsapp => "chatflow",
            Self::Telegram => "telegram",
            Self::Instagram => "instagram",
        }
    }
}

/// A customer's message, normalized from the channel's payload.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Inbound {
    #[serde(default)]
    pub channel: Channel,
    /// Unique across the tenant's channels (Telegram's are prefixed `tg:`).
    pub message_id: String,
    /// The channel address replies go to (WhatsApp `remoteJid`, Telegram chat
    /// id, Instagram-scoped id).
    pub sender: String,
    pub sender_name: Option<String>,
    /// Digits of the phone number, when the address is a phone.
    pub phone: Option<String>,
    pub text: Option<String>,
    pub media: Option<Media>,
    pub timestamp: Option<i64>,
    /// Sent from the business's own account (`metadata.fromMe`, Instagram's
    /// echoes): a manager answering from the app, or the bot's own reply.
    #[serde(default)]
    pub from_me: bool,
    /// The language the customer's app is set to (Telegram's `language_code`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub language_hint: Option<String>,
    /// Telegram's `/start`: the customer opened the bot.
    #[serde(default)]
    pub start: bool,
}

/// How old a provider's send time may be when its webhook arrives. Telegram
/// keeps undelivered updates for 24 hours and Meta retries a failing webhook
/// for about a day and a half; an older event is a replay (a body copied from
/// a log), not a delivery.
pub const REPLAY_WINDOW_SECS: i64 = 72 * 3600;

impl Inbound {
    /// Sent longer ago than [`REPLAY_WINDOW_SECS`] by the provider's own clock
    /// (events without a time are judged by their id alone).
    pub fn stale(&self, now: i64) -> bool {
        self.timestamp
            .is_some_and(|sent| now.saturating_sub(sent) > REPLAY_WINDOW_SECS)
    }
}

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Media {
    pub kind: MediaKind,
    pub url: Option<String>,
    /// Telegram's file id, turned into a download URL when needed.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub file_id: Option<String>,
    pub mimetype: Option<String>,
    pub file_name: Option<String>,
    pub caption: Option<String>,
    pub seconds: Option<u32>,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MediaKind {
    Image,
    Voice,
    Audio,
    Document,
    Video,
    Other,
}

/// Why a well-formed JSON webhook is not a message to answer. The channel gets
/// a 200 for these (it would only retry), and the input is logged for replay.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum Ignored {
    #[error("no message id")]
    NoMessageId,
    #[error("no sender")]
    NoSender,
    #[error("group chats, channels and broadcasts are not answered")]
    NotPrivate,
    #[error("neither text nor media")]
    Empty,
    #[error("not a message ({0})")]
    NotAMessage(&'static str),
}

/// A reply to send; the pipeline stores it in the outbox as JSON.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "lowercase")]
pub enum Outgoing {
    Text { text: String },
}

#[derive(Debug, thiserror::Error)]
pub enum SendError {
    #[error("{service} is unreachable: {why}")]
    Unreachable { service: &'static str, why: String },
    #[error("{service} answered HTTP {status}: {body}")]
    Rejected {
        service: &'static str,
        status: u16,
        body: String,
    },
    /// Retrying cannot help (the customer blocked the bot, the 24-hour
    /// window closed, the channel is not configured): give up at once.
    #[error("{service} will not deliver it: {why}")]
    Refused { service: &'static str, why: String },
}

impl SendError {
    pub fn is_permanent(&self) -> bool {
        matches!(self, Self::Refused { .. })
    }
}

/// What the outbox needs of a channel: send one part of a reply to an address.
pub trait Sender: Send + Sync {
    /// `key` is unique per part: ChatFlow takes it as its idempotency key;
    /// Telegram and Instagram have none.
    fn send<'a>(&'a self, address: &'a str, text: &'a str, key: &'a str) -> SendFuture<'a>;
}

pub type SendFuture<'a> = Pin<Box<dyn Future<Output = Result<(), SendError>> + Send + 'a>>;
