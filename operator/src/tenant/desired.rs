//! Every Kubernetes object a tenant needs, built from its spec without I/O.
//!
//! `build` returns one [`TenantObjects`]; `apply` destructures it without `..`, so
//! a new kind of object cannot be forgotten there.

use std::collections::BTreeMap;

use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, ConfigMapVolumeSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, PersistentVolumeClaim, PersistentVolumeClaimSpec,
    PersistentVolumeClaimVolumeSource, PodSpec, PodTemplateSpec, Probe, Secret, SecretEnvSource,
    SecretKeySelector, SecretVolumeSource, Service, ServicePort, ServiceSpec, Volume, VolumeMount,
    VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{
    HTTPIngressPath, HTTPIngressRuleValue, Ingress, IngressBackend, IngressRule,
    IngressServiceBackend, IngressSpec, IngressTLS, ServiceBackendPort,
};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta, OwnerReference};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::{Resource, ResourceExt};
use sha2::{Digest, Sha256};
use truffles_crds::TrufflesClient;
use truffles_crds::client::{BackupStorage, TenantState, VectorBackend};
use truffles_crds::common::SecretKeyRef;

/// Label every object of a tenant carries; pruning lists by it.
pub const CLIENT_LABEL: &str = "truffles.kz/client";
/// Annotation with the hash of the runtime's configuration; a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "truffles.kz/config-hash";
/// Port of the runtime's HTTP server.
pub const RUNTIME_PORT: i32 = 8080;

/// What the operator knows beyond the spec when it builds a tenant's objects.
#[derive(Clone, Debug)]
pub struct BuildInputs {
    /// Id of the client row in the platform database.
    pub client_id: String,
    /// Database schema of the tenant.
    pub schema: String,
    /// `postgres://` URL of the platform database as the tenant's role.
    pub database_url: String,
    /// Secret path segment of the webhook URL.
    pub webhook_secret: String,
    /// The tenant's key for phone numbers at rest (64 hex characters).
    pub pii_key: String,
    /// The tenant's backup data key (64 hex characters; see `keys`).
    pub backup_key: String,
    /// Redis of the runtimes (may carry a password, so it goes in the Secret).
    pub redis_url: Option<String>,
    /// Image used when the spec names none.
    pub default_image: String,
    /// The Subscription's billing state turns the bot off.
    pub billing_suspended: bool,
}

/// Everything a tenant has in Kubernetes.
#[derive(Clone, Debug)]
pub struct TenantObjects {
    pub runtime_config: ConfigMap,
    pub runtime_secret: Secret,
    pub webhook_secret: Secret,
    pub deployment: Deployment,
    pub service: Service,
    /// Absent when the spec has no ingress.
    pub ingress: Option<Ingress>,
    pub knowledge_sync: CronJob,
    /// Absent when backups are disabled.
    pub backup: Option<CronJob>,
    /// The backup CronJob's volume, for Filesystem backup storage.
    pub backup_volume: Option<PersistentVolumeClaim>,
    /// The runtime's volume for the Edge shard (none for a Qdrant server).
    pub data_volume: Option<PersistentVolumeClaim>,
}

/// Names of a tenant's objects, derived from the TrufflesClient name.
pub struct Names<'a>(pub &'a str);

impl Names<'_> {
    pub fn runtime(&self) -> String {
        format!("{}-runtime", self.0)
    }
    pub fn bot(&self) -> String {
        format!("{}-bot", self.0)
    }
    pub fn webhook(&self) -> String {
        format!("{}-webhook", self.0)
    }
    pub fn knowledge_sync(&self) -> String {
        format!("{}-knowledge-sync", self.0)
    }
    pub fn backup(&self) -> String {
        format!("{}-backup", self.0)
    }
    pub fn data_volume(&self) -> String {
        format!("{}-data", self.0)
    }
    pub fn backup_volume(&self) -> String {
        format!("{}-backups", self.0)
    }
}

