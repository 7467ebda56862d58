use super::*;
use crate::tenant::references::{referenced_secret_keys, referenced_secrets};
use k8s_openapi::api::core::v1::{Container, EnvVar};
use truffles_crds::client::TenantState;

/// The TrufflesClient of an example manifest, as the API server would store it.
fn example(file: &str, namespace: &str) -> TrufflesClient {
    let path = format!("{}/../examples/tenants/{file}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).expect("example exists");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("valid YAML");
    let doc = docs
        .into_iter()
        .find(|d| d["kind"] == "TrufflesClient")
        .expect("a TrufflesClient");
    let mut tc: TrufflesClient = serde_json::from_value(doc).expect("valid TrufflesClient");
    tc.metadata.namespace = Some(namespace.into());
    tc.metadata.uid = Some("uid-1".into());
    tc
}

fn inputs() -> BuildInputs {
    BuildInputs::sample("postgres://tenant_flower_shop:pw@db:5432/truffles_platform")
}

fn hash(d: &Deployment) -> Option<String> {
    d.spec
        .as_ref()?
        .template
        .metadata
        .as_ref()?
        .annotations
        .as_ref()?
        .get(CONFIG_HASH_ANNOTATION)
        .cloned()
}

#[test]
fn every_object_is_owned_labelled_and_namespaced() {
    let objects = build(&example("flower-shop.yaml", "shops"), &inputs()).expect("builds");
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
        network_policy,
    } = objects;
    let ingress = ingress.expect("ingress enabled");
    let backup = backup.expect("backup enabled");
    let backup_volume = backup_volume.expect("filesystem backups");
    let data_volume = data_volume.expect("an Edge tenant");
    for meta in [
        &runtime_config.metadata,
        &runtime_secret.metadata,
        &webhook_secret.metadata,
        &deployment.metadata,
        &service.metadata,
        &ingress.metadata,
        &knowledge_sync.metadata,
        &backup.metadata,
        &backup_volume.metadata,
        &data_volume.metadata,
        &network_policy.metadata,
    ] {
        assert_eq!(meta.namespace.as_deref(), Some("shops"));
        assert_eq!(
            meta.labels
                .as_ref()
                .and_then(|l| l.get(CLIENT_LABEL))
                .map(String::as_str),
            Some("flower-shop")
        );
        let owner = &meta.owner_references.as_ref().expect("owned")[0];
        assert_eq!(
            (owner.kind.as_str(), owner.controller),
            ("TrufflesClient", Some(true))
        );
    }
}

#[test]
fn secrets_stay_out_of_the_config_map_and_the_ingress() {
    let objects = build(&example("flower-shop.yaml", "shops"), &inputs()).expect("builds");
    let config = serde_json::to_string(&objects.runtime_config).expect("serializes");
    let ingress = serde_json::to_string(&objects.ingress).expect("serializes");
    for secret in ["s3cr3t", "postgres://", &"cd".repeat(32)] {
        assert!(
            !config.contains(secret) && !ingress.contains(secret),
            "{secret} leaked"
        );
    }
    let url = objects
        .webhook_secret
        .data
        .as_ref()
        .and_then(|d| d.get("url"))
        .expect("url");
    assert_eq!(
        String::from_utf8_lossy(&url.0),
        "https://bots.truffles.kz/t/flower-shop/webhook/s3cr3t"
    );
}

fn backup_container(objects: &TenantObjects) -> Container {
    objects
        .backup
        .clone()
        .and_then(|b| b.spec)
        .and_then(|s| s.job_template.spec)
        .and_then(|s| s.template.spec)
        .map(|p| p.containers[0].clone())
        .expect("a backup container")
}

fn env_of(container: &Container) -> BTreeMap<String, EnvVar> {
    container
        .env
        .clone()
        .unwrap_or_default()
        .into_iter()
        .map(|e| (e.name.clone(), e))
        .collect()
}

