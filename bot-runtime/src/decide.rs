//! The bot's decisions as pure functions: language, handover keywords, intent
//! parsing, the keyword classifier used without an LLM, and routing.

use serde::{Deserialize, Serialize};
use serde_json::Value;

#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Language {
    Ru,
    Kk,
    En,
}

impl Language {
    pub fn code(self) -> &'static str {
        match self {
            Self::Ru => "ru",
            Self::Kk => "kk",
            Self::En => "en",
        }
    }

    pub fn from_code(code: &str) -> Option<Self> {
        match code.trim().to_lowercase().as_str() {
            "ru" | "rus" | "russian" => Some(Self::Ru),
            "kk" | "kz" | "kaz" | "kazakh" => Some(Self::Kk),
            "en" | "eng" | "english" => Some(Self::En),
            _ => None,
        }
    }
}

/// Kazakh letters absent from Russian, and a few frequent Kazakh words
/// written with Russian letters only.
const KAZAKH_LETTERS: &[char] = &['ә', 'ғ', 'қ', 'ң', 'ө', 'ұ', 'ү', 'һ', 'і'];
const KAZAKH_WORDS: &[&str] = &[
    "сәлем",
    "салем",
    "рахмет",
    "бар ма",
    "қанша",
    "канша",
    "керек",
    "жоқ",
    "иә",
];

/// The language of a message; `None` when it has no letters to judge by.
pub fn detect_language(text: &str) -> Option<Language> {
    let lower = text.to_lowercase();
    if lower.chars().any(|c| KAZAKH_LETTERS.contains(&c))
        || KAZAKH_WORDS.iter().any(|w| contains_word(&lower, w))
    {
        return Some(Language::Kk);
    }
    let cyrillic = lower
        .chars()
        .filter(|c| ('а'..='я').contains(c) || *c == 'ё')
        .count();
    let latin = lower.chars().filter(char::is_ascii_alphabetic).count();
    match (cyrillic, latin) {
        (0, 0) => None,
        (c, l) if c >= l => Some(Language::Ru),
        _ => Some(Language::En),
    }
}

fn contains_word(haystack: &str, word: &str) -> bool {
    haystack.match_indices(word).any(|(i, _)| {
        let before = haystack[..i].chars().next_back();
        let after = haystack[i + word.len()..].chars().next();
        before.is_none_or(|c| !c.is_alphanumeric()) && after.is_none_or(|c| !c.is_alphanumeric())
    })
}

pub const INTENTS: &[&str] = &[
    "greeting",
    "question_product",
    "question_price",
    "question_delivery",
    "question_other",
    "complaint",
    "ready_to_buy",
    "human_request",
    "unclear",
    "off_topic",
];

#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct Classification {
    pub intent: String,
    pub confidence: f32,
    pub language: Option<Language>,
    #[serde(default)]
    pub entities: Value,
    /// The handover topic the LLM named (checked against the tenant's).
    #[serde(default)]
    pub topic: Option<String>,
}

/// Parses the LLM's answer strictly: a JSON object with a known intent and a
/// confidence in 0..=1 (code fences tolerated). Anything else is `None`, and
/// the fallback classifier decides.
pub fn parse_classification(answer: &str) -> Option<Classification> {
    let trimmed = answer
        .trim()
        .trim_start_matches("```json")
        .trim_start_matches("```")
        .trim_end_matches("```")
        .trim();
    let v: Value = serde_json::from_str(trimmed).ok()?;
    let intent = v.get("intent")?.as_str()?.trim().to_lowercase();
    if !INTENTS.contains(&intent.as_str()) {
        return None;
    }
    let confidence = v.get("confidence")?.as_f64()?;
    if !(0.0..=1.0).contains(&confidence) {
        return None;
    }
    Some(Classification {
        intent,
        confidence: confidence as f32,
        language: v
            .get("language")
            .and_then(Value::as_str)
            .and_then(Language::from_code),
        entities: v
            .get("entities")
            .cloned()
            .filter(Value::is_object)
            .unwrap_or_else(|| Value::Object(Default::default())),
        topic: v
            .get("topic")
            .and_then(Value::as_str)
            .map(|t| t.trim().to_lowercase())
            .filter(|t| !t.is_empty() && t != "null"),
    })
}

/// Why a conversation goes to a human (`handovers.trigger_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Trigger {
    /// The classified intent is one the tenant hands over (or a human request).
    Intent,
    /// A handover keyword ("менеджер", "оператор", ...).
    Keyword,
    /// A handover topic of the tenant's (payment, booking_change, ...).
    Topic,
    /// A manager took the conversation (WhatsApp Web, the Instagram app).
    Manual,
    /// The bot could not answer (every model failed).
    Error,
}

impl Trigger {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Intent => "intent",
            Self::Keyword => "keyword",
            Self::Topic => "topic",
            Self::Manual => "manual",
            Self::Error => "error",
        }
    }
}

