//! An idle runtime costs almost nothing: nothing polls (work wakes the
//! workers, the earliest retry sets a timer, another replica wakes this one
//! through Redis), the pool lets its connections go, and a full backlog is
//! refused with `Retry-After` instead of growing.

use std::time::Duration;

use anyhow::Result;
use serde_json::json;
use truffles_bot::config::Tuning;
use truffles_tests::runtime::{TenantRuntime, chatflow_text, price_list};

const WAIT: Duration = Duration::from_secs(30);
/// Longer than any test: a reply within it came from a wake, not the sweep.
const NO_SWEEP: Duration = Duration::from_secs(3600);

fn event_driven(tuning: Tuning) -> Tuning {
    Tuning {
        sweep: NO_SWEEP,
        handover_sweep: NO_SWEEP,
        ..tuning
    }
}

#[tokio::test]
async fn without_a_sweep_a_message_is_answered_and_a_failed_send_is_retried_on_its_timer()
-> Result<()> {
    let rt = TenantRuntime::new("idle-wake", json!({})).await?;
    let mut config = rt.config()?;
    config.tuning = event_driven(config.tuning);
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);
    // The first send fails: the retry is due after its backoff (2 s), and
    // only the scheduler's timer can wake the sender for it.
    rt.chatflow.fail_next(1);
    let (status, _) = rt
        .post(&url, &chatflow_text("IW-1", "77015700001", "Здравствуйте"))
        .await?;
    assert_eq!(status, 200);
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert_eq!(sent[0].msg_id, "IW-1");
    assert_eq!(rt.chatflow.calls(), 2, "one failed call, one retry");
    running.stop().await;
    Ok(())
}

#[tokio::test]
async fn another_replica_wakes_this_one_through_redis() -> Result<()> {
    let rt = TenantRuntime::new("idle-replica", json!({})).await?;
    let mut config = rt.config()?;
    config.tuning = event_driven(config.tuning);
    let running = rt.start(config, price_list()).await?;
    // What another replica stores: the event is in the inbox, nobody here
    // was told. (Stored through this runtime's own webhook path, the wake is
    // in-process; here it is the row alone.)
    let body = chatflow_text("IR-1", "77015700002", "Здравствуйте");
    sqlx::query(
        "INSERT INTO inbox (channel, message_id, payload, sender) VALUES ('whatsapp', 'IR-1', $1, 'another-replica')",
    )
    .bind(&body)
    .execute(&rt.pool)
    .await?;
    // The subscription is made at start; wait until Redis has it.
    let mut redis = truffles_tests::redis_connection().await?;
    let channel = format!("truffles:{}:wake", rt.name);
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let listeners: i64 = redis::cmd("PUBLISH")
            .arg(&channel)
            .arg("inbox")
            .query_async(&mut redis)
            .await?;
        if listeners == 1 {
            break;
        }
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "the runtime never subscribed to {channel}"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert_eq!(sent[0].msg_id, "IR-1");
    running.stop().await;
    Ok(())
}

#[tokio::test]
async fn a_full_backlog_is_refused_with_retry_after_and_counted() -> Result<()> {
    let rt = TenantRuntime::new("idle-full", json!({})).await?;
    let mut config = rt.config()?;
    config.tuning = Tuning {
        // The customer's burst never goes quiet within the test: nothing is
        // answered, so the backlog only grows.
        coalesce_window: NO_SWEEP,
        max_backlog: 2,
        max_backlog_age: Duration::from_secs(2),
        ..event_driven(config.tuning)
    };
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);
    let phone = "77015700003";
    for id in ["IF-1", "IF-2"] {
        let (status, body) = rt.post(&url, &chatflow_text(id, phone, "Алло")).await?;
        assert_eq!((status, body["status"].as_str()), (200, Some("accepted")));
    }
    // The count is at most a second old.
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let refused = rt
        .http
        .post(&url)
        .json(&chatflow_text("IF-3", phone, "Алло?"))
        .send()
        .await?;
    assert_eq!(refused.status().as_u16(), 503);
    assert_eq!(
        refused
            .headers()
            .get("retry-after")
            .and_then(|v| v.to_str().ok()),
        Some("30")
    );
    let body: serde_json::Value = refused.json().await?;
    assert!(
        body["reason"]
            .as_str()
            .is_some_and(|r| r.contains("2 unanswered")),
        "{body}"
    );
    // Not stored, and not marked a duplicate: the provider's retry counts.
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&rt.pool)
        .await?;
    assert_eq!(stored, 2);
    let metrics = rt.metrics(&running).await?;
    assert!(
        metrics.contains(&format!(
            "truffles_inbox_backlog_events{{tenant=\"{}\"}} 2",
            rt.name
        )),
        "{metrics}"
    );
    assert!(
        metrics.contains("outcome=\"backpressure\""),
        "the refusal is counted: {metrics}"
    );
    let alerts: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM error_logs WHERE error_type = 'backlog_full' AND level = 'critical'",
    )
    .fetch_one(&rt.pool)
    .await?;
    assert_eq!(
        alerts, 1,
        "recorded once when the backlog filled, not per refusal"
    );
    running.stop().await;
    Ok(())
}

#[tokio::test]
async fn an_idle_runtime_lets_its_database_connections_go() -> Result<()> {
    let rt = TenantRuntime::new("idle-pool", json!({})).await?;
    let mut config = rt.config()?;
    config.tuning = Tuning {
        db_idle_timeout: Duration::from_secs(1),
        ..event_driven(config.tuning)
    };
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);
    rt.post(&url, &chatflow_text("IP-1", "77015700004", "Здравствуйте"))
        .await?;
    rt.chatflow.wait_sent(1, WAIT).await?;
    let held = || async {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM pg_stat_activity
             WHERE application_name = 'truffles-bot' AND usename = current_user",
        )
        .fetch_one(&rt.pool)
        .await
    };
    let busy = held().await?;
    assert!(busy >= 1, "the turn used the pool ({busy})");
    let deadline = tokio::time::Instant::now() + WAIT;
    while held().await? > 0 {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "an idle runtime still holds {} connections",
            held().await?
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    running.stop().await;
    Ok(())
}
