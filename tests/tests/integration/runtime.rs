//! The bot runtime end to end: real PostgreSQL and Redis, fake ChatFlow and
//! LLM servers that check the documented request shapes.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use truffles_bot::pii::Pii;
use truffles_tests::runtime::{PII_KEY, TenantRuntime, WEBHOOK_SECRET, chatflow_text, price_list};

const WAIT: Duration = Duration::from_secs(30);
const PHONE: &str = "77015705555";

#[tokio::test]
async fn a_conversation_from_greeting_to_a_manager() -> Result<()> {
    let rt = TenantRuntime::new("flowers", json!({})).await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&running);

    // ChatFlow's UI probes the URL first.
    let probe = rt.http.get(&url).send().await?;
    assert_eq!(probe.status().as_u16(), 200);

    let (status, body) = rt
        .post(&url, &chatflow_text("MSG-1", PHONE, "Здравствуйте!"))
        .await?;
    assert_eq!((status, body["status"].as_str()), (200, Some("accepted")));
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert_eq!(sent[0].jid, format!("{PHONE}@s.whatsapp.net"));
    assert_eq!(
        sent[0].msg_id, "MSG-1",
        "the inbound id is the idempotency key"
    );
    assert!(sent[0].msg.contains("Здравствуйте"), "{:?}", sent[0]);
    assert!(
        sent[0].msg.starts_with("[gpt-primary]"),
        "the primary model answered: {:?}",
        sent[0]
    );

    rt.post(
        &url,
        &chatflow_text("MSG-2", PHONE, "Сколько стоит букет из 25 роз?"),
    )
    .await?;
    let sent = rt.chatflow.wait_sent(2, WAIT).await?;
    assert!(
        sent[1].msg.contains("18 000 тенге"),
        "answered from the knowledge base: {:?}",
        sent[1]
    );

    rt.post(
        &url,
        &chatflow_text("MSG-3", PHONE, "Позовите менеджера, пожалуйста"),
    )
    .await?;
    let sent = rt.chatflow.wait_sent(3, WAIT).await?;
    assert!(sent[2].msg.contains("менеджер"), "{:?}", sent[2]);
    let (trigger, value, status, context): (String, String, String, String) = sqlx::query_as(
        "SELECT trigger_type, trigger_value, status, context_summary FROM handovers",
    )
    .fetch_one(&rt.pool)
    .await?;
    assert_eq!((trigger.as_str(), value.as_str()), ("keyword", "менеджер"));
    assert_eq!(status, "notified", "whatsappWeb needs no notification");
    assert!(
        context.contains("25 роз"),
        "the manager sees the conversation: {context}"
    );

    // A human is on it: the bot stores the message and stays silent.
    rt.post(&url, &chatflow_text("MSG-4", PHONE, "Алло, вы тут?"))
        .await?;
    rt.wait_count("SELECT count(*) FROM inbox WHERE status = 'done'", 4)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(
        rt.chatflow.sent().len(),
        3,
        "no bot reply while a human is active"
    );
    assert_eq!(
        rt.count("SELECT count(*) FROM messages WHERE role = 'user'")
            .await?,
        4
    );
    assert_eq!(
        rt.count("SELECT count(*) FROM conversations WHERE status = 'handover'")
            .await?,
        1
    );

    // The audit trail reconstructs it; no phone number in clear anywhere.
    rt.wait_count(
        "SELECT count(*) FROM audit_log WHERE action = 'message_out'",
        3,
    )
    .await?;
    assert_eq!(
        rt.count("SELECT count(*) FROM audit_log WHERE action = 'message_in'")
            .await?,
        4
    );
    assert_eq!(
        rt.count("SELECT count(*) FROM audit_log WHERE action = 'handover'")
            .await?,
        1
    );
    let (jid, phone_hash, sealed, language): (String, String, Vec<u8>, String) =
        sqlx::query_as("SELECT remote_jid, phone_hash, phone_encrypted, language FROM users")
            .fetch_one(&rt.pool)
            .await?;
    assert!(!jid.contains(PHONE) && !phone_hash.contains(PHONE));
    assert_eq!(Pii::new(&PII_KEY).decrypt(&sealed)?, PHONE);
    assert_eq!(language, "ru");
    assert_eq!(
        rt.count(&format!(
            "SELECT count(*) FROM outbox WHERE recipient LIKE '%{PHONE}%'"
        ))
        .await?,
        0
    );

    let metrics = rt.metrics(&running).await?;
    for needle in [
        "truffles_messages_total{tenant=",
        "truffles_rag_hits_total",
        "truffles_handovers_total",
        "truffles_response_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "{needle} in {metrics}");
    }
    let ready = rt
        .http
        .get(format!("http://{}/readyz", running.addr))
        .send()
        .await?;
    assert_eq!(ready.status().as_u16(), 200);
    let ready: Value = ready.json().await?;
    assert_eq!(ready["postgres"], "ok");
    assert_eq!(ready["redis"], "ok");
    assert_eq!(ready["chatflow"], "ok");
    Ok(())
}

