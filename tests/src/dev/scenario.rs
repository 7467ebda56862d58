//! The product's acceptance scenario, through the real webhook of a real
//! `truffles-bot` process that the operator provisioned and the supervisor runs:
//! a customer greets in Russian, asks a price from the knowledge base, asks in
//! Kazakh, asks for a manager; a manager (in the Telegram stand-in) takes the
//! conversation, replies and closes it; the bot answers again; then the tenant
//! is suspended (no answer, data kept), reactivated, and purged (nothing left).
//! Every step checks what it expects and fails with the reason; the transcript
//! is printed as it happens.

use std::fmt::Write as _;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use kube::Api;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use serde_json::{Value, json};
use sqlx::PgPool;
use truffles_crds::TrufflesClient;
use truffles_migrations::TenantDb;
use truffles_operator::tenant::build::CLIENT_LABEL;

use super::{LocalTenant, Platform};
use crate::managers::{FakeTelegram, GroupMessage, eventually};
use crate::runtime::chatflow_text;

/// The customer's WhatsApp number.
pub const PHONE: &str = "77015550101";
const MANAGER: (i64, &str) = (501, "Асель");
const ANSWER: Duration = Duration::from_secs(60);
const LIFECYCLE: Duration = Duration::from_secs(120);

/// What happened, one line per utterance or platform step.
#[derive(Default)]
pub struct Transcript {
    lines: Vec<String>,
    live: bool,
}

impl Transcript {
    pub fn new(live: bool) -> Self {
        Self {
            lines: Vec::new(),
            live,
        }
    }

    fn say(&mut self, who: &str, text: &str) {
        let mut line = String::new();
        for (i, part) in text.trim_end().lines().enumerate() {
            let label = if i == 0 { who } else { "" };
            let _ = writeln!(line, "{label:>16} │ {part}");
        }
        if self.live {
            print!("{line}");
        }
        self.lines.push(line);
    }

    pub fn text(&self) -> String {
        self.lines.concat()
    }
}

/// Runs the scenario with the flower shop of `examples/tenants` in
/// `namespace` (named `rename` when given).
pub async fn run(
    platform: &Platform,
    namespace: &str,
    rename: Option<&str>,
    transcript: &mut Transcript,
) -> Result<()> {
    let path = crate::workspace_root().join("examples/tenants/flower-shop.yaml");
    transcript.say(
        "platform",
        &format!("kubectl apply -n {namespace} -f examples/tenants/flower-shop.yaml"),
    );
    let tenant = platform.apply_tenant(namespace, &path, rename).await?;
    let mut s = Scenario::new(platform, tenant).await?;
    s.provisioned(transcript).await?;
    s.conversation(transcript).await?;
    s.handover(transcript).await?;
    s.suspend_and_reactivate(transcript).await?;
    s.purge(transcript).await
}

struct Scenario<'a> {
    platform: &'a Platform,
    tenant: LocalTenant,
    admin: PgPool,
    http: reqwest::Client,
    webhook: String,
    next_message: u32,
}

impl<'a> Scenario<'a> {
    async fn new(platform: &'a Platform, tenant: LocalTenant) -> Result<Self> {
        let admin = PgPool::connect(&platform.settings.database_url)
            .await
            .context("connecting to the platform database")?;
        Ok(Self {
            platform,
            tenant,
            admin,
            http: reqwest::Client::builder()
                .timeout(Duration::from_secs(30))
                .build()?,
            webhook: String::new(),
            next_message: 0,
        })
    }

    fn schema(&self) -> Result<String> {
        Ok(TenantDb::for_client(&self.tenant.name)?.schema)
    }

    fn telegram(&self) -> Result<&FakeTelegram> {
        self.tenant
            .stand_ins
            .telegram
            .as_ref()
            .context("the flower shop hands over to Telegram: no Telegram stand-in")
    }

    fn sent(&self) -> Vec<crate::fakes::Sent> {
        self.tenant
            .stand_ins
            .chatflow
            .as_ref()
            .map(|c| c.sent())
            .unwrap_or_default()
    }

