//! The TrufflesClient controller against the real control plane and PostgreSQL:
//! onboarding to Active, drift correction, rollout on spec change, suspend and
//! reactivate, purge and retain, and clear conditions for bad input.
//!
//! Each test runs its own controller, scoped to its own namespace, over its own
//! database. PostgreSQL roles are server-wide, so tenant names differ per test.

use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::wait::conditions;
use kube::{Api, ResourceExt};
use qdrant_client::qdrant::Distance;
use serde_json::json;
use sqlx::{Connection, PgConnection};
use tokio::task::JoinHandle;
use truffles_crds::TrufflesClient;
use truffles_crds::client::ClientPhase;
use truffles_migrations::TenantDb;
use truffles_operator::tenant::{self, Context, Settings};
use truffles_tests::qdrant::TestQdrant;
use truffles_tests::{
    TestDatabase, TestNamespace, client_manifest, condition_reason, create_all, create_raw,
    install_crds, kube_client, metric_value, operator_context, read_manifests, secret_manifest,
    test_master_key, wait_for, wait_for_event, wait_until, workspace_root,
};

pub(crate) const WAIT: Duration = Duration::from_secs(90);

pub(crate) struct Env {
    pub(crate) ns: TestNamespace,
    pub(crate) db: TestDatabase,
    pub(crate) ctx: Arc<Context>,
    operator: JoinHandle<()>,
}

impl Env {
    pub(crate) async fn start(prefix: &str) -> Result<Self> {
        let client = kube_client().await?;
        install_crds(&client).await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let db = TestDatabase::create().await?;
        truffles_migrations::migrate_platform(&db.pool).await?;
        let redis = redis::Client::open(truffles_tests::env_var("REDIS_URL")?.as_str())?;
        let ctx = Arc::new(operator_context(client, &db, Some(&ns.name)).with_redis(redis));
        let operator = tokio::spawn(tenant::run(ctx.clone()));
        Ok(Self {
            ns,
            db,
            ctx,
            operator,
        })
    }

    pub(crate) fn clients(&self) -> Api<TrufflesClient> {
        self.ns.api()
    }

    /// Waits until the client's status satisfies `check`.
    pub(crate) async fn wait_for(
        &self,
        name: &str,
        what: &str,
        check: impl Fn(&TrufflesClient) -> bool,
    ) -> Result<TrufflesClient> {
        wait_for(&self.clients(), name, what, WAIT, check).await
    }

    /// Creates the client's credentials Secret and the client, and waits for Ready.
    pub(crate) async fn onboard(
        &self,
        name: &str,
        extra_spec: serde_json::Value,
    ) -> Result<TrufflesClient> {
        create_raw::<Secret>(&self.ns, &secret_manifest(name)).await?;
        create_raw::<TrufflesClient>(&self.ns, &client_manifest(name, extra_spec)).await?;
        self.wait_ready(name).await
    }

    /// Merge-patches the client's spec, as `kubectl patch --type merge` does.
    pub(crate) async fn patch_spec(&self, name: &str, spec: serde_json::Value) -> Result<()> {
        let patch = json!({ "spec": spec });
        self.clients()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    pub(crate) async fn wait_ready(&self, name: &str) -> Result<TrufflesClient> {
        self.wait_for(name, "Ready=True", |tc| condition_is(tc, "Ready", "True"))
            .await
    }

    /// Stops the controller (as a crashed operator pod would) until
    /// [`Env::start_operator`]: what happens meanwhile is seen only after.
    pub(crate) fn stop_operator(&mut self) {
        self.operator.abort();
    }

    pub(crate) fn start_operator(&mut self) {
        self.operator = tokio::spawn(tenant::run(self.ctx.clone()));
    }

    pub(crate) async fn finish(self) -> Result<()> {
        self.operator.abort();
        self.ns.delete().await
    }
}

pub(crate) fn condition_is(tc: &TrufflesClient, type_: &str, status: &str) -> bool {
    tc.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == type_ && c.status == status)
    })
}

