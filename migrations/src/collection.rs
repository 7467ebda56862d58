//! A tenant's Qdrant collection for the server backend: `{name}_knowledge`,
//! one unnamed cosine vector of the embedding model's size, and keyword
//! indexes on the payload fields chunks are filtered and deleted by. Here
//! beside the SQL schema because both the operator (onboarding, purge) and
//! the runtime's knowledge sync (a lost collection is created again) need
//! the same definition.

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, Distance, FieldType,
    VectorParamsBuilder, vectors_config,
};

/// The payload field naming a chunk's document: what a removed document's
/// points are deleted by.
pub const DOCUMENT_ID: &str = "document_id";
/// Payload fields with a keyword index.
pub const INDEXED_FIELDS: [&str; 4] = [DOCUMENT_ID, "source", "source_id", "type"];

#[derive(Debug, thiserror::Error)]
pub enum CollectionError {
    #[error("Qdrant at {url}: {message}")]
    Qdrant { url: String, message: String },
    #[error(
        "the Qdrant collection {name} holds {found}-dimensional vectors but the embedding model gives {wanted}: delete the collection or change llm.embeddingDimensions"
    )]
    WrongSize {
        name: String,
        found: u64,
        wanted: u64,
    },
}

/// The collection of a tenant's knowledge base.
pub fn name(tenant: &str) -> String {
    format!("{tenant}_knowledge")
}

/// A client for the gRPC endpoint (`http://qdrant:6334`). The API key is
/// sent as the `api-key` header; it is never part of an error.
pub fn connect(url: &str, api_key: Option<&str>) -> Result<Qdrant, CollectionError> {
    Qdrant::from_url(url)
        .api_key(api_key.filter(|k| !k.is_empty()).map(str::to_owned))
        .timeout(std::time::Duration::from_secs(30))
        // The version check would print to stdout and call the server at build.
        .skip_compatibility_check()
        .build()
        .map_err(|e| qdrant_error(url, e))
}

fn qdrant_error(url: &str, e: qdrant_client::QdrantError) -> CollectionError {
    let message = match e {
        qdrant_client::QdrantError::ResponseError { status } => {
            format!("{:?}: {}", status.code(), status.message())
        }
        other => other.to_string(),
    };
    CollectionError::Qdrant {
        url: url.to_owned(),
        message,
    }
}

/// Creates the collection and its payload indexes unless it exists; an
/// existing one must have the model's vector size. Returns whether it was
/// created.
pub async fn ensure(
    client: &Qdrant,
    url: &str,
    name: &str,
    dimensions: u64,
) -> Result<bool, CollectionError> {
    let err = |e| qdrant_error(url, e);
    if client.collection_exists(name).await.map_err(err)? {
        let info = client.collection_info(name).await.map_err(err)?;
        let size = info
            .result
            .and_then(|i| i.config)
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        if let Some(vectors_config::Config::Params(params)) = size
            && params.size != dimensions
        {
            return Err(CollectionError::WrongSize {
                name: name.to_owned(),
                found: params.size,
                wanted: dimensions,
            });
        }
        return Ok(false);
    }
    client
        .create_collection(
            CreateCollectionBuilder::new(name)
                .vectors_config(VectorParamsBuilder::new(dimensions, Distance::Cosine)),
        )
        .await
        .map_err(err)?;
    for field in INDEXED_FIELDS {
        client
            .create_field_index(
                CreateFieldIndexCollectionBuilder::new(name, field, FieldType::Keyword).wait(true),
            )
            .await
            .map_err(err)?;
    }
    Ok(true)
}

/// Deletes the collection (a purge). Returns whether there was one.
pub async fn drop(client: &Qdrant, url: &str, name: &str) -> Result<bool, CollectionError> {
    let err = |e| qdrant_error(url, e);
    if !client.collection_exists(name).await.map_err(err)? {
        return Ok(false);
    }
    client.delete_collection(name).await.map_err(err)?;
    Ok(true)
}
