//! Harness for the integration tests. The environment is started by
//! `scripts/testenv.sh` (`make test`), which exports DATABASE_URL, REDIS_URL and
//! KUBECONFIG; every test gets its own database or namespace so tests run in
//! parallel and leave nothing behind.

pub mod channels;
pub mod dev;
pub mod drive;
pub mod fakes;
pub mod managers;
pub mod qdrant;
pub mod runtime;

use std::path::{Path, PathBuf};
use std::sync::Once;
use std::time::Duration;

use anyhow::{Context, Result, bail};
use futures::StreamExt;
use k8s_openapi::api::core::v1::{Event, Namespace};
use k8s_openapi::apiextensions_apiserver::pkg::apis::apiextensions::v1::CustomResourceDefinition;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::{Condition, conditions};
use kube::runtime::{WatchStreamExt, watcher};
use kube::{Api, Client};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, ConnectOptions};

/// Field manager for everything the tests apply.
pub const FIELD_MANAGER: &str = "truffles-tests";

/// Installs the ring crypto provider once: two providers in one tree make
/// rustls panic at the first handshake.
pub fn init() {
    static ONCE: Once = Once::new();
    ONCE.call_once(|| {
        // Err means another provider was installed first, which is fine for tests.
        let _ = rustls::crypto::ring::default_provider().install_default();
        // RUST_LOG=truffles_bot=debug shows what the code under test logs.
        if std::env::var_os("RUST_LOG").is_some() {
            let _ = tracing_subscriber::fmt()
                .with_env_filter(tracing_subscriber::EnvFilter::from_default_env())
                .with_test_writer()
                .try_init();
        }
    });
}

/// Reads a variable the test environment exports, with a clear error when the
/// tests were started without it.
pub fn env_var(name: &str) -> Result<String> {
    std::env::var(name).with_context(|| {
        format!("{name} is not set: run the integration tests through `make test` (scripts/testenv.sh run -- cargo test)")
    })
}

/// Peak resident memory of this process (benchmarks print it).
pub fn peak_rss_mib() -> f64 {
    proc_kib("self", "status", "VmHWM").map_or(0.0, |kb| kb as f64 / 1024.0)
}

/// A KiB figure of a process from `/proc/PID/FILE` (`status`: VmRSS,
/// VmHWM; `smaps_rollup`: Pss…); `pid` may be "self".
pub fn proc_kib(pid: impl std::fmt::Display, file: &str, field: &str) -> Option<u64> {
    std::fs::read_to_string(format!("/proc/{pid}/{file}"))
        .ok()?
        .lines()
        .find_map(|l| l.strip_prefix(field)?.strip_prefix(':'))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
}

/// The value of one series in a Prometheus text exposition: `series` is
/// the name with its labels as printed, e.g. `x_total{outcome="sent"}`;
/// 0 when the series is absent (a counter not yet incremented).
pub fn metric_value(exposition: &str, series: &str) -> u64 {
    exposition
        .lines()
        .find_map(|l| l.strip_prefix(series)?.strip_prefix(' '))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

/// A free TCP port on the loopback interface (for a server to start on, or
/// for a dependency that is "down": nothing listens there).
pub fn free_port() -> Result<u16> {
    Ok(std::net::TcpListener::bind("127.0.0.1:0")?
        .local_addr()?
        .port())
}

/// The workspace root, for reading committed files (CRD YAML, examples).
pub fn workspace_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .map(Path::to_path_buf)
        .unwrap_or_default()
}

/// Reads every `*.yaml` file of a folder of the workspace, sorted by name.
pub fn yaml_files(dir: &str) -> Result<Vec<PathBuf>> {
    let dir = workspace_root().join(dir);
    let mut files: Vec<PathBuf> = std::fs::read_dir(&dir)
        .with_context(|| format!("reading {}", dir.display()))?
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    if files.is_empty() {
        bail!("no YAML files in {}", dir.display());
    }
    Ok(files)
}

/// Parses a multi-document YAML file into JSON values (one per document).
pub fn read_manifests(path: &Path) -> Result<Vec<serde_json::Value>> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    serde_saphyr::from_multiple(&text).with_context(|| format!("parsing {}", path.display()))
}

// ------------------------------------------------------------------ Kubernetes

