//! Personal data in the operational logs (docs/architecture.md, "Product rules"): error rows keep
//! the customer's input for replay for 7 days, then the retention job strips it
//! and masks phone numbers. The application logs are checked in end_to_end.rs.
//! One person's export and erasure (GDPR, Kazakhstan's personal-data law).

use anyhow::{Context, Result};
use serde_json::json;
use truffles_bot::audit::{ERROR_INPUT_RETENTION, anonymize_old_errors, anonymize_old_inbox};
use truffles_tests::runtime::{
    ADMIN_TOKEN, TenantRuntime, WEBHOOK_SECRET, chatflow_text, price_list,
};

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

    // Received webhooks: handled ones older than 7 days lose the raw payload and
    // the sender; recent or unhandled ones keep them.
    let raw = json!({"message": "привезите розы", "metadata": {"remoteJid": "77015705555@s.whatsapp.net"}});
    for (id, age_days, status) in [
        ("OLD", 8, "done"),
        ("OLD-PENDING", 8, "pending"),
        ("NEW", 2, "done"),
    ] {
        sqlx::query(
            "INSERT INTO inbox (channel, message_id, payload, sender, status, received_at)
             VALUES ('whatsapp', $1, $2, '77015705555@s.whatsapp.net', $3, now() - make_interval(days => $4))",
        )
        .bind(id)
        .bind(&raw)
        .bind(status)
        .bind(age_days)
        .execute(&rt.pool)
        .await?;
    }
    assert_eq!(
        anonymize_old_inbox(&rt.pool, ERROR_INPUT_RETENTION).await?,
        1
    );
    let kept: Vec<(String, bool)> = sqlx::query_as(
        "SELECT message_id, payload::text LIKE '%7015705555%' OR sender <> '' FROM inbox ORDER BY message_id",
    )
    .fetch_all(&rt.pool)
    .await?;
    assert_eq!(
        kept,
        vec![
            ("NEW".to_owned(), true),
            ("OLD".to_owned(), false),
            ("OLD-PENDING".to_owned(), true)
        ]
    );
    assert_eq!(
        anonymize_old_inbox(&rt.pool, ERROR_INPUT_RETENTION).await?,
        0
    );
    Ok(())
}

const ERASED: &str = "77015550177";
const KEPT: &str = "77015550188";

/// Every row of every table of the tenant schema, as text.
async fn whole_schema(pool: &sqlx::PgPool) -> Result<String> {
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT table_name::text FROM information_schema.tables
         WHERE table_schema = current_schema() AND table_type = 'BASE TABLE' AND table_name <> '_sqlx_migrations'",
    )
    .fetch_all(pool)
    .await?;
    let mut all = String::new();
    for table in tables {
        let rows: Option<String> = sqlx::query_scalar(sqlx::AssertSqlSafe(format!(
            "SELECT string_agg(to_jsonb(t)::text, E'\\n') FROM \"{table}\" t"
        )))
        .fetch_one(pool)
        .await?;
        all.push_str(&rows.unwrap_or_default());
    }
    Ok(all)
}

/// Every value under the tenant's Redis prefix, as text.
async fn whole_redis(tenant: &str) -> Result<String> {
    use redis::AsyncCommands;
    let mut redis = truffles_tests::redis_connection().await?;
    let keys: Vec<String> = redis.keys(format!("truffles:{tenant}:*")).await?;
    let mut all = keys.join("\n");
    for key in keys {
        let kind: String = redis::cmd("TYPE").arg(&key).query_async(&mut redis).await?;
        let values: Vec<String> = match kind.as_str() {
            "list" => redis.lrange(&key, 0, -1).await?,
            "string" => vec![redis.get(&key).await?],
            _ => Vec::new(),
        };
        all.push_str(&values.join("\n"));
    }
    Ok(all)
}

