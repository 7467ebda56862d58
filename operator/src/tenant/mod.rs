//! The TrufflesClient controller. Each reconcile is a visible pipeline:
//! dereference (Secrets) → validate → provision the database → build the desired
//! objects → apply them (server-side apply) and prune the rest → write status.

pub mod cache;
pub mod desired;
pub mod keys;
pub mod platform;
pub mod status;
pub mod vectors;
pub mod webhooks;

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::events::{Event, EventType, Recorder, Reporter};
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use serde::Serialize;
use serde::de::DeserializeOwned;
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;
use tracing::{Instrument, info, warn};
use truffles_crds::client::{ClientPhase, DeletionPolicy, TenantState};
use truffles_crds::common::condition_type;
use truffles_crds::subscription::BillingState;
use truffles_crds::{Subscription, TrufflesClient};
use truffles_migrations::TenantDb;

use self::desired::{BuildInputs, CLIENT_LABEL, InvalidSpec, Names, TenantObjects};
use self::platform::{ClientStatus, PlatformError};
use self::status::Outcome;

/// Field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "truffles-operator";
/// Finalizer for what ownerReferences cannot clean up (database schema and role).
pub const FINALIZER: &str = "truffles.kz/cleanup";

/// Operator settings, loaded once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of truffles-bot used when a spec names none.
    pub default_image: String,
    /// Host (and port) tenant runtimes use to reach PostgreSQL, when it differs
    /// from the operator's (e.g. a cluster Service name).
    pub tenant_database_host: Option<(String, u16)>,
    /// Watch one namespace only (tests, or a tenant namespace per operator).
    pub namespace: Option<String>,
    /// Redis URL handed to tenant runtimes (none: they run without Redis).
    pub runtime_redis_url: Option<String>,
    /// Wraps the tenants' backup data keys in the platform database.
    pub backup_master_key: keys::MasterKey,
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub metrics: crate::metrics::Metrics,
    pub pool: PgPool,
    pub database: PgConnectOptions,
    pub recorder: Recorder,
    pub settings: Settings,
    /// Where tenants' Redis keys live; purge deletes them.
    pub redis: Option<redis::Client>,
    /// Caps concurrent database provisioning (DDL and catalog locks, and one extra
    /// connection each) so a thousand new tenants do not stampede PostgreSQL.
    pub provisioning: tokio::sync::Semaphore,
}

impl Context {
    pub fn new(
        client: Client,
        pool: PgPool,
        database: PgConnectOptions,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            metrics: Default::default(),
            pool,
            database,
            recorder,
            settings,
            redis: None,
            provisioning: tokio::sync::Semaphore::new(4),
        }
    }

    pub fn with_redis(self, redis: redis::Client) -> Self {
        Self {
            redis: Some(redis),
            ..self
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error(
        "Secret {name} (key {key}) referenced by the spec is missing: create it in namespace {namespace}"
    )]
    MissingSecret {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    VectorStore(#[from] truffles_migrations::collection::CollectionError),
    #[error(transparent)]
    BackupKey(#[from] keys::KeyError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingSecret { .. } => "SecretMissing",
            Error::Platform(PlatformError::NameTaken { .. }) => "NameTaken",
            Error::Platform(_) => "DatabaseUnavailable",
            Error::Kube(_) => "KubernetesApiError",
            Error::Redis(_) => "RedisUnavailable",
            Error::VectorStore(truffles_migrations::collection::CollectionError::WrongSize {
                ..
            }) => "VectorStoreMismatch",
            Error::VectorStore(_) => "VectorStoreUnavailable",
            Error::BackupKey(keys::KeyError::Database(_)) => "DatabaseUnavailable",
            Error::BackupKey(_) => "BackupKeyUnavailable",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.reason(),
                _ => "FinalizerFailed",
            },
        }
    }
}

impl Error {
    /// The error of the reconcile step itself, unwrapped from the finalizer's.
    fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner,
                _ => self,
            },
            other => other,
        }
    }
}

impl From<InvalidSpec> for Error {
    fn from(e: InvalidSpec) -> Self {
        Error::InvalidSpec(e.0)
    }
}

impl From<truffles_migrations::Error> for Error {
    fn from(e: truffles_migrations::Error) -> Self {
        match e {
            truffles_migrations::Error::InvalidTenantName(_) => Error::InvalidSpec(e.to_string()),
            other => Error::Platform(PlatformError::Provisioning(other)),
        }
    }
}