#[test]
fn backups_go_to_a_claimed_volume_by_default_and_to_s3_by_reference() {
    let mut tc = example("flower-shop.yaml", "shops");
    let objects = build(&tc, &inputs()).expect("builds");
    let container = backup_container(&objects);
    assert_eq!(container.args, Some(vec!["backup".to_owned()]));
    let env = env_of(&container);
    assert_eq!(
        env["TRUFFLES_BACKUP_URL"].value.as_deref(),
        Some("file:///var/lib/truffles/backups")
    );
    assert_eq!(
        env["TRUFFLES_BACKUP_RETENTION_DAYS"].value.as_deref(),
        Some(tc.spec.backup.retention_days.to_string().as_str())
    );
    assert!(
        container
            .volume_mounts
            .unwrap_or_default()
            .iter()
            .any(|m| m.mount_path == "/var/lib/truffles/backups")
    );
    let claim = objects.backup_volume.expect("a claim");
    assert_eq!(claim.metadata.name.as_deref(), Some("flower-shop-backups"));

    tc.spec.backup.storage = BackupStorage::S3;
    tc.spec.backup.s3 = Some(
        serde_json::from_value(serde_json::json!({
            "bucket": "truffles-backups", "endpoint": "http://minio:9000",
            "prefix": "/shops/", "credentialsSecretRef": {"name": "s3-creds"}
        }))
        .expect("s3 block"),
    );
    let objects = build(&tc, &inputs()).expect("builds");
    assert!(objects.backup_volume.is_none());
    let env = env_of(&backup_container(&objects));
    assert_eq!(
        env["TRUFFLES_BACKUP_URL"].value.as_deref(),
        Some("s3://truffles-backups/shops")
    );
    assert_eq!(env["AWS_ALLOW_HTTP"].value.as_deref(), Some("true"));
    let key_ref = env["AWS_SECRET_ACCESS_KEY"]
        .value_from
        .as_ref()
        .and_then(|v| v.secret_key_ref.as_ref())
        .expect("by reference");
    assert_eq!(
        (key_ref.name.as_str(), key_ref.key.as_str()),
        ("s3-creds", "secretAccessKey")
    );
    assert!(env["AWS_SECRET_ACCESS_KEY"].value.is_none());
}

#[test]
fn suspension_scales_to_zero_and_suspends_cron_jobs() {
    let mut tc = example("flower-shop.yaml", "shops");
    tc.spec.state = TenantState::Suspended;
    let objects = build(&tc, &inputs()).expect("builds");
    assert_eq!(objects.deployment.spec.and_then(|s| s.replicas), Some(0));
    assert_eq!(
        objects.knowledge_sync.spec.and_then(|s| s.suspend),
        Some(true)
    );
    assert_eq!(
        objects.backup.and_then(|b| b.spec).and_then(|s| s.suspend),
        Some(true)
    );
}

#[test]
fn billing_suspension_turns_the_bot_off_without_touching_the_spec() {
    let tc = example("flower-shop.yaml", "shops");
    let objects = build(
        &tc,
        &BuildInputs {
            billing_suspended: true,
            ..inputs()
        },
    )
    .expect("builds");
    assert_eq!(tc.spec.state, TenantState::Active);
    assert_eq!(objects.deployment.spec.and_then(|s| s.replicas), Some(0));
    assert_eq!(
        objects.knowledge_sync.spec.and_then(|s| s.suspend),
        Some(true)
    );
}

#[test]
fn config_hash_changes_with_the_spec_only() {
    let tc = example("flower-shop.yaml", "shops");
    let first = hash(&build(&tc, &inputs()).expect("builds").deployment);
    assert_eq!(
        first,
        hash(&build(&tc, &inputs()).expect("builds").deployment),
        "deterministic"
    );
    let mut changed = tc.clone();
    changed.spec.llm.temperature = 0.9;
    assert_ne!(
        first,
        hash(&build(&changed, &inputs()).expect("builds").deployment)
    );
}