    /// Ready, its runtime serving, its knowledge indexed (the sync the
    /// knowledge CronJob asks for, waiting behind the sync at start).
    async fn until_serving(&mut self, transcript: &mut Transcript) -> Result<()> {
        let runtime = self.platform.wait_ready(&self.tenant, LIFECYCLE).await?;
        self.webhook = self.platform.webhook_url(&self.tenant).await?;
        let secret = self
            .platform
            .secret_text(
                &self.tenant.namespace,
                &format!("{}-runtime", self.tenant.name),
                "TRUFFLES_ADMIN_TOKEN",
            )
            .await?;
        let report: Value = self
            .http
            .post(format!(
                "http://{}/t/{}/admin/knowledge/sync",
                runtime.admin_addr, self.tenant.name
            ))
            .bearer_auth(secret)
            .timeout(Duration::from_secs(300))
            .send()
            .await?
            .error_for_status()
            .context("the knowledge sync")?
            .json()
            .await?;
        let indexed: i64 = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.documents WHERE status = 'indexed'",
            self.schema()?
        )))
        .fetch_one(&self.admin)
        .await?;
        // One document per key of the ConfigMap sources.
        let config_maps: Api<ConfigMap> =
            Api::namespaced(self.platform.client.clone(), &self.tenant.namespace);
        let tcs: Api<TrufflesClient> =
            Api::namespaced(self.platform.client.clone(), &self.tenant.namespace);
        let mut documents = 0;
        for source in tcs.get(&self.tenant.name).await?.spec.knowledge.sources {
            if let Some(cm) = source.config_map {
                documents += config_maps.get(&cm.name).await?.data.map_or(0, |d| d.len());
            }
        }
        ensure!(
            indexed == documents as i64,
            "{indexed} of the shop's {documents} documents are indexed: {report}"
        );
        transcript.say(
            "supervisor",
            &format!(
                "truffles-bot serve on {}, as the operator's Deployment says; knowledge: {indexed} documents indexed",
                runtime.addr
            ),
        );
        Ok(())
    }

    async fn provisioned(&mut self, transcript: &mut Transcript) -> Result<()> {
        self.until_serving(transcript).await?;
        let tcs: Api<TrufflesClient> =
            Api::namespaced(self.platform.client.clone(), &self.tenant.namespace);
        let tc = tcs.get(&self.tenant.name).await?;
        let phase = tc
            .status
            .as_ref()
            .and_then(|s| s.phase.as_ref())
            .map_or_else(|| "-".to_owned(), |p| format!("{p:?}"));
        transcript.say(
            "operator",
            &format!(
                "{} «{}»: phase {phase}, schema {}, webhook {}",
                self.tenant.name,
                self.tenant.company,
                self.schema()?,
                redact(&self.webhook)
            ),
        );
        Ok(())
    }

    /// Posts a customer's message to the webhook; `Err` when it is not served.
    async fn post(&mut self, text: &str) -> Result<u16> {
        self.next_message += 1;
        let id = format!("E2E-{:04}", self.next_message);
        let response = self
            .http
            .post(&self.webhook)
            .json(&chatflow_text(&id, PHONE, text))
            .send()
            .await?;
        Ok(response.status().as_u16())
    }

    /// The customer writes; returns the bot's (or manager's) next message.
    async fn customer(&mut self, transcript: &mut Transcript, text: &str) -> Result<String> {
        let before = self.sent().len();
        transcript.say("customer", text);
        let status = self.post(text).await?;
        ensure!(status == 200, "the webhook answered HTTP {status}");
        let sent = eventually("the bot's answer", ANSWER, || {
            let sent = self.sent();
            (sent.len() > before).then(|| sent[before].clone())
        })
        .await?;
        ensure!(
            sent.jid == format!("{PHONE}@s.whatsapp.net"),
            "answer sent to {}",
            sent.jid
        );
        Ok(sent.msg)
    }

    async fn expect_answer(
        &mut self,
        transcript: &mut Transcript,
        text: &str,
        expected: &str,
    ) -> Result<()> {
        let answer = self.customer(transcript, text).await?;
        transcript.say("bot", &answer);
        ensure!(
            answer.contains(expected),
            "to {text:?} the bot answered {answer:?}, without {expected:?}"
        );
        Ok(())
    }

    async fn conversation(&mut self, transcript: &mut Transcript) -> Result<()> {
        self.expect_answer(transcript, "Здравствуйте!", "Здравствуйте")
            .await?;
        self.expect_answer(transcript, "Сколько стоит букет из 25 роз?", "27 000")
            .await?;
        self.expect_answer(transcript, "Жеткізу қанша тұрады?", "2 000")
            .await
    }

    async fn handover(&mut self, transcript: &mut Transcript) -> Result<()> {
        self.expect_answer(transcript, "Позовите менеджера, пожалуйста", "менеджер")
            .await?;
        let tg = self.telegram()?.clone();
        let card = eventually("the handover card in the managers' group", ANSWER, || {
            tg.messages()
                .into_iter()
                .find(|m| m.buttons.iter().any(|b| b.starts_with("take:")))
        })
        .await?;
        let thread = card.thread.context("the card is not in a forum topic")?;
        let topic = tg.topics_created().last().cloned().unwrap_or_default();
        transcript.say(
            "managers",
            &format!("new topic «{topic}», card pinned:\n{}", card.text),
        );
        let take = button(&card, "take:")?;
        tg.press(&card, &take, MANAGER.0, MANAGER.1);
        let answered = eventually("the take answered", ANSWER, || {
            tg.answers().into_iter().find(|a| a.1 == "Разговор ваш")
        })
        .await?;
        transcript.say(MANAGER.1, &format!("presses «Взять» → {:?}", answered.1));

        let reply = "Здравствуйте, это Асель! Соберём букет из 25 роз к 18:00, доставка сегодня.";
        let before = self.sent().len();
        tg.manager_writes(thread, MANAGER.0, MANAGER.1, reply);
        transcript.say(MANAGER.1, reply);
        let relayed = eventually("the manager's reply relayed", ANSWER, || {
            let sent = self.sent();
            (sent.len() > before).then(|| sent[before].msg.clone())
        })
        .await?;
        ensure!(relayed == reply, "the customer got {relayed:?}");
        transcript.say("customer gets", &relayed);

        tg.manager_writes(thread, MANAGER.0, MANAGER.1, "/close");
        transcript.say(MANAGER.1, "/close");
        let back = tg.wait_message("Разговор вернулся к боту", ANSWER).await?;
        transcript.say("managers", &back.text);
        ensure!(
            tg.violations().is_empty(),
            "the bot broke the Bot API: {:?}",
            tg.violations()
        );
        self.expect_answer(transcript, "До скольки вы работаете?", "22:00")
            .await
    }

    /// `kubectl patch tc <name> --type merge -p <patch>`.
    async fn patch_spec(&self, spec: Value) -> Result<()> {
        let api: Api<TrufflesClient> =
            Api::namespaced(self.platform.client.clone(), &self.tenant.namespace);
        api.patch(
            &self.tenant.name,
            &PatchParams::default(),
            &Patch::Merge(json!({ "spec": spec })),
        )
        .await?;
        Ok(())
    }

    async fn messages_stored(&self) -> Result<i64> {
        Ok(sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT count(*) FROM {}.messages",
            self.schema()?
        )))
        .fetch_one(&self.admin)
        .await?)
    }

    async fn suspend_and_reactivate(&mut self, transcript: &mut Transcript) -> Result<()> {
        let stored = self.messages_stored().await?;
        transcript.say(
            "platform",
            &format!(
                "kubectl patch tc {} --type merge -p '{{\"spec\":{{\"state\":\"Suspended\"}}}}'",
                self.tenant.name
            ),
        );
        self.patch_spec(json!({"state": "Suspended"})).await?;
        let deployments: Api<Deployment> =
            Api::namespaced(self.platform.client.clone(), &self.tenant.namespace);
        crate::wait_for(
            &deployments,
            &format!("{}-bot", self.tenant.name),
            "scaled to zero",
            LIFECYCLE,
            |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(0),
        )
        .await?;
        self.platform.wait_stopped(&self.tenant, LIFECYCLE).await?;
        let cronjobs: Api<CronJob> =
            Api::namespaced(self.platform.client.clone(), &self.tenant.namespace);
        let jobs = cronjobs
            .list(&ListParams::default().labels(&format!("{CLIENT_LABEL}={}", self.tenant.name)))
            .await?
            .items;
        ensure!(
            jobs.iter()
                .all(|j| j.spec.as_ref().and_then(|s| s.suspend) == Some(true)),
            "CronJobs still scheduled while suspended"
        );
        transcript.say(
            "operator",
            &format!("Deployment scaled to 0, {} CronJobs suspended", jobs.len()),
        );
        transcript.say("supervisor", "runtime stopped");
        transcript.say("customer", "Вы ещё работаете?");
        match self.post("Вы ещё работаете?").await {
            Err(_) => transcript.say(
                "bot",
                "(silent: nothing serves the webhook while suspended)",
            ),
            Ok(status) => bail!("a suspended tenant's webhook answered HTTP {status}"),
        }
        let kept = self.messages_stored().await?;
        ensure!(
            kept == stored,
            "suspension changed the stored messages: {stored} → {kept}"
        );
        transcript.say(
            "platform",
            &format!("data kept: {kept} messages in schema {}", self.schema()?),
        );

        self.patch_spec(json!({"state": "Active"})).await?;
        transcript.say(
            "platform",
            &format!(
                "kubectl patch tc {} --type merge -p '{{\"spec\":{{\"state\":\"Active\"}}}}'",
                self.tenant.name
            ),
        );
        self.until_serving(transcript).await?;
        self.expect_answer(transcript, "Сколько стоит доставка?", "2 000")
            .await?;
        let now = self.messages_stored().await?;
        ensure!(
            now > kept,
            "the earlier conversation is gone: {kept} → {now}"
        );
        Ok(())
    }

    async fn purge(&mut self, transcript: &mut Transcript) -> Result<()> {
        let name = self.tenant.name.clone();
        let ns = self.tenant.namespace.clone();
        let client = self.platform.client.clone();
        transcript.say(
            "platform",
            &format!(
                "spec.deletion: {{policy: Purge, confirmPurge: {name}}}; kubectl delete tc {name}"
            ),
        );
        self.patch_spec(json!({"deletion": {"policy": "Purge", "confirmPurge": name}}))
            .await?;
        let tcs: Api<TrufflesClient> = Api::namespaced(client.clone(), &ns);
        tcs.delete(&name, &DeleteParams::default()).await?;
        // The finalizer holds the object until the data is purged.
        crate::wait_gone(&tcs, &name, LIFECYCLE).await?;
        self.platform.wait_stopped(&self.tenant, LIFECYCLE).await?;

        // Nothing left: Kubernetes objects (garbage-collected through their
        // owner), the schema and role, the Redis keys, the local pod folder.
        let deployments: Api<Deployment> = Api::namespaced(client.clone(), &ns);
        let config_maps: Api<ConfigMap> = Api::namespaced(client.clone(), &ns);
        let secrets: Api<Secret> = Api::namespaced(client.clone(), &ns);
        let outlived = |what: &str| format!("the {what} outlived the purge");
        crate::wait_gone(&deployments, &format!("{name}-bot"), LIFECYCLE)
            .await
            .with_context(|| outlived("Deployment"))?;
        crate::wait_gone(&config_maps, &format!("{name}-runtime"), LIFECYCLE)
            .await
            .with_context(|| outlived("runtime ConfigMap"))?;
        crate::wait_gone(&secrets, &format!("{name}-runtime"), LIFECYCLE)
            .await
            .with_context(|| outlived("runtime Secret"))?;
        let tenant = TenantDb::for_client(&name)?;
        let (schema, role): (bool, bool) = sqlx::query_as(
            "SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1),
                    EXISTS (SELECT FROM pg_roles WHERE rolname = $2)",
        )
        .bind(&tenant.schema)
        .bind(&tenant.role)
        .fetch_one(&self.admin)
        .await?;
        ensure!(!schema && !role, "schema left: {schema}, role left: {role}");
        let redis = redis::Client::open(self.platform.settings.redis_url.as_str())?;
        let mut conn = redis.get_multiplexed_async_connection().await?;
        let keys: Vec<String> = redis::cmd("KEYS")
            .arg(format!("truffles:{name}:*"))
            .query_async(&mut conn)
            .await?;
        ensure!(keys.is_empty(), "Redis keys left: {keys:?}");
        let pod = self
            .platform
            .settings
            .state_dir
            .join("pods")
            .join(&ns)
            .join(format!("{name}-bot"));
        ensure!(
            !pod.exists(),
            "the local pod folder {} is left",
            pod.display()
        );
        transcript.say(
            "operator",
            &format!(
                "purged: schema {} and role dropped, Redis keys deleted, runtime objects garbage-collected",
                tenant.schema
            ),
        );
        transcript.say("supervisor", "runtime stopped, its folder removed");
        Ok(())
    }
}

fn button(card: &GroupMessage, prefix: &str) -> Result<String> {
    card.buttons
        .iter()
        .find(|b| b.starts_with(prefix))
        .cloned()
        .with_context(|| format!("the card has no {prefix} button: {:?}", card.buttons))
}

/// The webhook URL without its secret (transcripts end up in CI logs).
pub fn redact(url: &str) -> String {
    match url.rsplit_once("/webhook/") {
        Some((base, _)) => format!("{base}/webhook/…"),
        None => url.to_owned(),
    }
}
