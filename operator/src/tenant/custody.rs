//! Key custody: the tenant's generated credentials are kept by the platform,
//! not by its runtime Secret. They live in `platform.tenant_credentials`,
//! wrapped by the master key like the backup key; the runtime Secret is built
//! from them on every reconcile, so a deleted, pruned or edited Secret comes
//! back with the same PII key, webhook secret and passwords.
//!
//! A new PII key is never made for a tenant whose schema exists: every phone
//! number stored under the old one would become unreadable. The reconcile
//! fails with `CredentialsLost` instead, and a person restores the Secret.
//!
//! Rotation is asked for with an annotation on the TrufflesClient,
//! `truffles.kz/rotate-<credential>: <any request id>`; a new id rotates once.
//! The webhook secret and the admin token keep their previous value for
//! [`ROTATION_WINDOW`] (the runtime accepts both), so ChatFlow's console and
//! the platform's scripts can be updated without losing a message.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use super::keys::{KeyError, MasterKey, random_token};

/// How long a rotated webhook secret or admin token is still accepted.
pub const ROTATION_WINDOW_SECONDS: i64 = 24 * 3600;
/// `truffles.kz/rotate-webhook-secret`, `…-admin-token`, `…-database-password`.
pub const ROTATE_ANNOTATION_PREFIX: &str = "truffles.kz/rotate-";
pub const WEBHOOK_SECRET: &str = "webhook-secret";
pub const ADMIN_TOKEN: &str = "admin-token";
pub const DATABASE_PASSWORD: &str = "database-password";
pub const REDIS_PASSWORD: &str = "redis-password";

/// A credential that may be rotated with a window.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Rotating {
    pub current: String,
    /// The value before the last rotation, accepted until `previous_until`.
    pub previous: Option<String>,
    /// Unix seconds.
    pub previous_until: Option<i64>,
}

impl std::fmt::Debug for Rotating {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Rotating(…)")
    }
}

impl Rotating {
    fn rotate(&mut self, now: i64) {
        self.previous = Some(std::mem::replace(&mut self.current, random_token()));
        self.previous_until = Some(now + ROTATION_WINDOW_SECONDS);
    }

    fn expire(&mut self, now: i64) {
        if self.previous_until.is_some_and(|until| until <= now) {
            self.previous = None;
            self.previous_until = None;
        }
    }
}

/// Everything the platform keeps for one tenant.
#[derive(Serialize, Deserialize, Clone, PartialEq, Eq, Default)]
#[serde(rename_all = "camelCase", default)]
pub struct Kept {
    /// Encrypts the tenant's phone numbers; losing it (purge) shreds them.
    pub pii_key: String,
    /// The secret path segment of ChatFlow's webhook URL.
    pub webhook_secret: Rotating,
    /// The bearer of the runtime's admin API (never in a URL).
    pub admin_token: Rotating,
    pub db_password: String,
    /// The tenant's Redis ACL user's password.
    pub redis_password: String,
    /// Rotation requests already carried out: credential → request id.
    pub rotations: BTreeMap<String, String>,
}

impl std::fmt::Debug for Kept {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Kept(…)")
    }
}

/// What the runtime Secret holds today (a tenant from before custody, or a
/// Secret restored by hand after `CredentialsLost`).
#[derive(Default)]
pub struct InSecret {
    pub pii_key: Option<String>,
    pub webhook_secret: Option<String>,
    pub db_password: Option<String>,
}

/// The credentials to use, whether they must be stored, and whether the
/// database role must get its (new) password.
#[derive(Debug)]
pub struct Decision {
    pub kept: Kept,
    pub store: bool,
    pub new_password: bool,
}