/// The path the tenant's webhooks arrive on (before the secret segment). The
/// secret is not part of the Ingress, which many people can read.
pub fn webhook_path_prefix(name: &str) -> String {
    format!("/t/{name}/")
}

/// The tenant's public HTTPS base, when its Ingress has a host.
pub fn public_url(tc: &TrufflesClient) -> Option<String> {
    match (&tc.spec.ingress.enabled, &tc.spec.ingress.host) {
        (true, Some(host)) => Some(format!("https://{host}")),
        _ => None,
    }
}

/// The URL ChatFlow must be configured with. Contains the webhook secret.
pub fn webhook_url(tc: &TrufflesClient, webhook_secret: &str) -> String {
    let name = tc.name_any();
    let path = format!("{}webhook/{webhook_secret}", webhook_path_prefix(&name));
    match public_url(tc) {
        Some(base) => format!("{base}{path}"),
        None => {
            let ns = tc.namespace().unwrap_or_else(|| "default".into());
            format!(
                "http://{}.{ns}.svc.cluster.local:{RUNTIME_PORT}{path}",
                Names(&name).bot()
            )
        }
    }
}

/// The callback URL to enter in Meta's app dashboard for Instagram, when the
/// tenant has that channel and a public address. No secret in it: Meta signs
/// every delivery with the app secret.
pub fn instagram_callback_url(tc: &TrufflesClient) -> Option<String> {
    tc.spec.channels.instagram.as_ref()?;
    let base = public_url(tc)?;
    Some(format!(
        "{base}{}instagram",
        webhook_path_prefix(&tc.name_any())
    ))
}

