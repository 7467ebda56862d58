//! `Subscription`: a tenant's plan, trial and manual payments.
//!
//! Payments are manual (Kaspi transfer, invoice): the platform owner records them by
//! moving `paidUntil` forward. The billing job computes the state in status; a
//! suspension caused by billing shows in status, never by editing any spec.

use k8s_openapi::apimachinery::pkg::apis::meta::v1::{Condition, Time};
use kube::{CustomResource, KubeSchema};
use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::pattern;

/// Billing of one TrufflesClient.
#[derive(CustomResource, KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq)]
#[kube(
    group = "truffles.kz",
    version = "v1alpha1",
    kind = "Subscription",
    doc = "Billing of one TrufflesClient: plan, price, trial and manual payments.",
    plural = "subscriptions",
    singular = "subscription",
    shortname = "tsub",
    category = "truffles",
    namespaced,
    status = "SubscriptionStatus",
    printcolumn = r#"{"name":"Client","type":"string","jsonPath":".spec.clientRef.name"}"#,
    printcolumn = r#"{"name":"Plan","type":"string","jsonPath":".spec.plan"}"#,
    printcolumn = r#"{"name":"State","type":"string","jsonPath":".status.state"}"#,
    printcolumn = r#"{"name":"Paid Until","type":"string","jsonPath":".spec.paidUntil"}"#,
    printcolumn = r#"{"name":"Age","type":"date","jsonPath":".metadata.creationTimestamp"}"#,
    validation = Rule::new("self.spec.clientRef.name == oldSelf.spec.clientRef.name").message("spec.clientRef is immutable: create a new Subscription for another client"),
)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionSpec {
    /// The TrufflesClient billed, in the same namespace.
    pub client_ref: ClientRef,
    /// Plan name, e.g. start, business, pro.
    #[schemars(length(min = 1, max = 63), regex(pattern = pattern::DNS_LABEL))]
    pub plan: String,
    /// Price per billing period.
    pub price: Price,
    /// Length of one paid period, in months.
    #[serde(default = "default_period_months")]
    #[schemars(range(min = 1, max = 36))]
    pub period_months: u32,
    /// Free trial before the first payment.
    #[serde(default)]
    pub trial: Trial,
    /// Last day covered by payments received (manual payments move it forward).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::DATE))]
    pub paid_until: Option<String>,
    /// Who receives billing reminders.
    #[serde(default)]
    pub reminders: ReminderSpec,
    /// Days past due before the tenant is suspended.
    #[serde(default = "default_grace_days")]
    #[schemars(range(min = 0, max = 90))]
    pub grace_days: u32,
    /// Opt-in: delete the client's data after this long suspended without payment.
    /// Takes effect only if the TrufflesClient's deletion policy is Purge.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub auto_delete: Option<AutoDelete>,
    /// Cancelled subscriptions stop billing and suspend the tenant.
    #[serde(default)]
    pub cancelled: bool,
}

fn default_period_months() -> u32 {
    1
}
fn default_grace_days() -> u32 {
    7
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ClientRef {
    /// Name of the TrufflesClient.
    #[schemars(length(min = 1, max = 63))]
    pub name: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Price {
    /// Amount in whole units of the currency (tenge for KZT).
    #[schemars(range(min = 0))]
    pub amount: u64,
    #[serde(default)]
    pub currency: Currency,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, Default, PartialEq, Eq, JsonSchema)]
pub enum Currency {
    #[default]
    KZT,
    RUB,
    USD,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Trial {
    /// Trial length in days; 0 means no trial.
    #[serde(default = "default_trial_days")]
    #[schemars(range(min = 0, max = 90))]
    pub days: u32,
    /// First day of the trial; the resource's creation date when empty.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = pattern::DATE))]
    pub start: Option<String>,
}

impl Default for Trial {
    fn default() -> Self {
        Self {
            days: default_trial_days(),
            start: None,
        }
    }
}

fn default_trial_days() -> u32 {
    7
}

#[derive(KubeSchema, Deserialize, Serialize, Clone, Debug, PartialEq, Eq)]
#[serde(rename_all = "camelCase")]
pub struct ReminderSpec {
    /// Telegram chat of the platform owner (or the client) for reminders.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    #[schemars(regex(pattern = r"^-?[0-9]+$"))]
    pub telegram_chat_id: Option<String>,
    /// E-mail addresses for reminders.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(length(max = 10))]
    pub emails: Vec<String>,
    /// Days before the end of a trial or paid period when a reminder is sent.
    #[serde(default = "default_days_before")]
    #[schemars(length(max = 10))]
    #[x_kube(validation = Rule::new("self.all(d, d >= 1 && d <= 60)").message("reminder days must be between 1 and 60"))]
    pub days_before: Vec<u32>,
}

impl Default for ReminderSpec {
    fn default() -> Self {
        Self {
            telegram_chat_id: None,
            emails: Vec::new(),
            days_before: default_days_before(),
        }
    }
}

fn default_days_before() -> Vec<u32> {
    vec![3, 1]
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct AutoDelete {
    /// Days in Suspended without payment before deletion (the plan says 90).
    #[schemars(range(min = 30, max = 3650))]
    pub after_days_suspended: u32,
}

/// Billing state computed by the billing job.
#[derive(Deserialize, Serialize, Clone, Debug, Default, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SubscriptionStatus {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub state: Option<BillingState>,
    /// Current period (trial or paid), as dates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub current_period: Option<Period>,
    /// Since when the tenant is suspended for billing.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub suspended_since: Option<Time>,
    /// The opt-in automatic deletion is due (the TrufflesClient is purged if its
    /// deletion policy confirms Purge).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub deletion_due: Option<bool>,
    /// Reminders already sent, so none is sent twice.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub reminders_sent: Vec<ReminderRecord>,
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    #[schemars(extend("x-kubernetes-list-type" = "map", "x-kubernetes-list-map-keys" = ["type"]))]
    pub conditions: Vec<Condition>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub observed_generation: Option<i64>,
}

/// Billing states (stored in the database as trial, active, past_due, suspended, cancelled).
#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum BillingState {
    Trial,
    Active,
    PastDue,
    Suspended,
    Cancelled,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct Period {
    pub start: String,
    pub end: String,
}

#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct ReminderRecord {
    #[serde(rename = "type")]
    pub reminder_type: ReminderType,
    /// The day the reminder was due; with the type it identifies it.
    pub due_on: String,
    /// The end of the trial or period it was about.
    pub period_end: String,
    pub sent_at: Time,
    /// telegram or email.
    pub via: String,
}

#[derive(Deserialize, Serialize, Clone, Copy, Debug, PartialEq, Eq, JsonSchema)]
pub enum ReminderType {
    TrialEnding,
    PaymentDue,
    PastDue,
    FinalWarning,
}