/// Runs the controller until the process is asked to stop.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(CLIENT_LABEL);
    let ns = ctx.settings.namespace.clone();
    let clients: Api<TrufflesClient> = scoped(&client, ns.as_deref());
    Controller::new(clients, watcher::Config::default())
        .owns(scoped::<Deployment>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<ConfigMap>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<Secret>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<Service>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<Ingress>(&client, ns.as_deref()), owned.clone())
        .owns(scoped::<CronJob>(&client, ns.as_deref()), owned)
        // A billing state change suspends or resumes the client it refers to.
        .watches(
            scoped::<Subscription>(&client, ns.as_deref()),
            watcher::Config::default(),
            |sub: Subscription| {
                let ns = sub.namespace()?;
                Some(ObjectRef::new(&sub.spec.client_ref.name).within(&ns))
            },
        )
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(client = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
}

fn scoped<K>(client: &Client, namespace: Option<&str>) -> Api<K>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>,
    <K as Resource>::DynamicType: Default,
{
    match namespace {
        Some(ns) => Api::namespaced(client.clone(), ns),
        None => Api::all(client.clone()),
    }
}

/// Boxed so the future's `Send` bound is proven here, once (rustc cannot prove it
/// through the finalizer's nested async blocks on its own).
fn reconcile(
    tc: Arc<TrufflesClient>,
    ctx: Arc<Context>,
) -> BoxFuture<'static, Result<Action, Error>> {
    let span = tracing::info_span!("reconcile", client = %tc.name_any(), namespace = tc.namespace().unwrap_or_default());
    async move {
        let started = std::time::Instant::now();
        let metrics_ctx = ctx.clone();
        let ns = tc
            .namespace()
            .ok_or_else(|| Error::InvalidSpec("TrufflesClient must be namespaced".into()))?;
        let api: Api<TrufflesClient> = Api::namespaced(ctx.client.clone(), &ns);
        let result = finalizer(&api, FINALIZER, tc, move |event| async move {
            match event {
                Finalizer::Apply(tc) => apply(tc, ctx).await,
                Finalizer::Cleanup(tc) => cleanup(tc, ctx).await,
            }
        })
        .await
        .map_err(|e| Error::Finalizer(Box::new(e)));
        let failure = result.as_ref().err().map(Error::reason);
        metrics_ctx.metrics.observe(started.elapsed(), failure);
        result
    }
    .instrument(span)
    .boxed()
}

fn error_policy(tc: Arc<TrufflesClient>, error: &Error, _ctx: Arc<Context>) -> Action {
    let error = error.inner();
    warn!(client = %tc.name_any(), reason = error.reason(), %error, "reconcile failed");
    Action::requeue(retry_delay(error))
}

/// Invalid specs and missing Secrets wait for a person; outages retry sooner.
fn retry_delay(error: &Error) -> Duration {
    let base = match error {
        Error::InvalidSpec(_)
        | Error::Platform(PlatformError::NameTaken { .. })
        | Error::VectorStore(truffles_migrations::collection::CollectionError::WrongSize {
            ..
        }) => 300,
        Error::MissingSecret { .. } => 10,
        Error::Kube(kube::Error::Api(s)) if s.code == 429 => 60,
        _ => 10,
    };
    // Jitter spreads retries of many tenants failing at once (a database outage).
    let jitter = u64::from(std::process::id() ^ rand_u32()) % (base / 5 + 1);
    Duration::from_secs(base + jitter)
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b)
        .map(|_| u32::from_le_bytes(b))
        .unwrap_or(0)
}

/// Reconciles a live TrufflesClient and always records the outcome in status.
async fn apply(tc: Arc<TrufflesClient>, ctx: Arc<Context>) -> Result<Action, Error> {
    let (tc, ctx) = (tc.as_ref(), ctx.as_ref());
    let result = provision(tc, ctx).await;
    let outcome = match &result {
        Ok(outcome) => outcome.clone(),
        Err(e) => Outcome::failed(e),
    };
    let previous_phase = tc.status.as_ref().and_then(|s| s.phase);
    let new_status = status::build(tc, &outcome, now());
    patch_status(tc, ctx, &new_status).await?;
    publish_transition(
        tc,
        ctx,
        previous_phase,
        outcome.phase(previous_phase),
        &outcome,
    )
    .await;
    result.map(|_| Action::await_change())
}

