//! What every handover adapter does: deliver a notice about a handover to the
//! tenant's managers (a Telegram topic, a CRM lead, an e-mail, a webhook).
//! The notifier (`queue.rs`) decides what to send and when; adapters only
//! speak their service's API.

use std::collections::BTreeMap;
use std::future::Future;
use std::path::Path;
use std::pin::Pin;

use serde::Serialize;
use serde_json::Value;
use truffles_crds::client::{HandoverAdapter, HandoverAdapterType};
use uuid::Uuid;

use crate::fetch::Fetcher;

/// Who acted on a handover: a manager in the Telegram group, in a CRM, or on
/// the business's own account.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Manager {
    pub id: String,
    pub name: String,
}

/// How a manager closed a handover (`handovers.resolution_type`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Resolution {
    Solved,
    Transferred,
    Spam,
    Other,
}

impl Resolution {
    pub const ALL: [Resolution; 4] = [Self::Solved, Self::Transferred, Self::Spam, Self::Other];

    pub fn as_str(self) -> &'static str {
        match self {
            Self::Solved => "solved",
            Self::Transferred => "transferred",
            Self::Spam => "spam",
            Self::Other => "other",
        }
    }

    pub fn parse(code: &str) -> Option<Self> {
        Self::ALL.into_iter().find(|r| r.as_str() == code)
    }
}

/// What the managers are told about.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Kind {
    /// A new handover: the card with the customer and the conversation.
    Card,
    /// The customer wrote while a human holds the conversation.
    CustomerMessage,
    /// A manager's reply could not be delivered to the customer.
    DeliveryFailed,
    /// Nobody has taken the handover yet.
    Reminder,
    /// The conversation went back to the bot (closed, resolved, timed out).
    Closed,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Card => "card",
            Self::CustomerMessage => "customer_message",
            Self::DeliveryFailed => "delivery_failed",
            Self::Reminder => "reminder",
            Self::Closed => "closed",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        [
            Self::Card,
            Self::CustomerMessage,
            Self::DeliveryFailed,
            Self::Reminder,
            Self::Closed,
        ]
        .into_iter()
        .find(|k| k.as_str() == s)
    }
}

/// A handover as managers see it: the customer's name and phone in clear
/// (decrypted only for this), the trigger and the last turns.
#[derive(Clone, Debug, Serialize)]
pub struct HandoverView {
    pub id: Uuid,
    pub conversation_id: Uuid,
    pub status: String,
    pub trigger: String,
    pub trigger_value: Option<String>,
    pub context: String,
    pub user_name: Option<String>,
    pub phone: Option<String>,
    pub channel: String,
    pub language: Option<String>,
    pub manager_name: Option<String>,
    /// The adapter's handle (Telegram topic id, CRM lead id) once notified.
    pub external_ref: Option<String>,
}

/// One notice for one handover. `key` is stable across retries.
#[derive(Clone, Debug)]
pub struct Notice {
    pub kind: Kind,
    pub handover: HandoverView,
    /// The customer's message, the failure, the reminder text.
    pub text: Option<String>,
    pub key: String,
    /// The tenant's `notify_template` rendered for this handover.
    pub card: String,
    /// Where a CRM or the client's system posts the manager's answer.
    pub reply_url: Option<String>,
}

/// What an adapter reports back; stored in `handovers.adapter_response`.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct Delivered {
    /// A new handle for the handover (a topic created, a lead created).
    pub external_ref: Option<String>,
    pub response: Value,
}

