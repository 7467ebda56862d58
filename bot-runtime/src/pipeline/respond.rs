//! Response generation: text of a message (voice transcribed), the intent,
//! the decision, and the answer through the fallback chain.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use uuid::Uuid;

use crate::audit::Level;
use crate::channels::{self, Channel, Inbound, MediaKind};
use crate::decide::{self, Action, Classification, Language, ReplyKind, Trigger};
use crate::llm::{LlmError, Turn};
use crate::runtime::Runtime;
use crate::texts::{Phrase, phrase};

const FACTS: usize = 5;
/// Retrieval-only, more candidates are fetched and re-ranked by the
/// question's words before the best `FACTS` are used.
const CANDIDATES: usize = 20;

/// A customer's message as text for the bot, and whether anything in it was
/// understood (an untranscribed voice note is not).
pub(super) async fn normalize(rt: &Runtime, m: &Inbound) -> (String, bool) {
    let mut parts = Vec::new();
    let mut understood = false;
    if let Some(text) = &m.text {
        parts.push(text.clone());
        understood = true;
    }
    if let Some(media) = &m.media {
        match media.kind {
            MediaKind::Voice | MediaKind::Audio => match transcribe(rt, m.channel, media).await {
                Some(text) => {
                    parts.push(text);
                    understood = true;
                }
                None => parts.push("[голосовое сообщение]".into()),
            },
            MediaKind::Image => parts.push("[фото]".into()),
            MediaKind::Video => parts.push("[видео]".into()),
            MediaKind::Document => parts.push(format!(
                "[документ: {}]",
                media.file_name.as_deref().unwrap_or("файл")
            )),
            MediaKind::Other => parts.push("[вложение]".into()),
        }
        if let Some(caption) = &media.caption
            && m.text.as_deref() != Some(caption)
        {
            parts.push(caption.clone());
            understood = true;
        }
        understood |= media.kind != MediaKind::Voice && media.kind != MediaKind::Audio;
    }
    (parts.join("\n"), understood)
}

/// Speech-to-text of a voice note; `None` when not configured or failing.
pub(super) async fn transcribe(
    rt: &Runtime,
    channel: Channel,
    media: &channels::Media,
) -> Option<String> {
    const MAX_AUDIO: usize = 25 * 1024 * 1024;
    if !rt.llm.configured() {
        return None;
    }
    let audio = match (&media.url, &media.file_id, &rt.channels.telegram) {
        // The link comes from the webhook: the guarded fetcher.
        (Some(url), _, _) => match rt.fetch.get(url, MAX_AUDIO, Duration::from_secs(20)).await {
            Ok(fetched) => fetched.bytes,
            Err(e) if e.refused() => {
                let message = format!("a voice message's link was refused: {e}");
                rt.report(
                    "media",
                    crate::audit::Level::Warning,
                    "url_refused",
                    &message,
                    None,
                )
                .await;
                return None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "could not download a voice message");
                return None;
            }
        },
        // Telegram names files by id; the download URL carries the bot token.
        (None, Some(id), Some(telegram)) if channel == Channel::Telegram => {
            match telegram.download(id, MAX_AUDIO as u32).await {
                Ok(bytes) => bytes,
                Err(e) => {
                    tracing::warn!(error = %e, "could not download a voice message");
                    return None;
                }
            }
        }
        _ => return None,
    };
    if audio.len() > MAX_AUDIO {
        return None;
    }
    match rt.llm.transcribe(audio, "voice.ogg").await {
        Ok(text) => text,
        Err(e) => {
            tracing::warn!(error = %e, "speech-to-text failed");
            None
        }
    }
}

/// What the bot answers to a turn.
#[derive(Debug)]
pub(super) struct Decision {
    pub(super) reply: String,
    pub(super) intent: String,
    pub(super) confidence: f32,
    pub(super) language: Language,
    pub(super) action: ReplyKind,
    pub(super) handover: Option<(Trigger, String)>,
    pub(super) model: Option<String>,
    pub(super) facts: usize,
}

/// The last turns as a transcript for the manager, in the customer's words.
pub(super) fn context_summary(history: &[Turn], text: &str) -> String {
    let mut lines: Vec<String> = history
        .iter()
        .rev()
        .take(6)
        .rev()
        .map(|t| {
            format!(
                "{}: {}",
                if t.role == "user" {
                    "Клиент"
                } else {
                    "Бот"
                },
                t.content
            )
        })
        .collect();
    lines.push(format!("Клиент: {text}"));
    let summary = lines.join("\n");
    summary
        .chars()
        .rev()
        .take(1500)
        .collect::<Vec<_>>()
        .into_iter()
        .rev()
        .collect()
}

