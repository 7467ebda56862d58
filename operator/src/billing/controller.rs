//! The Subscription controller: evaluates the billing state for today, sends the
//! reminder that is due (once), records it, and writes status. The TrufflesClient
//! controller reads that status to suspend a tenant for billing — no spec is edited.

use std::sync::Arc;
use std::time::Duration;

use futures::future::BoxFuture;
use futures::{FutureExt, StreamExt};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use k8s_openapi::jiff::civil::Date;
use k8s_openapi::jiff::tz::TimeZone;
use k8s_openapi::jiff::{Timestamp, ToSpan};
use kube::api::{Patch, PatchParams};
use kube::runtime::controller::Action;
use kube::runtime::{Controller, watcher};
use kube::{Api, Client, ResourceExt};
use sqlx::PgPool;
use tracing::{Instrument, warn};
use truffles_crds::Subscription;
use truffles_crds::subscription::{
    BillingState, Period, ReminderRecord, ReminderType, SubscriptionStatus,
};

use super::evaluate::{Evaluation, Reminder, evaluate};
use crate::tenant::FIELD_MANAGER;

/// Today's date for billing; injectable so tests can drive a timeline.
pub trait Clock: Send + Sync {
    fn today(&self) -> Date;
}

/// Billing days are UTC days.
pub struct SystemClock;

impl Clock for SystemClock {
    fn today(&self) -> Date {
        Timestamp::now().to_zoned(TimeZone::UTC).date()
    }
}

/// Delivers a reminder text to a Telegram chat.
pub trait Notifier: Send + Sync {
    fn send<'a>(&'a self, chat_id: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), String>>;
}

/// The platform owner's Telegram bot (teloxide); the API base URL is configurable.
pub struct TelegramNotifier {
    bot: teloxide::Bot,
}

impl TelegramNotifier {
    pub fn new(token: &str, api_url: Option<&str>) -> Result<Self, String> {
        let mut bot = teloxide::Bot::new(token);
        if let Some(url) = api_url {
            bot = bot.set_api_url(
                url.parse()
                    .map_err(|e| format!("invalid Telegram API URL: {e}"))?,
            );
        }
        Ok(Self { bot })
    }
}

impl Notifier for TelegramNotifier {
    fn send<'a>(&'a self, chat_id: &'a str, text: &'a str) -> BoxFuture<'a, Result<(), String>> {
        use teloxide::prelude::Requester;
        async move {
            let chat: i64 = chat_id
                .parse()
                .map_err(|_| format!("invalid Telegram chat id {chat_id:?}"))?;
            self.bot
                .send_message(teloxide::types::ChatId(chat), text)
                .await
                .map(drop)
                // teloxide's errors do not contain the token.
                .map_err(|e| format!("Telegram sendMessage failed: {e}"))
        }
        .boxed()
    }
}

/// E-mail reminders over SMTP (lettre); the transport comes from a URL such as
/// `smtps://user:password@smtp.example.kz:465` or `smtp://relay:25`.
pub struct EmailNotifier {
    transport: lettre::AsyncSmtpTransport<lettre::Tokio1Executor>,
    from: lettre::message::Mailbox,
}

impl EmailNotifier {
    pub fn new(smtp_url: &str, from: &str) -> Result<Self, String> {
        // The URL holds the password: report the failure without it or its parse error.
        let transport = lettre::AsyncSmtpTransport::<lettre::Tokio1Executor>::from_url(smtp_url)
            .map_err(|_| "TRUFFLES_SMTP_URL is not a valid smtp:// or smtps:// URL".to_owned())?
            .build();
        let from = from
            .parse()
            .map_err(|e| format!("invalid sender address {from:?}: {e}"))?;
        Ok(Self { transport, from })
    }

