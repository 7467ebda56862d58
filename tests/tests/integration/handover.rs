//! Handover to managers end to end: real PostgreSQL, Redis and SMTP; fakes of
//! ChatFlow, the Telegram Bot API, the CRMs and a client's webhook that check
//! the documented request shapes.

use std::time::Duration;

use anyhow::{Context, Result};
use serde_json::{Value, json};
use truffles_bot::handover::telegram::webhook_token;
use truffles_bot::handover::webhook::{reply_payload, sign};
use truffles_bot::serve::Running;
use truffles_tests::managers::{FakeService, FakeTelegram, Service, SmtpServer, eventually};
use truffles_tests::runtime::{TenantRuntime, WEBHOOK_SECRET, chatflow_text, price_list};

const WAIT: Duration = Duration::from_secs(30);
const PHONE: &str = "77015705555";
const BOT_TOKEN: &str = "123456:manager-bot-token";
const GROUP: i64 = -1_001_234_567_890;
const SIGNING_KEY: &str = "whsec-3b1f9c2e";

fn telegram_adapter(tg: &FakeTelegram) -> Value {
    json!({"type": "telegram", "secretRef": {"name": "managers-bot"},
           "telegram": {"chatId": GROUP.to_string(), "apiBaseUrl": tg.url}})
}

/// A tenant whose managers sit in a Telegram forum group.
async fn telegram_tenant(prefix: &str) -> Result<(TenantRuntime, FakeTelegram)> {
    let tg = FakeTelegram::start(BOT_TOKEN, GROUP).await?;
    let rt = TenantRuntime::new(
        prefix,
        json!({"handover": {"adapter": telegram_adapter(&tg),
                            "notifyTemplate": "🔔 {user_name} (+{phone}) — {intent}\n{context}"}}),
    )
    .await?;
    rt.write_secret("handover", "token", BOT_TOKEN)?;
    Ok((rt, tg))
}

async fn customer_says(rt: &TenantRuntime, running: &Running, id: &str, text: &str) -> Result<()> {
    let (status, body) = rt
        .post(&rt.webhook_url(running), &chatflow_text(id, PHONE, text))
        .await?;
    anyhow::ensure!(status == 200, "webhook answered {status}: {body}");
    Ok(())
}

async fn handover_row(rt: &TenantRuntime) -> Result<Value> {
    let row: Option<Value> =
        sqlx::query_scalar("SELECT to_jsonb(h) FROM handovers h ORDER BY created_at DESC LIMIT 1")
            .fetch_optional(&rt.pool)
            .await?;
    row.context("no handover")
}

/// Delivers a Telegram update to the runtime's webhook, as Telegram would.
async fn deliver_update(
    rt: &TenantRuntime,
    running: &Running,
    update: &Value,
    token: &str,
) -> Result<u16> {
    let response = rt
        .http
        .post(format!(
            "http://{}/t/{}/handover/telegram",
            running.addr, rt.name
        ))
        .header("x-telegram-bot-api-secret-token", token)
        .json(update)
        .send()
        .await?;
    Ok(response.status().as_u16())
}

