//! Knowledge sync (docs/architecture.md, "Knowledge"): new documents are chunked, embedded
//! and stored; changed ones (content hash differs) replaced; removed ones
//! deleted; each change audited. Nothing changed → no embedding calls. A
//! lost vector store is rebuilt by the same run.

use std::collections::HashSet;
use std::sync::Arc;

use anyhow::{Context, Result};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{PgPool, Row};
use truffles_crds::client::KnowledgeSource;
use uuid::Uuid;

use super::Point;
use super::chunk::CHUNKING;
use super::embed::Kind;
use super::vocabulary::Vocabulary;
use super::{KnowledgeBase, KnowledgeConfig};
use crate::audit;
use crate::fetch::Fetcher;

/// One file of a source.
#[derive(Clone, Debug)]
pub struct SourceDocument {
    /// `config_map`, `url`, `upload` or `google_drive` (the documents table's `source`).
    pub kind: &'static str,
    pub source_name: String,
    pub source_id: String,
    pub file_name: String,
    pub doc_type: String,
    pub content: Vec<u8>,
}

#[derive(Debug, Default, PartialEq, Eq, serde::Serialize)]
pub struct Report {
    pub added: usize,
    pub changed: usize,
    pub unchanged: usize,
    pub removed: usize,
    pub failed: usize,
    pub chunks: usize,
    /// Sources that could not be read, each with why (their documents stay).
    #[serde(skip_serializing_if = "Vec::is_empty")]
    pub unread: Vec<String>,
}

fn doc_type(source: &KnowledgeSource) -> String {
    serde_json::to_value(source.doc_type)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "custom".into())
}

/// Reads the sources the runtime can reach: ConfigMaps mounted at
/// `<sources_dir>/<source name>/` (the operator mounts them), URLs, uploads
/// (the tenant's `uploads` table) and Google Drive folders (credentials
/// mounted under `secrets_dir`). Returns the documents and the names of the
/// sources that could be read.
pub async fn read_sources(
    sources: &[KnowledgeSource],
    config: &KnowledgeConfig,
    db: &PgPool,
) -> Result<(Vec<SourceDocument>, HashSet<String>, Vec<String>)> {
    let (sources_dir, secrets_dir) = (&config.sources_dir, &config.secrets_dir);
    let fetcher = Fetcher::new(config.fetch.clone())?;
    let mut docs = Vec::new();
    let mut read = HashSet::new();
    let mut unread = Vec::new();
    for source in sources {
        if let Some(cm) = &source.config_map {
            let folder = sources_dir.join(&source.name);
            let entries = match std::fs::read_dir(&folder) {
                Ok(e) => e,
                Err(e) => {
                    tracing::warn!(source = %source.name, error = %e, "knowledge source folder is not readable");
                    unread.push(format!("{}: {e}", source.name));
                    continue;
                }
            };
            read.insert(source.name.clone());
            for entry in entries {
                let entry = entry?;
                let name = entry.file_name().to_string_lossy().into_owned();
                // ConfigMap volumes hold `..data` links next to the keys.
                let wanted = cm.keys.is_empty() || cm.keys.contains(&name);
                if name.starts_with('.') || !wanted || !entry.path().is_file() {
                    continue;
                }
                docs.push(SourceDocument {
                    kind: "config_map",
                    source_name: source.name.clone(),
                    source_id: name.clone(),
                    file_name: name,
                    doc_type: doc_type(source),
                    content: std::fs::read(entry.path())?,
                });
            }
        } else if let Some(url) = &source.url {
            match fetcher.get(&url.url, MAX_URL_BYTES, URL_TIMEOUT).await {
                Ok(page) => {
                    read.insert(source.name.clone());
                    let html = page
                        .content_type
                        .as_deref()
                        .is_some_and(|t| t.starts_with("text/html"));
                    let file_name = url_file_name(&url.url, html);
                    docs.push(SourceDocument {
                        kind: "url",
                        source_name: source.name.clone(),
                        source_id: url.url.clone(),
                        file_name,
                        doc_type: doc_type(source),
                        content: page.bytes,
                    });
                }
                Err(e) => {
                    tracing::warn!(source = %source.name, error = %e, refused = e.refused(), "knowledge URL not fetched");
                    unread.push(format!("{}: {e}", source.name));
                }
            }
        } else if source.upload.is_some() {
            match super::upload::files(db, &source.name).await {
                Ok(files) => {
                    read.insert(source.name.clone());
                    docs.extend(files.into_iter().map(|(name, content)| SourceDocument {
                        kind: "upload",
                        source_name: source.name.clone(),
                        source_id: name.clone(),
                        file_name: name,
                        doc_type: doc_type(source),
                        content,
                    }));
                }
                Err(e) => tracing::warn!(source = %source.name, error = %e, "uploads not readable"),
            }
        } else if let Some(drive) = &source.google_drive {
            let credentials = super::drive::credentials_path(secrets_dir, &source.name);
            match super::drive::read(drive, &credentials, &fetcher).await {
                Ok(files) => {
                    read.insert(source.name.clone());
                    docs.extend(files.into_iter().map(|file| SourceDocument {
                        kind: "google_drive",
                        source_name: source.name.clone(),
                        source_id: file.id,
                        file_name: file.file_name,
                        doc_type: doc_type(source),
                        content: file.content,
                    }));
                }
                Err(e) => {
                    tracing::warn!(source = %source.name, error = format!("{e:#}"), "Google Drive folder not read");
                    unread.push(format!("{}: {e:#}", source.name));
                }
            }
        }
    }
    Ok((docs, read, unread))
}

