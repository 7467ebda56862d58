//! The TrufflesClient controller, one file per reconcile step (see
//! `reconcile.rs` for the pipeline and docs/architecture.md for the map):
//! `dereference` → `validate` → `database` and `vectors` (provision) →
//! `build/` (the desired objects, pure) → `apply` (and prune) → `status` and
//! `publish`; `retire` when the tenant goes.

pub mod applied;
pub mod apply;
pub mod build;
pub mod cache;
pub mod context;
pub mod custody;
pub mod database;
pub mod dereference;
pub mod error;
pub mod keys;
pub mod platform;
pub mod publish;
pub mod reconcile;
pub mod references;
pub mod retire;
pub mod status;
pub mod validate;
pub mod vectors;
pub mod webhooks;

pub use context::{Context, FIELD_MANAGER, FINALIZER, Settings};
pub use error::Error;
pub use reconcile::run;

/// A TrufflesClient `shop` in `shops`: a minimal spec with `spec`'s fields
/// over it (the steps' unit tests).
#[cfg(test)]
pub(crate) fn test_client(spec: serde_json::Value) -> truffles_crds::client::TrufflesClient {
    let mut doc = serde_json::json!({
        "apiVersion": "truffles.kz/v1alpha1", "kind": "TrufflesClient",
        "metadata": {"name": "shop", "namespace": "shops"},
        "spec": {"companyName": "Shop", "channels": {}, "handover": {"adapter": {"type": "whatsappWeb"}}}
    });
    if let (Some(s), Some(extra)) = (doc["spec"].as_object_mut(), spec.as_object()) {
        s.extend(extra.clone());
    }
    serde_json::from_value(doc).expect("a TrufflesClient")
}