#[test]
fn referenced_credentials_become_secret_env_vars() {
    let tc = example("dental-clinic.yaml", "clinics");
    let vars: Vec<&str> = referenced_secret_keys(&tc)
        .into_iter()
        .map(|(v, _)| v)
        .collect();
    assert_eq!(
        vars,
        ["CHATFLOW_TOKEN", "TELEGRAM_BOT_TOKEN", "OPENAI_API_KEY"]
    );
    let mounts: Vec<&str> = referenced_secrets(&tc)
        .into_iter()
        .map(|(m, _)| m)
        .collect();
    assert_eq!(mounts, ["handover", "handover-fallback"]);
    let objects = build(&tc, &inputs()).expect("builds");
    // The Drive source's key: one file where the runtime's sync reads it.
    let pod = objects
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.as_ref())
        .expect("a pod spec");
    let drive = pod
        .volumes
        .iter()
        .flatten()
        .find(|v| v.name == "drive-0")
        .and_then(|v| v.secret.as_ref())
        .expect("the Drive credentials volume");
    assert_eq!(
        drive.secret_name.as_deref(),
        Some("smile-dental-credentials")
    );
    let items = drive.items.as_deref().unwrap_or_default();
    assert_eq!(
        (items[0].key.as_str(), items[0].path.as_str()),
        ("google-service-account.json", "credentials.json")
    );
    let mounted = pod.containers[0].volume_mounts.iter().flatten().any(|m| {
        m.name == "drive-0" && m.mount_path == "/etc/truffles/secrets/knowledge/clinic-docs"
    });
    assert!(mounted);
    // Qdrant server backend: rolling updates are fine, two replicas allowed.
    assert_eq!(
        objects.deployment.spec.as_ref().and_then(|s| s.replicas),
        Some(2)
    );
    assert!(objects.deployment.spec.and_then(|s| s.strategy).is_none());
    // The dental clinic's ingress names no TLS Secret (TLS ends at its load balancer).
    assert!(
        objects
            .ingress
            .and_then(|i| i.spec)
            .and_then(|s| s.tls)
            .is_none()
    );
}

#[test]
fn edge_vector_store_allows_one_replica_only() {
    let mut tc = example("flower-shop.yaml", "shops");
    tc.spec.runtime.replicas = 2;
    let err = build(&tc, &inputs()).expect_err("must be invalid");
    assert!(
        err.0.contains("replicas") && err.0.contains("Qdrant"),
        "{err}"
    );
}

#[test]
fn the_edge_shard_lives_on_the_tenants_volume_and_only_the_runtime_mounts_it() {
    let tc = example("flower-shop.yaml", "shops");
    let objects = build(&tc, &inputs()).expect("builds");
    let claim = objects
        .data_volume
        .as_ref()
        .expect("an Edge tenant has a volume");
    assert_eq!(claim.metadata.name.as_deref(), Some("flower-shop-data"));
    let size = claim
        .spec
        .as_ref()
        .and_then(|s| s.resources.as_ref())
        .and_then(|r| r.requests.as_ref())
        .and_then(|r| r.get("storage"))
        .map(|q| q.0.clone());
    assert_eq!(size.as_deref(), Some("1Gi"));
    let data = |pod: Option<&PodSpec>| {
        pod.and_then(|p| p.volumes.as_ref())
            .and_then(|v| v.iter().find(|v| v.name == "data"))
            .cloned()
            .expect("a data volume")
    };
    let runtime = data(
        objects
            .deployment
            .spec
            .as_ref()
            .and_then(|s| s.template.spec.as_ref()),
    );
    assert_eq!(
        runtime
            .persistent_volume_claim
            .map(|c| c.claim_name)
            .as_deref(),
        Some("flower-shop-data")
    );
    let sync = data(
        objects
            .knowledge_sync
            .spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .and_then(|j| j.template.spec.as_ref()),
    );
    assert!(sync.persistent_volume_claim.is_none() && sync.empty_dir.is_some());
    // A Qdrant server tenant keeps no volume.
    let dental = example("dental-clinic.yaml", "clinics");
    assert!(
        build(&dental, &inputs())
            .expect("builds")
            .data_volume
            .is_none()
    );
}

