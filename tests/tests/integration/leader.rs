//! Leader election against the real API server: of two replicas only one works;
//! when the leader goes away, the other takes over once the Lease expires.

use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::Result;
use truffles_operator::leader::{Election, run_while_leader};
use truffles_tests::{TestNamespace, kube_client};

/// Stands for the controllers: counts itself as working and never returns.
async fn work(active: Arc<AtomicUsize>, me: usize, leader: Arc<AtomicUsize>) {
    active.fetch_add(1, Ordering::SeqCst);
    leader.store(me, Ordering::SeqCst);
    std::future::pending::<()>().await;
}

async fn wait_until(what: &str, check: impl Fn() -> bool) -> Result<()> {
    for _ in 0..300 {
        if check() {
            return Ok(());
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    anyhow::bail!("timed out waiting for {what}")
}

#[tokio::test]
async fn only_the_lease_holder_reconciles_and_a_follower_takes_over() -> Result<()> {
    let client = kube_client().await?;
    let ns = TestNamespace::create(&client, "leader").await?;
    let active = Arc::new(AtomicUsize::new(0));
    let leader = Arc::new(AtomicUsize::new(0));
    let replica = |me: usize| {
        let election = Election {
            namespace: ns.name.clone(),
            identity: format!("replica-{me}"),
            lease_seconds: 3,
        };
        let (client, active, leader) = (client.clone(), active.clone(), leader.clone());
        tokio::spawn(
            async move { run_while_leader(client, &election, work(active, me, leader)).await },
        )
    };

    let first = replica(1);
    wait_until("replica 1 leads", || leader.load(Ordering::SeqCst) == 1).await?;
    let second = replica(2);
    // Well past the Lease duration: the follower must still be waiting.
    tokio::time::sleep(Duration::from_secs(6)).await;
    assert_eq!(
        active.load(Ordering::SeqCst),
        1,
        "two replicas worked at once"
    );
    assert_eq!(leader.load(Ordering::SeqCst), 1);

    // The leader dies without releasing; the follower takes over after expiry.
    first.abort();
    wait_until("replica 2 takes over", || {
        leader.load(Ordering::SeqCst) == 2
    })
    .await?;
    assert_eq!(active.load(Ordering::SeqCst), 2);
    second.abort();
    ns.delete().await
}
