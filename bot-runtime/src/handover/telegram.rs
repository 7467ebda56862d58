//! Managers in a Telegram forum supergroup, one topic per customer (what the
//! production deployment settled on). The card is pinned in the topic with
//! Take / Return to bot / Resolve buttons; managers answer in the topic and
//! their replies reach the customer; `/close` returns the conversation to the
//! bot. Sends go through teloxide's `Throttle`, which queues (never drops)
//! within Telegram's per-chat and per-group limits.

use teloxide::adaptors::Throttle;
use teloxide::adaptors::throttle::Limits;
use teloxide::payloads::{AnswerCallbackQuerySetters, SendMessageSetters};
use teloxide::requests::{Requester, RequesterExt};
use teloxide::types::{
    CallbackQuery, ChatId, InlineKeyboardButton, InlineKeyboardMarkup, Message, MessageId,
    ThreadId, Update, UpdateKind, User,
};
use teloxide::{ApiError, Bot, RequestError};
use truffles_crds::client::{HandoverAdapterType, TelegramHandover};
use uuid::Uuid;

use super::adapter::Manager;
use super::adapter::{
    Adapter, AdapterConfig, AdapterError, Delivered, Delivery, Kind, Notice, Resolution, secret,
};

const SERVICE: &str = "Telegram";
/// Telegram's limit for a forum topic's name.
const TOPIC_NAME_MAX: usize = 128;

pub struct Telegram {
    bot: Throttle<Bot>,
    chat: ChatId,
    use_topics: bool,
}

impl Telegram {
    /// `per_minute`: messages per minute to the group (Telegram allows about 20).
    pub fn new(config: &AdapterConfig, per_minute: u32) -> Result<Self, AdapterError> {
        let spec: &TelegramHandover =
            config
                .spec
                .telegram
                .as_ref()
                .ok_or_else(|| AdapterError::Misconfigured {
                    adapter: "telegram",
                    why: "the adapter has no `telegram` block".into(),
                })?;
        let token = secret(&config.secrets, "telegram", "token")?;
        let api =
            reqwest::Url::parse(&spec.api_base_url).map_err(|e| AdapterError::Misconfigured {
                adapter: "telegram",
                why: format!("apiBaseUrl: {e}"),
            })?;
        let chat = spec
            .chat_id
            .parse::<i64>()
            .map_err(|e| AdapterError::Misconfigured {
                adapter: "telegram",
                why: format!("chatId: {e}"),
            })?;
        let limits = Limits {
            messages_per_min_channel_or_supergroup: per_minute,
            messages_per_min_chat: per_minute,
            messages_per_sec_chat: (per_minute / 20).max(1),
            ..Limits::default()
        };
        Ok(Self {
            bot: Bot::new(token).set_api_url(api).throttle(limits),
            chat: ChatId(chat),
            use_topics: spec.use_topics,
        })
    }

    pub fn chat(&self) -> ChatId {
        self.chat
    }

    /// Whether each customer has a forum topic (else replies go to the card).
    pub fn use_topics(&self) -> bool {
        self.use_topics
    }

    pub fn bot(&self) -> &Throttle<Bot> {
        &self.bot
    }

    fn thread(external_ref: Option<&str>) -> Option<ThreadId> {
        external_ref
            .and_then(|r| r.parse::<i32>().ok())
            .map(|id| ThreadId(MessageId(id)))
    }

