//! Where backup files go: a directory (the CronJob's PersistentVolumeClaim) or
//! S3-compatible object storage, both through `object_store`, addressed by URL
//! (`file:///var/lib/truffles/backups`, `s3://bucket/prefix`). S3 settings come
//! from the standard `AWS_*` variables (`AWS_ENDPOINT`, `AWS_REGION`,
//! `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_ALLOW_HTTP`).

use std::sync::Arc;

use object_store::path::Path;
use object_store::{ObjectStore, ObjectStoreExt, PutPayload};

#[derive(Debug, thiserror::Error)]
pub enum StorageError {
    #[error("backup storage URL {0:?} is not file:///path or s3://bucket/prefix")]
    Url(String),
    #[error("backup storage {action} {key}: {source}")]
    Io {
        action: &'static str,
        key: String,
        #[source]
        source: object_store::Error,
    },
    #[error("no backup {0} in the backup storage")]
    NotFound(String),
}

#[derive(Clone, Debug)]
pub struct Storage {
    store: Arc<dyn ObjectStore>,
    root: Path,
}

impl Storage {
    /// Opens the storage of `url`; `options` are object_store settings as
    /// (key, value), e.g. the process environment.
    pub fn from_url<I, K, V>(url: &str, options: I) -> Result<Self, StorageError>
    where
        I: IntoIterator<Item = (K, V)>,
        K: AsRef<str>,
        V: Into<String>,
    {
        let parsed = url::Url::parse(url).map_err(|_| StorageError::Url(url.to_owned()))?;
        if !matches!(parsed.scheme(), "file" | "s3") {
            return Err(StorageError::Url(url.to_owned()));
        }
        let (store, root) =
            object_store::parse_url_opts(&parsed, options).map_err(|source| StorageError::Io {
                action: "opening",
                key: String::new(),
                source,
            })?;
        Ok(Self {
            store: Arc::from(store),
            root,
        })
    }

    fn path(&self, key: &str) -> Path {
        key.split('/')
            .filter(|part| !part.is_empty())
            .fold(self.root.clone(), |path, part| path.join(part))
    }

    pub async fn put(&self, key: &str, bytes: Vec<u8>) -> Result<(), StorageError> {
        self.store
            .put(&self.path(key), PutPayload::from(bytes))
            .await
            .map(drop)
            .map_err(|source| StorageError::Io {
                action: "writing",
                key: key.to_owned(),
                source,
            })
    }

    pub async fn get(&self, key: &str) -> Result<Vec<u8>, StorageError> {
        let read = async { self.store.get(&self.path(key)).await?.bytes().await };
        match read.await {
            Ok(bytes) => Ok(bytes.to_vec()),
            Err(object_store::Error::NotFound { .. }) => {
                Err(StorageError::NotFound(key.to_owned()))
            }
            Err(source) => Err(StorageError::Io {
                action: "reading",
                key: key.to_owned(),
                source,
            }),
        }
    }

    /// Deletes a file; one that is already gone counts as deleted.
    pub async fn delete(&self, key: &str) -> Result<(), StorageError> {
        match self.store.delete(&self.path(key)).await {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(source) => Err(StorageError::Io {
                action: "deleting",
                key: key.to_owned(),
                source,
            }),
        }
    }
}
