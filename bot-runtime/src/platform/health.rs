//! The platform's health check (`truffles-bot health`, docs/architecture.md, "Platform jobs"):
//! PostgreSQL, Redis, Qdrant, the LLM API and the ChatFlow API probed every
//! `interval` (5 minutes), `truffles_dependency_up` exported, and the admin
//! told in Telegram once when a dependency has been down for longer than
//! `grace` (1 minute) and once when it is back: one alert per incident, never
//! one per probe. A failing dependency is re-probed every `recheck` so the
//! minute is measured, not the 5-minute period.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, Result};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;
use teloxide::prelude::Requester;
use tokio::time::Instant;

// ------------------------------------------------------------------ incidents

/// What the admin is told.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Alert {
    Down {
        dependency: String,
        error: String,
        for_: Duration,
    },
    Recovered {
        dependency: String,
        after: Duration,
    },
}

impl Alert {
    pub fn text(&self) -> String {
        match self {
            Alert::Down {
                dependency,
                error,
                for_,
            } => format!(
                "🔴 Truffles: {dependency} is down (for {}s): {error}",
                for_.as_secs()
            ),
            Alert::Recovered { dependency, after } => format!(
                "🟢 Truffles: {dependency} is back after {}s",
                after.as_secs()
            ),
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    Up,
    /// Failing since, not yet alerted (a blip shorter than the grace is silent).
    Failing(Instant),
    /// Alerted; down since.
    Down(Instant),
}

/// Incident state per dependency: decides which probe results become alerts.
#[derive(Debug)]
pub struct Incidents {
    grace: Duration,
    states: BTreeMap<String, State>,
}

impl Incidents {
    pub fn new(grace: Duration) -> Self {
        Self {
            grace,
            states: BTreeMap::new(),
        }
    }

    /// One probe result; returns the alert it causes, if any.
    pub fn observe(
        &mut self,
        dependency: &str,
        result: &Result<(), String>,
        now: Instant,
    ) -> Option<Alert> {
        let state = self
            .states
            .entry(dependency.to_owned())
            .or_insert(State::Up);
        match (*state, result) {
            (State::Up, Ok(())) => None,
            (State::Up, Err(_)) => {
                *state = State::Failing(now);
                // A zero grace alerts at once.
                self.escalate(dependency, result, now)
            }
            (State::Failing(_), Err(_)) => self.escalate(dependency, result, now),
            (State::Failing(_), Ok(())) => {
                *state = State::Up;
                None
            }
            (State::Down(_), Err(_)) => None,
            (State::Down(since), Ok(())) => {
                *state = State::Up;
                Some(Alert::Recovered {
                    dependency: dependency.to_owned(),
                    after: now.saturating_duration_since(since),
                })
            }
        }
    }

    fn escalate(
        &mut self,
        dependency: &str,
        result: &Result<(), String>,
        now: Instant,
    ) -> Option<Alert> {
        let state = self.states.get_mut(dependency)?;
        let State::Failing(since) = *state else {
            return None;
        };
        let down_for = now.saturating_duration_since(since);
        if down_for < self.grace {
            return None;
        }
        *state = State::Down(since);
        Some(Alert::Down {
            dependency: dependency.to_owned(),
            error: result.clone().err().unwrap_or_default(),
            for_: down_for,
        })
    }

    /// Whether some dependency fails without an alert yet (re-probe soon).
    pub fn pending(&self) -> bool {
        self.states.values().any(|s| matches!(s, State::Failing(_)))
    }
}

// ------------------------------------------------------------------ probes

/// `truffles-bot health` arguments; every one can come from the environment.
#[derive(clap::Args, Debug, Clone)]
pub struct HealthArgs {
    /// The platform database.
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    pub redis_url: Option<String>,
    /// Qdrant server's REST URL (its `/healthz` is probed).
    #[arg(long, env = "QDRANT_URL")]
    pub qdrant_url: Option<String>,
    /// The OpenAI-compatible API (`/models` is probed).
    #[arg(long, env = "OPENAI_BASE_URL")]
    pub llm_url: Option<String>,
    #[arg(long, env = "OPENAI_API_KEY", hide_env_values = true)]
    pub llm_api_key: Option<String>,
    /// The ChatFlow API.
    #[arg(long, env = "CHATFLOW_API_URL")]
    pub chatflow_url: Option<String>,
    /// The admin's Telegram bot and chat for alerts.
    #[arg(long, env = "TRUFFLES_TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    pub telegram_bot_token: Option<String>,
    #[arg(long, env = "TRUFFLES_ADMIN_CHAT_ID")]
    pub admin_chat_id: Option<i64>,
    #[arg(long, env = "TRUFFLES_TELEGRAM_API_URL")]
    pub telegram_api_url: Option<String>,
    /// Between rounds of probes.
    #[arg(long, env = "TRUFFLES_HEALTH_INTERVAL_SECONDS", default_value_t = 300)]
    pub interval_seconds: u64,
    /// How long a dependency must stay down before the admin is told.
    #[arg(long, env = "TRUFFLES_HEALTH_GRACE_SECONDS", default_value_t = 60)]
    pub grace_seconds: u64,
    /// Re-probe period while a dependency fails and is not alerted yet.
    #[arg(long, env = "TRUFFLES_HEALTH_RECHECK_SECONDS", default_value_t = 10)]
    pub recheck_seconds: u64,
    /// `/metrics` for Prometheus.
    #[arg(long, env = "TRUFFLES_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    pub metrics_addr: SocketAddr,
    /// Probe once, print the result and exit (non-zero when something is down).
    #[arg(long)]
    pub once: bool,
}

const PROBE_TIMEOUT: Duration = Duration::from_secs(5);

/// What is probed, built once from the arguments.
pub struct Probes {
    database_url: String,
    redis: Option<redis::Client>,
    qdrant_url: Option<String>,
    llm: Option<(String, Option<String>)>,
    chatflow_url: Option<String>,
    http: reqwest::Client,
}

impl Probes {
    pub fn new(args: &HealthArgs) -> Result<Self> {
        let redis = args
            .redis_url
            .as_deref()
            .map(redis::Client::open)
            .transpose()
            .context("REDIS_URL is not a valid redis:// URL")?;
        Ok(Self {
            database_url: args.database_url.clone(),
            redis,
            qdrant_url: args.qdrant_url.clone(),
            llm: args
                .llm_url
                .clone()
                .map(|url| (url, args.llm_api_key.clone())),
            chatflow_url: args.chatflow_url.clone(),
            http: reqwest::Client::builder()
                .timeout(PROBE_TIMEOUT)
                .build()
                .context("building the HTTP client")?,
        })
    }

    /// Every configured dependency's result, by name. Errors never carry URLs
    /// (they may hold credentials).
    pub async fn run(&self) -> BTreeMap<&'static str, Result<(), String>> {
        let postgres = async {
            let connect = async {
                use sqlx::Connection;
                let mut conn = sqlx::PgConnection::connect(&self.database_url).await?;
                sqlx::query("SELECT 1").execute(&mut conn).await?;
                conn.close().await
            };
            match tokio::time::timeout(PROBE_TIMEOUT, connect).await {
                Ok(Ok(())) => Ok(()),
                Ok(Err(e)) => Err(database_error(&e)),
                Err(_) => Err("timed out".to_owned()),
            }
        };
        let redis = async {
            let client = self.redis.as_ref()?;
            let ping = async {
                let mut conn = client.get_multiplexed_async_connection().await?;
                redis::cmd("PING").query_async::<String>(&mut conn).await
            };
            Some(match tokio::time::timeout(PROBE_TIMEOUT, ping).await {
                Ok(Ok(_)) => Ok(()),
                Ok(Err(e)) => Err(format!("{:?}", e.kind())),
                Err(_) => Err("timed out".to_owned()),
            })
        };
        let qdrant = async {
            let url = self.qdrant_url.as_deref()?;
            Some(
                self.http_ok(&format!("{}/healthz", url.trim_end_matches('/')), None)
                    .await,
            )
        };
        let llm = async {
            let (url, key) = self.llm.as_ref()?;
            let url = format!("{}/models", url.trim_end_matches('/'));
            Some(self.http_ok(&url, key.as_deref()).await)
        };
        let chatflow = async {
            let url = self.chatflow_url.as_deref()?;
            // Any HTTP answer: the API root has no documented health endpoint.
            Some(
                self.http
                    .get(url)
                    .send()
                    .await
                    .map(drop)
                    .map_err(|e| http_error(&e)),
            )
        };
        let (postgres, redis, qdrant, llm, chatflow) =
            tokio::join!(postgres, redis, qdrant, llm, chatflow);
        let mut out = BTreeMap::from([("postgres", postgres)]);
        for (name, result) in [
            ("redis", redis),
            ("qdrant", qdrant),
            ("llm", llm),
            ("chatflow", chatflow),
        ] {
            if let Some(r) = result {
                out.insert(name, r);
            }
        }
        out
    }

    async fn http_ok(&self, url: &str, bearer: Option<&str>) -> Result<(), String> {
        let mut request = self.http.get(url);
        if let Some(key) = bearer {
            request = request.bearer_auth(key);
        }
        let response = request.send().await.map_err(|e| http_error(&e))?;
        // A 4xx means the service answers (a wrong key is not an outage).
        if response.status().is_server_error() {
            return Err(format!("HTTP {}", response.status()));
        }
        Ok(())
    }
}

fn http_error(e: &reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "connection refused or unreachable"
    } else {
        "request failed"
    };
    kind.to_owned()
}

