//! The runtime's configuration: the tenant's spec as the operator renders it
//! (`client.json` in the ConfigMap), plus secrets from the environment.
//!
//! Environment (set by the operator's Deployment):
//! - `TRUFFLES_CLIENT_NAME`, `TRUFFLES_CONFIG_FILE` (the ConfigMap's `client.json`)
//! - `DATABASE_URL` (the tenant's role), `TRUFFLES_WEBHOOK_SECRET`, `TRUFFLES_PII_KEY`
//!   (64 hex characters), `REDIS_URL` (optional: without it the runtime degrades),
//!   `TRUFFLES_ADMIN_TOKEN` (the admin API's bearer); after a rotation the
//!   previous webhook secret and admin token with the time they stop counting
//! - `CHATFLOW_TOKEN`, `CHATFLOW_SIGNATURE_KEY` (optional), `OPENAI_API_KEY` (optional)
//! - `TELEGRAM_BOT_TOKEN` (the customers' Telegram bot), `INSTAGRAM_ACCESS_TOKEN`,
//!   `INSTAGRAM_APP_SECRET`, `INSTAGRAM_VERIFY_TOKEN`, for the channels the spec enables

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;
use truffles_crds::contract::{env, path};

use anyhow::{Context, Result, bail};
use truffles_crds::TrufflesClientSpec;
use truffles_crds::client::VectorBackend;

pub use crate::channels::chatflow::ChatflowConfig;
pub use crate::channels::instagram::InstagramConfig;
pub use crate::channels::telegram::TelegramConfig;
use crate::credential::Accepted;
use crate::handover::HandoverConfig;
use crate::handover::adapter::{AdapterConfig, read_secrets};
use crate::knowledge::{KnowledgeConfig, QdrantConfig, default_min_score};
pub use crate::llm::LlmConfig;
use crate::pii::parse_key;

/// Where the runtime finds what its pod mounts (the operator's Deployment).
pub use truffles_crds::contract::path::{
    CONFIG_FILE, DATA_DIR, KNOWLEDGE_DIR, SECRETS_DIR, SETTINGS as PATH_SETTINGS,
};

#[derive(Clone, Debug)]
pub struct Tuning {
    /// Messages a customer sends within this window become one turn.
    pub coalesce_window: Duration,
    /// A claimed inbox or outbox row is retried by anyone after this lease (a
    /// runtime killed mid-turn loses nothing).
    pub lease: Duration,
    /// Nothing polls: work wakes the workers (in-process, and from other
    /// replicas through Redis), the earliest retry sets a timer, and this slow
    /// jittered sweep finds what no wake announced (a dead replica's leases,
    /// an event stored while Redis was down). See `wake.rs`.
    pub sweep: Duration,
    /// Concurrent turns per process; each sender's messages still go in order.
    pub inbox_workers: usize,
    pub max_inbox_attempts: i32,
    pub max_send_attempts: i32,
    /// Silence after which a customer's next message starts a new conversation.
    pub session_gap: Duration,
    pub max_body_bytes: usize,
    /// Timeout of each dependency probe of `/readyz`.
    pub probe_timeout: Duration,
    /// PostgreSQL connections of one process at most: thousands of tenants on
    /// one server want few each (or a pooler in front). None: one per worker
    /// plus two (the sender and the notifier; the gateway shares them).
    pub db_connections: Option<u32>,
    /// An idle connection is closed after this, so an idle runtime holds none
    /// between its sweeps.
    pub db_idle_timeout: Duration,
    /// Backpressure: past this many unanswered events, or when the oldest has
    /// waited this long, the webhook answers 503 with `Retry-After` (ChatFlow
    /// and Telegram deliver again later) instead of growing the backlog.
    pub max_backlog: i64,
    pub max_backlog_age: Duration,
    /// Reminders to managers about a handover nobody took, after these delays.
    pub handover_reminders: Vec<Duration>,
    /// How often open handovers are checked for reminders and the timeout
    /// (minutes-scale deadlines: no need to query every poll).
    pub handover_sweep: Duration,
}

