//! Reads what the spec refers to before anything is built: the Secrets it
//! names, what the tenant's runtime Secret holds, and its Subscription's state.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use kube::api::ListParams;
use truffles_crds::contract::env;
use truffles_crds::subscription::BillingState;
use truffles_crds::{Subscription, TrufflesClient};

use super::build::{self, Names};
use super::context::Context;
use super::custody::InSecret;
use super::error::Error;
use super::references;

/// What the client's Subscription (its status, written by the billing controller)
/// means for the tenant.
#[derive(Default)]
pub struct Billing {
    /// Billing state Suspended or Cancelled: the bot is off.
    pub suspended: bool,
    /// The opt-in automatic deletion is due.
    pub deletion_due: bool,
}

pub async fn billing(ctx: &Context, ns: &str, name: &str) -> Result<Billing, Error> {
    let items: Vec<Subscription> = match ctx.subscriptions() {
        Some(store) => {
            // Never decided on a partial list: a suspended tenant would start.
            if store.wait_until_ready().await.is_err() {
                return Err(Error::InvalidSpec("the Subscription watch stopped".into()));
            }
            store
                .state()
                .iter()
                .filter(|s| s.metadata.namespace.as_deref() == Some(ns))
                .map(|s| s.as_ref().clone())
                .collect()
        }
        None => {
            let subscriptions: Api<Subscription> = Api::namespaced(ctx.client.clone(), ns);
            subscriptions.list(&ListParams::default()).await?.items
        }
    };
    let statuses = items
        .into_iter()
        .filter(|s| s.spec.client_ref.name == name)
        .filter_map(|s| s.status);
    Ok(statuses.fold(Billing::default(), |acc, st| Billing {
        suspended: acc.suspended
            || matches!(
                st.state,
                Some(BillingState::Suspended | BillingState::Cancelled)
            ),
        deletion_due: acc.deletion_due || st.deletion_due == Some(true),
    }))
}

/// What the tenant's runtime Secret holds today, for [`super::custody`].
pub async fn in_secret(ctx: &Context, ns: &str, name: &str) -> Result<InSecret, Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let existing = secrets.get_opt(&Names(name).runtime()).await?;
    let read = |key: &str| existing.as_ref().and_then(|s| secret_text(s, key));
    // The password lives only inside the tenant's DATABASE_URL.
    let db_password = read(env::DATABASE_URL)
        .and_then(|url| url::Url::parse(&url).ok())
        .and_then(|url| url.password().map(str::to_owned));
    Ok(InSecret {
        pii_key: read(env::PII_KEY),
        webhook_secret: read(env::WEBHOOK_SECRET),
        db_password,
    })
}

/// A Secret's value under `key` as text (none if absent or not UTF-8).
pub(crate) fn secret_text(secret: &Secret, key: &str) -> Option<String> {
    secret
        .data
        .as_ref()?
        .get(key)
        .and_then(|v| String::from_utf8(v.0.clone()).ok())
}

/// Every key the spec references must exist before the runtime is rolled out;
/// otherwise its pods would crash-loop on a missing variable.
pub async fn check_referenced_secrets(
    tc: &TrufflesClient,
    ctx: &Context,
    ns: &str,
) -> Result<(), Error> {
    let secrets: Api<Secret> = Api::namespaced(ctx.client.clone(), ns);
    let missing = |name: &str, key: &str| Error::MissingSecret {
        namespace: ns.into(),
        name: name.into(),
        key: key.into(),
    };
    // The runtime's keys, and the backup job's (S3 credentials).
    let backup_env = if tc.spec.backup.enabled {
        build::backup::backup_storage(tc).0
    } else {
        Vec::new()
    };
    let keys = references::referenced_secret_keys(tc)
        .into_iter()
        .chain(references::drive_credentials(tc))
        .map(|(_, r)| (r.name.as_str(), r.key.as_str()))
        .chain(
            backup_env
                .iter()
                .filter_map(|e| e.value_from.as_ref()?.secret_key_ref.as_ref())
                .map(|r| (r.name.as_str(), r.key.as_str())),
        );
    // Each Secret is read once, however many of its keys the spec names.
    let mut read = std::collections::BTreeMap::new();
    for (name, key) in keys {
        let secret = read_once(&secrets, &mut read, name)
            .await?
            .ok_or_else(|| missing(name, key))?;
        let has_key = secret.data.as_ref().is_some_and(|d| d.contains_key(key))
            || secret
                .string_data
                .as_ref()
                .is_some_and(|d| d.contains_key(key));
        if !has_key {
            return Err(missing(name, key));
        }
    }
    for (_, name) in references::referenced_secrets(tc) {
        read_once(&secrets, &mut read, name)
            .await?
            .ok_or_else(|| missing(name, "*"))?;
    }
    Ok(())
}

/// The Secret `name` (none if it does not exist), read on first asking.
async fn read_once<'m, 'n>(
    secrets: &Api<Secret>,
    read: &'m mut std::collections::BTreeMap<&'n str, Option<Secret>>,
    name: &'n str,
) -> Result<Option<&'m Secret>, kube::Error> {
    if !read.contains_key(name) {
        let found = secrets.get_opt(name).await?;
        read.insert(name, found);
    }
    Ok(read.get(name).and_then(Option::as_ref))
}