    pub async fn send(&self, to: &[String], subject: &str, text: &str) -> Result<(), String> {
        use lettre::AsyncTransport;
        let mut message = lettre::Message::builder()
            .from(self.from.clone())
            .subject(subject);
        for address in to {
            message = message.to(address
                .parse()
                .map_err(|e| format!("invalid reminder address {address:?}: {e}"))?);
        }
        let message = message
            .header(lettre::message::header::ContentType::TEXT_PLAIN)
            .body(text.to_owned())
            .map_err(|e| format!("building the e-mail: {e}"))?;
        self.transport
            .send(message)
            .await
            .map(drop)
            .map_err(|e| format!("SMTP delivery failed: {e}"))
    }
}

pub struct BillingContext {
    pub client: Client,
    pub pool: PgPool,
    pub clock: Arc<dyn Clock>,
    /// None: Telegram reminders are undeliverable (no bot configured).
    pub notifier: Option<Arc<dyn Notifier>>,
    /// None: e-mail reminders are undeliverable (no SMTP configured).
    pub mailer: Option<Arc<EmailNotifier>>,
    pub namespace: Option<String>,
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("platform database: {0}")]
    Database(#[from] sqlx::Error),
}

/// Runs the Subscription controller until the process is asked to stop.
pub async fn run(ctx: Arc<BillingContext>) {
    let api: Api<Subscription> = match &ctx.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    Controller::new(api, watcher::Config::default())
        .shutdown_on_signal()
        .run(reconcile, error_policy, ctx)
        .for_each(|_| async {})
        .await;
}

fn error_policy(sub: Arc<Subscription>, error: &Error, _ctx: Arc<BillingContext>) -> Action {
    warn!(subscription = %sub.name_any(), %error, "billing reconcile failed");
    Action::requeue(Duration::from_secs(60))
}

fn reconcile(
    sub: Arc<Subscription>,
    ctx: Arc<BillingContext>,
) -> BoxFuture<'static, Result<Action, Error>> {
    let span = tracing::info_span!("billing", subscription = %sub.name_any(), namespace = sub.namespace().unwrap_or_default());
    async move { evaluate_subscription(&sub, &ctx).await.map(Action::requeue) }
        .instrument(span)
        .boxed()
}

/// What one pass of the daily billing job did.
#[derive(Debug, Default, PartialEq, Eq)]
pub struct RunSummary {
    pub evaluated: usize,
    /// `namespace/name: error` of the Subscriptions that failed.
    pub failed: Vec<String>,
}

/// The daily billing CronJob (`truffles-operator billing`): every
/// Subscription in scope evaluated once, exactly as the controller does. It
/// covers the days the operator was not running and the namespaces no
/// operator watches; reminders are claimed in `platform.billing_reminders`
/// before they are sent, so the job and the controller never send one twice.
pub async fn run_once(ctx: &BillingContext) -> Result<RunSummary, Error> {
    let api: Api<Subscription> = match &ctx.namespace {
        Some(ns) => Api::namespaced(ctx.client.clone(), ns),
        None => Api::all(ctx.client.clone()),
    };
    let mut summary = RunSummary::default();
    for sub in api.list(&Default::default()).await?.items {
        let span = tracing::info_span!("billing", subscription = %sub.name_any(), namespace = sub.namespace().unwrap_or_default());
        match evaluate_subscription(&sub, ctx).instrument(span).await {
            Ok(_) => summary.evaluated += 1,
            Err(e) => summary.failed.push(format!(
                "{}/{}: {e}",
                sub.namespace().unwrap_or_default(),
                sub.name_any()
            )),
        }
    }
    Ok(summary)
}