    /// A topic for the customer (when topics are on), the card in it, pinned.
    /// Returns the handle later messages go to: the topic, or the card itself.
    async fn open_card(&self, notice: &Notice) -> Result<String, AdapterError> {
        let thread = if self.use_topics {
            let topic = self
                .bot
                .create_forum_topic(self.chat, topic_name(notice))
                .await
                .map_err(api_error)?;
            Some(topic.thread_id)
        } else {
            None
        };
        let mut card = self
            .bot
            .send_message(self.chat, notice.card.clone())
            .reply_markup(buttons(notice.handover.id));
        if let Some(thread) = thread {
            card = card.message_thread_id(thread);
        }
        let card = card.await.map_err(api_error)?;
        // Pinning needs a right the group may not give; the card is there anyway.
        if let Err(e) = self.bot.pin_chat_message(self.chat, card.id).await {
            tracing::warn!(error = %e, "could not pin the handover card");
        }
        Ok(match thread {
            Some(ThreadId(MessageId(id))) => id.to_string(),
            None => card.id.0.to_string(),
        })
    }

    async fn post(&self, external_ref: Option<&str>, text: String) -> Result<(), RequestError> {
        let mut message = self.bot.send_message(self.chat, text);
        match (self.use_topics, external_ref) {
            (true, r) => {
                if let Some(thread) = Self::thread(r) {
                    message = message.message_thread_id(thread);
                }
            }
            (false, Some(card)) => {
                if let Ok(id) = card.parse::<i32>() {
                    message = message.reply_parameters(
                        teloxide::types::ReplyParameters::new(MessageId(id))
                            .allow_sending_without_reply(),
                    );
                }
            }
            (false, None) => {}
        }
        message.await.map(|_| ())
    }

    async fn deliver_notice(&self, notice: &Notice) -> Result<Delivered, AdapterError> {
        let h = &notice.handover;
        if notice.kind == Kind::Card {
            let handle = self.open_card(notice).await?;
            return Ok(Delivered {
                response: serde_json::json!({"chat_id": self.chat.0, "ref": handle}),
                external_ref: Some(handle),
            });
        }
        let text = notice_text(notice);
        let mut new_ref = None;
        let mut target = h.external_ref.clone();
        if target.is_none() {
            // The card never reached the group (e.g. a fallback took it): open one now.
            let handle = self.open_card(notice).await?;
            new_ref = Some(handle.clone());
            target = Some(handle);
        }
        match self.post(target.as_deref(), text.clone()).await {
            Ok(()) => {}
            Err(e) if self.use_topics && topic_gone(&e) => {
                // A manager deleted the topic: a new one, with the card again.
                let handle = self.open_card(notice).await?;
                self.post(Some(&handle), text).await.map_err(api_error)?;
                new_ref = Some(handle);
            }
            Err(e) => return Err(api_error(e)),
        }
        Ok(Delivered {
            response: serde_json::json!({"chat_id": self.chat.0, "ref": new_ref.as_ref().or(target.as_ref())}),
            external_ref: new_ref,
        })
    }

    /// A short message in the handover's topic (answers to managers' actions).
    pub async fn say(&self, external_ref: Option<&str>, text: String) {
        if let Err(e) = self.post(external_ref, text).await {
            tracing::warn!(error = %e, "could not post to the managers' group");
        }
    }

    /// The small notification a button press gets.
    pub async fn answer(&self, query: &CallbackQuery, text: &str, alert: bool) {
        let answer = self
            .bot
            .answer_callback_query(query.id.clone())
            .text(text.chars().take(200).collect::<String>())
            .show_alert(alert);
        if let Err(e) = answer.await {
            tracing::warn!(error = %e, "could not answer a button press");
        }
    }

    /// Long polling (when the runtime has no public HTTPS address for a webhook).
    pub async fn poll(&self, offset: i32) -> Result<Vec<Update>, RequestError> {
        crate::channels::telegram::poll(self.bot.inner(), offset).await
    }

    /// Points Telegram at the runtime's webhook, with the secret token it must send.
    pub async fn set_webhook(&self, url: &str, secret_token: &str) -> Result<(), AdapterError> {
        crate::channels::telegram::set_webhook(self.bot.inner(), url, secret_token)
            .await
            .map_err(|why| AdapterError::Rejected {
                service: SERVICE,
                why,
            })
    }
}