/// Builds the desired objects. Fails only for specs the CRD schema cannot rule out.
pub fn build(tc: &TrufflesClient, inputs: &BuildInputs) -> Result<TenantObjects, InvalidSpec> {
    validate(tc)?;
    let name = tc.name_any();
    let names = Names(&name);
    let meta = |object_name: String| ObjectMeta {
        name: Some(object_name),
        namespace: tc.namespace(),
        labels: Some(labels(&name)),
        owner_references: owner_reference(tc).map(|o| vec![o]),
        ..ObjectMeta::default()
    };

    let runtime_config = ConfigMap {
        metadata: meta(names.runtime()),
        data: Some(runtime_config_data(tc, inputs)?),
        ..ConfigMap::default()
    };
    let runtime_secret = Secret {
        metadata: meta(names.runtime()),
        type_: Some("Opaque".into()),
        data: Some(
            BTreeMap::from([
                (
                    "DATABASE_URL".into(),
                    ByteString(inputs.database_url.clone().into_bytes()),
                ),
                (
                    "TRUFFLES_WEBHOOK_SECRET".into(),
                    ByteString(inputs.webhook_secret.clone().into_bytes()),
                ),
                (
                    "TRUFFLES_PII_KEY".into(),
                    ByteString(inputs.pii_key.clone().into_bytes()),
                ),
                (
                    "TRUFFLES_BACKUP_KEY".into(),
                    ByteString(inputs.backup_key.clone().into_bytes()),
                ),
            ])
            .into_iter()
            .chain(
                inputs
                    .redis_url
                    .as_ref()
                    .map(|url| ("REDIS_URL".into(), ByteString(url.clone().into_bytes()))),
            )
            .collect(),
        ),
        ..Secret::default()
    };
    let webhook_secret = Secret {
        metadata: meta(names.webhook()),
        type_: Some("Opaque".into()),
        // `url` for ChatFlow; `instagramUrl` for Meta's dashboard. The
        // Telegram bot registers its own webhook.
        data: Some(
            std::iter::once((
                "url".into(),
                ByteString(webhook_url(tc, &inputs.webhook_secret).into_bytes()),
            ))
            .chain(
                instagram_callback_url(tc)
                    .map(|url| ("instagramUrl".into(), ByteString(url.into_bytes()))),
            )
            .collect(),
        ),
        ..Secret::default()
    };
    let config_hash = config_hash(&runtime_config, &runtime_secret);
    let image = tc
        .spec
        .runtime
        .image
        .clone()
        .unwrap_or_else(|| inputs.default_image.clone());
    let suspended = tc.spec.state != TenantState::Active || inputs.billing_suspended;

    let deployment = Deployment {
        metadata: meta(names.bot()),
        spec: Some(DeploymentSpec {
            replicas: Some(if suspended {
                0
            } else {
                tc.spec.runtime.replicas
            }),
            selector: LabelSelector {
                match_labels: Some(selector_labels(&name)),
                ..LabelSelector::default()
            },
            // Edge keeps vectors on a local volume that one pod at a time may open.
            strategy: (tc.spec.knowledge.vector_store.backend == VectorBackend::Edge).then(|| {
                DeploymentStrategy {
                    type_: Some("Recreate".into()),
                    ..DeploymentStrategy::default()
                }
            }),
            template: PodTemplateSpec {
                metadata: Some(ObjectMeta {
                    labels: Some(labels(&name)),
                    annotations: Some(BTreeMap::from([(
                        CONFIG_HASH_ANNOTATION.into(),
                        config_hash,
                    )])),
                    ..ObjectMeta::default()
                }),
                spec: Some(pod_spec(tc, &image, vec!["serve".into()], true)),
            },
            ..DeploymentSpec::default()
        }),
        ..Deployment::default()
    };

    let service = Service {
        metadata: meta(names.bot()),
        spec: Some(ServiceSpec {
            selector: Some(selector_labels(&name)),
            ports: Some(vec![ServicePort {
                name: Some("http".into()),
                port: RUNTIME_PORT,
                target_port: Some(IntOrString::String("http".into())),
                ..ServicePort::default()
            }]),
            ..ServiceSpec::default()
        }),
        ..Service::default()
    };

    let ingress = ingress(tc, &name).map(|spec| Ingress {
        metadata: ObjectMeta {
            annotations: (!tc.spec.ingress.annotations.is_empty())
                .then(|| tc.spec.ingress.annotations.clone()),
            ..meta(names.bot())
        },
        spec: Some(spec),
        ..Ingress::default()
    });

    let cron = |object_name: String, schedule: &str, command: &str| CronJob {
        metadata: meta(object_name),
        spec: Some(CronJobSpec {
            schedule: schedule.to_owned(),
            time_zone: Some("Etc/UTC".into()),
            suspend: Some(suspended),
            concurrency_policy: Some("Forbid".into()),
            successful_jobs_history_limit: Some(3),
            failed_jobs_history_limit: Some(3),
            job_template: JobTemplateSpec {
                metadata: None,
                spec: Some(JobSpec {
                    backoff_limit: Some(2),
                    template: PodTemplateSpec {
                        metadata: Some(ObjectMeta {
                            labels: Some(labels(&name)),
                            ..ObjectMeta::default()
                        }),
                        spec: Some(PodSpec {
                            restart_policy: Some("OnFailure".into()),
                            ..pod_spec(tc, &image, vec![command.to_owned()], false)
                        }),
                    },
                    ..JobSpec::default()
                }),
            },
            ..CronJobSpec::default()
        }),
        ..CronJob::default()
    };
    let knowledge_sync = cron(
        names.knowledge_sync(),
        &tc.spec.knowledge.sync_schedule,
        "knowledge-sync",
    );
    let backup_enabled = tc.spec.backup.enabled;
    let backup = backup_enabled.then(|| {
        let mut job = cron(names.backup(), &tc.spec.backup.schedule, "backup");
        let pod = job
            .spec
            .as_mut()
            .and_then(|s| s.job_template.spec.as_mut())
            .and_then(|s| s.template.spec.as_mut());
        if let Some(pod) = pod {
            let (env, volume) = backup_storage(tc);
            if let Some(container) = pod.containers.first_mut() {
                container.env.get_or_insert_with(Vec::new).extend(env);
                if let Some((volume, mount)) = volume {
                    pod.volumes.get_or_insert_with(Vec::new).push(volume);
                    container
                        .volume_mounts
                        .get_or_insert_with(Vec::new)
                        .push(mount);
                }
            }
        }
        job
    });
    let claim = |name: String, size: &str| PersistentVolumeClaim {
        metadata: meta(name),
        spec: Some(PersistentVolumeClaimSpec {
            access_modes: Some(vec!["ReadWriteOnce".into()]),
            resources: Some(VolumeResourceRequirements {
                requests: Some(BTreeMap::from([(
                    "storage".into(),
                    Quantity(size.to_owned()),
                )])),
                ..VolumeResourceRequirements::default()
            }),
            ..PersistentVolumeClaimSpec::default()
        }),
        ..PersistentVolumeClaim::default()
    };
    let backup_volume = (backup_enabled && tc.spec.backup.storage == BackupStorage::Filesystem)
        .then(|| claim(names.backup_volume(), &tc.spec.backup.volume_size));
    let data_volume = (tc.spec.knowledge.vector_store.backend == VectorBackend::Edge).then(|| {
        claim(
            names.data_volume(),
            &tc.spec.knowledge.vector_store.volume_size,
        )
    });

    Ok(TenantObjects {
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
    })
}