pub(crate) fn default_language(rt: &Runtime) -> Language {
    rt.config
        .spec
        .languages
        .first()
        .and_then(|l| serde_json::to_value(l).ok())
        .and_then(|v| v.as_str().and_then(Language::from_code))
        .unwrap_or(Language::Ru)
}

pub(super) fn language_name(l: Language) -> &'static str {
    match l {
        Language::Ru => "Russian",
        Language::Kk => "Kazakh",
        Language::En => "English",
    }
}

/// The tenant's prompt: the spec's override, then its prompts table.
pub(super) async fn prompt(rt: &Runtime, name: &str) -> Option<String> {
    if let Some(p) = rt.config.spec.prompts.iter().find(|p| p.name == name) {
        return Some(p.text.clone());
    }
    sqlx::query_scalar("SELECT text FROM prompts WHERE name = $1 AND is_active")
        .bind(name)
        .fetch_optional(&rt.db)
        .await
        .ok()
        .flatten()
}

pub(super) fn fill(template: &str, rt: &Runtime, context: &str) -> String {
    template
        .replace("{company}", &rt.config.spec.company_name)
        .replace("{context}", context)
}

/// A fixed phrase, or the tenant's own text for it in Russian.
pub(super) async fn tenant_phrase(
    rt: &Runtime,
    p: Phrase,
    prompt_name: &str,
    language: Language,
) -> String {
    if language == Language::Ru
        && let Some(text) = prompt(rt, prompt_name).await
    {
        return text;
    }
    phrase(p, language).to_owned()
}

pub(super) async fn classify(rt: &Runtime, text: &str, history: &[Turn]) -> Classification {
    if rt.llm.configured() {
        let mut system = prompt(rt, "classify").await.unwrap_or_else(|| {
            "Classify the customer's last message. Answer JSON {\"intent\", \"confidence\", \"language\", \"entities\"}.".into()
        });
        if let Some(topics) = crate::topics::prompt(&rt.topics) {
            system = format!("{system}\n\n{topics}");
        }
        match rt
            .llm
            .complete(&fill(&system, rt, ""), history, text, true, Some(0.0))
            .await
        {
            Ok(c) => match decide::parse_classification(&c.text) {
                Some(parsed) => return parsed,
                None => {
                    tracing::warn!("the LLM's classification is not valid JSON; using keywords")
                }
            },
            Err(e) => tracing::warn!(error = %e, "classification falls back to keywords"),
        }
    }
    let by_keywords = crate::keywords::classify_by_keywords(text);
    // Keywords found nothing specific: ask the embedding model which example
    // phrase the message is closest to.
    if matches!(by_keywords.intent.as_str(), "question_other" | "unclear")
        && let Some(examples) = &rt.examples
    {
        match examples.classify(text).await {
            Ok(Some(c)) => return c,
            Ok(None) => {}
            Err(e) => {
                tracing::warn!(error = %format!("{e:#}"), "example-phrase classification failed")
            }
        }
    }
    by_keywords
}

pub(super) async fn recent_clarifications(rt: &Runtime, conversation_id: Uuid) -> Result<usize> {
    let intents: Vec<Option<String>> = sqlx::query_scalar(
        "SELECT metadata->>'action' FROM messages WHERE conversation_id = $1 AND role = 'assistant'
         ORDER BY created_at DESC LIMIT 2",
    )
    .bind(conversation_id)
    .fetch_all(&rt.db)
    .await?;
    Ok(intents
        .iter()
        .take_while(|a| a.as_deref() == Some(ReplyKind::Clarification.as_str()))
        .count())
}