#[test]
fn an_instagram_tenant_publishes_the_callback_url_for_meta() {
    let mut tc = example("flower-shop.yaml", "shops");
    let ref_ = |key: &str| truffles_crds::common::SecretKeyRef {
        name: "creds".into(),
        key: key.into(),
    };
    assert_eq!(instagram_callback_url(&tc), None);
    tc.spec.channels.instagram = Some(truffles_crds::client::InstagramChannel {
        account_id: "17841400000000001".into(),
        access_token_secret_ref: ref_("ig-token"),
        app_secret_ref: ref_("ig-app-secret"),
        verify_token_secret_ref: ref_("ig-verify"),
        api_version: "v21.0".into(),
        api_base_url: "https://graph.facebook.com".into(),
    });
    let objects = build(&tc, &inputs()).expect("builds");
    let data = objects.webhook_secret.data.expect("data");
    let url = String::from_utf8(data["instagramUrl"].0.clone()).expect("utf-8");
    assert!(
        url.starts_with("https://") && url.ends_with("/t/flower-shop/instagram"),
        "{url}"
    );
    assert!(data.contains_key("url"));
    let env: Vec<String> = referenced_secret_keys(&tc)
        .iter()
        .map(|(e, _)| (*e).to_owned())
        .collect();
    for key in [
        "INSTAGRAM_ACCESS_TOKEN",
        "INSTAGRAM_APP_SECRET",
        "INSTAGRAM_VERIFY_TOKEN",
    ] {
        assert!(env.contains(&key.to_owned()), "{env:?}");
    }
}

#[test]
fn without_ingress_the_webhook_url_is_the_cluster_service() {
    let mut tc = example("flower-shop.yaml", "shops");
    tc.spec.ingress.enabled = false;
    assert_eq!(
        webhook_url(&tc, "abc"),
        "http://flower-shop-bot.shops.svc.cluster.local:8080/t/flower-shop/webhook/abc"
    );
    let objects = build(&tc, &inputs()).expect("builds");
    assert!(objects.ingress.is_none());
}

#[test]
fn every_pod_meets_pod_security_restricted_and_mounts_no_token() {
    let objects = build(&example("flower-shop.yaml", "shops"), &inputs()).expect("builds");
    let deployment = objects.deployment.spec.and_then(|s| s.template.spec);
    let job = |c: Option<k8s_openapi::api::batch::v1::CronJob>| {
        c.and_then(|c| c.spec?.job_template.spec?.template.spec)
    };
    let pods = [
        deployment,
        job(Some(objects.knowledge_sync)),
        job(objects.backup),
    ];
    for pod in pods.into_iter().map(|p| p.expect("a pod spec")) {
        assert_eq!(pod.automount_service_account_token, Some(false));
        let security = pod.security_context.as_ref().expect("pod security");
        assert_eq!(security.run_as_non_root, Some(true));
        assert_eq!(
            security.seccomp_profile.as_ref().map(|p| p.type_.as_str()),
            Some("RuntimeDefault")
        );
        assert!(
            security.fs_group.is_some(),
            "volumes writable by the runtime"
        );
        for container in &pod.containers {
            let c = container
                .security_context
                .as_ref()
                .expect("container security");
            assert_eq!(c.allow_privilege_escalation, Some(false));
            assert_eq!(c.read_only_root_filesystem, Some(true));
            assert_eq!(
                c.capabilities.as_ref().and_then(|c| c.drop.clone()),
                Some(vec!["ALL".to_owned()])
            );
        }
        let tmp = pod.volumes.iter().flatten().any(|v| v.name == "tmp");
        assert!(tmp, "a writable /tmp beside the read-only root");
    }
}

#[test]
fn the_ingress_routes_to_the_public_port_only() {
    let objects = build(&example("flower-shop.yaml", "shops"), &inputs()).expect("builds");
    let ingress = serde_json::to_value(objects.ingress.expect("ingress")).expect("json");
    let backend = &ingress["spec"]["rules"][0]["http"]["paths"][0]["backend"]["service"]["port"];
    assert_eq!(backend["name"], "http");
    let ports: Vec<String> = objects
        .service
        .spec
        .and_then(|s| s.ports)
        .into_iter()
        .flatten()
        .filter_map(|p| p.name)
        .collect();
    assert_eq!(ports, ["http", "admin"]);
}
