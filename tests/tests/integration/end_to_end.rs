//! The acceptance test of the product: `make scenario`'s scenario on a platform
//! of its own (a fresh platform database, a namespace of its own), run through
//! the real binaries: truffles-operator provisions the flower shop of
//! `examples/tenants`, the development supervisor runs its truffles-bot, and a
//! customer, a manager and a platform engineer go through a day of it.

use std::collections::HashMap;
use std::time::Duration;

use anyhow::{Context, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::{Patch, PatchParams};
use serde_json::json;
use truffles_tests::dev::scenario::{self, Transcript};
use truffles_tests::dev::supervisor::LocalRuntime;
use truffles_tests::dev::{LocalTenant, Platform, Settings};
use truffles_tests::managers::eventually;
use truffles_tests::{TestDatabase, TestNamespace, env_var, kube_client, workspace_root};

const WAIT: Duration = Duration::from_secs(120);

/// A platform of its own: a fresh platform database, a namespace that the
/// operator and the supervisor alone watch, stand-ins only.
async fn isolated(prefix: &str) -> Result<(TestDatabase, TestNamespace, Settings)> {
    let db = TestDatabase::create().await?;
    let client = kube_client().await?;
    let ns = TestNamespace::create(&client, prefix).await?;
    let mut settings = Settings::from_env(Some(ns.name.clone()))?;
    let server = env_var("DATABASE_URL")?;
    let (base, _) = server
        .rsplit_once('/')
        .ok_or_else(|| anyhow::anyhow!("DATABASE_URL has no database"))?;
    settings.database_url = format!("{base}/{}", db.name);
    settings.state_dir = std::env::temp_dir().join(format!("truffles-e2e-{}", ns.name));
    // Whatever the developer exported, tests run retrieval-only on stand-ins.
    settings.options.openai_api_key = None;
    settings.options.chatflow = None;
    Ok((db, ns, settings))
}

#[tokio::test(flavor = "multi_thread")]
async fn a_customer_a_manager_and_the_tenants_lifecycle() -> Result<()> {
    let (_db, ns, settings) = isolated("e2e").await?;
    let state_dir = settings.state_dir.clone();
    let platform = Platform::start(settings).await?;
    let mut transcript = Transcript::new(false);
    let name = unique_name("flower-shop", &ns);
    let result = scenario::run(&platform, &ns.name, Some(&name), &mut transcript).await;
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
        &format!(
            "purged: schema tenant_{} and role dropped",
            name.replace('-', "_")
        ),
    ] {
        assert!(text.contains(expected), "no {expected:?} in:\n{text}");
    }
    // At info level the runtime logs no phone number and no message text.
    let log = std::fs::read_to_string(
        state_dir
            .join("logs")
            .join(format!("{}-{name}-bot.log", ns.name)),
    )?;
    assert!(
        log.contains("runtime started"),
        "the runtime's log is there"
    );
    // Qdrant Edge's start-up noise is filtered out.
    for noise in [
        "Feature flags not initialized",
        "MULTI_MMAP_SUPPORT_CHECK_RESULT",
    ] {
        assert!(!log.contains(noise), "{noise:?} in the runtime's log");
    }
    for personal in [
        scenario::PHONE,
        "Позовите менеджера",
        "Сколько стоит букет",
        "Жеткізу",
        "это Асель",
    ] {
        assert!(!log.contains(personal), "{personal:?} in the runtime's log");
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

/// The supervisor plays the kubelet: a changed Secret rolls the runtime out
/// with the new value, a crashed runtime is started again. (The dental clinic:
/// tenant names are cluster-wide PostgreSQL roles, so not the scenario's shop.)
#[tokio::test(flavor = "multi_thread")]
async fn the_supervisor_rolls_out_changed_secrets_and_restarts_crashes() -> Result<()> {
    let (_db, ns, settings) = isolated("e2e-sup").await?;
    let state_dir = settings.state_dir.clone();
    let platform = Platform::start(settings).await?;
    let result = async {
        let path = workspace_root().join("examples/tenants/dental-clinic.yaml");
        let name = unique_name("smile-dental", &ns);
        let tenant = platform.apply_tenant(&ns.name, &path, Some(&name)).await?;
        let first = platform.wait_ready(&tenant, WAIT).await?;
        let first_pid = first.pid.context("no pid")?;
        boundary_attacks(&platform, &tenant, &first).await?;
        // The clinic keeps its knowledge on a Qdrant server: the operator made its collection.
        let qdrant = tenant
            .stand_ins
            .qdrant
            .as_ref()
            .context("no Qdrant server for the clinic")?;
        assert!(qdrant.exists(&format!("{}_knowledge", tenant.name)).await?);
        assert_eq!(
            environ(first_pid)?
                .get("CHATFLOW_TOKEN")
                .map(String::as_str),
            Some("replace-with-chatflow-token")
        );

        // Rotate the ChatFlow token: a new process with the new value.
        let secrets: Api<Secret> = ns.api();
        secrets
            .patch(
                "smile-dental-credentials",
                &PatchParams::default(),
                &Patch::Merge(json!({"stringData": {"chatflow-token": "rotated-token"}})),
            )
            .await?;
        // The Secret and then the Deployment's config hash change, so the
        // runtime may roll out twice: wait for a running one with the new value
        // rather than sampling the first new pid (it may already be gone).
        let second = eventually(
            "the runtime rolled out with the rotated token",
            WAIT,
            || {
                platform
                    .supervisor
                    .runtime(&ns.name, &tenant.name)
                    .filter(|r| r.running && r.pid.is_some_and(|p| p != first_pid))
                    .filter(|r| {
                        r.pid.and_then(|p| environ(p).ok()).is_some_and(|env| {
                            env.get("CHATFLOW_TOKEN").map(String::as_str) == Some("rotated-token")
                        })
                    })
            },
        )
        .await?;
        let second_pid = second.pid.context("no pid")?;
        assert!(
            !std::path::Path::new(&format!("/proc/{first_pid}")).exists(),
            "the old process was stopped"
        );
        platform.wait_running(&tenant, WAIT).await?;

        // A crash: started again after a backoff, on the same address.
        std::process::Command::new("kill")
            .args(["-KILL", &second_pid.to_string()])
            .status()?;
        let third = eventually("the crashed runtime restarted", WAIT, || {
            platform
                .supervisor
                .runtime(&ns.name, &tenant.name)
                .filter(|r| r.running && r.pid.is_some_and(|p| p != second_pid))
        })
        .await?;
        assert_eq!(third.addr, second.addr, "a restarted runtime keeps its URL");
        platform.wait_running(&tenant, WAIT).await?;
        anyhow::Ok(())
    }
    .await;
    platform.stop().await;
    result?;
    ns.delete().await?;
    let _ = std::fs::remove_dir_all(state_dir);
    Ok(())
}

/// The tenant boundary's attacks that need only HTTP, against the real
/// truffles-bot binary as the operator rendered it (the security suite runs
/// the rest in-process): the webhook secret is no admin credential, the admin
/// API is not on the public listener, another tenant's name is unknown, and a
/// days-old webhook is a replay.
async fn boundary_attacks(
    platform: &Platform,
    tenant: &LocalTenant,
    runtime: &LocalRuntime,
) -> Result<()> {
    use super::security::attack;
    let http = reqwest::Client::new();
    let webhook = platform.webhook_url(tenant).await?;
    let secret = webhook.rsplit('/').next().context("no secret")?.to_owned();
    let admin_token = platform
        .secret_text(
            &tenant.namespace,
            &format!("{}-runtime", tenant.name),
            truffles_crds::contract::env::ADMIN_TOKEN,
        )
        .await?;
    let sync = |addr: std::net::SocketAddr, bearer: &str| {
        http.post(format!(
            "http://{addr}/t/{}/admin/knowledge/sync",
            tenant.name
        ))
        .bearer_auth(bearer)
        .send()
    };
    attack("the webhook URL's secret as the admin credential (real binary)");
    assert_eq!(sync(runtime.admin_addr, &secret).await?.status(), 401);
    attack("the admin API through the public listener (real binary)");
    assert_eq!(sync(runtime.addr, &admin_token).await?.status(), 404);
    assert_eq!(
        sync(runtime.admin_addr, &admin_token).await?.status(),
        200,
        "the admin token works on the admin listener"
    );
    let message = |sent: i64| {
        json!({"messageType": "text", "message": "Здравствуйте",
            "metadata": {"messageId": "E2E-REPLAY", "remoteJid": "77015705514@s.whatsapp.net", "timestamp": sent}})
    };
    attack("another tenant's name with this tenant's webhook secret (real binary)");
    let elsewhere = webhook.replace(&format!("/t/{}/", tenant.name), "/t/someone-else/");
    let answer = http.post(&elsewhere).json(&message(0)).send().await?;
    assert_eq!(answer.status(), 404);
    attack("a webhook replayed four days after it was sent (real binary)");
    let old = chrono::Utc::now().timestamp() - 4 * 86_400;
    let answer: serde_json::Value = http
        .post(&webhook)
        .json(&message(old))
        .send()
        .await?
        .json()
        .await?;
    assert_eq!(answer["status"], "stale", "{answer}");
    super::security::tried("the real binaries");
    Ok(())
}

/// The example's name made unique: tenant names are PostgreSQL roles, shared
/// by every database of the test server (the operator tests provision the
/// examples too).
fn unique_name(example: &str, ns: &TestNamespace) -> String {
    let suffix = ns.name.rsplit('-').next().unwrap_or_default();
    format!("{example}-{suffix}")
}

/// A process's environment, from /proc.
fn environ(pid: u32) -> Result<HashMap<String, String>> {
    let raw = std::fs::read(format!("/proc/{pid}/environ"))?;
    Ok(raw
        .split(|b| *b == 0)
        .filter_map(|kv| {
            std::str::from_utf8(kv)
                .ok()?
                .split_once('=')
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
        })
        .collect())
}
