//! A fake of Google's service-account token endpoint and the Drive API v3
//! calls a knowledge sync makes: `files.list` (the `'<folder>' in parents`
//! query, `fields` that must name `nextPageToken` for paging to work, pages
//! smaller than asked for, as Drive is allowed to return), `files.get` with
//! `alt=media` (refused for Google's own formats, as Drive does) and
//! `files.export` (only the documented export types of each Google format).
//! The token request is a JWT the fake verifies with the account's public key.

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Mutex};

use anyhow::{Context, bail};
use axum::extract::{Form, Path, Query, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::{Value, json};

use crate::fakes::{lock, serve};

pub const DOC: &str = "application/vnd.google-apps.document";
pub const SHEET: &str = "application/vnd.google-apps.spreadsheet";
pub const FOLDER: &str = "application/vnd.google-apps.folder";
pub const FORM: &str = "application/vnd.google-apps.form";
const XLSX: &str = "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet";
const DOCX: &str = "application/vnd.openxmlformats-officedocument.wordprocessingml.document";

/// A file in the fake Drive.
#[derive(Clone, Debug)]
pub struct DriveFile {
    pub id: String,
    pub name: String,
    pub mime_type: String,
    pub parent: String,
    /// The bytes (or, for Google's formats, what any export returns).
    pub content: Vec<u8>,
}

impl DriveFile {
    pub fn new(id: &str, name: &str, mime_type: &str, parent: &str, content: &[u8]) -> Self {
        Self {
            id: id.into(),
            name: name.into(),
            mime_type: mime_type.into(),
            parent: parent.into(),
            content: content.to_vec(),
        }
    }
}

#[derive(Default)]
struct DriveState {
    token_url: String,
    client_email: String,
    public_key: Vec<u8>,
    tokens: HashSet<String>,
    files: Vec<DriveFile>,
    /// At most this many files per page, whatever `pageSize` asks.
    page_size: usize,
    down: bool,
    /// Each list call's folder and page token.
    listed: Vec<(String, Option<String>)>,
    violations: Vec<String>,
}

#[derive(Clone)]
pub struct FakeDrive {
    pub url: String,
    state: Arc<Mutex<DriveState>>,
}

/// A service account's key file, as Google's console downloads it, with a
/// fresh RSA key pair (openssl).
pub struct ServiceAccountKey {
    pub json: String,
    pub client_email: String,
    pub public_key: Vec<u8>,
}

impl ServiceAccountKey {
    pub fn generate(client_email: &str, token_uri: &str) -> anyhow::Result<Self> {
        let openssl = |args: &[&str], input: Option<&[u8]>| -> anyhow::Result<Vec<u8>> {
            use std::io::Write;
            let mut child = std::process::Command::new("openssl")
                .args(args)
                .stdin(std::process::Stdio::piped())
                .stdout(std::process::Stdio::piped())
                .stderr(std::process::Stdio::piped())
                .spawn()
                .context("running openssl")?;
            if let (Some(input), Some(mut stdin)) = (input, child.stdin.take()) {
                stdin.write_all(input)?;
            }
            let out = child.wait_with_output()?;
            if !out.status.success() {
                bail!(
                    "openssl {args:?} failed: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
            }
            Ok(out.stdout)
        };
        let private = openssl(
            &[
                "genpkey",
                "-algorithm",
                "RSA",
                "-pkeyopt",
                "rsa_keygen_bits:2048",
            ],
            None,
        )?;
        let public = openssl(&["pkey", "-pubout"], Some(&private))?;
        let json = json!({
            "type": "service_account",
            "project_id": "flower-shop-kb",
            "private_key_id": "0123456789abcdef",
            "private_key": String::from_utf8(private)?,
            "client_email": client_email,
            "client_id": "100000000000000000001",
            "auth_uri": "https://accounts.google.com/o/oauth2/auth",
            "token_uri": token_uri,
        })
        .to_string();
        Ok(Self {
            json,
            client_email: client_email.into(),
            public_key: public,
        })
    }
}

impl FakeDrive {
    /// Starts the fake; the account's key file names `<url>/token` as its token URI.
    pub async fn start(
        client_email: &str,
        page_size: usize,
    ) -> anyhow::Result<(Self, ServiceAccountKey)> {
        let state = Arc::new(Mutex::new(DriveState {
            page_size,
            ..DriveState::default()
        }));
        let app = Router::new()
            .route("/token", post(token))
            .route("/drive/v3/files", get(list))
            .route("/drive/v3/files/{id}", get(download))
            .route("/drive/v3/files/{id}/export", get(export))
            .with_state(state.clone());
        let url = format!("http://{}", serve(app).await?);
        let key = ServiceAccountKey::generate(client_email, &format!("{url}/token"))?;
        {
            let mut s = lock(&state);
            s.token_url = format!("{url}/token");
            s.client_email = client_email.into();
            s.public_key = key.public_key.clone();
        }
        Ok((Self { url, state }, key))
    }

    pub fn add(&self, file: DriveFile) {
        lock(&self.state).files.push(file);
    }

    pub fn remove(&self, id: &str) {
        lock(&self.state).files.retain(|f| f.id != id);
    }

    /// Every call answers 503 while down.
    pub fn set_down(&self, down: bool) {
        lock(&self.state).down = down;
    }

    pub fn listed(&self) -> Vec<(String, Option<String>)> {
        lock(&self.state).listed.clone()
    }

    pub fn violations(&self) -> Vec<String> {
        lock(&self.state).violations.clone()
    }
}

fn google_error(status: StatusCode, reason: &str, message: &str) -> Response {
    (
        status,
        Json(json!({"error": {
            "code": status.as_u16(),
            "message": message,
            "errors": [{"domain": "global", "reason": reason, "message": message}],
        }})),
    )
        .into_response()
}

fn unavailable() -> Response {
    google_error(
        StatusCode::SERVICE_UNAVAILABLE,
        "backendError",
        "The service is currently unavailable.",
    )
}

#[derive(serde::Deserialize)]
struct Claims {
    iss: String,
    scope: String,
    aud: String,
    iat: i64,
    exp: i64,
}

async fn token(
    State(state): State<Arc<Mutex<DriveState>>>,
    Form(form): Form<HashMap<String, String>>,
) -> Response {
    let mut s = lock(&state);
    if s.down {
        return unavailable();
    }
    let refuse = |description: &str| {
        (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "invalid_grant", "error_description": description})),
        )
            .into_response()
    };
    if form.get("grant_type").map(String::as_str)
        != Some("urn:ietf:params:oauth:grant-type:jwt-bearer")
    {
        s.violations
            .push(format!("grant_type {:?}", form.get("grant_type")));
        return (
            StatusCode::BAD_REQUEST,
            Json(json!({"error": "unsupported_grant_type"})),
        )
            .into_response();
    }
    let Some(assertion) = form.get("assertion") else {
        return refuse("Missing assertion.");
    };
    let Ok(key) = jsonwebtoken::DecodingKey::from_rsa_pem(&s.public_key) else {
        return refuse("bad fake key");
    };
    let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::RS256);
    validation.set_audience(&[s.token_url.clone()]);
    validation.set_issuer(&[s.client_email.clone()]);
    validation.set_required_spec_claims(&["exp", "iss", "aud"]);
    let claims = match jsonwebtoken::decode::<Claims>(assertion, &key, &validation) {
        Ok(data) => data.claims,
        Err(e) => return refuse(&format!("Invalid JWT: {e}")),
    };
    // Google: at most an hour, and a scope the Drive API accepts.
    if claims.exp - claims.iat > 3600 || claims.aud != s.token_url || claims.iss != s.client_email {
        return refuse(
            "Invalid JWT: Token must be a short-lived token (60 minutes) and in a reasonable timeframe.",
        );
    }
    if !claims
        .scope
        .split(' ')
        .any(|sc| sc.starts_with("https://www.googleapis.com/auth/drive"))
    {
        s.violations.push(format!("scope {}", claims.scope));
        return refuse("Invalid scope.");
    }
    let token = format!("ya29.fake-{}", uuid::Uuid::new_v4().simple());
    s.tokens.insert(token.clone());
    Json(json!({"access_token": token, "expires_in": 3599, "token_type": "Bearer"})).into_response()
}

