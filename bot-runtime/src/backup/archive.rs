//! The backup file: compressed JSON lines, sealed with AES-256-GCM under the
//! tenant's data key. Pure: bytes in, bytes out.
//!
//! Layout: `MAGIC` · header length (u32, big endian) · header (JSON) · nonce (12) ·
//! ciphertext and tag. The header is authenticated as associated data, so a
//! changed header, a flipped bit or a truncated file fails as a whole: nothing is
//! restored from a file that does not authenticate.

use std::collections::BTreeMap;
use std::io::{BufRead, Write};

use aes_gcm::aead::{Aead, KeyInit, Payload};
use aes_gcm::{Aes256Gcm, Key, Nonce};
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;

const MAGIC: &[u8; 16] = b"TRUFFLES-BACKUP1";
const NONCE_LEN: usize = 12;
/// zstd level: the default trades well between size and the job's CPU.
const ZSTD_LEVEL: i32 = 3;

/// What a backup holds, readable without the key (it names no person).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Header {
    pub format: u32,
    pub tenant: String,
    pub kind: Kind,
    /// RFC 3339. Daily backups hold the rows of [period_start, period_end).
    pub created_at: String,
    pub period_start: Option<String>,
    pub period_end: String,
    /// Rows per table, in restore order.
    pub tables: Vec<(String, u64)>,
    /// Identifies the data key (a keyed hash), so a wrong key is told apart
    /// from a damaged file.
    pub key_id: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, clap::ValueEnum)]
#[serde(rename_all = "lowercase")]
pub enum Kind {
    /// Conversations and messages of the period.
    Daily,
    /// The whole tenant schema.
    Weekly,
    /// The whole tenant schema, on demand.
    Manual,
}

impl Kind {
    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Daily => "daily",
            Kind::Weekly => "weekly",
            Kind::Manual => "manual",
        }
    }
}

/// One row of one table, as a line of the archive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Line {
    pub table: String,
    pub row: serde_json::Value,
}

#[derive(Debug, thiserror::Error)]
pub enum ArchiveError {
    #[error("not a Truffles backup file (no header)")]
    NotABackup,
    #[error("the backup was sealed with another data key (key {found}, ours {ours})")]
    WrongKey { found: String, ours: String },
    #[error("the backup file is damaged, truncated or was altered: it does not authenticate")]
    Tampered,
    #[error("the backup's content is unreadable: {0}")]
    Content(String),
    #[error("the backup key must be 64 hexadecimal characters (32 bytes)")]
    BadKey,
}

/// The tenant's 32-byte data key.
#[derive(Clone)]
pub struct DataKey([u8; 32]);

impl DataKey {
    pub fn from_hex(hex_key: &str) -> Result<Self, ArchiveError> {
        let bytes = hex::decode(hex_key.trim()).map_err(|_| ArchiveError::BadKey)?;
        Ok(Self(bytes.try_into().map_err(|_| ArchiveError::BadKey)?))
    }

    /// Public identifier of the key: names it without revealing it.
    pub fn id(&self) -> String {
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(&self.0).expect("HMAC takes keys of any length");
        mac.update(b"truffles/backup-key-id");
        hex::encode(&mac.finalize().into_bytes()[..8])
    }

    fn cipher(&self) -> Aes256Gcm {
        let key: Key<Aes256Gcm> = self.0.into();
        Aes256Gcm::new(&key)
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "DataKey({})", self.id())
    }
}

/// Compresses lines as they come (the plaintext never sits in memory whole).
pub struct Writer {
    encoder: zstd::Encoder<'static, Vec<u8>>,
    counts: BTreeMap<String, u64>,
    order: Vec<String>,
}

impl Writer {
    pub fn new() -> Self {
        Self {
            encoder: zstd::Encoder::new(Vec::new(), ZSTD_LEVEL)
                .expect("zstd accepts its default level"),
            counts: BTreeMap::new(),
            order: Vec::new(),
        }
    }

