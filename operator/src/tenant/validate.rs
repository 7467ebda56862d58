//! Validate step: rules the CRD schema cannot express.

use kube::ResourceExt;
use truffles_crds::TrufflesClient;
use truffles_crds::client::VectorBackend;

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
    let rotations = super::custody::rotation_requests(tc.annotations());
    if let Some(message) = super::custody::unknown_rotation(&rotations) {
        return Err(InvalidSpec(message));
    }
    Ok(())
}