fn now() -> k8s_openapi::apimachinery::pkg::apis::meta::v1::Time {
    k8s_openapi::apimachinery::pkg::apis::meta::v1::Time(k8s_openapi::jiff::Timestamp::now())
}

async fn provision(tc: &TrufflesClient, ctx: &Context) -> Result<Outcome, Error> {
    let name = tc.name_any();
    let ns = tc.namespace().unwrap_or_default();
    let tenant = TenantDb::for_client(&name)?;

    // dereference
    check_referenced_secrets(tc, ctx, &ns).await?;
    let credentials = existing_credentials(ctx, &ns, &name).await?;

    // validate
    desired::validate(tc)?;

    let billing = billing(ctx, &ns, &name).await?;
    if tc.spec.state == TenantState::Deleted {
        return retire(tc, ctx, &tenant).await;
    }
    // The Subscription opted in to deletion after N days suspended; only a client
    // whose own deletion policy confirms Purge is purged (never by accident).
    if billing.deletion_due && purge_confirmed(tc) {
        publish(
            ctx,
            tc,
            EventType::Normal,
            "AutoDeletion",
            "unpaid past the Subscription's autoDelete period: purging",
        )
        .await;
        return retire(tc, ctx, &tenant).await;
    }

    // database
    let config = serde_json::to_value(&tc.spec).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let record = platform::upsert_client(
        &ctx.pool,
        &name,
        &ns,
        &tc.spec.company_name,
        &tenant.schema,
        &config,
    )
    .await?;
    // Provisioning takes catalog locks (roles, grants, DDL): do it only when the
    // schema is behind, the password is new, or it never completed.
    let provisioned = tc.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition_type::DATABASE_READY && c.status == "True")
    });
    if credentials.new_password
        || !provisioned
        || !truffles_migrations::tenant_is_current(&ctx.pool, &tenant).await?
    {
        // Closed only if the Context is dropped, which ends the controller anyway.
        let _permit = ctx
            .provisioning
            .acquire()
            .await
            .map_err(|_| Error::InvalidSpec("operator shutting down".into()))?;
        truffles_migrations::provision_tenant(&ctx.pool, &tenant, &credentials.db_password).await?;
        platform::copy_prompt_templates(&ctx.pool, &tenant).await?;
    }
    if !record.created && !record.changed_fields.is_empty() {
        let details = serde_json::json!({"changed": record.changed_fields, "generation": tc.metadata.generation});
        platform::audit(&ctx.pool, record.id, "config_change", details).await?;
        publish(
            ctx,
            tc,
            EventType::Normal,
            "ConfigChanged",
            &format!("changed: {}", record.changed_fields.join(", ")),
        )
        .await;
    }

    let backup_key =
        keys::ensure_data_key(&ctx.pool, record.id, &ctx.settings.backup_master_key).await?;

    // vector store
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let vector_store = vectors::ensure(tc, &name, &secrets).await?;

    // build and apply
    let inputs = BuildInputs {
        backup_key,
        client_id: record.id.to_string(),
        schema: tenant.schema.clone(),
        database_url: tenant_database_url(ctx, &tenant, &credentials.db_password),
        webhook_secret: credentials.webhook_secret,
        pii_key: credentials.pii_key,
        redis_url: ctx.settings.runtime_redis_url.clone(),
        default_image: ctx.settings.default_image.clone(),
        billing_suspended: billing.suspended,
    };
    let objects = desired::build(tc, &inputs)?;
    let deployment = apply_objects(ctx, &ns, &name, objects).await?;

    let suspended = tc.spec.state == TenantState::Suspended || inputs.billing_suspended;
    let db_status = if suspended {
        ClientStatus::Suspended
    } else {
        ClientStatus::Active
    };
    platform::set_status(&ctx.pool, record.id, db_status).await?;
    Ok(Outcome::provisioned(
        record.id.to_string(),
        tenant.schema,
        Names(&name).webhook(),
        suspended,
        inputs.billing_suspended,
        vector_store,
        &deployment,
    ))
}

/// What the client's Subscription (its status, written by the billing controller)
/// means for the tenant.
#[derive(Default)]
struct Billing {
    /// Billing state Suspended or Cancelled: the bot is off.
    suspended: bool,
    /// The opt-in automatic deletion is due.
    deletion_due: bool,
}