pub(crate) fn secret_value(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

#[tokio::test]
async fn example_flower_shop_is_onboarded_to_active() -> Result<()> {
    let env = Env::start("op-onboard").await?;
    create_all(
        &env.ns,
        read_manifests(&workspace_root().join("examples/tenants/flower-shop.yaml"))?,
    )
    .await?;
    let tc = env.wait_ready("flower-shop").await?;
    let status = tc.status.clone().context("status")?;
    assert_eq!(status.phase, Some(ClientPhase::Active));
    assert_eq!(status.observed_generation, tc.metadata.generation);
    assert_eq!(status.schema.as_deref(), Some("tenant_flower_shop"));

    // The client row, the schema and the prompts copied from the templates.
    let client_id: String = sqlx::query_scalar(
        "SELECT id::text FROM platform.clients WHERE name = 'flower-shop' AND status = 'active'",
    )
    .fetch_one(&env.db.pool)
    .await?;
    assert_eq!(status.client_id.as_deref(), Some(client_id.as_str()));

    // Every owned object, built from the spec.
    let deployment: Deployment = env.ns.api().get("flower-shop-bot").await?;
    let dspec = deployment.spec.clone().context("deployment spec")?;
    assert_eq!(dspec.replicas, Some(1));
    let pod = dspec.template.spec.clone().context("pod spec")?;
    assert_eq!(
        pod.containers[0].args.as_deref(),
        Some(&["serve".to_string()][..])
    );
    let env_names: Vec<String> = pod.containers[0]
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    assert!(
        env_names.contains(&"CHATFLOW_TOKEN".into())
            && env_names.contains(&"OPENAI_API_KEY".into()),
        "{env_names:?}"
    );
    assert!(
        dspec
            .template
            .metadata
            .and_then(|m| m.annotations)
            .is_some_and(|a| a.contains_key("truffles.kz/config-hash"))
    );
    assert_eq!(
        deployment
            .owner_references()
            .first()
            .map(|o| o.name.as_str()),
        Some("flower-shop")
    );
    env.ns.api::<Service>().get("flower-shop-bot").await?;
    let ingress: Ingress = env.ns.api().get("flower-shop-bot").await?;
    let rule = &ingress
        .spec
        .and_then(|s| s.rules)
        .context("ingress rules")?[0];
    assert_eq!(rule.host.as_deref(), Some("bots.truffles.kz"));
    assert_eq!(
        rule.http.as_ref().map(|h| h.paths[0].path.clone()),
        Some(Some("/t/flower-shop/".into()))
    );
    let sync: CronJob = env.ns.api().get("flower-shop-knowledge-sync").await?;
    assert_eq!(
        sync.spec.as_ref().map(|s| (s.schedule.as_str(), s.suspend)),
        Some(("0 * * * *", Some(false)))
    );
    let backup: CronJob = env.ns.api().get("flower-shop-backup").await?;
    assert_eq!(
        backup.spec.as_ref().map(|s| s.schedule.as_str()),
        Some("0 3 * * *")
    );

    // The webhook URL is published in a Secret, and its secret is not in status.
    let url_ref = status
        .webhook_url_secret_ref
        .clone()
        .context("webhook secret ref")?;
    let url = secret_value(
        &env.ns.api::<Secret>().get(&url_ref.name).await?,
        &url_ref.key,
    )
    .context("url")?;
    let webhook_secret = url
        .strip_prefix("https://bots.truffles.kz/t/flower-shop/webhook/")
        .context(url.clone())?;
    assert_eq!(webhook_secret.len(), 64);
    let status_json = serde_json::to_string(&tc.status)?;
    assert!(
        !status_json.contains(webhook_secret),
        "the webhook secret leaked into status"
    );

    // The runtime's DATABASE_URL works and reaches only its own schema.
    let runtime: Secret = env.ns.api().get("flower-shop-runtime").await?;
    let database_url = secret_value(&runtime, "DATABASE_URL").context("DATABASE_URL")?;
    let mut conn = PgConnection::connect(&database_url).await?;
    let prompts: i64 = sqlx::query_scalar("SELECT count(*) FROM prompts")
        .fetch_one(&mut conn)
        .await?;
    assert!(prompts >= 7, "prompts copied from the templates: {prompts}");
    assert!(
        sqlx::query("SELECT 1 FROM platform.clients")
            .execute(&mut conn)
            .await
            .is_err()
    );
    let config: ConfigMap = env.ns.api().get("flower-shop-runtime").await?;
    assert!(
        !serde_json::to_string(&config.data)?.contains(webhook_secret),
        "no secret in the ConfigMap"
    );

    wait_for_event(&env.ns, "flower-shop", "Active", WAIT, |e| {
        e.reason.as_deref() == Some("Active")
    })
    .await?;
    let metrics = env.ctx.metrics.render();
    assert!(
        metrics.contains("truffles_operator_reconcile_duration_seconds_count"),
        "{metrics}"
    );
    assert!(
        !metrics.contains("truffles_operator_reconciles_total 0"),
        "{metrics}"
    );
    env.finish().await
}

#[tokio::test]
async fn drift_is_corrected_and_spec_changes_roll_out() -> Result<()> {
    let env = Env::start("op-drift").await?;
    env.onboard("drift-shop", json!({})).await?;

    let deployments: Api<Deployment> = env.ns.api();
    let before = deployments.get("drift-shop-bot").await?;
    let hash = |d: &Deployment| {
        d.spec
            .as_ref()
            .and_then(|s| s.template.metadata.as_ref())
            .and_then(|m| m.annotations.as_ref())
            .and_then(|a| a.get("truffles.kz/config-hash").cloned())
    };
    let old_hash = hash(&before).context("config hash")?;

    // A deleted owned object comes back.
    deployments
        .delete("drift-shop-bot", &DeleteParams::foreground())
        .await?;
    wait_until(
        &deployments,
        "drift-shop-bot",
        "deleted",
        WAIT,
        conditions::is_deleted(&before.uid().unwrap_or_default()),
    )
    .await?;
    let restored = wait_until(
        &deployments,
        "drift-shop-bot",
        "recreated",
        WAIT,
        |d: Option<&Deployment>| d.is_some(),
    )
    .await?;
    assert!(restored.is_some());

    // An edited owned object is put back.
    let scale = json!({"spec": {"replicas": 5}});
    deployments
        .patch(
            "drift-shop-bot",
            &PatchParams::default(),
            &Patch::Merge(&scale),
        )
        .await?;
    wait_for(
        &deployments,
        "drift-shop-bot",
        "replicas put back",
        WAIT,
        |d| d.spec.as_ref().and_then(|s| s.replicas) == Some(1),
    )
    .await?;

    // A spec change rolls the pods (new config hash) and is audited.
    env.patch_spec("drift-shop", json!({"llm": {"temperature": 0.9}}))
        .await?;
    wait_for(
        &deployments,
        "drift-shop-bot",
        "a new config hash",
        WAIT,
        |d| hash(d).is_some_and(|h| h != old_hash),
    )
    .await?;
    let tc = env
        .wait_for("drift-shop", "generation 2 observed", |tc| {
            tc.status.as_ref().and_then(|s| s.observed_generation) == Some(2)
        })
        .await?;
    assert!(condition_is(&tc, "Ready", "True"));
    let changed: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT details FROM platform.audit_log WHERE action = 'config_change'")
            .fetch_all(&env.db.pool)
            .await?;
    assert!(
        changed.iter().any(|d| d["changed"]
            .as_array()
            .is_some_and(|c| c.contains(&json!("llm")))),
        "{changed:?}"
    );
    env.finish().await
}

/// `truffles_operator_applies_total{outcome=…}` of the test's controller.
fn applies(env: &Env, outcome: &str) -> u64 {
    let series = format!("truffles_operator_applies_total{{outcome=\"{outcome}\"}}");
    metric_value(&env.ctx.metrics.render(), &series)
}

fn reconciles(env: &Env) -> u64 {
    metric_value(
        &env.ctx.metrics.render(),
        "truffles_operator_reconciles_total",
    )
}

#[tokio::test]
async fn a_reconcile_that_wants_nothing_new_sends_nothing_and_an_edit_is_still_put_back()
-> Result<()> {
    let env = Env::start("op-noop").await?;
    env.onboard("noop-shop", json!({})).await?;
    // Quiet: the objects' creation has been reconciled too.
    let mut last = (reconciles(&env), applies(&env, "sent"));
    loop {
        tokio::time::sleep(Duration::from_secs(2)).await;
        let now = (reconciles(&env), applies(&env, "sent"));
        if now == last {
            break;
        }
        last = now;
    }
    let (reconciled, sent, unchanged) = (last.0, last.1, applies(&env, "unchanged"));

    // An annotation of nobody's concern: one more reconcile, nothing sent.
    let note = json!({"metadata": {"annotations": {"example.com/note": "checked"}}});
    env.clients()
        .patch("noop-shop", &PatchParams::default(), &Patch::Merge(&note))
        .await?;
    let deadline = tokio::time::Instant::now() + WAIT;
    while reconciles(&env) == reconciled {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no reconcile after the annotation"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(applies(&env, "sent"), sent, "nothing is sent again");
    assert!(
        applies(&env, "unchanged") >= unchanged + 7,
        "every object was found unchanged: {} → {}",
        unchanged,
        applies(&env, "unchanged")
    );

    // A ConfigMap (no generation: any write counts) edited by hand is put back.
    let config_maps: Api<ConfigMap> = env.ns.api();
    let before = config_maps.get("noop-shop-runtime").await?;
    let key = before
        .data
        .as_ref()
        .and_then(|d| d.keys().next().cloned())
        .context("the runtime ConfigMap has data")?;
    let wanted = before.data.as_ref().and_then(|d| d.get(&key)).cloned();
    let tamper = json!({"data": {&key: "tampered"}});
    config_maps
        .patch(
            "noop-shop-runtime",
            &PatchParams::default(),
            &Patch::Merge(&tamper),
        )
        .await?;
    wait_for(
        &config_maps,
        "noop-shop-runtime",
        "its value put back",
        WAIT,
        |c| c.data.as_ref().and_then(|d| d.get(&key)) == wanted.as_ref(),
    )
    .await?;
    // A label removed from the Service (metadata only) is put back.
    let services: Api<Service> = env.ns.api();
    let labels = services.get("noop-shop-bot").await?.labels().clone();
    let (label, value) = labels.iter().next().context("the Service is labelled")?;
    let unlabel = json!({"metadata": {"labels": {label: null}}});
    services
        .patch(
            "noop-shop-bot",
            &PatchParams::default(),
            &Patch::Merge(&unlabel),
        )
        .await?;
    wait_for(
        &services,
        "noop-shop-bot",
        "its label put back",
        WAIT,
        |s| s.labels().get(label) == Some(value),
    )
    .await?;
    assert!(
        applies(&env, "sent") >= sent + 2,
        "the two edited objects were applied"
    );
    env.finish().await
}

#[tokio::test]
async fn the_runtime_becoming_available_is_seen_in_the_status() -> Result<()> {
    let env = Env::start("op-avail").await?;
    env.onboard("avail-shop", json!({})).await?;
    let runtime_ready = |tc: &TrufflesClient| condition_reason(tc, "RuntimeReady");
    let tc = env.clients().get("avail-shop").await?;
    assert_eq!(runtime_ready(&tc).as_deref(), Some("ReplicasUnavailable"));

    // No kubelet here: the runtime's pod is made Ready as a kubelet would
    // report it; the controller-manager then counts the Deployment's
    // replica available, and the operator must see that change.
    let pods: Api<k8s_openapi::api::core::v1::Pod> = env.ns.api();
    let selector = format!("{}=avail-shop", tenant::build::CLIENT_LABEL);
    let deadline = tokio::time::Instant::now() + WAIT;
    let pod = loop {
        let list = pods
            .list(&kube::api::ListParams::default().labels(&selector))
            .await?;
        if let Some(pod) = list.items.into_iter().next() {
            break pod;
        }
        anyhow::ensure!(tokio::time::Instant::now() < deadline, "no runtime pod");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    let now = k8s_openapi::jiff::Timestamp::now().to_string();
    let ready = json!({"status": {
        "phase": "Running",
        "conditions": [
            {"type": "Ready", "status": "True", "lastTransitionTime": now},
            {"type": "ContainersReady", "status": "True", "lastTransitionTime": now},
        ],
    }});
    pods.patch_status(
        &pod.name_any(),
        &PatchParams::default(),
        &Patch::Merge(&ready),
    )
    .await?;
    env.wait_for("avail-shop", "RuntimeReady=True", |tc| {
        condition_is(tc, "RuntimeReady", "True")
    })
    .await?;
    env.finish().await
}

#[tokio::test]
async fn suspend_keeps_data_and_reactivation_restores_the_runtime() -> Result<()> {
    let env = Env::start("op-suspend").await?;
    env.onboard("pause-shop", json!({})).await?;

    env.patch_spec("pause-shop", json!({"state": "Suspended"}))
        .await?;
    let tc = env
        .wait_for("pause-shop", "phase Suspended", |tc| {
            tc.status.as_ref().and_then(|s| s.phase) == Some(ClientPhase::Suspended)
        })
        .await?;
    assert_eq!(condition_reason(&tc, "Ready").as_deref(), Some("Suspended"));
    let deployment: Deployment = env.ns.api().get("pause-shop-bot").await?;
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(0));
    let sync: CronJob = env.ns.api().get("pause-shop-knowledge-sync").await?;
    assert_eq!(sync.spec.and_then(|s| s.suspend), Some(true));
    assert!(
        env.db.schema_exists("tenant_pause_shop").await?,
        "data is kept while suspended"
    );
    let row: String =
        sqlx::query_scalar("SELECT status FROM platform.clients WHERE name = 'pause-shop'")
            .fetch_one(&env.db.pool)
            .await?;
    assert_eq!(row, "suspended");

    env.patch_spec("pause-shop", json!({"state": "Active"}))
        .await?;
    env.wait_for("pause-shop", "phase Active", |tc| {
        tc.status.as_ref().and_then(|s| s.phase) == Some(ClientPhase::Active)
    })
    .await?;
    let deployment: Deployment = env.ns.api().get("pause-shop-bot").await?;
    assert_eq!(deployment.spec.and_then(|s| s.replicas), Some(1));
    let sync: CronJob = env.ns.api().get("pause-shop-knowledge-sync").await?;
    assert_eq!(sync.spec.and_then(|s| s.suspend), Some(false));
    env.finish().await
}

#[tokio::test]
async fn purge_leaves_nothing_of_the_tenant() -> Result<()> {
    let env = Env::start("op-purge").await?;
    create_raw::<Secret>(&env.ns, &secret_manifest("purge-shop")).await?;
    let manifest = client_manifest(
        "purge-shop",
        json!({"deletion": {"policy": "Purge", "confirmPurge": "purge-shop"}}),
    );
    create_raw::<TrufflesClient>(&env.ns, &manifest).await?;
    let tc = env.wait_ready("purge-shop").await?;
    let uid = tc.uid().context("uid")?;

    // The tenant has conversations by now.
    let runtime: Secret = env.ns.api().get("purge-shop-runtime").await?;
    let mut conn =
        PgConnection::connect(&secret_value(&runtime, "DATABASE_URL").context("url")?).await?;
    sqlx::raw_sql(
        "WITH u AS (INSERT INTO users (channel, remote_jid) VALUES ('whatsapp', '77015550000@s.whatsapp.net') RETURNING id),
              c AS (INSERT INTO conversations (user_id, channel) SELECT id, 'whatsapp' FROM u RETURNING id)
         INSERT INTO messages (conversation_id, role, content) SELECT id, 'user', 'Сколько стоит букет?' FROM c",
    )
    .execute(&mut conn)
    .await?;
    conn.close().await?;
    // Its backup key: in the runtime Secret, and wrapped in the platform database.
    let client_id: uuid::Uuid = tc
        .status
        .as_ref()
        .and_then(|s| s.client_id.as_deref())
        .context("client id")?
        .parse()?;
    let stored = truffles_operator::tenant::keys::ensure_data_key(
        &env.db.pool,
        client_id,
        &test_master_key(),
    )
    .await?;
    assert_eq!(
        secret_value(&runtime, "TRUFFLES_BACKUP_KEY").as_deref(),
        Some(stored.as_str())
    );
    // And keys in Redis, next to another tenant's.
    let mut redis = truffles_tests::redis_connection().await?;
    redis::cmd("SET")
        .arg("truffles:purge-shop:dedup:3F6E61E2")
        .arg(1)
        .exec_async(&mut redis)
        .await?;
    redis::cmd("SET")
        .arg("truffles:purge-shop-two:dedup:1")
        .arg(1)
        .exec_async(&mut redis)
        .await?;

    env.clients()
        .delete("purge-shop", &DeleteParams::default())
        .await?;
    wait_until(
        &env.clients(),
        "purge-shop",
        "deleted",
        WAIT,
        conditions::is_deleted(&uid),
    )
    .await?;

    let tenant = TenantDb::for_client("purge-shop")?;
    assert!(
        !env.db.schema_exists(&tenant.schema).await?,
        "schema dropped"
    );
    let role: i64 = sqlx::query_scalar("SELECT count(*) FROM pg_roles WHERE rolname = $1")
        .bind(&tenant.role)
        .fetch_one(&env.db.pool)
        .await?;
    assert_eq!(role, 0, "role dropped");
    let (status, deleted): (String, bool) = sqlx::query_as(
        "SELECT status, deleted_at IS NOT NULL FROM platform.clients WHERE name = 'purge-shop'",
    )
    .fetch_one(&env.db.pool)
    .await?;
    assert_eq!((status.as_str(), deleted), ("deleted", true));
    // Aggregates without PII survive; nothing else does.
    let archived: i64 = sqlx::query_scalar("SELECT coalesce(sum(messages_in), 0) FROM platform.daily_stats WHERE client_name = 'purge-shop'")
        .fetch_one(&env.db.pool)
        .await?;
    assert_eq!(archived, 1);
    let audited: i64 =
        sqlx::query_scalar("SELECT count(*) FROM platform.audit_log WHERE action = 'purge'")
            .fetch_one(&env.db.pool)
            .await?;
    assert_eq!(audited, 1);
    let keys: i64 =
        sqlx::query_scalar("SELECT count(*) FROM platform.tenant_keys WHERE client_id = $1")
            .bind(client_id)
            .fetch_one(&env.db.pool)
            .await?;
    assert_eq!(keys, 0, "the backup key is shredded");
    let left: Vec<String> = redis::cmd("KEYS")
        .arg("truffles:purge-shop*")
        .query_async(&mut redis)
        .await?;
    assert_eq!(
        left,
        ["truffles:purge-shop-two:dedup:1"],
        "only the purged tenant's keys are gone"
    );
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut redis)
        .await?;
    assert!(
        !users.contains(&"truffles-purge-shop".to_owned()),
        "the tenant's Redis user is gone: {users:?}"
    );
    let credentials: i64 =
        sqlx::query_scalar("SELECT count(*) FROM platform.tenant_credentials WHERE client_id = $1")
            .bind(client_id)
            .fetch_one(&env.db.pool)
            .await?;
    assert_eq!(credentials, 0, "the kept credentials are shredded");
    // Owned objects are garbage-collected by the controller manager.
    let secrets: Api<Secret> = env.ns.api();
    wait_until(
        &secrets,
        "purge-shop-runtime",
        "garbage-collected",
        WAIT,
        |s: Option<&Secret>| s.is_none(),
    )
    .await?;
    env.finish().await
}

/// A tenant whose vector store is a Qdrant server (the test environment's
/// real one, with its API key): unreachable first (KnowledgeReady=False, a Warning, no
/// crash), then its collection `{name}_knowledge` is created with the
/// model's size and the keyword indexes; a purge drops the collection.
#[tokio::test]
async fn a_qdrant_tenant_gets_its_collection_and_a_purge_drops_it() -> Result<()> {
    let env = Env::start("op-qdrant").await?;
    let qdrant = TestQdrant::from_env()?;
    let name = "vector-shop";
    let mut secret = secret_manifest(name);
    secret["stringData"]["qdrant"] = json!(qdrant.api_key);
    create_raw::<Secret>(&env.ns, &secret).await?;
    let vector_store = |url: &str| {
        json!({"backend": "Qdrant", "url": url,
               "apiKeySecretRef": {"name": format!("{name}-creds"), "key": "qdrant"}})
    };
    let closed = format!("http://127.0.0.1:{}", truffles_tests::free_port()?);
    let manifest = client_manifest(
        name,
        json!({
            "knowledge": {"vectorStore": vector_store(&closed)},
            "llm": {"embeddingModel": "multilingual-e5-small", "embeddingDimensions": 384},
            "deletion": {"policy": "Purge", "confirmPurge": name},
        }),
    );
    create_raw::<TrufflesClient>(&env.ns, &manifest).await?;
    let tc = env
        .wait_for(name, "KnowledgeReady=False", |tc| {
            condition_is(tc, "KnowledgeReady", "False")
        })
        .await?;
    assert_eq!(
        condition_reason(&tc, "Ready").as_deref(),
        Some("VectorStoreUnavailable")
    );
    wait_for_event(&env.ns, name, "VectorStoreUnavailable warning", WAIT, |e| {
        e.reason.as_deref() == Some("VectorStoreUnavailable")
            && !e
                .message
                .as_deref()
                .unwrap_or_default()
                .contains(&qdrant.api_key)
    })
    .await?;

    env.patch_spec(
        name,
        json!({"knowledge": {"vectorStore": vector_store(&qdrant.url)}}),
    )
    .await?;
    let tc = env.wait_ready(name).await?;
    assert_eq!(
        condition_reason(&tc, "KnowledgeReady").as_deref(),
        Some("CollectionReady")
    );
    let collection = format!("{name}_knowledge");
    assert_eq!(
        tc.status.as_ref().and_then(|s| s.collection.as_deref()),
        Some(collection.as_str())
    );
    let (size, distance, indexes) = qdrant
        .describe(&collection)
        .await?
        .context("the collection")?;
    assert_eq!((size, distance), (384, Distance::Cosine));
    assert_eq!(indexes.len(), 4, "{indexes:?}");
    // The runtime reads the key from the Secret, never from its ConfigMap.
    let deployment: Deployment = env.ns.api().get(&format!("{name}-bot")).await?;
    let env_vars = deployment
        .spec
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].env.clone().unwrap_or_default())
        .unwrap_or_default();
    let key = env_vars
        .iter()
        .find(|v| v.name == "QDRANT_API_KEY")
        .and_then(|v| v.value_from.as_ref()?.secret_key_ref.as_ref())
        .map(|r| (r.name.clone(), r.key.clone()));
    assert_eq!(key, Some((format!("{name}-creds"), "qdrant".to_owned())));
    let config: ConfigMap = env.ns.api().get(&format!("{name}-runtime")).await?;
    assert!(!serde_json::to_string(&config)?.contains(&qdrant.api_key));

    let uid = tc.uid().context("uid")?;
    env.clients().delete(name, &DeleteParams::default()).await?;
    wait_until(
        &env.clients(),
        name,
        "deleted",
        WAIT,
        conditions::is_deleted(&uid),
    )
    .await?;
    assert!(
        !qdrant.exists(&collection).await?,
        "the purge dropped the collection"
    );
    env.finish().await
}

