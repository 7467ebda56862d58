//! A tenant's Qdrant collection for the server backend: `{name}_knowledge`,
//! one unnamed cosine vector of the embedding model's size, the `bm25`
//! sparse vector (IDF applied by Qdrant) for lexical search, and keyword
//! indexes on the payload fields chunks are filtered and deleted by. Here
//! beside the SQL schema because both the operator (onboarding, purge) and
//! the runtime's knowledge sync (a lost collection is created again) need
//! the same definition.

use qdrant_client::Qdrant;
use qdrant_client::qdrant::{
    CreateCollectionBuilder, CreateFieldIndexCollectionBuilder, CreateVectorNameRequestBuilder,
    Distance, FieldType, Modifier, SparseVectorCreationConfigBuilder, SparseVectorParamsBuilder,
    SparseVectorsConfigBuilder, VectorParamsBuilder, vectors_config,
};

/// The payload field naming a chunk's document: what a removed document's
/// points are deleted by.
pub const DOCUMENT_ID: &str = "document_id";
/// The sparse vector holding each chunk's BM25 term weights.
pub const LEXICAL_VECTOR: &str = "bm25";
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

/// What [`ensure`] found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Ensured {
    /// There, as defined.
    Ready,
    /// Missing: created empty.
    Created,
    /// Made before lexical search: it has no `bm25` vector. The runtime
    /// adds it ([`add_lexical`]) and writes every point again; the operator
    /// leaves it, so that the one who re-indexes is the one who upgrades.
    LacksLexical,
}

/// Creates the collection and its payload indexes unless it exists; an
/// existing one must have the model's vector size.
pub async fn ensure(
    client: &Qdrant,
    url: &str,
    name: &str,
    dimensions: u64,
) -> Result<Ensured, CollectionError> {
    let err = |e| qdrant_error(url, e);
    if client.collection_exists(name).await.map_err(err)? {
        let info = client.collection_info(name).await.map_err(err)?;
        let params = info.result.and_then(|i| i.config).and_then(|c| c.params);
        let size = params
            .as_ref()
            .and_then(|p| p.vectors_config.clone())
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
        let lexical = params
            .and_then(|p| p.sparse_vectors_config)
            .is_some_and(|s| s.map.contains_key(LEXICAL_VECTOR));
        return Ok(if lexical {
            Ensured::Ready
        } else {
            Ensured::LacksLexical
        });
    }
    let mut sparse = SparseVectorsConfigBuilder::default();
    sparse.add_named_vector_params(
        LEXICAL_VECTOR,
        SparseVectorParamsBuilder::default().modifier(Modifier::Idf),
    );
    client
        .create_collection(
            CreateCollectionBuilder::new(name)
                .vectors_config(VectorParamsBuilder::new(dimensions, Distance::Cosine))
                .sparse_vectors_config(sparse),
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
    Ok(Ensured::Created)
}

/// Gives a collection made before lexical search its `bm25` vector.
pub async fn add_lexical(client: &Qdrant, url: &str, name: &str) -> Result<(), CollectionError> {
    client
        .create_vector_name(
            CreateVectorNameRequestBuilder::new(
                name,
                LEXICAL_VECTOR,
                SparseVectorCreationConfigBuilder::default().modifier(Modifier::Idf),
            )
            .wait(true),
        )
        .await
        .map_err(|e| qdrant_error(url, e))?;
    Ok(())
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
