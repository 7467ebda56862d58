//! Leader election over a coordination.k8s.io Lease (kube-lease-manager): several
//! operator replicas may run, only the Lease holder reconciles.

use std::future::Future;

use kube::Client;
use kube_lease_manager::{LeaseManagerBuilder, LeaseManagerError};
use tracing::{info, warn};

/// Name of the Lease the operator replicas compete for.
pub const LEASE_NAME: &str = "truffles-operator";

/// How the replicas share the Lease.
#[derive(Clone, Debug)]
pub struct Election {
    pub namespace: String,
    /// Unique per replica (the pod name).
    pub identity: String,
    /// Seconds a holder keeps the Lease without renewing it.
    pub lease_seconds: u64,
}

/// Why `run_while_leader` returned.
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("leader election: {0}")]
    Lease(#[from] LeaseManagerError),
    #[error("leadership lost: stopping so that only one replica reconciles")]
    Lost,
}

/// Waits until this replica holds the Lease, then runs `work` for as long as it
/// holds it. Losing the Lease ends the work and returns [`Error::Lost`]: the
/// process exits and Kubernetes restarts it as a follower.
pub async fn run_while_leader<W>(
    client: Client,
    election: &Election,
    work: W,
) -> Result<W::Output, Error>
where
    W: Future,
{
    let manager = LeaseManagerBuilder::new(client, LEASE_NAME)
        .with_namespace(&election.namespace)
        .with_identity(&election.identity)
        .with_duration(election.lease_seconds)
        .with_grace(election.lease_seconds.div_ceil(3).max(1))
        .with_field_manager(crate::tenant::FIELD_MANAGER)
        .build()
        .await?;
    let (mut leading, _task) = manager.watch().await;
    while !*leading.borrow_and_update() {
        leading.changed().await.map_err(|_| Error::Lost)?;
    }
    info!(identity = %election.identity, "leading: reconciling");
    tokio::select! {
        output = work => Ok(output),
        _ = async {
            // Returns when the Lease is lost or the manager stops.
            while leading.changed().await.is_ok() {
                if !*leading.borrow_and_update() {
                    break;
                }
            }
        } => {
            warn!(identity = %election.identity, "lost the Lease");
            Err(Error::Lost)
        }
    }
}