impl Adapter for Telegram {
    fn kind(&self) -> HandoverAdapterType {
        HandoverAdapterType::Telegram
    }
    fn deliver<'a>(&'a self, notice: &'a Notice) -> Delivery<'a> {
        Box::pin(self.deliver_notice(notice))
    }
}

fn api_error(e: RequestError) -> AdapterError {
    let why = crate::channels::telegram::describe(&e);
    match e {
        RequestError::Api(_) | RequestError::RetryAfter(_) => AdapterError::Rejected {
            service: SERVICE,
            why,
        },
        _ => AdapterError::Unreachable {
            service: SERVICE,
            why,
        },
    }
}

/// The topic was deleted (or closed) by a manager.
fn topic_gone(e: &RequestError) -> bool {
    let RequestError::Api(api) = e else {
        return false;
    };
    let text = match api {
        ApiError::Unknown(t) => t.to_ascii_lowercase(),
        other => other.to_string().to_ascii_lowercase(),
    };
    [
        "thread not found",
        "topic_deleted",
        "topic_closed",
        "topic deleted",
    ]
    .iter()
    .any(|needle| text.contains(needle))
}

fn topic_name(notice: &Notice) -> String {
    let h = &notice.handover;
    let who = h.user_name.as_deref().unwrap_or("Клиент");
    let name = match &h.phone {
        Some(phone) => format!("{who} · +{phone} · {}", h.channel),
        None => format!("{who} · {}", h.channel),
    };
    name.chars().take(TOPIC_NAME_MAX).collect()
}

/// The managers' messages for each kind of notice.
pub fn notice_text(notice: &Notice) -> String {
    let text = notice.text.as_deref().unwrap_or("");
    match notice.kind {
        Kind::Card => notice.card.clone(),
        Kind::CustomerMessage => format!("💬 Клиент: {text}"),
        Kind::DeliveryFailed => format!("⚠️ Не доставлено клиенту: {text}"),
        Kind::Reminder => format!("⏰ Разговор никто не взял: {text}"),
        Kind::Closed => format!("🤖 Разговор вернулся к боту: {text}"),
    }
}

/// Resolution types (docs/architecture.md, "Handover"), with the managers' labels.
fn resolution_button(r: Resolution) -> &'static str {
    match r {
        Resolution::Solved => "✅ Решено",
        Resolution::Transferred => "↪️ Передано",
        Resolution::Spam => "🚫 Спам",
        Resolution::Other => "… Другое",
    }
}

fn buttons(handover: Uuid) -> InlineKeyboardMarkup {
    InlineKeyboardMarkup::new([
        vec![
            InlineKeyboardButton::callback("✋ Взять", format!("take:{handover}")),
            InlineKeyboardButton::callback("🤖 Вернуть боту", format!("return:{handover}")),
        ],
        Resolution::ALL
            .into_iter()
            .map(|r| {
                InlineKeyboardButton::callback(
                    resolution_button(r),
                    format!("resolve:{handover}:{}", r.as_str()),
                )
            })
            .collect(),
    ])
}

/// A manager in the Telegram group.
fn manager_of(user: &User) -> Manager {
    let name = match &user.username {
        Some(username) => format!("{} (@{username})", user.full_name()),
        None => user.full_name(),
    };
    Manager {
        id: format!("tg:{}", user.id.0),
        name,
    }
}

/// What a manager's update asks for; a pure reading of the update.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum ManagerUpdate {
    Take {
        handover: Uuid,
        manager: Manager,
        query: String,
    },
    Return {
        handover: Uuid,
        manager: Manager,
        query: String,
    },
    Resolve {
        handover: Uuid,
        resolution: Resolution,
        manager: Manager,
        query: String,
    },
    /// A message in a handover's topic (or a reply to its card).
    Reply {
        external_ref: String,
        manager: Manager,
        text: String,
        /// Stable per Telegram message: the relay's idempotency key.
        key: String,
    },
    Close {
        external_ref: String,
        manager: Manager,
    },
    /// Media the customer's channel cannot receive from here (yet).
    Unsupported {
        external_ref: String,
        manager: Manager,
    },
}

