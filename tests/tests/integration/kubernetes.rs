//! The CRDs against a real kube-apiserver: install, create and read back the example
//! tenants, reject invalid manifests with useful messages, status subresource,
//! and garbage collection by the real kube-controller-manager.

use std::time::Duration;

use anyhow::{Context, Result, bail};
use k8s_openapi::api::core::v1::ConfigMap;
use kube::api::{DeleteParams, Patch, PatchParams, PostParams};
use kube::runtime::wait::conditions;
use kube::{Resource, ResourceExt};
use serde_json::json;
use truffles_crds::client::{ClientPhase, DeletionPolicy, HandoverAdapterType, TenantState};
use truffles_crds::{Subscription, TrufflesClient};
use truffles_tests::{
    FIELD_MANAGER, TestNamespace, create_all, create_raw, install_crds, kube_client,
    read_manifests, wait_for, wait_until, yaml_files,
};

#[tokio::test]
async fn example_tenants_are_accepted_and_read_back_with_defaults() -> Result<()> {
    let client = kube_client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "examples").await?;

    for file in yaml_files("examples/tenants")? {
        create_all(&ns, read_manifests(&file)?)
            .await
            .with_context(|| format!("applying {}", file.display()))?;
    }

    let clients = ns.api::<TrufflesClient>();
    let flowers = clients.get("flower-shop").await?;
    assert_eq!(flowers.spec.company_name, "Цветы Алматы");
    assert_eq!(
        flowers.spec.handover.adapter.adapter_type,
        HandoverAdapterType::Telegram
    );
    // Defaults come from the schema, applied by the API server.
    assert_eq!(flowers.spec.knowledge.chunking.max_tokens, 500);
    assert_eq!(flowers.spec.knowledge.chunking.overlap_tokens, 50);
    assert!(
        flowers
            .spec
            .handover
            .notify_template
            .contains("{user_name}")
    );
    assert!(
        flowers
            .spec
            .handover
            .keywords
            .iter()
            .any(|k| k == "менеджер")
    );
    assert_eq!(flowers.spec.runtime.rate_limit_per_minute, 100);
    assert_eq!(
        flowers
            .spec
            .channels
            .whatsapp
            .as_ref()
            .map(|w| w.api_base_url.as_str()),
        Some("https://app.chatflow.kz")
    );

    let dental = clients.get("smile-dental").await?;
    assert_eq!(dental.spec.deletion.policy, DeletionPolicy::Purge);
    assert_eq!(dental.spec.knowledge.sources.len(), 3);
    assert_eq!(dental.spec.llm.model, "gpt-4.1-mini");

    let subs = ns.api::<Subscription>().list(&Default::default()).await?;
    assert_eq!(subs.items.len(), 2);
    let dental_sub = subs
        .items
        .iter()
        .find(|s| s.name_any() == "smile-dental")
        .context("dental subscription")?;
    assert_eq!(dental_sub.spec.paid_until.as_deref(), Some("2026-12-31"));

    // The short name and category are served.
    let discovery = kube::discovery::Discovery::new(client.clone())
        .run()
        .await?;
    let (resource, _) = discovery
        .groups()
        .flat_map(|g| g.recommended_resources())
        .find(|(r, _)| r.kind == "TrufflesClient")
        .context("TrufflesClient is discoverable")?;
    assert_eq!(resource.group, "truffles.kz");
    ns.delete().await
}

#[tokio::test]
async fn invalid_manifests_are_rejected_with_useful_messages() -> Result<()> {
    let client = kube_client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "invalid").await?;

    for file in yaml_files("examples/invalid")? {
        let text = std::fs::read_to_string(&file)?;
        // Each invalid example states what the API server must say about it.
        let expected: Vec<&str> = text
            .lines()
            .filter_map(|l| l.strip_prefix("# expect: "))
            .collect();
        assert!(
            !expected.is_empty(),
            "{} has no `# expect:` line",
            file.display()
        );
        for doc in read_manifests(&file)? {
            match create_raw::<TrufflesClient>(&ns, &doc).await {
                Err(kube::Error::Api(status)) => {
                    let (code, message) = (status.code, status.message);
                    assert_eq!(code, 422, "{}: {message}", file.display());
                    for fragment in &expected {
                        assert!(
                            message.contains(fragment),
                            "{}: {message:?} lacks {fragment:?}",
                            file.display()
                        );
                    }
                }
                Err(other) => bail!("{}: unexpected error {other}", file.display()),
                Ok(()) => bail!("{} was accepted but must be rejected", file.display()),
            }
        }
    }
    assert!(
        ns.api::<TrufflesClient>()
            .list(&Default::default())
            .await?
            .items
            .is_empty()
    );
    ns.delete().await
}

