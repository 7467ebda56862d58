//! What a tenant's spec refers to: Secret keys (the runtime's environment),
//! Google Drive keys (mounted files) and whole Secrets (handover adapters).
//! The dereference step checks they exist; the pod spec mounts them.

use truffles_crds::TrufflesClient;
use truffles_crds::common::SecretKeyRef;
use truffles_crds::contract::{env, path};

/// Secret keys the tenant's spec refers to; the runtime reads them as environment.
pub fn referenced_secret_keys(tc: &TrufflesClient) -> Vec<(&'static str, &SecretKeyRef)> {
    let spec = &tc.spec;
    let mut refs = Vec::new();
    if let Some(w) = &spec.channels.whatsapp {
        refs.push((env::CHATFLOW_TOKEN, &w.token_secret_ref));
        if let Some(s) = &w.signature_secret_ref {
            refs.push((env::CHATFLOW_SIGNATURE_KEY, s));
        }
    }
    if let Some(t) = &spec.channels.telegram {
        refs.push((env::TELEGRAM_BOT_TOKEN, &t.bot_token_secret_ref));
    }
    if let Some(i) = &spec.channels.instagram {
        refs.push((env::INSTAGRAM_ACCESS_TOKEN, &i.access_token_secret_ref));
        refs.push((env::INSTAGRAM_APP_SECRET, &i.app_secret_ref));
        refs.push((env::INSTAGRAM_VERIFY_TOKEN, &i.verify_token_secret_ref));
    }
    if let Some(k) = &spec.llm.api_key_secret_ref {
        refs.push((env::OPENAI_API_KEY, k));
    }
    if let Some(k) = &spec.knowledge.vector_store.api_key_secret_ref {
        refs.push((env::QDRANT_API_KEY, k));
    }
    refs
}

/// Google Drive sources' service-account keys, by source name. Each is
/// mounted as a file at `/etc/truffles/secrets/knowledge/<source>/credentials.json`,
/// where the runtime's knowledge sync reads it (`knowledge::drive::credentials_path`).
pub fn drive_credentials(tc: &TrufflesClient) -> Vec<(&str, &SecretKeyRef)> {
    tc.spec
        .knowledge
        .sources
        .iter()
        .filter_map(|s| {
            Some((
                s.name.as_str(),
                &s.google_drive.as_ref()?.credentials_secret_ref,
            ))
        })
        .collect()
}

/// Whole Secrets the spec mounts (handover adapters' credentials), with mount names.
pub fn referenced_secrets(tc: &TrufflesClient) -> Vec<(&'static str, &str)> {
    let handover = &tc.spec.handover;
    let mut out = Vec::new();
    if let Some(s) = &handover.adapter.secret_ref {
        out.push((path::HANDOVER_SECRETS, s.name.as_str()));
    }
    if let Some(s) = handover
        .fallback
        .as_ref()
        .and_then(|f| f.secret_ref.as_ref())
    {
        out.push((path::HANDOVER_FALLBACK_SECRETS, s.name.as_str()));
    }
    out
}