#[tokio::test]
async fn one_person_is_exported_then_erased_and_nothing_of_them_remains() -> Result<()> {
    let rt = TenantRuntime::new("gdpr", json!({})).await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&running);
    let mut kept = chatflow_text("K-1", KEPT, "Добрый день, есть тюльпаны?");
    kept["metadata"]["sender"] = json!("Ержан");
    rt.post(&url, &kept).await?;
    rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", 1)
        .await?;
    for (n, text) in [
        (1, "Меня зовут Айгерим, сколько стоит букет из 25 роз?"),
        (2, "Позовите менеджера"),
    ] {
        rt.post(&url, &chatflow_text(&format!("E-{n}"), ERASED, text))
            .await?;
        rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", n + 1)
            .await?;
    }
    // An error row that kept the person's raw webhook.
    sqlx::query("INSERT INTO error_logs (stage, level, error_type, message, input_data) VALUES ('send', 'warning', 'chatflow_error', $1, $2)")
        .bind(format!("ChatFlow refused {ERASED}@s.whatsapp.net"))
        .bind(json!({"raw": format!("{{\"remoteJid\":\"{ERASED}@s.whatsapp.net\"}}")}))
        .execute(&rt.pool)
        .await?;
    assert!(
        whole_redis(&rt.name).await?.contains("Позовите менеджера"),
        "conversation memory is cached"
    );

    let admin = |request: &str| {
        format!(
            "http://{}/t/{}/admin/person/{request}",
            running.admin_addr, rt.name
        )
    };
    let call = |request: &str, bearer: &str, body: serde_json::Value| {
        rt.http
            .post(admin(request))
            .bearer_auth(bearer)
            .json(&body)
            .send()
    };
    // Refusals: a wrong token or the webhook secret (401), no phone, not a phone.
    for bearer in ["wrong", WEBHOOK_SECRET] {
        assert_eq!(
            call("erase", bearer, json!({"phone": ERASED}))
                .await?
                .status(),
            401
        );
    }
    assert_eq!(
        call("erase", ADMIN_TOKEN, json!({"number": ERASED}))
            .await?
            .status(),
        400
    );
    assert_eq!(
        call(
            "erase",
            ADMIN_TOKEN,
            json!({"phone": "robert'); DROP TABLE users;--"})
        )
        .await?
        .status(),
        400
    );

    // Export: theirs, all of it, and nobody else's.
    let export: serde_json::Value = call(
        "export",
        ADMIN_TOKEN,
        json!({"phone": "+7 (701) 555-01-77"}),
    )
    .await?
    .error_for_status()?
    .json()
    .await?;
    let customers = export["customers"].as_array().context("customers")?;
    assert_eq!(customers.len(), 1, "{export}");
    assert_eq!(customers[0]["phone"], ERASED);
    assert_eq!(customers[0]["address"], format!("{ERASED}@s.whatsapp.net"));
    let exported = export.to_string();
    assert!(exported.contains("Позовите менеджера") && exported.contains("Меня зовут Айгерим"));
    assert!(!exported.contains("тюльпаны") && !exported.contains(KEPT));
    assert!(
        !exported.contains("phone_hash"),
        "lookup hashes are not theirs to keep"
    );

    // Erase.
    let erased: serde_json::Value = call("erase", ADMIN_TOKEN, json!({"phone": ERASED}))
        .await?
        .error_for_status()?
        .json()
        .await?;
    assert_eq!(erased["erased"]["customers"], 1, "{erased}");
    assert!(erased["erased"]["messages"].as_u64() >= Some(4), "{erased}");
    assert_eq!(erased["erased"]["error_rows"], 1, "{erased}");
    assert_eq!(erased["erased"]["cache_cleared"], true);

    let schema = whole_schema(&rt.pool).await?;
    for trace in [ERASED, "Айгерим", "Позовите менеджера", "букет из 25 роз?"]
    {
        assert!(!schema.contains(trace), "{trace} is still in the database");
    }
    assert!(
        schema.contains("тюльпаны"),
        "the other customer is untouched"
    );
    let redis = whole_redis(&rt.name).await?;
    assert!(
        !redis.contains("Позовите менеджера") && !redis.contains("Айгерим"),
        "{redis}"
    );
    assert!(
        redis.contains("тюльпаны"),
        "the other customer's memory stays"
    );
    // Both requests audited, without the person's identity.
    let audits: Vec<serde_json::Value> =
        sqlx::query_scalar("SELECT details FROM audit_log WHERE action = 'gdpr' ORDER BY id")
            .fetch_all(&rt.pool)
            .await?;
    assert_eq!(audits.len(), 2);
    assert_eq!(audits[1]["request"], "erase");

    // An old webhook of theirs replayed after the erasure (Redis's dedup mark
    // gone with it) is a duplicate: the person is not recreated.
    let replay = chatflow_text(
        "E-1",
        ERASED,
        "Меня зовут Айгерим, сколько стоит букет из 25 роз?",
    );
    let (status, body) = rt.post(&url, &replay).await?;
    assert_eq!(
        (status, body["status"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    assert_eq!(
        rt.count("SELECT count(*) FROM users").await?,
        1,
        "only the kept customer"
    );

    // Idempotent, and the person writing again starts from nothing.
    let again: serde_json::Value = call("erase", ADMIN_TOKEN, json!({"phone": ERASED}))
        .await?
        .json()
        .await?;
    assert_eq!(again["erased"]["customers"], 0);
    Ok(())
}
