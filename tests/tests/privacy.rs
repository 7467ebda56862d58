//! Personal data in the operational logs (SPEC "Security"): error rows keep
//! the customer's input for replay for 7 days, then the retention job strips it
//! and masks phone numbers. The application logs are checked in end_to_end.rs.

use anyhow::Result;
use serde_json::json;
use truffles_bot::audit::{ERROR_INPUT_RETENTION, anonymize_old_errors};
use truffles_tests::runtime::TenantRuntime;

#[tokio::test]
async fn old_error_rows_lose_the_customers_data() -> Result<()> {
    let rt = TenantRuntime::new("privacy", json!({})).await?;
    let input = json!({"raw": "{\"message\":\"Мой номер +7 701 570 55 55, привезите розы\",\"metadata\":{\"remoteJid\":\"77015705555@s.whatsapp.net\"}}"});
    for (age_days, message, input) in [
        (
            8,
            "ChatFlow refused 77015705555@s.whatsapp.net: invalid jid",
            Some(input.clone()),
        ),
        (8, "the LLM timed out", None),
        (
            2,
            "ChatFlow refused 77015705555@s.whatsapp.net: invalid jid",
            Some(input.clone()),
        ),
    ] {
        sqlx::query(
            "INSERT INTO error_logs (stage, level, error_type, message, input_data, created_at)
             VALUES ('send', 'warning', 'chatflow_error', $1, $2, now() - make_interval(days => $3))",
        )
        .bind(message)
        .bind(input)
        .bind(age_days)
        .execute(&rt.pool)
        .await?;
    }

    assert_eq!(
        anonymize_old_errors(&rt.pool, ERROR_INPUT_RETENTION).await?,
        1
    );
    let rows: Vec<(String, Option<serde_json::Value>, bool)> = sqlx::query_as(
        "SELECT message, input_data, created_at < now() - interval '7 days' FROM error_logs ORDER BY id",
    )
    .fetch_all(&rt.pool)
    .await?;
    let (old, _, _) = &rows[0];
    assert_eq!(old, "ChatFlow refused [phone]@s.whatsapp.net: invalid jid");
    assert!(rows[0].1.is_none(), "the old input is gone");
    assert_eq!(
        rows[1].0, "the LLM timed out",
        "nothing personal, nothing changed"
    );
    // A recent row keeps everything: it may still be replayed.
    assert!(rows[2].0.contains("77015705555") && rows[2].1.is_some());
    let everything: String =
        sqlx::query_scalar("SELECT string_agg(message || coalesce(input_data::text, ''), ' ') FROM error_logs WHERE created_at < now() - interval '7 days'")
            .fetch_one(&rt.pool)
            .await?;
    assert!(
        !everything.contains("7015705555") && !everything.contains("розы"),
        "{everything}"
    );
    // Idempotent: a second run finds nothing.
    assert_eq!(
        anonymize_old_errors(&rt.pool, ERROR_INPUT_RETENTION).await?,
        0
    );
    Ok(())
}