/// Where the backup job writes: its environment, and the volume for
/// Filesystem storage. S3 credentials stay in the client's Secret, read by
/// reference; `truffles-bot backup` hands the AWS_* variables to object_store.
pub fn backup_storage(tc: &TrufflesClient) -> (Vec<EnvVar>, Option<(Volume, VolumeMount)>) {
    const MOUNT: &str = "/var/lib/truffles/backups";
    let spec = &tc.spec.backup;
    let plain = |name: &str, value: String| EnvVar {
        name: name.into(),
        value: Some(value),
        ..EnvVar::default()
    };
    let secret = |name: &str, secret: &str, key: &str| EnvVar {
        name: name.into(),
        value_from: Some(EnvVarSource {
            secret_key_ref: Some(SecretKeySelector {
                name: secret.into(),
                key: key.into(),
                optional: Some(false),
            }),
            ..EnvVarSource::default()
        }),
        ..EnvVar::default()
    };
    let mut env = vec![plain(
        "TRUFFLES_BACKUP_RETENTION_DAYS",
        spec.retention_days.to_string(),
    )];
    match (spec.storage, &spec.s3) {
        (BackupStorage::S3, Some(s3)) => {
            let prefix = s3.prefix.as_deref().unwrap_or("").trim_matches('/');
            env.push(plain(
                "TRUFFLES_BACKUP_URL",
                format!("s3://{}/{prefix}", s3.bucket),
            ));
            env.push(plain("AWS_REGION", s3.region.clone()));
            if let Some(endpoint) = &s3.endpoint {
                env.push(plain("AWS_ENDPOINT", endpoint.clone()));
                if endpoint.starts_with("http://") {
                    env.push(plain("AWS_ALLOW_HTTP", "true".into()));
                }
            }
            let creds = &s3.credentials_secret_ref.name;
            env.push(secret("AWS_ACCESS_KEY_ID", creds, "accessKeyId"));
            env.push(secret("AWS_SECRET_ACCESS_KEY", creds, "secretAccessKey"));
            (env, None)
        }
        _ => {
            env.push(plain("TRUFFLES_BACKUP_URL", format!("file://{MOUNT}")));
            let volume = Volume {
                name: "backups".into(),
                persistent_volume_claim: Some(PersistentVolumeClaimVolumeSource {
                    claim_name: Names(&tc.name_any()).backup_volume(),
                    read_only: Some(false),
                }),
                ..Volume::default()
            };
            let mount = VolumeMount {
                name: "backups".into(),
                mount_path: MOUNT.into(),
                ..VolumeMount::default()
            };
            (env, Some((volume, mount)))
        }
    }
}

