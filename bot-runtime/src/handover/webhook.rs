//! `webhook` and `custom`: handover events POSTed as JSON to the client's URL,
//! and the reply endpoint through which their system (or a CRM) sends the
//! manager's answer back.
//!
//! Every request either way is signed: `X-Truffles-Timestamp: <unix seconds>`
//! and `X-Truffles-Signature: sha256=<hex HMAC-SHA256 of "<timestamp>.<body>">`
//! with the adapter's `signingKey`; deliveries also carry `Idempotency-Key`
//! (stable across retries). Payload:
//! `{"event":"handover.card|handover.customer_message|handover.delivery_failed|
//! handover.reminder|handover.closed","id":<key>,"tenant":..,"handover":{id,
//! conversation_id,status,trigger,trigger_value,context,user_name,phone,channel,
//! language,manager_name,external_ref},"text":..,"card":..,"reply_url":..,"timestamp":..}`.

use hmac::{Hmac, Mac};
use serde_json::{Value, json};
use sha2::Sha256;
use subtle::ConstantTimeEq;
use truffles_crds::client::HandoverAdapterType;

use crate::fetch::Fetcher;

use super::adapter::{
    Adapter, AdapterConfig, AdapterError, Delivered, Delivery, Notice, post, secret, send,
};

pub const TIMESTAMP_HEADER: &str = "x-truffles-timestamp";
pub const SIGNATURE_HEADER: &str = "x-truffles-signature";
/// How far a signed request's timestamp may be from now (replays are refused).
pub const TOLERANCE_SECONDS: i64 = 300;

pub struct Webhook {
    kind: HandoverAdapterType,
    fetch: Fetcher,
    url: String,
    key: Vec<u8>,
    tenant: String,
}

impl Webhook {
    pub fn new(config: &AdapterConfig, fetch: Fetcher, tenant: &str) -> Result<Self, AdapterError> {
        let url = config
            .spec
            .webhook
            .as_ref()
            .map(|w| w.url.clone())
            .ok_or_else(|| AdapterError::Misconfigured {
                adapter: "webhook",
                why: "the adapter has no `webhook` block".into(),
            })?;
        let key = secret(&config.secrets, "webhook", "signingKey")?;
        Ok(Self {
            kind: config.spec.adapter_type,
            fetch,
            url,
            key: key.as_bytes().to_vec(),
            tenant: tenant.to_owned(),
        })
    }

    async fn post(&self, notice: &Notice) -> Result<Delivered, AdapterError> {
        let now = sqlx::types::chrono::Utc::now();
        let body = json!({
            "event": format!("handover.{}", notice.kind.as_str()),
            "id": notice.key,
            "tenant": self.tenant,
            "handover": notice.handover,
            "text": notice.text,
            "card": notice.card,
            "reply_url": notice.reply_url,
            "timestamp": now.to_rfc3339(),
        });
        let body = serde_json::to_vec(&body).map_err(|e| AdapterError::Misconfigured {
            adapter: "webhook",
            why: e.to_string(),
        })?;
        let ts = now.timestamp();
        let request = post(&self.fetch, "the client's webhook", &self.url)?
            .header("content-type", "application/json")
            .header(TIMESTAMP_HEADER, ts.to_string())
            .header(SIGNATURE_HEADER, sign(&self.key, ts, &body))
            .header("idempotency-key", &notice.key)
            .body(body);
        // The client may answer its own handle for the handover (a ticket id).
        let (status, answer) = send(request, "the client's webhook").await?;
        let external_ref = answer
            .get("external_ref")
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|_| notice.handover.external_ref.is_none());
        Ok(Delivered {
            external_ref,
            response: json!({"status": status.as_u16()}),
        })
    }
}

impl Adapter for Webhook {
    fn kind(&self) -> HandoverAdapterType {
        self.kind
    }
    fn deliver<'a>(&'a self, notice: &'a Notice) -> Delivery<'a> {
        Box::pin(self.post(notice))
    }
}

/// `sha256=<hex>` of HMAC-SHA256(key, "<timestamp>.<body>").
pub fn sign(key: &[u8], timestamp: i64, body: &[u8]) -> String {
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
    mac.update(timestamp.to_string().as_bytes());
    mac.update(b".");
    mac.update(body);
    format!("sha256={}", hex::encode(mac.finalize().into_bytes()))
}

/// Checks a signed request: the signature in constant time, the timestamp
/// within the tolerance of `now`.
/// What a reply to handover `id` is signed over: the id and the body, so a
/// signed reply cannot be replayed onto another handover's URL.
pub fn reply_payload(id: &str, body: &[u8]) -> Vec<u8> {
    [id.as_bytes(), b".", body].concat()
}

pub fn verify(key: &[u8], timestamp: &str, signature: &str, body: &[u8], now: i64) -> bool {
    let Ok(ts) = timestamp.trim().parse::<i64>() else {
        return false;
    };
    if (now - ts).abs() > TOLERANCE_SECONDS {
        return false;
    }
    let expected = sign(key, ts, body);
    expected
        .as_bytes()
        .ct_eq(signature.trim().as_bytes())
        .into()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_signature_verifies_once_and_only_in_time() {
        let key = b"k3y";
        let body = br#"{"text":"hi"}"#;
        let sig = sign(key, 1_000, body);
        assert!(sig.starts_with("sha256="));
        assert!(verify(key, "1000", &sig, body, 1_100));
        assert!(!verify(
            key,
            "1000",
            &sig,
            body,
            1_000 + TOLERANCE_SECONDS + 1
        ));
        assert!(!verify(key, "1000", &sig, br#"{"text":"hello"}"#, 1_100));
        assert!(!verify(b"other", "1000", &sig, body, 1_100));
        assert!(!verify(key, "1001", &sig, body, 1_100));
        assert!(!verify(key, "soon", &sig, body, 1_100));
    }
}
