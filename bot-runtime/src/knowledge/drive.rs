//! A Google Drive folder as a knowledge source (Drive API v3, read-only).
//!
//! The service account's JSON key is mounted by the operator at
//! `<secrets>/knowledge/<source>/credentials.json`. Its private key signs a
//! JWT that the key's `token_uri` trades for an access token (OAuth 2.0
//! service-account flow); the folder is then listed page by page (subfolders
//! too), Google Docs exported as Markdown, Sheets as XLSX (every sheet),
//! Slides as text, and other files downloaded as they are. Any failure leaves
//! the whole source unread for this run, so the sync removes nothing of it.

use std::collections::{HashSet, VecDeque};
use std::path::{Path, PathBuf};
use std::time::Duration;
use truffles_crds::contract::path;

use anyhow::{Context, Result, bail};
use serde::Deserialize;
use truffles_crds::client::GoogleDriveSource;

use crate::fetch::Fetcher;

/// Read-only access to file contents and metadata.
pub const SCOPE: &str = "https://www.googleapis.com/auth/drive.readonly";
pub const FOLDER: &str = "application/vnd.google-apps.folder";
/// Larger files (videos, archives) are no knowledge for a chatbot.
const MAX_FILE_BYTES: u64 = 20 * 1024 * 1024;
/// Folders inside folders, at most this deep (and each folder once).
const MAX_DEPTH: usize = 5;
/// One call to Drive or its token endpoint.
const CALL_TIMEOUT: Duration = Duration::from_secs(60);

/// Where the operator mounts a Drive source's credentials.
pub fn credentials_path(secrets_dir: &Path, source: &str) -> PathBuf {
    secrets_dir
        .join(path::DRIVE_SECRETS)
        .join(source)
        .join(path::DRIVE_CREDENTIALS_FILE)
}

/// The fields of a service-account key file the flow needs.
#[derive(Deserialize)]
pub struct ServiceAccount {
    pub client_email: String,
    pub private_key: String,
    #[serde(default = "default_token_uri")]
    pub token_uri: String,
}

fn default_token_uri() -> String {
    "https://oauth2.googleapis.com/token".into()
}

impl std::fmt::Debug for ServiceAccount {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServiceAccount")
            .field("client_email", &self.client_email)
            .field("token_uri", &self.token_uri)
            .finish_non_exhaustive()
    }
}

/// How a Drive file becomes a document: Google's own formats are exported
/// (they have no bytes to download), the rest downloaded.
#[derive(Debug, PartialEq, Eq)]
pub enum Fetch {
    Export {
        mime_type: &'static str,
        extension: &'static str,
    },
    Download,
    Skip,
}

pub fn fetch_for(mime_type: &str) -> Fetch {
    let export = |mime_type, extension| Fetch::Export {
        mime_type,
        extension,
    };
    match mime_type {
        // Markdown keeps the headings the chunker splits by.
        "application/vnd.google-apps.document" => export("text/markdown", "md"),
        // CSV would export the first sheet only.
        "application/vnd.google-apps.spreadsheet" => export(
            "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
            "xlsx",
        ),
        "application/vnd.google-apps.presentation" => export("text/plain", "txt"),
        // Forms, drawings, shortcuts, sites: nothing to read.
        other if other.starts_with("application/vnd.google-apps.") => Fetch::Skip,
        _ => Fetch::Download,
    }
}