#[derive(Debug, thiserror::Error)]
pub enum AdapterError {
    #[error("the {adapter} adapter is not configured: {why}")]
    Misconfigured { adapter: &'static str, why: String },
    #[error("{service} is unreachable: {why}")]
    Unreachable { service: &'static str, why: String },
    #[error("{service} refused the request: {why}")]
    Rejected { service: &'static str, why: String },
}

pub type Delivery<'a> = Pin<Box<dyn Future<Output = Result<Delivered, AdapterError>> + Send + 'a>>;

/// One way of reaching managers.
pub trait Adapter: Send + Sync {
    fn kind(&self) -> HandoverAdapterType;
    fn deliver<'a>(&'a self, notice: &'a Notice) -> Delivery<'a>;
}

/// The files of a mounted Secret (`/etc/truffles/secrets/<mount>/<key>`).
pub type Secrets = BTreeMap<String, String>;

/// Reads a mounted Secret; Kubernetes' `..data` bookkeeping entries are skipped.
pub fn read_secrets(dir: &Path) -> Secrets {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Secrets::new();
    };
    entries
        .filter_map(Result::ok)
        .filter(|e| !e.file_name().to_string_lossy().starts_with('.'))
        .filter_map(|e| {
            let value = std::fs::read_to_string(e.path()).ok()?;
            Some((
                e.file_name().to_string_lossy().into_owned(),
                value.trim().to_owned(),
            ))
        })
        .collect()
}

/// A required key of an adapter's Secret, with an error naming the key (never its value).
pub fn secret<'a>(
    secrets: &'a Secrets,
    adapter: &'static str,
    key: &str,
) -> Result<&'a str, AdapterError> {
    secrets
        .get(key)
        .map(String::as_str)
        .filter(|v| !v.is_empty())
        .ok_or_else(|| AdapterError::Misconfigured {
            adapter,
            why: format!("key `{key}` is missing from the adapter's Secret"),
        })
}

/// An adapter and its spec, as configured for the tenant.
#[derive(Clone, Debug)]
pub struct AdapterConfig {
    pub spec: HandoverAdapter,
    pub secrets: Secrets,
}

/// How long one call to a manager-side service may take.
pub const CALL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(15);

/// POSTs JSON and returns the JSON answer (see [`send`]).
pub async fn post_json(
    fetch: &Fetcher,
    service: &'static str,
    url: &str,
    bearer: Option<&str>,
    body: &Value,
) -> Result<Value, AdapterError> {
    let mut request = post(fetch, service, url)?.json(body);
    if let Some(token) = bearer {
        request = request.bearer_auth(token);
    }
    Ok(send(request, service).await?.1)
}

/// A POST to a manager-side service's URL (from the spec) through the
/// guarded client: an address inside the cluster or the metadata service is
/// refused like a customer's link would be.
pub fn post(
    fetch: &Fetcher,
    service: &'static str,
    url: &str,
) -> Result<reqwest::RequestBuilder, AdapterError> {
    fetch
        .request(reqwest::Method::POST, url)
        .map(|r| r.timeout(CALL_TIMEOUT))
        .map_err(|e| AdapterError::Unreachable {
            service,
            why: e.to_string(),
        })
}

/// Sends a request to a manager-side service: the status and the JSON answer
/// (Null when it is not JSON) of a 2xx. Errors name the service and the
/// status, never the URL (some CRMs put their token in it).
pub async fn send(
    request: reqwest::RequestBuilder,
    service: &'static str,
) -> Result<(reqwest::StatusCode, Value), AdapterError> {
    let response = request
        .send()
        .await
        .map_err(|e| AdapterError::Unreachable {
            service,
            why: crate::fetch::transport(e).to_string(),
        })?;
    let status = response.status();
    let text = response.text().await.unwrap_or_default();
    if !status.is_success() {
        return Err(AdapterError::Rejected {
            service,
            why: format!(
                "HTTP {status}: {}",
                text.chars().take(300).collect::<String>()
            ),
        });
    }
    Ok((status, serde_json::from_str(&text).unwrap_or(Value::Null)))
}

/// Fills the tenant's `notify_template`: {user_name} {phone} {intent}
/// {context} {channel}. Unknown placeholders stay as written.
pub fn render_card(template: &str, h: &HandoverView) -> String {
    let intent = match &h.trigger_value {
        Some(v) if !v.is_empty() => format!("{} ({v})", h.trigger),
        _ => h.trigger.clone(),
    };
    template
        .replace("{user_name}", h.user_name.as_deref().unwrap_or("—"))
        .replace("{phone}", h.phone.as_deref().unwrap_or("—"))
        .replace("{intent}", &intent)
        .replace("{channel}", &h.channel)
        // Last: the context is customer text and may itself contain braces.
        .replace("{context}", &h.context)
}