#[tokio::test]
async fn retain_keeps_the_data_and_locks_the_role() -> Result<()> {
    let env = Env::start("op-retain").await?;
    let tc = env.onboard("keep-shop", json!({})).await?;
    let uid = tc.uid().context("uid")?;
    let runtime: Secret = env.ns.api().get("keep-shop-runtime").await?;
    let database_url = secret_value(&runtime, "DATABASE_URL").context("url")?;

    env.clients()
        .delete("keep-shop", &DeleteParams::default())
        .await?;
    wait_until(
        &env.clients(),
        "keep-shop",
        "deleted",
        WAIT,
        conditions::is_deleted(&uid),
    )
    .await?;
    assert!(
        env.db.schema_exists("tenant_keep_shop").await?,
        "Retain keeps the schema"
    );
    assert!(
        PgConnection::connect(&database_url).await.is_err(),
        "the retained tenant's role cannot log in"
    );
    let status: String =
        sqlx::query_scalar("SELECT status FROM platform.clients WHERE name = 'keep-shop'")
            .fetch_one(&env.db.pool)
            .await?;
    assert_eq!(status, "suspended");
    env.finish().await
}

#[tokio::test]
async fn missing_secret_is_reported_and_picked_up_once_created() -> Result<()> {
    let env = Env::start("op-secret").await?;
    create_raw::<TrufflesClient>(&env.ns, &client_manifest("nosecret-shop", json!({}))).await?;
    let tc = env
        .wait_for("nosecret-shop", "SecretsReady=False", |tc| {
            condition_is(tc, "SecretsReady", "False")
        })
        .await?;
    assert_eq!(
        condition_reason(&tc, "Ready").as_deref(),
        Some("SecretMissing")
    );
    let message = tc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        message.contains("nosecret-shop-creds") && message.contains("token"),
        "{message}"
    );
    assert_eq!(
        tc.status.as_ref().and_then(|s| s.phase),
        Some(ClientPhase::Onboarding)
    );
    assert!(
        env.ns
            .api::<Deployment>()
            .get_opt("nosecret-shop-bot")
            .await?
            .is_none(),
        "no runtime without its Secret"
    );
    wait_for_event(
        &env.ns,
        "nosecret-shop",
        "SecretMissing warning",
        WAIT,
        |e| e.reason.as_deref() == Some("SecretMissing") && e.type_.as_deref() == Some("Warning"),
    )
    .await?;
    let metrics = env.ctx.metrics.render();
    assert!(
        metrics.contains(r#"truffles_operator_reconcile_failures_total{reason="SecretMissing"}"#),
        "{metrics}"
    );

    create_raw::<Secret>(&env.ns, &secret_manifest("nosecret-shop")).await?;
    env.wait_ready("nosecret-shop").await?;
    env.finish().await
}

