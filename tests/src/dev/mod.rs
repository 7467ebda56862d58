//! The whole platform on one machine, for `make run` and the end-to-end
//! scenario: the CRDs, the operator (the real `truffles-operator` binary), the
//! development supervisor running each tenant's `truffles-bot serve`, and local
//! stand-ins for the SaaS the tenants name (ChatFlow, the managers' Telegram,
//! CRMs, SMTP). PostgreSQL, Redis, the API server and the embedding model come
//! from `scripts/testenv.sh`.

pub mod localize;
pub mod scenario;
pub mod supervisor;

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::{Namespace, Secret};
use kube::api::{ApiResource, DynamicObject, GroupVersionKind, Patch, PatchParams, PostParams};
use kube::{Api, Client};
use serde_json::Value;
use truffles_crds::TrufflesClient;

use crate::fakes::FakeChatflow;
use crate::managers::{FakeService, FakeTelegram, SmtpServer, eventually};
use localize::{Endpoints, LocalOptions, Need};
use supervisor::{LocalProcess, LocalRuntime, Supervisor, binary};

/// Field manager of what the development platform applies.
pub const FIELD_MANAGER: &str = "truffles-dev";

/// Where the platform's parts are and what the developer chose.
#[derive(Clone, Debug)]
pub struct Settings {
    /// The platform database (a role that may create roles and schemas).
    pub database_url: String,
    pub redis_url: String,
    /// Watch only this namespace (operator and supervisor); `None`: all.
    pub namespace: Option<String>,
    /// Logs and the runtimes' mounted files.
    pub state_dir: PathBuf,
    pub options: LocalOptions,
}

impl Settings {
    /// From the variables `scripts/testenv.sh` exports.
    pub fn from_env(namespace: Option<String>) -> Result<Self> {
        let state_dir = match std::env::var_os("TRUFFLES_TESTENV_DIR") {
            Some(dir) => PathBuf::from(dir).join("dev"),
            None => std::env::temp_dir().join(format!("truffles-dev-{}", std::process::id())),
        };
        Ok(Self {
            database_url: crate::env_var("DATABASE_URL")?,
            redis_url: crate::env_var("REDIS_URL")?,
            namespace,
            state_dir,
            options: LocalOptions::from_env(crate::env_var("TRUFFLES_EMBEDDINGS_URL")?),
        })
    }
}

/// The local stand-ins of one tenant's SaaS.
#[derive(Default)]
pub struct StandIns {
    pub chatflow: Option<FakeChatflow>,
    /// The customers' Telegram bot.
    pub customer_bot: Option<crate::channels::FakeTelegramBot>,
    /// The managers' Telegram group.
    pub telegram: Option<FakeTelegram>,
    pub services: Vec<FakeService>,
    pub smtp: Option<SmtpServer>,
    /// The test environment's Qdrant server, for a tenant on `vectorStore.backend: Qdrant`.
    pub qdrant: Option<crate::qdrant::TestQdrant>,
}

/// A tenant applied to the development platform.
pub struct LocalTenant {
    pub namespace: String,
    pub name: String,
    pub company: String,
    pub stand_ins: StandIns,
}

pub struct Platform {
    pub client: Client,
    pub settings: Settings,
    pub supervisor: Supervisor,
    operator: LocalProcess,
}

impl Platform {
    /// Installs the CRDs, starts the operator and the supervisor.
    pub async fn start(settings: Settings) -> Result<Self> {
        crate::init();
        let client = crate::kube_client().await?;
        crate::install_crds(&client).await?;
        std::fs::create_dir_all(&settings.state_dir)?;
        let mut env = BTreeMap::from([
            ("DATABASE_URL".to_owned(), settings.database_url.clone()),
            ("REDIS_URL".to_owned(), settings.redis_url.clone()),
            // A fresh platform database each run, so a fresh master key.
            (
                "TRUFFLES_BACKUP_MASTER_KEY".to_owned(),
                format!(
                    "{}{}",
                    uuid::Uuid::new_v4().simple(),
                    uuid::Uuid::new_v4().simple()
                ),
            ),
            // Port 0: the kernel picks a free one as the operator binds (a
            // port chosen here first could be taken by then; nobody here
            // scrapes the operator).
            ("TRUFFLES_METRICS_ADDR".to_owned(), "127.0.0.1:0".to_owned()),
            ("KUBECONFIG".to_owned(), crate::env_var("KUBECONFIG")?),
            (
                "RUST_LOG".to_owned(),
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            ),
        ]);
        if let Some(ns) = &settings.namespace {
            env.insert("TRUFFLES_WATCH_NAMESPACE".into(), ns.clone());
        }
        let operator = LocalProcess::spawn(
            &binary("truffles-operator")?,
            &[],
            &env,
            settings
                .state_dir
                .join("logs")
                .join("truffles-operator.log"),
        )?;
        tracing::info!(log = %operator.log.display(), "truffles-operator started");
        // TRUFFLES_DEV_BOT runs another build of the runtime under this
        // operator (the density bench's before-and-after).
        let bot = match std::env::var_os("TRUFFLES_DEV_BOT") {
            Some(path) => std::path::PathBuf::from(path),
            None => binary("truffles-bot")?,
        };
        let supervisor = Supervisor::start(
            client.clone(),
            settings.namespace.as_deref(),
            bot,
            settings.state_dir.clone(),
        )
        .await?;
        Ok(Self {
            client,
            settings,
            supervisor,
            operator,
        })
    }