#[tokio::test]
async fn duplicate_deliveries_get_exactly_one_reply() -> Result<()> {
    let rt = TenantRuntime::new("dups", json!({})).await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&running);
    let body = chatflow_text("DUP-1", PHONE, "Здравствуйте");
    let posts = (0..5).map(|_| rt.post(&url, &body));
    let results = futures::future::try_join_all(posts).await?;
    let accepted = results
        .iter()
        .filter(|(_, b)| b["status"] == "accepted")
        .count();
    let duplicates = results
        .iter()
        .filter(|(_, b)| b["status"] == "duplicate")
        .count();
    assert_eq!((accepted, duplicates), (1, 4), "{results:?}");
    rt.chatflow.wait_sent(1, WAIT).await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rt.chatflow.sent().len(), 1);
    Ok(())
}

#[tokio::test]
async fn a_runtime_killed_between_ack_and_reply_loses_nothing() -> Result<()> {
    let rt = TenantRuntime::new("crash", json!({})).await?;
    rt.llm.set_hang(true);
    let first = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&first);
    let (status, _) = rt
        .post(&url, &chatflow_text("CRASH-1", PHONE, "Здравствуйте"))
        .await?;
    assert_eq!(status, 200);
    // The worker has claimed the event and waits for the LLM …
    rt.wait_count("SELECT count(*) FROM inbox WHERE status = 'processing'", 1)
        .await?;
    // … when the pod dies.
    drop(first);
    rt.llm.set_hang(false);
    assert!(rt.chatflow.sent().is_empty());

    let second = rt.start(rt.config()?, price_list()).await?;
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert_eq!(sent[0].msg_id, "CRASH-1");
    rt.wait_count("SELECT count(*) FROM inbox WHERE status = 'done'", 1)
        .await?;
    tokio::time::sleep(Duration::from_millis(800)).await;
    assert_eq!(rt.chatflow.sent().len(), 1, "answered exactly once");
    let attempts = rt.count("SELECT max(attempts)::int8 FROM inbox").await?;
    assert_eq!(attempts, 2, "claimed again after the lease ran out");
    drop(second);
    Ok(())
}

#[tokio::test]
async fn a_failed_send_is_retried_with_the_same_idempotency_key() -> Result<()> {
    let rt = TenantRuntime::new("retry", json!({})).await?;
    rt.chatflow.fail_next(2);
    let running = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&running);
    rt.post(&url, &chatflow_text("RETRY-1", PHONE, "Здравствуйте"))
        .await?;
    // Backoff 2 s then 4 s.
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert_eq!(sent[0].msg_id, "RETRY-1");
    assert_eq!(rt.chatflow.calls(), 3);
    // The row is marked after ChatFlow's answer: wait for it, do not race it.
    rt.wait_count(
        "SELECT count(*) FROM outbox WHERE status = 'sent' AND attempts = 3",
        1,
    )
    .await?;
    let (attempts, status): (i32, String) = sqlx::query_as("SELECT attempts, status FROM outbox")
        .fetch_one(&rt.pool)
        .await?;
    assert_eq!((attempts, status.as_str()), (3, "sent"));
    assert_eq!(
        rt.count(
            "SELECT count(*) FROM error_logs WHERE stage = 'send' AND error_type = 'send_failed'"
        )
        .await?,
        2
    );
    Ok(())
}