/// The name a fetched URL is read as: its last path segment, or a page of
/// the type the server said (`text/html` pages are read as HTML whatever
/// their path ends with: `/delivery`, `/prices.php`).
fn url_file_name(url: &str, html: bool) -> String {
    let last = reqwest::Url::parse(url)
        .ok()
        .and_then(|u| {
            u.path_segments()?
                .rfind(|s| !s.is_empty())
                .map(str::to_owned)
        })
        .unwrap_or_else(|| "page".to_owned());
    let is_html = last.ends_with(".html") || last.ends_with(".htm");
    match (html, last.contains('.')) {
        (true, _) if !is_html => format!("{last}.html"),
        (false, false) => format!("{last}.txt"),
        _ => last,
    }
}

/// A web page or file of a URL source: at most this big, this slow.
const MAX_URL_BYTES: usize = 20 * 1024 * 1024;
const URL_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

/// One sync run over the tenant's configured sources.
pub async fn run(
    kb: &KnowledgeBase,
    db: &PgPool,
    sources: &[KnowledgeSource],
    config: &KnowledgeConfig,
) -> Result<Report> {
    let (docs, read, unread) = read_sources(sources, config, db).await?;
    let mut report = sync(kb, db, &docs, &read).await?;
    report.unread = unread;
    tracing::info!(?report, "knowledge sync");
    Ok(report)
}

/// What a document is indexed as: its content and the way it was cut
/// ([`CHUNKING`]), so a new chunker re-indexes documents that did not change.
fn hash(content: &[u8]) -> String {
    hex::encode(
        Sha256::new()
            .chain_update(CHUNKING)
            .chain_update(content)
            .finalize(),
    )
}