/// A spec the schema admits but the operator cannot run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0}")]
pub struct InvalidSpec(pub String);

/// Rules the CRD schema cannot express (they span unrelated fields).
pub fn validate(tc: &TrufflesClient) -> Result<(), InvalidSpec> {
    let spec = &tc.spec;
    if spec.knowledge.vector_store.backend == VectorBackend::Edge && spec.runtime.replicas > 1 {
        return Err(InvalidSpec(format!(
            "runtime.replicas is {} but the Edge vector store lives on one pod's volume: use replicas 1 or vectorStore.backend Qdrant",
            spec.runtime.replicas
        )));
    }
    Ok(())
}

/// Secret keys the tenant's spec refers to; the runtime reads them as environment.
pub fn referenced_secret_keys(tc: &TrufflesClient) -> Vec<(&'static str, &SecretKeyRef)> {
    let spec = &tc.spec;
    let mut refs = Vec::new();
    if let Some(w) = &spec.channels.whatsapp {
        refs.push(("CHATFLOW_TOKEN", &w.token_secret_ref));
        if let Some(s) = &w.signature_secret_ref {
            refs.push(("CHATFLOW_SIGNATURE_KEY", s));
        }
    }
    if let Some(t) = &spec.channels.telegram {
        refs.push(("TELEGRAM_BOT_TOKEN", &t.bot_token_secret_ref));
    }
    if let Some(i) = &spec.channels.instagram {
        refs.push(("INSTAGRAM_ACCESS_TOKEN", &i.access_token_secret_ref));
        refs.push(("INSTAGRAM_APP_SECRET", &i.app_secret_ref));
        refs.push(("INSTAGRAM_VERIFY_TOKEN", &i.verify_token_secret_ref));
    }
    if let Some(k) = &spec.llm.api_key_secret_ref {
        refs.push(("OPENAI_API_KEY", k));
    }
    if let Some(k) = &spec.knowledge.vector_store.api_key_secret_ref {
        refs.push(("QDRANT_API_KEY", k));
    }
    refs
}

/// Google Drive sources' service-account keys, by source name. Each is
/// mounted as a file at `/etc/truffles/secrets/knowledge/<source>/credentials.json`,
/// where the runtime's knowledge sync reads it (`knowledge::drive::credentials_path`).
pub fn drive_credentials(tc: &TrufflesClient) -> Vec<(&str, &SecretKeyRef)> {
    tc.spec
        .knowledge
        .sources
        .iter()
        .filter_map(|s| {
            Some((
                s.name.as_str(),
                &s.google_drive.as_ref()?.credentials_secret_ref,
            ))
        })
        .collect()
}

/// Whole Secrets the spec mounts (handover adapters' credentials), with mount names.
pub fn referenced_secrets(tc: &TrufflesClient) -> Vec<(&'static str, &str)> {
    let handover = &tc.spec.handover;
    let mut out = Vec::new();
    if let Some(s) = &handover.adapter.secret_ref {
        out.push(("handover", s.name.as_str()));
    }
    if let Some(s) = handover
        .fallback
        .as_ref()
        .and_then(|f| f.secret_ref.as_ref())
    {
        out.push(("handover-fallback", s.name.as_str()));
    }
    out
}

