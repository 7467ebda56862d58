//! The acceptance test of the product: `make scenario`'s scenario on a platform
//! of its own (a fresh platform database, a namespace of its own), run through
//! the real binaries: truffles-operator provisions the flower shop of
//! `examples/tenants`, the development supervisor runs its truffles-bot, and a
//! customer, a manager and a platform engineer go through a day of it.

use anyhow::Result;
use truffles_tests::dev::scenario::{self, Transcript};
use truffles_tests::dev::{Platform, Settings};
use truffles_tests::{TestDatabase, TestNamespace, env_var, kube_client};

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_a_manager_and_the_tenants_lifecycle() -> Result<()> {
    let db = TestDatabase::create().await?;
    let client = kube_client().await?;
    let ns = TestNamespace::create(&client, "e2e").await?;
    let mut settings = Settings::from_env(Some(ns.name.clone()))?;
    // The operator's platform database: this test's own.
    let server = env_var("DATABASE_URL")?;
    let (base, _) = server
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL has no database"))?;
    settings.database_url = format!("{base}/{}", db.name);
    settings.state_dir = std::env::temp_dir().join(format!("truffles-e2e-{}", ns.name));
    // Whatever the developer exported, the test runs retrieval-only on stand-ins.
    settings.options.openai_api_key = None;
    settings.options.chatflow = None;
    let state_dir = settings.state_dir.clone();

    let platform = Platform::start(settings).await?;
    let mut transcript = Transcript::new(false);
    let result = scenario::run(&platform, &ns.name, &mut transcript).await;
    platform.stop().await;
    println!("{}", transcript.text());
    result?;

    // The transcript tells the story the scenario checked, step by step.
    let text = transcript.text();
    for expected in [
        "27 000 ₸",
        "2 000 ₸",
        "Передаю ваш вопрос менеджеру",
        "presses «Взять»",
        "customer gets │ Здравствуйте, это Асель!",
        "Разговор вернулся к боту",
        "8:00 до 22:00",
        "silent: nothing serves the webhook while suspended",
        "data kept:",
        "purged: schema tenant_flower_shop and role dropped",
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    // The webhook secret never reaches the transcript (CI logs).
    assert!(
        text.match_indices("/webhook/")
            .all(|(i, m)| text[i + m.len()..].starts_with('…')),
        "a webhook secret in the transcript:\n{text}"
    );
    ns.delete().await?;
    let _ = std::fs::remove_dir_all(state_dir);
    Ok(())
}
