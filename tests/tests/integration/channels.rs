//! Customer channels beyond WhatsApp (issue: Telegram and Instagram through the
//! same pipeline): each through its real webhook into the running runtime,
//! against fakes of the Bot API and the Graph API that check the documented
//! shapes and limits, with real PostgreSQL and Redis.

use std::time::Duration;

use anyhow::{Result, ensure};
use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use truffles_bot::channels::telegram::webhook_token;
use truffles_bot::channels::{Channel, Outgoing};
use truffles_tests::channels::{FakeInstagram, FakeTelegramBot};
use truffles_tests::runtime::{
    INSTAGRAM_ACCESS_TOKEN, INSTAGRAM_APP_SECRET, INSTAGRAM_VERIFY_TOKEN, PII_KEY,
    TELEGRAM_BOT_TOKEN, TenantRuntime, WEBHOOK_SECRET, chatflow_text, price_list,
};

const CHAT: i64 = 5_550_101;
const WAIT: Duration = Duration::from_secs(20);

/// The harness's configuration with speech-to-text on.
fn with_transcription(mut config: truffles_bot::config::Config) -> truffles_bot::config::Config {
    if let Some(llm) = config.llm.as_mut() {
        llm.transcription_model = Some("whisper-1".into());
    }
    config
}

/// The flower shop's price list, long enough that one answer exceeds a
/// Telegram message (4,096 characters) and several Instagram ones (1,000).
fn long_price_list() -> Vec<String> {
    let mut docs = price_list();
    let row = "Букет из 25 роз стоит 27 000 ₸, из 51 розы — 52 000 ₸; доставка по Алматы 2 000 ₸.";
    docs.push(vec![row; 60].join(" "));
    docs
}

fn update(id: i64, message: Value) -> Value {
    let mut m = json!({
        "message_id": id, "date": chrono::Utc::now().timestamp(),
        "chat": {"id": CHAT, "type": "private", "first_name": "Айгерим"},
        "from": {"id": CHAT, "is_bot": false, "first_name": "Айгерим", "language_code": "kk"}
    });
    if let (Some(m), Some(extra)) = (m.as_object_mut(), message.as_object()) {
        m.extend(extra.clone());
    }
    json!({"update_id": id, "message": m})
}

/// Posts a JSON body with the channel's authentication header, if any.
async fn post_json(
    rt: &TenantRuntime,
    url: &str,
    body: &[u8],
    header: Option<(&str, &str)>,
) -> Result<(u16, String)> {
    let mut request = rt
        .http
        .post(url)
        .header("content-type", "application/json")
        .body(body.to_vec());
    if let Some((name, value)) = header {
        request = request.header(name, value);
    }
    let response = request.send().await?;
    Ok((response.status().as_u16(), response.text().await?))
}

async fn post_update(
    rt: &TenantRuntime,
    url: &str,
    token: Option<&str>,
    body: &[u8],
) -> Result<(u16, String)> {
    let header = token.map(|t| ("x-telegram-bot-api-secret-token", t));
    post_json(rt, url, body, header).await
}