/// The bearer token check every Drive call makes: the refusal, if any.
fn refusal(s: &DriveState, headers: &HeaderMap) -> Option<Response> {
    if s.down {
        return Some(unavailable());
    }
    let token = headers
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "));
    match token {
        Some(t) if s.tokens.contains(t) => None,
        _ => Some(google_error(
            StatusCode::UNAUTHORIZED,
            "authError",
            "Request had invalid authentication credentials.",
        )),
    }
}

async fn list(
    State(state): State<Arc<Mutex<DriveState>>>,
    headers: HeaderMap,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut s = lock(&state);
    if let Some(refused) = refusal(&s, &headers) {
        return refused;
    }
    let q = query.get("q").cloned().unwrap_or_default();
    // The query language: `'<id>' in parents`, and trashed files left out.
    let folder = q
        .strip_prefix('\'')
        .and_then(|rest| rest.split_once("' in parents"))
        .map(|(id, _)| id.to_owned());
    let Some(folder) = folder else {
        s.violations.push(format!("q {q:?}"));
        return google_error(StatusCode::BAD_REQUEST, "invalid", "Invalid Value");
    };
    if !q.contains("trashed = false") {
        s.violations.push(format!("q without trashed = false: {q}"));
    }
    let fields = query.get("fields").cloned().unwrap_or_default();
    if !fields.contains("nextPageToken") || !fields.contains("files(") {
        s.violations
            .push(format!("fields {fields:?}: paging needs nextPageToken"));
    }
    let asked: usize = query
        .get("pageSize")
        .and_then(|p| p.parse().ok())
        .unwrap_or(100);
    if !(1..=1000).contains(&asked) {
        return google_error(StatusCode::BAD_REQUEST, "invalid", "Invalid pageSize");
    }
    let page_token = query.get("pageToken").cloned();
    let offset = match &page_token {
        None => 0,
        Some(t) => match t
            .strip_prefix(&format!("{folder}:"))
            .and_then(|o| o.parse().ok())
        {
            Some(o) => o,
            None => return google_error(StatusCode::BAD_REQUEST, "invalid", "Invalid pageToken"),
        },
    };
    s.listed.push((folder.clone(), page_token));
    let in_folder: Vec<&DriveFile> = s.files.iter().filter(|f| f.parent == folder).collect();
    let size = asked.min(s.page_size);
    let files: Vec<Value> = in_folder
        .iter()
        .skip(offset)
        .take(size)
        .map(|f| {
            let mut v = json!({"id": f.id, "name": f.name, "mimeType": f.mime_type});
            // Drive gives a size for files with bytes only, as a string.
            if !f.mime_type.starts_with("application/vnd.google-apps.") {
                v["size"] = json!(f.content.len().to_string());
            }
            v
        })
        .collect();
    let mut page = json!({"files": files});
    if offset + size < in_folder.len() && fields.contains("nextPageToken") {
        page["nextPageToken"] = json!(format!("{folder}:{}", offset + size));
    }
    Json(page).into_response()
}

