//! One tenant's runtime state, shared by the gateway, the pipeline, the
//! outbox and the handover. What starts them is `serve.rs`.

use std::sync::Arc;

use anyhow::{Context, Result};
use sqlx::postgres::{PgPool, PgPoolOptions};

use crate::audit::{self, Level};
use crate::backlog::Backlog;
use crate::breaker::Breakers;
use crate::cache::Cache;
use crate::channels::Channels;
use crate::config::Config;
use crate::handover::Managers;
use crate::health_cache::Probes;
use crate::knowledge::{Knowledge, KnowledgeBase};
use crate::llm::Llm;
use crate::metrics::Metrics;
use crate::pii::Pii;
use crate::wake::Wakes;

pub struct Runtime {
    pub config: Config,
    pub db: PgPool,
    pub cache: Arc<Cache>,
    pub llm: Llm,
    /// The customer channels (WhatsApp, Telegram, Instagram) it sends through.
    pub channels: Channels,
    pub knowledge: Arc<dyn Knowledge>,
    /// The tenant's own knowledge base, which this process keeps in sync.
    pub knowledge_base: Option<Arc<KnowledgeBase>>,
    /// Intent by similarity to example phrases, when embeddings are available.
    pub examples: Option<crate::semantic::ExampleClassifier>,
    /// The tenant's handover topics, built-in definitions filled in.
    pub topics: Vec<crate::topics::Topic>,
    /// Topic by similarity to the topics' examples, when embeddings are available.
    pub topic_examples: Option<crate::semantic::ExampleClassifier>,
    /// One sync at a time (the schedule and the admin endpoint).
    pub sync_lock: tokio::sync::Mutex<()>,
    pub pii: Pii,
    pub metrics: Metrics,
    pub breakers: Arc<Breakers>,
    /// For plain HTTP calls to configured services; timeouts are per request.
    pub http: reqwest::Client,
    /// For URLs that come from outside (customers' media links).
    pub fetch: crate::fetch::Fetcher,
    /// Wakes the inbox workers, the outbox sender, the managers' notifier
    /// and the scheduler (nothing polls: `wake.rs`).
    pub wakes: Arc<Wakes>,
    /// The inbox's bound (backpressure).
    pub backlog: Backlog,
    /// What `/readyz` may trust without asking again.
    pub probes: Probes,
    /// The tenant's handover adapters.
    pub managers: Managers,
}

impl Runtime {
    /// Builds the state without touching the network: the pool connects lazily,
    /// so the process starts (and reports not-ready) while a dependency is down.
    pub fn new(config: Config, knowledge: Arc<dyn Knowledge>) -> Result<Self> {
        let options: sqlx::postgres::PgConnectOptions = config
            .database_url
            .parse()
            .context("DATABASE_URL is not a valid PostgreSQL URL")?;
        // Named in pg_stat_activity, so an operator sees whose connections these are.
        let options = options.application_name("truffles-bot");
        // No minimum and a short idle timeout: an idle runtime holds no
        // connection between its sweeps (the server's backends are what a
        // thousand tenants run out of first).
        let db = PgPoolOptions::new()
            .max_connections(config.tuning.max_connections())
            .min_connections(0)
            .idle_timeout(config.tuning.db_idle_timeout)
            .acquire_timeout(std::time::Duration::from_secs(3))
            .connect_lazy_with(options);
        let wakes = Arc::new(Wakes::default());
        let on_wake = {
            let wakes = wakes.clone();
            Arc::new(move |payload: &str| wakes.on_message(payload))
        };
        let cache = Arc::new(
            Cache::new(&config.client_name, config.redis_url.as_deref())?
                .with_channel(crate::wake::CHANNEL, on_wake)?,
        );
        let breakers = Arc::new(Breakers::new(cache.clone()));
        let http = reqwest::Client::new();
        let fetch = crate::fetch::Fetcher::new(config.fetch.clone())?;
        Ok(Self {
            managers: Managers::build(&config.handover, &fetch, &config.client_name),
            llm: Llm::new(config.llm.clone(), breakers.clone()),
            channels: Channels::new(
                config.chatflow.clone(),
                config.telegram.as_ref(),
                config.instagram.clone(),
            ),
            pii: Pii::new(&config.pii_key),
            metrics: Metrics::new(&config.client_name),
            knowledge,
            knowledge_base: None,
            examples: None,
            topics: crate::topics::resolve(&config.spec.handover.topics),
            topic_examples: None,
            sync_lock: tokio::sync::Mutex::new(()),
            cache,
            breakers,
            fetch,
            http,
            db,
            wakes,
            backlog: Backlog::default(),
            probes: Probes::default(),
            config,
        })
    }
}

impl Runtime {
    /// What `truffles-bot serve` runs: the tenant's knowledge base opened
    /// when `config.knowledge` is set, none otherwise.
    pub fn from_config(config: Config) -> Result<Self> {
        let kb = config
            .knowledge
            .as_ref()
            .map(KnowledgeBase::open)
            .transpose()?;
        let runtime = Self::new(config, Arc::new(crate::knowledge::NoKnowledge))?;
        Ok(match kb {
            Some(kb) => runtime.with_knowledge_base(Arc::new(kb)),
            None => runtime,
        })
    }

    /// Uses (and keeps in sync) the tenant's knowledge base.
    pub fn with_knowledge_base(mut self, kb: Arc<KnowledgeBase>) -> Self {
        self.knowledge = kb.clone();
        self.examples = Some(crate::semantic::ExampleClassifier::new(kb.embedder.clone()));
        self.topic_examples = Some(crate::semantic::ExampleClassifier::topics(
            kb.embedder.clone(),
            &self.topics,
        ));
        self.knowledge_base = Some(kb);
        self
    }

    /// Runs one knowledge sync (none when the runtime has no knowledge base).
    pub async fn sync_knowledge(&self) -> Result<Option<crate::knowledge::sync::Report>> {
        let (Some(kb), Some(config)) = (&self.knowledge_base, &self.config.knowledge) else {
            return Ok(None);
        };
        let _one_at_a_time = self.sync_lock.lock().await;
        let report =
            crate::knowledge::sync::run(kb, &self.db, &self.config.spec.knowledge.sources, config)
                .await?;
        Ok(Some(report))
    }

    /// The error handler (docs/architecture.md, "Errors and fallbacks"): counts an error by level and stores it (error_logs with the
    /// input for replay, and an `error` audit row).
    pub async fn report(
        &self,
        stage: &str,
        level: Level,
        error_type: &str,
        message: &str,
        input: Option<serde_json::Value>,
    ) {
        self.metrics.error(level.as_str());
        audit::error(&self.db, stage, level, error_type, message, input).await;
    }
}
