//! The test environment's Qdrant server: a real Qdrant (built from source by
//! `scripts/testenv.sh`, on loopback with an API key), shared by every test of
//! the run. Each test works on its own collections (named after its unique
//! tenant); these helpers read what the backend left there, through the same
//! gRPC API the backend uses.

use anyhow::{Context, Result};
use qdrant_client::Qdrant;
use qdrant_client::qdrant::vectors_config::Config;
use qdrant_client::qdrant::{
    CountPointsBuilder, DeleteVectorNameRequestBuilder, Distance, Modifier, PayloadSchemaType,
};
use truffles_migrations::collection::LEXICAL_VECTOR;

/// Payload indexes: field and type, sorted by field.
pub type Indexes = Vec<(String, PayloadSchemaType)>;

pub struct TestQdrant {
    /// The gRPC endpoint, as `vectorStore.url` names it.
    pub url: String,
    /// The key every call must carry.
    pub api_key: String,
    client: Qdrant,
}

impl TestQdrant {
    /// The server `scripts/testenv.sh` started (`TRUFFLES_QDRANT_URL`,
    /// `TRUFFLES_QDRANT_API_KEY`).
    pub fn from_env() -> Result<Self> {
        let url = crate::env_var("TRUFFLES_QDRANT_URL")?;
        let api_key = crate::env_var("TRUFFLES_QDRANT_API_KEY")?;
        let client = Qdrant::from_url(&url)
            .api_key(api_key.clone())
            .build()
            .context("a client of the test Qdrant server")?;
        Ok(Self {
            url,
            api_key,
            client,
        })
    }

    pub async fn exists(&self, collection: &str) -> Result<bool> {
        Ok(self.client.collection_exists(collection).await?)
    }

    /// The collection's vector size and distance, and its payload indexes.
    pub async fn describe(&self, collection: &str) -> Result<Option<(u64, Distance, Indexes)>> {
        if !self.exists(collection).await? {
            return Ok(None);
        }
        let info = self
            .client
            .collection_info(collection)
            .await?
            .result
            .context("no collection info")?;
        let vectors = info
            .config
            .and_then(|c| c.params)
            .and_then(|p| p.vectors_config)
            .and_then(|v| v.config);
        let Some(Config::Params(params)) = vectors else {
            anyhow::bail!("{collection} has no single unnamed vector: {vectors:?}");
        };
        let mut indexes: Indexes = info
            .payload_schema
            .into_iter()
            .map(|(field, schema)| {
                let kind = PayloadSchemaType::try_from(schema.data_type)
                    .unwrap_or(PayloadSchemaType::UnknownType);
                (field, kind)
            })
            .collect();
        indexes.sort();
        let distance = Distance::try_from(params.distance).unwrap_or(Distance::UnknownDistance);
        Ok(Some((params.size, distance, indexes)))
    }

    /// The modifier of the collection's `bm25` sparse vector, `None` when
    /// it has none.
    pub async fn lexical(&self, collection: &str) -> Result<Option<Modifier>> {
        let info = self
            .client
            .collection_info(collection)
            .await?
            .result
            .context("no collection info")?;
        Ok(info
            .config
            .and_then(|c| c.params)
            .and_then(|p| p.sparse_vectors_config)
            .and_then(|s| s.map.get(LEXICAL_VECTOR).cloned())
            .map(|v| {
                v.modifier
                    .and_then(|m| Modifier::try_from(m).ok())
                    .unwrap_or(Modifier::None)
            }))
    }

    /// Removes the `bm25` vector, points kept: a collection as it was
    /// before lexical search.
    pub async fn drop_lexical(&self, collection: &str) -> Result<()> {
        self.client
            .delete_vector_name(
                DeleteVectorNameRequestBuilder::new(collection, LEXICAL_VECTOR).wait(true),
            )
            .await?;
        Ok(())
    }

    /// Exact point count, `None` when the collection does not exist.
    pub async fn points(&self, collection: &str) -> Result<Option<usize>> {
        if !self.exists(collection).await? {
            return Ok(None);
        }
        let count = self
            .client
            .count(CountPointsBuilder::new(collection).exact(true))
            .await?;
        Ok(Some(count.result.map_or(0, |r| r.count as usize)))
    }

    /// Drops a collection behind the runtime's back (a lost collection).
    pub async fn lose(&self, collection: &str) -> Result<()> {
        self.client.delete_collection(collection).await?;
        Ok(())
    }
}