#[tokio::test]
async fn a_spec_the_operator_cannot_run_is_reported_not_applied() -> Result<()> {
    let env = Env::start("op-invalid").await?;
    create_raw::<Secret>(&env.ns, &secret_manifest("crowd-shop")).await?;
    // Three replicas cannot share one Edge vector store volume.
    create_raw::<TrufflesClient>(
        &env.ns,
        &client_manifest("crowd-shop", json!({"runtime": {"replicas": 3}})),
    )
    .await?;
    let tc = env
        .wait_for("crowd-shop", "Ready=False", |tc| {
            condition_is(tc, "Ready", "False")
        })
        .await?;
    assert_eq!(
        condition_reason(&tc, "Ready").as_deref(),
        Some("InvalidSpec")
    );
    assert!(
        env.ns
            .api::<Deployment>()
            .get_opt("crowd-shop-bot")
            .await?
            .is_none()
    );
    env.finish().await
}

#[tokio::test]
async fn state_deleted_removes_the_runtime_and_keeps_the_record() -> Result<()> {
    let env = Env::start("op-retire").await?;
    env.onboard("retire-shop", json!({})).await?;
    env.patch_spec("retire-shop", json!({"state": "Deleted"}))
        .await?;
    env.wait_for("retire-shop", "phase Deleted", |tc| {
        tc.status.as_ref().and_then(|s| s.phase) == Some(ClientPhase::Deleted)
    })
    .await?;
    assert!(
        env.ns
            .api::<Deployment>()
            .get_opt("retire-shop-bot")
            .await?
            .is_none()
    );
    assert!(
        env.ns
            .api::<Secret>()
            .get_opt("retire-shop-webhook")
            .await?
            .is_none()
    );
    assert!(
        env.db.schema_exists("tenant_retire_shop").await?,
        "Retain (the default) keeps data"
    );
    env.finish().await
}