#[tokio::test]
async fn telegram_customers_are_greeted_answered_within_limits_and_heard() -> Result<()> {
    let bot = FakeTelegramBot::start(TELEGRAM_BOT_TOKEN).await?;
    let rt = TenantRuntime::new(
        "tg",
        json!({"channels": {"telegram": {"botTokenSecretRef": {"name": "creds", "key": "telegram"}, "apiBaseUrl": bot.url}}}),
    )
    .await?;
    let mut config = with_transcription(rt.config()?);
    config.public_url = Some("https://shop.example.kz".into());
    let running = rt.start(config, long_price_list()).await?;

    // The runtime registers its webhook with a secret token of its own.
    let token = webhook_token(WEBHOOK_SECRET, truffles_bot::gateway::CUSTOMER_BOT);
    let deadline = tokio::time::Instant::now() + WAIT;
    while bot.webhook().is_none() && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert_eq!(
        bot.webhook(),
        Some((
            format!("https://shop.example.kz/t/{}/telegram", rt.name),
            token.clone()
        ))
    );
    let url = format!("http://{}/t/{}/telegram", running.addr, rt.name);

    // Refused: no token, a wrong one (both 404, as for an unknown tenant),
    // broken JSON (400, kept for replay); a group message is no customer's.
    let start = update(1, json!({"text": "/start"}));
    let body = serde_json::to_vec(&start)?;
    assert_eq!(post_update(&rt, &url, None, &body).await?.0, 404);
    assert_eq!(post_update(&rt, &url, Some("guess"), &body).await?.0, 404);
    assert_eq!(
        post_update(&rt, &url, Some(&token), b"{\"update_id\":")
            .await?
            .0,
        400
    );
    let mut group = update(2, json!({"text": "всем привет"}));
    group["message"]["chat"] = json!({"id": -100_500, "type": "supergroup", "title": "Чат"});
    let (status, text) = post_update(&rt, &url, Some(&token), &serde_json::to_vec(&group)?).await?;
    assert_eq!((status, text.contains("ignored")), (200, true), "{text}");
    assert_eq!(
        rt.count(
            "SELECT count(*) FROM error_logs WHERE error_type IN ('malformed_json', 'ignored')"
        )
        .await?,
        2
    );

    // An update sent four days ago is a replay (Telegram keeps undelivered
    // updates a day): answered, not stored, and its id is not spent.
    let mut old = start.clone();
    old["message"]["date"] = json!(chrono::Utc::now().timestamp() - 4 * 86_400);
    let (status, text) = post_update(&rt, &url, Some(&token), &serde_json::to_vec(&old)?).await?;
    assert_eq!((status, text.contains("stale")), (200, true), "{text}");
    assert_eq!(rt.count("SELECT count(*) FROM inbox").await?, 0);

    // /start greets in the language of the customer's Telegram (Kazakh).
    assert_eq!(post_update(&rt, &url, Some(&token), &body).await?.0, 200);
    let sent = bot.wait_sent(1, WAIT).await?;
    assert_eq!(sent[0].chat, CHAT);
    assert_eq!(sent[0].text, "Сәлеметсіз бе! Қалай көмектесе аламын?");

    // A long answer arrives as whole parts within Telegram's limit, in order,
    // at the pace Telegram allows.
    let price = update(3, json!({"text": "Сколько стоит букет из 25 роз?"}));
    let price_body = serde_json::to_vec(&price)?;
    assert_eq!(
        post_update(&rt, &url, Some(&token), &price_body).await?.0,
        200
    );
    rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", 2)
        .await?;
    let parts: Vec<String> = bot.sent()[1..].iter().map(|m| m.text.clone()).collect();
    ensure!(
        parts.len() >= 2,
        "one long answer, several messages: {parts:?}"
    );
    ensure!(parts.iter().all(|p| p.chars().count() <= 4096));
    ensure!(parts[0].starts_with("По нашим данным"), "{}", parts[0]);
    let stored: String = sqlx::query_scalar(
        "SELECT content FROM messages WHERE role = 'assistant' ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_one(&rt.pool)
    .await?;
    assert_eq!(
        stored.split_whitespace().collect::<String>(),
        parts.concat().split_whitespace().collect::<String>(),
        "the parts are the whole answer"
    );
    let (parts_sent, attempts): (i32, i32) =
        sqlx::query_as("SELECT parts_sent, attempts FROM outbox ORDER BY id DESC LIMIT 1")
            .fetch_one(&rt.pool)
            .await?;
    assert_eq!((parts_sent as usize, attempts), (parts.len(), 1));

    // Telegram delivers an update again: no second answer.
    assert_eq!(
        post_update(&rt, &url, Some(&token), &price_body).await?.0,
        200
    );

    // A voice message is downloaded by its file id and transcribed.
    bot.add_file("VOICE-1", "voice/file_7.oga", b"OggS\0telegram-voice");
    let voice = update(
        4,
        json!({"voice": {"file_id": "VOICE-1", "file_unique_id": "v1", "duration": 3, "mime_type": "audio/ogg"}}),
    );
    assert_eq!(
        post_update(&rt, &url, Some(&token), &serde_json::to_vec(&voice)?)
            .await?
            .0,
        200
    );
    rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", 3)
        .await?;
    let heard: String = sqlx::query_scalar("SELECT content FROM messages WHERE external_id = $1")
        .bind(format!("tg:{CHAT}:4"))
        .fetch_one(&rt.pool)
        .await?;
    assert_eq!(heard, "Сколько стоит букет из 25 роз?");

    // A photo with a caption is a question too.
    let photo = update(
        5,
        json!({"caption": "Такой есть? Сколько стоит?", "photo": [{"file_id": "P1", "file_unique_id": "p1", "width": 800, "height": 800}]}),
    );
    assert_eq!(
        post_update(&rt, &url, Some(&token), &serde_json::to_vec(&photo)?)
            .await?
            .0,
        200
    );
    rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", 4)
        .await?;
    let photo_text: String =
        sqlx::query_scalar("SELECT content FROM messages WHERE external_id = $1")
            .bind(format!("tg:{CHAT}:5"))
            .fetch_one(&rt.pool)
            .await?;
    assert!(
        photo_text.contains("[фото]") && photo_text.contains("Такой есть?"),
        "{photo_text}"
    );

    // Handover works the same; managers see the channel.
    let manager = update(6, json!({"text": "Позовите менеджера"}));
    assert_eq!(
        post_update(&rt, &url, Some(&token), &serde_json::to_vec(&manager)?)
            .await?
            .0,
        200
    );
    rt.wait_count(
        "SELECT count(*) FROM handovers h JOIN conversations c ON c.id = h.conversation_id WHERE c.channel = 'telegram'",
        1,
    )
    .await?;

    // The same person on WhatsApp is another conversation.
    let whatsapp = rt.webhook_url(&running);
    rt.post(
        &whatsapp,
        &chatflow_text("W-1", "77015550101", "Здравствуйте"),
    )
    .await?;
    rt.wait_count(
        "SELECT count(*) FROM conversations WHERE channel = 'whatsapp'",
        1,
    )
    .await?;
    assert_eq!(
        rt.count("SELECT count(*) FROM conversations WHERE channel = 'telegram'")
            .await?,
        1
    );
    assert_eq!(
        rt.count("SELECT count(DISTINCT channel) FROM users")
            .await?,
        2
    );

    ensure!(bot.violations().is_empty(), "{:?}", bot.violations());
    Ok(())
}

#[tokio::test]
async fn a_blocked_bot_gives_up_at_once_and_polling_works_without_a_public_address() -> Result<()> {
    let bot = FakeTelegramBot::start(TELEGRAM_BOT_TOKEN).await?;
    let rt = TenantRuntime::new(
        "tgpoll",
        json!({"channels": {"telegram": {"botTokenSecretRef": {"name": "creds", "key": "telegram"}, "apiBaseUrl": bot.url}}}),
    )
    .await?;
    // No public URL: the runtime polls getUpdates.
    let _running = rt.start(rt.config()?, price_list()).await?;
    bot.queue_update(update(1, json!({"text": "Здравствуйте"})));
    let sent = bot.wait_sent(1, WAIT).await?;
    assert_eq!(sent[0].chat, CHAT);
    assert!(bot.webhook().is_none());

    // The customer blocked the bot: the reply fails once, for good, and says why.
    bot.block(CHAT);
    bot.queue_update(update(2, json!({"text": "Сколько стоит доставка?"})));
    rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'failed'", 1)
        .await?;
    let (attempts, error): (i32, String) =
        sqlx::query_as("SELECT attempts, last_error FROM outbox WHERE status = 'failed'")
            .fetch_one(&rt.pool)
            .await?;
    assert_eq!(attempts, 1, "no retries for a refusal");
    assert!(error.contains("blocked"), "{error}");
    assert!(!error.contains(TELEGRAM_BOT_TOKEN));
    assert_eq!(bot.sent().len(), 1);
    Ok(())
}

const ACCOUNT: &str = "17841400000000001";

fn signed(body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(INSTAGRAM_APP_SECRET.as_bytes())
        .expect("any key length");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

fn delivery(events: Vec<Value>) -> Value {
    json!({"object": "instagram", "entry": [{"id": ACCOUNT, "time": 1_764_929_737_000_i64, "messaging": events}]})
}

fn direct(customer: &str, mid: &str, message: Value) -> Value {
    let mut message = message;
    message["mid"] = json!(mid);
    json!({"sender": {"id": customer}, "recipient": {"id": ACCOUNT}, "timestamp": chrono::Utc::now().timestamp_millis(), "message": message})
}

async fn post_delivery(
    rt: &TenantRuntime,
    url: &str,
    body: &[u8],
    signature: Option<String>,
) -> Result<(u16, String)> {
    let header = signature.as_deref().map(|s| ("x-hub-signature-256", s));
    post_json(rt, url, body, header).await
}

#[tokio::test]
async fn instagram_direct_is_verified_signed_and_answered_within_the_window() -> Result<()> {
    let graph = FakeInstagram::start("v21.0", ACCOUNT, INSTAGRAM_ACCESS_TOKEN).await?;
    let rt = TenantRuntime::new(
        "ig",
        json!({"channels": {"instagram": {
            "accountId": ACCOUNT,
            "accessTokenSecretRef": {"name": "creds", "key": "igToken"},
            "appSecretRef": {"name": "creds", "key": "igAppSecret"},
            "verifyTokenSecretRef": {"name": "creds", "key": "igVerify"},
            "apiVersion": "v21.0",
            "apiBaseUrl": graph.url
        }}}),
    )
    .await?;
    let running = rt
        .start(with_transcription(rt.config()?), long_price_list())
        .await?;
    let url = format!("http://{}/t/{}/instagram", running.addr, rt.name);

    // The subscription handshake: the challenge back for our token only.
    let verify = |token: &str, mode: &str| {
        rt.http
            .get(&url)
            .query(&[
                ("hub.mode", mode),
                ("hub.verify_token", token),
                ("hub.challenge", "1158201444"),
            ])
            .send()
    };
    let ok = verify(INSTAGRAM_VERIFY_TOKEN, "subscribe").await?;
    assert_eq!(ok.status(), 200);
    assert_eq!(ok.text().await?, "1158201444");
    assert_eq!(verify("wrong", "subscribe").await?.status(), 403);
    assert_eq!(
        verify(INSTAGRAM_VERIFY_TOKEN, "unsubscribe")
            .await?
            .status(),
        403
    );

    // Deliveries must be signed with the app secret.
    let hello = delivery(vec![direct("6201", "m-1", json!({"text": "Здравствуйте"}))]);
    let body = serde_json::to_vec(&hello)?;
    assert_eq!(post_delivery(&rt, &url, &body, None).await?.0, 401);
    assert_eq!(
        post_delivery(&rt, &url, &body, Some("sha256=00ff".into()))
            .await?
            .0,
        401
    );
    // Anyone can send those: they are counted, never stored.
    for table in ["error_logs", "audit_log", "inbox"] {
        let rows = rt.count(&format!("SELECT count(*) FROM {table}")).await?;
        assert_eq!(rows, 0, "an unauthenticated delivery wrote into {table}");
    }
    let unprefixed = signed(&body).trim_start_matches("sha256=").to_owned();
    assert_eq!(
        post_delivery(&rt, &url, &body, Some(unprefixed)).await?.0,
        401
    );
    let tampered = serde_json::to_vec(&delivery(vec![direct(
        "6201",
        "m-1",
        json!({"text": "Здравствуйте!"}),
    )]))?;
    assert_eq!(
        post_delivery(&rt, &url, &tampered, Some(signed(&body)))
            .await?
            .0,
        401
    );
    // A correctly signed delivery from four days ago is a replay of a body
    // copied from somewhere: not stored.
    let mut replayed = direct("6201", "m-old", json!({"text": "Здравствуйте"}));
    replayed["timestamp"] = json!(chrono::Utc::now().timestamp_millis() - 4 * 86_400_000);
    let old = serde_json::to_vec(&delivery(vec![replayed]))?;
    let (status, text) = post_delivery(&rt, &url, &old, Some(signed(&old))).await?;
    assert_eq!((status, text.contains("stale")), (200, true), "{text}");
    assert_eq!(rt.count("SELECT count(*) FROM inbox").await?, 0);
    assert_eq!(
        post_delivery(&rt, &url, b"{\"object\":", Some(signed(b"{\"object\":")))
            .await?
            .0,
        400
    );
    let read = serde_json::to_vec(&delivery(vec![
        json!({"sender": {"id": "6201"}, "recipient": {"id": ACCOUNT}, "read": {"mid": "m-0"}}),
    ]))?;
    let (status, text) = post_delivery(&rt, &url, &read, Some(signed(&read))).await?;
    assert_eq!(status, 200, "{text}");
    assert_eq!(graph.sent().len(), 0);

    // One delivery, two customers: both answered; a long answer in parts.
    let two = serde_json::to_vec(&delivery(vec![
        direct("6201", "m-1", json!({"text": "Здравствуйте"})),
        direct(
            "6202",
            "m-2",
            json!({"text": "Сколько стоит букет из 25 роз?"}),
        ),
    ]))?;
    let (status, text) = post_delivery(&rt, &url, &two, Some(signed(&two))).await?;
    assert_eq!(status, 200, "{text}");
    rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", 2)
        .await?;
    let sent = graph.sent();
    let to_6202: Vec<&str> = sent
        .iter()
        .filter(|m| m.recipient == "6202")
        .map(|m| m.text.as_str())
        .collect();
    ensure!(
        to_6202.len() >= 2,
        "a long answer in several messages: {to_6202:?}"
    );
    ensure!(to_6202.iter().all(|t| t.chars().count() < 1000));
    ensure!(sent.iter().any(|m| m.recipient == "6201"));
    // Meta retries the delivery: nothing is answered twice.
    let before = graph.sent().len();
    assert_eq!(
        post_delivery(&rt, &url, &two, Some(signed(&two))).await?.0,
        200
    );

    // A voice message (audio attachment) is transcribed.
    let voice = serde_json::to_vec(&delivery(vec![direct(
        "6203",
        "m-3",
        json!({"attachments": [{"type": "audio", "payload": {"url": format!("{}/cdn/voice", graph.url)}}]}),
    )]))?;
    assert_eq!(
        post_delivery(&rt, &url, &voice, Some(signed(&voice)))
            .await?
            .0,
        200
    );
    rt.wait_count("SELECT count(*) FROM outbox WHERE status = 'sent'", 3)
        .await?;
    assert_eq!(
        rt.count("SELECT count(*) FROM messages WHERE external_id = 'm-3' AND content = 'Сколько стоит букет из 25 роз?'").await?,
        1
    );
    assert!(graph.sent().len() > before);

    // The bot's own replies come back as echoes: not a manager writing.
    let first_part = to_6202[0].to_owned();
    let echo = serde_json::to_vec(&delivery(vec![json!({
        "sender": {"id": ACCOUNT}, "recipient": {"id": "6202"}, "timestamp": chrono::Utc::now().timestamp_millis(),
        "message": {"mid": "m-echo-1", "text": first_part, "is_echo": true}})]))?;
    assert_eq!(
        post_delivery(&rt, &url, &echo, Some(signed(&echo)))
            .await?
            .0,
        200
    );
    // A manager answering from the Instagram app holds the conversation.
    let manager = serde_json::to_vec(&delivery(vec![json!({
        "sender": {"id": ACCOUNT}, "recipient": {"id": "6201"}, "timestamp": chrono::Utc::now().timestamp_millis(),
        "message": {"mid": "m-echo-2", "text": "Здравствуйте, это Дина, менеджер", "is_echo": true}})]))?;
    assert_eq!(
        post_delivery(&rt, &url, &manager, Some(signed(&manager)))
            .await?
            .0,
        200
    );
    rt.wait_count(
        "SELECT count(*) FROM handovers WHERE trigger_type = 'manual'",
        1,
    )
    .await?;
    rt.wait_count(
        "SELECT count(*) FROM inbox WHERE message_id = 'm-echo-1' AND status = 'done'",
        1,
    )
    .await?;
    assert_eq!(
        rt.count("SELECT count(*) FROM handovers").await?,
        1,
        "the echo of the bot's reply opened no handover"
    );

    // Outside Meta's 24-hour window nothing is sent; the row fails at once.
    sqlx::query(
        "UPDATE messages SET created_at = now() - interval '25 hours'
         WHERE conversation_id = (SELECT c.id FROM conversations c JOIN messages m ON m.conversation_id = c.id WHERE m.external_id = 'm-3')",
    )
    .execute(&rt.pool)
    .await?;
    let conversation: uuid::Uuid =
        sqlx::query_scalar("SELECT conversation_id FROM messages WHERE external_id = 'm-3'")
            .fetch_one(&rt.pool)
            .await?;
    let sent_before = graph.sent().len();
    truffles_bot::outbox::queue(
        &rt.pool,
        &truffles_bot::pii::Pii::new(&PII_KEY),
        Some(conversation),
        None,
        truffles_bot::outbox::Recipient {
            channel: Channel::Instagram,
            address: "6203",
        },
        &Outgoing::Text {
            text: "Ваш заказ готов".into(),
        },
        "late-1",
    )
    .await?;
    rt.wait_count("SELECT count(*) FROM outbox WHERE idempotency_key = 'late-1' AND status = 'failed' AND attempts = 1", 1)
        .await?;
    let error: String =
        sqlx::query_scalar("SELECT last_error FROM outbox WHERE idempotency_key = 'late-1'")
            .fetch_one(&rt.pool)
            .await?;
    assert!(error.contains("24 hours"), "{error}");
    assert_eq!(graph.sent().len(), sent_before);

    let conversations: Vec<String> =
        sqlx::query_scalar("SELECT DISTINCT channel FROM conversations")
            .fetch_all(&rt.pool)
            .await?;
    assert_eq!(conversations, vec!["instagram".to_owned()]);
    ensure!(graph.violations().is_empty(), "{:?}", graph.violations());
    Ok(())
}
