//! Embeddings through the OpenAI-compatible `/embeddings` API (async-openai),
//! batched. E5-family models (the local multilingual-e5 of tests and demos)
//! embed questions and passages differently; for them the request carries
//! `input_type`, which OpenAI's own models do not accept.

use anyhow::{Context, Result, ensure};
use async_openai::Client;
use async_openai::config::OpenAIConfig;
use serde_json::{Value, json};

const BATCH: usize = 32;

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Kind {
    Query,
    Passage,
}

#[derive(Clone)]
pub struct Embedder {
    client: Client<OpenAIConfig>,
    model: String,
    dimensions: usize,
}

impl Embedder {
    pub fn new(base_url: &str, api_key: &str, model: &str, dimensions: usize) -> Self {
        let http = reqwest::Client::builder()
            .timeout(std::time::Duration::from_secs(60))
            .build()
            .unwrap_or_default();
        let client = Client::with_config(
            OpenAIConfig::new()
                .with_api_base(base_url)
                .with_api_key(api_key),
        )
        .with_http_client(http);
        Self {
            client,
            model: model.to_owned(),
            dimensions,
        }
    }

    pub fn dimensions(&self) -> usize {
        self.dimensions
    }

    pub fn model(&self) -> &str {
        &self.model
    }

    fn modal(&self) -> bool {
        self.model.to_lowercase().contains("e5")
    }

    /// One vector per text, in order.
    pub async fn embed(&self, texts: &[String], kind: Kind) -> Result<Vec<Vec<f32>>> {
        let mut out = Vec::with_capacity(texts.len());
        for batch in texts.chunks(BATCH) {
            let mut request =
                json!({"model": self.model, "input": batch, "encoding_format": "float"});
            if self.modal() {
                request["input_type"] = json!(if kind == Kind::Query {
                    "query"
                } else {
                    "passage"
                });
            }
            let response: Value = self
                .client
                .embeddings()
                .create_byot(request)
                .await
                .context("the embeddings API failed")?;
            let mut data: Vec<(u64, Vec<f32>)> = response["data"]
                .as_array()
                .context("the embeddings answer has no data")?
                .iter()
                .map(|d| {
                    let index = d["index"].as_u64().unwrap_or(0);
                    let vector = d["embedding"]
                        .as_array()
                        .map(|v| {
                            v.iter()
                                .filter_map(Value::as_f64)
                                .map(|x| x as f32)
                                .collect()
                        })
                        .unwrap_or_default();
                    (index, vector)
                })
                .collect();
            data.sort_by_key(|(i, _)| *i);
            ensure!(
                data.len() == batch.len(),
                "asked for {} embeddings, got {}",
                batch.len(),
                data.len()
            );
            for (_, vector) in data {
                ensure!(
                    vector.len() == self.dimensions,
                    "the model returned {} dimensions; the spec says {} (llm.embeddingDimensions)",
                    vector.len(),
                    self.dimensions
                );
                out.push(vector);
            }
        }
        Ok(out)
    }
}