/// Evaluates one Subscription for today: records it, sends the reminder that
/// is due (once), writes status. Returns how long until it is next due.
pub async fn evaluate_subscription(
    sub: &Subscription,
    ctx: &BillingContext,
) -> Result<Duration, Error> {
    let today = ctx.clock.today();
    let created = sub
        .metadata
        .creation_timestamp
        .as_ref()
        .map_or(today, |t| t.0.to_zoned(TimeZone::UTC).date());
    let evaluation = evaluate(&sub.spec, created, today);
    let previous = sub.status.clone().unwrap_or_default();
    let subscription_id = record_subscription(&ctx.pool, sub, &evaluation).await?;

    let mut reminders_sent = previous.reminders_sent.clone();
    let mut delivery: Result<(), String> = Ok(());
    if let Some(reminder) = evaluation.reminder.clone() {
        let (delivered, errors) = deliver(
            ctx,
            sub,
            subscription_id,
            &reminder,
            &evaluation,
            &reminders_sent,
        )
        .await?;
        for via in delivered {
            reminders_sent.push(ReminderRecord {
                reminder_type: reminder.kind,
                due_on: reminder.due_on.to_string(),
                period_end: reminder.period_end.to_string(),
                sent_at: Time(Timestamp::now()),
                via,
            });
        }
        if !errors.is_empty() {
            delivery = Err(errors.join("; "));
        }
    }
    let status = status(sub, &evaluation, reminders_sent, &delivery, &previous);
    let api: Api<Subscription> =
        Api::namespaced(ctx.client.clone(), &sub.namespace().unwrap_or_default());
    let patch = serde_json::json!({"apiVersion": "truffles.kz/v1alpha1", "kind": "Subscription", "status": status});
    api.patch_status(
        &sub.name_any(),
        &PatchParams::apply(FIELD_MANAGER).force(),
        &Patch::Apply(&patch),
    )
    .await?;

    // Wake up when the state or a reminder is next due (just after midnight UTC),
    // and retry a failed delivery within the hour.
    let wait = if delivery.is_err() {
        Duration::from_secs(600)
    } else {
        until(evaluation.next_change)
    };
    Ok(wait)
}

fn until(day: Date) -> Duration {
    let target = day
        .at(0, 5, 0, 0)
        .to_zoned(TimeZone::UTC)
        .map(|z| z.timestamp())
        .unwrap_or_else(|_| Timestamp::now());
    let secs = target.as_second() - Timestamp::now().as_second();
    Duration::from_secs(u64::try_from(secs).unwrap_or(0).clamp(60, 86_400))
}

fn already_sent(sent: &[ReminderRecord], reminder: &Reminder, via: &str) -> bool {
    let due = reminder.due_on.to_string();
    sent.iter()
        .any(|r| r.reminder_type == reminder.kind && r.due_on == due && r.via == via)
}

/// Sends the reminder through every channel the Subscription names that has not
/// had it yet. Returns the channels it went through (or another evaluator
/// already did) and what failed.
async fn deliver(
    ctx: &BillingContext,
    sub: &Subscription,
    subscription_id: Option<uuid::Uuid>,
    reminder: &Reminder,
    eval: &Evaluation,
    sent: &[ReminderRecord],
) -> Result<(Vec<String>, Vec<String>), Error> {
    let destinations = &sub.spec.reminders;
    let text = reminder_text(sub, reminder, eval);
    let (mut delivered, mut errors) = (Vec::new(), Vec::new());
    if destinations.telegram_chat_id.is_none() && destinations.emails.is_empty() {
        errors.push("the Subscription names no reminder destination (reminders.telegramChatId or reminders.emails)".to_owned());
    }
    if let Some(chat) = destinations
        .telegram_chat_id
        .as_deref()
        .filter(|_| !already_sent(sent, reminder, "telegram"))
    {
        let claim = Claim::take(&ctx.pool, subscription_id, reminder, "telegram").await?;
        let result = match &ctx.notifier {
            _ if claim == Claim::Taken => Ok(()),
            Some(notifier) => notifier.send(chat, &text).await,
            None => Err(
                "no Telegram bot configured for the operator (TRUFFLES_TELEGRAM_BOT_TOKEN)"
                    .to_owned(),
            ),
        };
        match result {
            Ok(()) => delivered.push("telegram".to_owned()),
            Err(e) => {
                claim
                    .release(&ctx.pool, subscription_id, reminder, "telegram")
                    .await?;
                errors.push(e)
            }
        }
    }
    if !destinations.emails.is_empty() && !already_sent(sent, reminder, "email") {
        let claim = Claim::take(&ctx.pool, subscription_id, reminder, "email").await?;
        let subject = format!(
            "Truffles: {} — {}",
            sub.spec.client_ref.name,
            reminder_name(reminder.kind).replace('_', " ")
        );
        let result = match &ctx.mailer {
            _ if claim == Claim::Taken => Ok(()),
            Some(mailer) => mailer.send(&destinations.emails, &subject, &text).await,
            None => {
                Err("no SMTP server configured for the operator (TRUFFLES_SMTP_URL)".to_owned())
            }
        };
        match result {
            Ok(()) => delivered.push("email".to_owned()),
            Err(e) => {
                claim
                    .release(&ctx.pool, subscription_id, reminder, "email")
                    .await?;
                errors.push(e)
            }
        }
    }
    Ok((delivered, errors))
}

