//! The fallback classifier's second half: when keywords find no intent and
//! no LLM answers, the message is compared with example phrases per intent
//! through the tenant's embedding model (the bot works without any LLM).

use anyhow::Result;
use tokio::sync::OnceCell;

use crate::decide::Classification;
use crate::knowledge::embed::{Embedder, Kind};

/// Example phrases per intent, in the customers' three languages.
const EXAMPLES: &[(&str, &str)] = &[
    ("greeting", "Здравствуйте"),
    ("greeting", "Добрый день!"),
    ("greeting", "Сәлеметсіз бе"),
    ("greeting", "Hello there"),
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
    ("ready_to_buy", "Хочу оформить заказ"),
    ("ready_to_buy", "Беру, как оплатить?"),
    ("ready_to_buy", "Тапсырыс бергім келеді"),
    ("ready_to_buy", "I'd like to place an order"),
    ("human_request", "Соедините с живым человеком"),
    ("human_request", "Можно поговорить с сотрудником?"),
    ("human_request", "Can I talk to a person?"),
    ("off_topic", "Какая погода завтра?"),
    ("off_topic", "Расскажи анекдот"),
    ("off_topic", "Who won the football match?"),
];

/// Similarity an example must reach to decide (E5 scale; see knowledge).
const MIN_SIMILARITY: f32 = 0.88;

pub struct ExampleClassifier {
    embedder: Embedder,
    examples: OnceCell<Vec<(&'static str, Vec<f32>)>>,
}

fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let n = norm(a) * norm(b);
    if n == 0.0 { 0.0 } else { dot / n }
}

impl ExampleClassifier {
    pub fn new(embedder: Embedder) -> Self {
        Self {
            embedder,
            examples: OnceCell::new(),
        }
    }

    /// The intent of the nearest example, when it is near enough.
    pub async fn classify(&self, text: &str) -> Result<Option<Classification>> {
        let examples = self
            .examples
            .get_or_try_init(|| async {
                let phrases: Vec<String> = EXAMPLES.iter().map(|(_, p)| (*p).to_owned()).collect();
                let vectors = self.embedder.embed(&phrases, Kind::Query).await?;
                anyhow::Ok(
                    EXAMPLES
                        .iter()
                        .map(|(i, _)| *i)
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
            .map(|(intent, example)| (*intent, cosine(&vector, example)))
            .max_by(|a, b| a.1.total_cmp(&b.1));
        Ok(best
            .filter(|(_, score)| *score >= MIN_SIMILARITY)
            .map(|(intent, score)| Classification {
                intent: intent.to_owned(),
                // Float error can put an identical text a hair above 1.
                confidence: score.clamp(0.0, 1.0),
                language: crate::decide::detect_language(text),
                entities: serde_json::Value::Object(Default::default()),
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
