//! The operator↔runtime contract (`truffles_crds::contract`), both ways: the
//! objects the operator builds for a tenant with every channel and feature on
//! (no API server needed) against what each `truffles-bot` subcommand its pods
//! run reads (the command line's own description of its arguments).

use std::collections::BTreeSet;

use clap::CommandFactory;
use k8s_openapi::api::core::v1::PodSpec;
use serde_json::json;
use truffles_bot::cli::Cli;
use truffles_crds::TrufflesClient;
use truffles_crds::contract::{env, path};
use truffles_operator::tenant::build::{BuildInputs, TenantObjects, build};
use truffles_tests::workspace_root;

/// The dental clinic with every optional part on: all three channels, a
/// signed ChatFlow webhook, an LLM key, a Qdrant server with a key, a Google
/// Drive source, both handover adapters' Secrets, S3 backups, an Ingress.
fn everything_on() -> TrufflesClient {
    let text =
        std::fs::read_to_string(workspace_root().join("examples/tenants/dental-clinic.yaml"))
            .expect("the example exists");
    let docs: Vec<serde_json::Value> = serde_saphyr::from_multiple(&text).expect("valid YAML");
    let mut doc = docs
        .into_iter()
        .find(|d| d["kind"] == "TrufflesClient")
        .expect("a TrufflesClient");
    let spec = &mut doc["spec"];
    let secret = |key: &str| json!({"name": "smile-dental-credentials", "key": key});
    spec["channels"]["whatsapp"]["signatureSecretRef"] = secret("chatflow-signature");
    spec["channels"]["instagram"] = json!({
        "accountId": "17841400000000001",
        "accessTokenSecretRef": secret("ig-token"),
        "appSecretRef": secret("ig-app-secret"),
        "verifyTokenSecretRef": secret("ig-verify"),
    });
    spec["knowledge"]["vectorStore"] = json!({
        "backend": "Qdrant",
        "url": "http://qdrant:6334",
        "apiKeySecretRef": secret("qdrant-key"),
    });
    spec["ingress"] = json!({"enabled": true, "host": "smile.bots.truffles.kz"});
    let mut tc: TrufflesClient = serde_json::from_value(doc).expect("a valid TrufflesClient");
    tc.metadata.namespace = Some("clinics".into());
    tc.metadata.uid = Some("uid-1".into());
    tc
}

fn objects(tc: &TrufflesClient) -> TenantObjects {
    let inputs = BuildInputs::sample("postgres://tenant_smile:pw@db:5432/truffles_platform");
    build(tc, &inputs).expect("the objects build")
}

/// The pods the operator runs for the tenant, each with its subcommand.
fn pods(objects: &TenantObjects) -> Vec<(String, PodSpec)> {
    let deployment = objects
        .deployment
        .spec
        .as_ref()
        .and_then(|s| s.template.spec.clone());
    let job = |cron: &k8s_openapi::api::batch::v1::CronJob| {
        cron.spec
            .as_ref()
            .and_then(|s| s.job_template.spec.as_ref())
            .and_then(|s| s.template.spec.clone())
    };
    [
        deployment,
        job(&objects.knowledge_sync),
        objects.backup.as_ref().and_then(job),
    ]
    .into_iter()
    .map(|pod| {
        let pod = pod.expect("a pod template");
        let args = pod.containers[0].args.clone().unwrap_or_default();
        (args.first().cloned().expect("a subcommand"), pod)
    })
    .collect()
}

/// Every variable the pod's container gets: its own `env`, and the keys of the
/// runtime ConfigMap and Secret it takes with `envFrom` (the ConfigMap's
/// `client.json` is read as a file, not a variable).
fn rendered(objects: &TenantObjects, pod: &PodSpec) -> BTreeSet<String> {
    let container = &pod.containers[0];
    let mut names: BTreeSet<String> = container
        .env
        .iter()
        .flatten()
        .map(|e| e.name.clone())
        .collect();
    let from = container.env_from.clone().unwrap_or_default();
    assert!(
        from.iter().any(|f| f.config_map_ref.is_some())
            && from.iter().any(|f| f.secret_ref.is_some()),
        "the container takes the runtime ConfigMap and Secret"
    );
    names.extend(
        objects
            .runtime_config
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.clone())
            .filter(|k| k != path::CONFIG_FILE_KEY),
    );
    names.extend(
        objects
            .runtime_secret
            .data
            .iter()
            .flatten()
            .map(|(k, _)| k.clone()),
    );
    names
}

/// The variables `truffles-bot <subcommand>` reads, and which of them it requires.
fn reads(subcommand: &str) -> (BTreeSet<String>, BTreeSet<String>) {
    let cli = Cli::command();
    let sub = cli
        .find_subcommand(subcommand)
        .unwrap_or_else(|| panic!("truffles-bot has no subcommand {subcommand}"));
    let mut all = BTreeSet::new();
    let mut required = BTreeSet::new();
    for arg in sub.get_arguments() {
        let Some(var) = arg.get_env().and_then(|v| v.to_str()) else {
            continue;
        };
        all.insert(var.to_owned());
        if arg.is_required_set() {
            required.insert(var.to_owned());
        }
    }
    (all, required)
}