impl Tuning {
    /// The pool's maximum: what the tasks that hold a connection can use at once.
    pub fn max_connections(&self) -> u32 {
        self.db_connections
            .unwrap_or(self.inbox_workers as u32 + 2)
            .max(2)
    }

    /// The next sweep: `sweep` ± a quarter, so a thousand runtimes started
    /// together do not sweep in the same second. `unit` is uniform in [0, 1).
    pub fn jittered_sweep(&self, unit: f64) -> Duration {
        self.sweep.mul_f64(0.75 + unit.clamp(0.0, 1.0) / 2.0)
    }
}

impl Default for Tuning {
    fn default() -> Self {
        Self {
            coalesce_window: Duration::from_millis(1500),
            lease: Duration::from_secs(120),
            sweep: Duration::from_secs(60),
            inbox_workers: 8,
            max_inbox_attempts: 5,
            max_send_attempts: 8,
            session_gap: Duration::from_secs(6 * 3600),
            // ChatFlow may inline media as base64.
            max_body_bytes: 16 * 1024 * 1024,
            probe_timeout: Duration::from_secs(2),
            db_connections: None,
            db_idle_timeout: Duration::from_secs(20),
            max_backlog: 300,
            max_backlog_age: Duration::from_secs(600),
            handover_reminders: vec![Duration::from_secs(30 * 60), Duration::from_secs(60 * 60)],
            handover_sweep: Duration::from_secs(30),
        }
    }
}

#[derive(Clone, Debug)]
pub struct Config {
    pub client_name: String,
    pub spec: TrufflesClientSpec,
    pub database_url: String,
    pub redis_url: Option<String>,
    /// ChatFlow's URL segment (and the root of the Telegram webhook tokens).
    pub webhook_secret: Accepted,
    /// The admin API's bearer.
    pub admin_token: Accepted,
    /// Key for the phone numbers' lookup hash and encryption.
    pub pii_key: [u8; 32],
    pub chatflow: Option<ChatflowConfig>,
    pub telegram: Option<TelegramConfig>,
    pub instagram: Option<InstagramConfig>,
    pub llm: Option<LlmConfig>,
    /// `None`: no embeddings endpoint, so no knowledge base.
    pub knowledge: Option<KnowledgeConfig>,
    pub listen: SocketAddr,
    /// The admin API's own listener (not routed by the Ingress).
    pub admin_listen: SocketAddr,
    /// What the guarded fetcher may reach besides public addresses.
    pub fetch: crate::fetch::Guard,
    pub tuning: Tuning,
    /// The handover adapters with their Secrets.
    pub handover: HandoverConfig,
    /// The runtime's public HTTPS base (the tenant's Ingress): Telegram's
    /// webhook and the reply URL given to CRMs. Without it the managers'
    /// Telegram group is read by long polling.
    pub public_url: Option<String>,
}