#[tokio::test]
async fn subscription_client_ref_is_immutable() -> Result<()> {
    let client = kube_client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "subs").await?;
    let api = ns.api::<Subscription>();
    let sub = json!({
        "apiVersion": "truffles.kz/v1alpha1", "kind": "Subscription",
        "metadata": {"name": "shop"},
        "spec": {"clientRef": {"name": "shop"}, "plan": "start", "price": {"amount": 25000}}
    });
    create_raw::<Subscription>(&ns, &sub).await?;
    let change = json!({"spec": {"clientRef": {"name": "other-shop"}}});
    let err = api
        .patch("shop", &PatchParams::default(), &Patch::Merge(&change))
        .await
        .expect_err("must be rejected");
    assert!(err.to_string().contains("clientRef is immutable"), "{err}");
    // Omitted fields got their defaults: KZT, 7-day trial, reminders 3 and 1 days before.
    let stored = api.get("shop").await?;
    assert_eq!(
        serde_json::to_value(stored.spec.price.currency)?,
        json!("KZT")
    );
    assert_eq!(stored.spec.trial.days, 7);
    assert_eq!(stored.spec.reminders.days_before, vec![3, 1]);
    ns.delete().await
}

#[tokio::test]
async fn status_is_a_subresource_written_by_server_side_apply() -> Result<()> {
    let client = kube_client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "status").await?;
    let api = ns.api::<TrufflesClient>();
    let tc = minimal_client("status-shop")?;
    api.create(&PostParams::default(), &tc).await?;

    let status = json!({
        "apiVersion": "truffles.kz/v1alpha1", "kind": "TrufflesClient",
        "status": {
            "phase": "Active",
            "observedGeneration": 1,
            "clientId": "3b9f0c7e-1d2a-4c55-9a77-0e4f6a1b2c3d",
            "webhookUrlSecretRef": {"name": "status-shop-webhook", "key": "url"},
            "conditions": [{
                "type": "Ready", "status": "True", "reason": "Provisioned",
                "message": "tenant is live", "lastTransitionTime": "2026-11-24T10:00:00Z", "observedGeneration": 1
            }]
        }
    });
    api.patch_status(
        "status-shop",
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&status),
    )
    .await?;

    // A spec update does not touch status, and a status write cannot change spec.
    let spec_change = json!({"spec": {"state": "Suspended"}});
    api.patch(
        "status-shop",
        &PatchParams::default(),
        &Patch::Merge(&spec_change),
    )
    .await?;
    let stored = api.get("status-shop").await?;
    assert_eq!(stored.spec.state, TenantState::Suspended);
    assert_eq!(stored.meta().generation, Some(2));
    let stored_status = stored.status.context("status kept")?;
    assert_eq!(stored_status.phase, Some(ClientPhase::Active));
    assert_eq!(stored_status.conditions[0].type_, "Ready");

    // `kubectl wait --for=condition=Ready` reads the same condition.
    wait_for(
        &api,
        "status-shop",
        "Ready",
        Duration::from_secs(10),
        |tc| {
            tc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            })
        },
    )
    .await?;
    ns.delete().await
}

#[tokio::test]
async fn owned_objects_are_garbage_collected_by_the_controller_manager() -> Result<()> {
    let client = kube_client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, "gc").await?;
    let api = ns.api::<TrufflesClient>();
    let tc = api
        .create(&PostParams::default(), &minimal_client("gc-shop")?)
        .await?;
    let owner = tc.controller_owner_ref(&()).context("owner reference")?;

    let cm: ConfigMap = serde_json::from_value(json!({
        "metadata": {"name": "gc-shop-config", "ownerReferences": [owner]},
        "data": {"companyName": "GC Shop"}
    }))?;
    let configmaps = ns.api::<ConfigMap>();
    let cm = configmaps.create(&PostParams::default(), &cm).await?;
    let uid = cm.uid().context("uid")?;

    api.delete("gc-shop", &DeleteParams::background()).await?;
    wait_until(
        &configmaps,
        "gc-shop-config",
        "garbage-collected",
        Duration::from_secs(60),
        conditions::is_deleted(&uid),
    )
    .await?;
    ns.delete().await
}

fn minimal_client(name: &str) -> Result<TrufflesClient> {
    Ok(serde_json::from_value(json!({
        "apiVersion": "truffles.kz/v1alpha1", "kind": "TrufflesClient",
        "metadata": {"name": name},
        "spec": {
            "companyName": "Test Shop",
            "channels": {"whatsapp": {"instanceId": "i-1", "tokenSecretRef": {"name": "s", "key": "token"}}},
            "handover": {"adapter": {"type": "whatsappWeb"}}
        }
    }))?)
}