#[tokio::test]
async fn an_unreachable_database_is_reported_and_retried_not_crashed() -> Result<()> {
    let client = kube_client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "op-nodb").await?;
    // A port nobody listens on: PostgreSQL is "down".
    let port = truffles_tests::free_port()?;
    let down: sqlx::postgres::PgConnectOptions =
        format!("postgres://postgres:x@127.0.0.1:{port}/truffles_platform").parse()?;
    let pool = sqlx::postgres::PgPoolOptions::new()
        .acquire_timeout(Duration::from_secs(2))
        .connect_lazy_with(down.clone());
    let settings = Settings {
        default_image: "truffles-bot:test".into(),
        tenant_database_host: None,
        namespace: Some(ns.name.clone()),
        runtime_redis_url: None,
        backup_master_key: test_master_key(),
        network: Default::default(),
        tenant_database_tls: Vec::new(),
        boundary: Default::default(),
    };
    let ctx = Arc::new(Context::new(client.clone(), pool, down, settings));
    let operator = tokio::spawn(tenant::run(ctx.clone()));

    create_raw::<Secret>(&ns, &secret_manifest("nodb-shop")).await?;
    create_raw::<TrufflesClient>(&ns, &client_manifest("nodb-shop", json!({}))).await?;
    let clients: Api<TrufflesClient> = ns.api();
    let tc = wait_for(&clients, "nodb-shop", "DatabaseUnavailable", WAIT, |tc| {
        condition_reason(tc, "DatabaseReady").as_deref() == Some("DatabaseUnavailable")
    })
    .await?;
    assert_eq!(
        condition_reason(&tc, "Ready").as_deref(),
        Some("DatabaseUnavailable")
    );
    assert_eq!(
        tc.status.as_ref().and_then(|s| s.phase),
        Some(ClientPhase::Onboarding)
    );
    let message = tc
        .status
        .as_ref()
        .and_then(|s| s.conditions.iter().find(|c| c.type_ == "Ready"))
        .map(|c| c.message.clone())
        .unwrap_or_default();
    assert!(
        !message.contains("postgres:x@"),
        "no credentials in status: {message}"
    );
    assert!(
        ns.api::<Deployment>()
            .get_opt("nodb-shop-bot")
            .await?
            .is_none(),
        "nothing half-provisioned"
    );
    wait_for_event(&ns, "nodb-shop", "DatabaseUnavailable", WAIT, |e| {
        e.reason.as_deref() == Some("DatabaseUnavailable")
    })
    .await?;
    // Still running, and retrying.
    assert!(!operator.is_finished(), "the controller must not crash");
    operator.abort();
    ns.delete().await
}