/// `truffles-bot serve` arguments; every one can come from the environment.
#[derive(clap::Args, Debug)]
pub struct ServeArgs {
    #[arg(long, env = env::CLIENT_NAME)]
    pub client_name: String,
    #[arg(
        long,
        env = env::CONFIG_FILE,
        default_value = CONFIG_FILE
    )]
    pub config_file: PathBuf,
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = env::REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,
    #[arg(long, env = env::WEBHOOK_SECRET, hide_env_values = true)]
    pub webhook_secret: String,
    #[arg(long, env = env::WEBHOOK_SECRET_PREVIOUS, hide_env_values = true)]
    pub webhook_secret_previous: Option<String>,
    #[arg(long, env = env::WEBHOOK_SECRET_PREVIOUS_UNTIL)]
    pub webhook_secret_previous_until: Option<String>,
    #[arg(long, env = env::ADMIN_TOKEN, hide_env_values = true)]
    pub admin_token: String,
    #[arg(long, env = env::ADMIN_TOKEN_PREVIOUS, hide_env_values = true)]
    pub admin_token_previous: Option<String>,
    #[arg(long, env = env::ADMIN_TOKEN_PREVIOUS_UNTIL)]
    pub admin_token_previous_until: Option<String>,
    #[arg(long, env = env::PII_KEY, hide_env_values = true)]
    pub pii_key: String,
    #[arg(long, env = env::CHATFLOW_TOKEN, hide_env_values = true)]
    pub chatflow_token: Option<String>,
    #[arg(long, env = env::CHATFLOW_SIGNATURE_KEY, hide_env_values = true)]
    pub chatflow_signature_key: Option<String>,
    #[arg(long, env = env::TELEGRAM_BOT_TOKEN, hide_env_values = true)]
    pub telegram_bot_token: Option<String>,
    #[arg(long, env = env::INSTAGRAM_ACCESS_TOKEN, hide_env_values = true)]
    pub instagram_access_token: Option<String>,
    #[arg(long, env = env::INSTAGRAM_APP_SECRET, hide_env_values = true)]
    pub instagram_app_secret: Option<String>,
    #[arg(long, env = env::INSTAGRAM_VERIFY_TOKEN, hide_env_values = true)]
    pub instagram_verify_token: Option<String>,
    #[arg(long, env = env::OPENAI_API_KEY, hide_env_values = true)]
    pub openai_api_key: Option<String>,
    /// The Qdrant server's API key (`knowledge.vectorStore.apiKeySecretRef`).
    #[arg(long, env = env::QDRANT_API_KEY, hide_env_values = true)]
    pub qdrant_api_key: Option<String>,
    /// Speech-to-text model; voice messages get a placeholder without it.
    #[arg(long, env = "TRUFFLES_TRANSCRIPTION_MODEL")]
    pub transcription_model: Option<String>,
    #[arg(long, env = "TRUFFLES_LISTEN", default_value = "0.0.0.0:8080")]
    pub listen: SocketAddr,
    #[arg(long, env = "TRUFFLES_ADMIN_LISTEN", default_value = "0.0.0.0:8081")]
    pub admin_listen: SocketAddr,
    /// Special ranges media and URL sources may be fetched from anyway.
    #[arg(long, env = env::FETCH_ALLOW_CIDRS, default_value = "")]
    pub fetch_allow_cidrs: String,
    #[arg(long, env = "TRUFFLES_COALESCE_MS", default_value_t = 1500)]
    pub coalesce_ms: u64,
    /// PostgreSQL connections of this process at most (default: workers + 2).
    #[arg(long, env = "TRUFFLES_DB_CONNECTIONS")]
    pub db_connections: Option<u32>,
    /// Concurrent turns of this process.
    #[arg(long, env = "TRUFFLES_INBOX_WORKERS", default_value_t = 8)]
    pub inbox_workers: usize,
    /// The runtime's volume (the Qdrant Edge shard lives in `knowledge/`).
    #[arg(long, env = env::DATA_DIR, default_value = DATA_DIR)]
    pub data_dir: PathBuf,
    /// Where the operator mounts ConfigMap knowledge sources, one folder each.
    #[arg(
        long,
        env = env::KNOWLEDGE_DIR,
        default_value = KNOWLEDGE_DIR
    )]
    pub knowledge_dir: PathBuf,
    /// Embeddings endpoint when it is neither llm.embeddingBaseUrl nor llm.baseUrl.
    #[arg(long, env = "TRUFFLES_EMBEDDINGS_URL")]
    pub embeddings_url: Option<String>,
    /// Minimum similarity of a retrieved fact (default per embedding model).
    #[arg(long, env = "TRUFFLES_RAG_MIN_SCORE")]
    pub rag_min_score: Option<f32>,
    /// Where the operator mounts the handover adapters' Secrets
    /// (`handover/`, `handover-fallback/`, a file per key).
    #[arg(
        long,
        env = env::SECRETS_DIR,
        default_value = SECRETS_DIR
    )]
    pub secrets_dir: PathBuf,
    /// The tenant's public base URL (https://host), when it has an Ingress.
    #[arg(long, env = env::PUBLIC_URL)]
    pub public_url: Option<String>,
}