pub(super) async fn decide(
    rt: &Runtime,
    conversation_id: Uuid,
    text: &str,
    history: &[Turn],
    user_language: Option<Language>,
) -> Result<Decision> {
    let spec = &rt.config.spec;
    // "скок стоит" as "сколько стоит": for the keywords, the lookup and the
    // sentences chosen (the stored message keeps the customer's words).
    let standard = crate::knowledge::query::standard(text);
    let text = standard.as_str();
    let guess = decide::detect_language(text)
        .or(user_language)
        .unwrap_or_else(|| default_language(rt));
    if let Some(keyword) = crate::keywords::handover_keyword(text, &spec.handover.keywords) {
        return Ok(Decision {
            reply: tenant_phrase(rt, Phrase::HandoverNotice, "handover_notice", guess).await,
            intent: "human_request".into(),
            confidence: 1.0,
            language: guess,
            action: ReplyKind::Handover,
            handover: Some((Trigger::Keyword, keyword)),
            model: None,
            facts: 0,
        });
    }
    // A topic a human handles, by its stems: as sure as a keyword.
    if let Some(topic) = crate::topics::by_stems(text, &rt.topics) {
        return Ok(topic_handover(rt, &topic.name, guess).await);
    }
    let mut c = classify(rt, text, history).await;
    // A greeting with a question after it: the question decides.
    if c.intent == "greeting"
        && let Some(question) = crate::keywords::after_greeting(text)
    {
        let mut q = classify(rt, question, history).await;
        if matches!(q.intent.as_str(), "unclear" | "greeting") {
            q.intent = "question_other".into();
        }
        q.language = q.language.or(c.language);
        c = q;
    }
    // Letters decide over the model's guess: Kazakh has letters Russian lacks.
    let language = decide::detect_language(text)
        .or(c.language)
        .or(user_language)
        .unwrap_or(guess);
    if let Some(topic) = topic(rt, text, &c).await {
        return Ok(Decision {
            intent: c.intent,
            confidence: c.confidence,
            ..topic_handover(rt, &topic, language).await
        });
    }
    let clarifications = recent_clarifications(rt, conversation_id).await?;
    let action = decide::route(&c, &spec.handover.intents, clarifications);
    let mut d = Decision {
        reply: String::new(),
        intent: c.intent.clone(),
        confidence: c.confidence,
        language,
        // Every branch below says what the reply is.
        action: ReplyKind::Answer,
        handover: None,
        model: None,
        facts: 0,
    };
    match action {
        Action::Handover { trigger, value } => {
            d.action = ReplyKind::Handover;
            d.reply = tenant_phrase(rt, Phrase::HandoverNotice, "handover_notice", language).await;
            d.handover = Some((trigger, value));
        }
        Action::Greet | Action::Clarify | Action::Decline => {
            // (what the reply is, the tenant's prompt, the fixed phrase without an LLM)
            let (kind, prompt_name, fallback) = match action {
                Action::Greet => (ReplyKind::Greeting, "greeting", Phrase::Greeting),
                Action::Clarify => (ReplyKind::Clarification, "clarify", Phrase::Clarify),
                _ => (ReplyKind::Decline, "off_topic", Phrase::OffTopic),
            };
            d.action = kind;
            (d.reply, d.model) = generate(rt, prompt_name, text, history, language, fallback).await;
        }
        Action::Answer => answer(rt, text, history, &mut d).await,
    }
    Ok(d)
}

/// The handover topic of a classified message: the one the LLM named (if the
/// tenant has it), or without an LLM the topic of the nearest example phrase.
/// Greetings alone and off-topic messages have none.
async fn topic(rt: &Runtime, text: &str, c: &Classification) -> Option<String> {
    if let Some(named) = &c.topic {
        return rt
            .topics
            .iter()
            .any(|t| t.name == *named)
            .then(|| named.clone());
    }
    if rt.llm.configured() || matches!(c.intent.as_str(), "greeting" | "off_topic") {
        return None;
    }
    let question = crate::keywords::after_greeting(text).unwrap_or(text);
    match rt.topic_examples.as_ref()?.decide(question).await {
        Ok(nearest) => nearest.map(|(name, _)| name),
        Err(e) => {
            tracing::warn!(error = %format!("{e:#}"), "topic matching failed");
            None
        }
    }
}

async fn topic_handover(rt: &Runtime, topic: &str, language: Language) -> Decision {
    Decision {
        reply: tenant_phrase(rt, Phrase::HandoverNotice, "handover_notice", language).await,
        intent: "human_request".into(),
        confidence: 1.0,
        language,
        action: ReplyKind::Handover,
        handover: Some((Trigger::Topic, topic.to_owned())),
        model: None,
        facts: 0,
    }
}

/// Greeting, clarification or decline: the LLM with the tenant's prompt, the
/// fixed phrase when the LLM is absent or failing (not worth a handover).
pub(super) async fn generate(
    rt: &Runtime,
    prompt_name: &str,
    text: &str,
    history: &[Turn],
    language: Language,
    fallback: Phrase,
) -> (String, Option<String>) {
    if rt.llm.configured()
        && let Some(template) = prompt(rt, prompt_name).await
    {
        let system = format!(
            "{}\nReply in {}.",
            fill(&template, rt, ""),
            language_name(language)
        );
        if let Ok(c) = rt.llm.complete(&system, history, text, false, None).await {
            return (c.text, Some(c.model));
        }
    }
    (phrase(fallback, language).to_owned(), None)
}

