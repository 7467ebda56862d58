//! Customer channels (docs/architecture.md, "How a message flows"): WhatsApp through ChatFlow, a Telegram bot,
//! Instagram Direct. Each one turns its webhook into [`Inbound`] messages and
//! sends [`Outgoing`] replies within its limits; the pipeline, memory,
//! handover, deduplication and rate limits are the same for all of them.

pub mod chatflow;
pub mod instagram;
pub mod message;
pub mod telegram;

use serde_json::Value;

pub use message::{
    Channel, Ignored, Inbound, Media, MediaKind, Outgoing, SendError, SendFuture, Sender,
};

impl Sender for chatflow::ChatflowClient {
    fn send<'a>(&'a self, address: &'a str, text: &'a str, key: &'a str) -> SendFuture<'a> {
        Box::pin(chatflow::ChatflowClient::send(self, address, text, key))
    }
}

impl Sender for telegram::TelegramClient {
    fn send<'a>(&'a self, address: &'a str, text: &'a str, _key: &'a str) -> SendFuture<'a> {
        Box::pin(telegram::TelegramClient::send(self, address, text))
    }
}

impl Sender for instagram::InstagramClient {
    fn send<'a>(&'a self, address: &'a str, text: &'a str, _key: &'a str) -> SendFuture<'a> {
        Box::pin(instagram::InstagramClient::send(self, address, text))
    }
}

/// Parses a stored webhook event of `channel`.
pub fn parse(channel: Channel, payload: &Value) -> Result<Inbound, Ignored> {
    match channel {
        Channel::Whatsapp => chatflow::parse_webhook(payload),
        Channel::Telegram => telegram::parse_update(payload),
        Channel::Instagram => instagram::parse_event(payload),
    }
}

/// Writes a reply the way the channel shows text. Answers and knowledge
/// passages come as Markdown; WhatsApp has its own marks (`*bold*`,
/// `_italic_`), Telegram and Instagram get plain text (no parse mode, so
/// nothing can break their parsers): headings become bold or plain lines,
/// `**bold**` loses or changes its marks, bullets become "•", links "text (url)".
pub fn format(channel: Channel, text: &str) -> String {
    let whatsapp = channel == Channel::Whatsapp;
    let bold = |s: &str| {
        if whatsapp {
            format!("*{s}*")
        } else {
            s.to_owned()
        }
    };
    text.lines()
        .map(|line| {
            let trimmed = line.trim_start();
            let hashes = trimmed.chars().take_while(|&c| c == '#').count();
            if (1..=6).contains(&hashes) && trimmed[hashes..].starts_with(' ') {
                bold(trimmed[hashes..].trim())
            } else if let Some(item) = trimmed
                .strip_prefix("- ")
                .or_else(|| trimmed.strip_prefix("* "))
            {
                let indent = &line[..line.len() - trimmed.len()];
                format!("{indent}• {}", inline(item, whatsapp))
            } else {
                inline(line, whatsapp)
            }
        })
        .collect::<Vec<_>>()
        .join("\n")
}

/// `**bold**`, `__bold__` and `[text](url)` within a line.
fn inline(line: &str, whatsapp: bool) -> String {
    let mark = if whatsapp { "*" } else { "" };
    let mut out = line
        .replace("**", mark)
        .replace("__", if whatsapp { "_" } else { "" });
    // Links: [text](http…) → text (http…)
    while let Some(open) = out.find('[') {
        let Some(close) = out[open..].find("](").map(|i| open + i) else {
            break;
        };
        let Some(end) = out[close..].find(')').map(|i| close + i) else {
            break;
        };
        let url = &out[close + 2..end];
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            break;
        }
        let label = &out[open + 1..close];
        out = format!("{}{label} ({url}){}", &out[..open], &out[end + 1..]);
    }
    out
}

/// How the inbox groups one customer's events: a keyed hash of the channel
/// and address (a Telegram chat id and an Instagram id may look alike).
pub fn sender_key(pii: &crate::pii::Pii, channel: Channel, address: &str) -> String {
    pii.hash(&format!("{}:{address}", channel.as_str()))
}

/// Splits `text` into parts of at most `max` UTF-16 code units, at a
/// paragraph, line, sentence or word boundary when there is one in the
/// second half of the part, so a long answer reads as several whole messages.
pub fn split(text: &str, max: usize) -> Vec<String> {
    let units = |s: &str| s.encode_utf16().count();
    let mut parts = Vec::new();
    let mut rest = text.trim();
    while units(rest) > max {
        // The longest prefix that fits, on a char boundary.
        let mut fit = 0;
        let mut count = 0;
        for (i, c) in rest.char_indices() {
            count += c.len_utf16();
            if count > max {
                break;
            }
            fit = i + c.len_utf8();
        }
        let head = &rest[..fit];
        let half = head.len() / 2;
        let cut = ["\n\n", "\n", ". ", "! ", "? ", " "]
            .iter()
            .find_map(|sep| {
                head.rfind(sep)
                    .filter(|&at| at >= half)
                    .map(|at| at + sep.len())
            })
            .unwrap_or(fit);
        parts.push(rest[..cut].trim_end().to_owned());
        rest = rest[cut..].trim_start();
    }
    if !rest.is_empty() || parts.is_empty() {
        parts.push(rest.to_owned());
    }
    parts
}