/// Brings the vector store and the `documents` table in line with `docs`.
/// `sources` lists every configured source name: documents of a source that
/// was not read (unreachable) are kept, not deleted.
pub async fn sync(
    kb: &KnowledgeBase,
    db: &PgPool,
    docs: &[SourceDocument],
    read_sources: &HashSet<String>,
) -> Result<Report> {
    let mut report = Report::default();
    let rewrite = kb.store.ensure().await?;
    let indexed_chunks: i64 = sqlx::query_scalar(
        "SELECT coalesce(sum(chunk_count), 0)::int8 FROM documents WHERE status = 'indexed'",
    )
    .fetch_one(db)
    .await?;
    // The store lost points (a new volume, a wiped directory) or was made
    // before lexical search: rebuild all.
    let rebuild = rewrite || kb.store.count().await? < indexed_chunks as usize;
    if rebuild {
        tracing::warn!(
            indexed_chunks,
            "the vector store is missing chunks; rebuilding it"
        );
    }
    let mut seen = HashSet::new();
    // The tokenizer, once a document needs indexing, held until the run ends.
    let mut _chunker = None;
    for doc in docs {
        seen.insert((doc.source_name.clone(), doc.source_id.clone()));
        let content_hash = hash(&doc.content);
        let existing = sqlx::query(
            "SELECT id, content_hash, status, point_ids FROM documents WHERE source_name = $1 AND source_id = $2",
        )
        .bind(&doc.source_name)
        .bind(&doc.source_id)
        .fetch_optional(db)
        .await?;
        let (id, old_points, action) = match &existing {
            Some(row) => {
                let same = row.try_get::<String, _>("content_hash")? == content_hash
                    && row.try_get::<String, _>("status")? == "indexed";
                if same && !rebuild {
                    report.unchanged += 1;
                    continue;
                }
                (
                    row.try_get::<Uuid, _>("id")?,
                    row.try_get::<Vec<Uuid>, _>("point_ids")?,
                    "changed",
                )
            }
            None => (Uuid::new_v4(), Vec::new(), "added"),
        };
        if _chunker.is_none() {
            _chunker = Some(kb.chunker()?);
        }
        match index(kb, doc, id).await {
            Ok((points, words)) => {
                // New points first, then the old ones go: a search meanwhile
                // sees the old or the new document, never a half of one.
                kb.store
                    .delete(
                        old_points
                            .into_iter()
                            .filter(|p| !points.contains(p))
                            .collect(),
                    )
                    .await?;
                let mut tx = db.begin().await?;
                sqlx::query(
                    "INSERT INTO documents (id, source, source_name, source_id, filename, content_hash, doc_type, point_ids,
                                            chunk_count, status, error, indexed_at, updated_at, deleted_at, words)
                     VALUES ($1, $9, $2, $3, $4, $5, $6, $7, $8, 'indexed', NULL, now(), now(), NULL, $10)
                     ON CONFLICT (source_name, source_id) DO UPDATE SET
                         content_hash = EXCLUDED.content_hash, doc_type = EXCLUDED.doc_type, point_ids = EXCLUDED.point_ids,
                         words = EXCLUDED.words,
                         chunk_count = EXCLUDED.chunk_count, status = 'indexed', error = NULL, indexed_at = now(),
                         updated_at = now(), deleted_at = NULL",
                )
                .bind(id)
                .bind(&doc.source_name)
                .bind(&doc.source_id)
                .bind(&doc.file_name)
                .bind(&content_hash)
                .bind(&doc.doc_type)
                .bind(&points)
                .bind(points.len() as i32)
                .bind(doc.kind)
                .bind(&words)
                .execute(&mut *tx)
                .await?;
                audit::record(
                    &mut *tx,
                    "knowledge_sync",
                    "system",
                    json!({"document": doc.source_id, "source": doc.source_name, "action": action, "chunks": points.len()}),
                )
                .await?;
                tx.commit().await?;
                report.chunks += points.len();
                if action == "added" {
                    report.added += 1;
                } else {
                    report.changed += 1;
                }
            }
            Err(e) => {
                // Recorded against the document; the rest of the sync goes on.
                let reason = format!("{e:#}");
                tracing::warn!(document = %doc.source_id, error = %reason, "document not indexed");
                sqlx::query(
                    "INSERT INTO documents (id, source, source_name, source_id, filename, content_hash, doc_type, status, error, updated_at)
                     VALUES ($1, $8, $2, $3, $4, $5, $6, 'failed', $7, now())
                     ON CONFLICT (source_name, source_id) DO UPDATE SET
                         content_hash = EXCLUDED.content_hash, status = 'failed', error = EXCLUDED.error, updated_at = now()",
                )
                .bind(id)
                .bind(&doc.source_name)
                .bind(&doc.source_id)
                .bind(&doc.file_name)
                .bind(&content_hash)
                .bind(&doc.doc_type)
                .bind(&reason)
                .bind(doc.kind)
                .execute(db)
                .await?;
                report.failed += 1;
            }
        }
    }
    // Removed at the source (of a source that was read): delete the chunks.
    let live =
        sqlx::query("SELECT id, source_name, source_id FROM documents WHERE status <> 'deleted'")
            .fetch_all(db)
            .await?;
    for row in live {
        let source_name: String = row.try_get("source_name")?;
        let source_id: String = row.try_get("source_id")?;
        if !read_sources.contains(&source_name)
            || seen.contains(&(source_name.clone(), source_id.clone()))
        {
            continue;
        }
        // By the payload's document id, not the recorded point ids: this also
        // takes points a sync that stopped between upsert and commit left behind.
        let id: Uuid = row.try_get("id")?;
        kb.store.delete_document(id).await?;
        let mut tx = db.begin().await?;
        sqlx::query(
            "UPDATE documents SET status = 'deleted', point_ids = '{}', chunk_count = 0, deleted_at = now(), updated_at = now() WHERE id = $1",
        )
        .bind(id)
        .execute(&mut *tx)
        .await?;
        audit::record(
            &mut *tx,
            "knowledge_sync",
            "system",
            json!({"document": source_id, "source": source_name, "action": "removed"}),
        )
        .await?;
        tx.commit().await?;
        report.removed += 1;
    }
    kb.store.flush().await?;
    load_vocabulary(kb, db).await?;
    Ok(report)
}