/// Reads an update from the managers' group; anything from another chat,
/// from bots, or not about a handover is `None`.
pub fn read_update(update: &Update, chat: ChatId, use_topics: bool) -> Option<ManagerUpdate> {
    match &update.kind {
        UpdateKind::CallbackQuery(q) => read_button(q, chat),
        UpdateKind::Message(m) => read_message(m, chat, use_topics),
        _ => None,
    }
}

fn read_button(q: &CallbackQuery, chat: ChatId) -> Option<ManagerUpdate> {
    if q.message.as_ref()?.chat().id != chat {
        return None;
    }
    let data = q.data.as_deref()?;
    let mut parts = data.split(':');
    let action = parts.next()?;
    let handover = Uuid::parse_str(parts.next()?).ok()?;
    let manager = manager_of(&q.from);
    let query = q.id.0.clone();
    match action {
        "take" => Some(ManagerUpdate::Take {
            handover,
            manager,
            query,
        }),
        "return" => Some(ManagerUpdate::Return {
            handover,
            manager,
            query,
        }),
        "resolve" => {
            let resolution = Resolution::parse(parts.next()?)?;
            Some(ManagerUpdate::Resolve {
                handover,
                resolution,
                manager,
                query,
            })
        }
        _ => None,
    }
}

fn read_message(m: &Message, chat: ChatId, use_topics: bool) -> Option<ManagerUpdate> {
    if m.chat.id != chat {
        return None;
    }
    let from = m.from.as_ref().filter(|u| !u.is_bot)?;
    let external_ref = if use_topics {
        m.thread_id.filter(|_| m.is_topic_message)?.0.0.to_string()
    } else {
        m.reply_to_message()?.id.0.to_string()
    };
    let manager = manager_of(from);
    let text = m.text().or_else(|| m.caption()).map(str::trim);
    match text {
        Some(t) if t == "/close" || t.starts_with("/close@") || t.starts_with("/close ") => {
            Some(ManagerUpdate::Close {
                external_ref,
                manager,
            })
        }
        Some(t) if !t.is_empty() && m.text().is_some() => Some(ManagerUpdate::Reply {
            external_ref,
            manager,
            text: t.to_owned(),
            key: format!("tg:{}:{}", chat.0, m.id.0),
        }),
        _ => Some(ManagerUpdate::Unsupported {
            external_ref,
            manager,
        }),
    }
}

impl ManagerUpdate {
    pub fn manager(&self) -> &Manager {
        match self {
            Self::Take { manager, .. }
            | Self::Return { manager, .. }
            | Self::Resolve { manager, .. }
            | Self::Reply { manager, .. }
            | Self::Close { manager, .. }
            | Self::Unsupported { manager, .. } => manager,
        }
    }
}

/// The secret token Telegram sends with each webhook delivery to the
/// managers' bot (`X-Telegram-Bot-Api-Secret-Token`).
pub fn webhook_token(webhook_secret: &str) -> String {
    crate::channels::telegram::webhook_token(webhook_secret, MANAGERS_BOT)
}