    /// Starts the stand-ins a tenant's manifest file needs, points the tenant at
    /// them and applies the file into `namespace` (created if missing), under
    /// the name `rename` when given.
    pub async fn apply_tenant(
        &self,
        namespace: &str,
        path: &Path,
        rename: Option<&str>,
    ) -> Result<LocalTenant> {
        let mut docs = crate::read_manifests(path)?;
        if let Some(name) = rename {
            localize::rename(&mut docs, name)?;
        }
        let options = &self.settings.options;
        let mut stand_ins = StandIns::default();
        let mut endpoints = Endpoints::default();
        for need in localize::needs(&docs, options)? {
            match need {
                Need::Chatflow { token, instance_id } => {
                    let fake = FakeChatflow::start(&token, &instance_id).await?;
                    endpoints.chatflow = Some(fake.url.clone());
                    stand_ins.chatflow = Some(fake);
                }
                Need::CustomerBot { token } => {
                    let fake = crate::channels::FakeTelegramBot::start(&token).await?;
                    endpoints.customer_bot = Some(fake.url.clone());
                    stand_ins.customer_bot = Some(fake);
                }
                Need::Telegram { slot, token, chat } => {
                    let fake = FakeTelegram::start(&token, chat).await?;
                    endpoints.handover.push((slot, fake.url.clone()));
                    stand_ins.telegram = Some(fake);
                }
                Need::Service {
                    slot,
                    service,
                    secret,
                } => {
                    let fake = FakeService::start(service, &secret).await?;
                    endpoints.handover.push((slot, fake.base_url()));
                    stand_ins.services.push(fake);
                }
                Need::Qdrant => {
                    let server = crate::qdrant::TestQdrant::from_env().context(
                        "a tenant on vectorStore.backend: Qdrant needs the test environment's Qdrant server",
                    )?;
                    endpoints.qdrant = Some((server.url.clone(), server.api_key.clone()));
                    stand_ins.qdrant = Some(server);
                }
                Need::Smtp { slot } => {
                    let smtp = SmtpServer::start().await?;
                    endpoints
                        .handover
                        .push((slot, format!("127.0.0.1:{}", smtp.port)));
                    stand_ins.smtp = Some(smtp);
                }
            }
        }
        localize::localize(&mut docs, &endpoints, options)?;
        let client_doc = localize::client(&docs)?;
        let name = client_doc["metadata"]["name"]
            .as_str()
            .context("TrufflesClient without a name")?
            .to_owned();
        let company = client_doc["spec"]["companyName"]
            .as_str()
            .unwrap_or(&name)
            .to_owned();
        self.ensure_namespace(namespace).await?;
        for doc in &docs {
            self.apply(namespace, doc)
                .await
                .with_context(|| format!("applying {} from {}", describe(doc), path.display()))?;
        }
        Ok(LocalTenant {
            namespace: namespace.to_owned(),
            name,
            company,
            stand_ins,
        })
    }

    pub async fn ensure_namespace(&self, name: &str) -> Result<()> {
        let ns: Namespace =
            serde_json::from_value(serde_json::json!({"metadata": {"name": name}}))?;
        match Api::<Namespace>::all(self.client.clone())
            .create(&PostParams::default(), &ns)
            .await
        {
            Ok(_) => Ok(()),
            Err(kube::Error::Api(e)) if e.code == 409 => Ok(()),
            Err(e) => Err(e).with_context(|| format!("creating namespace {name}")),
        }
    }