async fn billing(ctx: &Context, ns: &str, name: &str) -> Result<Billing, Error> {
    let subscriptions: Api<Subscription> = Api::namespaced(ctx.client.clone(), ns);
    let list = subscriptions.list(&ListParams::default()).await?;
    let statuses = list
        .items
        .into_iter()
        .filter(|s| s.spec.client_ref.name == name)
        .filter_map(|s| s.status);
    Ok(statuses.fold(Billing::default(), |acc, st| Billing {
        suspended: acc.suspended
            || matches!(
                st.state,
                Some(BillingState::Suspended | BillingState::Cancelled)
            ),
        deletion_due: acc.deletion_due || st.deletion_due == Some(true),
    }))
}

/// The tenant's generated credentials: kept in its runtime Secret, generated once.
struct Credentials {
    db_password: String,
    webhook_secret: String,
    /// Encrypts the tenant's phone numbers; losing it (purge) shreds them.
    pii_key: String,
    /// The password was generated now: the role must be (re)provisioned with it.
    new_password: bool,
}

async fn existing_credentials(ctx: &Context, ns: &str, name: &str) -> Result<Credentials, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let existing = secrets.get_opt(&Names(name).runtime()).await?;
    let read = |key: &str| existing.as_ref().and_then(|s| secret_text(s, key));
    // The password lives only inside the tenant's DATABASE_URL.
    let existing_password = read("DATABASE_URL")
        .and_then(|url| url::Url::parse(&url).ok())
        .and_then(|url| url.password().map(str::to_owned));
    let new_password = existing_password.is_none();
    let db_password = existing_password.unwrap_or_else(random_token);
    let webhook_secret = read("TRUFFLES_WEBHOOK_SECRET").unwrap_or_else(random_token);
    let pii_key = read("TRUFFLES_PII_KEY").unwrap_or_else(random_token);
    Ok(Credentials {
        db_password,
        webhook_secret,
        pii_key,
        new_password,
    })
}

/// A Secret's value under `key` as text (none if absent or not UTF-8).
pub(crate) fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// 32 random bytes as hex: URL- and SQL-safe.
fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not recoverable; nothing sensible can follow.
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn tenant_database_url(ctx: &Context, tenant: &TenantDb, password: &str) -> String {
    let (host, port) = ctx
        .settings
        .tenant_database_host
        .clone()
        .unwrap_or_else(|| (ctx.database.get_host().to_owned(), ctx.database.get_port()));
    let database = ctx.database.get_database().unwrap_or("truffles_platform");
    format!(
        "postgres://{}:{password}@{host}:{port}/{database}",
        tenant.role
    )
}

/// Every key the spec references must exist before the runtime is rolled out;
/// otherwise its pods would crash-loop on a missing variable.
async fn check_referenced_secrets(
    tc: &TrufflesClient,
    ctx: &Context,
    ns: &str,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let missing = |name: &str, key: &str| Error::MissingSecret {
        namespace: ns.into(),
        name: name.into(),
        key: key.into(),
    };
    // The runtime's keys, and the backup job's (S3 credentials).
    let backup_env = if tc.spec.backup.enabled {
        desired::backup_storage(tc).0
    } else {
        Vec::new()
    };
    let keys = desired::referenced_secret_keys(tc)
        .into_iter()
        .chain(desired::drive_credentials(tc))
        .map(|(_, r)| (r.name.as_str(), r.key.as_str()))
        .chain(
            backup_env
                .iter()
                .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|r| (r.name.as_str(), r.key.as_str())),
        );
    for (name, key) in keys {
        let secret = secrets
            .get_opt(name)
            .await?
            .ok_or_else(|| missing(name, key))?;
        let has_key = secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key));
        if !has_key {
            return Err(missing(name, key));
        }
    }
    for (_, name) in desired::referenced_secrets(tc) {
        secrets
            .get_opt(name)
            .await?
            .ok_or_else(|| missing(name, "*"))?;
    }
    Ok(())
}

