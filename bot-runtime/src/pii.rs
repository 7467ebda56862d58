//! Phone numbers at rest: a keyed hash to find a customer, AES-256-GCM
//! ciphertext to show the number to a manager. The key is the tenant's own
//! (its runtime Secret), so purging the tenant shreds the numbers too.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use anyhow::Context;
use hmac::{Hmac, Mac};
use sha2::Sha256;

/// A 32-byte key written as 64 hex characters.
pub fn parse_key(hex_key: &str) -> anyhow::Result<[u8; 32]> {
    let bytes = hex::decode(hex_key.trim()).context("TRUFFLES_PII_KEY is not hex")?;
    bytes
        .try_into()
        .map_err(|_| anyhow::anyhow!("TRUFFLES_PII_KEY must be 32 bytes (64 hex characters)"))
}

const NONCE_LEN: usize = 12;

#[derive(Clone)]
pub struct Pii {
    hash_key: [u8; 32],
    cipher: Aes256Gcm,
}

#[derive(Debug, thiserror::Error)]
#[error("the ciphertext is corrupt or was made with another key")]
pub struct Undecryptable;

fn derive(key: &[u8; 32], purpose: &str) -> [u8; 32] {
    // HMAC as a KDF: one tenant key, independent keys per purpose.
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes keys of any length");
    mac.update(purpose.as_bytes());
    mac.finalize().into_bytes().into()
}

impl Pii {
    pub fn new(key: &[u8; 32]) -> Self {
        let enc_key: Key<Aes256Gcm> = derive(key, "truffles/phone-encryption").into();
        Self {
            hash_key: derive(key, "truffles/phone-hash"),
            cipher: Aes256Gcm::new(&enc_key),
        }
    }

    /// Hex keyed hash of a phone number: stable, so it finds the customer.
    pub fn hash(&self, phone: &str) -> String {
        let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(&self.hash_key)
            .expect("HMAC takes keys of any length");
        mac.update(phone.as_bytes());
        hex::encode(mac.finalize().into_bytes())
    }

    /// Nonce followed by ciphertext and tag.
    pub fn encrypt(&self, plain: &str) -> Vec<u8> {
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let sealed = self
            .cipher
            .encrypt(&Nonce::from(nonce), plain.as_bytes())
            .expect("AES-GCM encrypts any message shorter than 64 GiB");
        [nonce.as_slice(), &sealed].concat()
    }

    pub fn decrypt(&self, data: &[u8]) -> Result<String, Undecryptable> {
        if data.len() < NONCE_LEN {
            return Err(Undecryptable);
        }
        let (nonce, sealed) = data.split_at(NONCE_LEN);
        let nonce: [u8; NONCE_LEN] = nonce.try_into().map_err(|_| Undecryptable)?;
        let plain = self
            .cipher
            .decrypt(&Nonce::from(nonce), sealed)
            .map_err(|_| Undecryptable)?;
        String::from_utf8(plain).map_err(|_| Undecryptable)
    }
}

impl Pii {
    /// A channel address as stored in text columns: hex of its ciphertext.
    pub fn seal_address(&self, address: &str) -> String {
        hex::encode(self.encrypt(address))
    }

    /// The address back from [`Pii::seal_address`]; `None` when it was sealed
    /// with another key or is corrupt.
    pub fn open_address(&self, sealed: &str) -> Option<String> {
        self.decrypt(&hex::decode(sealed).ok()?).ok()
    }
}

/// A short, non-reversible tag for logs (never the number itself).
pub fn log_tag(pii: &Pii, address: &str) -> String {
    pii.hash(address)[..12].to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_round_trip_and_hash_stably_per_key() {
        let a = Pii::new(&[1; 32]);
        let b = Pii::new(&[2; 32]);
        let sealed = a.encrypt("77015705555");
        assert!(!sealed.windows(11).any(|w| w == b"77015705555"));
        assert_eq!(a.decrypt(&sealed).expect("decrypts"), "77015705555");
        assert!(
            b.decrypt(&sealed).is_err(),
            "another tenant's key cannot read it"
        );
        assert_eq!(a.hash("77015705555"), a.hash("77015705555"));
        assert_ne!(a.hash("77015705555"), b.hash("77015705555"));
        assert_ne!(a.encrypt("7"), a.encrypt("7"), "fresh nonce every time");
        let mut tampered = sealed.clone();
        tampered[15] ^= 1;
        assert!(a.decrypt(&tampered).is_err());
        assert!(a.decrypt(&[1, 2]).is_err());
    }

    #[test]
    fn keys_must_be_32_bytes_of_hex() {
        assert!(parse_key(&"ab".repeat(32)).is_ok());
        assert!(parse_key("abcd").is_err());
        assert!(parse_key(&"zz".repeat(32)).is_err());
    }
}
