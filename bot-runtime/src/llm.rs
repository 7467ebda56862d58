//! The OpenAI-compatible LLM (async-openai) behind the fallback chain of the
//! The fallback chain (docs/architecture.md): primary model → fallback model → (caller) static text → apology +
//! handover. Each model has its own circuit breaker; every call has the
//! tenant's timeout.

use std::sync::Arc;
use std::time::Duration;

use async_openai::Client;
use async_openai::config::OpenAIConfig;
use async_openai::middleware::ReqwestService;
use async_openai::types::audio::{AudioInput, CreateTranscriptionRequestArgs};
use async_openai::types::chat::{
    ChatCompletionRequestAssistantMessage, ChatCompletionRequestMessage,
    ChatCompletionRequestSystemMessage, ChatCompletionRequestUserMessage,
    CreateChatCompletionRequestArgs, ResponseFormat,
};

use crate::breaker::Breakers;

/// The OpenAI-compatible endpoint. `None` in `Config::llm` means no LLM:
/// retrieval-only answers and handover when unsure.
#[derive(Clone, Debug)]
pub struct LlmConfig {
    pub base_url: String,
    pub api_key: String,
    pub model: String,
    pub fallback_model: Option<String>,
    pub temperature: f32,
    pub timeout: Duration,
    /// Speech-to-text model for voice messages (`/audio/transcriptions`).
    pub transcription_model: Option<String>,
}

/// One turn of the conversation as the LLM sees it.
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct Turn {
    /// `user` or `assistant` (a manager's words count as the assistant's).
    pub role: String,
    pub content: String,
}

#[derive(Debug, thiserror::Error)]
pub enum LlmError {
    #[error("no LLM is configured")]
    NotConfigured,
    #[error("every model failed or is switched off by its circuit breaker")]
    Exhausted,
    #[error("speech-to-text failed: {0}")]
    Transcription(String),
}

pub struct Llm {
    config: Option<LlmConfig>,
    client: Option<Client<OpenAIConfig>>,
    breakers: Arc<Breakers>,
}

/// A successful completion and the model that produced it.
#[derive(Debug)]
pub struct Completion {
    pub text: String,
    pub model: String,
}

impl Llm {
    pub fn new(config: Option<LlmConfig>, breakers: Arc<Breakers>) -> Self {
        let client = config.as_ref().map(|c| {
            let http = reqwest::Client::builder()
                .timeout(c.timeout)
                .build()
                .unwrap_or_default();
            // No retries inside the client: the fallback model and the circuit
            // breakers decide what follows a failure, within the timeout.
            Client::with_config(
                OpenAIConfig::new()
                    .with_api_base(&c.base_url)
                    .with_api_key(&c.api_key),
            )
            .with_http_client(http.clone())
            .with_http_service(ReqwestService::new(http))
        });
        Self {
            config,
            client,
            breakers,
        }
    }

    pub fn configured(&self) -> bool {
        self.config.is_some()
    }

    /// The base URL, for the readiness probe.
    pub fn base_url(&self) -> Option<&str> {
        self.config.as_ref().map(|c| c.base_url.as_str())
    }

    /// Completes with the primary model, then the fallback model; a model whose
    /// breaker is open is skipped without a call.
    /// `history` is the conversation so far, `message` the customer's turn to answer.
    pub async fn complete(
        &self,
        system: &str,
        history: &[Turn],
        message: &str,
        json: bool,
        temperature: Option<f32>,
    ) -> Result<Completion, LlmError> {
        let (Some(config), Some(client)) = (&self.config, &self.client) else {
            return Err(LlmError::NotConfigured);
        };
        let models = std::iter::once(&config.model).chain(config.fallback_model.iter());
        for model in models {
            let service = format!("llm:{model}");
            if !self.breakers.allows(&service).await {
                tracing::warn!(model, "skipping a model whose circuit breaker is open");
                continue;
            }
            let call = Self::call(
                client,
                model,
                system,
                history,
                message,
                json,
                temperature.unwrap_or(config.temperature),
            );
            let result = match tokio::time::timeout(config.timeout, call).await {
                Ok(r) => r,
                Err(_) => Err(format!("no answer within {:?}", config.timeout)),
            };
            self.breakers.record(&service, result.is_ok()).await;
            match result {
                Ok(text) => {
                    return Ok(Completion {
                        text,
                        model: model.clone(),
                    });
                }
                Err(error) => tracing::warn!(model, %error, "LLM call failed"),
            }
        }
        Err(LlmError::Exhausted)
    }

    async fn call(
        client: &Client<OpenAIConfig>,
        model: &str,
        system: &str,
        history: &[Turn],
        message: &str,
        json: bool,
        temperature: f32,
    ) -> Result<String, String> {
        let mut messages: Vec<ChatCompletionRequestMessage> =
            vec![ChatCompletionRequestSystemMessage::from(system).into()];
        for turn in history {
            messages.push(if turn.role == "user" {
                ChatCompletionRequestUserMessage::from(turn.content.as_str()).into()
            } else {
                ChatCompletionRequestAssistantMessage::from(turn.content.as_str()).into()
            });
        }
        messages.push(ChatCompletionRequestUserMessage::from(message).into());
        let mut request = CreateChatCompletionRequestArgs::default();
        request
            .model(model)
            .messages(messages)
            .temperature(temperature);
        if json {
            request.response_format(ResponseFormat::JsonObject);
        }
        let request = request.build().map_err(|e| e.to_string())?;
        let response = client
            .chat()
            .create(request)
            .await
            .map_err(|e| e.to_string())?;
        response
            .choices
            .into_iter()
            .next()
            .and_then(|c| c.message.content)
            .map(|t| t.trim().to_owned())
            .filter(|t| !t.is_empty())
            .ok_or_else(|| "the model returned no text".to_owned())
    }

    /// Speech-to-text of a voice message; `Ok(None)` when no model is configured.
    pub async fn transcribe(
        &self,
        audio: Vec<u8>,
        file_name: &str,
    ) -> Result<Option<String>, LlmError> {
        let (Some(config), Some(client)) = (&self.config, &self.client) else {
            return Ok(None);
        };
        let Some(model) = &config.transcription_model else {
            return Ok(None);
        };
        let request = CreateTranscriptionRequestArgs::default()
            .file(AudioInput::from_vec_u8(file_name.to_owned(), audio))
            .model(model)
            .build()
            .map_err(|e| LlmError::Transcription(e.to_string()))?;
        // Raw JSON: OpenAI-compatible speech servers differ in the fields
        // around `text` (OpenAI adds `usage`), and `text` is all we need.
        let raw = client
            .audio()
            .transcription()
            .create_raw(request)
            .await
            .map_err(|e| LlmError::Transcription(e.to_string()))?;
        let text = serde_json::from_slice::<serde_json::Value>(&raw)
            .ok()
            .and_then(|v| v.get("text")?.as_str().map(str::to_owned))
            .ok_or_else(|| LlmError::Transcription("the answer has no text".into()))?;
        Ok(Some(text.trim().to_owned()).filter(|t| !t.is_empty()))
    }
}
