//! Labels, owner references and the config hash every object carries.

use std::collections::BTreeMap;

use k8s_openapi::api::core::v1::{ConfigMap, Secret};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::OwnerReference;
use kube::Resource;
use sha2::{Digest, Sha256};
use truffles_crds::TrufflesClient;

/// Port of the runtime's public HTTP server (the Ingress's backend).
pub const RUNTIME_PORT: i32 = truffles_crds::contract::RUNTIME_PORT as i32;
/// Port of the runtime's admin API (never an Ingress backend).
pub const ADMIN_PORT: i32 = truffles_crds::contract::ADMIN_PORT as i32;
/// Label every object of a tenant carries; pruning lists by it.
pub const CLIENT_LABEL: &str = "truffles.kz/client";
/// Annotation with the hash of the runtime's configuration; a change rolls the pods.
pub const CONFIG_HASH_ANNOTATION: &str = "truffles.kz/config-hash";

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

pub fn selector_labels(name: &str) -> BTreeMap<String, String> {
    BTreeMap::from([
        ("app.kubernetes.io/name".into(), "truffles-bot".into()),
        ("app.kubernetes.io/instance".into(), name.into()),
    ])
}

pub fn owner_reference(tc: &TrufflesClient) -> Option<OwnerReference> {
    tc.controller_owner_ref(&())
}

/// Hash of what the runtime reads at start; it changes exactly when pods must restart.
pub fn config_hash(config: &ConfigMap, secret: &Secret) -> String {
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
