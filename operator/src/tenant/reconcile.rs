//! The TrufflesClient controller and its reconcile, a visible pipeline:
//! dereference (Secrets, credentials, the Subscription) → validate →
//! provision (database, vector store) → build the desired objects → apply
//! them and prune the rest → status and Events. Each step is its own file.
use std::sync::Arc;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt, TryStreamExt};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use kube::api::{Patch, PatchParams};
use kube::core::PartialObjectMeta;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::runtime::finalizer::{Event as Finalizer, finalizer};
use kube::runtime::reflector::ObjectRef;
use kube::runtime::{Controller, WatchStreamExt, reflector, watcher};
use kube::{Api, Client, Resource, ResourceExt};
use tracing::{Instrument, warn};
use truffles_crds::client::TenantState;
use truffles_crds::{Subscription, TrufflesClient};
use truffles_migrations::TenantDb;

use super::applied::Owned;
use super::apply::apply_objects;
use super::build::{self, BuildInputs, CLIENT_LABEL, Names};
use super::cache;
use super::context::{Context, FINALIZER};
use super::database;
use super::dereference::{self};
use super::error::{Error, retry_delay};
use super::platform::{self, ClientStatus};
use super::publish::{patch_status, publish, publish_transition};
use super::retire::{self, cleanup, retire};
use super::status::{self, Outcome};
use super::validate::{self};
use super::vectors;

/// Runs the controller until the process is asked to stop.
///
/// What triggers a reconcile is chosen so that a new tenant takes two: its
/// creation, and the creation of its objects. A TrufflesClient triggers one
/// only when what it asks for changes (`desired_state`: spec through the
/// generation, annotations, deletion), never for the operator's own status
/// or finalizer writes; the objects it owns are watched as metadata only
/// (ownerReferences are all that maps them to their tenant), except the
/// Deployment, whose available replicas are the RuntimeReady condition.
pub async fn run(ctx: Arc<Context>) {
    let client = ctx.client.clone();
    let owned = watcher::Config::default().labels(CLIENT_LABEL);
    let ns = ctx.settings.namespace.clone();
    let clients: Api<TrufflesClient> = scoped(&client, ns.as_deref());
    let (reader, writer) = reflector::store();
    let trigger = watcher(clients, watcher::Config::default())
        .default_backoff()
        // The store holds every tenant: not the API server's field bookkeeping.
        .modify(|tc| tc.managed_fields_mut().clear())
        .reflect(writer)
        .applied_objects()
        .predicate_filter(desired_state, Default::default());
    let (deployment_store, deployment_writer) = reflector::store();
    let deployments = watcher(scoped::<Deployment>(&client, ns.as_deref()), owned.clone())
        .default_backoff()
        .modify(|d| d.managed_fields_mut().clear())
        // A deleted Deployment must come back: its last state as deleted, so
        // the predicate sees a change.
        .map_ok(|event| match event {
            watcher::Event::Delete(mut d) => {
                d.metadata.deletion_timestamp.get_or_insert_with(now);
                watcher::Event::Delete(d)
            }
            other => other,
        })
        .reflect(deployment_writer)
        // Its creation by the reconcile that applied it is not a trigger;
        // its available replicas changing are.
        .try_filter(not_own_write(
            &ctx,
            <Deployment as k8s_openapi::Resource>::KIND,
        ))
        .touched_objects()
        .predicate_filter(deployment_state, Default::default());
    let (store, writer) = reflector::store();
    let subscriptions = watcher(
        scoped::<Subscription>(&client, ns.as_deref()),
        watcher::Config::default(),
    )
    .default_backoff()
    .modify(|sub| sub.managed_fields_mut().clear())
    .reflect(writer)
    .touched_objects();
    ctx.set_subscriptions(store);
    let (config_maps, config_maps_writer) = reflector::store();
    let (secrets, secrets_writer) = reflector::store();
    let (services, services_writer) = reflector::store();
    let (ingresses, ingresses_writer) = reflector::store();
    let (cron_jobs, cron_jobs_writer) = reflector::store();
    let (network_policies, network_policies_writer) = reflector::store();
    let (volumes, volumes_writer) = reflector::store();
    // Volumes are looked up, never a trigger: a claim's binding is not a
    // change of the tenant (and would be one reconcile more per tenant).
    let volumes_watch = tokio::spawn(
        metadata_of::<PersistentVolumeClaim>(&ctx, ns.as_deref(), &owned, volumes_writer)
            .for_each(|_| std::future::ready(())),
    );
    ctx.set_owned(Owned {
        deployments: deployment_store,
        config_maps,
        secrets,
        services,
        ingresses,
        cron_jobs,
        network_policies,
        volumes,
    });
    Controller::for_stream(trigger, reader)
        .owns_stream(deployments)
        .owns_stream(metadata_of::<ConfigMap>(
            &ctx,
            ns.as_deref(),
            &owned,
            config_maps_writer,
        ))
        .owns_stream(metadata_of::<Secret>(
            &ctx,
            ns.as_deref(),
            &owned,
            secrets_writer,
        ))
        .owns_stream(metadata_of::<Service>(
            &ctx,
            ns.as_deref(),
            &owned,
            services_writer,
        ))
        .owns_stream(metadata_of::<Ingress>(
            &ctx,
            ns.as_deref(),
            &owned,
            ingresses_writer,
        ))
        .owns_stream(metadata_of::<CronJob>(
            &ctx,
            ns.as_deref(),
            &owned,
            cron_jobs_writer,
        ))
        .owns_stream(metadata_of::<NetworkPolicy>(
            &ctx,
            ns.as_deref(),
            &owned,
            network_policies_writer,
        ))
        // A billing state change suspends or resumes the client it refers to;
        // the reflected Subscriptions are what a reconcile reads its billing in.
        .watches_stream(subscriptions, |sub: Subscription| {
            let ns = sub.namespace()?;
            Some(ObjectRef::new(&sub.spec.client_ref.name).within(&ns))
        })
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|result| async move {
            match result {
                Ok((obj, _)) => tracing::debug!(client = %obj.name, "reconciled"),
                Err(e) => tracing::debug!(error = %e, "reconcile failed"),
            }
        })
        .await;
    volumes_watch.abort();
}