/// The tenant's channels with their credentials.
#[derive(Default)]
pub struct Channels {
    pub whatsapp: Option<chatflow::ChatflowClient>,
    pub telegram: Option<telegram::TelegramClient>,
    pub instagram: Option<instagram::InstagramClient>,
}

impl Channels {
    pub fn new(
        whatsapp: Option<chatflow::ChatflowConfig>,
        telegram: Option<&telegram::TelegramConfig>,
        instagram: Option<instagram::InstagramConfig>,
    ) -> Self {
        Self {
            whatsapp: whatsapp.map(chatflow::ChatflowClient::new),
            telegram: telegram.map(telegram::TelegramClient::new),
            instagram: instagram.map(instagram::InstagramClient::new),
        }
    }

    /// The channel's sender, when the tenant has that channel.
    pub fn sender(&self, channel: Channel) -> Option<&dyn Sender> {
        match channel {
            Channel::Whatsapp => self.whatsapp.as_ref().map(|c| c as &dyn Sender),
            Channel::Telegram => self.telegram.as_ref().map(|c| c as &dyn Sender),
            Channel::Instagram => self.instagram.as_ref().map(|c| c as &dyn Sender),
        }
    }

    /// Sends one part of a reply through `channel`.
    pub async fn send(
        &self,
        channel: Channel,
        address: &str,
        text: &str,
        key: &str,
    ) -> Result<(), SendError> {
        match self.sender(channel) {
            Some(sender) => sender.send(address, text, key).await,
            None => Err(SendError::Refused {
                service: channel.service(),
                why: format!("the {} channel is not configured", channel.as_str()),
            }),
        }
    }

    /// Whether any channel can send at all.
    pub fn any(&self) -> bool {
        self.whatsapp.is_some() || self.telegram.is_some() || self.instagram.is_some()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn events_older_than_the_replay_window_are_stale() {
        let payload = serde_json::json!({"messageType": "text", "message": "привет",
            "metadata": {"messageId": "M1", "remoteJid": "77015705555@s.whatsapp.net", "timestamp": 1_000_000}});
        let event = parse(Channel::Whatsapp, &payload).expect("a message");
        let window = message::REPLAY_WINDOW_SECS;
        assert!(
            !event.stale(1_000_000 + window),
            "at the edge of the window"
        );
        assert!(event.stale(1_000_000 + window + 1));
        assert!(
            !event.stale(1_000_000 - 60),
            "a sender's clock a little ahead"
        );
        let timeless = Inbound {
            timestamp: None,
            ..event
        };
        assert!(!timeless.stale(i64::MAX));
    }

    #[test]
    fn short_texts_stay_whole() {
        assert_eq!(split("Здравствуйте!", 4096), vec!["Здравствуйте!"]);
        assert_eq!(split("", 10), vec![""]);
    }

    #[test]
    fn long_texts_split_at_boundaries_within_the_limit() {
        let paragraph = "Букет из 25 роз стоит 27 000 ₸. Доставка по Алматы 2 000 ₸.";
        let text = vec![paragraph; 120].join("\n\n");
        let parts = split(&text, 4096);
        assert!(parts.len() >= 2, "{}", parts.len());
        for part in &parts {
            assert!(part.encode_utf16().count() <= 4096);
            assert!(
                part.ends_with('.'),
                "cut mid-sentence: …{}",
                &part[part.len() - 20..]
            );
        }
        assert_eq!(parts.join("\n\n"), text, "nothing lost or reordered");
    }

    #[test]
    fn emoji_count_as_telegram_counts_them_and_are_never_cut() {
        let text = "🌹".repeat(3000); // 6,000 UTF-16 units, no spaces
        let parts = split(&text, 4096);
        assert_eq!(parts.len(), 2);
        assert!(parts.iter().all(|p| p.encode_utf16().count() <= 4096));
        assert_eq!(parts.concat(), text);
    }

    #[test]
    fn markdown_is_written_the_way_each_channel_shows_text() {
        let answer = "# Цены\n## Букеты\n- Букет из 25 роз — **27 000 ₸**\n- Доставка: [условия](https://flowers.kz/delivery)\nЗвоните!";
        assert_eq!(
            format(Channel::Whatsapp, answer),
            "*Цены*\n*Букеты*\n• Букет из 25 роз — *27 000 ₸*\n• Доставка: условия (https://flowers.kz/delivery)\nЗвоните!"
        );
        let plain = "Цены\nБукеты\n• Букет из 25 роз — 27 000 ₸\n• Доставка: условия (https://flowers.kz/delivery)\nЗвоните!";
        assert_eq!(format(Channel::Telegram, answer), plain);
        assert_eq!(format(Channel::Instagram, answer), plain);
        // Text without marks is left as it is; a # without a space is no heading.
        assert_eq!(
            format(Channel::Telegram, "#1 в Алматы [скоро]"),
            "#1 в Алматы [скоро]"
        );
    }

    #[test]
    fn channels_round_trip_through_the_database_name() {
        for c in [Channel::Whatsapp, Channel::Telegram, Channel::Instagram] {
            assert_eq!(Channel::from_db(c.as_str()), Some(c));
        }
        assert_eq!(Channel::from_db("sms"), None);
    }
}
