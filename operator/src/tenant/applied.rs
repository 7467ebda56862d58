//! What this process last applied, so a reconcile that wants nothing new
//! sends nothing. A server-side apply of an unchanged object is still a
//! request the API server decodes, merges and compares: at a thousand
//! tenants (ten objects each, two reconciles on creation) those no-op
//! applies were most of its work.
//!
//! An object is applied again when what the operator wants of it changed,
//! when the object changed since the operator applied it (as the watch of
//! owned objects sees it: its generation — its resource version for kinds
//! without one — labels, annotations, owners, deletion), when the watch
//! does not know it, and after a restart (nothing is recorded yet).

use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::sync::Mutex;

use futures::FutureExt;
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::batch::v1::CronJob;
use k8s_openapi::api::core::v1::{ConfigMap, PersistentVolumeClaim, Secret, Service};
use k8s_openapi::api::networking::v1::{Ingress, NetworkPolicy};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta;
use kube::Resource;

use super::build::CLIENT_LABEL;
use kube::core::PartialObjectMeta;
use kube::runtime::reflector::{ObjectRef, Store};

/// One applied object: what was wanted of it (a hash of the body sent) and
/// how the API server returned it (its [`fingerprint`]).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Record {
    pub wanted: u64,
    pub seen: u64,
}

/// `(namespace, tenant)` → `(kind, name)` → what was applied.
type Tenant = (String, String);
type Object = (&'static str, String);

#[derive(Default)]
pub struct Applied {
    records: Mutex<HashMap<Tenant, HashMap<Object, Record>>>,
}

/// The key of an object of a tenant.
pub struct Key<'a> {
    pub namespace: &'a str,
    pub tenant: &'a str,
    pub kind: &'static str,
    pub name: &'a str,
}

impl Applied {
    pub fn last(&self, key: &Key<'_>) -> Option<Record> {
        let records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .get(&(key.namespace.to_owned(), key.tenant.to_owned()))?
            .get(&(key.kind, key.name.to_owned()))
            .copied()
    }

    pub fn record(&self, key: &Key<'_>, record: Record) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records
            .entry((key.namespace.to_owned(), key.tenant.to_owned()))
            .or_default()
            .insert((key.kind, key.name.to_owned()), record);
    }

    /// Whether `meta` is the object of `kind` exactly as this process last
    /// applied it: its own write coming back through the watch, which the
    /// reconcile that wrote it already knows (not a trigger).
    pub fn is_own_write<K: Resource + 'static>(&self, kind: &'static str, obj: &K) -> bool {
        let meta = obj.meta();
        let tenant = meta.labels.as_ref().and_then(|l| l.get(CLIENT_LABEL));
        let (Some(namespace), Some(name), Some(tenant)) = (&meta.namespace, &meta.name, tenant)
        else {
            return false;
        };
        let key = Key {
            namespace,
            tenant,
            kind,
            name,
        };
        self.last(&key).is_some_and(|r| r.seen == seen(obj))
    }

    /// Forgets a tenant whose objects were deleted.
    pub fn forget(&self, namespace: &str, tenant: &str) {
        let mut records = self.records.lock().unwrap_or_else(|e| e.into_inner());
        records.remove(&(namespace.to_owned(), tenant.to_owned()));
    }
}

/// The tenants' objects as the controller's watches have them: metadata
/// only, but the Deployment whole (its status is the RuntimeReady condition).
pub struct Owned {
    pub deployments: Store<Deployment>,
    pub config_maps: Store<PartialObjectMeta<ConfigMap>>,
    pub secrets: Store<PartialObjectMeta<Secret>>,
    pub services: Store<PartialObjectMeta<Service>>,
    pub ingresses: Store<PartialObjectMeta<Ingress>>,
    pub cron_jobs: Store<PartialObjectMeta<CronJob>>,
    pub network_policies: Store<PartialObjectMeta<NetworkPolicy>>,
    pub volumes: Store<PartialObjectMeta<PersistentVolumeClaim>>,
}