fn database_error(e: &sqlx::Error) -> String {
    match e {
        sqlx::Error::Io(io) => format!("{:?}", io.kind()),
        sqlx::Error::Database(db) => format!("database error {}", db.code().unwrap_or_default()),
        _ => "connection failed".to_owned(),
    }
}

// ------------------------------------------------------------------ the loop

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct DependencyLabels {
    dependency: String,
}

/// The check's metrics: `truffles_dependency_up{dependency}`,
/// `truffles_health_alerts_total{dependency}`.
pub struct HealthMetrics {
    registry: Registry,
    up: Family<DependencyLabels, Gauge>,
    alerts: Family<DependencyLabels, Counter>,
}

impl Default for HealthMetrics {
    fn default() -> Self {
        let mut registry = Registry::with_prefix("truffles");
        let up = Family::<DependencyLabels, Gauge>::default();
        let alerts = Family::<DependencyLabels, Counter>::default();
        registry.register(
            "dependency_up",
            "1 when the dependency answered the last probe",
            up.clone(),
        );
        registry.register("health_alerts", "Alerts sent to the admin", alerts.clone());
        Self {
            registry,
            up,
            alerts,
        }
    }
}

impl HealthMetrics {
    pub fn render(&self) -> String {
        let mut out = String::new();
        let _ = prometheus_client::encoding::text::encode(&mut out, &self.registry);
        out
    }
}