/// A client for the test API server.
pub async fn kube_client() -> Result<Client> {
    init();
    env_var("KUBECONFIG")?;
    Client::try_default()
        .await
        .context("connecting to the test kube-apiserver")
}

/// Installs the committed CRDs (what users apply, not the Rust types) with
/// server-side apply and waits until the API server serves them.
pub async fn install_crds(client: &Client) -> Result<()> {
    install_crds_from(
        client,
        &workspace_root().join(truffles_crds::CRDS_YAML_PATH),
    )
    .await
}

/// Installs the CRDs of a YAML file (ours, or another project's) and waits
/// until the API server serves them.
pub async fn install_crds_from(client: &Client, path: &Path) -> Result<()> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
    let crds: Vec<CustomResourceDefinition> = serde_saphyr::from_multiple(&text)
        .with_context(|| format!("parsing {}", path.display()))?;
    let api: Api<CustomResourceDefinition> = Api::all(client.clone());
    let params = PatchParams::apply(FIELD_MANAGER).force();
    for crd in crds {
        let name = crd.metadata.name.clone().context("CRD without a name")?;
        api.patch(&name, &params, &Patch::Apply(&crd))
            .await
            .with_context(|| format!("applying CRD {name}"))?;
        wait_until(
            &api,
            &name,
            "established",
            Duration::from_secs(30),
            conditions::is_crd_established(),
        )
        .await?;
    }
    Ok(())
}

/// A namespace of its own for one test (the linkerd2 policy-test pattern).
pub struct TestNamespace {
    pub name: String,
    client: Client,
}

impl TestNamespace {
    pub async fn create(client: &Client, prefix: &str) -> Result<Self> {
        let name = format!(
            "{prefix}-{}",
            &uuid::Uuid::new_v4().simple().to_string()[..8]
        );
        let ns: Namespace = serde_json::from_value(serde_json::json!({
            "metadata": {"name": name, "labels": {"truffles.kz/test": "true"}}
        }))?;
        Api::<Namespace>::all(client.clone())
            .create(&PostParams::default(), &ns)
            .await
            .with_context(|| format!("creating namespace {name}"))?;
        Ok(Self {
            name,
            client: client.clone(),
        })
    }

    pub fn client(&self) -> &Client {
        &self.client
    }

    pub fn api<K>(&self) -> Api<K>
    where
        K: kube::Resource<Scope = k8s_openapi::NamespaceResourceScope>,
        <K as kube::Resource>::DynamicType: Default,
    {
        Api::namespaced(self.client.clone(), &self.name)
    }

    /// An untyped API for kind `K`, to send manifests exactly as written.
    pub fn dynamic_api<K>(&self) -> Api<kube::api::DynamicObject>
    where
        K: kube::Resource<DynamicType = ()>,
    {
        Api::namespaced_with(
            self.client.clone(),
            &self.name,
            &kube::api::ApiResource::erase::<K>(&()),
        )
    }

    /// Deletes the namespace (the API server removes what is in it).
    pub async fn delete(self) -> Result<()> {
        Api::<Namespace>::all(self.client.clone())
            .delete(&self.name, &DeleteParams::default())
            .await
            .with_context(|| format!("deleting namespace {}", self.name))?;
        Ok(())
    }
}

/// Creates every document of a manifest file in the namespace, as the raw JSON of
/// the file: what the API server validates and defaults is the manifest itself,
/// not what the Rust types would make of it.
pub async fn create_all(ns: &TestNamespace, docs: Vec<serde_json::Value>) -> Result<()> {
    for doc in docs {
        match doc["kind"].as_str() {
            Some("Secret") => create_raw::<k8s_openapi::api::core::v1::Secret>(ns, &doc).await?,
            Some("ConfigMap") => {
                create_raw::<k8s_openapi::api::core::v1::ConfigMap>(ns, &doc).await?
            }
            Some("TrufflesClient") => create_raw::<truffles_crds::TrufflesClient>(ns, &doc).await?,
            Some("Subscription") => create_raw::<truffles_crds::Subscription>(ns, &doc).await?,
            other => bail!("unexpected kind {other:?} in a manifest"),
        }
    }
    Ok(())
}