impl Owned {
    /// The [`fingerprint`] of the object `kind/name` as the watch has it:
    /// `Some(None)` when it is not there, `None` when the watch cannot say
    /// (not listed yet, or a kind it does not watch).
    pub fn live(&self, kind: &str, ns: &str, name: &str) -> Option<Option<u64>> {
        match kind {
            "Deployment" => lookup(&self.deployments, ns, name),
            "ConfigMap" => lookup(&self.config_maps, ns, name),
            "Secret" => lookup(&self.secrets, ns, name),
            "Service" => lookup(&self.services, ns, name),
            "Ingress" => lookup(&self.ingresses, ns, name),
            "CronJob" => lookup(&self.cron_jobs, ns, name),
            "NetworkPolicy" => lookup(&self.network_policies, ns, name),
            "PersistentVolumeClaim" => lookup(&self.volumes, ns, name),
            _ => None,
        }
    }

    pub fn deployment(&self, ns: &str, name: &str) -> Option<Deployment> {
        let found = self.deployments.get(&ObjectRef::new(name).within(ns))?;
        Some(found.as_ref().clone())
    }
}

fn lookup<K>(store: &Store<K>, ns: &str, name: &str) -> Option<Option<u64>>
where
    K: Resource + Clone + 'static,
    K::DynamicType: Default + Eq + std::hash::Hash + Clone,
{
    // Never decided on a partial list.
    store.wait_until_ready().now_or_never()?.ok()?;
    Some(
        store
            .get(&ObjectRef::new(name).within(ns))
            .map(|o| seen(o.as_ref())),
    )
}

/// Whether an apply of `wanted` may be skipped: the same was applied last,
/// and the object the watch sees now is the one the API server returned.
pub fn unchanged(last: Option<Record>, wanted: u64, live: Option<u64>) -> bool {
    matches!((last, live), (Some(r), Some(live)) if r.wanted == wanted && r.seen == live)
}

/// What of an object's metadata tells that somebody changed it: the
/// generation (bumped by spec changes only, so a Deployment's or CronJob's
/// status updates do not count), or the resource version of kinds without
/// one (ConfigMaps, Secrets, Services: any write), and the labels,
/// annotations, owners and deletion, which no generation covers.
/// Annotations that the API server's controllers write
/// (`deployment.kubernetes.io/revision`) are left out.
pub fn fingerprint(meta: &ObjectMeta) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    match meta.generation {
        Some(generation) => generation.hash(&mut hasher),
        None => meta.resource_version.hash(&mut hasher),
    }
    meta.labels.hash(&mut hasher);
    if let Some(annotations) = &meta.annotations {
        for (k, v) in annotations {
            if !k.starts_with("deployment.kubernetes.io/") {
                (k, v).hash(&mut hasher);
            }
        }
    }
    for owner in meta.owner_references.iter().flatten() {
        owner.uid.hash(&mut hasher);
    }
    meta.deletion_timestamp.is_some().hash(&mut hasher);
    hasher.finish()
}

/// What of an object tells that it changed: the [`fingerprint`] of its
/// metadata, and for the Deployment its available replicas too (they are
/// the RuntimeReady condition, so a change is a trigger; it costs one
/// no-op apply of the Deployment).
pub fn seen<K: Resource + 'static>(obj: &K) -> u64 {
    let available = (obj as &dyn std::any::Any)
        .downcast_ref::<Deployment>()
        .and_then(|d| d.status.as_ref()?.available_replicas);
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    (fingerprint(obj.meta()), available).hash(&mut hasher);
    hasher.finish()
}