/// The file a `files/{id}` call names, if the caller may see it.
fn file(s: &DriveState, headers: &HeaderMap, id: &str) -> Result<DriveFile, Box<Response>> {
    if let Some(refused) = refusal(s, headers) {
        return Err(Box::new(refused));
    }
    s.files.iter().find(|f| f.id == id).cloned().ok_or_else(|| {
        Box::new(google_error(
            StatusCode::NOT_FOUND,
            "notFound",
            &format!("File not found: {id}."),
        ))
    })
}

async fn download(
    State(state): State<Arc<Mutex<DriveState>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut s = lock(&state);
    let file = match file(&s, &headers, &id) {
        Ok(file) => file,
        Err(refused) => return *refused,
    };
    if query.get("alt").map(String::as_str) != Some("media") {
        s.violations
            .push(format!("files.get {id} without alt=media"));
        return Json(json!({"id": file.id, "name": file.name, "mimeType": file.mime_type}))
            .into_response();
    }
    if file.mime_type.starts_with("application/vnd.google-apps.") {
        return google_error(
            StatusCode::FORBIDDEN,
            "fileNotDownloadable",
            "Only files with binary content can be downloaded. Use Export with Docs Editors files.",
        );
    }
    ([("content-type", file.mime_type)], file.content).into_response()
}

/// The export formats Drive documents for each Google format (a subset).
fn exportable(mime_type: &str) -> &'static [&'static str] {
    match mime_type {
        DOC => &[
            "text/markdown",
            "text/plain",
            "application/pdf",
            DOCX,
            "text/html",
        ],
        SHEET => &[XLSX, "text/csv", "application/pdf"],
        "application/vnd.google-apps.presentation" => &["text/plain", "application/pdf"],
        _ => &[],
    }
}

async fn export(
    State(state): State<Arc<Mutex<DriveState>>>,
    headers: HeaderMap,
    Path(id): Path<String>,
    Query(query): Query<HashMap<String, String>>,
) -> Response {
    let mut s = lock(&state);
    let file = match file(&s, &headers, &id) {
        Ok(file) => file,
        Err(refused) => return *refused,
    };
    let formats = exportable(&file.mime_type);
    if formats.is_empty() {
        s.violations
            .push(format!("export of {} ({})", file.name, file.mime_type));
        return google_error(
            StatusCode::FORBIDDEN,
            "fileNotExportable",
            "Export only supports Docs Editors files.",
        );
    }
    let Some(mime) = query
        .get("mimeType")
        .filter(|m| formats.contains(&m.as_str()))
    else {
        s.violations.push(format!(
            "export of {} as {:?}",
            file.name,
            query.get("mimeType")
        ));
        return google_error(
            StatusCode::BAD_REQUEST,
            "badRequest",
            "The requested conversion is not supported.",
        );
    };
    ([("content-type", mime.clone())], file.content).into_response()
}