/// The purpose of the managers' bot's webhook token.
pub const MANAGERS_BOT: &str = "telegram-managers";

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    const CHAT: ChatId = ChatId(-1001234567890);

    fn update(v: serde_json::Value) -> Update {
        // From text, as it arrives: teloxide's Update does not read from a `Value`.
        serde_json::from_str(&v.to_string()).expect("a Telegram update")
    }

    fn user(id: u64) -> serde_json::Value {
        json!({"id": id, "is_bot": false, "first_name": "Асель", "username": "asel"})
    }

    fn group() -> serde_json::Value {
        json!({"id": CHAT.0, "type": "supergroup", "title": "Менеджеры", "is_forum": true})
    }

    #[test]
    fn a_take_button_names_the_handover_and_the_manager() {
        let id = Uuid::new_v4();
        let u = update(json!({"update_id": 1, "callback_query": {
            "id": "q1", "from": user(7), "chat_instance": "c",
            "data": format!("take:{id}"),
            "message": {"message_id": 5, "date": 1_764_929_737, "chat": group(), "text": "card"}}}));
        assert_eq!(
            read_update(&u, CHAT, true),
            Some(ManagerUpdate::Take {
                handover: id,
                manager: Manager {
                    id: "tg:7".into(),
                    name: "Асель (@asel)".into()
                },
                query: "q1".into()
            })
        );
    }

    #[test]
    fn a_topic_message_is_a_reply_and_close_returns_to_the_bot() {
        let msg = |text: &str| {
            update(json!({"update_id": 2, "message": {
                "message_id": 42, "date": 1_764_929_737, "chat": group(), "from": user(7),
                "message_thread_id": 99, "is_topic_message": true, "text": text}}))
        };
        match read_update(&msg("Здравствуйте, цена 5000"), CHAT, true) {
            Some(ManagerUpdate::Reply {
                external_ref,
                text,
                key,
                ..
            }) => {
                assert_eq!(external_ref, "99");
                assert_eq!(text, "Здравствуйте, цена 5000");
                assert_eq!(key, format!("tg:{}:42", CHAT.0));
            }
            other => panic!("not a reply: {other:?}"),
        }
        assert!(matches!(
            read_update(&msg("/close@truffles_bot"), CHAT, true),
            Some(ManagerUpdate::Close { .. })
        ));
    }

    #[test]
    fn other_chats_bots_and_general_chatter_are_ignored() {
        let other_chat = update(json!({"update_id": 3, "message": {
            "message_id": 1, "date": 1_764_929_737, "chat": {"id": -100777, "type": "supergroup", "title": "x"},
            "from": user(7), "message_thread_id": 99, "is_topic_message": true, "text": "hi"}}));
        assert_eq!(read_update(&other_chat, CHAT, true), None);
        let bot = update(json!({"update_id": 4, "message": {
            "message_id": 1, "date": 1_764_929_737, "chat": group(),
            "from": {"id": 1, "is_bot": true, "first_name": "bot"},
            "message_thread_id": 99, "is_topic_message": true, "text": "hi"}}));
        assert_eq!(read_update(&bot, CHAT, true), None);
        let general = update(json!({"update_id": 5, "message": {
            "message_id": 1, "date": 1_764_929_737, "chat": group(), "from": user(7), "text": "hi"}}));
        assert_eq!(read_update(&general, CHAT, true), None);
        let forged = update(json!({"update_id": 6, "callback_query": {
            "id": "q", "from": user(7), "chat_instance": "c", "data": "resolve:not-a-uuid:solved",
            "message": {"message_id": 5, "date": 1_764_929_737, "chat": group(), "text": "card"}}}));
        assert_eq!(read_update(&forged, CHAT, true), None);
    }

    #[test]
    fn without_topics_a_reply_to_the_card_is_the_handle() {
        let u = update(json!({"update_id": 7, "message": {
            "message_id": 50, "date": 1_764_929_737, "chat": group(), "from": user(8), "text": "ответ",
            "reply_to_message": {"message_id": 12, "date": 1_764_929_737, "chat": group(), "text": "card"}}}));
        assert!(matches!(
            read_update(&u, CHAT, false),
            Some(ManagerUpdate::Reply { external_ref, .. }) if external_ref == "12"
        ));
    }

    #[test]
    fn the_webhook_token_is_stable_and_telegram_safe() {
        let t = webhook_token("s3cret");
        assert_eq!(t, webhook_token("s3cret"));
        assert_ne!(t, webhook_token("other"));
        assert!(t.chars().all(|c| c.is_ascii_alphanumeric()));
    }
}