#[tokio::test]
async fn llm_outage_walks_the_fallback_chain() -> Result<()> {
    let rt = TenantRuntime::new("llmdown", json!({})).await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&running);

    // Primary down: the fallback model answers.
    rt.llm.set_down("gpt-primary", true);
    rt.post(&url, &chatflow_text("LLM-1", PHONE, "Здравствуйте"))
        .await?;
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert!(sent[0].msg.starts_with("[gpt-fallback]"), "{:?}", sent[0]);

    // Both down: the tenant's static text, and a manager takes over.
    rt.llm.set_down("gpt-fallback", true);
    rt.post(
        &url,
        &chatflow_text("LLM-2", "77011112233", "Сколько стоит букет из 25 роз?"),
    )
    .await?;
    let sent = rt.chatflow.wait_sent(2, WAIT).await?;
    assert_eq!(
        sent[1].msg,
        "Извините, технические проблемы. Менеджер свяжется с вами."
    );
    let trigger: String = sqlx::query_scalar("SELECT trigger_type FROM handovers")
        .fetch_one(&rt.pool)
        .await?;
    assert_eq!(trigger, "error");
    assert!(
        rt.count("SELECT count(*) FROM error_logs WHERE level = 'critical' AND error_type = 'llm_unavailable'").await? >= 1
    );

    // Three failures opened the primary's breaker: it is not even called now.
    let before = rt
        .llm
        .calls()
        .iter()
        .filter(|m| *m == "gpt-primary")
        .count();
    rt.post(&url, &chatflow_text("LLM-3", "77019998877", "Здравствуйте"))
        .await?;
    rt.chatflow.wait_sent(3, WAIT).await?;
    let after = rt
        .llm
        .calls()
        .iter()
        .filter(|m| *m == "gpt-primary")
        .count();
    assert_eq!(before, 3, "{:?}", rt.llm.calls());
    assert_eq!(
        after,
        before,
        "an open breaker skips the model: {:?}",
        rt.llm.calls()
    );
    Ok(())
}

#[tokio::test]
async fn with_redis_down_it_still_answers_exactly_once() -> Result<()> {
    let rt =
        TenantRuntime::new("noredis", json!({"runtime": {"userRateLimitPerMinute": 3}})).await?;
    let dead = truffles_tests::free_port()?;
    let mut config = rt.config()?;
    config.redis_url = Some(format!("redis://127.0.0.1:{dead}"));
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);
    let body = chatflow_text("NR-1", PHONE, "Здравствуйте");
    let (_, first) = rt.post(&url, &body).await?;
    let (_, second) = rt.post(&url, &body).await?;
    assert_eq!(first["status"], "accepted");
    assert_eq!(
        second["status"], "duplicate",
        "PostgreSQL's unique id deduplicates"
    );
    rt.chatflow.wait_sent(1, WAIT).await?;
    // Memory comes from PostgreSQL: the second turn sees the first.
    rt.post(
        &url,
        &chatflow_text("NR-2", PHONE, "Сколько стоит букет из 25 роз?"),
    )
    .await?;
    let sent = rt.chatflow.wait_sent(2, WAIT).await?;
    assert!(sent[1].msg.contains("18 000"), "{sent:?}");
    let ready: Value = rt
        .http
        .get(format!("http://{}/readyz", running.addr))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(ready["redis"], "down");
    assert_eq!(ready["postgres"], "ok");
    // Limits still hold, counted in the process: the customer's 4th request.
    let (status, _) = rt
        .post(&url, &chatflow_text("NR-3", PHONE, "ещё вопрос"))
        .await?;
    assert_eq!(status, 429);
    Ok(())
}