/// Where alerts go.
pub struct AdminTelegram {
    bot: teloxide::Bot,
    chat: teloxide::types::ChatId,
}

impl AdminTelegram {
    pub fn new(token: &str, chat: i64, api_url: Option<&str>) -> Result<Self> {
        let mut bot = teloxide::Bot::new(token);
        if let Some(url) = api_url {
            bot = bot.set_api_url(url.parse().context("invalid Telegram API URL")?);
        }
        Ok(Self {
            bot,
            chat: teloxide::types::ChatId(chat),
        })
    }

    async fn send(&self, text: &str) -> Result<(), String> {
        self.bot
            .send_message(self.chat, text)
            .await
            .map(drop)
            .map_err(|e| e.to_string())
    }
}

/// The check's state between rounds.
pub struct HealthCheck {
    pub probes: Probes,
    pub incidents: Incidents,
    pub metrics: Arc<HealthMetrics>,
    pub admin: Option<AdminTelegram>,
    /// Alerts Telegram did not take yet; they go with the next round.
    pub undelivered: Vec<Alert>,
}

impl HealthCheck {
    pub fn new(probes: Probes, grace: Duration, admin: Option<AdminTelegram>) -> Self {
        Self {
            probes,
            incidents: Incidents::new(grace),
            metrics: Arc::new(HealthMetrics::default()),
            admin,
            undelivered: Vec::new(),
        }
    }