/// Applies every desired object and deletes optional ones the spec no longer wants.
/// Returns the Deployment as the API server has it (for its status).
async fn apply_objects(
    ctx: &Context,
    ns: &str,
    name: &str,
    objects: TenantObjects,
) -> Result<Deployment, Error> {
    let TenantObjects {
        runtime_config,
        runtime_secret,
        webhook_secret,
        deployment,
        service,
        ingress,
        knowledge_sync,
        backup,
        backup_volume,
        data_volume,
    } = objects;
    apply_one(ctx, ns, &runtime_config).await?;
    apply_one(ctx, ns, &runtime_secret).await?;
    apply_one(ctx, ns, &webhook_secret).await?;
    apply_one(ctx, ns, &service).await?;
    // The Edge shard's volume, before the Deployment whose pod mounts it. It
    // is a cache of the sources: it goes when the tenant moves to a Qdrant server.
    match data_volume {
        Some(volume) => drop(apply_one(ctx, ns, &volume).await?),
        None => {
            delete_if_exists::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
                ctx,
                ns,
                &Names(name).data_volume(),
            )
            .await?
        }
    }
    let deployment = apply_one(ctx, ns, &deployment).await?;
    apply_one(ctx, ns, &knowledge_sync).await?;
    let names = Names(name);
    match ingress {
        Some(ingress) => drop(apply_one(ctx, ns, &ingress).await?),
        None => delete_if_exists::<Ingress>(ctx, ns, &names.bot()).await?,
    }
    // A volume no longer wanted (backups off, or moved to S3) is kept: it holds
    // the backups made so far. It goes with the tenant (owner reference).
    if let Some(volume) = backup_volume {
        apply_one(ctx, ns, &volume).await?;
    }
    match backup {
        Some(backup) => drop(apply_one(ctx, ns, &backup).await?),
        None => delete_if_exists::<CronJob>(ctx, ns, &names.backup()).await?,
    }
    Ok(deployment)
}

async fn apply_one<K>(ctx: &Context, ns: &str, obj: &K) -> Result<K, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    let mut obj = obj.clone();
    // Server-side apply wants apiVersion and kind in the body.
    let value = {
        let mut v = serde_json::to_value(&obj).map_err(kube::Error::SerdeError)?;
        v["apiVersion"] = K::api_version(&Default::default()).into();
        v["kind"] = K::kind(&Default::default()).into();
        v
    };
    obj = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await?;
    Ok(obj)
}

async fn delete_if_exists<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes every object carrying the tenant's label (the runtime of a tenant whose
/// state is Deleted). The database is handled by `remove_data`.
async fn delete_runtime_objects(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let selector = ListParams::default().labels(&format!("{CLIENT_LABEL}={name}"));
    macro_rules! delete_all {
        ($($kind:ty),*) => {$(
            let api: Api<$kind> = Api::namespaced(ctx.client.clone(), ns);
            api.delete_collection(&DeleteParams::background(), &selector).await?;
        )*};
    }
    delete_all!(Deployment, CronJob, Ingress, Service, ConfigMap, Secret);
    Ok(())
}

/// `spec.state: Deleted`: the runtime goes away and data is purged or retained per
/// the deletion policy; the resource stays as a record.
async fn retire(tc: &TrufflesClient, ctx: &Context, tenant: &TenantDb) -> Result<Outcome, Error> {
    let name = tc.name_any();
    let ns = tc.namespace().unwrap_or_default();
    delete_runtime_objects(ctx, &ns, &name).await?;
    // The phase is the memory of a completed retirement: do the data part once.
    let status = tc.status.as_ref();
    if status.and_then(|s| s.phase) == Some(ClientPhase::Deleted) {
        return Ok(Outcome::retired(status.is_some_and(|s| s.schema.is_none())));
    }
    let purged = remove_data(tc, ctx, tenant).await?;
    Ok(Outcome::retired(purged))
}

/// Cleanup when the resource itself is deleted (`kubectl delete`). Owned objects would
/// be garbage-collected by Kubernetes, but only after the finalizer: the runtime is
/// deleted first so it is not left running against a dropped schema or role.
async fn cleanup(tc: Arc<TrufflesClient>, ctx: Arc<Context>) -> Result<Action, Error> {
    let tenant = TenantDb::for_client(&tc.name_any())?;
    delete_runtime_objects(&ctx, &tc.namespace().unwrap_or_default(), &tc.name_any()).await?;
    remove_data(&tc, &ctx, &tenant).await?;
    Ok(Action::await_change())
}