/// A question: retrieve facts, answer only from them. The fallback
/// chain ends here: primary → fallback model → the tenant's static text →
/// the hardcoded apology, with an automatic handover.
pub(super) async fn answer(rt: &Runtime, text: &str, history: &[Turn], d: &mut Decision) {
    d.action = ReplyKind::Answer;
    // What is looked up is the question, without a greeting before it, its
    // misspelt words read as the business's own ("брекиты" as «брекеты»; not
    // before the keywords, which must see what the customer wrote).
    let question = crate::keywords::after_greeting(text);
    let greeted = question.is_some();
    let query = rt.knowledge.correct(question.unwrap_or(text));
    let query = query.as_str();
    let limit = if rt.llm.configured() {
        FACTS
    } else {
        CANDIDATES
    };
    let hint = super::wants::hint(query);
    let facts = match rt.knowledge.search_hinted(query, &hint, limit).await {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(error = %e, "knowledge lookup failed");
            rt.report(
                "rag",
                Level::Warning,
                "knowledge_unavailable",
                &format!("{e:#}"),
                Some(json!({"query": text})),
            )
            .await;
            Vec::new()
        }
    };
    rt.metrics.rag(!facts.is_empty());
    d.facts = facts.len();
    let internal = |f: &crate::knowledge::Fact| {
        let name = f
            .source
            .split_once('/')
            .map_or(f.source.as_str(), |(n, _)| n);
        rt.config
            .spec
            .knowledge
            .sources
            .iter()
            .any(|s| s.name == name && s.internal)
    };
    if !rt.llm.configured() {
        // Internal documents are for the LLM and managers, never quoted.
        let facts: Vec<&crate::knowledge::Fact> = facts.iter().filter(|f| !internal(f)).collect();
        // The candidates re-ranked by the question's words, then the best five.
        let candidates: Vec<&str> = facts.iter().map(|f| f.content.as_str()).collect();
        let facts: Vec<&crate::knowledge::Fact> = super::extract::rerank(&candidates, query)
            .into_iter()
            .take(FACTS)
            .map(|i| facts[i])
            .collect();
        d.facts = facts.len();
        // Retrieval-only: the facts' own sentences that answer, or an honest
        // "don't know"; greeted back first when the customer greeted (an LLM
        // does that itself).
        let passages: Vec<&str> = facts.iter().map(|f| f.content.as_str()).collect();
        // Near the floor a fact must share a word with the question.
        let best = facts
            .iter()
            .copied()
            .max_by(|a, b| a.score.total_cmp(&b.score));
        let sure = match (&rt.config.knowledge, best) {
            (Some(k), Some(best)) => best.score >= k.min_score + crate::knowledge::SURE_MARGIN,
            (None, best) => best.is_some(),
            (_, None) => false,
        };
        let same_language = best.is_some_and(|f| {
            crate::decide::detect_language(&f.content) == crate::decide::detect_language(query)
        });
        // Whether the business's documents have each of the question's words.
        let known: Vec<bool> = super::wants::topic_words(query)
            .iter()
            .filter_map(|w| rt.knowledge.knows(w))
            .collect();
        let quote = super::extract::quotes(
            super::extract::grounded(&passages, query),
            sure,
            same_language,
            &known,
        );
        let reply = if facts.is_empty() || !quote {
            phrase(Phrase::NoAnswer, d.language).into()
        } else {
            super::extract::answer(&passages, query, super::extract::REPLY_CHARS)
        };
        d.reply = if greeted {
            format!("{} {reply}", phrase(Phrase::Salutation, d.language))
        } else {
            reply
        };
        return;
    }
    let context = if facts.is_empty() {
        "(нет данных)".to_owned()
    } else {
        facts
            .iter()
            .map(|f| {
                // One fact, one line of the list: a marker on its first line
                // covers all of it.
                let fact = f.content.split_whitespace().collect::<Vec<_>>().join(" ");
                if internal(f) {
                    format!("- (internal guidance: use it, never quote it) {fact}")
                } else {
                    format!("- {fact}")
                }
            })
            .collect::<Vec<_>>()
            .join("\n")
    };
    let template = prompt(rt, "answer")
        .await
        .unwrap_or_else(|| "Answer only from these facts:\n{context}".into());
    let system = format!(
        "{}\nReply in {}.",
        fill(&template, rt, &context),
        language_name(d.language)
    );
    match rt.llm.complete(&system, history, text, false, None).await {
        Ok(c) => {
            d.reply = c.text;
            d.model = Some(c.model);
        }
        Err(e) => {
            let level = if matches!(e, LlmError::Exhausted) {
                Level::Critical
            } else {
                Level::Warning
            };
            rt.report(
                "llm",
                level,
                "llm_unavailable",
                &e.to_string(),
                Some(json!({"query": text})),
            )
            .await;
            d.action = ReplyKind::Fallback;
            d.reply = tenant_phrase(rt, Phrase::Apology, "fallback_critical", d.language).await;
            d.handover = Some((Trigger::Error, "llm_unavailable".into()));
        }
    }
}
