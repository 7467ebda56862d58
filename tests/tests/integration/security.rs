//! The tenant boundary, attacked: each test tries what a reader of an access
//! log, a curious tenant or a careless `kubectl delete` would, against the
//! real runtime, operator, PostgreSQL, Redis and API server, and checks it is
//! refused and loses nothing. Each attempt is counted in [`ATTACKS`]; the last
//! line of each test prints how many it tried.

use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Duration;

use anyhow::{Context as _, Result};
use k8s_openapi::api::core::v1::Secret;
use kube::api::{DeleteParams, Patch, PatchParams};
use kube::runtime::wait::conditions;
use serde_json::json;
use truffles_tests::fakes::FakeChatflow;
use truffles_tests::runtime::{
    ADMIN_TOKEN, TenantRuntime, WEBHOOK_SECRET, chatflow_text, price_list,
};
use truffles_tests::{condition_reason, wait_until};

use super::operator::{Env, WAIT, secret_value, start_rendered_runtime};

/// Attacks tried by this suite (all tests of the process).
static ATTACKS: AtomicUsize = AtomicUsize::new(0);

pub(super) fn attack(what: &str) {
    let n = ATTACKS.fetch_add(1, Ordering::Relaxed) + 1;
    println!("attack {n}: {what}");
}

pub(super) fn tried(test: &str) {
    println!(
        "security suite: {test}: {} attacks tried so far, each refused",
        ATTACKS.load(Ordering::Relaxed)
    );
}

/// The admin API answers its own token only, on its own listener only, and
/// stops answering after a burst of wrong tokens.
#[tokio::test]
async fn the_admin_api_takes_its_own_token_on_its_own_port_only() -> Result<()> {
    let rt = TenantRuntime::new("sec-admin", json!({})).await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    let admin = |addr: std::net::SocketAddr, route: &str| {
        format!("http://{addr}/t/{}/admin/{route}", rt.name)
    };
    let routes = [
        ("POST", "person/export"),
        ("POST", "person/erase"),
        ("POST", "knowledge/sync"),
        ("PUT", "knowledge/upload/manual/prices.md"),
        ("DELETE", "knowledge/upload/manual/prices.md"),
    ];
    let call = |method: &str, url: String, bearer: &str| {
        let method = reqwest::Method::from_bytes(method.as_bytes()).expect("a method");
        rt.http
            .request(method, url)
            .bearer_auth(bearer)
            .json(&json!({"phone": "+7 701 555 0101"}))
            .send()
    };
    for (method, route) in routes {
        attack(&format!(
            "{method} admin/{route} with the webhook URL's secret"
        ));
        let status = call(method, admin(running.admin_addr, route), WEBHOOK_SECRET)
            .await?
            .status();
        assert_eq!(status, 401, "{route}: the webhook secret is no admin token");
        attack(&format!(
            "{method} admin/{route} through the public listener"
        ));
        let status = call(method, admin(running.addr, route), ADMIN_TOKEN)
            .await?
            .status();
        assert_eq!(status, 404, "{route} is not served on the public port");
    }
    // The admin token works (the export of nobody is an empty export).
    let export = call(
        "POST",
        admin(running.admin_addr, "person/export"),
        ADMIN_TOKEN,
    )
    .await?;
    assert_eq!(export.status(), 200);
    // Nothing of the refusals is stored.
    assert_eq!(rt.count("SELECT count(*) FROM error_logs").await?, 0);
    assert_eq!(
        rt.count("SELECT count(*) FROM audit_log WHERE actor_id = 'admin-token'")
            .await?,
        1,
        "the export is audited with the credential that asked"
    );

    // Guessing: past ten failures a minute every admin call is refused for a
    // minute, the right token too.
    attack("guessing the admin token by volume");
    let mut statuses = Vec::new();
    for guess in 0..12 {
        let url = admin(running.admin_addr, "person/export");
        statuses.push(call("POST", url, &format!("guess-{guess}")).await?.status());
    }
    assert!(
        statuses.iter().filter(|s| s.as_u16() == 429).count() >= 1,
        "{statuses:?}"
    );
    let locked = call(
        "POST",
        admin(running.admin_addr, "person/export"),
        ADMIN_TOKEN,
    )
    .await?;
    assert_eq!(locked.status(), 429);
    let metrics = rt.metrics(&running).await?;
    assert!(metrics.contains("admin_unauthorized"), "{metrics}");
    tried("admin API");
    Ok(())
}