/// Deletion policy Purge with its confirmation (the resource's own name).
fn purge_confirmed(tc: &TrufflesClient) -> bool {
    tc.spec.deletion.policy == DeletionPolicy::Purge
        && tc.spec.deletion.confirm_purge.as_deref() == Some(tc.name_any().as_str())
}

/// Purge (policy Purge with the confirmation) or retain the tenant's data. Returns
/// whether data was purged.
async fn remove_data(tc: &TrufflesClient, ctx: &Context, tenant: &TenantDb) -> Result<bool, Error> {
    let name = tc.name_any();
    let client_id: Option<uuid::Uuid> =
        sqlx::query_scalar("SELECT id FROM platform.clients WHERE name = $1")
            .bind(&name)
            .fetch_optional(&ctx.pool)
            .await
            .map_err(PlatformError::from)?;
    let confirmed = purge_confirmed(tc);
    if confirmed {
        // Redis first: if it is down, nothing is deleted yet and the purge retries.
        if let Some(redis) = &ctx.redis {
            let keys = cache::purge_keys(redis, &name).await?;
            info!(client = %name, keys, "tenant Redis keys deleted");
        }
        // Then the vectors: a Qdrant outage stops the purge before the database goes.
        let secrets: Api<Secret> =
            Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
        if vectors::purge(tc, &name, &secrets).await? {
            info!(client = %name, "tenant Qdrant collection deleted");
        }
        if let Some(id) = client_id {
            if platform::schema_exists(&ctx.pool, tenant).await? {
                platform::archive_statistics(&ctx.pool, id, &name, tenant).await?;
            }
            platform::shred_keys(&ctx.pool, id).await?;
        }
        truffles_migrations::drop_tenant(&ctx.pool, tenant).await?;
        if let Some(id) = client_id {
            platform::set_status(&ctx.pool, id, ClientStatus::Deleted).await?;
            let details = serde_json::json!({"schema": tenant.schema, "policy": "Purge"});
            platform::audit(&ctx.pool, id, "purge", details).await?;
        }
        info!(client = %name, "tenant data purged");
        publish(
            ctx,
            tc,
            EventType::Normal,
            "Purged",
            "all messages, end users, documents and credentials were deleted",
        )
        .await;
    } else {
        // Keep the data, but nobody may log in as the tenant while it has no runtime.
        truffles_migrations::disable_login(&ctx.pool, tenant).await?;
        if let Some(id) = client_id {
            platform::set_status(&ctx.pool, id, ClientStatus::Suspended).await?;
            let details = serde_json::json!({"schema": tenant.schema, "policy": "Retain"});
            platform::audit(&ctx.pool, id, "lifecycle", details).await?;
        }
        publish(
            ctx,
            tc,
            EventType::Normal,
            "DataRetained",
            "deletion policy Retain: the database schema was kept",
        )
        .await;
    }
    Ok(confirmed)
}

async fn patch_status(
    tc: &TrufflesClient,
    ctx: &Context,
    status: &truffles_crds::TrufflesClientStatus,
) -> Result<(), Error> {
    let api: Api<TrufflesClient> =
        Api::namespaced(ctx.client.clone(), &tc.namespace().unwrap_or_default());
    let patch = serde_json::json!({
        "apiVersion": "truffles.kz/v1alpha1",
        "kind": "TrufflesClient",
        "status": status,
    });
    api.patch_status(
        &tc.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;
    Ok(())
}

/// Events for phase changes and failures (the Recorder aggregates repeats).
async fn publish_transition(
    tc: &TrufflesClient,
    ctx: &Context,
    previous: Option<ClientPhase>,
    phase: ClientPhase,
    outcome: &Outcome,
) {
    if let Outcome::Failed {
        reason, message, ..
    } = outcome
    {
        publish(ctx, tc, EventType::Warning, reason, message).await;
    } else if previous != Some(phase) {
        let (reason, message) = outcome.transition_event(phase);
        publish(ctx, tc, EventType::Normal, reason, &message).await;
    }
}

async fn publish(ctx: &Context, tc: &TrufflesClient, type_: EventType, reason: &str, note: &str) {
    let event = Event {
        type_,
        reason: reason.into(),
        note: Some(note.into()),
        action: "Reconcile".into(),
        secondary: None,
    };
    if let Err(e) = ctx.recorder.publish(&event, &tc.object_ref(&())).await {
        warn!(error = %e, "could not publish an Event");
    }
}
