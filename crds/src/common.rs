//! Types shared by both resources.

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

/// A key in a Secret in the resource's own namespace. Credentials are never
/// written into a spec: the spec names where they are.
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretKeyRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
    /// Key inside the Secret.
    #[schemars(length(min = 1, max = 253), regex(pattern = r"^[-._a-zA-Z0-9]+$"))]
    pub key: String,
}

impl SecretKeyRef {
    pub fn new(name: impl Into<String>, key: impl Into<String>) -> Self {
        Self {
            name: name.into(),
            key: key.into(),
        }
    }
}

/// A whole Secret in the resource's own namespace (an adapter reads several keys).
#[derive(Deserialize, Serialize, Clone, Debug, PartialEq, Eq, JsonSchema)]
#[serde(rename_all = "camelCase")]
pub struct SecretRef {
    /// Name of the Secret.
    #[schemars(length(min = 1, max = 253))]
    pub name: String,
}

/// Condition types the operator sets on a TrufflesClient. `Ready` summarises the
/// others, so `kubectl wait --for=condition=Ready` and Argo CD health checks work.
pub mod condition_type {
    pub const READY: &str = "Ready";
    pub const DATABASE_READY: &str = "DatabaseReady";
    pub const SECRETS_READY: &str = "SecretsReady";
    pub const KNOWLEDGE_READY: &str = "KnowledgeReady";
    pub const RUNTIME_READY: &str = "RuntimeReady";
    pub const WEBHOOK_REGISTERED: &str = "WebhookRegistered";
    pub const SUSPENDED: &str = "Suspended";
}

/// Patterns reused by several fields; CEL rules and schema patterns must agree.
pub mod pattern {
    /// A cron expression with five fields (what a Kubernetes CronJob accepts).
    pub const CRON: &str =
        r"^(@(yearly|annually|monthly|weekly|daily|midnight|hourly)|(\S+\s+){4}\S+)$";
    /// An http(s) URL.
    pub const HTTP_URL: &str = r"^https?://[^\s/$.?#][^\s]*$";
    /// A calendar date, `YYYY-MM-DD`.
    pub const DATE: &str = r"^[0-9]{4}-(0[1-9]|1[0-2])-(0[1-9]|[12][0-9]|3[01])$";
    /// A DNS-1123 label, used for names that become parts of other names.
    pub const DNS_LABEL: &str = r"^[a-z0-9]([-a-z0-9]*[a-z0-9])?$";
}
