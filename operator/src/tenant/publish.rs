//! Status step: the status written by server-side apply, and Events.

use kube::api::{Patch, PatchParams};
use kube::runtime::events::{Event, EventType};
use kube::{Api, Resource, ResourceExt};
use tracing::warn;
use truffles_crds::TrufflesClient;
use truffles_crds::client::ClientPhase;

use super::context::{Context, FIELD_MANAGER};
use super::error::Error;
use super::status::Outcome;

pub async fn patch_status(
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
pub async fn publish_transition(
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

pub async fn publish(
    ctx: &Context,
    tc: &TrufflesClient,
    type_: EventType,
    reason: &str,
    note: &str,
) {
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