    /// Adds one row; `row_json` is the row as PostgreSQL's `to_jsonb` wrote it.
    pub fn push(&mut self, table: &str, row_json: &str) -> Result<(), ArchiveError> {
        let row: serde_json::Value =
            serde_json::from_str(row_json).map_err(|e| ArchiveError::Content(e.to_string()))?;
        let line = serde_json::to_vec(&Line {
            table: table.to_owned(),
            row,
        })
        .map_err(|e| ArchiveError::Content(e.to_string()))?;
        self.encoder
            .write_all(&line)
            .and_then(|()| self.encoder.write_all(b"\n"))
            .map_err(|e| ArchiveError::Content(e.to_string()))?;
        *self.counts.entry(table.to_owned()).or_insert(0) += 1;
        Ok(())
    }

    /// Declares a table (also an empty one: a restore recreates it).
    pub fn table(&mut self, table: &str) {
        if !self.order.iter().any(|t| t == table) {
            self.order.push(table.to_owned());
        }
    }

    /// Seals the archive. `header.tables` and `header.key_id` are filled here.
    pub fn seal(self, mut header: Header, key: &DataKey) -> Result<Vec<u8>, ArchiveError> {
        let compressed = self
            .encoder
            .finish()
            .map_err(|e| ArchiveError::Content(e.to_string()))?;
        header.tables = self
            .order
            .iter()
            .map(|t| (t.clone(), self.counts.get(t).copied().unwrap_or(0)))
            .collect();
        header.key_id = key.id();
        let header_json =
            serde_json::to_vec(&header).map_err(|e| ArchiveError::Content(e.to_string()))?;
        let header_len =
            u32::try_from(header_json.len()).map_err(|_| ArchiveError::Content("header".into()))?;
        let mut out = Vec::with_capacity(compressed.len() + header_json.len() + 64);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&header_len.to_be_bytes());
        out.extend_from_slice(&header_json);
        let mut nonce = [0u8; NONCE_LEN];
        getrandom::fill(&mut nonce).expect("the operating system's random source is available");
        let sealed = key
            .cipher()
            .encrypt(
                &Nonce::from(nonce),
                Payload {
                    msg: &compressed,
                    aad: &out,
                },
            )
            .map_err(|_| ArchiveError::Content("encryption failed".into()))?;
        out.extend_from_slice(&nonce);
        out.extend_from_slice(&sealed);
        Ok(out)
    }
}

impl Default for Writer {
    fn default() -> Self {
        Self::new()
    }
}

/// Reads the header without the key (to list or to report a wrong key).
pub fn header(file: &[u8]) -> Result<(Header, usize), ArchiveError> {
    let rest = file.strip_prefix(MAGIC).ok_or(ArchiveError::NotABackup)?;
    let len_bytes: [u8; 4] = rest
        .get(..4)
        .and_then(|b| b.try_into().ok())
        .ok_or(ArchiveError::NotABackup)?;
    let len = u32::from_be_bytes(len_bytes) as usize;
    let json = rest.get(4..4 + len).ok_or(ArchiveError::NotABackup)?;
    let header = serde_json::from_slice(json).map_err(|_| ArchiveError::NotABackup)?;
    Ok((header, MAGIC.len() + 4 + len))
}