/// What the bot's reply to a turn was (`messages.metadata.action`; the count
/// of consecutive clarifications is read back from it).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ReplyKind {
    Greeting,
    Answer,
    Clarification,
    Decline,
    /// The notice that a manager will answer.
    Handover,
    /// The static text or apology after every model failed.
    Fallback,
    /// A voice note that could not be transcribed: the customer is asked to write.
    VoiceNotUnderstood,
}

impl ReplyKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Greeting => "greet",
            Self::Answer => "answer",
            Self::Clarification => "clarify",
            Self::Decline => "decline",
            Self::Handover => "handover",
            Self::Fallback => "fallback",
            Self::VoiceNotUnderstood => "voice_not_understood",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Action {
    Greet,
    /// Look the question up in the knowledge base and answer from it.
    Answer,
    Clarify,
    Decline,
    Handover {
        trigger: Trigger,
        value: String,
    },
}

/// What the bot does with a classified turn. `failed_clarifications` counts
/// the bot's consecutive clarifying questions just before this turn.
pub fn route(
    c: &Classification,
    handover_intents: &[String],
    failed_clarifications: usize,
) -> Action {
    let intent = c.intent.as_str();
    if handover_intents.iter().any(|i| i == intent) || intent == "human_request" {
        return Action::Handover {
            trigger: Trigger::Intent,
            value: intent.to_owned(),
        };
    }
    match intent {
        "greeting" => Action::Greet,
        "off_topic" => Action::Decline,
        "unclear" if failed_clarifications >= 2 => Action::Handover {
            trigger: Trigger::Intent,
            value: "unclear".into(),
        },
        "unclear" => Action::Clarify,
        _ => Action::Answer,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn languages_are_told_apart() {
        assert_eq!(detect_language("Сколько стоят розы?"), Some(Language::Ru));
        assert_eq!(
            detect_language("Раушан гүлдері қанша тұрады?"),
            Some(Language::Kk)
        );
        assert_eq!(detect_language("Салем, бар ма?"), Some(Language::Kk));
        assert_eq!(
            detect_language("How much are the roses?"),
            Some(Language::En)
        );
        assert_eq!(detect_language("👍 123"), None);
    }

    #[test]
    fn the_llm_answer_is_parsed_strictly() {
        let ok = parse_classification(r#"{"intent":"question_price","confidence":0.92,"language":"ru","entities":{"product":"розы"}}"#).expect("valid");
        assert_eq!(ok.intent, "question_price");
        assert_eq!(ok.language, Some(Language::Ru));
        assert_eq!(ok.entities["product"], "розы");
        assert_eq!(ok.topic, None);
        let topic = parse_classification(
            r#"{"intent":"question_other","confidence":0.8,"topic":"Booking_change"}"#,
        )
        .expect("valid");
        assert_eq!(topic.topic.as_deref(), Some("booking_change"));
        let none = parse_classification(r#"{"intent":"greeting","confidence":1,"topic":null}"#)
            .expect("valid");
        assert_eq!(none.topic, None);
        assert!(
            parse_classification("```json\n{\"intent\":\"greeting\",\"confidence\":1}\n```")
                .is_some()
        );
        for bad in [
            "I think it's a greeting",
            r#"{"intent":"weather","confidence":0.9}"#,
            r#"{"intent":"greeting","confidence":7}"#,
            r#"{"intent":"greeting"}"#,
            r#"["greeting"]"#,
        ] {
            assert_eq!(parse_classification(bad), None, "{bad}");
        }
    }

    #[test]
    fn routing_follows_the_spec() {
        let c = |intent: &str| Classification {
            intent: intent.into(),
            confidence: 0.9,
            language: None,
            entities: Value::Null,
            topic: None,
        };
        let hi = ["complaint", "ready_to_buy", "human_request"]
            .map(String::from)
            .to_vec();
        assert_eq!(route(&c("greeting"), &hi, 0), Action::Greet);
        assert_eq!(route(&c("question_price"), &hi, 0), Action::Answer);
        assert_eq!(route(&c("off_topic"), &hi, 0), Action::Decline);
        assert_eq!(route(&c("unclear"), &hi, 1), Action::Clarify);
        assert_eq!(
            route(&c("unclear"), &hi, 2),
            Action::Handover {
                trigger: Trigger::Intent,
                value: "unclear".into()
            }
        );
        assert_eq!(
            route(&c("complaint"), &hi, 0),
            Action::Handover {
                trigger: Trigger::Intent,
                value: "complaint".into()
            }
        );
        // A tenant that removed human_request from its list still gets a human on request.
        assert_eq!(
            route(&c("human_request"), &[], 0),
            Action::Handover {
                trigger: Trigger::Intent,
                value: "human_request".into()
            }
        );
        assert_eq!(route(&c("ready_to_buy"), &[], 0), Action::Answer);
    }
}
