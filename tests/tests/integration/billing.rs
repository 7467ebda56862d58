//! The billing timeline of a Subscription, driven by an injectable clock, against
//! the real control plane and PostgreSQL, with a local fake of the Telegram Bot API
//! that checks the documented sendMessage request.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use anyhow::Result;
use axum::extract::{Path, State};
use axum::routing::post;
use axum::{Json, Router};
use k8s_openapi::api::apps::v1::Deployment;
use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::jiff::ToSpan;
use k8s_openapi::jiff::civil::Date;
use k8s_openapi::jiff::tz::TimeZone;
use kube::api::{Patch, PatchParams};
use kube::{Api, ResourceExt};
use serde_json::{Value, json};
use truffles_crds::subscription::{BillingState, ReminderType};
use truffles_crds::{Subscription, TrufflesClient};
use truffles_operator::billing::controller::{
    self, BillingContext, Clock, EmailNotifier, TelegramNotifier,
};
use truffles_operator::tenant;
use truffles_tests::managers::SmtpServer;
use truffles_tests::{
    TestDatabase, TestNamespace, client_manifest, condition_reason, create_raw, install_crds,
    kube_client, operator_context, secret_manifest, wait_for,
};

const WAIT: Duration = Duration::from_secs(90);
const BOT_TOKEN: &str = "123456:TEST-owner-bot-token";

fn billing_context(
    client: kube::Client,
    db: &TestDatabase,
    clock: Arc<MovableClock>,
    telegram_url: &str,
    mailer: Option<Arc<EmailNotifier>>,
    namespace: &str,
) -> Result<BillingContext> {
    let notifier =
        TelegramNotifier::new(BOT_TOKEN, Some(telegram_url)).map_err(anyhow::Error::msg)?;
    Ok(BillingContext {
        client,
        pool: db.pool.clone(),
        clock,
        notifier: Some(Arc::new(notifier)),
        mailer,
        namespace: Some(namespace.to_owned()),
    })
}

struct MovableClock(Mutex<Date>);

impl Clock for MovableClock {
    fn today(&self) -> Date {
        *self.0.lock().unwrap_or_else(|e| e.into_inner())
    }
}

impl MovableClock {
    fn set(&self, day: Date) {
        *self.0.lock().unwrap_or_else(|e| e.into_inner()) = day;
    }
}

type Sent = Arc<Mutex<Vec<(String, Value)>>>;

/// Accepts `POST /bot<token>/sendMessage` with a JSON body, as the Bot API documents,
/// and answers with a Message. Anything else is a 404 the notifier must surface.
async fn fake_telegram() -> Result<(String, Sent)> {
    async fn handle(
        State(sent): State<Sent>,
        Path((bot, method)): Path<(String, String)>,
        Json(body): Json<Value>,
    ) -> (axum::http::StatusCode, Json<Value>) {
        let token_ok = bot.strip_prefix("bot") == Some(BOT_TOKEN);
        if !token_ok
            || !method.eq_ignore_ascii_case("sendMessage")
            || body["chat_id"].as_i64().is_none()
            || body["text"].as_str().is_none()
        {
            return (
                axum::http::StatusCode::NOT_FOUND,
                Json(json!({"ok": false, "error_code": 404, "description": "Not Found"})),
            );
        }
        sent.lock()
            .unwrap_or_else(|e| e.into_inner())
            .push((method, body.clone()));
        let message = json!({
            "message_id": 1, "date": 1_764_000_000,
            "chat": {"id": body["chat_id"], "type": "private", "first_name": "Owner"},
            "text": body["text"]
        });
        (
            axum::http::StatusCode::OK,
            Json(json!({"ok": true, "result": message})),
        )
    }
    let sent: Sent = Arc::default();
    let app = Router::new()
        .route("/{bot}/{method}", post(handle))
        .with_state(sent.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move { axum::serve(listener, app).await });
    Ok((format!("http://{addr}/"), sent))
}

async fn wait_sub(
    api: &Api<Subscription>,
    name: &str,
    what: &str,
    check: impl Fn(&Subscription) -> bool,
) -> Result<Subscription> {
    wait_for(api, name, what, WAIT, check).await
}

async fn wait_client(
    api: &Api<TrufflesClient>,
    name: &str,
    what: &str,
    check: impl Fn(&TrufflesClient) -> bool,
) -> Result<TrufflesClient> {
    wait_for(api, name, what, WAIT, check).await
}

fn ready_reason(tc: &TrufflesClient) -> Option<String> {
    condition_reason(tc, "Ready")
}

fn state(sub: &Subscription) -> Option<BillingState> {
    sub.status.as_ref()?.state
}