/// A body is not read before its sender is checked: a 50 MiB upload without
/// the admin token, or a delivery without the webhook secret, is refused at once.
#[tokio::test]
async fn an_unauthenticated_body_is_not_read() -> Result<()> {
    let rt = TenantRuntime::new(
        "sec-body",
        json!({"knowledge": {"sources": [
            {"name": "manual", "type": "policy", "upload": {"maxSizeMib": 100}}]}}),
    )
    .await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    // The head announces 50 MiB and no byte of it follows: only a server that
    // answers before reading the body answers at all.
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let wrong = "0".repeat(WEBHOOK_SECRET.len());
    let cases = [
        (
            "a 50 MiB upload without the admin token",
            running.admin_addr,
            "PUT",
            format!("/t/{}/admin/knowledge/upload/manual/big.md", rt.name),
            "401",
        ),
        (
            "a 50 MiB ChatFlow delivery to a wrong webhook secret",
            running.addr,
            "POST",
            format!("/t/{}/webhook/{wrong}", rt.name),
            "404",
        ),
        (
            "a 50 MiB Telegram delivery without the secret token",
            running.addr,
            "POST",
            format!("/t/{}/telegram", rt.name),
            "404",
        ),
    ];
    for (what, addr, method, path, status) in cases {
        attack(what);
        let mut stream = tokio::net::TcpStream::connect(addr).await?;
        let head = format!(
            "{method} {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {WEBHOOK_SECRET}\r\nContent-Length: {}\r\n\r\n",
            50 * 1024 * 1024
        );
        stream.write_all(head.as_bytes()).await?;
        let mut answer = vec![0u8; 512];
        let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut answer))
            .await
            .with_context(|| format!("{what}: the refusal came before the body"))??;
        let answer = String::from_utf8_lossy(&answer[..n]);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{what}: {answer}"
        );
    }
    assert_eq!(rt.count("SELECT count(*) FROM uploads").await?, 0);
    tried("admin body");
    Ok(())
}

/// `kubectl delete secret <name>-runtime`: the Secret comes back with the same
/// PII key and webhook secret; the old webhook URL still works and a customer
/// who wrote before is the same customer after.
#[tokio::test]
async fn a_deleted_runtime_secret_returns_with_the_same_keys() -> Result<()> {
    let env = Env::start("sec-custody").await?;
    let chatflow = FakeChatflow::start("chatflow-token-value", "i-1").await?;
    let channels = json!({"whatsapp": {"instanceId": "i-1", "apiBaseUrl": chatflow.url,
        "tokenSecretRef": {"name": "kept-shop-creds", "key": "token"}}});
    env.onboard("kept-shop", json!({"channels": channels}))
        .await?;
    let secrets: kube::Api<Secret> = env.ns.api();
    let before = secrets.get("kept-shop-runtime").await?;
    let webhook: Secret = secrets.get("kept-shop-webhook").await?;
    let published = secret_value(&webhook, "url").context("url")?;
    let path = published
        .split_once("/t/")
        .map(|(_, p)| format!("/t/{p}"))
        .context("webhook path")?;
    let write = |running: &truffles_bot::serve::Running, id: &str| {
        let url = format!("http://{}{path}", running.addr);
        let body = chatflow_text(id, "77015705511", "Здравствуйте");
        async move { reqwest::Client::new().post(url).json(&body).send().await }
    };
    let extra = ["--chatflow-token=chatflow-token-value"];
    let (running, dir) = start_rendered_runtime(&env, "kept-shop", &extra).await?;
    assert_eq!(write(&running, "KEPT-1").await?.status(), 200);
    chatflow.wait_sent(1, Duration::from_secs(30)).await?;
    running.stop().await;

    attack("deleting the tenant's runtime Secret");
    secrets
        .delete("kept-shop-runtime", &DeleteParams::default())
        .await?;
    let uid = before.metadata.uid.clone().unwrap_or_default();
    let restored = wait_until(
        &secrets,
        "kept-shop-runtime",
        "recreated",
        WAIT,
        |s: Option<&Secret>| s.is_some_and(|s| s.metadata.uid.as_deref() != Some(uid.as_str())),
    )
    .await?
    .context("the runtime Secret came back")?;
    for key in [
        "TRUFFLES_PII_KEY",
        "TRUFFLES_WEBHOOK_SECRET",
        "TRUFFLES_ADMIN_TOKEN",
        "DATABASE_URL",
    ] {
        assert_eq!(
            secret_value(&restored, key),
            secret_value(&before, key),
            "{key} is the same"
        );
    }

    attack("editing the tenant's PII key in its runtime Secret");
    let edit = json!({"stringData": {"TRUFFLES_PII_KEY": "00".repeat(32)}});
    secrets
        .patch(
            "kept-shop-runtime",
            &PatchParams::default(),
            &Patch::Merge(&edit),
        )
        .await?;
    let pii = secret_value(&before, "TRUFFLES_PII_KEY").context("PII key")?;
    wait_until(
        &secrets,
        "kept-shop-runtime",
        "the PII key put back",
        WAIT,
        |s: Option<&Secret>| {
            s.and_then(|s| secret_value(s, "TRUFFLES_PII_KEY"))
                .as_deref()
                == Some(pii.as_str())
        },
    )
    .await?;

    // The old URL works; the customer is recognised (one user, two messages).
    let (running, dir2) = start_rendered_runtime(&env, "kept-shop", &extra).await?;
    assert_eq!(write(&running, "KEPT-2").await?.status(), 200);
    chatflow.wait_sent(2, Duration::from_secs(30)).await?;
    let users: i64 = sqlx::query_scalar("SELECT count(*) FROM tenant_kept_shop.users")
        .fetch_one(&env.db.pool)
        .await?;
    assert_eq!(
        users, 1,
        "the customer who wrote before is the same customer"
    );
    running.stop().await;
    for d in [dir, dir2] {
        let _ = std::fs::remove_dir_all(d);
    }
    tried("key custody");
    env.finish().await
}