/// The indexed documents' words as the knowledge base's vocabulary (each
/// with the number of documents that have it).
pub async fn load_vocabulary(kb: &KnowledgeBase, db: &PgPool) -> Result<()> {
    let rows: Vec<(String, i64)> = sqlx::query_as(
        "SELECT w, count(*) FROM documents, unnest(words) AS w WHERE status = 'indexed' GROUP BY w",
    )
    .fetch_all(db)
    .await
    .context("reading the knowledge base's vocabulary")?;
    let vocabulary = Vocabulary::new(
        rows.into_iter()
            .map(|(w, n)| (w, u32::try_from(n).unwrap_or(u32::MAX))),
    )
    .with_stems(&kb.lexical);
    let mut slot = match kb.vocabulary.write() {
        Ok(slot) => slot,
        Err(poisoned) => poisoned.into_inner(),
    };
    *slot = Arc::new(vocabulary);
    Ok(())
}

/// Chunks, embeds and stores one document; returns its point ids and words.
async fn index(
    kb: &KnowledgeBase,
    doc: &SourceDocument,
    document_id: Uuid,
) -> Result<(Vec<Uuid>, Vec<String>)> {
    // Parsing is CPU-bound and runs untrusted files: off the async workers.
    let (chunker, name, content) = (kb.chunker()?, doc.file_name.clone(), doc.content.clone());
    let chunks = tokio::task::spawn_blocking(move || chunker.split(&name, &content))
        .await
        .context("the parsing thread")??;
    anyhow::ensure!(!chunks.is_empty(), "the document has no text");
    let words = super::vocabulary::document_words(&chunks.join("\n"));
    let vectors = kb
        .embedder
        .embed(&chunks, Kind::Passage)
        .await
        .context("embedding")?;
    let updated_at = chrono_now();
    let points: Vec<Point> = chunks
        .into_iter()
        .zip(vectors)
        .map(|(content, vector)| Point {
            id: Uuid::new_v4(),
            vector,
            lexical: kb.lexical.document(&content),
            payload: json!({
                "content": content, "type": doc.doc_type, "source": doc.source_name, "source_id": doc.source_id,
                "document_id": document_id, "updated_at": updated_at,
            }),
        })
        .collect();
    let ids = points.iter().map(|p| p.id).collect();
    kb.store.upsert(points).await?;
    Ok((ids, words))
}

fn chrono_now() -> String {
    sqlx::types::chrono::Utc::now().to_rfc3339()
}

#[cfg(test)]
mod url_tests {
    use super::url_file_name;

    #[test]
    fn fetched_pages_are_read_by_what_the_server_says_they_are() {
        assert_eq!(
            url_file_name("https://flowers.kz/delivery", true),
            "delivery.html"
        );
        assert_eq!(url_file_name("https://flowers.kz/", true), "page.html");
        assert_eq!(
            url_file_name("https://flowers.kz/prices.php?lang=ru", true),
            "prices.php.html"
        );
        assert_eq!(
            url_file_name("https://flowers.kz/about.html", true),
            "about.html"
        );
        assert_eq!(
            url_file_name("https://flowers.kz/docs/prices.md", false),
            "prices.md"
        );
        assert_eq!(
            url_file_name("https://flowers.kz/stock.csv#top", false),
            "stock.csv"
        );
        assert_eq!(
            url_file_name("https://flowers.kz/notes", false),
            "notes.txt"
        );
    }
}
