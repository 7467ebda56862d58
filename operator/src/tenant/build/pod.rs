//! The pod spec of the runtime and of the CronJobs that run `truffles-bot`.

use super::meta::{ADMIN_PORT, RUNTIME_PORT};
use super::names::Names;
use crate::tenant::references::{drive_credentials, referenced_secret_keys, referenced_secrets};
use k8s_openapi::api::core::v1::{
    Capabilities, ConfigMapVolumeSource, Container, ContainerPort, EnvFromSource, EnvVar,
    EnvVarSource, HTTPGetAction, KeyToPath, PersistentVolumeClaimVolumeSource, PodSecurityContext,
    PodSpec, Probe, SeccompProfile, SecretEnvSource, SecretKeySelector, SecretVolumeSource,
    SecurityContext, Volume, VolumeMount,
};
use k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use kube::ResourceExt;
use truffles_crds::TrufflesClient;
use truffles_crds::client::VectorBackend;
use truffles_crds::contract::path;

pub fn pod_spec(tc: &TrufflesClient, image: &str, args: Vec<String>, serve: bool) -> PodSpec {
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
        mount_path: path::CONFIG_DIR.into(),
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
        mount_path: path::DATA_DIR.into(),
        ..VolumeMount::default()
    });
    // The root filesystem is read-only; temporary files go here.
    volumes.push(Volume {
        name: "tmp".into(),
        empty_dir: Some(Default::default()),
        ..Volume::default()
    });
    mounts.push(VolumeMount {
        name: "tmp".into(),
        mount_path: "/tmp".into(),
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
            mount_path: format!("{}/{}", path::KNOWLEDGE_DIR, source.name),
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
                    path: path::DRIVE_CREDENTIALS_FILE.into(),
                    mode: None,
                }]),
                ..SecretVolumeSource::default()
            }),
            ..Volume::default()
        });
        mounts.push(VolumeMount {
            name: volume,
            mount_path: format!("{}/{}/{source}", path::SECRETS_DIR, path::DRIVE_SECRETS),
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
            mount_path: format!("{}/{mount}", path::SECRETS_DIR),
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
                vec![
                    ContainerPort {
                        name: Some("http".into()),
                        container_port: RUNTIME_PORT,
                        ..ContainerPort::default()
                    },
                    ContainerPort {
                        name: Some("admin".into()),
                        container_port: ADMIN_PORT,
                        ..ContainerPort::default()
                    },
                ]
            }),
            readiness_probe: serve.then(|| probe("/readyz")),
            liveness_probe: serve.then(|| probe("/livez")),
            resources: tc.spec.runtime.resources.clone(),
            volume_mounts: Some(mounts),
            security_context: Some(container_security()),
            ..Container::default()
        }],
        volumes: Some(volumes),
        security_context: Some(pod_security()),
        // A tenant's pods never talk to the Kubernetes API.
        automount_service_account_token: Some(false),
        ..PodSpec::default()
    }
}

/// The image's user (see the Dockerfile): not root.
pub const RUNTIME_UID: i64 = 65532;

/// Pod Security `restricted`: non-root, the runtime's default seccomp profile,
/// and the volumes (the Edge shard, backups) writable by the runtime's group.
fn pod_security() -> PodSecurityContext {
    PodSecurityContext {
        run_as_non_root: Some(true),
        run_as_user: Some(RUNTIME_UID),
        run_as_group: Some(RUNTIME_UID),
        fs_group: Some(RUNTIME_UID),
        fs_group_change_policy: Some("OnRootMismatch".into()),
        seccomp_profile: Some(SeccompProfile {
            type_: "RuntimeDefault".into(),
            ..SeccompProfile::default()
        }),
        ..PodSecurityContext::default()
    }
}

fn container_security() -> SecurityContext {
    SecurityContext {
        allow_privilege_escalation: Some(false),
        capabilities: Some(Capabilities {
            drop: Some(vec!["ALL".into()]),
            ..Capabilities::default()
        }),
        read_only_root_filesystem: Some(true),
        run_as_non_root: Some(true),
        ..SecurityContext::default()
    }
}