/// With both copies of the PII key gone, the operator refuses to make a new
/// one for a tenant with data: the reconcile fails with `CredentialsLost`
/// and no runtime Secret with another key appears.
#[tokio::test]
async fn a_lost_pii_key_is_never_replaced() -> Result<()> {
    let mut env = Env::start("sec-lost").await?;
    env.onboard("lost-shop", json!({})).await?;
    attack("losing both copies of the PII key");
    // Both go while the operator is down, as in a restore gone wrong;
    // otherwise it would take the Secret's key back into custody first.
    env.stop_operator();
    sqlx::query("DELETE FROM platform.tenant_credentials")
        .execute(&env.db.pool)
        .await?;
    let secrets: kube::Api<Secret> = env.ns.api();
    let before = secrets.get("lost-shop-runtime").await?;
    secrets
        .delete("lost-shop-runtime", &DeleteParams::default())
        .await?;
    wait_until(
        &secrets,
        "lost-shop-runtime",
        "deleted",
        WAIT,
        conditions::is_deleted(&before.metadata.uid.clone().unwrap_or_default()),
    )
    .await?;
    env.start_operator();
    let tc = env
        .wait_for("lost-shop", "CredentialsLost", |tc| {
            condition_reason(tc, "Ready").as_deref() == Some("CredentialsLost")
        })
        .await?;
    let message = serde_json::to_string(&tc.status)?;
    assert!(message.contains("TRUFFLES_PII_KEY"), "{message}");
    assert!(
        secrets.get_opt("lost-shop-runtime").await?.is_none(),
        "no Secret with a new key"
    );
    tried("lost key");
    env.finish().await
}

