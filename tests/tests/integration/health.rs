//! The platform health check (`truffles-bot health`) against the real
//! PostgreSQL and a Redis of its own that the test stops and starts again: the
//! admin hears once per incident (after the grace period) and once on
//! recovery, an alert that Telegram could not take goes with the next round,
//! and the metrics say what is down.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use anyhow::{Context, Result};
use truffles_bot::platform::health::{AdminTelegram, HealthArgs, HealthCheck, Probes};
use truffles_tests::fakes::{FakeChatflow, FakeLlm};
use truffles_tests::managers::FakeTelegram;
use truffles_tests::{env_var, free_port};

const ADMIN_CHAT: i64 = 987_654_321;
const GRACE: Duration = Duration::from_millis(600);

/// A Redis server this test may stop (with a password, when given).
fn start_redis(port: u16, password: Option<&str>) -> Result<Child> {
    let mut command = Command::new("redis-server");
    if let Some(p) = password {
        command.args(["--requirepass", p]);
    }
    let child = command
        .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
        .args(["--save", "", "--appendonly", "no"])
        .stdout(Stdio::null())
        .spawn()
        .context("redis-server (installed by scripts/testenv.sh)")?;
    for _ in 0..100 {
        if std::net::TcpStream::connect(("127.0.0.1", port)).is_ok() {
            return Ok(child);
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    anyhow::bail!("redis-server did not listen on {port}")
}

fn stop(mut child: Child) {
    let _ = child.kill();
    let _ = child.wait();
}

#[tokio::test]
async fn the_admin_hears_once_per_incident_and_on_recovery() -> Result<()> {
    truffles_tests::init();
    let port = free_port()?;
    let redis = start_redis(port, Some("s3cret-pass"))?;
    let telegram = FakeTelegram::start("123:admin", ADMIN_CHAT).await?;
    let chatflow = FakeChatflow::start("t", "i").await?;
    let llm = FakeLlm::start("sk-test").await?;
    let args = HealthArgs {
        database_url: env_var("DATABASE_URL")?,
        redis_url: Some(format!("redis://:s3cret-pass@127.0.0.1:{port}/")),
        qdrant_url: None,
        llm_url: Some(llm.url.clone()),
        llm_api_key: Some("sk-test".into()),
        chatflow_url: Some(chatflow.url.clone()),
        telegram_bot_token: None,
        admin_chat_id: None,
        telegram_api_url: None,
        interval_seconds: 300,
        grace_seconds: 0,
        recheck_seconds: 10,
        metrics_addr: ([127, 0, 0, 1], 0).into(),
        once: false,
    };
    let admin = AdminTelegram::new("123:admin", ADMIN_CHAT, Some(&telegram.url))?;
    let mut check = HealthCheck::new(Probes::new(&args)?, GRACE, Some(admin));
    let texts = || -> Vec<String> { telegram.messages().into_iter().map(|m| m.text).collect() };

    // Everything up: silence, and the metrics say so.
    let results = check.round().await;
    assert!(
        results.values().all(Result::is_ok),
        "all up at first: {results:?}"
    );
    assert_eq!(
        results.keys().copied().collect::<Vec<_>>(),
        ["chatflow", "llm", "postgres", "redis"]
    );
    assert!(texts().is_empty());
    assert!(
        check
            .metrics
            .render()
            .contains("truffles_dependency_up{dependency=\"redis\"} 1")
    );

    // Redis goes away: nothing within the grace period, one alert after it,
    // nothing more while it stays down.
    stop(redis);
    check.round().await;
    assert!(check.urgent(), "re-probed soon");
    assert!(texts().is_empty(), "no alert within the grace period");
    assert!(
        check
            .metrics
            .render()
            .contains("truffles_dependency_up{dependency=\"redis\"} 0")
    );
    tokio::time::sleep(GRACE).await;
    for _ in 0..3 {
        check.round().await;
    }
    let sent = texts();
    assert_eq!(sent.len(), 1, "one alert per incident: {sent:?}");
    assert!(sent[0].contains("redis is down"), "{sent:?}");
    // The URL (and its password) never reaches the admin or the logs' errors.
    assert!(!sent[0].contains("s3cret") && !sent[0].contains("redis://"));

    // Back: one recovery message.
    let redis = start_redis(port, Some("s3cret-pass"))?;
    check.round().await;
    check.round().await;
    let sent = texts();
    assert_eq!(sent.len(), 2, "{sent:?}");
    assert!(sent[1].contains("redis is back"), "{sent:?}");

    // An alert Telegram refuses is sent with a later round, once.
    telegram.set_down(true);
    stop(redis);
    check.round().await;
    tokio::time::sleep(GRACE).await;
    check.round().await;
    assert_eq!(check.undelivered.len(), 1, "kept for the next round");
    telegram.set_down(false);
    check.round().await;
    check.round().await;
    let sent = texts();
    assert_eq!(sent.len(), 3, "{sent:?}");
    assert!(sent[2].contains("redis is down"), "{sent:?}");
    assert!(check.undelivered.is_empty());
    assert!(
        check
            .metrics
            .render()
            .contains("truffles_health_alerts_total{dependency=\"redis\"} 3")
    );
    assert_eq!(telegram.violations(), Vec::<String>::new());
    Ok(())
}

#[tokio::test]
async fn once_mode_fails_when_something_is_down() -> Result<()> {
    truffles_tests::init();
    let port = free_port()?;
    let args = HealthArgs {
        database_url: env_var("DATABASE_URL")?,
        redis_url: Some(format!("redis://127.0.0.1:{port}/")),
        qdrant_url: None,
        llm_url: None,
        llm_api_key: None,
        chatflow_url: None,
        telegram_bot_token: None,
        admin_chat_id: None,
        telegram_api_url: None,
        interval_seconds: 300,
        grace_seconds: 60,
        recheck_seconds: 10,
        metrics_addr: ([127, 0, 0, 1], 0).into(),
        once: true,
    };
    let error = truffles_bot::platform::health::run(args.clone())
        .await
        .expect_err("nothing listens on the Redis port");
    assert!(
        error.to_string().contains("1 dependencies are down"),
        "{error}"
    );
    let redis = start_redis(port, None)?;
    let result = truffles_bot::platform::health::run(args).await;
    stop(redis);
    result
}