fn pod_spec(tc: &TrufflesClient, image: &str, args: Vec<String>, serve: bool) -> PodSpec {
    let name = tc.name_any();
    let names = Names(&name);
    let env: Vec<EnvVar> = referenced_secret_keys(tc)
        .into_iter()
        .map(|(var, r)| EnvVar {
            name: var.into(),
            value_from: Some(EnvVarSource {
                secret_key_ref: Some(SecretKeySelector {
                    name: r.name.clone(),
                    key: r.key.clone(),
                    optional: Some(false),
                }),
                ..EnvVarSource::default()
            }),
            ..EnvVar::default()
        })
        .collect();
    let mut volumes = vec![Volume {
        name: "config".into(),
        config_map: Some(ConfigMapVolumeSource {
            name: names.runtime(),
            ..ConfigMapVolumeSource::default()
        }),
        ..Volume::default()
    }];
    let mut mounts = vec![VolumeMount {
        name: "config".into(),
        mount_path: "/etc/truffles".into(),
        read_only: Some(true),
        ..VolumeMount::default()
    }];
    // The runtime's data: the Qdrant Edge shard on the tenant's volume, so a
    // new pod opens it instead of embedding everything again (Recreate
    // strategy: one pod at a time). Scratch space otherwise, and always for
    // the CronJobs' pods, which must not hold the runtime's volume.
    let edge = tc.spec.knowledge.vector_store.backend == VectorBackend::Edge;
    volumes.push(Volume {
        name: "data".into(),
        persistent_volume_claim: (serve && edge).then(|| PersistentVolumeClaimVolumeSource {
            claim_name: names.data_volume(),
            read_only: Some(false),
        }),
        empty_dir: (!serve || !edge).then(Default::default),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        name: "data".into(),
        mount_path: "/var/lib/truffles".into(),
        ..VolumeMount::default()
    });
    // Knowledge kept in git: each ConfigMap source at /etc/truffles/knowledge/<source>.
    for (i, source) in tc.spec.knowledge.sources.iter().enumerate() {
        let Some(cm) = &source.config_map else {
            continue;
        };
        // By index: "knowledge-" plus a 63-character source name is no valid volume name.
        let volume = format!("knowledge-{i}");
        volumes.push(Volume {
            name: volume.clone(),
            config_map: Some(ConfigMapVolumeSource {
                name: cm.name.clone(),
                optional: Some(true),
                ..ConfigMapVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("/etc/truffles/knowledge/{}", source.name),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    // By index, as above; only the one key, under the name the runtime expects.
    for (i, (source, key)) in drive_credentials(tc).into_iter().enumerate() {
        let volume = format!("drive-{i}");
        volumes.push(Volume {
            name: volume.clone(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(key.name.clone()),
                items: Some(vec![KeyToPath {
                    key: key.key.clone(),
                    path: "credentials.json".into(),
                    mode: None,
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("/etc/truffles/secrets/knowledge/{source}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    for (mount, secret) in referenced_secrets(tc) {
        volumes.push(Volume {
            name: mount.into(),
            secret: Some(SecretVolumeSource {
                secret_name: Some(secret.into()),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: mount.into(),
            mount_path: format!("/etc/truffles/secrets/{mount}"),
            read_only: Some(true),
            ..VolumeMount::default()
        });
    }
    let probe = |path: &str| Probe {
        http_get: Some(HTTPGetAction {
            path: Some(path.into()),
            port: IntOrString::String("http".into()),
            ..HTTPGetAction::default()
        }),
        period_seconds: Some(10),
        ..Probe::default()
    };
    PodSpec {
        containers: vec![Container {
            name: "truffles-bot".into(),
            image: Some(image.to_owned()),
            args: Some(args),
            env_from: Some(vec![
                EnvFromSource {
                    config_map_ref: Some(k8s_openapi::api::core::v1::ConfigMapEnvSource {
                        name: names.runtime(),
                        optional: Some(false),
                    }),
                    ..EnvFromSource::default()
                },
                EnvFromSource {
                    secret_ref: Some(SecretEnvSource {
                        name: names.runtime(),
                        optional: Some(false),
                    }),
                    ..EnvFromSource::default()
                },
            ]),
            env: Some(env),
            ports: serve.then(|| {
                vec![ContainerPort {
                    name: Some("http".into()),
                    container_port: RUNTIME_PORT,
                    ..ContainerPort::default()
                }]
            }),
            readiness_probe: serve.then(|| probe("/readyz")),
            liveness_probe: serve.then(|| probe("/livez")),
            resources: tc.spec.runtime.resources.clone(),
            volume_mounts: Some(mounts),
            ..Container::default()
        }],
        volumes: Some(volumes),
        ..PodSpec::default()
    }
}

fn runtime_config_data(
    tc: &TrufflesClient,
    inputs: &BuildInputs,
) -> Result<BTreeMap<String, String>, InvalidSpec> {
    // The spec holds only references to Secrets, never their values.
    let spec_json = serde_json::to_string_pretty(&tc.spec)
        .map_err(|e| InvalidSpec(format!("spec does not serialize: {e}")))?;
    Ok(BTreeMap::from([
        ("TRUFFLES_CLIENT_NAME".into(), tc.name_any()),
        ("TRUFFLES_CLIENT_ID".into(), inputs.client_id.clone()),
        ("TRUFFLES_SCHEMA".into(), inputs.schema.clone()),
        (
            "TRUFFLES_CONFIG_FILE".into(),
            "/etc/truffles/client.json".into(),
        ),
        ("RUST_LOG".into(), tc.spec.runtime.log_level.clone()),
        ("client.json".into(), spec_json),
    ])
    .into_iter()
    // Telegram's webhook for the managers' group and the CRMs' reply URL.
    .chain(public_url(tc).map(|u| ("TRUFFLES_PUBLIC_URL".into(), u)))
    .collect())
}

fn ingress(tc: &TrufflesClient, name: &str) -> Option<IngressSpec> {
    let spec = &tc.spec.ingress;
    let host = spec.host.clone().filter(|_| spec.enabled)?;
    Some(IngressSpec {
        ingress_class_name: spec.class_name.clone(),
        tls: spec.tls_secret_name.as_ref().map(|secret| {
            vec![IngressTLS {
                hosts: Some(vec![host.clone()]),
                secret_name: Some(secret.clone()),
            }]
        }),
        rules: Some(vec![IngressRule {
            host: Some(host),
            http: Some(HTTPIngressRuleValue {
                paths: vec![HTTPIngressPath {
                    path: Some(webhook_path_prefix(name)),
                    path_type: "Prefix".into(),
                    backend: IngressBackend {
                        service: Some(IngressServiceBackend {
                            name: Names(name).bot(),
                            port: Some(ServiceBackendPort {
                                name: Some("http".into()),
                                number: None,
                            }),
                        }),
                        ..IngressBackend::default()
                    },
                }],
            }),
        }]),
        ..IngressSpec::default()
    })
}

/// Labels on every object of the tenant.
pub fn labels(name: &str) -> BTreeMap<String, String> {
    let mut l = selector_labels(name);
    l.insert(
        "app.kubernetes.io/managed-by".into(),
        "truffles-operator".into(),
    );
    l.insert(CLIENT_LABEL.into(), name.into());
    l
}

fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "truffles-bot".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
    ])
}

fn owner_reference(tc: &TrufflesClient) -> Option<OwnerReference> {
    tc.controller_owner_ref(&())
}

/// Hash of what the runtime reads at start; it changes exactly when pods must restart.
fn config_hash(config: &ConfigMap, secret: &Secret) -> String {
    let mut hasher = Sha256::new();
    for (k, v) in config.data.iter().flatten() {
        hasher.update(k.as_bytes());
        hasher.update(v.as_bytes());
    }
    for (k, v) in secret.data.iter().flatten() {
        hasher.update(k.as_bytes());
        hasher.update(&v.0);
    }
    let digest = hasher.finalize();
    digest.iter().take(8).map(|b| format!("{b:02x}")).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
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
        BuildInputs {
            client_id: "5d1c".into(),
            schema: "tenant_flower_shop".into(),
            database_url: "postgres://tenant_flower_shop:pw@db:5432/truffles_platform".into(),
            webhook_secret: "s3cr3t".into(),
            pii_key: "ab".repeat(32),
            backup_key: "cd".repeat(32),
            redis_url: Some("redis://:pw@redis:6379".into()),
            default_image: "truffles-bot:1".into(),
            billing_suspended: false,
        }
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
}