/// A reminder's row in `platform.billing_reminders`, written before it is
/// sent: whoever inserts it sends it (the controller or the daily job).
#[derive(Debug, PartialEq, Eq)]
enum Claim {
    /// This evaluation sends it.
    Ours,
    /// Another evaluation sent it (or is sending it) already.
    Taken,
    /// The client is not in the platform database yet: nothing to claim in.
    Unrecorded,
}

impl Claim {
    async fn take(
        pool: &PgPool,
        subscription_id: Option<uuid::Uuid>,
        reminder: &Reminder,
        via: &str,
    ) -> Result<Self, Error> {
        let Some(id) = subscription_id else {
            return Ok(Claim::Unrecorded);
        };
        let inserted: Option<i64> = sqlx::query_scalar(
            "INSERT INTO platform.billing_reminders (subscription_id, type, due_on, period_end, sent_via)
             VALUES ($1, $2, $3::date, $4::date, $5) ON CONFLICT DO NOTHING RETURNING id",
        )
        .bind(id)
        .bind(reminder_name(reminder.kind))
        .bind(reminder.due_on.to_string())
        .bind(reminder.period_end.to_string())
        .bind(via)
        .fetch_optional(pool)
        .await?;
        Ok(if inserted.is_some() {
            Claim::Ours
        } else {
            Claim::Taken
        })
    }

    /// The send failed: the next evaluation may try again.
    async fn release(
        &self,
        pool: &PgPool,
        subscription_id: Option<uuid::Uuid>,
        reminder: &Reminder,
        via: &str,
    ) -> Result<(), Error> {
        if let (Claim::Ours, Some(id)) = (self, subscription_id) {
            sqlx::query(
                "DELETE FROM platform.billing_reminders
                 WHERE subscription_id = $1 AND type = $2 AND due_on = $3::date AND sent_via = $4",
            )
            .bind(id)
            .bind(reminder_name(reminder.kind))
            .bind(reminder.due_on.to_string())
            .bind(via)
            .execute(pool)
            .await?;
        }
        Ok(())
    }
}

/// The reminder as the platform owner reads it (Russian, with the figures).
pub fn reminder_text(sub: &Subscription, reminder: &Reminder, eval: &Evaluation) -> String {
    let client = &sub.spec.client_ref.name;
    let price = format!("{} {:?}", sub.spec.price.amount, sub.spec.price.currency);
    let end = reminder.period_end;
    let last_day = end.checked_sub(1.day()).unwrap_or(end);
    match reminder.kind {
        ReminderType::TrialEnding => {
            format!(
                "Truffles: пробный период клиента {client} заканчивается {last_day}. Тариф {}: {price}.",
                sub.spec.plan
            )
        }
        ReminderType::PaymentDue => format!(
            "Truffles: оплата клиента {client} действует до {last_day}. Следующий платёж: {price}."
        ),
        ReminderType::PastDue => format!(
            "Truffles: у клиента {client} нет оплаты с {end}. Бот будет отключён без оплаты ({price})."
        ),
        ReminderType::FinalWarning
            if eval.deletion_due || reminder.due_on > eval.suspended_since.unwrap_or(end) =>
        {
            format!(
                "Truffles: клиент {client} отключён с {}. Сохранить данные или удалить их? Данные хранятся до решения.",
                eval.suspended_since.unwrap_or(end)
            )
        }
        ReminderType::FinalWarning => format!(
            "Truffles: клиент {client} отключён за неуплату. Данные сохранены; после оплаты бот включится."
        ),
    }
}

