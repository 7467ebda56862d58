//! Tenants' backup data keys. Each tenant gets a random 32-byte key; the
//! platform keeps it in `platform.tenant_keys` wrapped (AES-256-GCM) by the
//! master key from the operator's Secret, and hands it to the tenant's jobs in
//! its runtime Secret. A purge deletes both copies: the tenant's backups, still
//! on their storage until they expire, can no longer be read (crypto-shredding).

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use sqlx::PgPool;
use uuid::Uuid;

const NONCE_LEN: usize = 12;

/// The platform master key (`TRUFFLES_BACKUP_MASTER_KEY`, 64 hex characters).
#[derive(Clone)]
pub struct MasterKey([u8; 32]);

impl std::fmt::Debug for MasterKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("MasterKey(…)")
    }
}

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("the backup master key must be 64 hexadecimal characters (32 bytes)")]
    BadMasterKey,
    #[error(
        "a tenant key wrapped in the platform database does not open with this master key (was TRUFFLES_BACKUP_MASTER_KEY changed?)"
    )]
    Unwrap,
    #[error("reading or storing the tenant's backup key: {0}")]
    Database(#[from] sqlx::Error),
}

impl MasterKey {
    pub fn from_hex(text: &str) -> Result<Self, KeyError> {
        let bytes = hex::decode(text.trim()).map_err(|_| KeyError::BadMasterKey)?;
        Ok(Self(bytes.try_into().map_err(|_| KeyError::BadMasterKey)?))
    }

    fn cipher(&self) -> Aes256Gcm {
        let key: Key<Aes256Gcm> = self.0.into();
        Aes256Gcm::new(&key)
    }

    /// Nonce and ciphertext of `data_key`, bound to the client (a wrapped key
    /// copied to another client's row does not open).
    pub fn wrap(&self, client_id: Uuid, data_key: &[u8; 32]) -> Vec<u8> {
        self.seal(client_id.as_bytes(), data_key)
    }

    pub fn unwrap_key(&self, client_id: Uuid, wrapped: &[u8]) -> Result<[u8; 32], KeyError> {
        self.open(client_id.as_bytes(), wrapped)?
            .try_into()
            .map_err(|_| KeyError::Unwrap)
    }

    /// Nonce and ciphertext of `plain`; `bound_to` (the client and what the
    /// value is) must be the same to open it.
    pub fn seal(&self, bound_to: &[u8], plain: &[u8]) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let sealed = self
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: plain,
                    aad: bound_to,
                },
            )
            .expect("AES-GCM encrypts any message under 64 GiB");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn open(&self, bound_to: &[u8], wrapped: &[u8]) -> Result<Vec<u8>, KeyError> {
        let (nonce, sealed) = wrapped
            .split_at_checked(NONCE_LEN)
            .ok_or(KeyError::Unwrap)?;
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| KeyError::Unwrap)?;
        self.cipher()
            .decrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: sealed,
                    aad: bound_to,
                },
            )
            .map_err(|_| KeyError::Unwrap)
    }
}

/// 32 random bytes as hex: URL- and SQL-safe (the tenants' generated
/// passwords, secrets and keys).
pub fn random_token() -> String {
    let mut bytes = [0u8; 32];
    // The OS random source failing is not recoverable; nothing sensible can follow.
    getrandom::fill(&mut bytes).expect("the operating system's random source is available");
    hex::encode(bytes)
}

/// The tenant's data key as 64 hex characters: the stored one, or a new one
/// stored now. Idempotent and safe against a concurrent first call.
pub async fn ensure_data_key(
    pool: &PgPool,
    client_id: Uuid,
    master: &MasterKey,
) -> Result<String, KeyError> {
    let mut fresh = [0u8; 32];
    getrandom::fill(&mut fresh).expect("the operating system's random source is available");
    sqlx::query(
        "INSERT INTO platform.tenant_keys (client_id, wrapped_key) VALUES ($1, $2)
         ON CONFLICT (client_id) DO NOTHING",
    )
    .bind(client_id)
    .bind(master.wrap(client_id, &fresh))
    .execute(pool)
    .await?;
    let wrapped: Vec<u8> =
        sqlx::query_scalar("SELECT wrapped_key FROM platform.tenant_keys WHERE client_id = $1")
            .bind(client_id)
            .fetch_one(pool)
            .await?;
    let key = master.unwrap_key(client_id, &wrapped)?;
    Ok(hex::encode(key))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn wrapped_keys_open_only_with_their_master_and_client() {
        let master = MasterKey::from_hex(&"11".repeat(32)).expect("valid");
        let other = MasterKey::from_hex(&"22".repeat(32)).expect("valid");
        let (a, b) = (Uuid::new_v4(), Uuid::new_v4());
        let wrapped = master.wrap(a, &[7; 32]);
        assert_eq!(master.unwrap_key(a, &wrapped).expect("opens"), [7; 32]);
        assert!(master.unwrap_key(b, &wrapped).is_err());
        assert!(other.unwrap_key(a, &wrapped).is_err());
        assert!(master.unwrap_key(a, &wrapped[..20]).is_err());
    }

    #[test]
    fn master_keys_are_32_bytes_of_hex() {
        assert!(MasterKey::from_hex("abcd").is_err());
        assert!(MasterKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(MasterKey::from_hex(&"é".repeat(32)).is_err());
        assert!(MasterKey::from_hex(&"ab".repeat(32)).is_ok());
    }
}
