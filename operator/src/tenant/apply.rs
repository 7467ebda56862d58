//! Apply step: every desired object by server-side apply, optional objects
//! the spec no longer wants deleted. What is unchanged since this process
//! applied it is not sent again, and what the watch knows is absent is not
//! deleted (see [`super::applied`]).

use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, Secret, Service};
use k8s_openapi::api::networking::v1::Ingress;
use kube::api::{DeleteParams, ListParams, Patch, PatchParams};
use kube::{Api, Resource};
use serde::Serialize;
use serde::de::DeserializeOwned;

use super::applied::{self, Key, Record};
use super::build::{CLIENT_LABEL, Names, TenantObjects};
use super::context::{Context, FIELD_MANAGER};
use super::error::Error;

/// Applies every desired object and deletes optional ones the spec no longer wants.
/// Returns the Deployment as the API server has it (for its status).
pub async fn apply_objects(
    ctx: &Context,
    ns: &str,
    name: &str,
    objects: TenantObjects,
) -> Result<Deployment, Error> {
    let TenantObjects {
        network_policy,
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
    // First: the pods start behind it.
    apply_one(ctx, ns, name, &network_policy).await?;
    apply_one(ctx, ns, name, &runtime_config).await?;
    apply_one(ctx, ns, name, &runtime_secret).await?;
    apply_one(ctx, ns, name, &webhook_secret).await?;
    apply_one(ctx, ns, name, &service).await?;
    // The Edge shard's volume, before the Deployment whose pod mounts it. It
    // is a cache of the sources: it goes when the tenant moves to a Qdrant server.
    match data_volume {
        Some(volume) => drop(apply_one(ctx, ns, name, &volume).await?),
        None => {
            delete_if_exists::<k8s_openapi::api::core::v1::PersistentVolumeClaim>(
                ctx,
                ns,
                &Names(name).data_volume(),
            )
            .await?
        }
    }
    let deployment = match apply_one(ctx, ns, name, &deployment).await? {
        Some(applied) => applied,
        // Unchanged: as the watch has it (with its status).
        None => ctx
            .owned()
            .and_then(|owned| owned.deployment(ns, &Names(name).bot()))
            .unwrap_or(deployment),
    };
    apply_one(ctx, ns, name, &knowledge_sync).await?;
    let names = Names(name);
    match ingress {
        Some(ingress) => drop(apply_one(ctx, ns, name, &ingress).await?),
        None => delete_if_exists::<Ingress>(ctx, ns, &names.bot()).await?,
    }
    // A volume no longer wanted (backups off, or moved to S3) is kept: it holds
    // the backups made so far. It goes with the tenant (owner reference).
    if let Some(volume) = backup_volume {
        apply_one(ctx, ns, name, &volume).await?;
    }
    match backup {
        Some(backup) => drop(apply_one(ctx, ns, name, &backup).await?),
        None => delete_if_exists::<CronJob>(ctx, ns, &names.backup()).await?,
    }
    Ok(deployment)
}

/// Applies `obj` of `tenant` unless it is unchanged since this process last
/// applied it; returns the object as the API server returned it, or `None`
/// when nothing was sent.
pub async fn apply_one<K>(
    ctx: &Context,
    ns: &str,
    tenant: &str,
    obj: &K,
) -> Result<Option<K>, Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + Serialize
        + DeserializeOwned
        + std::fmt::Debug
        + k8s_openapi::Resource
        + 'static,
    <K as Resource>::DynamicType: Default,
{
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    let name = obj.meta().name.clone().unwrap_or_default();
    // Server-side apply wants apiVersion and kind in the body.
    let value = {
        let mut v = serde_json::to_value(obj).map_err(kube::Error::SerdeError)?;
        v["apiVersion"] = K::api_version(&Default::default()).into();
        v["kind"] = K::kind(&Default::default()).into();
        v
    };
    let kind = <K as k8s_openapi::Resource>::KIND;
    let key = Key {
        namespace: ns,
        tenant,
        kind,
        name: &name,
    };
    let wanted = applied::wanted(&value);
    let live = ctx
        .owned()
        .and_then(|owned| owned.live(kind, ns, &name))
        .flatten();
    let unchanged = applied::unchanged(ctx.applied.last(&key), wanted, live);
    ctx.metrics.applied(!unchanged);
    if unchanged {
        return Ok(None);
    }
    let obj = api
        .patch(
            &name,
            &PatchParams::apply(FIELD_MANAGER).force(),
            &Patch::Apply(&value),
        )
        .await?;
    let seen = applied::seen(&obj);
    ctx.applied.record(&key, Record { wanted, seen });
    Ok(Some(obj))
}

pub async fn delete_if_exists<K>(ctx: &Context, ns: &str, name: &str) -> Result<(), Error>
where
    K: Resource<Scope = k8s_openapi::NamespaceResourceScope>
        + Clone
        + DeserializeOwned
        + std::fmt::Debug
        + k8s_openapi::Resource,
    <K as Resource>::DynamicType: Default,
{
    // The watch of the tenants' objects knows it is not there.
    let known = ctx
        .owned()
        .and_then(|owned| owned.live(<K as k8s_openapi::Resource>::KIND, ns, name));
    if known == Some(None) {
        return Ok(());
    }
    let api: Api<K> = Api::namespaced(ctx.client.clone(), ns);
    match api.delete(name, &DeleteParams::background()).await {
        Ok(_) => Ok(()),
        Err(kube::Error::Api(s)) if s.code == 404 => Ok(()),
        Err(e) => Err(e.into()),
    }
}

/// Deletes every object carrying the tenant's label (the runtime of a tenant whose
/// state is Deleted). The database is handled by `remove_data`.
pub async fn delete_runtime_objects(ctx: &Context, ns: &str, name: &str) -> Result<(), Error> {
    let selector = ListParams::default().labels(&format!("{CLIENT_LABEL}={name}"));
    macro_rules! delete_all {
        ($($kind:ty),*) => {$(
            let api: Api<$kind> = Api::namespaced(ctx.client.clone(), ns);
            api.delete_collection(&DeleteParams::background(), &selector).await?;
        )*};
    }
    delete_all!(Deployment, CronJob, Ingress, Service, ConfigMap, Secret);
    ctx.applied.forget(ns, name);
    Ok(())
}