    /// One round: probe, record, alert.
    pub async fn round(&mut self) -> BTreeMap<&'static str, Result<(), String>> {
        let results = self.probes.run().await;
        let now = Instant::now();
        for (dependency, result) in &results {
            let labels = DependencyLabels {
                dependency: (*dependency).to_owned(),
            };
            self.metrics
                .up
                .get_or_create(&labels)
                .set(i64::from(result.is_ok()));
            if let Err(e) = result {
                tracing::warn!(dependency, error = %e, "dependency probe failed");
            }
            if let Some(alert) = self.incidents.observe(dependency, result, now) {
                self.metrics.alerts.get_or_create(&labels).inc();
                tracing::warn!(alert = %alert.text(), "health alert");
                self.undelivered.push(alert);
            }
        }
        match &self.admin {
            Some(admin) => {
                let mut still = Vec::new();
                for alert in self.undelivered.drain(..) {
                    if let Err(e) = admin.send(&alert.text()).await {
                        tracing::error!(error = %e, "the admin alert could not be sent; retrying next round");
                        still.push(alert);
                    }
                }
                self.undelivered = still;
            }
            // Logged above; nobody to tell.
            None => self.undelivered.clear(),
        }
        results
    }

    /// Re-probe soon while a failure is not alerted or an alert not delivered.
    pub fn urgent(&self) -> bool {
        self.incidents.pending() || !self.undelivered.is_empty()
    }
}

/// `truffles-bot health`.
pub async fn run(args: HealthArgs) -> Result<()> {
    let probes = Probes::new(&args)?;
    if args.once {
        let results = probes.run().await;
        let mut down = 0;
        for (dependency, result) in &results {
            match result {
                Ok(()) => println!("{dependency}: ok"),
                Err(e) => {
                    down += 1;
                    println!("{dependency}: down ({e})");
                }
            }
        }
        anyhow::ensure!(down == 0, "{down} dependencies are down");
        return Ok(());
    }
    let admin = match (&args.telegram_bot_token, args.admin_chat_id) {
        (Some(token), Some(chat)) => Some(AdminTelegram::new(
            token,
            chat,
            args.telegram_api_url.as_deref(),
        )?),
        _ => {
            tracing::warn!(
                "TRUFFLES_TELEGRAM_BOT_TOKEN or TRUFFLES_ADMIN_CHAT_ID is not set: alerts are only logged"
            );
            None
        }
    };
    let mut check = HealthCheck::new(probes, Duration::from_secs(args.grace_seconds), admin);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    let served = check.metrics.clone();
    let app = axum::Router::new().route(
        "/metrics",
        axum::routing::get(move || {
            let m = served.clone();
            async move { m.render() }
        }),
    );
    tokio::spawn(async move { axum::serve(listener, app).await });
    loop {
        check.round().await;
        let wait = if check.urgent() {
            args.recheck_seconds
        } else {
            args.interval_seconds
        };
        tokio::time::sleep(Duration::from_secs(wait.max(1))).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn down() -> Result<(), String> {
        Err("connection refused".into())
    }

    #[test]
    fn one_alert_per_incident_and_one_on_recovery() {
        let start = Instant::now();
        let at = |s: u64| start + Duration::from_secs(s);
        let mut incidents = Incidents::new(Duration::from_secs(60));
        assert_eq!(incidents.observe("redis", &Ok(()), at(0)), None);
        assert_eq!(incidents.observe("redis", &down(), at(10)), None);
        assert!(incidents.pending());
        assert_eq!(incidents.observe("redis", &down(), at(40)), None);
        let alert = incidents.observe("redis", &down(), at(75));
        assert!(matches!(alert, Some(Alert::Down { ref dependency, .. }) if dependency == "redis"));
        // Still down: no storm.
        for s in [85, 400, 700] {
            assert_eq!(incidents.observe("redis", &down(), at(s)), None);
        }
        assert!(!incidents.pending());
        assert_eq!(
            incidents.observe("redis", &Ok(()), at(710)),
            Some(Alert::Recovered {
                dependency: "redis".into(),
                after: Duration::from_secs(700)
            })
        );
        assert_eq!(incidents.observe("redis", &Ok(()), at(720)), None);
    }

    #[test]
    fn a_blip_shorter_than_the_grace_is_silent() {
        let start = Instant::now();
        let mut incidents = Incidents::new(Duration::from_secs(60));
        assert_eq!(incidents.observe("llm", &down(), start), None);
        assert_eq!(
            incidents.observe("llm", &Ok(()), start + Duration::from_secs(20)),
            None
        );
        assert!(!incidents.pending());
    }

    #[test]
    fn dependencies_are_tracked_apart() {
        let start = Instant::now();
        let mut incidents = Incidents::new(Duration::ZERO);
        assert!(incidents.observe("redis", &down(), start).is_some());
        assert_eq!(incidents.observe("postgres", &Ok(()), start), None);
        assert!(incidents.observe("chatflow", &down(), start).is_some());
    }
}