/// Both controllers in their own namespace and database, a movable clock that
/// starts today, and the fake Telegram.
struct BillingEnv {
    ns: TestNamespace,
    db: TestDatabase,
    clock: Arc<MovableClock>,
    today: Date,
    sent: Sent,
    telegram_url: String,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl BillingEnv {
    async fn start(prefix: &str) -> Result<Self> {
        Self::start_with_mailer(prefix, None).await
    }

    async fn start_with_mailer(prefix: &str, mailer: Option<Arc<EmailNotifier>>) -> Result<Self> {
        let client = kube_client().await?;
        install_crds(&client).await?;
        let ns = TestNamespace::create(&client, prefix).await?;
        let db = TestDatabase::create().await?;
        truffles_migrations::migrate_platform(&db.pool).await?;
        let (telegram_url, sent) = fake_telegram().await?;
        let today = k8s_openapi::jiff::Timestamp::now()
            .to_zoned(TimeZone::UTC)
            .date();
        let clock = Arc::new(MovableClock(Mutex::new(today)));
        let tenants = Arc::new(operator_context(client.clone(), &db, Some(&ns.name)));
        let billing = Arc::new(billing_context(
            client,
            &db,
            clock.clone(),
            &telegram_url,
            mailer,
            &ns.name,
        )?);
        let tasks = vec![
            tokio::spawn(tenant::run(tenants)),
            tokio::spawn(controller::run(billing)),
        ];
        Ok(Self {
            ns,
            db,
            clock,
            today,
            sent,
            telegram_url,
            tasks,
        })
    }

    /// What the daily billing job runs with: the same clock, bot and database.
    async fn job(&self) -> Result<BillingContext> {
        billing_context(
            kube_client().await?,
            &self.db,
            self.clock.clone(),
            &self.telegram_url,
            None,
            &self.ns.name,
        )
    }

    /// A client with its Secret, Ready before its Subscription exists.
    async fn onboard(&self, name: &str, extra_spec: Value) -> Result<()> {
        create_raw::<Secret>(&self.ns, &secret_manifest(name)).await?;
        let tc = client_manifest(name, extra_spec);
        create_raw::<TrufflesClient>(&self.ns, &tc).await?;
        wait_client(&self.ns.api(), name, "Ready", |tc| {
            ready_reason(tc).as_deref() == Some("Provisioned")
        })
        .await?;
        Ok(())
    }

    async fn subscribe(&self, name: &str, extra_spec: Value) -> Result<()> {
        let mut sub = json!({
            "apiVersion": "truffles.kz/v1alpha1", "kind": "Subscription", "metadata": {"name": name},
            "spec": {"clientRef": {"name": name}, "plan": "start", "price": {"amount": 25000},
                     "trial": {"days": 7}, "reminders": {"telegramChatId": "777000111"}}
        });
        if let (Some(spec), Some(extra)) = (sub["spec"].as_object_mut(), extra_spec.as_object()) {
            spec.extend(extra.clone());
        }
        create_raw::<Subscription>(&self.ns, &sub).await?;
        Ok(())
    }

    /// Moves the clock to `days` after today and has the Subscription evaluated again.
    async fn advance_to(&self, name: &str, days: i64) -> Result<()> {
        self.clock.set(self.today.checked_add(days.days())?);
        let patch =
            json!({"metadata": {"annotations": {"test.truffles.kz/day": days.to_string()}}});
        self.ns
            .api::<Subscription>()
            .patch(name, &PatchParams::default(), &Patch::Merge(&patch))
            .await?;
        Ok(())
    }

    fn sent(&self) -> Vec<(String, Value)> {
        self.sent.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    async fn finish(self) -> Result<()> {
        self.tasks.iter().for_each(|t| t.abort());
        self.ns.delete().await
    }
}

#[tokio::test]
async fn unpaid_trial_is_reminded_suspended_and_reactivated_by_a_payment() -> Result<()> {
    let env = BillingEnv::start("billing").await?;
    env.onboard("bill-shop", json!({})).await?;
    let clients: Api<TrufflesClient> = env.ns.api();
    let subs: Api<Subscription> = env.ns.api();

    // Day 4 of a 7-day trial: the 3-days-before reminder.
    env.clock.set(env.today.checked_add(4.days())?);
    env.subscribe("bill-shop", json!({})).await?;
    let s = wait_sub(&subs, "bill-shop", "trial reminder recorded", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.reminders_sent.len() == 1)
    })
    .await?;
    assert_eq!(state(&s), Some(BillingState::Trial));
    assert_eq!(
        s.status
            .as_ref()
            .map(|st| st.reminders_sent[0].reminder_type),
        Some(ReminderType::TrialEnding)
    );
    let sent = env.sent();
    assert_eq!(sent.len(), 1);
    assert_eq!(sent[0].1["chat_id"], json!(777000111));
    let text = sent[0].1["text"].as_str().unwrap_or_default();
    assert!(
        text.contains("bill-shop") && text.contains("25000"),
        "{text}"
    );