#[derive(Debug, thiserror::Error)]
pub enum CustodyError {
    #[error(
        "the tenant's PII key is neither kept by the platform nor in its runtime Secret, and its schema exists: a new key would make every stored phone number unreadable. Restore the Secret's {key} (from a cluster backup) and the operator takes it into custody"
    )]
    PiiKeyLost { key: &'static str },
    #[error(transparent)]
    Key(#[from] KeyError),
    #[error("the kept credentials do not parse: {0}")]
    Corrupt(String),
}

/// Whether the runtime Secret must be read: the platform lacks a credential
/// that the Secret may hold ([`decide`] takes what is kept over it).
pub fn needs_secret(kept: Option<&Kept>) -> bool {
    kept.is_none_or(|k| {
        k.pii_key.is_empty() || k.webhook_secret.current.is_empty() || k.db_password.is_empty()
    })
}

/// The custody decision, without I/O: what is kept wins over the Secret; what
/// neither has is generated, except a PII key for a tenant with a schema.
pub fn decide(
    kept: Option<Kept>,
    found: InSecret,
    schema_exists: bool,
    requests: &BTreeMap<String, String>,
    now: i64,
) -> Result<Decision, CustodyError> {
    let before = kept.clone();
    let mut k = kept.unwrap_or_default();
    let mut new_password = false;
    if k.pii_key.is_empty() {
        k.pii_key = match found.pii_key {
            Some(key) => key,
            None if schema_exists => {
                return Err(CustodyError::PiiKeyLost {
                    key: truffles_crds::contract::env::PII_KEY,
                });
            }
            None => random_token(),
        };
    }
    if k.webhook_secret.current.is_empty() {
        k.webhook_secret.current = found.webhook_secret.unwrap_or_else(random_token);
    }
    if k.db_password.is_empty() {
        k.db_password = found.db_password.unwrap_or_else(|| {
            new_password = true;
            random_token()
        });
    }
    if k.admin_token.current.is_empty() {
        k.admin_token.current = random_token();
    }
    if k.redis_password.is_empty() {
        k.redis_password = random_token();
    }
    for (credential, request) in requests {
        if k.rotations.get(credential) == Some(request) {
            continue;
        }
        match credential.as_str() {
            WEBHOOK_SECRET => k.webhook_secret.rotate(now),
            ADMIN_TOKEN => k.admin_token.rotate(now),
            DATABASE_PASSWORD => {
                k.db_password = random_token();
                new_password = true;
            }
            REDIS_PASSWORD => k.redis_password = random_token(),
            // Refused by validation before custody is reached.
            _ => continue,
        }
        k.rotations.insert(credential.clone(), request.clone());
    }
    k.webhook_secret.expire(now);
    k.admin_token.expire(now);
    Ok(Decision {
        store: before.as_ref() != Some(&k),
        kept: k,
        new_password,
    })
}

/// The rotation requests in the TrufflesClient's annotations.
pub fn rotation_requests(annotations: &BTreeMap<String, String>) -> BTreeMap<String, String> {
    annotations
        .iter()
        .filter_map(|(k, v)| {
            let credential = k.strip_prefix(ROTATE_ANNOTATION_PREFIX)?;
            Some((credential.to_owned(), v.clone()))
        })
        .collect()
}

/// A rotation annotation naming no credential (a typo would otherwise do nothing).
pub fn unknown_rotation(requests: &BTreeMap<String, String>) -> Option<String> {
    requests
        .keys()
        .find(|c| ![WEBHOOK_SECRET, ADMIN_TOKEN, DATABASE_PASSWORD, REDIS_PASSWORD].contains(&c.as_str()))
        .map(|c| format!("{ROTATE_ANNOTATION_PREFIX}{c}: no such credential (one of {WEBHOOK_SECRET}, {ADMIN_TOKEN}, {DATABASE_PASSWORD}, {REDIS_PASSWORD})"))
}

fn bound_to(client_id: Uuid) -> Vec<u8> {
    [client_id.as_bytes().as_slice(), b"credentials"].concat()
}

/// The tenant's kept credentials, if any.
pub async fn load(
    pool: &PgPool,
    client_id: Uuid,
    master: &MasterKey,
) -> Result<Option<Kept>, CustodyError> {
    let wrapped: Option<Vec<u8>> =
        sqlx::query_scalar("SELECT wrapped FROM platform.tenant_credentials WHERE client_id = $1")
            .bind(client_id)
            .fetch_optional(pool)
            .await
            .map_err(KeyError::Database)?;
    let Some(wrapped) = wrapped else {
        return Ok(None);
    };
    let plain = master.open(&bound_to(client_id), &wrapped)?;
    serde_json::from_slice(&plain)
        .map(Some)
        .map_err(|e| CustodyError::Corrupt(e.to_string()))
}

pub async fn store(
    pool: &PgPool,
    client_id: Uuid,
    master: &MasterKey,
    kept: &Kept,
) -> Result<(), CustodyError> {
    let plain = serde_json::to_vec(kept).map_err(|e| CustodyError::Corrupt(e.to_string()))?;
    sqlx::query(
        "INSERT INTO platform.tenant_credentials (client_id, wrapped) VALUES ($1, $2)
         ON CONFLICT (client_id) DO UPDATE SET wrapped = EXCLUDED.wrapped, updated_at = now()",
    )
    .bind(client_id)
    .bind(master.seal(&bound_to(client_id), &plain))
    .execute(pool)
    .await
    .map_err(KeyError::Database)?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_secret_is_read_only_when_the_platform_lacks_what_it_may_hold() {
        assert!(needs_secret(None));
        let decided = decide(None, InSecret::default(), false, &BTreeMap::new(), 0).expect("new");
        let complete = decided.kept;
        assert!(!needs_secret(Some(&complete)));
        // Whatever the Secret says, a complete custody record decides alone.
        let found = InSecret {
            pii_key: Some("other".into()),
            webhook_secret: Some("other".into()),
            db_password: Some("other".into()),
        };
        let again = decide(Some(complete.clone()), found, true, &BTreeMap::new(), 0).expect("kept");
        assert!(!again.store && again.kept == complete);
        for lacking in [
            Kept {
                pii_key: String::new(),
                ..complete.clone()
            },
            Kept {
                db_password: String::new(),
                ..complete.clone()
            },
            Kept {
                webhook_secret: Rotating::default(),
                ..complete.clone()
            },
        ] {
            assert!(needs_secret(Some(&lacking)));
        }
    }

    fn found(pii: &str, secret: &str, password: &str) -> InSecret {
        InSecret {
            pii_key: Some(pii.into()),
            webhook_secret: Some(secret.into()),
            db_password: Some(password.into()),
        }
    }

    #[test]
    fn a_new_tenant_gets_new_credentials_and_its_role_a_password() {
        let d = decide(None, InSecret::default(), false, &BTreeMap::new(), 0).expect("decided");
        assert!(d.store && d.new_password);
        assert_eq!(d.kept.pii_key.len(), 64);
        assert_ne!(d.kept.webhook_secret.current, d.kept.admin_token.current);
    }

    #[test]
    fn a_tenant_from_before_custody_keeps_what_its_secret_holds() {
        let d = decide(None, found("p", "w", "d"), true, &BTreeMap::new(), 0).expect("decided");
        assert!(d.store && !d.new_password);
        assert_eq!(
            (
                d.kept.pii_key.as_str(),
                d.kept.webhook_secret.current.as_str()
            ),
            ("p", "w")
        );
        assert_eq!(d.kept.db_password, "d");
    }

    #[test]
    fn what_is_kept_wins_over_an_edited_or_missing_secret() {
        let kept = decide(None, found("p", "w", "d"), true, &BTreeMap::new(), 0)
            .expect("decided")
            .kept;
        for secret in [found("x", "y", "z"), InSecret::default()] {
            let d = decide(Some(kept.clone()), secret, true, &BTreeMap::new(), 0).expect("kept");
            assert_eq!(d.kept, kept);
            assert!(!d.store && !d.new_password);
        }
    }

    #[test]
    fn no_new_pii_key_for_a_tenant_with_a_schema() {
        let lost = decide(None, InSecret::default(), true, &BTreeMap::new(), 0);
        assert!(matches!(lost, Err(CustodyError::PiiKeyLost { .. })));
    }

    #[test]
    fn a_rotation_runs_once_per_request_and_the_old_value_expires() {
        let kept = decide(None, found("p", "w", "d"), true, &BTreeMap::new(), 0)
            .expect("decided")
            .kept;
        let ask = BTreeMap::from([(WEBHOOK_SECRET.to_owned(), "1".to_owned())]);
        let rotated = decide(Some(kept), InSecret::default(), true, &ask, 100).expect("rotated");
        let w = &rotated.kept.webhook_secret;
        assert_ne!(w.current, "w");
        assert_eq!(w.previous.as_deref(), Some("w"));
        assert_eq!(w.previous_until, Some(100 + ROTATION_WINDOW_SECONDS));
        let again = decide(
            Some(rotated.kept.clone()),
            InSecret::default(),
            true,
            &ask,
            200,
        )
        .expect("same request");
        assert_eq!(again.kept, rotated.kept);
        let later = decide(
            Some(rotated.kept.clone()),
            InSecret::default(),
            true,
            &ask,
            100 + ROTATION_WINDOW_SECONDS,
        )
        .expect("expired");
        assert_eq!(later.kept.webhook_secret.previous, None);
        assert_eq!(later.kept.webhook_secret.current, w.current);
    }

    #[test]
    fn a_database_password_rotation_sets_the_role_again() {
        let kept = decide(None, found("p", "w", "d"), true, &BTreeMap::new(), 0)
            .expect("decided")
            .kept;
        let ask = BTreeMap::from([(DATABASE_PASSWORD.to_owned(), "r1".to_owned())]);
        let d = decide(Some(kept), InSecret::default(), true, &ask, 0).expect("rotated");
        assert!(d.new_password && d.store);
        assert_ne!(d.kept.db_password, "d");
    }

    #[test]
    fn rotation_annotations_are_read_and_typos_named() {
        let annotations = BTreeMap::from([
            ("truffles.kz/rotate-admin-token".to_owned(), "a".to_owned()),
            (
                "truffles.kz/rotate-webhok-secret".to_owned(),
                "b".to_owned(),
            ),
            ("other".to_owned(), "c".to_owned()),
        ]);
        let requests = rotation_requests(&annotations);
        assert_eq!(requests.len(), 2);
        assert!(unknown_rotation(&requests).is_some_and(|m| m.contains("webhok-secret")));
    }

    #[test]
    fn kept_credentials_never_print() {
        let d = decide(None, found("p", "w", "d"), false, &BTreeMap::new(), 0).expect("decided");
        assert_eq!(format!("{:?}", d.kept), "Kept(…)");
    }
}
