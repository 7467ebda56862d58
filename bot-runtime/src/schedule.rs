//! The scheduler: the one task of a runtime that looks at the queues when
//! nothing woke them (`wake.rs` says why nothing polls), and the announcement
//! of new work to the other replicas.

use std::sync::Arc;
use std::time::Duration;

use crate::runtime::Runtime;
use crate::wake::{CHANNEL, Queue, look, next_wait, unit_random};

/// After a database error the scheduler tries again this soon.
const RETRY_AFTER_ERROR: Duration = Duration::from_secs(5);

/// While this replica's workers are all busy, other replicas are told at
/// most this often: once woken, a replica claims until nothing is due.
const ANNOUNCE_EVERY: Duration = Duration::from_millis(250);

/// Wakes `queue` here, and announces it to the other replicas when this one
/// cannot take it now (for the inbox: every worker busy). The announcement
/// is sent beside the caller (a webhook's ACK does not wait for Redis).
pub fn announce(rt: &Runtime, queue: Queue) {
    rt.wakes.wake(queue);
    if queue == Queue::Inbox
        && rt.wakes.saturated(rt.config.tuning.inbox_workers)
        && rt.wakes.may_announce(ANNOUNCE_EVERY)
    {
        let cache = rt.cache.clone();
        tokio::spawn(async move {
            // Best effort: the sweep finds it if Redis is down.
            if let Err(e) = cache.publish(CHANNEL, queue.as_str()).await {
                tracing::debug!(error = %e, "could not announce to the other replicas");
            }
        });
    }
}

/// The scheduler: looks once, wakes the queues with due rows, runs the
/// handover sweep while handovers are open, and sleeps until the next due
/// time, the sweep, or a wake of `schedule`.
pub async fn run_scheduler(rt: Arc<Runtime>) {
    let tuning = rt.config.tuning.clone();
    let mut last_handover_sweep: Option<tokio::time::Instant> = None;
    loop {
        // Subscribes once Redis is reachable (it may not have been at start).
        rt.cache.listen().await;
        let wait = match look(&rt.db).await {
            Ok(due) => {
                rt.probes.postgres_answered(true);
                rt.backlog
                    .observe(&rt.metrics, due.backlog, due.oldest_seconds);
                if due.inbox_now > 0 {
                    rt.wakes.wake(Queue::Inbox);
                }
                if due.outbox_now > 0 {
                    rt.wakes.wake(Queue::Outbox);
                }
                if due.managers_now > 0 {
                    rt.wakes.wake(Queue::Managers);
                }
                if due.open_handovers
                    && last_handover_sweep.is_none_or(|t| t.elapsed() >= tuning.handover_sweep)
                {
                    last_handover_sweep = Some(tokio::time::Instant::now());
                    if let Err(e) = crate::handover::notifier::sweep(&rt).await {
                        tracing::warn!(error = %format!("{e:#}"), "handover sweep");
                    }
                }
                next_wait(
                    &due,
                    tuning.jittered_sweep(unit_random()),
                    tuning.handover_sweep,
                )
            }
            Err(e) => {
                rt.probes.postgres_answered(false);
                tracing::warn!(error = %e, "could not look at the queues");
                RETRY_AFTER_ERROR.min(tuning.sweep)
            }
        };
        tokio::select! {
            () = tokio::time::sleep(wait) => {}
            () = rt.wakes.schedule.notified() => {}
        }
    }
}