    // Evaluating again the same day sends nothing new.
    env.advance_to("bill-shop", 4).await?;
    wait_sub(&subs, "bill-shop", "re-evaluated", |s| {
        s.annotations().contains_key("test.truffles.kz/day")
    })
    .await?;
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(env.sent().len(), 1, "a reminder is sent once");

    // Day 15: trial over on day 7, 7 grace days passed: suspended, final warning.
    env.advance_to("bill-shop", 15).await?;
    let s = wait_sub(&subs, "bill-shop", "Suspended", |s| {
        state(s) == Some(BillingState::Suspended)
    })
    .await?;
    assert!(s.status.as_ref().is_some_and(|st| {
        st.reminders_sent
            .iter()
            .any(|r| r.reminder_type == ReminderType::FinalWarning)
    }));
    let tc = wait_client(&clients, "bill-shop", "billing suspension", |tc| {
        ready_reason(tc).as_deref() == Some("BillingSuspended")
    })
    .await?;
    assert_eq!(
        tc.status.as_ref().and_then(|s| s.billing_suspended),
        Some(true)
    );
    assert_eq!(
        tc.spec.state,
        truffles_crds::client::TenantState::Active,
        "the spec is never edited"
    );
    let deployments: Api<Deployment> = env.ns.api();
    assert_eq!(
        deployments
            .get("bill-shop-bot")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(0)
    );

    // The owner records a payment: paidUntil moves forward, the bot comes back.
    let paid = json!({"spec": {"paidUntil": env.today.checked_add(45.days())?.to_string()}});
    subs.patch("bill-shop", &PatchParams::default(), &Patch::Merge(&paid))
        .await?;
    wait_sub(&subs, "bill-shop", "Active", |s| {
        state(s) == Some(BillingState::Active)
    })
    .await?;
    wait_client(&clients, "bill-shop", "Ready again", |tc| {
        ready_reason(tc).as_deref() == Some("Provisioned")
    })
    .await?;
    assert_eq!(
        deployments
            .get("bill-shop-bot")
            .await?
            .spec
            .and_then(|s| s.replicas),
        Some(1)
    );

    let reminders: Vec<String> =
        sqlx::query_scalar("SELECT type FROM platform.billing_reminders ORDER BY sent_at")
            .fetch_all(&env.db.pool)
            .await?;
    assert_eq!(reminders, ["trial_ending", "final_warning"]);
    let db_state: String = sqlx::query_scalar("SELECT state FROM platform.subscriptions")
        .fetch_one(&env.db.pool)
        .await?;
    assert_eq!(db_state, "active");
    env.finish().await
}

/// The daily billing job (`truffles-operator billing`) beside the controller:
/// it sends nothing the controller already sent, two runs at once send a due
/// reminder once, and with the controller down it is what sends it.
#[tokio::test]
async fn the_daily_billing_job_sends_each_reminder_once_beside_the_controller() -> Result<()> {
    let env = BillingEnv::start("billjob").await?;
    env.onboard("job-shop", json!({})).await?;
    let subs: Api<Subscription> = env.ns.api();
    env.clock.set(env.today.checked_add(4.days())?);
    env.subscribe("job-shop", json!({})).await?;
    wait_sub(&subs, "job-shop", "trial reminder recorded", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.reminders_sent.len() == 1)
    })
    .await?;
    assert_eq!(env.sent().len(), 1);

    // The same day: the job finds the reminder sent.
    let (a, b) = (env.job().await?, env.job().await?);
    let (first, second) = tokio::join!(controller::run_once(&a), controller::run_once(&b));
    assert_eq!(first?.evaluated, 1);
    assert_eq!(second?.failed, Vec::<String>::new());
    assert_eq!(env.sent().len(), 1, "nothing sent twice");

    // The operator is down; the day before the trial ends the job sends the
    // next reminder, once, although two runs overlap.
    env.tasks[1].abort();
    env.clock.set(env.today.checked_add(6.days())?);
    let (first, second) = tokio::join!(controller::run_once(&a), controller::run_once(&b));
    assert_eq!((first?.evaluated, second?.evaluated), (1, 1));
    assert_eq!(env.sent().len(), 2, "{:?}", env.sent());
    let text = env.sent()[1].1["text"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    assert!(text.contains("job-shop"), "{text}");
    let s = subs.get("job-shop").await?;
    let types: Vec<String> = s
        .status
        .as_ref()
        .map(|st| st.reminders_sent.iter().map(|r| r.due_on.clone()).collect())
        .unwrap_or_default();
    assert_eq!(types.len(), 2, "{types:?}");
    let rows: i64 = sqlx::query_scalar("SELECT count(*) FROM platform.billing_reminders")
        .fetch_one(&env.db.pool)
        .await?;
    assert_eq!(rows, 2);
    controller::run_once(&a).await?;
    assert_eq!(env.sent().len(), 2);
    env.finish().await
}