/// Rotations asked for by annotation: the webhook secret keeps its old value
/// for a window (ChatFlow's console is updated meanwhile), the database
/// password changes and the old one stops working.
#[tokio::test]
async fn rotations_replace_the_webhook_secret_and_the_database_password() -> Result<()> {
    let env = Env::start("sec-rotate").await?;
    env.onboard("turn-shop", json!({})).await?;
    let secrets: kube::Api<Secret> = env.ns.api();
    let before = secrets.get("turn-shop-runtime").await?;
    let old_secret = secret_value(&before, "TRUFFLES_WEBHOOK_SECRET").context("secret")?;
    let old_url = secret_value(&before, "DATABASE_URL").context("url")?;
    let annotate = json!({"metadata": {"annotations": {
        "truffles.kz/rotate-webhook-secret": "2026-12-02",
        "truffles.kz/rotate-database-password": "2026-12-02"}}});
    env.clients()
        .patch(
            "turn-shop",
            &PatchParams::default(),
            &Patch::Merge(&annotate),
        )
        .await?;
    let after = wait_until(
        &secrets,
        "turn-shop-runtime",
        "rotated",
        WAIT,
        |s: Option<&Secret>| {
            s.and_then(|s| secret_value(s, "TRUFFLES_WEBHOOK_SECRET_PREVIOUS"))
                .is_some()
        },
    )
    .await?
    .context("the Secret")?;
    let new_secret = secret_value(&after, "TRUFFLES_WEBHOOK_SECRET").context("secret")?;
    assert_ne!(new_secret, old_secret);
    assert_eq!(
        secret_value(&after, "TRUFFLES_WEBHOOK_SECRET_PREVIOUS").as_deref(),
        Some(old_secret.as_str())
    );
    let until: i64 = secret_value(&after, "TRUFFLES_WEBHOOK_SECRET_PREVIOUS_UNTIL")
        .context("until")?
        .parse()?;
    let now = chrono::Utc::now().timestamp();
    assert!(
        (now + 23 * 3600..=now + 24 * 3600).contains(&until),
        "{until}"
    );
    let new_url = secret_value(&after, "DATABASE_URL").context("url")?;
    assert_ne!(new_url, old_url);
    attack("connecting with the database password from before the rotation");
    use sqlx::Connection;
    assert!(sqlx::PgConnection::connect(&old_url).await.is_err());
    sqlx::PgConnection::connect(&new_url).await?;

    // Both URLs reach the runtime during the window.
    let extra = ["--chatflow-token=chatflow-token-value"];
    let (running, dir) = start_rendered_runtime(&env, "turn-shop", &extra).await?;
    for secret in [&old_secret, &new_secret] {
        let url = format!("http://{}/t/turn-shop/webhook/{secret}", running.addr);
        let body = chatflow_text("ROT", "77015705512", "hi");
        let status = reqwest::Client::new().post(url).json(&body).send().await?;
        assert_eq!(status.status(), 200);
    }
    running.stop().await;
    let _ = std::fs::remove_dir_all(dir);

    // A typo in the annotation is an invalid spec, not a silent no-op.
    let typo = json!({"metadata": {"annotations": {"truffles.kz/rotate-webhok-secret": "1"}}});
    env.clients()
        .patch("turn-shop", &PatchParams::default(), &Patch::Merge(&typo))
        .await?;
    env.wait_for("turn-shop", "InvalidSpec", |tc| {
        condition_reason(tc, "Ready").as_deref() == Some("InvalidSpec")
    })
    .await?;
    tried("rotation");
    env.finish().await
}