/// Creates one manifest document of kind `K` as written.
pub async fn create_raw<K>(ns: &TestNamespace, doc: &serde_json::Value) -> Result<(), kube::Error>
where
    K: kube::Resource<DynamicType = ()>,
{
    let obj: kube::api::DynamicObject =
        serde_json::from_value(doc.clone()).map_err(kube::Error::SerdeError)?;
    ns.dynamic_api::<K>()
        .create(&PostParams::default(), &obj)
        .await
        .map(drop)
}

// ------------------------------------------------------------------ PostgreSQL

/// A fresh database for one test, created on the test PostgreSQL server.
pub struct TestDatabase {
    pub name: String,
    /// Superuser pool on the fresh database (what the operator has).
    pub pool: PgPool,
    pub options: PgConnectOptions,
}

impl TestDatabase {
    pub async fn create() -> Result<Self> {
        init();
        let url = env_var("DATABASE_URL")?;
        let server: PgConnectOptions = url.parse().context("parsing DATABASE_URL")?;
        let name = format!("test_{}", uuid::Uuid::new_v4().simple());
        let mut admin = server
            .clone()
            .connect()
            .await
            .context("connecting to the test PostgreSQL")?;
        sqlx::raw_sql(AssertSqlSafe(format!(r#"CREATE DATABASE "{name}""#)))
            .execute(&mut admin)
            .await
            .context("creating a test database")?;
        let options = server.database(&name);
        let pool = PgPoolOptions::new()
            .max_connections(5)
            .connect_with(options.clone())
            .await?;
        Ok(Self {
            name,
            pool,
            options,
        })
    }
}

impl TestDatabase {
    /// Whether a schema exists (tenant provisioning and purge are checked by it).
    pub async fn schema_exists(&self, schema: &str) -> Result<bool> {
        Ok(
            sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
                .bind(schema)
                .fetch_one(&self.pool)
                .await?,
        )
    }
}

// ------------------------------------------------------------------ Operator

/// The tenant controller's context over a test database, watching `namespace`
/// (None: every namespace).
pub fn operator_context(
    client: Client,
    db: &TestDatabase,
    namespace: Option<&str>,
) -> truffles_operator::tenant::Context {
    let settings = truffles_operator::tenant::Settings {
        default_image: "truffles-bot:test".into(),
        tenant_database_host: None,
        namespace: namespace.map(str::to_owned),
        runtime_redis_url: std::env::var("REDIS_URL").ok(),
        backup_master_key: test_master_key(),
        network: Default::default(),
        tenant_database_tls: Vec::new(),
        boundary: Default::default(),
    };
    truffles_operator::tenant::Context::new(client, db.pool.clone(), db.options.clone(), settings)
}

/// The backup master key of operators under test (fixed: tests unwrap with it).
pub fn test_master_key() -> truffles_operator::tenant::keys::MasterKey {
    truffles_operator::tenant::keys::MasterKey::from_hex(TEST_MASTER_KEY).expect("a valid test key")
}

pub const TEST_MASTER_KEY: &str =
    "5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed5eed";

/// A minimal TrufflesClient (WhatsApp channel, whatsappWeb handover) reading its
/// ChatFlow token from the Secret of [`secret_manifest`]; `extra_spec` overrides
/// top-level spec fields.
pub fn client_manifest(name: &str, extra_spec: serde_json::Value) -> serde_json::Value {
    let mut doc = serde_json::json!({
        "apiVersion": "truffles.kz/v1alpha1", "kind": "TrufflesClient",
        "metadata": {"name": name},
        "spec": {
            "companyName": "Test Shop",
            "channels": {"whatsapp": {"instanceId": "i-1", "tokenSecretRef": {"name": format!("{name}-creds"), "key": "token"}}},
            "handover": {"adapter": {"type": "whatsappWeb"}}
        }
    });
    if let (Some(spec), Some(extra)) = (doc["spec"].as_object_mut(), extra_spec.as_object()) {
        spec.extend(extra.clone());
    }
    doc
}

/// The credentials Secret a [`client_manifest`] refers to.
pub fn secret_manifest(name: &str) -> serde_json::Value {
    serde_json::json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": format!("{name}-creds")}, "stringData": {"token": "chatflow-token-value"}})
}

/// What kube's watcher needs of an object type.
pub trait Watched:
    kube::Resource + Clone + std::fmt::Debug + serde::de::DeserializeOwned + Send + Sync + 'static
{
}

impl<K> Watched for K where
    K: kube::Resource
        + Clone
        + std::fmt::Debug
        + serde::de::DeserializeOwned
        + Send
        + Sync
        + 'static
{
}

/// Waits up to `within` until the object `name` satisfies `check`.
pub async fn wait_for<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    within: Duration,
    check: impl Fn(&K) -> bool,
) -> Result<K>
where
    K: Watched,
{
    wait_until(api, name, what, within, move |obj: Option<&K>| {
        obj.is_some_and(&check)
    })
    .await?
    .with_context(|| format!("{name} vanished"))
}

/// Waits up to `within` until `cond` holds for the object `name` (`None` when
/// it does not exist, so `conditions::is_deleted` works). Unlike kube's
/// `await_condition`, a failed watch (the API server times out a request when
/// the parallel tests load it) is retried with backoff instead of failing the
/// test; only the deadline does.
pub async fn wait_until<K>(
    api: &Api<K>,
    name: &str,
    what: &str,
    within: Duration,
    cond: impl Condition<K>,
) -> Result<Option<K>>
where
    K: Watched,
{
    let config = watcher::Config::default().fields(&format!("metadata.name={name}"));
    let mut events = watcher(api.clone(), config).default_backoff().boxed();
    let mut last_error = None;
    let watch = async {
        let mut current: Option<K> = None;
        while let Some(event) = events.next().await {
            match event {
                Ok(watcher::Event::Init) => current = None,
                Ok(watcher::Event::InitApply(obj)) => current = Some(obj),
                Ok(watcher::Event::Apply(obj)) => {
                    current = Some(obj);
                    if cond.matches_object(current.as_ref()) {
                        return current;
                    }
                }
                Ok(watcher::Event::Delete(_)) => {
                    current = None;
                    if cond.matches_object(None) {
                        return None;
                    }
                }
                Ok(watcher::Event::InitDone) => {
                    if cond.matches_object(current.as_ref()) {
                        return current;
                    }
                }
                Err(error) => last_error = Some(error.to_string()),
            }
        }
        current
    };
    tokio::time::timeout(within, watch).await.with_context(|| {
        let error = last_error
            .as_deref()
            .map(|e| format!(" (last watch error: {e})"))
            .unwrap_or_default();
        format!("{name}: {what} within {within:?}{error}")
    })
}

/// Waits up to `within` until no object `name` exists (kube's `is_deleted`
/// needs the uid of the one that must go; this needs none).
pub async fn wait_gone<K>(api: &Api<K>, name: &str, within: Duration) -> Result<()>
where
    K: Watched,
{
    wait_until(api, name, "deleted", within, |obj: Option<&K>| {
        obj.is_none()
    })
    .await
    .map(drop)
}

/// Waits for an Event about `name` that satisfies `check`. The operator
/// publishes Events after it patches the status, so a test that has seen the
/// status must still wait for the Event.
pub async fn wait_for_event(
    ns: &TestNamespace,
    name: &str,
    what: &str,
    within: Duration,
    check: impl Fn(&Event) -> bool,
) -> Result<Event> {
    let events: Api<Event> = ns.api();
    let params = ListParams::default().fields(&format!("involvedObject.name={name}"));
    let poll = async {
        loop {
            // A failed list under load is retried, like a watch would be.
            if let Ok(list) = events.list(&params).await
                && let Some(event) = list.items.into_iter().find(|e| check(e))
            {
                return event;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    };
    tokio::time::timeout(within, poll)
        .await
        .with_context(|| format!("no {what} Event for {name} within {within:?}"))
}

/// The reason of a TrufflesClient's condition of type `type_`.
pub fn condition_reason(tc: &truffles_crds::TrufflesClient, type_: &str) -> Option<String> {
    tc.status
        .as_ref()?
        .conditions
        .iter()
        .find(|c| c.type_ == type_)
        .map(|c| c.reason.clone())
}

// ------------------------------------------------------------------ Redis

/// A connection to the test Redis.
pub async fn redis_connection() -> Result<redis::aio::MultiplexedConnection> {
    let url = env_var("REDIS_URL")?;
    let client = redis::Client::open(url.as_str()).context("parsing REDIS_URL")?;
    client
        .get_multiplexed_async_connection()
        .await
        .context("connecting to the test Redis")
}