/// The operator's rendering is what the runtime reads: `client.json` from the
/// ConfigMap and the variables of the runtime Secret start `truffles-bot
/// serve`, which answers a customer through ChatFlow.
#[tokio::test]
async fn the_runtime_starts_from_what_the_operator_rendered() -> Result<()> {
    use truffles_tests::fakes::FakeChatflow;
    use truffles_tests::runtime::chatflow_text;

    let env = Env::start("op-runtime").await?;
    let chatflow = FakeChatflow::start("chatflow-token-value", "i-1").await?;
    let channels = json!({"whatsapp": {"instanceId": "i-1", "apiBaseUrl": chatflow.url,
        "tokenSecretRef": {"name": "live-shop-creds", "key": "token"}}});
    env.onboard("live-shop", json!({"channels": channels}))
        .await?;
    let (running, dir) = start_rendered_runtime(
        &env,
        "live-shop",
        &["--chatflow-token=chatflow-token-value"],
    )
    .await?;
    assert!(
        running.runtime.config.llm.is_none(),
        "no LLM configured in this spec"
    );

    // The URL the operator published for ChatFlow, with this runtime's address.
    let webhook: Secret = env.ns.api().get("live-shop-webhook").await?;
    let published = secret_value(&webhook, "url").context("url")?;
    let path = published
        .split_once("/t/")
        .map(|(_, p)| format!("/t/{p}"))
        .context("webhook path")?;
    let url = format!("http://{}{path}", running.addr);
    let http = reqwest::Client::new();
    let response = http
        .post(&url)
        .json(&chatflow_text("LIVE-1", "77015705555", "Здравствуйте"))
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    let sent = chatflow.wait_sent(1, Duration::from_secs(30)).await?;
    assert_eq!(sent[0].msg, "Здравствуйте! Чем могу помочь?");
    running.stop().await;
    let _ = std::fs::remove_dir_all(dir);
    env.finish().await
}