/// A namespace enforcing Pod Security `restricted` admits every pod the
/// operator makes for a tenant (and refuses an unhardened one, so the
/// enforcement is real); the tenant has its NetworkPolicy.
#[tokio::test]
async fn a_restricted_namespace_admits_the_tenants_pods() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use k8s_openapi::api::batch::v1::CronJob;
    use k8s_openapi::api::core::v1::{Namespace, Pod, PodTemplateSpec};
    use k8s_openapi::api::networking::v1::NetworkPolicy;
    use kube::api::{ListParams, PostParams};

    let env = Env::start("sec-psa").await?;
    let namespaces: kube::Api<Namespace> = kube::Api::all(env.ctx.client.clone());
    let enforce = json!({"metadata": {"labels": {
        "pod-security.kubernetes.io/enforce": "restricted",
        "pod-security.kubernetes.io/enforce-version": "latest"}}});
    namespaces
        .patch(
            &env.ns.name,
            &PatchParams::default(),
            &Patch::Merge(&enforce),
        )
        .await?;
    env.onboard(
        "psa-shop",
        json!({"backup": {"enabled": true, "storage": "Filesystem"}}),
    )
    .await?;

    let pods: kube::Api<Pod> = env.ns.api();
    let dry_run = PostParams {
        dry_run: true,
        ..PostParams::default()
    };
    let as_pod = |name: &str, template: PodTemplateSpec| Pod {
        metadata: kube::api::ObjectMeta {
            name: Some(name.to_owned()),
            labels: template.metadata.and_then(|m| m.labels),
            ..Default::default()
        },
        spec: template.spec,
        ..Pod::default()
    };
    attack("an unhardened pod in the tenant's namespace");
    let bare = json!({"metadata": {"name": "bare"}, "spec": {"containers": [{"name": "c", "image": "x"}]}});
    let refused = pods.create(&dry_run, &serde_json::from_value(bare)?).await;
    assert!(
        matches!(&refused, Err(kube::Error::Api(e)) if e.code == 403),
        "restricted is enforced: {refused:?}"
    );
    let deployment: Deployment = env.ns.api().get("psa-shop-bot").await?;
    let template = deployment.spec.context("spec")?.template;
    pods.create(&dry_run, &as_pod("runtime", template)).await?;
    for cron in ["psa-shop-knowledge-sync", "psa-shop-backup"] {
        let job: CronJob = env.ns.api().get(cron).await?;
        let template = job
            .spec
            .and_then(|s| s.job_template.spec)
            .context("job template")?
            .template;
        pods.create(&dry_run, &as_pod(cron, template))
            .await
            .with_context(|| format!("{cron}'s pod is admitted"))?;
    }
    // The ReplicaSet's own pod was admitted too.
    let selector = ListParams::default().labels("app.kubernetes.io/instance=psa-shop");
    let deadline = tokio::time::Instant::now() + WAIT;
    while pods.list(&selector).await?.items.is_empty() {
        anyhow::ensure!(
            tokio::time::Instant::now() < deadline,
            "no runtime pod was created"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    let policy: NetworkPolicy = env.ns.api().get("psa-shop-bot").await?;
    let spec = serde_json::to_value(policy.spec.context("policy spec")?)?;
    assert_eq!(
        spec["podSelector"]["matchLabels"]["truffles.kz/client"],
        "psa-shop"
    );
    assert_eq!(spec["policyTypes"], json!(["Ingress", "Egress"]));
    tried("pod security");
    env.finish().await
}

/// Each tenant's runtime gets its own Redis user, confined to its prefix:
/// tenant A's credentials neither read, write, delete nor list B's keys
/// (B's dedup marks and conversation memory), and A's runtime works with them.
#[tokio::test]
async fn a_tenants_redis_user_is_refused_on_other_tenants_keys() -> Result<()> {
    let env = Env::start("sec-redis").await?;
    let chatflow = FakeChatflow::start("chatflow-token-value", "i-1").await?;
    let channels = json!({"whatsapp": {"instanceId": "i-1", "apiBaseUrl": chatflow.url,
        "tokenSecretRef": {"name": "ra-shop-creds", "key": "token"}}});
    env.onboard("ra-shop", json!({"channels": channels}))
        .await?;
    env.onboard("rb-shop", json!({})).await?;
    let secrets: kube::Api<Secret> = env.ns.api();
    let url_of = |s: &Secret| secret_value(s, "REDIS_URL").context("REDIS_URL");
    let a_url = url_of(&secrets.get("ra-shop-runtime").await?)?;
    let b_url = url_of(&secrets.get("rb-shop-runtime").await?)?;
    assert!(
        a_url.contains("truffles-ra-shop:") && a_url != b_url,
        "own users"
    );

    let mut admin = truffles_tests::redis_connection().await?;
    let b_key = "truffles:rb-shop:dedup:chatflow:B-1";
    redis::cmd("SET")
        .arg(b_key)
        .arg("1")
        .query_async::<()>(&mut admin)
        .await?;
    let mut a = redis::Client::open(a_url.as_str())?
        .get_multiplexed_async_connection()
        .await?;
    let refused = |r: redis::RedisResult<redis::Value>| {
        matches!(&r, Err(e) if e.to_string().to_lowercase().contains("noperm")) || {
            println!("not refused: {r:?}");
            false
        }
    };
    for (what, cmd) in [
        ("reading B's key", redis::cmd("GET").arg(b_key).clone()),
        (
            "overwriting B's key",
            redis::cmd("SET").arg(b_key).arg("0").clone(),
        ),
        ("deleting B's key", redis::cmd("DEL").arg(b_key).clone()),
        (
            "marking B's next message a duplicate",
            redis::cmd("SET")
                .arg("truffles:rb-shop:dedup:chatflow:B-2")
                .arg("1")
                .clone(),
        ),
        ("listing every key", redis::cmd("KEYS").arg("*").clone()),
        ("scanning every key", redis::cmd("SCAN").arg("0").clone()),
        ("flushing the database", redis::cmd("FLUSHALL").clone()),
        (
            "reading the server's users",
            redis::cmd("ACL").arg("LIST").clone(),
        ),
        (
            "waking B's runtime on its channel",
            redis::cmd("PUBLISH")
                .arg("truffles:rb-shop:wake")
                .arg("inbox")
                .clone(),
        ),
        (
            "listing the server's channels",
            redis::cmd("PUBSUB").arg("CHANNELS").clone(),
        ),
        (
            "listening to every channel",
            redis::cmd("PSUBSCRIBE").arg("*").clone(),
        ),
    ] {
        attack(&format!("with tenant A's Redis user: {what}"));
        assert!(refused(cmd.query_async(&mut a).await), "{what}");
    }
    let still: Option<String> = redis::cmd("GET").arg(b_key).query_async(&mut admin).await?;
    assert_eq!(still.as_deref(), Some("1"), "B's key is untouched");
    // Its own channel is A's to use (its replicas wake each other there).
    let listeners: i64 = redis::cmd("PUBLISH")
        .arg("truffles:ra-shop:wake")
        .arg("inbox")
        .query_async(&mut a)
        .await?;
    assert_eq!(listeners, 0, "no runtime of A listens yet");

    // A's runtime, with the credentials the operator rendered, uses its prefix.
    let extra = ["--chatflow-token=chatflow-token-value"];
    let (running, dir) = start_rendered_runtime(&env, "ra-shop", &extra).await?;
    let url = format!("http://{}/t/ra-shop/webhook/{}", running.addr, {
        let s = secrets.get("ra-shop-runtime").await?;
        secret_value(&s, "TRUFFLES_WEBHOOK_SECRET").context("secret")?
    });
    let body = chatflow_text("RA-1", "77015705513", "Здравствуйте");
    assert_eq!(
        reqwest::Client::new()
            .post(&url)
            .json(&body)
            .send()
            .await?
            .status(),
        200
    );
    chatflow.wait_sent(1, Duration::from_secs(30)).await?;
    let a_keys: Vec<String> = redis::cmd("KEYS")
        .arg("truffles:ra-shop:*")
        .query_async(&mut admin)
        .await?;
    assert!(!a_keys.is_empty(), "A's runtime wrote under its prefix");
    running.stop().await;
    let _ = std::fs::remove_dir_all(dir);

    // A purge deletes the user with the keys.
    let users: Vec<String> = redis::cmd("ACL")
        .arg("USERS")
        .query_async(&mut admin)
        .await?;
    assert!(users.contains(&"truffles-rb-shop".to_owned()), "{users:?}");
    tried("Redis");
    env.finish().await
}

/// A webhook body copied from a log and posted days later is not stored (the
/// provider's own send time is past the replay window), and its message id
/// is not spent by the attempt: the real delivery still goes through.
#[tokio::test]
async fn a_replayed_old_webhook_is_not_stored() -> Result<()> {
    let rt = TenantRuntime::new("sec-replay", json!({})).await?;
    let running = rt.start(rt.config()?, price_list()).await?;
    let message = |sent: i64| {
        json!({"messageType": "text", "message": "Сколько стоит букет из 25 роз?",
            "metadata": {"messageId": "REPLAY-1", "remoteJid": "77015705514@s.whatsapp.net", "timestamp": sent}})
    };
    let now = chrono::Utc::now().timestamp();
    attack("a ChatFlow webhook replayed four days after it was sent");
    let (status, answer) = rt
        .post(&rt.webhook_url(&running), &message(now - 4 * 86_400))
        .await?;
    assert_eq!((status, answer["status"].as_str()), (200, Some("stale")));
    assert_eq!(rt.count("SELECT count(*) FROM inbox").await?, 0);
    let (status, answer) = rt.post(&rt.webhook_url(&running), &message(now)).await?;
    assert_eq!((status, answer["status"].as_str()), (200, Some("accepted")));
    rt.chatflow.wait_sent(1, Duration::from_secs(30)).await?;
    tried("replays");
    Ok(())
}

/// Customers' media links pointing inside: the cloud metadata address, a
/// private address, and loopback (here without the tests' allowance) are not
/// fetched, and each refusal is recorded in error_logs.
#[tokio::test]
async fn a_media_link_into_the_cluster_or_metadata_is_refused_and_recorded() -> Result<()> {
    let rt = TenantRuntime::new("sec-media", json!({})).await?;
    let voice = |id: &str, url: &str| {
        json!({"messageType": "audio", "message": null,
            "metadata": {"messageId": id, "remoteJid": "77015705514@s.whatsapp.net", "timestamp": chrono::Utc::now().timestamp()},
            "mediaData": {"type": "audio", "url": url,
                          "mimetype": "audio/ogg; codecs=opus", "ptt": true, "seconds": 4, "size": 20}})
    };
    let mut config = rt.config()?;
    config.fetch = truffles_bot::fetch::Guard::default();
    if let Some(llm) = config.llm.as_mut() {
        llm.transcription_model = Some("whisper-1".into());
    }
    let running = rt.start(config, price_list()).await?;
    let links = [
        "http://169.254.169.254/latest/meta-data/iam/security-credentials/".to_owned(),
        "http://10.0.0.1/voice.ogg".to_owned(),
        format!("{}/media/voice.ogg", rt.chatflow.url),
        "http://localhost:9/voice.ogg".to_owned(),
    ];
    for (i, link) in links.iter().enumerate() {
        attack(&format!("a voice message linking to {link}"));
        rt.post(
            &rt.webhook_url(&running),
            &voice(&format!("SSRF-{i}"), link),
        )
        .await?;
        // Each is answered like a voice that could not be heard.
        rt.chatflow
            .wait_sent(i + 1, Duration::from_secs(60))
            .await?;
    }
    let refused: Vec<String> = sqlx::query_scalar(
        "SELECT message FROM error_logs WHERE error_type = 'url_refused' ORDER BY created_at",
    )
    .fetch_all(&rt.pool)
    .await?;
    assert_eq!(refused.len(), links.len(), "{refused:?}");
    for (message, kind) in refused
        .iter()
        .zip(["link-local", "private", "loopback", "loopback"])
    {
        assert!(message.contains(kind), "{message}");
    }
    assert_eq!(rt.chatflow.media_downloads(), 0, "nothing was fetched");
    tried("media links");
    Ok(())
}

/// URL knowledge sources pointing inside are that source's failure in the
/// sync report, never fetched; a redirect from an allowed address to the
/// metadata address is refused at the hop.
#[tokio::test]
async fn a_url_source_into_the_cluster_or_metadata_is_refused_in_the_report() -> Result<()> {
    use axum::routing::get;
    use truffles_bot::knowledge::{KnowledgeBase, sync};
    use truffles_crds::client::KnowledgeSource;
    let rt = TenantRuntime::new("sec-urls", json!({})).await?;
    let dir = std::env::temp_dir().join(format!("truffles-sec-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(dir.join("sources"))?;
    let mut config = truffles_tests::runtime::local_knowledge(&dir)?;
    let kb = KnowledgeBase::open(&config)?;
    let site = axum::Router::new()
        .route(
            "/hop",
            get(|| async {
                (
                    axum::http::StatusCode::FOUND,
                    [("location", "http://169.254.169.254/latest/meta-data/")],
                )
            }),
        )
        .route("/page", get(|| async { "a page nobody may read" }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, site).await });
    let source = |name: &str, url: String| -> Result<KnowledgeSource> {
        Ok(serde_json::from_value(
            json!({"name": name, "type": "faq", "url": {"url": url}}),
        )?)
    };

    // Loopback allowed (the tests' fakes): only the redirect's hop is refused.
    let hop = [source("hop", format!("http://{addr}/hop"))?];
    attack("a URL source redirecting to the metadata address");
    let report = sync::run(&kb, &rt.pool, &hop, &config).await?;
    assert_eq!(report.unread.len(), 1, "{report:?}");
    assert!(report.unread[0].contains("169.254.169.254"), "{report:?}");

    // Without the allowance, as in production.
    config.fetch = truffles_bot::fetch::Guard::default();
    let inside = [
        source(
            "metadata",
            "http://169.254.169.254/latest/meta-data/".into(),
        )?,
        source("private", "http://10.0.0.1/prices".into())?,
        source("loopback", format!("http://{addr}/page"))?,
        source("named", format!("http://localhost:{}/page", addr.port()))?,
        source("ipv6", format!("http://[::1]:{}/page", addr.port()))?,
        source("scheme", "file:///etc/passwd".into())?,
    ];
    for s in &inside {
        attack(&format!(
            "a URL source at {}",
            s.url.as_ref().map_or("", |u| u.url.as_str())
        ));
    }
    let report = sync::run(&kb, &rt.pool, &inside, &config).await?;
    assert_eq!(report.added, 0, "{report:?}");
    assert_eq!(report.unread.len(), inside.len(), "{report:?}");
    for (line, s) in report.unread.iter().zip(&inside) {
        assert!(line.starts_with(&format!("{}:", s.name)), "{line}");
        assert!(
            line.contains("address: not fetched") || line.contains("only http and https"),
            "{line}"
        );
    }
    drop(kb);
    let _ = std::fs::remove_dir_all(&dir);
    tried("URL sources");
    Ok(())
}

/// The database boundary: a tenant's role password is stored as a SCRAM
/// verifier (the statement that set it carried no plaintext), and with the
/// statistics views restricted a tenant role reads no other tenant's table
/// statistics nor rows.
#[tokio::test]
async fn a_tenant_role_reads_nothing_of_another_tenant() -> Result<()> {
    use sqlx::Connection;
    let env = Env::start("sec-db").await?;
    truffles_migrations::restrict_statistics(&env.db.pool).await?;
    env.onboard("da-shop", json!({})).await?;
    env.onboard("db-shop", json!({})).await?;
    let stored: String =
        sqlx::query_scalar("SELECT rolpassword FROM pg_authid WHERE rolname = 'tenant_da_shop'")
            .fetch_one(&env.db.pool)
            .await?;
    assert!(stored.starts_with("SCRAM-SHA-256$4096:"), "{stored}");
    let secrets: kube::Api<Secret> = env.ns.api();
    let a_url = secret_value(&secrets.get("da-shop-runtime").await?, "DATABASE_URL")
        .context("DATABASE_URL")?;
    let password = url::Url::parse(&a_url)?
        .password()
        .unwrap_or_default()
        .to_owned();
    assert!(!stored.contains(&password));
    let mut a = sqlx::PgConnection::connect(&a_url).await?;
    for (what, sql) in [
        ("B's rows", "SELECT count(*) FROM tenant_db_shop.users"),
        (
            "B's table statistics",
            "SELECT count(*) FROM pg_stat_user_tables",
        ),
        (
            "every table's statistics",
            "SELECT count(*) FROM pg_stat_all_tables",
        ),
        (
            "the platform's clients",
            "SELECT count(*) FROM platform.clients",
        ),
        (
            "the kept credentials",
            "SELECT count(*) FROM platform.tenant_credentials",
        ),
    ] {
        attack(&format!("as tenant A's role, reading {what}"));
        let result = sqlx::query_scalar::<_, i64>(sql).fetch_one(&mut a).await;
        assert!(
            matches!(&result, Err(sqlx::Error::Database(e)) if e.code().as_deref() == Some("42501")),
            "{what}: {result:?}"
        );
    }
    // Its own tables work as before.
    sqlx::query_scalar::<_, i64>("SELECT count(*) FROM users")
        .fetch_one(&mut a)
        .await?;
    tried("database");
    env.finish().await
}

/// Whoever may write a TrufflesClient may not pick another image nor inject
/// Ingress configuration: the spec is refused with InvalidSpec, nothing runs.
#[tokio::test]
async fn a_spec_crossing_the_boundary_is_refused() -> Result<()> {
    use k8s_openapi::api::apps::v1::Deployment;
    use truffles_tests::{client_manifest, create_raw, secret_manifest};
    let env = Env::start("sec-spec").await?;
    let cases = [
        (
            "img-shop",
            json!({"runtime": {"image": "evil.example/miner:1"}}),
            "runtime.image",
        ),
        (
            "snip-shop",
            json!({"ingress": {"enabled": true, "host": "bots.example.kz", "annotations":
                {"nginx.ingress.kubernetes.io/server-snippet": "location /t/ { proxy_pass http://x; }"}}}),
            "ingress.annotations",
        ),
    ];
    for (name, spec, field) in cases {
        attack(&format!("a TrufflesClient setting {field}"));
        create_raw::<Secret>(&env.ns, &secret_manifest(name)).await?;
        create_raw::<truffles_crds::TrufflesClient>(&env.ns, &client_manifest(name, spec)).await?;
        let tc = env
            .wait_for(name, "InvalidSpec", |tc| {
                condition_reason(tc, "Ready").as_deref() == Some("InvalidSpec")
            })
            .await?;
        let status = serde_json::to_string(&tc.status)?;
        assert!(status.contains(field), "{status}");
        let deployments: kube::Api<Deployment> = env.ns.api();
        assert!(deployments.get_opt(&format!("{name}-bot")).await?.is_none());
    }
    tried("spec boundary");
    env.finish().await
}