#[test]
fn the_runtime_reads_what_the_operator_renders_and_gets_what_it_requires() {
    let tc = everything_on();
    let objects = objects(&tc);
    let pods = pods(&objects);
    let subcommands: Vec<&str> = pods.iter().map(|(s, _)| s.as_str()).collect();
    assert_eq!(subcommands, ["serve", "knowledge-sync", "backup"]);
    // What any command of the tenant's pods reads, and the libraries they use
    // (the log filter, object_store's S3 settings).
    let mut read_by_some: BTreeSet<String> = env::READ_BY_LIBRARIES
        .iter()
        .map(|v| v.to_string())
        .collect();
    for (subcommand, _) in &pods {
        read_by_some.extend(reads(subcommand).0);
    }
    for (subcommand, pod) in &pods {
        let given = rendered(&objects, pod);
        let (_, required) = reads(subcommand);
        let missing: Vec<&String> = required.difference(&given).collect();
        assert!(
            missing.is_empty(),
            "`truffles-bot {subcommand}` requires {missing:?}, which the operator does not render"
        );
        let unread: Vec<&String> = given.difference(&read_by_some).collect();
        assert!(
            unread.is_empty(),
            "the operator renders {unread:?} into the {subcommand} pod, and no command reads them"
        );
    }
    // The serve pod gets every channel's and the knowledge base's credentials.
    let (serve_reads, _) = reads("serve");
    let serve_given = rendered(&objects, &pods[0].1);
    for var in [
        env::CHATFLOW_TOKEN,
        env::CHATFLOW_SIGNATURE_KEY,
        env::TELEGRAM_BOT_TOKEN,
        env::INSTAGRAM_ACCESS_TOKEN,
        env::INSTAGRAM_APP_SECRET,
        env::INSTAGRAM_VERIFY_TOKEN,
        env::OPENAI_API_KEY,
        env::QDRANT_API_KEY,
        env::REDIS_URL,
        env::PUBLIC_URL,
    ] {
        assert!(serve_given.contains(var), "{var} is rendered");
        assert!(serve_reads.contains(var), "{var} is read by serve");
    }
}

#[test]
fn the_runtime_finds_its_files_where_the_operator_mounts_them() {
    let tc = everything_on();
    let objects = objects(&tc);
    let pods = pods(&objects);
    let serve = &pods[0].1;
    let mounts: Vec<(String, String)> = serve.containers[0]
        .volume_mounts
        .iter()
        .flatten()
        .map(|m| (m.name.clone(), m.mount_path.clone()))
        .collect();
    let volume = |mount_path: &str| {
        let (name, _) = mounts
            .iter()
            .find(|(_, p)| p == mount_path)
            .unwrap_or_else(|| panic!("nothing is mounted at {mount_path}: {mounts:?}"));
        serve
            .volumes
            .iter()
            .flatten()
            .find(|v| &v.name == name)
            .expect("the mount's volume")
            .clone()
    };
    // serve's defaults are the contract's paths.
    let cli = Cli::command();
    let serve_cli = cli.find_subcommand("serve").expect("serve");
    for (var, default) in path::SETTINGS {
        let arg = serve_cli
            .get_arguments()
            .find(|a| a.get_env().and_then(|v| v.to_str()) == Some(var))
            .unwrap_or_else(|| panic!("serve reads {var}"));
        let defaults: Vec<_> = arg.get_default_values().iter().collect();
        assert_eq!(defaults, [default], "{var}");
    }
    // The spec as JSON, in the ConfigMap mounted where the runtime reads it.
    let config_dir = std::path::Path::new(path::CONFIG_FILE)
        .parent()
        .and_then(|p| p.to_str())
        .expect("a directory");
    let config = volume(config_dir);
    assert_eq!(
        config.config_map.map(|c| c.name),
        objects.runtime_config.metadata.name
    );
    assert!(path::CONFIG_FILE.ends_with(path::CONFIG_FILE_KEY));
    let spec_json = objects
        .runtime_config
        .data
        .as_ref()
        .and_then(|d| d.get(path::CONFIG_FILE_KEY))
        .expect("client.json");
    let _: truffles_crds::TrufflesClientSpec =
        serde_json::from_str(spec_json).expect("the runtime can read the spec");
    volume(path::DATA_DIR);
    // Each ConfigMap source where the knowledge sync reads it.
    for source in &tc.spec.knowledge.sources {
        if let Some(cm) = &source.config_map {
            let v = volume(&format!("{}/{}", path::KNOWLEDGE_DIR, source.name));
            assert_eq!(v.config_map.map(|c| c.name), Some(cm.name.clone()));
        }
    }
    // Each Google Drive key as the file the sync opens.
    let mut drive_sources = 0;
    for source in &tc.spec.knowledge.sources {
        let Some(drive) = &source.google_drive else {
            continue;
        };
        drive_sources += 1;
        let file = truffles_bot::knowledge::drive::credentials_path(
            std::path::Path::new(path::SECRETS_DIR),
            &source.name,
        );
        let dir = file.parent().and_then(|p| p.to_str()).expect("a directory");
        let secret = volume(dir).secret.expect("a Secret volume");
        let items = secret.items.expect("one key");
        assert_eq!(items[0].key, drive.credentials_secret_ref.key);
        assert_eq!(
            Some(items[0].path.as_str()),
            file.file_name().and_then(|f| f.to_str())
        );
    }
    assert!(drive_sources > 0, "the example has a Drive source");
    // The handover adapters' Secrets, a folder each.
    for mount in [path::HANDOVER_SECRETS, path::HANDOVER_FALLBACK_SECRETS] {
        let v = volume(&format!("{}/{mount}", path::SECRETS_DIR));
        assert!(v.secret.is_some(), "{mount}");
    }
    // The runtime serves on the port the Service targets.
    let port = serve.containers[0].ports.as_ref().expect("ports")[0].container_port;
    assert_eq!(port, i32::from(truffles_crds::contract::RUNTIME_PORT));
}