#[tokio::test]
async fn malformed_and_hostile_webhooks_are_refused_or_logged_never_fatal() -> Result<()> {
    let rt =
        TenantRuntime::new("hostile", json!({"runtime": {"userRateLimitPerMinute": 3}})).await?;
    let mut config = rt.config()?;
    config.tuning.max_body_bytes = 64 * 1024;
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);

    // Wrong secret or tenant: the same 404 as an unknown path.
    let wrong = format!(
        "http://{}/t/{}/webhook/{}",
        running.addr,
        rt.name,
        "0".repeat(WEBHOOK_SECRET.len())
    );
    assert_eq!(
        rt.post(&wrong, &chatflow_text("X", PHONE, "hi")).await?.0,
        404
    );
    let other = format!(
        "http://{}/t/other-shop/webhook/{WEBHOOK_SECRET}",
        running.addr
    );
    assert_eq!(
        rt.post(&other, &chatflow_text("X", PHONE, "hi")).await?.0,
        404
    );
    // Every other route under another tenant's name is the same 404, before
    // any channel's own check (the gateway's tenant middleware).
    for path in [
        "telegram".to_owned(),
        "instagram".to_owned(),
        "handover/telegram".to_owned(),
        format!("handover/{}/reply", uuid::Uuid::new_v4()),
        "admin/knowledge/sync".to_owned(),
    ] {
        let url = format!("http://{}/t/other-shop/{path}", running.addr);
        assert_eq!(rt.post(&url, &json!({})).await?.0, 404, "{path}");
    }

    // Not JSON, invalid UTF-8: 400 with a reason, kept for replay.
    let (status, body) = rt.post_raw(&url, b"{\"message\": \"hi\"".to_vec()).await?;
    assert_eq!(status, 400);
    assert!(
        body["error"]
            .as_str()
            .is_some_and(|e| e.contains("not JSON")),
        "{body}"
    );
    assert_eq!(
        rt.post_raw(&url, vec![0xff, 0xfe, b'{', b'}']).await?.0,
        400
    );
    assert_eq!(
        rt.count("SELECT count(*) FROM error_logs WHERE error_type = 'malformed_json' AND input_data ? 'raw'").await?,
        2
    );

    // Valid JSON that is no message: 200 (ChatFlow must not retry), logged.
    for body in [
        json!({"messageType": "text", "message": 42, "metadata": {"messageId": 7, "remoteJid": ["x"]}}),
        json!({"message": "", "metadata": {"messageId": "E-1", "remoteJid": format!("{PHONE}@s.whatsapp.net")}}),
        json!([1, 2, 3]),
        json!({"message": "hi", "metadata": {"messageId": "G-1", "remoteJid": "120363@g.us"}}),
    ] {
        let (status, reply) = rt.post(&url, &body).await?;
        assert_eq!(
            (status, reply["status"].as_str()),
            (200, Some("ignored")),
            "{body}"
        );
    }
    assert_eq!(
        rt.count("SELECT count(*) FROM error_logs WHERE error_type = 'ignored'")
            .await?,
        4
    );
    assert_eq!(
        rt.count("SELECT count(*) FROM audit_log WHERE action = 'error'")
            .await?,
        6,
        "errors are audited too"
    );

    // Too big: refused before parsing.
    let huge = chatflow_text("BIG-1", PHONE, &"я".repeat(100 * 1024));
    assert_eq!(rt.post(&url, &huge).await?.0, 413);

    // SQL and HTML are just text.
    let nasty = "'); DROP TABLE messages; -- <script>alert(1)</script> Здравствуйте";
    assert_eq!(
        rt.post(&url, &chatflow_text("SQL-1", PHONE, nasty))
            .await?
            .0,
        200
    );
    rt.chatflow.wait_sent(1, WAIT).await?;
    let stored: String =
        sqlx::query_scalar("SELECT content FROM messages WHERE external_id = 'SQL-1'")
            .fetch_one(&rt.pool)
            .await?;
    assert_eq!(stored, nasty);

    // The per-customer limit (3/min here): the fourth message gets 429.
    let mut statuses = Vec::new();
    for i in 0..3 {
        statuses.push(
            rt.post(
                &url,
                &chatflow_text(&format!("RL-{i}"), PHONE, "ещё вопрос"),
            )
            .await?
            .0,
        );
    }
    assert_eq!(statuses, [200, 200, 429], "SQL-1 was the first of three");
    assert_eq!(
        rt.post(
            &url,
            &chatflow_text("RL-other", "77770000001", "Здравствуйте")
        )
        .await?
        .0,
        200,
        "another customer is not limited"
    );
    Ok(())
}