/// Authenticates and decrypts the whole file, then parses every line: a file
/// that fails anywhere yields no rows at all.
pub fn open(file: &[u8], key: &DataKey) -> Result<(Header, Vec<Line>), ArchiveError> {
    let (header, body_at) = header(file)?;
    if header.key_id != key.id() {
        return Err(ArchiveError::WrongKey {
            found: header.key_id,
            ours: key.id(),
        });
    }
    let (aad, body) = file.split_at(body_at);
    let nonce: [u8; NONCE_LEN] = body
        .get(..NONCE_LEN)
        .and_then(|n| n.try_into().ok())
        .ok_or(ArchiveError::Tampered)?;
    let compressed = key
        .cipher()
        .decrypt(
            &Nonce::from(nonce),
            Payload {
                msg: &body[NONCE_LEN..],
                aad,
            },
        )
        .map_err(|_| ArchiveError::Tampered)?;
    let decoder = zstd::Decoder::new(compressed.as_slice())
        .map_err(|e| ArchiveError::Content(e.to_string()))?;
    let mut lines = Vec::new();
    for line in std::io::BufReader::new(decoder).lines() {
        let line = line.map_err(|e| ArchiveError::Content(e.to_string()))?;
        lines.push(serde_json::from_str(&line).map_err(|e| ArchiveError::Content(e.to_string()))?);
    }
    let declared: u64 = header.tables.iter().map(|(_, n)| n).sum();
    if declared != lines.len() as u64 {
        return Err(ArchiveError::Content(format!(
            "{} rows declared, {} found",
            declared,
            lines.len()
        )));
    }
    Ok((header, lines))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(byte: u8) -> DataKey {
        DataKey::from_hex(&hex::encode([byte; 32])).expect("valid key")
    }

    fn sample(key: &DataKey) -> Vec<u8> {
        let mut w = Writer::new();
        w.table("users");
        w.table("messages");
        w.push("messages", r#"{"id":"m1","content":"Салем! 27 000 ₸"}"#)
            .expect("row");
        w.push("messages", r#"{"id":"m2","content":null}"#)
            .expect("row");
        let header = Header {
            format: 1,
            tenant: "flower-shop".into(),
            kind: Kind::Daily,
            created_at: "2026-11-25T03:00:00Z".into(),
            period_start: Some("2026-11-24T03:00:00Z".into()),
            period_end: "2026-11-25T03:00:00Z".into(),
            tables: vec![],
            key_id: String::new(),
        };
        w.seal(header, key).expect("sealed")
    }

    #[test]
    fn round_trip_keeps_rows_tables_and_counts() {
        let k = key(7);
        let (header, lines) = open(&sample(&k), &k).expect("opens");
        assert_eq!(
            header.tables,
            vec![("users".into(), 0), ("messages".into(), 2)]
        );
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0].row["content"], "Салем! 27 000 ₸");
    }

    #[test]
    fn the_plaintext_is_not_in_the_file() {
        let file = sample(&key(7));
        let needle = "27 000".as_bytes();
        assert!(!file.windows(needle.len()).any(|w| w == needle));
    }

    #[test]
    fn wrong_key_is_named_as_such() {
        let file = sample(&key(7));
        assert!(matches!(
            open(&file, &key(8)),
            Err(ArchiveError::WrongKey { .. })
        ));
    }

    #[test]
    fn any_flipped_bit_or_truncation_fails_whole() {
        let k = key(7);
        let file = sample(&k);
        let (_, body_at) = header(&file).expect("header");
        for at in [body_at + 3, body_at + 20, file.len() - 1] {
            let mut bad = file.clone();
            bad[at] ^= 1;
            assert!(
                matches!(open(&bad, &k), Err(ArchiveError::Tampered)),
                "byte {at}"
            );
        }
        assert!(matches!(
            open(&file[..file.len() - 5], &k),
            Err(ArchiveError::Tampered)
        ));
        // The header is authenticated too: change the tenant's name in it.
        let mut forged = file.clone();
        let at = forged
            .windows(11)
            .position(|w| w == b"flower-shop")
            .expect("the tenant is in the header");
        forged[at + 10] = b'q';
        assert!(matches!(open(&forged, &k), Err(ArchiveError::Tampered)));
        assert!(matches!(open(b"hello", &k), Err(ArchiveError::NotABackup)));
    }

    #[test]
    fn keys_must_be_32_bytes_of_hex() {
        assert!(DataKey::from_hex("abc").is_err());
        assert!(DataKey::from_hex(&"zz".repeat(32)).is_err());
        assert!(DataKey::from_hex(&"ab".repeat(32)).is_ok());
    }
}
