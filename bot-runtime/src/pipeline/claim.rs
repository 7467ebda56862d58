//! Claiming: a worker takes every due event of one customer whose burst has
//! gone quiet, serialized per tenant so two workers never hold the same sender.

use anyhow::Result;
use serde_json::Value;
use sqlx::types::chrono::{DateTime, Utc};
use sqlx::{PgConnection, Row};

use crate::channels::Channel;
use crate::runtime::Runtime;

/// One stored webhook event claimed for processing.
#[derive(Debug)]
pub(super) struct Claimed {
    pub(super) id: i64,
    pub(super) channel: Channel,
    pub(super) payload: Value,
    pub(super) attempts: i32,
    pub(super) received_at: DateTime<Utc>,
}

/// Claims every due event of one sender whose burst has been quiet for the
/// coalescing window. Claims are serialized per tenant (a transaction-scoped
/// advisory lock), so two workers or replicas never hold the same sender.
pub(super) async fn claim(rt: &Runtime) -> Result<Option<Vec<Claimed>>> {
    let tuning = &rt.config.tuning;
    let mut tx = rt.db.begin().await?;
    sqlx::query("SELECT pg_advisory_xact_lock(hashtext(current_schema() || '.inbox-claim'))")
        .execute(&mut *tx)
        .await?;
    // The oldest due event whose sender is claimable: no live lease on the
    // sender, and the sender's burst quiet for the window. Walked in id order
    // on `inbox_open` with the sender checks on `inbox_sender_pending`, so it
    // stops at the first claimable event instead of grouping the backlog.
    let rows = sqlx::query(
        "WITH candidate AS (
             SELECT i.sender FROM inbox i
             WHERE i.status IN ('pending', 'processing') AND i.next_attempt_at <= now()
               AND NOT EXISTS (SELECT 1 FROM inbox p WHERE p.sender = i.sender
                               AND p.status IN ('pending', 'processing')
                               AND ((p.status = 'processing' AND p.next_attempt_at > now())
                                    OR p.received_at > now() - make_interval(secs => $1)))
             ORDER BY i.id LIMIT 1)
         UPDATE inbox SET status = 'processing', attempts = attempts + 1,
                          next_attempt_at = now() + make_interval(secs => $2)
         WHERE sender = (SELECT sender FROM candidate)
           AND status IN ('pending', 'processing') AND next_attempt_at <= now()
         RETURNING id, channel, payload, attempts, received_at",
    )
    .bind(tuning.coalesce_window.as_secs_f64())
    .bind(tuning.lease.as_secs_f64())
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    if rows.is_empty() {
        return Ok(None);
    }
    let mut claimed = rows
        .into_iter()
        .map(|r| {
            let channel: String = r.try_get("channel")?;
            Ok(Claimed {
                id: r.try_get("id")?,
                // The table's CHECK admits only the three.
                channel: Channel::from_db(&channel).unwrap_or_default(),
                payload: r.try_get("payload")?,
                attempts: r.try_get("attempts")?,
                received_at: r.try_get("received_at")?,
            })
        })
        .collect::<sqlx::Result<Vec<_>>>()?;
    claimed.sort_by_key(|c| c.id);
    Ok(Some(claimed))
}

pub(super) async fn mark_done(tx: &mut PgConnection, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query(
        "UPDATE inbox SET status = 'done', processed_at = now(), last_error = NULL WHERE id = ANY($1)",
    )
    .bind(ids)
    .execute(&mut *tx)
    .await?;
    Ok(())
}
