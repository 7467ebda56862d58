//! How each of a tenant's channels gets its webhook registered with the
//! provider (pure). ChatFlow has no API for it (the owner pastes the URL in
//! its UI); Meta's app dashboard takes Instagram's callback URL and verify
//! token; the Telegram bot is registered by the runtime itself with
//! setWebhook once it has a public HTTPS address, or reads by long polling.
//! A provider whose API the operator could call gets a variant here, and the
//! reconcile calls it where `registrations` says so.

use truffles_crds::TrufflesClient;

use super::build::names::public_url;

#[derive(Clone, Debug, PartialEq, Eq)]
pub enum Registration {
    /// The owner copies the URL in the webhook Secret's `key` into `console`.
    Manual {
        channel: &'static str,
        console: &'static str,
        key: &'static str,
    },
    /// The runtime registers itself through the provider's `api` at start.
    ByRuntime {
        channel: &'static str,
        api: &'static str,
    },
    /// No public address: the runtime reads updates by long polling.
    Polling { channel: &'static str },
    /// The provider can only push to a public HTTPS address, which the tenant lacks.
    NeedsPublicUrl { channel: &'static str },
}

/// Every enabled channel's registration.
pub fn registrations(tc: &TrufflesClient) -> Vec<Registration> {
    let channels = &tc.spec.channels;
    let public = public_url(tc).is_some();
    let mut out = Vec::new();
    if channels.whatsapp.is_some() {
        out.push(Registration::Manual {
            channel: "WhatsApp",
            console: "ChatFlow's instance settings",
            key: "url",
        });
    }
    if channels.telegram.is_some() {
        out.push(if public {
            Registration::ByRuntime {
                channel: "Telegram",
                api: "setWebhook",
            }
        } else {
            Registration::Polling {
                channel: "Telegram",
            }
        });
    }
    if channels.instagram.is_some() {
        out.push(if public {
            Registration::Manual {
                channel: "Instagram",
                console: "the Meta app's Webhooks settings (with the verify token)",
                key: "instagramUrl",
            }
        } else {
            Registration::NeedsPublicUrl {
                channel: "Instagram",
            }
        });
    }
    out
}

/// (registered, reason, message) of the WebhookRegistered condition.
pub fn condition(registrations: &[Registration], secret: &str) -> (bool, &'static str, String) {
    let parts: Vec<String> = registrations
        .iter()
        .map(|r| match r {
            Registration::Manual {
                channel,
                console,
                key,
            } => format!("{channel}: paste Secret {secret} key {key} into {console}"),
            Registration::ByRuntime { channel, api } => {
                format!("{channel}: registered by the runtime ({api})")
            }
            Registration::Polling { channel } => {
                format!("{channel}: read by long polling (no ingress.host)")
            }
            Registration::NeedsPublicUrl { channel } => {
                format!("{channel}: needs ingress.host, its provider only posts to public HTTPS")
            }
        })
        .collect();
    let message = parts.join("; ");
    if registrations
        .iter()
        .any(|r| matches!(r, Registration::NeedsPublicUrl { .. }))
    {
        (false, "NoPublicUrl", message)
    } else if registrations
        .iter()
        .any(|r| matches!(r, Registration::Manual { .. }))
    {
        (true, "PublishedInSecret", message)
    } else {
        (true, "RegisteredByRuntime", message)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use crate::tenant::test_client as client;

    #[test]
    fn each_channel_says_how_its_webhook_is_registered() {
        let r = |k: &str| serde_json::json!({"name": "s", "key": k});
        let channels = serde_json::json!({
            "whatsapp": {"instanceId": "i", "tokenSecretRef": r("t")},
            "telegram": {"botTokenSecretRef": r("b")},
            "instagram": {"accountId": "17841400000000001", "accessTokenSecretRef": r("a"),
                          "appSecretRef": r("s"), "verifyTokenSecretRef": r("v")}});
        let public = client(
            serde_json::json!({"channels": channels, "ingress": {"enabled": true, "host": "bot.shop.kz"}}),
        );
        let regs = registrations(&public);
        assert_eq!(
            regs[1],
            Registration::ByRuntime {
                channel: "Telegram",
                api: "setWebhook"
            }
        );
        let (ok, reason, message) = condition(&regs, "shop-webhook");
        assert_eq!((ok, reason), (true, "PublishedInSecret"));
        assert!(
            message.contains("key instagramUrl") && message.contains("key url"),
            "{message}"
        );

        let private =
            client(serde_json::json!({"channels": channels, "ingress": {"enabled": false}}));
        let regs = registrations(&private);
        assert!(regs.contains(&Registration::Polling {
            channel: "Telegram"
        }));
        let (ok, reason, message) = condition(&regs, "shop-webhook");
        assert_eq!((ok, reason), (false, "NoPublicUrl"));
        assert!(
            message.contains("Instagram: needs ingress.host"),
            "{message}"
        );

        let telegram_only = client(
            serde_json::json!({"channels": {"telegram": {"botTokenSecretRef": r("b")}},
                                                       "ingress": {"enabled": true, "host": "bot.shop.kz"}}),
        );
        assert_eq!(
            condition(&registrations(&telegram_only), "x").1,
            "RegisteredByRuntime"
        );
    }
}
