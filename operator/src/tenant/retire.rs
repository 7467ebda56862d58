//! A tenant's end: `spec.state: Deleted` and `kubectl delete` remove the
//! runtime, then purge or retain the data per the deletion policy.
use std::sync::Arc;

use k8s_openapi::api::core::v1::Secret;
use kube::runtime::controller::Action;
use kube::runtime::events::EventType;
use kube::{Api, ResourceExt};
use tracing::info;
use truffles_crds::TrufflesClient;
use truffles_crds::client::{ClientPhase, DeletionPolicy, TenantState};
use truffles_migrations::TenantDb;

use super::apply::delete_runtime_objects;
use super::context::Context;
use super::dereference::Billing;
use super::error::Error;
use super::platform::{self, ClientStatus, PlatformError};
use super::publish::publish;
use super::status::Outcome;
use super::{cache, vectors};

/// Why a live tenant is retired in this reconcile.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Due {
    /// `spec.state: Deleted`.
    StateDeleted,
    /// The Subscription opted in to deletion after N days suspended, and the
    /// client's own deletion policy confirms Purge (never by accident).
    AutoDeletion,
}

/// Whether the tenant is to be retired now, and why.
pub fn due(tc: &TrufflesClient, billing: &Billing) -> Option<Due> {
    if tc.spec.state == TenantState::Deleted {
        Some(Due::StateDeleted)
    } else if billing.deletion_due && purge_confirmed(tc) {
        Some(Due::AutoDeletion)
    } else {
        None
    }
}

/// `spec.state: Deleted`: the runtime goes away and data is purged or retained per
/// the deletion policy; the resource stays as a record.
pub async fn retire(
    tc: &TrufflesClient,
    ctx: &Context,
    tenant: &TenantDb,
) -> Result<Outcome, Error> {
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
pub async fn cleanup(tc: Arc<TrufflesClient>, ctx: Arc<Context>) -> Result<Action, Error> {
    let tenant = TenantDb::for_client(&tc.name_any())?;
    delete_runtime_objects(&ctx, &tc.namespace().unwrap_or_default(), &tc.name_any()).await?;
    remove_data(&tc, &ctx, &tenant).await?;
    Ok(Action::await_change())
}

/// Deletion policy Purge with its confirmation (the resource's own name).
pub fn purge_confirmed(tc: &TrufflesClient) -> bool {
    tc.spec.deletion.policy == DeletionPolicy::Purge
        && tc.spec.deletion.confirm_purge.as_deref() == Some(tc.name_any().as_str())
}

/// Purge (policy Purge with the confirmation) or retain the tenant's data. Returns
/// whether data was purged.
pub async fn remove_data(
    tc: &TrufflesClient,
    ctx: &Context,
    tenant: &TenantDb,
) -> Result<bool, Error> {
    let name = tc.name_any();
    let record: Option<(uuid::Uuid, String)> =
        sqlx::query_as("SELECT id, status FROM platform.clients WHERE name = $1")
            .bind(&name)
            .fetch_optional(&ctx.pool)
            .await
            .map_err(PlatformError::from)?;
    let client_id = record.as_ref().map(|(id, _)| *id);
    // A cleanup can run again before the finalizer's removal is seen (an
    // owned object's deletion queues another reconcile): every step below is
    // idempotent, and a purge already done is not audited or announced twice.
    let already_purged = record
        .as_ref()
        .is_some_and(|(_, status)| status == "deleted");
    let confirmed = purge_confirmed(tc);
    if confirmed {
        // Redis first: if it is down, nothing is deleted yet and the purge retries.
        if let Some(redis) = &ctx.redis {
            let keys = cache::purge_keys(redis, &name).await?;
            cache::delete_user(redis, &name).await?;
            info!(client = %name, keys, "tenant Redis keys and user deleted");
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
        if already_purged {
            return Ok(confirmed);
        }
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