#[tokio::test]
async fn a_signature_is_required_when_the_tenant_configures_one() -> Result<()> {
    use hmac::{Hmac, Mac};
    let rt = TenantRuntime::new("signed", json!({})).await?;
    let mut config = rt.config()?;
    let key = b"chatflow-signing-key".to_vec();
    if let Some(c) = config.chatflow.as_mut() {
        c.signature_key = Some(key.clone());
    }
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);
    let body = serde_json::to_vec(&chatflow_text("SIG-1", PHONE, "Здравствуйте"))?;
    assert_eq!(rt.post_raw(&url, body.clone()).await?.0, 401);
    let mut mac = Hmac::<sha2::Sha256>::new_from_slice(&key).context("key")?;
    mac.update(&body);
    let signature = format!("sha256={}", hex::encode(mac.finalize().into_bytes()));
    let response = rt
        .http
        .post(&url)
        .header("x-signature-256", signature)
        .body(body)
        .send()
        .await?;
    assert_eq!(response.status().as_u16(), 200);
    rt.chatflow.wait_sent(1, WAIT).await?;
    Ok(())
}

#[tokio::test]
async fn a_burst_of_messages_is_one_turn_and_kazakh_gets_kazakh() -> Result<()> {
    let rt = TenantRuntime::new("burst", json!({})).await?;
    let mut config = rt.config()?;
    config.llm = None; // retrieval-only and fixed phrases
    config.tuning.coalesce_window = Duration::from_millis(2000);
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);
    rt.post(&url, &chatflow_text("B-1", PHONE, "Сәлеметсіз бе"))
        .await?;
    rt.post(&url, &chatflow_text("B-2", PHONE, "бір сұрақ бар"))
        .await?;
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    tokio::time::sleep(Duration::from_millis(2500)).await;
    assert_eq!(
        rt.chatflow.sent().len(),
        1,
        "one reply to the burst: {:?}",
        rt.chatflow.sent()
    );
    assert_eq!(sent[0].msg_id, "B-2");
    assert_eq!(sent[0].msg, "Сәлеметсіз бе! Қалай көмектесе аламын?");
    Ok(())
}

#[tokio::test]
async fn voice_notes_are_transcribed_or_the_customer_is_asked_to_write() -> Result<()> {
    let rt = TenantRuntime::new("voice", json!({})).await?;
    let voice = |id: &str, phone: &str| {
        json!({"messageType": "audio", "message": null,
            "metadata": {"messageId": id, "remoteJid": format!("{phone}@s.whatsapp.net"), "timestamp": chrono::Utc::now().timestamp()},
            "mediaData": {"type": "audio", "url": format!("{}/media/voice.ogg", rt.chatflow.url),
                          "mimetype": "audio/ogg; codecs=opus", "ptt": true, "seconds": 4, "size": 20}})
    };
    // With a transcription model: the voice note is a question like any other.
    let mut config = rt.config()?;
    if let Some(llm) = config.llm.as_mut() {
        llm.transcription_model = Some("whisper-1".into());
    }
    let running = rt.start(config, price_list()).await?;
    rt.post(&rt.webhook_url(&running), &voice("V-1", PHONE))
        .await?;
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert!(sent[0].msg.contains("18 000"), "{sent:?}");
    running.stop().await;

    // Without one: asked to write, in the customer's language.
    let running = rt.start(rt.config()?, price_list()).await?;
    rt.post(&rt.webhook_url(&running), &voice("V-2", "77012223344"))
        .await?;
    let sent = rt.chatflow.wait_sent(2, WAIT).await?;
    assert_eq!(
        sent[1].msg,
        "Не получилось разобрать голосовое сообщение. Напишите, пожалуйста, текстом."
    );
    Ok(())
}