/// An adapter that fails every delivery with the reason it could not be built,
/// so the fallback adapter is used and the reason is recorded.
pub struct Broken {
    pub kind: HandoverAdapterType,
    pub error: String,
}

impl Adapter for Broken {
    fn kind(&self) -> HandoverAdapterType {
        self.kind
    }
    fn deliver<'a>(&'a self, _notice: &'a Notice) -> Delivery<'a> {
        Box::pin(async move {
            Err(AdapterError::Misconfigured {
                adapter: "handover",
                why: self.error.clone(),
            })
        })
    }
}

/// WhatsApp Web: managers answer from the same number, nothing to notify.
pub struct WhatsappWeb;

impl Adapter for WhatsappWeb {
    fn kind(&self) -> HandoverAdapterType {
        HandoverAdapterType::WhatsappWeb
    }
    fn deliver<'a>(&'a self, _notice: &'a Notice) -> Delivery<'a> {
        Box::pin(async { Ok(Delivered::default()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A spec's adapter URL into the cluster or the metadata service is
    /// refused before anything is sent, by literal or by what a name
    /// resolves to.
    #[tokio::test]
    async fn adapter_urls_inside_the_cluster_are_refused() {
        let _ = rustls::crypto::ring::default_provider().install_default();
        let fetch = Fetcher::new(crate::fetch::Guard::default()).expect("a client");
        for (url, kind) in [
            ("http://169.254.169.254/latest/meta-data/", "link-local"),
            ("http://10.0.0.1/crm", "private"),
        ] {
            let e = post(&fetch, "the CRM", url).expect_err(url);
            assert!(e.to_string().contains(kind), "{e}");
        }
        let request = post(&fetch, "the CRM", "http://localhost:9/hook").expect("a name");
        let e = send(request, "the CRM").await.expect_err("localhost");
        assert!(e.to_string().contains("loopback"), "{e}");
        assert!(post(&fetch, "the CRM", "file:///etc/passwd").is_err());
    }

    fn view() -> HandoverView {
        HandoverView {
            id: Uuid::nil(),
            conversation_id: Uuid::nil(),
            status: "pending".into(),
            trigger: "keyword".into(),
            trigger_value: Some("менеджер".into()),
            context: "Клиент: {phone} позовите менеджера".into(),
            user_name: Some("Айгуль".into()),
            phone: Some("77015550101".into()),
            channel: "whatsapp".into(),
            language: Some("ru".into()),
            manager_name: None,
            external_ref: None,
        }
    }

    #[test]
    fn the_card_fills_every_placeholder_and_leaves_customer_text_alone() {
        let card = render_card(
            "{user_name} {phone} {intent} {channel} {unknown}\n{context}",
            &view(),
        );
        assert_eq!(
            card,
            "Айгуль 77015550101 keyword (менеджер) whatsapp {unknown}\nКлиент: {phone} позовите менеджера"
        );
    }

    #[test]
    fn kinds_round_trip_through_their_names() {
        for kind in [
            Kind::Card,
            Kind::CustomerMessage,
            Kind::DeliveryFailed,
            Kind::Reminder,
            Kind::Closed,
        ] {
            assert_eq!(Kind::parse(kind.as_str()), Some(kind));
        }
        assert_eq!(Kind::parse("nope"), None);
    }

    #[test]
    fn secrets_are_read_from_files_and_missing_keys_are_named() {
        let dir = std::env::temp_dir().join(format!("truffles-secrets-{}", Uuid::new_v4()));
        std::fs::create_dir_all(dir.join("..data")).expect("dir");
        std::fs::write(dir.join("token"), "abc\n").expect("write");
        let secrets = read_secrets(&dir);
        assert_eq!(secrets.get("token").map(String::as_str), Some("abc"));
        assert_eq!(secrets.len(), 1);
        let missing = secret(&secrets, "telegram", "signingKey").expect_err("missing");
        assert!(missing.to_string().contains("signingKey"));
        std::fs::remove_dir_all(dir).ok();
    }
}
