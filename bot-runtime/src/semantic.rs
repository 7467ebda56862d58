//! The fallback classifier's second half: when keywords find no intent and
//! no LLM answers, the message is compared with example phrases per intent
//! through the tenant's embedding model (the bot works without any LLM).

use anyhow::Result;
use tokio::sync::OnceCell;

use crate::decide::Classification;
use crate::knowledge::embed::{Embedder, Kind};

/// Example phrases per intent, in the customers' three languages. None for
/// greetings and orders: the keywords know how those are said, and by
/// similarity alone short questions ("вы где", a Kazakh address question)
/// came out as either, so a question got a greeting or went to a manager.
const EXAMPLES: &[(&str, &str)] = &[
    ("question_price", "Сколько это стоит?"),
    ("question_price", "Какая цена?"),
    ("question_price", "Бағасы қанша?"),
    ("question_price", "How much does it cost?"),
    ("question_delivery", "Вы доставляете на дом?"),
    ("question_delivery", "Как быстро привезёте?"),
    ("question_delivery", "Do you deliver?"),
    ("complaint", "Мне привезли испорченный товар, я недоволен"),
    ("complaint", "Ужасное обслуживание, верните деньги"),
    ("complaint", "This is unacceptable, I want a refund"),
    ("human_request", "Соедините с живым человеком"),
    ("human_request", "Можно поговорить с сотрудником?"),
    ("human_request", "Can I talk to a person?"),
    ("off_topic", "Какая погода завтра?"),
    ("off_topic", "Расскажи анекдот"),
    ("off_topic", "Who won the football match?"),
];

/// Similarity an intent example must reach to decide (E5 scale; see knowledge).
const MIN_SIMILARITY: f32 = 0.88;

/// Similarity a topic example must reach to hand over, for the local E5
/// model, set on the evaluation's messages (BENCHMARKS.md): at 0.93 no
/// message that wanted an answer reaches it (at 0.90, 11 did: short
/// questions such as "Where is your shop?" near "Where is my delivery?").
/// The stems find most topics; the examples catch what they miss.
const TOPIC_SIMILARITY: f32 = 0.93;

/// Labelled example phrases and the similarity that decides.
pub struct ExampleClassifier {
    embedder: Embedder,
    phrases: Vec<(String, String)>,
    min_similarity: f32,
    examples: OnceCell<Vec<(String, Vec<f32>)>>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let n = norm(a) * norm(b);
    if n == 0.0 { 0.0 } else { dot / n }
}

impl ExampleClassifier {
    /// The built-in intent examples.
    pub fn new(embedder: Embedder) -> Self {
        let phrases = EXAMPLES
            .iter()
            .map(|(i, p)| ((*i).to_owned(), (*p).to_owned()))
            .collect();
        Self::with_phrases(embedder, phrases, MIN_SIMILARITY)
    }

    /// The tenant's handover topics' examples, labelled by topic name.
    pub fn topics(embedder: Embedder, topics: &[crate::topics::Topic]) -> Self {
        let phrases = topics
            .iter()
            .flat_map(|t| t.examples.iter().map(|e| (t.name.clone(), e.clone())))
            .collect();
        Self::with_phrases(embedder, phrases, TOPIC_SIMILARITY)
    }

    fn with_phrases(embedder: Embedder, phrases: Vec<(String, String)>, min: f32) -> Self {
        Self {
            embedder,
            phrases,
            min_similarity: min,
            examples: OnceCell::new(),
        }
    }

    /// The label of the nearest example and its similarity when it is near
    /// enough to decide.
    pub async fn decide(&self, text: &str) -> Result<Option<(String, f32)>> {
        Ok(self
            .nearest(text)
            .await?
            .filter(|(_, score)| *score >= self.min_similarity))
    }

    /// The label of the nearest example and its similarity (clamped: float
    /// error can put an identical text a hair above 1), however far. The
    /// examples are embedded on first use.
    pub async fn nearest(&self, text: &str) -> Result<Option<(String, f32)>> {
        if self.phrases.is_empty() {
            return Ok(None);
        }
        let examples = self
            .examples
            .get_or_try_init(|| async {
                let phrases: Vec<String> = self.phrases.iter().map(|(_, p)| p.clone()).collect();
                let vectors = self.embedder.embed(&phrases, Kind::Query).await?;
                anyhow::Ok(
                    self.phrases
                        .iter()
                        .map(|(label, _)| label.clone())
                        .zip(vectors)
                        .collect::<Vec<_>>(),
                )
            })
            .await?;
        let Some(vector) = self
            .embedder
            .embed(&[text.to_owned()], Kind::Query)
            .await?
            .pop()
        else {
            return Ok(None);
        };
        let best = examples
            .iter()
            .map(|(label, example)| (label, cosine(&vector, example)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Ok(best.map(|(label, score)| (label.clone(), score.clamp(0.0, 1.0))))
    }

    /// The intent of the nearest example, when it is near enough.
    pub async fn classify(&self, text: &str) -> Result<Option<Classification>> {
        Ok(self
            .decide(text)
            .await?
            .map(|(intent, confidence)| Classification {
                intent,
                confidence,
                language: crate::decide::detect_language(text),
                entities: serde_json::Value::Object(Default::default()),
                topic: None,
            }))
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn cosine_of_parallel_orthogonal_and_empty_vectors() {
        assert!((super::cosine(&[1.0, 2.0], &[2.0, 4.0]) - 1.0).abs() < 1e-6);
        assert_eq!(super::cosine(&[1.0, 0.0], &[0.0, 1.0]), 0.0);
        assert_eq!(super::cosine(&[0.0, 0.0], &[1.0, 1.0]), 0.0);
    }
}