/// Changes of the tenant's objects of kind `K`, as metadata only (the API
/// server sends no data, spec or status: a thousand tenants' Secrets and
/// ConfigMaps are not held or decoded to learn which tenant they belong to).
/// They are kept in `store` (see [`Owned`]), without the API server's field
/// bookkeeping.
fn metadata_of<K>(
    ctx: &Arc<Context>,
    namespace: Option<&str>,
    config: &watcher::Config,
    store: reflector::store::Writer<PartialObjectMeta<K>>,
) -> impl futures::Stream<Item = Result<PartialObjectMeta<K>, watcher::Error>> + Send + 'static
where
    K: Resource<DynamicType = (), Scope = k8s_openapi::NamespaceResourceScope>
        + k8s_openapi::Resource
        + Clone
        + serde::de::DeserializeOwned
        + std::fmt::Debug
        + Send
        + Sync
        + 'static,
{
    let api: Api<PartialObjectMeta<K>> = match namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    watcher(api, config.clone())
        .default_backoff()
        .modify(|o| o.managed_fields_mut().clear())
        .reflect(store)
        .try_filter(not_own_write(ctx, K::KIND))
        .touched_objects()
}

/// A watch filter: the operator's own write of an object of `kind`, coming
/// back exactly as the API server returned it, is not a trigger (the
/// reconcile that wrote it knows it); a deletion always is.
fn not_own_write<K: Resource + 'static>(
    ctx: &Arc<Context>,
    kind: &'static str,
) -> impl FnMut(&watcher::Event<K>) -> std::future::Ready<bool> + Send + 'static {
    let ctx = ctx.clone();
    move |event| {
        let own = matches!(event, watcher::Event::Apply(o) if ctx.applied.is_own_write(kind, o));
        std::future::ready(!own)
    }
}

/// What a TrufflesClient asks for: its spec (the generation, which deletion
/// bumps too), its annotations (credential rotation requests) and whether
/// it is being deleted. Status and finalizers are the operator's own writes.
fn desired_state(tc: &TrufflesClient) -> Option<u64> {
    let meta = tc.meta();
    Some(hash(&(
        meta.generation,
        tc.annotations(),
        meta.deletion_timestamp.is_some(),
    )))
}

/// What of a runtime Deployment the tenant's status shows: its spec (drift)
/// and its available replicas (RuntimeReady), or its deletion.
fn deployment_state(d: &Deployment) -> Option<u64> {
    Some(hash(&(
        d.meta().generation,
        d.status.as_ref().and_then(|s| s.available_replicas),
        d.meta().deletion_timestamp.is_some(),
    )))
}