impl Config {
    /// Reads the rendered spec and combines it with the secrets.
    pub fn load(args: ServeArgs) -> Result<Self> {
        let text = std::fs::read_to_string(&args.config_file)
            .with_context(|| format!("reading {}", args.config_file.display()))?;
        let spec: TrufflesClientSpec = serde_json::from_str(&text).with_context(|| {
            format!(
                "parsing {} as a TrufflesClient spec",
                args.config_file.display()
            )
        })?;
        let fetch = crate::fetch::Guard {
            allow: crate::fetch::parse_allow(&args.fetch_allow_cidrs)
                .context(env::FETCH_ALLOW_CIDRS)?,
        };
        // Before the secrets below are moved out of `args`.
        let mut knowledge = knowledge_config(&spec, &args);
        if let Some(k) = knowledge.as_mut() {
            k.fetch = fetch.clone();
        }
        let chatflow = match (&spec.channels.whatsapp, args.chatflow_token) {
            (Some(w), Some(token)) => Some(ChatflowConfig {
                base_url: w.api_base_url.clone(),
                instance_id: w.instance_id.clone(),
                token,
                signature_key: args.chatflow_signature_key.map(String::into_bytes),
            }),
            (Some(_), None) => {
                bail!("the WhatsApp channel is enabled but CHATFLOW_TOKEN is not set")
            }
            (None, _) => None,
        };
        let telegram = match (&spec.channels.telegram, args.telegram_bot_token) {
            (Some(t), Some(token)) => Some(TelegramConfig {
                api_base_url: t.api_base_url.clone(),
                token,
            }),
            (Some(_), None) => {
                bail!("the Telegram channel is enabled but TELEGRAM_BOT_TOKEN is not set")
            }
            (None, _) => None,
        };
        let instagram = match &spec.channels.instagram {
            Some(i) => {
                let (Some(access_token), Some(app_secret), Some(verify_token)) = (
                    args.instagram_access_token,
                    args.instagram_app_secret,
                    args.instagram_verify_token,
                ) else {
                    bail!(
                        "the Instagram channel is enabled but INSTAGRAM_ACCESS_TOKEN, INSTAGRAM_APP_SECRET or INSTAGRAM_VERIFY_TOKEN is not set"
                    )
                };
                Some(InstagramConfig {
                    api_base_url: i.api_base_url.clone(),
                    api_version: i.api_version.clone(),
                    account_id: i.account_id.clone(),
                    access_token,
                    app_secret: app_secret.into_bytes(),
                    verify_token,
                })
            }
            None => None,
        };
        if let (Some(k), Some(min)) = (knowledge.as_mut(), args.rag_min_score) {
            k.min_score = min;
        }
        let llm = llm_config(&spec, args.openai_api_key, args.transcription_model);
        let handover = handover_config(&spec, &args.secrets_dir);
        Ok(Self {
            handover,
            public_url: args.public_url.filter(|u| !u.is_empty()),
            client_name: args.client_name,
            database_url: args.database_url,
            redis_url: args.redis_url.filter(|u| !u.is_empty()),
            webhook_secret: Accepted::new(
                args.webhook_secret,
                args.webhook_secret_previous,
                args.webhook_secret_previous_until.as_deref(),
            ),
            admin_token: Accepted::new(
                args.admin_token,
                args.admin_token_previous,
                args.admin_token_previous_until.as_deref(),
            ),
            pii_key: parse_key(&args.pii_key)?,
            chatflow,
            telegram,
            instagram,
            llm,
            knowledge,
            listen: args.listen,
            admin_listen: args.admin_listen,
            fetch,
            tuning: Tuning {
                coalesce_window: Duration::from_millis(args.coalesce_ms),
                db_connections: args.db_connections.map(|n| n.max(2)),
                inbox_workers: args.inbox_workers.clamp(1, 64),
                ..Tuning::default()
            },
            spec,
        })
    }
}