#[tokio::test]
async fn managers_take_reply_and_close_in_a_telegram_topic() -> Result<()> {
    let (rt, tg) = telegram_tenant("tg-handover").await?;
    let running = rt.start(rt.config()?, price_list()).await?;

    customer_says(&rt, &running, "M1", "Позовите менеджера, пожалуйста").await?;
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;
    assert!(
        sent[0].msg.contains("менеджер"),
        "customer told: {:?}",
        sent[0]
    );

    // A topic for the customer, the card in it with the buttons, pinned.
    let card = tg.wait_message("🔔", WAIT).await?;
    let thread = card.thread.context("the card is in a topic")?;
    assert!(card.text.contains("+77015705555"), "{}", card.text);
    assert!(card.text.contains("keyword (менеджер)"), "{}", card.text);
    assert!(
        card.text.contains("Позовите менеджера"),
        "context: {}",
        card.text
    );
    let topics = tg.topics_created();
    assert_eq!(topics.len(), 1);
    assert!(
        topics[0].contains("Айгерим") && topics[0].contains("+77015705555"),
        "{topics:?}"
    );
    // The pin follows the card's sendMessage: wait for it, do not race it.
    eventually("the card pinned", WAIT, || {
        tg.pinned().contains(&card.id).then_some(())
    })
    .await?;
    let take = card
        .buttons
        .iter()
        .find(|b| b.starts_with("take:"))
        .context("take")?
        .clone();
    assert!(card.buttons.iter().any(|b| b.starts_with("return:")));
    assert!(card.buttons.iter().any(|b| b.ends_with(":spam")));
    rt.wait_count(
        "SELECT count(*) FROM handovers WHERE status = 'notified'",
        1,
    )
    .await?;
    let h = handover_row(&rt).await?;
    assert_eq!(h["external_ref"], json!(thread.to_string()));
    assert_eq!(h["language"], json!("ru"));

    // The customer writes while waiting: the bot is silent, the topic gets it.
    customer_says(&rt, &running, "M2", "Алло, есть кто?").await?;
    let forwarded = tg.wait_message("💬 Клиент: Алло, есть кто?", WAIT).await?;
    assert_eq!(forwarded.thread, Some(thread));

    // The first manager to take it owns it; the second is told.
    tg.press(&card, &take, 501, "Асель");
    eventually("the take answered", WAIT, || {
        tg.answers().iter().find(|a| a.1 == "Разговор ваш").cloned()
    })
    .await?;
    tg.press(&card, &take, 502, "Ерлан");
    let refused = eventually("the second take refused", WAIT, || {
        tg.answers()
            .iter()
            .find(|a| a.1.contains("уже взял"))
            .cloned()
    })
    .await?;
    assert!(refused.1.contains("Асель") && refused.2, "{refused:?}");
    let h = handover_row(&rt).await?;
    assert_eq!(
        (h["status"].as_str(), h["manager_id"].as_str()),
        (Some("active"), Some("tg:501"))
    );

    // The owner's reply reaches the customer once, even when redelivered.
    let reply = tg.manager_writes(thread, 501, "Асель", "Здравствуйте! Букет соберём к 18:00.");
    let sent = rt.chatflow.wait_sent(2, WAIT).await?;
    assert_eq!(sent[1].msg, "Здравствуйте! Букет соберём к 18:00.");
    assert_eq!(sent[1].jid, format!("{PHONE}@s.whatsapp.net"));
    let token = webhook_token(WEBHOOK_SECRET);
    assert_eq!(deliver_update(&rt, &running, &reply, &token).await?, 200);
    // Another manager cannot answer over the owner.
    tg.manager_writes(thread, 502, "Ерлан", "Я тоже тут");
    tg.wait_message("Разговор ведёт Асель", WAIT).await?;
    // Media is not relayed, and the manager is told so.
    tg.manager_sends_photo(thread, 501, "Асель");
    tg.wait_message("только текст", WAIT).await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    let texts: Vec<String> = rt.chatflow.sent().into_iter().map(|s| s.msg).collect();
    assert_eq!(texts.len(), 2, "one relay, nothing else: {texts:?}");
    let h = handover_row(&rt).await?;
    assert!(
        h["first_response_at"].is_string(),
        "first response measured: {h}"
    );

    // /close returns the conversation to the bot, which answers again.
    tg.manager_writes(thread, 501, "Асель", "/close");
    tg.wait_message("🤖 Разговор вернулся к боту", WAIT).await?;
    let h = handover_row(&rt).await?;
    assert_eq!(h["status"], json!("resolved"));
    customer_says(&rt, &running, "M3", "Сколько стоит букет из 25 роз?").await?;
    let sent = rt.chatflow.wait_sent(3, WAIT).await?;
    assert!(
        sent[2].msg.contains("18 000"),
        "the bot answers: {:?}",
        sent[2]
    );

    // Everything is in the audit trail; the fake saw only documented requests.
    let events: Vec<String> = sqlx::query_scalar(
        "SELECT details->>'event' FROM audit_log WHERE action = 'handover' ORDER BY id",
    )
    .fetch_all(&rt.pool)
    .await?;
    assert_eq!(events, ["opened", "taken", "manager_reply", "resolved"]);
    assert_eq!(tg.violations(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn a_deleted_topic_is_recreated_and_buttons_close_with_a_resolution() -> Result<()> {
    let (rt, tg) = telegram_tenant("tg-topic").await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    customer_says(&rt, &running, "T1", "менеджер").await?;
    let card = tg.wait_message("🔔", WAIT).await?;
    let first = card.thread.context("topic")?;
    tg.delete_topic(first);

    customer_says(&rt, &running, "T2", "вы тут?").await?;
    let forwarded = tg.wait_message("💬 Клиент: вы тут?", WAIT).await?;
    let second = forwarded.thread.context("topic")?;
    assert_ne!(second, first, "a new topic");
    assert_eq!(tg.topics_created().len(), 2);
    let cards: Vec<_> = tg
        .messages()
        .into_iter()
        .filter(|m| m.text.starts_with("🔔"))
        .collect();
    assert_eq!(cards.len(), 2, "the card again in the new topic");
    assert_eq!(cards[1].thread, Some(second));
    rt.wait_count(
        &format!("SELECT count(*) FROM handovers WHERE external_ref = '{second}'"),
        1,
    )
    .await?;

    // "Resolve: spam" from the new card closes it with that resolution.
    let spam = cards[1]
        .buttons
        .iter()
        .find(|b| b.ends_with(":spam"))
        .context("spam")?
        .clone();
    tg.press(&cards[1], &spam, 501, "Асель");
    rt.wait_count(
        "SELECT count(*) FROM handovers WHERE status = 'resolved' AND resolution_type = 'spam'",
        1,
    )
    .await?;
    let conversation_active = rt
        .count("SELECT count(*) FROM conversations WHERE status = 'active'")
        .await?;
    assert_eq!(conversation_active, 1);
    assert_eq!(tg.violations(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn the_fallback_adapter_gets_the_card_when_telegram_is_down() -> Result<()> {
    let tg = FakeTelegram::start(BOT_TOKEN, GROUP).await?;
    let hook = FakeService::start(Service::Webhook, SIGNING_KEY).await?;
    tg.set_down(true);
    let rt = TenantRuntime::new(
        "fallback",
        json!({"handover": {"adapter": telegram_adapter(&tg),
                            "fallback": {"type": "webhook", "secretRef": {"name": "crm-hook"},
                                         "webhook": {"url": hook.base_url()}}}}),
    )
    .await?;
    rt.write_secret("handover", "token", BOT_TOKEN)?;
    rt.write_secret("handover-fallback", "signingKey", SIGNING_KEY)?;
    let running = rt.start(rt.config()?, price_list()).await?;
    customer_says(&rt, &running, "F1", "Хочу поговорить с оператором").await?;

    let calls = hook.wait_calls(1, WAIT).await?;
    assert_eq!(calls[0].body["event"], json!("handover.card"));
    assert_eq!(calls[0].body["handover"]["phone"], json!(PHONE));
    assert_eq!(
        calls[0].header("idempotency-key"),
        Some(
            format!(
                "card:{}",
                calls[0].body["handover"]["id"].as_str().unwrap_or("")
            )
            .as_str()
        )
    );
    rt.wait_count(
        "SELECT count(*) FROM handovers WHERE status = 'notified' AND adapter_type = 'webhook'",
        1,
    )
    .await?;
    let h = handover_row(&rt).await?;
    let primary_error = h["adapter_response"]["primary_error"]
        .as_str()
        .unwrap_or("");
    assert!(primary_error.contains("Telegram"), "recorded: {h}");
    assert!(
        !primary_error.contains(BOT_TOKEN),
        "no token in errors: {primary_error}"
    );
    // Later notices follow the card to the adapter that took it.
    customer_says(&rt, &running, "F2", "жду").await?;
    let calls = hook.wait_calls(2, WAIT).await?;
    assert_eq!(calls[1].body["event"], json!("handover.customer_message"));
    assert_eq!(calls[1].body["text"], json!("жду"));
    assert_eq!(hook.violations(), Vec::<String>::new());
    let errors = rt
        .count("SELECT count(*) FROM error_logs WHERE error_type = 'notify_failed'")
        .await?;
    assert_eq!(errors, 0, "the fallback delivered: no failure to report");
    Ok(())
}

#[tokio::test]
async fn a_crm_answers_through_the_signed_reply_webhook() -> Result<()> {
    let hook = FakeService::start(Service::Webhook, SIGNING_KEY).await?;
    let rt = TenantRuntime::new(
        "reply-hook",
        json!({"handover": {"adapter": {"type": "custom", "secretRef": {"name": "own-crm"},
                                        "webhook": {"url": hook.base_url()}}}}),
    )
    .await?;
    rt.write_secret("handover", "signingKey", SIGNING_KEY)?;
    let mut config = rt.config()?;
    config.public_url = Some("http://bot.example.kz".into());
    let running = rt.start(config, price_list()).await?;
    customer_says(&rt, &running, "R1", "позовите человека").await?;
    let calls = hook.wait_calls(1, WAIT).await?;
    let id = calls[0].body["handover"]["id"]
        .as_str()
        .context("id")?
        .to_owned();
    let reply_url = calls[0].body["reply_url"].as_str().context("reply_url")?;
    assert_eq!(
        reply_url,
        format!("http://bot.example.kz/t/{}/handover/{id}/reply", rt.name)
    );

    let url = format!("http://{}/t/{}/handover/{id}/reply", running.addr, rt.name);
    let post = |body: Value, key: &'static str| {
        let body = serde_json::to_vec(&body).unwrap_or_default();
        let ts = sqlx::types::chrono::Utc::now().timestamp();
        let signature = sign(key.as_bytes(), ts, &reply_payload(&id, &body));
        let request = rt
            .http
            .post(&url)
            .header("content-type", "application/json")
            .header("x-truffles-timestamp", ts.to_string())
            .header("x-truffles-signature", signature)
            .body(body);
        async move {
            let r = request.send().await?;
            let status = r.status().as_u16();
            Ok::<_, anyhow::Error>((status, r.json::<Value>().await.unwrap_or(Value::Null)))
        }
    };
    let answer = json!({"text": "Добрый день! Менеджер Дина, чем помочь?", "message_id": "crm-77",
                        "manager": {"id": "15", "name": "Дина"}});
    let (status, body) = post(answer.clone(), SIGNING_KEY).await?;
    assert_eq!(
        (status, body["relayed"].as_str()),
        (200, Some("queued")),
        "{body}"
    );
    let (status, body) = post(answer, SIGNING_KEY).await?;
    assert_eq!(
        (status, body["relayed"].as_str()),
        (200, Some("duplicate")),
        "{body}"
    );
    let sent = rt.chatflow.wait_sent(2, WAIT).await?;
    assert_eq!(sent[1].msg, "Добрый день! Менеджер Дина, чем помочь?");

    // Refused cleanly: a wrong key, an unknown handover, nonsense.
    let (status, _) = post(json!({"text": "x", "message_id": "1"}), "wrong-key").await?;
    assert_eq!(status, 401);
    let (status, body) = post(json!({"text": 5}), SIGNING_KEY).await?;
    assert_eq!(status, 400, "{body}");
    let other = uuid::Uuid::new_v4().to_string();
    let unknown = format!(
        "http://{}/t/{}/handover/{other}/reply",
        running.addr, rt.name
    );
    let body = serde_json::to_vec(&json!({"close": true}))?;
    let ts = sqlx::types::chrono::Utc::now().timestamp();
    let signed_for =
        |handover: &str| sign(SIGNING_KEY.as_bytes(), ts, &reply_payload(handover, &body));
    let send = |signature: String| {
        rt.http
            .post(&unknown)
            .header("x-truffles-timestamp", ts.to_string())
            .header("x-truffles-signature", signature)
            .body(body.clone())
            .send()
    };
    // A reply signed for this handover, replayed onto another one's URL.
    assert_eq!(send(signed_for(&id)).await?.status().as_u16(), 401);
    assert_eq!(send(signed_for(&other)).await?.status().as_u16(), 404);

    // Close with a resolution; a reply after that is refused, not sent.
    let (status, body) = post(
        json!({"close": true, "resolution": "solved", "manager": {"id": "15"}}),
        SIGNING_KEY,
    )
    .await?;
    assert_eq!(
        (status, body["closed"].as_bool()),
        (200, Some(true)),
        "{body}"
    );
    let (status, body) = post(json!({"text": "ещё", "message_id": "crm-78"}), SIGNING_KEY).await?;
    assert_eq!(status, 409, "{body}");
    let h = handover_row(&rt).await?;
    assert_eq!(
        (h["status"].as_str(), h["resolution_type"].as_str()),
        (Some("resolved"), Some("solved"))
    );
    let closed = hook.wait_calls(2, WAIT).await?;
    assert_eq!(closed[1].body["event"], json!("handover.closed"));
    assert_eq!(rt.chatflow.sent().len(), 2);
    assert_eq!(hook.violations(), Vec::<String>::new());

    // A purged tenant: the reply is refused with a clear error, the runtime lives on.
    sqlx::query("DELETE FROM conversations")
        .execute(&rt.pool)
        .await?;
    let (status, body) = post(json!({"text": "алло", "message_id": "crm-79"}), SIGNING_KEY).await?;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("no such handover"))
    );
    Ok(())
}

#[tokio::test]
async fn crms_get_a_lead_with_the_conversation_and_later_messages_as_comments() -> Result<()> {
    for (service, kind) in [
        (Service::Bitrix, "bitrix"),
        (Service::Amocrm, "amocrm"),
        (Service::Hubspot, "hubspot"),
    ] {
        let crm = FakeService::start(service, "crm-token-9").await?;
        let rt = TenantRuntime::new(
            kind,
            json!({"handover": {"adapter": {"type": kind, "secretRef": {"name": "crm"},
                                            "crm": {"baseUrl": crm.base_url(), "pipeline": "7001"}}}}),
        )
        .await?;
        rt.write_secret("handover", "token", "crm-token-9")?;
        let running = rt.start(rt.config()?, price_list()).await?;
        customer_says(
            &rt,
            &running,
            "C1",
            "хочу оформить заказ, позовите менеджера",
        )
        .await?;
        let calls = crm.wait_calls(2, WAIT).await?;
        let lead = calls[0].body.to_string();
        assert!(
            lead.contains(&format!("+{PHONE}")),
            "{kind}: phone in the lead: {lead}"
        );
        assert!(lead.contains("Айгерим"), "{kind}: {lead}");
        let comment = calls[1].body.to_string();
        assert!(
            comment.contains("позовите менеджера"),
            "{kind}: conversation: {comment}"
        );
        rt.wait_count(
            "SELECT count(*) FROM handovers WHERE status = 'notified' AND external_ref IS NOT NULL",
            1,
        )
        .await?;
        customer_says(&rt, &running, "C2", "адрес доставки: Абая 10").await?;
        let calls = crm.wait_calls(3, WAIT).await?;
        assert!(
            calls[2].body.to_string().contains("Абая 10"),
            "{kind}: {:?}",
            calls[2]
        );
        let lead_id = handover_row(&rt).await?["external_ref"]
            .as_str()
            .unwrap_or("")
            .to_owned();
        match service {
            Service::Bitrix => {
                assert!(calls[0].path.ends_with("/crm-token-9/crm.lead.add.json"));
                assert_eq!(calls[2].body["fields"]["ENTITY_ID"].to_string(), lead_id);
            }
            Service::Amocrm => {
                assert_eq!(calls[0].body[0]["pipeline_id"], json!(7001));
                assert_eq!(calls[2].path, format!("/api/v4/leads/{lead_id}/notes"));
            }
            _ => assert_eq!(calls[2].body["associations"][0]["to"]["id"], json!(lead_id)),
        }
        assert_eq!(crm.violations(), Vec::<String>::new(), "{kind}");
        running.stop().await;
    }
    Ok(())
}

#[tokio::test]
async fn managers_on_email_get_a_readable_card_from_a_real_smtp_server() -> Result<()> {
    let smtp = SmtpServer::start().await?;
    let rt = TenantRuntime::new(
        "email",
        json!({"handover": {"adapter": {"type": "email",
            "email": {"to": ["managers@flowers.kz"], "from": "Truffles <bot@truffles.kz>",
                      "smtpHost": "127.0.0.1", "smtpPort": smtp.port, "tls": "None"}}}}),
    )
    .await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    customer_says(&rt, &running, "E1", "<b>жалоба</b>: позовите менеджера").await?;
    let mail = eventually("an e-mail", WAIT, || smtp.messages().into_iter().next()).await?;
    assert!(mail.contains("To: managers@flowers.kz"), "{mail}");
    assert!(
        mail.contains("multipart/alternative"),
        "text and HTML: {mail}"
    );
    assert!(mail.contains("text/html"), "{mail}");
    rt.wait_count(
        "SELECT count(*) FROM handovers WHERE status = 'notified'",
        1,
    )
    .await?;
    let h = handover_row(&rt).await?;
    assert_eq!(h["adapter_response"]["adapter"], json!("email"));
    Ok(())
}

#[tokio::test]
async fn concurrent_messages_open_one_handover_and_reminders_and_timeout_return_to_the_bot()
-> Result<()> {
    let (rt, tg) = telegram_tenant("tg-timeout").await?;
    let mut config = rt.config()?;
    config.tuning.handover_reminders = vec![Duration::from_millis(300), Duration::from_millis(600)];
    let running = rt.start(config, price_list()).await?;
    let url = rt.webhook_url(&running);
    let bodies: Vec<Value> = (0..5)
        .map(|i| chatflow_text(&format!("P{i}"), PHONE, "менеджер! менеджер!"))
        .collect();
    let posts = bodies.iter().map(|b| rt.post(&url, b));
    for (status, body) in futures::future::try_join_all(posts).await? {
        assert_eq!(status, 200, "{body}");
    }
    rt.wait_count("SELECT count(*) FROM inbox WHERE status = 'done'", 5)
        .await?;
    assert_eq!(rt.count("SELECT count(*) FROM handovers").await?, 1);
    tg.wait_message("⏰", WAIT).await?;
    eventually("two reminders", WAIT, || {
        (tg.messages()
            .iter()
            .filter(|m| m.text.starts_with("⏰"))
            .count()
            == 2)
            .then_some(())
    })
    .await?;
    tokio::time::sleep(Duration::from_millis(700)).await;
    let reminders = tg
        .messages()
        .iter()
        .filter(|m| m.text.starts_with("⏰"))
        .count();
    assert_eq!(reminders, 2, "each reminder once");
    assert_eq!(
        tg.messages()
            .iter()
            .filter(|m| m.text.starts_with("🔔"))
            .count(),
        1,
        "one card"
    );

    // Nobody answered for auto_return_hours (24 by default): back to the bot.
    sqlx::query("UPDATE handovers SET created_at = now() - interval '25 hours'")
        .execute(&rt.pool)
        .await?;
    rt.wait_count("SELECT count(*) FROM handovers WHERE status = 'timeout'", 1)
        .await?;
    let closed = tg.wait_message("🤖 Разговор вернулся к боту", WAIT).await?;
    assert!(
        closed.text.contains("не ответил за 24 ч"),
        "{}",
        closed.text
    );
    let before = rt.chatflow.sent().len();
    customer_says(&rt, &running, "P9", "Сколько стоит букет из 25 роз?").await?;
    let sent = rt.chatflow.wait_sent(before + 1, WAIT).await?;
    assert!(sent[before].msg.contains("18 000"), "{:?}", sent[before]);
    Ok(())
}

#[tokio::test]
async fn an_undelivered_manager_reply_is_reported_in_the_topic() -> Result<()> {
    let (rt, tg) = telegram_tenant("tg-undelivered").await?;
    let mut config = rt.config()?;
    config.tuning.max_send_attempts = 2;
    let running = rt.start(config, price_list()).await?;
    customer_says(&rt, &running, "U1", "оператор").await?;
    rt.chatflow.wait_sent(1, WAIT).await?;
    let card = tg.wait_message("🔔", WAIT).await?;
    // Both attempts of the manager's reply fail (max_send_attempts 2).
    rt.chatflow.fail_next_of("Ваш заказ готов", 2);
    tg.manager_writes(
        card.thread.context("topic")?,
        501,
        "Асель",
        "Ваш заказ готов",
    );
    let report = tg.wait_message("⚠️ Не доставлено клиенту", WAIT).await?;
    assert!(
        !rt.chatflow
            .sent()
            .iter()
            .any(|s| s.msg.contains("Ваш заказ готов")),
        "the reply never reached the customer"
    );
    assert!(report.text.contains("Ваш заказ готов"), "{}", report.text);
    assert_eq!(report.thread, card.thread);
    Ok(())
}

#[tokio::test]
async fn telegram_webhook_deliveries_are_authenticated_and_registered() -> Result<()> {
    let (rt, tg) = telegram_tenant("tg-webhook").await?;
    let mut config = rt.config()?;
    config.public_url = Some("https://bots.truffles.kz".into());
    let running = rt.start(config, price_list()).await?;
    let (url, secret) = eventually("setWebhook", WAIT, || tg.webhook()).await?;
    assert_eq!(
        url,
        format!("https://bots.truffles.kz/t/{}/handover/telegram", rt.name)
    );
    assert_eq!(secret, webhook_token(WEBHOOK_SECRET));
    assert!(
        !secret.contains(WEBHOOK_SECRET),
        "the URL secret itself is not sent"
    );

    let update = json!({"update_id": 1, "message": {"message_id": 1, "date": 0,
        "chat": {"id": GROUP, "type": "supergroup", "title": "m"}, "text": "hi"}});
    assert_eq!(deliver_update(&rt, &running, &update, "wrong").await?, 404);
    assert_eq!(deliver_update(&rt, &running, &update, &secret).await?, 200);
    let broken = rt
        .http
        .post(format!(
            "http://{}/t/{}/handover/telegram",
            running.addr, rt.name
        ))
        .header("x-telegram-bot-api-secret-token", &secret)
        .body("{not json")
        .send()
        .await?;
    assert_eq!(broken.status().as_u16(), 400);
    rt.wait_count(
        "SELECT count(*) FROM error_logs WHERE error_type = 'malformed_update'",
        1,
    )
    .await?;
    Ok(())
}

/// A message from the business's own number, as the gateway reports it.
fn from_business(id: &str, text: &str) -> Value {
    let mut body = chatflow_text(id, PHONE, text);
    body["metadata"]["fromMe"] = json!(true);
    body["metadata"]["sender"] = json!("Цветы Алматы");
    body
}

#[tokio::test]
async fn a_manager_on_whatsapp_web_silences_the_bot_until_slash_bot() -> Result<()> {
    // The default test tenant hands over to whatsappWeb.
    let rt = TenantRuntime::new("wa-web", json!({})).await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    let url = rt.webhook_url(&running);
    customer_says(&rt, &running, "W1", "Сколько стоит букет из 25 роз?").await?;
    let sent = rt.chatflow.wait_sent(1, WAIT).await?;

    // The gateway echoes the bot's own reply: not a human.
    rt.post(&url, &from_business("W2", &sent[0].msg)).await?;
    rt.wait_count("SELECT count(*) FROM inbox WHERE status = 'done'", 2)
        .await?;
    assert_eq!(rt.count("SELECT count(*) FROM handovers").await?, 0);

    // A manager writes from the phone: the conversation is theirs.
    rt.post(
        &url,
        &from_business("W3", "Здравствуйте, это Дина. Соберу букет к вечеру."),
    )
    .await?;
    rt.wait_count(
        "SELECT count(*) FROM handovers WHERE status = 'active' AND trigger_type = 'manual'",
        1,
    )
    .await?;
    customer_says(&rt, &running, "W4", "Спасибо! А доставка сколько?").await?;
    rt.wait_count("SELECT count(*) FROM inbox WHERE status = 'done'", 4)
        .await?;
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(rt.chatflow.sent().len(), 1, "the bot stays silent");
    let manager_turns = rt
        .count("SELECT count(*) FROM messages WHERE role = 'manager'")
        .await?;
    assert_eq!(manager_turns, 1);

    // "/bot" from the phone gives the conversation back.
    rt.post(&url, &from_business("W5", "/bot")).await?;
    rt.wait_count(
        "SELECT count(*) FROM handovers WHERE status = 'resolved'",
        1,
    )
    .await?;
    customer_says(&rt, &running, "W6", "Сколько стоит букет из 25 роз?").await?;
    let sent = rt.chatflow.wait_sent(2, WAIT).await?;
    assert!(sent[1].msg.contains("18 000"), "{:?}", sent[1]);
    Ok(())
}