/// A hash of the body sent to the API server.
pub fn wanted(body: &serde_json::Value) -> u64 {
    let mut hasher = std::collections::hash_map::DefaultHasher::new();
    // The same desired object serializes to the same text.
    body.to_string().hash(&mut hasher);
    hasher.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta(generation: Option<i64>, version: &str) -> ObjectMeta {
        ObjectMeta {
            name: Some("bot-shop".into()),
            generation,
            resource_version: Some(version.into()),
            ..Default::default()
        }
    }

    #[test]
    fn an_object_is_applied_again_unless_both_what_is_wanted_and_the_object_are_unchanged() {
        let seen = fingerprint(&meta(None, "7"));
        let last = Some(Record { wanted: 1, seen });
        assert!(unchanged(last, 1, Some(seen)));
        // The spec asks for something else.
        assert!(!unchanged(last, 2, Some(seen)));
        // Somebody edited the object (a ConfigMap: any write is a new version).
        assert!(!unchanged(last, 1, Some(fingerprint(&meta(None, "8")))));
        // The watch does not have it (deleted, or not listed yet).
        assert!(!unchanged(last, 1, None));
        // Nothing applied by this process (a restart).
        assert!(!unchanged(None, 1, Some(seen)));
    }

    #[test]
    fn a_status_write_is_not_a_change_of_a_kind_with_a_generation_but_a_label_is() {
        let applied = meta(Some(3), "100");
        let status_update = meta(Some(3), "101");
        assert_eq!(fingerprint(&applied), fingerprint(&status_update));
        let rolled = ObjectMeta {
            annotations: Some(
                [(
                    "deployment.kubernetes.io/revision".to_owned(),
                    "2".to_owned(),
                )]
                .into(),
            ),
            ..status_update.clone()
        };
        assert_eq!(fingerprint(&applied), fingerprint(&rolled));
        let relabelled = ObjectMeta {
            labels: Some([("app".to_owned(), "other".to_owned())].into()),
            ..status_update.clone()
        };
        assert_ne!(fingerprint(&applied), fingerprint(&relabelled));
        let spec_edit = meta(Some(4), "102");
        assert_ne!(fingerprint(&applied), fingerprint(&spec_edit));
    }

    #[test]
    fn only_the_object_as_it_was_applied_is_an_own_write() {
        let applied = Applied::default();
        let mine = ObjectMeta {
            namespace: Some("shops".into()),
            labels: Some([(CLIENT_LABEL.to_owned(), "shop".to_owned())].into()),
            ..meta(None, "7")
        };
        assert!(
            !applied.is_own_write(
                "ConfigMap",
                &ConfigMap {
                    metadata: mine.clone(),
                    ..Default::default()
                }
            ),
            "nothing applied yet"
        );
        let key = Key {
            namespace: "shops",
            tenant: "shop",
            kind: "ConfigMap",
            name: "bot-shop",
        };
        let mine = ConfigMap {
            metadata: mine,
            ..Default::default()
        };
        applied.record(
            &key,
            Record {
                wanted: 1,
                seen: seen(&mine),
            },
        );
        assert!(applied.is_own_write("ConfigMap", &mine));
        assert!(!applied.is_own_write("Secret", &mine));
        let mut edited = mine.clone();
        edited.metadata.resource_version = Some("8".into());
        assert!(!applied.is_own_write("ConfigMap", &edited));
        // A Deployment's status is its own, but its available replicas count.
        let deployment = Deployment {
            metadata: ObjectMeta {
                name: Some("bot-shop".into()),
                ..mine.metadata.clone()
            },
            ..Default::default()
        };
        let key = Key {
            kind: "Deployment",
            ..key
        };
        applied.record(
            &key,
            Record {
                wanted: 1,
                seen: seen(&deployment),
            },
        );
        assert!(applied.is_own_write("Deployment", &deployment));
        let mut available = deployment.clone();
        available.status = Some(k8s_openapi::api::apps::v1::DeploymentStatus {
            available_replicas: Some(1),
            ..Default::default()
        });
        assert!(!applied.is_own_write("Deployment", &available));
    }

    #[test]
    fn records_are_per_object_and_forgotten_per_tenant() {
        let applied = Applied::default();
        let key = |tenant, name| Key {
            namespace: "shops",
            tenant,
            kind: "ConfigMap",
            name,
        };
        let r = Record { wanted: 1, seen: 2 };
        applied.record(&key("a", "bot-a"), r);
        applied.record(&key("b", "bot-b"), r);
        assert_eq!(applied.last(&key("a", "bot-a")), Some(r));
        assert_eq!(applied.last(&key("a", "other")), None);
        applied.forget("shops", "a");
        assert_eq!(applied.last(&key("a", "bot-a")), None);
        assert_eq!(applied.last(&key("b", "bot-b")), Some(r));
    }
}