/// One file of the folder (or a subfolder) and its content.
#[derive(Debug)]
pub struct DriveDocument {
    pub id: String,
    /// The name the chunker reads the format from.
    pub file_name: String,
    pub content: Vec<u8>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct FileList {
    #[serde(default)]
    files: Vec<File>,
    next_page_token: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct File {
    id: String,
    name: String,
    mime_type: String,
    /// Only for files with bytes (not Google's formats), as a string.
    size: Option<String>,
}

#[derive(Deserialize)]
struct Token {
    access_token: String,
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: &'a str,
    scope: &'a str,
    aud: &'a str,
    iat: i64,
    exp: i64,
}

/// Every document of the source's folder.
pub async fn read(
    source: &GoogleDriveSource,
    credentials: &Path,
    fetch: &Fetcher,
) -> Result<Vec<DriveDocument>> {
    let key = std::fs::read(credentials)
        .with_context(|| format!("reading the Drive credentials at {}", credentials.display()))?;
    let account: ServiceAccount = serde_json::from_slice(&key).context(
        "the Drive credentials are no service-account key (JSON with client_email and private_key)",
    )?;
    let token = access_token(fetch, &account, chrono::Utc::now().timestamp()).await?;
    let drive = Drive {
        fetch: fetch.clone(),
        base: format!("{}/drive/v3", source.api_base_url.trim_end_matches('/')),
        token,
    };
    let mut docs = Vec::new();
    let mut folders = VecDeque::from([(source.folder_id.clone(), 0)]);
    let mut seen = HashSet::new();
    while let Some((folder, depth)) = folders.pop_front() {
        if !seen.insert(folder.clone()) {
            continue;
        }
        for file in drive.list(&folder).await? {
            if file.mime_type == FOLDER {
                if depth < MAX_DEPTH {
                    folders.push_back((file.id, depth + 1));
                }
                continue;
            }
            if let Some(doc) = drive.fetch(file).await? {
                docs.push(doc);
            }
        }
    }
    Ok(docs)
}

/// The service-account flow: a JWT signed with the account's key, traded at
/// its token URI for an access token (valid an hour; one sync needs one).
pub async fn access_token(fetch: &Fetcher, account: &ServiceAccount, now: i64) -> Result<String> {
    let key = jsonwebtoken::EncodingKey::from_rsa_pem(account.private_key.as_bytes())
        .context("the Drive credentials' private_key is no RSA key in PEM")?;
    let claims = Claims {
        iss: &account.client_email,
        scope: SCOPE,
        aud: &account.token_uri,
        iat: now,
        exp: now + 3600,
    };
    let assertion = jsonwebtoken::encode(
        &jsonwebtoken::Header::new(jsonwebtoken::Algorithm::RS256),
        &claims,
        &key,
    )
    .context("signing the Drive token request")?;
    let response = fetch
        .request(reqwest::Method::POST, &account.token_uri)
        .context("the Drive credentials' token_uri")?
        .timeout(CALL_TIMEOUT)
        .form(&[
            ("grant_type", "urn:ietf:params:oauth:grant-type:jwt-bearer"),
            ("assertion", assertion.as_str()),
        ])
        .send()
        .await
        .map_err(reqwest::Error::without_url)
        .context("asking for a Drive access token")?;
    let status = response.status();
    if !status.is_success() {
        // The body is OAuth's error object ({"error": "invalid_grant", ...}): no secret in it.
        let body = response.text().await.unwrap_or_default();
        bail!(
            "the token endpoint refused the service account {} ({status}): {}",
            account.client_email,
            truncate(&body)
        );
    }
    Ok(response
        .json::<Token>()
        .await
        .context("the token endpoint's answer has no access_token")?
        .access_token)
}

struct Drive {
    fetch: Fetcher,
    base: String,
    token: String,
}

impl Drive {
    /// The folder's files, all pages.
    async fn list(&self, folder: &str) -> Result<Vec<File>> {
        let q = format!("'{folder}' in parents and trashed = false");
        let mut files = Vec::new();
        let mut page_token: Option<String> = None;
        loop {
            let mut query = vec![
                ("q", q.as_str()),
                // Without nextPageToken in `fields`, Drive never says there is more.
                ("fields", "nextPageToken,files(id,name,mimeType,size)"),
                ("pageSize", "100"),
                ("supportsAllDrives", "true"),
                ("includeItemsFromAllDrives", "true"),
            ];
            if let Some(t) = &page_token {
                query.push(("pageToken", t));
            }
            let page: FileList = self
                .get(&format!("{}/files", self.base), &query)
                .await
                .with_context(|| format!("listing the Drive folder {folder}"))?
                .json()
                .await
                .context("reading a Drive file list")?;
            files.extend(page.files);
            match page.next_page_token {
                Some(t) if !t.is_empty() => page_token = Some(t),
                _ => return Ok(files),
            }
        }
    }

    async fn fetch(&self, file: File) -> Result<Option<DriveDocument>> {
        let url = format!("{}/files/{}", self.base, file.id);
        let (response, file_name) = match fetch_for(&file.mime_type) {
            Fetch::Skip => {
                tracing::debug!(file = %file.name, mime = %file.mime_type, "Drive item without content, skipped");
                return Ok(None);
            }
            Fetch::Export {
                mime_type,
                extension,
            } => (
                self.get(&format!("{url}/export"), &[("mimeType", mime_type)])
                    .await,
                format!("{}.{extension}", file.name),
            ),
            Fetch::Download => {
                let size = file.size.as_deref().and_then(|s| s.parse::<u64>().ok());
                if size.is_some_and(|s| s > MAX_FILE_BYTES) {
                    tracing::warn!(file = %file.name, ?size, "Drive file too large for the knowledge base, skipped");
                    return Ok(None);
                }
                (
                    self.get(&url, &[("alt", "media"), ("supportsAllDrives", "true")])
                        .await,
                    file.name.clone(),
                )
            }
        };
        let content = response
            .with_context(|| format!("downloading {} from Drive", file.name))?
            .bytes()
            .await
            .with_context(|| format!("downloading {} from Drive", file.name))?;
        Ok(Some(DriveDocument {
            id: file.id,
            file_name,
            content: content.to_vec(),
        }))
    }

    async fn get(&self, url: &str, query: &[(&str, &str)]) -> Result<reqwest::Response> {
        let response = self
            .fetch
            .request(reqwest::Method::GET, url)
            .context("the Drive API's URL")?
            .timeout(CALL_TIMEOUT)
            .query(query)
            .bearer_auth(&self.token)
            .send()
            .await
            .map_err(reqwest::Error::without_url)?;
        let status = response.status();
        if !status.is_success() {
            let body = response.text().await.unwrap_or_default();
            bail!("Drive answered {status}: {}", truncate(&body));
        }
        Ok(response)
    }
}

fn truncate(body: &str) -> String {
    body.chars().take(300).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn google_formats_are_exported_and_files_downloaded() {
        assert_eq!(
            fetch_for("application/vnd.google-apps.document"),
            Fetch::Export {
                mime_type: "text/markdown",
                extension: "md"
            }
        );
        assert!(matches!(
            fetch_for("application/vnd.google-apps.spreadsheet"),
            Fetch::Export {
                extension: "xlsx",
                ..
            }
        ));
        assert_eq!(fetch_for("application/pdf"), Fetch::Download);
        assert_eq!(fetch_for("application/vnd.google-apps.form"), Fetch::Skip);
        assert_eq!(
            fetch_for("application/vnd.google-apps.shortcut"),
            Fetch::Skip
        );
    }

    #[test]
    fn the_key_is_never_printed() {
        let account: ServiceAccount = serde_json::from_str(
            r#"{"client_email": "kb@shop.iam.gserviceaccount.com", "private_key": "-----BEGIN PRIVATE KEY-----\nSECRET\n"}"#,
        )
        .expect("a key");
        assert_eq!(account.token_uri, "https://oauth2.googleapis.com/token");
        let printed = format!("{account:?}");
        assert!(
            printed.contains("kb@shop") && !printed.contains("SECRET"),
            "{printed}"
        );
    }
}