fn status(
    sub: &Subscription,
    eval: &Evaluation,
    reminders_sent: Vec<ReminderRecord>,
    delivery: &Result<(), String>,
    previous: &SubscriptionStatus,
) -> SubscriptionStatus {
    let now = Time(Timestamp::now());
    let generation = sub.metadata.generation;
    let (ok, reason, message) = match delivery {
        Ok(()) => (
            true,
            format!("{:?}", eval.state),
            format!("billing state {:?} on {}", eval.state, eval.period.1),
        ),
        Err(e) => (false, "ReminderUndelivered".to_owned(), e.clone()),
    };
    let previous_ready = previous.conditions.iter().find(|c| c.type_ == "Ready");
    let ready = Condition {
        type_: "Ready".into(),
        status: if ok { "True" } else { "False" }.into(),
        reason,
        message,
        observed_generation: generation,
        last_transition_time: previous_ready
            .filter(|c| c.status == if ok { "True" } else { "False" })
            .map_or(now, |c| c.last_transition_time.clone()),
    };
    SubscriptionStatus {
        state: Some(eval.state),
        current_period: Some(Period {
            start: eval.period.0.to_string(),
            end: eval.period.1.to_string(),
        }),
        suspended_since: eval
            .suspended_since
            .and_then(|d| d.at(0, 0, 0, 0).to_zoned(TimeZone::UTC).ok())
            .map(|z| Time(z.timestamp())),
        deletion_due: Some(eval.deletion_due),
        reminders_sent,
        conditions: vec![ready],
        observed_generation: generation,
    }
}

fn state_name(state: BillingState) -> &'static str {
    match state {
        BillingState::Trial => "trial",
        BillingState::Active => "active",
        BillingState::PastDue => "past_due",
        BillingState::Suspended => "suspended",
        BillingState::Cancelled => "cancelled",
    }
}

fn reminder_name(kind: ReminderType) -> &'static str {
    match kind {
        ReminderType::TrialEnding => "trial_ending",
        ReminderType::PaymentDue => "payment_due",
        ReminderType::PastDue => "past_due",
        ReminderType::FinalWarning => "final_warning",
    }
}

/// Mirrors the subscription into `platform.subscriptions` (billing history outlives
/// a purge). None until the client has been onboarded.
async fn record_subscription(
    pool: &PgPool,
    sub: &Subscription,
    eval: &Evaluation,
) -> Result<Option<uuid::Uuid>, Error> {
    let id = sqlx::query_scalar(
        "INSERT INTO platform.subscriptions (client_id, plan, price_amount, currency, period_months, state,
                                             paid_until, current_period_start, current_period_end, suspended_since)
         SELECT c.id, $2, $3, $4, $5, $6, $7::date, $8::date, $9::date, $10::date
         FROM platform.clients c WHERE c.name = $1
         ON CONFLICT (client_id) DO UPDATE SET plan = EXCLUDED.plan, price_amount = EXCLUDED.price_amount,
             currency = EXCLUDED.currency, period_months = EXCLUDED.period_months, state = EXCLUDED.state,
             paid_until = EXCLUDED.paid_until, current_period_start = EXCLUDED.current_period_start,
             current_period_end = EXCLUDED.current_period_end, suspended_since = EXCLUDED.suspended_since,
             updated_at = now()
         RETURNING id",
    )
    .bind(&sub.spec.client_ref.name)
    .bind(&sub.spec.plan)
    .bind(i64::try_from(sub.spec.price.amount).unwrap_or(i64::MAX))
    .bind(format!("{:?}", sub.spec.price.currency))
    .bind(i32::try_from(sub.spec.period_months).unwrap_or(1))
    .bind(state_name(eval.state))
    .bind(sub.spec.paid_until.clone())
    .bind(eval.period.0.to_string())
    .bind(eval.period.1.to_string())
    .bind(eval.suspended_since.map(|d| d.to_string()))
    .fetch_optional(pool)
    .await?;
    Ok(id)
}
