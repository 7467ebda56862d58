//! The inbox workers: claim, process, and on failure retry with backoff or
//! give up with the apology (the last step of the fallback chain).

use std::sync::Arc;

use serde_json::json;
use tracing::{Instrument, info_span};

use super::claim::{Claimed, claim};
use super::commit::recipient;
use super::respond::default_language;
use super::store::{conversation, upsert_user};
use super::turn::handle;
use crate::audit::Level;
use crate::channels::{self, Inbound, Outgoing};
use crate::decide::{self, Trigger};
use crate::handover;
use crate::outbox;
use crate::runtime::Runtime;
use crate::texts::{Phrase, phrase};

/// One inbox worker: claims while there is work, then waits to be woken (by
/// the gateway, another replica, a peer, or the scheduler's timer).
pub async fn run_worker(rt: Arc<Runtime>, worker: usize) {
    let tuning = rt.config.tuning.clone();
    loop {
        // Woken first: at start the scheduler's first look wakes a worker when
        // events are due, so a thousand runtimes starting together do not
        // each open a connection per worker.
        rt.wakes.inbox.notified().await;
        // Give the customer's burst the window to complete.
        tokio::time::sleep(tuning.coalesce_window).await;
        // Then claim until nothing is due.
        loop {
            match claim(&rt).await {
                Ok(Some(rows)) => {
                    // More may be waiting: let a peer look while this one works.
                    rt.wakes.inbox.notify_one();
                    let _busy = rt.wakes.turn();
                    process(&rt, rows).await;
                }
                Ok(None) => break,
                Err(e) => {
                    // The scheduler's next look (soon after a database error) wakes us.
                    tracing::warn!(worker, error = %e, "could not claim inbox events");
                    break;
                }
            }
        }
    }
}

pub(super) async fn process(rt: &Runtime, rows: Vec<Claimed>) {
    let last_id = rows
        .last()
        .and_then(|r| channels::parse(r.channel, &r.payload).ok())
        .map(|m| m.message_id);
    let span = info_span!("turn", tenant = %rt.config.client_name, message_id = last_id.as_deref().unwrap_or(""));
    async {
        if let Err(e) = handle(rt, &rows).await {
            fail(rt, &rows, &e).await;
        }
    }
    .instrument(span)
    .await
}

/// Puts a failed turn back with backoff, or gives up after the last attempt:
/// recorded with its input for replay, and the customer gets the apology.
pub(super) async fn fail(rt: &Runtime, rows: &[Claimed], error: &anyhow::Error) {
    let attempts = rows.iter().map(|r| r.attempts).max().unwrap_or(1);
    let ids: Vec<i64> = rows.iter().map(|r| r.id).collect();
    let give_up = attempts >= rt.config.tuning.max_inbox_attempts;
    let message = format!("{error:#}");
    tracing::error!(attempts, give_up, error = %message, "turn failed");
    let backoff = outbox::backoff_seconds(attempts);
    let updated = sqlx::query(
        "UPDATE inbox SET status = CASE WHEN $2 THEN 'failed' ELSE 'pending' END,
                          next_attempt_at = now() + make_interval(secs => $3), last_error = $4
         WHERE id = ANY($1)",
    )
    .bind(&ids)
    .bind(give_up)
    .bind(backoff)
    .bind(&message)
    .execute(&rt.db)
    .await;
    match updated {
        // The retry's time may be the earliest now.
        Ok(_) => rt.wakes.schedule.notify_one(),
        // The lease runs out and the turn is retried anyway.
        Err(e) => tracing::error!(error = %e, "could not record the failure"),
    }
    let input = json!(rows.iter().map(|r| &r.payload).collect::<Vec<_>>());
    let level = if give_up {
        Level::Critical
    } else {
        Level::Warning
    };
    rt.report("pipeline", level, "turn_failed", &message, Some(input))
        .await;
    if give_up
        && let Some(last) = rows
            .last()
            .and_then(|r| channels::parse(r.channel, &r.payload).ok())
    {
        apologize(rt, &last).await;
    }
}

/// The last step of the fallback chain when a turn cannot be processed at all.
/// The apology promises a manager, so one is told: the apology and a handover
/// (trigger `error`) go in one transaction. When even that fails (the database
/// is what broke), the apology alone is tried.
pub(super) async fn apologize(rt: &Runtime, last: &Inbound) {
    let language = last
        .text
        .as_deref()
        .and_then(decide::detect_language)
        .unwrap_or_else(|| default_language(rt));
    let apology = Outgoing::Text {
        text: phrase(Phrase::Apology, language).into(),
    };
    let with_handover = async {
        let mut tx = rt.db.begin().await?;
        let (user_id, _) = upsert_user(&mut tx, rt, last).await?;
        let conv = conversation(&mut tx, rt, user_id, last.channel).await?;
        outbox::queue(
            &mut *tx,
            &rt.pii,
            Some(conv.id),
            None,
            recipient(last),
            &apology,
            &last.message_id,
        )
        .await?;
        let request = handover::Request {
            conversation_id: conv.id,
            trigger: Trigger::Error,
            value: "turn_failed",
            context_summary: last.text.clone().unwrap_or_default(),
            adapter: rt.config.spec.handover.adapter.adapter_type,
            language: language.code(),
        };
        let opened = handover::open(&mut tx, &request).await?;
        tx.commit().await?;
        anyhow::Ok(opened)
    };
    match with_handover.await {
        Ok(opened) => {
            if opened {
                rt.metrics.handover(Trigger::Error.as_str());
            }
            rt.wakes.outbox.notify_one();
            rt.wakes.managers.notify_one();
            return;
        }
        Err(e) => {
            tracing::error!(error = %format!("{e:#}"), "could not open a handover with the apology")
        }
    }
    let queued = outbox::queue(
        &rt.db,
        &rt.pii,
        None,
        None,
        recipient(last),
        &apology,
        &last.message_id,
    )
    .await;
    match queued {
        Ok(()) => rt.wakes.outbox.notify_one(),
        Err(e) => tracing::error!(error = %e, "could not queue the apology"),
    }
}
