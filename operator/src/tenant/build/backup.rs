//! Where the backup CronJob writes.

use super::names::Names;
use k8s_openapi::api::core::v1::{
    EnvVar, EnvVarSource, PersistentVolumeClaimVolumeSource, SecretKeySelector, Volume, VolumeMount,
};
use kube::ResourceExt;
use truffles_crds::TrufflesClient;
use truffles_crds::client::BackupStorage;
use truffles_crds::contract::{env, path};

/// Where the backup job writes: its environment, and the volume for
/// Filesystem storage. S3 credentials stay in the client's Secret, read by
/// reference; `truffles-bot backup` hands the AWS_* variables to object_store.
pub fn backup_storage(tc: &TrufflesClient) -> (Vec<EnvVar>, Option<(Volume, VolumeMount)>) {
    const MOUNT: &str = path::BACKUP_DIR;
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
        env::BACKUP_RETENTION_DAYS,
        spec.retention_days.to_string(),
    )];
    match (spec.storage, &spec.s3) {
        (BackupStorage::S3, Some(s3)) => {
            let prefix = s3.prefix.as_deref().unwrap_or("").trim_matches('/');
            env.push(plain(
                env::BACKUP_URL,
                format!("s3://{}/{prefix}", s3.bucket),
            ));
            env.push(plain(env::AWS_REGION, s3.region.clone()));
            if let Some(endpoint) = &s3.endpoint {
                env.push(plain(env::AWS_ENDPOINT, endpoint.clone()));
                if endpoint.starts_with("http://") {
                    env.push(plain(env::AWS_ALLOW_HTTP, "true".into()));
                }
            }
            let creds = &s3.credentials_secret_ref.name;
            env.push(secret(env::AWS_ACCESS_KEY_ID, creds, "accessKeyId"));
            env.push(secret(env::AWS_SECRET_ACCESS_KEY, creds, "secretAccessKey"));
            (env, None)
        }
        _ => {
            env.push(plain(env::BACKUP_URL, format!("file://{MOUNT}")));
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