fn hash(value: &impl std::hash::Hash) -> u64 {
    use std::hash::Hasher;
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    value.hash(&mut hasher);
    hasher.finish()
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
        // The finalizer is added here and the tenant provisioned in the same
        // pass (the helper alone would wait for the update's watch event: one
        // reconcile more per new tenant).
        let tc = add_finalizer(&api, tc).await?;
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

/// Adds the cleanup finalizer to a live TrufflesClient that lacks it; the
/// resource version makes it a no-op on a stale copy (a conflict, retried).
async fn add_finalizer(
    api: &Api<TrufflesClient>,
    tc: Arc<TrufflesClient>,
) -> Result<Arc<TrufflesClient>, Error> {
    if tc.meta().deletion_timestamp.is_some() || tc.finalizers().iter().any(|f| f == FINALIZER) {
        return Ok(tc);
    }
    let mut finalizers = tc.finalizers().to_vec();
    finalizers.push(FINALIZER.to_owned());
    let patch = serde_json::json!({"metadata": {
        "finalizers": finalizers,
        "resourceVersion": tc.resource_version(),
    }});
    let updated = api
        .patch(
            &tc.name_any(),
            &PatchParams::default(),
            &Patch::Merge(&patch),
        )
        .await?;
    Ok(Arc::new(updated))
}

fn error_policy(tc: Arc<TrufflesClient>, error: &Error, _ctx: Arc<Context>) -> Action {
    let error = error.inner();
    warn!(client = %tc.name_any(), reason = error.reason(), %error, "reconcile failed");
    Action::requeue(retry_delay(error))
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
    // A status that says the same is not written again.
    if tc.status.as_ref() != Some(&new_status) {
        patch_status(tc, ctx, &new_status).await?;
    }
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

/// The pipeline of a live tenant; each step is a call into its own file.
async fn provision(tc: &TrufflesClient, ctx: &Context) -> Result<Outcome, Error> {
    let name = tc.name_any();
    let ns = tc.namespace().unwrap_or_default();
    let tenant = TenantDb::for_client(&name)?;

    // dereference
    dereference::check_referenced_secrets(tc, ctx, &ns).await?;

    // validate
    validate::validate(tc)?;
    validate::boundary(tc, &ctx.settings.boundary, &ctx.settings.default_image)?;

    let billing = dereference::billing(ctx, &ns, &name).await?;
    if let Some(retirement) = retire::due(tc, &billing) {
        if retirement == retire::Due::AutoDeletion {
            publish(
                ctx,
                tc,
                EventType::Normal,
                "AutoDeletion",
                "unpaid past the Subscription's autoDelete period: purging",
            )
            .await;
        }
        return retire(tc, ctx, &tenant).await;
    }

    // provision: the database, then the vector store
    let database = database::provision(tc, ctx, &tenant).await?;
    let credentials = database.credentials;
    // The tenant's own Redis user: its runtime reaches its key prefix only.
    // An operator without Redis access hands the runtimes the shared URL.
    let redis_url = match (
        ctx.redis_connection().await,
        &ctx.settings.runtime_redis_url,
    ) {
        (Some(connection), Some(base)) => {
            cache::ensure_user(&mut connection?, &name, &credentials.redis_password).await?;
            Some(
                cache::tenant_url(base, &name, &credentials.redis_password).ok_or_else(|| {
                    Error::InvalidSpec("the runtimes' Redis URL does not parse".into())
                })?,
            )
        }
        (_, base) => base.clone(),
    };
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), &ns);
    let vector_store = vectors::ensure(tc, &name, &secrets).await?;

    // build
    let inputs = BuildInputs {
        backup_key: database.backup_key,
        client_id: database.client_id.to_string(),
        database_url: database::tenant_database_url(ctx, &tenant, &credentials.db_password),
        webhook_secret: credentials.webhook_secret,
        admin_token: credentials.admin_token,
        pii_key: credentials.pii_key,
        redis_url,
        default_image: ctx.settings.default_image.clone(),
        billing_suspended: billing.suspended,
        network: ctx.settings.network.clone(),
    };
    let objects = build::build(tc, &inputs)?;

    // apply and prune
    let deployment = apply_objects(ctx, &ns, &name, objects).await?;

    // status
    let suspended = tc.spec.state == TenantState::Suspended || inputs.billing_suspended;
    let db_status = if suspended {
        ClientStatus::Suspended
    } else {
        ClientStatus::Active
    };
    platform::set_status(&ctx.pool, database.client_id, db_status).await?;
    Ok(Outcome::provisioned(
        inputs.client_id,
        tenant.schema,
        Names(&name).webhook(),
        suspended,
        inputs.billing_suspended,
        vector_store,
        &deployment,
    ))
}