/// The LLM is configured when the spec names an endpoint or a key is given.
pub fn llm_config(
    spec: &TrufflesClientSpec,
    api_key: Option<String>,
    transcription_model: Option<String>,
) -> Option<LlmConfig> {
    let llm = &spec.llm;
    if llm.base_url.is_none() && api_key.is_none() {
        return None;
    }
    Some(LlmConfig {
        base_url: llm
            .base_url
            .clone()
            .unwrap_or_else(|| "https://api.openai.com/v1".into()),
        api_key: api_key.unwrap_or_default(),
        model: llm.model.clone(),
        fallback_model: llm.fallback_model.clone(),
        temperature: llm.temperature as f32,
        timeout: Duration::from_secs(u64::from(llm.timeout_seconds.max(1))),
        transcription_model,
    })
}

/// The knowledge base is on when an embeddings endpoint is known: an explicit
/// one, the spec's embedding or LLM base URL, or OpenAI's with a key.
pub fn knowledge_config(spec: &TrufflesClientSpec, args: &ServeArgs) -> Option<KnowledgeConfig> {
    let api_key = args.openai_api_key.as_deref();
    let store = &spec.knowledge.vector_store;
    let qdrant = match (store.backend, &store.url) {
        (VectorBackend::Edge, _) => None,
        (VectorBackend::Qdrant, Some(url)) => Some(QdrantConfig {
            url: url.clone(),
            api_key: args.qdrant_api_key.clone(),
            collection: truffles_migrations::collection::name(&args.client_name),
        }),
        (VectorBackend::Qdrant, None) => {
            // The CRD refuses this; a hand-written config file could still say it.
            tracing::error!(
                "vectorStore.backend is Qdrant without a url: running without a knowledge base"
            );
            return None;
        }
    };
    let llm = &spec.llm;
    let url = args
        .embeddings_url
        .clone()
        .or_else(|| llm.embedding_base_url.clone())
        .or_else(|| llm.base_url.clone())
        .or_else(|| api_key.map(|_| "https://api.openai.com/v1".to_owned()))?;
    Some(KnowledgeConfig {
        embeddings_url: url,
        api_key: api_key.unwrap_or_default().to_owned(),
        model: llm.embedding_model.clone(),
        dimensions: llm.embedding_dimensions as usize,
        store_dir: args.data_dir.join("knowledge"),
        qdrant,
        sources_dir: args.knowledge_dir.clone(),
        secrets_dir: args.secrets_dir.clone(),
        max_tokens: spec.knowledge.chunking.max_tokens as usize,
        overlap_tokens: spec.knowledge.chunking.overlap_tokens as usize,
        min_score: default_min_score(&llm.embedding_model),
        fetch: Default::default(),
    })
}

/// The handover adapters with the Secrets the operator mounted for them.
pub fn handover_config(spec: &TrufflesClientSpec, secrets_dir: &std::path::Path) -> HandoverConfig {
    let adapter = |spec: &truffles_crds::client::HandoverAdapter, mount: &str| AdapterConfig {
        spec: spec.clone(),
        secrets: read_secrets(&secrets_dir.join(mount)),
    };
    HandoverConfig {
        primary: adapter(&spec.handover.adapter, path::HANDOVER_SECRETS),
        fallback: spec
            .handover
            .fallback
            .as_ref()
            .map(|f| adapter(f, path::HANDOVER_FALLBACK_SECRETS)),
        // Telegram allows about 20 messages a minute in a group.
        telegram_per_minute: 20,
    }
}
