//! Every Kubernetes object a tenant needs, built from its spec without I/O.
//!
//! `build` returns one [`TenantObjects`]; `apply` destructures it without `..`, so
//! a new kind of object cannot be forgotten there.

//!
//! Split by kind: `names.rs` (object names, URLs, the Ingress), `pod.rs` (the
//! runtime's and the CronJobs' pod spec), `backup.rs` (backup storage),
//! `meta.rs` (labels, owner, config hash); the assembly is here.

pub mod backup;
pub mod meta;
pub mod names;
pub mod network;
pub mod pod;
#[cfg(test)]
mod tests;

use std::collections::BTreeMap;
use truffles_crds::contract::{env, path};

use self::backup::backup_storage;
use self::meta::{config_hash, owner_reference, selector_labels};
use self::names::ingress;
use self::network::{NetworkSettings, network_policy};
use self::pod::pod_spec;
use crate::tenant::custody::Rotating;
use crate::tenant::validate::InvalidSpec;
use k8s_openapi::ByteString;
use k8s_openapi::api::apps::v1::{Deployment, DeploymentSpec, DeploymentStrategy};
use k8s_openapi::api::batch::v1::{CronJob, CronJobSpec, JobSpec, JobTemplateSpec};
use k8s_openapi::api::core::v1::{
    ConfigMap, PersistentVolumeClaim, PersistentVolumeClaimSpec, PodSpec, PodTemplateSpec, Secret,
    Service, ServicePort, ServiceSpec, VolumeResourceRequirements,
};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::api::resource::Quantity;
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{LabelSelector, ObjectMeta};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use truffles_crds::TrufflesClient;
use truffles_crds::client::{BackupStorage, TenantState, VectorBackend};

pub use meta::{ADMIN_PORT, RUNTIME_PORT};
pub use meta::{CLIENT_LABEL, CONFIG_HASH_ANNOTATION, labels};
pub use names::{Names, instagram_callback_url, public_url, webhook_url};

/// What the operator knows beyond the spec when it builds a tenant's objects.
#[derive(Clone, Debug)]
pub struct BuildInputs {
    /// Id of the client row in the platform database.
    pub client_id: String,
    /// `postgres://` URL of the platform database as the tenant's role.
    pub database_url: String,
    /// Secret path segment of the webhook URL (and the one before a rotation).
    pub webhook_secret: Rotating,
    /// Bearer of the runtime's admin API (and the one before a rotation).
    pub admin_token: Rotating,
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
    /// Who may reach the tenant's pods and where they may go.
    pub network: NetworkSettings,
}

impl BuildInputs {
    /// Fixed stand-in values, for rendering a tenant's objects without a
    /// platform database (the build's unit tests and the contract test).
    pub fn sample(database_url: &str) -> Self {
        Self {
            client_id: "5d1c".into(),
            database_url: database_url.into(),
            webhook_secret: Rotating {
                current: "s3cr3t".into(),
                previous: Some("old-s3cr3t".into()),
                previous_until: Some(1_900_000_000),
            },
            admin_token: Rotating {
                current: "adm1n".into(),
                ..Rotating::default()
            },
            pii_key: "ab".repeat(32),
            backup_key: "cd".repeat(32),
            redis_url: Some("redis://:pw@redis:6379".into()),
            default_image: "truffles-bot:1".into(),
            billing_suspended: false,
            network: NetworkSettings::default(),
        }
    }
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
    pub network_policy: NetworkPolicy,
}

/// Builds the desired objects. Fails only for specs the CRD schema cannot rule out.
pub fn build(tc: &TrufflesClient, inputs: &BuildInputs) -> Result<TenantObjects, InvalidSpec> {
    crate::tenant::validate::validate(tc)?;
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
        data: Some(runtime_config_data(tc, &inputs.network)?),
        ..ConfigMap::default()
    };
    let runtime_secret = Secret {
        metadata: meta(names.runtime()),
        type_: Some("Opaque".into()),
        data: Some(
            BTreeMap::from([
                (
                    env::DATABASE_URL.into(),
                    ByteString(inputs.database_url.clone().into_bytes()),
                ),
                (
                    env::PII_KEY.into(),
                    ByteString(inputs.pii_key.clone().into_bytes()),
                ),
                (
                    env::BACKUP_KEY.into(),
                    ByteString(inputs.backup_key.clone().into_bytes()),
                ),
            ])
            .into_iter()
            .chain(rotating(
                [
                    env::WEBHOOK_SECRET,
                    env::WEBHOOK_SECRET_PREVIOUS,
                    env::WEBHOOK_SECRET_PREVIOUS_UNTIL,
                ],
                &inputs.webhook_secret,
            ))
            .chain(rotating(
                [
                    env::ADMIN_TOKEN,
                    env::ADMIN_TOKEN_PREVIOUS,
                    env::ADMIN_TOKEN_PREVIOUS_UNTIL,
                ],
                &inputs.admin_token,
            ))
            .chain(
                inputs
                    .redis_url
                    .as_ref()
                    .map(|url| (env::REDIS_URL.into(), ByteString(url.clone().into_bytes()))),
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
                ByteString(webhook_url(tc, &inputs.webhook_secret.current).into_bytes()),
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
            // The Ingress routes to `http` only; `admin` is reached inside
            // the cluster, as the NetworkPolicy allows.
            ports: Some(vec![
                ServicePort {
                    name: Some("http".into()),
                    port: RUNTIME_PORT,
                    target_port: Some(IntOrString::String("http".into())),
                    ..ServicePort::default()
                },
                ServicePort {
                    name: Some("admin".into()),
                    port: ADMIN_PORT,
                    target_port: Some(IntOrString::String("admin".into())),
                    ..ServicePort::default()
                },
            ]),
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

    let network_policy = network_policy(&name, meta(names.bot()), &inputs.network);

    Ok(TenantObjects {
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
    })
}

/// A rotating credential's Secret keys: its value, and the one before the
/// last rotation with the time it stops being accepted.
fn rotating(
    [current, previous, until]: [&str; 3],
    value: &Rotating,
) -> impl Iterator<Item = (String, ByteString)> {
    let text = |key: &str, v: String| (key.to_owned(), ByteString(v.into_bytes()));
    std::iter::once(text(current, value.current.clone()))
        .chain(value.previous.clone().map(|v| text(previous, v)))
        .chain(value.previous_until.map(|t| text(until, t.to_string())))
}

fn runtime_config_data(
    tc: &TrufflesClient,
    network: &NetworkSettings,
) -> Result<BTreeMap<String, String>, InvalidSpec> {
    // The spec holds only references to Secrets, never their values.
    let spec_json = serde_json::to_string_pretty(&tc.spec)
        .map_err(|e| InvalidSpec(format!("spec does not serialize: {e}")))?;
    Ok(BTreeMap::from([
        (env::CLIENT_NAME.into(), tc.name_any()),
        (env::CONFIG_FILE.into(), path::CONFIG_FILE.into()),
        (env::LOG_FILTER.into(), tc.spec.runtime.log_level.clone()),
        (path::CONFIG_FILE_KEY.into(), spec_json),
    ])
    .into_iter()
    // Telegram's webhook for the managers' group and the CRMs' reply URL.
    .chain(public_url(tc).map(|u| (env::PUBLIC_URL.into(), u)))
    .chain((!network.fetch_allow_cidrs.is_empty()).then(|| {
        (
            env::FETCH_ALLOW_CIDRS.into(),
            network.fetch_allow_cidrs.join(","),
        )
    }))
    .collect())
}
