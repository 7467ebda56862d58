//! The tenant's Qdrant collection when its vector store is a Qdrant server
//! (`knowledge.vectorStore.backend: Qdrant`): created at onboarding with the
//! embedding model's size, dropped by a purge. The collection's definition is
//! `truffles_migrations::collection`, shared with the runtime's sync (which
//! creates it again if it is lost). The Edge backend lives in the runtime's
//! process and needs nothing here.

use k8s_openapi::api::core::v1::Secret;
use kube::Api;
use truffles_crds::TrufflesClient;
use truffles_crds::client::VectorBackend;
use truffles_migrations::collection;

use super::error::Error;

/// Where the tenant's vectors live, for its KnowledgeReady condition.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum VectorStore {
    /// Qdrant Edge in the runtime.
    Embedded,
    /// The collection on the Qdrant server.
    Collection { name: String, dimensions: u64 },
}

/// A client for the tenant's Qdrant server, with its API key read from the
/// Secret the spec names. `None` for the Edge backend.
async fn connect(
    tc: &TrufflesClient,
    secrets: &Api<Secret>,
) -> Result<Option<(qdrant_client::Qdrant, String)>, Error> {
    let store = &tc.spec.knowledge.vector_store;
    if store.backend != VectorBackend::Qdrant {
        return Ok(None);
    }
    // The CRD requires a URL with this backend.
    let url = store.url.clone().ok_or_else(|| {
        Error::InvalidSpec("vectorStore.url is required when backend is Qdrant".into())
    })?;
    let api_key = match &store.api_key_secret_ref {
        Some(r) => {
            let missing = || Error::MissingSecret {
                namespace: secrets.namespace().unwrap_or_default().to_owned(),
                name: r.name.clone(),
                key: r.key.clone(),
            };
            let secret = secrets.get_opt(&r.name).await?.ok_or_else(missing)?;
            Some(super::dereference::secret_text(&secret, &r.key).ok_or_else(missing)?)
        }
        None => None,
    };
    Ok(Some((collection::connect(&url, api_key.as_deref())?, url)))
}

/// Creates the tenant's collection unless it exists (with the right size).
pub async fn ensure(
    tc: &TrufflesClient,
    name: &str,
    secrets: &Api<Secret>,
) -> Result<VectorStore, Error> {
    let Some((client, url)) = connect(tc, secrets).await? else {
        return Ok(VectorStore::Embedded);
    };
    let collection_name = collection::name(name);
    let dimensions = u64::from(tc.spec.llm.embedding_dimensions);
    match collection::ensure(&client, &url, &collection_name, dimensions).await? {
        collection::Ensured::Ready => {}
        collection::Ensured::Created => {
            tracing::info!(client = %name, collection = %collection_name, "Qdrant collection created");
        }
        collection::Ensured::LacksLexical => {
            tracing::info!(client = %name, collection = %collection_name, "Qdrant collection from before lexical search: the runtime adds it and re-indexes");
        }
    }
    Ok(VectorStore::Collection {
        name: collection_name,
        dimensions,
    })
}

/// Drops the tenant's collection (a purge); false when there was none.
pub async fn purge(tc: &TrufflesClient, name: &str, secrets: &Api<Secret>) -> Result<bool, Error> {
    let Some((client, url)) = connect(tc, secrets).await? else {
        return Ok(false);
    };
    Ok(collection::drop(&client, &url, &collection::name(name)).await?)
}