#[tokio::test]
async fn two_unanswered_clarifications_bring_a_manager() -> Result<()> {
    let rt = TenantRuntime::new("unclear", json!({})).await?;
    let mut config = rt.config()?;
    config.llm = None; // the keyword classifier decides
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);
    for (i, text) in ["ммм", "эээ", "ну"].iter().enumerate() {
        rt.post(&url, &chatflow_text(&format!("U-{i}"), PHONE, text))
            .await?;
        rt.chatflow.wait_sent(i + 1, WAIT).await?;
    }
    let sent = rt.chatflow.sent();
    assert!(sent[0].msg.starts_with("Уточните"), "{sent:?}");
    assert!(sent[1].msg.starts_with("Уточните"), "{sent:?}");
    assert!(sent[2].msg.contains("менеджер"), "{sent:?}");
    let (trigger, value): (String, String) =
        sqlx::query_as("SELECT trigger_type, trigger_value FROM handovers")
            .fetch_one(&rt.pool)
            .await?;
    assert_eq!((trigger.as_str(), value.as_str()), ("intent", "unclear"));
    Ok(())
}

#[tokio::test]
async fn without_postgresql_the_runtime_is_not_ready_and_asks_for_a_retry() -> Result<()> {
    let rt = TenantRuntime::new("nodb", json!({})).await?;
    let dead = truffles_tests::free_port()?;
    let mut config = rt.config()?;
    config.database_url = format!("postgres://nobody:pw@127.0.0.1:{dead}/none");
    let running = rt.start(config, price_list()).await?;
    let ready = rt
        .http
        .get(format!("http://{}/readyz", running.addr))
        .send()
        .await?;
    assert_eq!(ready.status().as_u16(), 503);
    let body: Value = ready.json().await?;
    assert_eq!(body["postgres"], "down");
    let live = rt
        .http
        .get(format!("http://{}/livez", running.addr))
        .send()
        .await?;
    assert_eq!(
        live.status().as_u16(),
        200,
        "alive: restarting would not help"
    );
    let (status, body) = rt
        .post(
            &rt.webhook_url(&running),
            &chatflow_text("DB-1", PHONE, "Здравствуйте"),
        )
        .await?;
    assert_eq!(status, 503, "{body}");
    Ok(())
}

#[tokio::test]
async fn a_turn_that_keeps_failing_is_kept_for_replay_and_a_manager_takes_the_apology() -> Result<()>
{
    let rt = TenantRuntime::new("broken", json!({})).await?;
    // Storing messages fails (as a broken migration or a full disk would).
    let tenant = truffles_migrations::TenantDb::for_client(&rt.name)?;
    let revoke = format!(
        r#"REVOKE INSERT ON "{}".messages FROM "{}""#,
        tenant.schema, tenant.role
    );
    sqlx::raw_sql(sqlx::AssertSqlSafe(revoke))
        .execute(&rt.db.pool)
        .await?;
    let mut config = rt.config()?;
    config.tuning.max_inbox_attempts = 2;
    let running = rt.start(config, price_list()).await?;
    let (status, _) = rt
        .post(
            &rt.webhook_url(&running),
            &chatflow_text("FAIL-1", PHONE, "Здравствуйте"),
        )
        .await?;
    assert_eq!(status, 200, "accepted: the failure comes later");
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert_eq!(
        sent[0].msg,
        "Извините, технические проблемы. Менеджер свяжется с вами."
    );
    let (state, attempts, error): (String, i32, String) = sqlx::query_as(
        "SELECT status, attempts, last_error FROM inbox WHERE message_id = 'FAIL-1'",
    )
    .fetch_one(&rt.pool)
    .await?;
    assert_eq!((state.as_str(), attempts), ("failed", 2));
    assert!(error.contains("permission denied"), "{error}");
    let levels: Vec<String> = sqlx::query_scalar(
        "SELECT level FROM error_logs WHERE error_type = 'turn_failed' AND input_data::text LIKE '%FAIL-1%' ORDER BY id",
    )
    .fetch_all(&rt.pool)
    .await?;
    assert_eq!(
        levels,
        ["warning", "critical"],
        "kept with its input for replay"
    );
    // The apology says a manager will be in touch: one is told.
    let (trigger, value, conversation): (String, String, String) = sqlx::query_as(
        "SELECT h.trigger_type, h.trigger_value, c.status FROM handovers h
         JOIN conversations c ON c.id = h.conversation_id",
    )
    .fetch_one(&rt.pool)
    .await?;
    assert_eq!(
        (trigger.as_str(), value.as_str(), conversation.as_str()),
        ("error", "turn_failed", "handover")
    );
    Ok(())
}
