//! Documents a business uploads (knowledge sources with `upload`), through the
//! runtime's admin endpoint: kept in the tenant's `uploads` table, so they
//! survive a new pod and go into the backups; the sync reads them like any
//! other source.

use sqlx::PgPool;
use truffles_crds::client::KnowledgeSource;

#[derive(Debug, thiserror::Error)]
pub enum UploadError {
    #[error("no knowledge source {0:?} takes uploads (knowledge.sources[].upload)")]
    NoSuchSource(String),
    #[error("{0:?} is not a file name (1–255 characters, no '/', '\\\\' or leading '.')")]
    BadName(String),
    #[error("the file has {size} bytes; this source takes at most {max} MiB")]
    TooLarge { size: usize, max: u32 },
    #[error("the file is empty")]
    Empty,
    #[error("storing the upload: {0}")]
    Database(#[from] sqlx::Error),
}

/// The upload source `name` of the spec.
pub fn source<'a>(
    sources: &'a [KnowledgeSource],
    name: &str,
) -> Result<&'a KnowledgeSource, UploadError> {
    sources
        .iter()
        .find(|s| s.name == name && s.upload.is_some())
        .ok_or_else(|| UploadError::NoSuchSource(name.to_owned()))
}

/// Checks a file before it is stored (pure).
pub fn check(source: &KnowledgeSource, filename: &str, size: usize) -> Result<(), UploadError> {
    let bad = filename.is_empty()
        || filename.chars().count() > 255
        || filename.starts_with('.')
        || filename.contains(['/', '\\', '\0']);
    if bad {
        return Err(UploadError::BadName(filename.to_owned()));
    }
    let max = source.upload.as_ref().map_or(20, |u| u.max_size_mib);
    if size == 0 {
        return Err(UploadError::Empty);
    }
    if size > max as usize * 1024 * 1024 {
        return Err(UploadError::TooLarge { size, max });
    }
    Ok(())
}

/// Stores (or replaces) a file; audited without its content.
pub async fn store(
    db: &PgPool,
    actor: &str,
    source: &str,
    filename: &str,
    content: &[u8],
) -> Result<(), UploadError> {
    let mut tx = db.begin().await?;
    sqlx::query(
        "INSERT INTO uploads (source, filename, content) VALUES ($1, $2, $3)
         ON CONFLICT (source, filename) DO UPDATE SET content = EXCLUDED.content, uploaded_at = now()",
    )
    .bind(source)
    .bind(filename)
    .bind(content)
    .execute(&mut *tx)
    .await?;
    crate::audit::record_by(
        &mut *tx,
        "knowledge_sync",
        "admin",
        Some(actor),
        serde_json::json!({"upload": filename, "source": source, "bytes": content.len()}),
    )
    .await?;
    tx.commit().await?;
    Ok(())
}

/// Deletes a file; false when there was none.
pub async fn delete(
    db: &PgPool,
    actor: &str,
    source: &str,
    filename: &str,
) -> Result<bool, UploadError> {
    let mut tx = db.begin().await?;
    let gone = sqlx::query("DELETE FROM uploads WHERE source = $1 AND filename = $2")
        .bind(source)
        .bind(filename)
        .execute(&mut *tx)
        .await?
        .rows_affected()
        > 0;
    if gone {
        crate::audit::record_by(
            &mut *tx,
            "knowledge_sync",
            "admin",
            Some(actor),
            serde_json::json!({"upload_deleted": filename, "source": source}),
        )
        .await?;
    }
    tx.commit().await?;
    Ok(gone)
}

/// The files of an upload source, for the sync.
pub async fn files(db: &PgPool, source: &str) -> sqlx::Result<Vec<(String, Vec<u8>)>> {
    sqlx::query_as("SELECT filename, content FROM uploads WHERE source = $1 ORDER BY filename")
        .bind(source)
        .fetch_all(db)
        .await
}

#[cfg(test)]
mod tests {
    use super::*;

    fn upload_source() -> KnowledgeSource {
        serde_json::from_value(
            serde_json::json!({"name": "manual", "type": "faq", "upload": {"maxSizeMib": 1}}),
        )
        .expect("a source")
    }

    #[test]
    fn names_and_sizes_are_checked() {
        let s = upload_source();
        assert!(check(&s, "прайс-2026.md", 10).is_ok());
        for bad in ["", ".env", "../etc/passwd", "a/b.md", "a\\b.md"] {
            assert!(
                matches!(check(&s, bad, 10), Err(UploadError::BadName(_))),
                "{bad}"
            );
        }
        assert!(matches!(
            check(&s, "big.pdf", 2 * 1024 * 1024),
            Err(UploadError::TooLarge { .. })
        ));
        assert!(matches!(check(&s, "empty.md", 0), Err(UploadError::Empty)));
        assert!(matches!(
            source(&[s], "catalog"),
            Err(UploadError::NoSuchSource(_))
        ));
    }
}