/// Starts `truffles-bot serve` in this process from what the operator rendered
/// for `name` (its ConfigMap and runtime Secret, as the Deployment's env would
/// hold them), plus `extra` arguments for the referenced Secrets' keys.
pub(crate) async fn start_rendered_runtime(
    env: &Env,
    name: &str,
    extra: &[&str],
) -> Result<(truffles_bot::serve::Running, std::path::PathBuf)> {
    use clap::Parser;
    use truffles_bot::config::{Config, ServeArgs};
    let secret: Secret = env.ns.api().get(&format!("{name}-runtime")).await?;
    let config: ConfigMap = env.ns.api().get(&format!("{name}-runtime")).await?;
    let data = config.data.context("ConfigMap data")?;
    let dir = std::env::temp_dir().join(format!(
        "truffles-{}-{}",
        env.ns.name,
        uuid::Uuid::new_v4().simple()
    ));
    std::fs::create_dir_all(&dir)?;
    let client_json = dir.join("client.json");
    std::fs::write(
        &client_json,
        data.get("client.json").context("client.json")?,
    )?;
    // Every key of the runtime Secret, as `envFrom` would pass it.
    let from_secret = secret
        .data
        .iter()
        .flatten()
        .map(|(key, value)| {
            let flag = key
                .strip_prefix("TRUFFLES_")
                .unwrap_or(key)
                .to_lowercase()
                .replace('_', "-");
            format!("--{flag}={}", String::from_utf8_lossy(&value.0))
        })
        .filter(|arg| !arg.starts_with("--backup-key="));
    let args = [
        "serve".to_owned(),
        format!(
            "--client-name={}",
            data.get("TRUFFLES_CLIENT_NAME").context("name")?
        ),
        format!("--config-file={}", client_json.display()),
        "--listen=127.0.0.1:0".to_owned(),
        "--admin-listen=127.0.0.1:0".to_owned(),
        "--coalesce-ms=100".to_owned(),
    ]
    .into_iter()
    .chain(from_secret)
    .chain(extra.iter().map(|a| (*a).to_owned()));
    #[derive(clap::Parser)]
    struct Cli {
        #[command(subcommand)]
        command: Command,
    }
    #[derive(clap::Subcommand)]
    enum Command {
        Serve(ServeArgs),
    }
    let Command::Serve(serve) =
        Cli::try_parse_from(std::iter::once("truffles-bot".to_owned()).chain(args))?.command;
    let running = truffles_bot::serve::start(truffles_bot::runtime::Runtime::new(
        Config::load(serve)?,
        Arc::new(truffles_bot::knowledge::NoKnowledge),
    )?)
    .await?;
    Ok((running, dir))
}