    /// Server-side apply of one manifest document, as `kubectl apply --server-side`.
    pub async fn apply(&self, namespace: &str, doc: &Value) -> Result<()> {
        let api_version = doc["apiVersion"].as_str().context("no apiVersion")?;
        let kind = doc["kind"].as_str().context("no kind")?;
        let (group, version) = api_version.rsplit_once('/').unwrap_or(("", api_version));
        let resource = ApiResource::from_gvk(&GroupVersionKind::gvk(group, version, kind));
        let api: Api<DynamicObject> =
            Api::namespaced_with(self.client.clone(), namespace, &resource);
        let name = doc["metadata"]["name"]
            .as_str()
            .context("no metadata.name")?;
        api.patch(
            name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(doc),
        )
        .await?;
        Ok(())
    }

    /// Waits until the operator reports the tenant Ready and its runtime answers
    /// `/readyz`; returns the runtime.
    pub async fn wait_ready(&self, tenant: &LocalTenant, within: Duration) -> Result<LocalRuntime> {
        let api: Api<TrufflesClient> = Api::namespaced(self.client.clone(), &tenant.namespace);
        crate::wait_for(&api, &tenant.name, "Ready", within, |tc| {
            tc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        })
        .await?;
        self.wait_running(tenant, within).await
    }

    /// Waits until the supervisor runs the tenant's runtime and it answers `/readyz`.
    pub async fn wait_running(
        &self,
        tenant: &LocalTenant,
        within: Duration,
    ) -> Result<LocalRuntime> {
        let view = || self.supervisor.runtime(&tenant.namespace, &tenant.name);
        let runtime = eventually("the runtime started by the supervisor", within, || {
            view().filter(|r| r.running)
        })
        .await
        .with_context(|| {
            let problem = view().and_then(|r| r.problem).unwrap_or_default();
            format!("{}/{} {problem}", tenant.namespace, tenant.name)
        })?;
        let url = format!("http://{}/readyz", runtime.addr);
        let http = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + within;
        loop {
            if let Ok(r) = http.get(&url).timeout(Duration::from_secs(2)).send().await
                && r.status().is_success()
            {
                return Ok(runtime);
            }
            if tokio::time::Instant::now() > deadline {
                bail!(
                    "{}/{}: /readyz did not answer 200 within {within:?} (log: {})",
                    tenant.namespace,
                    tenant.name,
                    runtime.log.display()
                );
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    }

    /// Waits until the supervisor has stopped the tenant's runtime.
    pub async fn wait_stopped(&self, tenant: &LocalTenant, within: Duration) -> Result<()> {
        eventually("the runtime stopped by the supervisor", within, || {
            self.supervisor
                .runtime(&tenant.namespace, &tenant.name)
                .is_none_or(|r| !r.running)
                .then_some(())
        })
        .await
    }

    /// The URL ChatFlow posts to on this machine: the path the operator
    /// published (with the webhook secret) on the local runtime's address.
    pub async fn webhook_url(&self, tenant: &LocalTenant) -> Result<String> {
        let url = self
            .secret_text(
                &tenant.namespace,
                &format!("{}-webhook", tenant.name),
                "url",
            )
            .await?;
        let path = url
            .find("/t/")
            .map(|i| &url[i..])
            .context("the webhook URL has no /t/ path")?;
        let runtime = self
            .supervisor
            .runtime(&tenant.namespace, &tenant.name)
            .context("the supervisor does not run this tenant")?;
        Ok(format!("http://{}{path}", runtime.addr))
    }

    /// One key of a Secret, as text.
    pub async fn secret_text(&self, namespace: &str, name: &str, key: &str) -> Result<String> {
        let secrets: Api<Secret> = Api::namespaced(self.client.clone(), namespace);
        secrets
            .get(name)
            .await
            .with_context(|| format!("reading Secret {name}"))?
            .data
            .and_then(|mut d| d.remove(key))
            .and_then(|b| String::from_utf8(b.0).ok())
            .with_context(|| format!("Secret {name} has no text key {key}"))
    }

    /// Stops the runtimes and the operator.
    pub async fn stop(self) {
        self.supervisor.stop().await;
        self.operator.stop(Duration::from_secs(10)).await;
    }
}

fn describe(doc: &Value) -> String {
    format!(
        "{} {}",
        doc["kind"].as_str().unwrap_or("?"),
        doc["metadata"]["name"].as_str().unwrap_or("?")
    )
}