#[tokio::test]
async fn opted_in_deletion_purges_only_a_client_whose_policy_confirms_it() -> Result<()> {
    let env = BillingEnv::start("autodelete").await?;
    let purge = json!({"deletion": {"policy": "Purge", "confirmPurge": "gone-shop"}});
    env.onboard("gone-shop", purge).await?;
    env.onboard("kept-shop", json!({})).await?;
    let auto_delete = json!({"autoDelete": {"afterDaysSuspended": 30}});
    env.subscribe("gone-shop", auto_delete.clone()).await?;
    env.subscribe("kept-shop", auto_delete).await?;

    // Trial ends on day 7, suspension on day 14, deletion due on day 44.
    for name in ["gone-shop", "kept-shop"] {
        env.advance_to(name, 43).await?;
    }
    let clients: Api<TrufflesClient> = env.ns.api();
    wait_client(&clients, "gone-shop", "billing suspension", |tc| {
        ready_reason(tc).as_deref() == Some("BillingSuspended")
    })
    .await?;
    assert!(
        env.db.schema_exists("tenant_gone_shop").await?,
        "not deleted before the period"
    );

    for name in ["gone-shop", "kept-shop"] {
        env.advance_to(name, 44).await?;
    }
    let subs: Api<Subscription> = env.ns.api();
    wait_sub(&subs, "kept-shop", "deletion due", |s| {
        s.status.as_ref().and_then(|st| st.deletion_due) == Some(true)
    })
    .await?;
    let gone = wait_client(&clients, "gone-shop", "purged", |tc| {
        ready_reason(tc).as_deref() == Some("Deleted")
    })
    .await?;
    assert_eq!(gone.status.as_ref().and_then(|s| s.schema.clone()), None);
    assert!(!env.db.schema_exists("tenant_gone_shop").await?, "purged");
    // Retain (the default) is never purged by billing.
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert!(env.db.schema_exists("tenant_kept_shop").await?);
    let kept = clients.get("kept-shop").await?;
    assert_eq!(ready_reason(&kept).as_deref(), Some("BillingSuspended"));
    env.finish().await
}

#[tokio::test]
async fn reminders_also_go_by_email_when_addresses_are_given() -> Result<()> {
    let smtp = SmtpServer::start().await?;
    let mailer = EmailNotifier::new(
        &format!("smtp://127.0.0.1:{}", smtp.port),
        "Truffles <billing@truffles.kz>",
    )
    .map_err(anyhow::Error::msg)?;
    let env = BillingEnv::start_with_mailer("billing-mail", Some(Arc::new(mailer))).await?;
    env.onboard("mail-shop", json!({})).await?;
    env.clock.set(env.today.checked_add(4.days())?);
    let reminders = json!({"reminders": {"telegramChatId": "777000111", "emails": ["director@smiledental.kz"]}});
    env.subscribe("mail-shop", reminders).await?;
    let subs: Api<Subscription> = env.ns.api();
    let s = wait_sub(&subs, "mail-shop", "sent by both channels", |s| {
        s.status
            .as_ref()
            .is_some_and(|st| st.reminders_sent.len() == 2)
    })
    .await?;
    let mut vias: Vec<String> = s
        .status
        .iter()
        .flat_map(|st| st.reminders_sent.iter().map(|r| r.via.clone()))
        .collect();
    vias.sort();
    assert_eq!(vias, ["email", "telegram"]);
    let messages = smtp.messages();
    assert_eq!(messages.len(), 1, "{messages:?}");
    let mail = &messages[0];
    assert!(mail.contains("To: director@smiledental.kz"), "{mail}");
    assert!(
        mail.contains("From: Truffles <billing@truffles.kz>"),
        "{mail}"
    );
    assert!(mail.contains("Subject: Truffles: mail-shop"), "{mail}");
    let recorded: Vec<String> =
        sqlx::query_scalar("SELECT sent_via FROM platform.billing_reminders ORDER BY sent_via")
            .fetch_all(&env.db.pool)
            .await?;
    assert_eq!(recorded, ["email", "telegram"]);
    env.finish().await
}
