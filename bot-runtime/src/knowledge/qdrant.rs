//! The Qdrant server backend (qdrant-client over gRPC): the tenant's own
//! collection `{name}_knowledge`, which the operator creates at onboarding
//! and this store creates again when it is lost. Writes wait for Qdrant to
//! apply them, so a sync's "new points first, then the old ones go" holds
//! for searches from any replica.

use anyhow::{Context, Result};
use qdrant_client::Qdrant;
use qdrant_client::qdrant::points_selector::PointsSelectorOneOf;
use qdrant_client::qdrant::{
    Condition, CountPointsBuilder, DeletePoints, DeletePointsBuilder, Filter, NamedVectors,
    PointStruct, PointsIdsList, PrefetchQueryBuilder, Query, QueryPoints, QueryPointsBuilder,
    RrfBuilder, UpsertPoints, UpsertPointsBuilder, Vector, VectorInput, vector_output,
    vectors_output,
};
use serde_json::Value;
use truffles_migrations::collection;
use uuid::Uuid;

use super::store::{Point, RRF_K, Search, StoreFuture, VectorStore, admitted};

/// A Qdrant server (`knowledge.vectorStore.backend: Qdrant`).
#[derive(Clone)]
pub struct QdrantConfig {
    /// The gRPC endpoint, e.g. `http://qdrant.truffles-system:6334`.
    pub url: String,
    pub api_key: Option<String>,
    pub collection: String,
}

impl std::fmt::Debug for QdrantConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("QdrantConfig")
            .field("url", &self.url)
            .field("collection", &self.collection)
            .finish_non_exhaustive()
    }
}

/// Points per upsert request (a large document's chunks go in several).
const UPSERT_BATCH: usize = 256;

pub struct QdrantStore {
    client: Qdrant,
    url: String,
    collection: String,
    dimensions: usize,
}

impl QdrantStore {
    /// A client for the collection; nothing is asked of the server yet.
    pub fn connect(config: &QdrantConfig, dimensions: usize) -> Result<Self> {
        Ok(Self {
            client: collection::connect(&config.url, config.api_key.as_deref())?,
            url: config.url.clone(),
            collection: config.collection.clone(),
            dimensions,
        })
    }

    /// Deletes the points `selector` picks, waiting for Qdrant to apply it.
    async fn delete_points(&self, selector: impl Into<PointsSelectorOneOf>) -> Result<()> {
        self.client
            .delete_points(delete_request(&self.collection, selector))
            .await
            .map_err(anyhow::Error::from)
            .with_context(|| self.context("deleting from"))?;
        Ok(())
    }

    /// What Qdrant answered, without the request (which may hold a key).
    fn context(&self, what: &str) -> String {
        format!(
            "{what} the Qdrant collection {} at {}",
            self.collection, self.url
        )
    }
}

/// The upserts for `points`: batches of [`UPSERT_BATCH`], each answered only
/// once Qdrant has applied it (`wait`), so the next step of a sync sees it.
fn upsert_requests(collection: &str, points: Vec<Point>) -> Result<Vec<UpsertPoints>> {
    let mut points = points.into_iter().peekable();
    let mut requests = Vec::new();
    while points.peek().is_some() {
        let batch: Vec<PointStruct> = points
            .by_ref()
            .take(UPSERT_BATCH)
            .map(|p| {
                let payload = qdrant_client::Payload::try_from(p.payload)
                    .context("a chunk's payload is no JSON object")?;
                let mut vectors =
                    NamedVectors::default().add_vector("", Vector::new_dense(p.vector));
                if !p.lexical.is_empty() {
                    vectors = vectors.add_vector(
                        collection::LEXICAL_VECTOR,
                        Vector::new_sparse(p.lexical.indices, p.lexical.values),
                    );
                }
                Ok(PointStruct::new(p.id.to_string(), vectors, payload))
            })
            .collect::<Result<_>>()?;
        requests.push(
            UpsertPointsBuilder::new(collection, batch)
                .wait(true)
                .build(),
        );
    }
    Ok(requests)
}

/// The dense nearest points above the floor and the lexical best matches,
/// fused by Qdrant by rank; each with its dense vector, for its cosine.
fn hybrid_request(collection: &str, search: &Search) -> QueryPoints {
    let mut request = QueryPointsBuilder::new(collection).add_prefetch(
        PrefetchQueryBuilder::default()
            .query(Query::new_nearest(search.dense.clone()))
            .score_threshold(search.threshold)
            .limit(search.limit as u64),
    );
    if !search.lexical.is_empty() {
        request = request.add_prefetch(
            PrefetchQueryBuilder::default()
                .query(Query::new_nearest(VectorInput::new_sparse(
                    search.lexical.indices.clone(),
                    search.lexical.values.clone(),
                )))
                .using(collection::LEXICAL_VECTOR)
                .limit(search.limit as u64),
        );
    }
    request
        .query(Query::new_rrf(RrfBuilder::with_k(RRF_K as u32)))
        .limit(search.limit as u64)
        .with_payload(true)
        .with_vectors(true)
        .build()
}

/// The unnamed dense vector of a returned point.
fn dense(vectors: Option<qdrant_client::qdrant::VectorsOutput>) -> Option<Vec<f32>> {
    let output = match vectors?.vectors_options? {
        vectors_output::VectorsOptions::Vector(v) => v,
        vectors_output::VectorsOptions::Vectors(mut named) => named.vectors.remove("")?,
    };
    match output.into_vector() {
        vector_output::Vector::Dense(d) => Some(d.data),
        _ => None,
    }
}

/// A deletion answered once Qdrant has applied it.
fn delete_request(collection: &str, selector: impl Into<PointsSelectorOneOf>) -> DeletePoints {
    DeletePointsBuilder::new(collection)
        .points(selector)
        .wait(true)
        .build()
}

impl VectorStore for QdrantStore {
    fn ensure(&self) -> StoreFuture<'_, bool> {
        Box::pin(async move {
            let ensured = collection::ensure(
                &self.client,
                &self.url,
                &self.collection,
                self.dimensions as u64,
            )
            .await?;
            match ensured {
                collection::Ensured::Ready => return Ok(false),
                collection::Ensured::Created => {
                    tracing::warn!(collection = %self.collection, "the Qdrant collection was missing: created it empty");
                }
                collection::Ensured::LacksLexical => {
                    collection::add_lexical(&self.client, &self.url, &self.collection).await?;
                    tracing::info!(collection = %self.collection, "the Qdrant collection got its lexical vector: re-indexing");
                }
            }
            Ok(true)
        })
    }

    fn upsert(&self, points: Vec<Point>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            for request in upsert_requests(&self.collection, points)? {
                self.client
                    .upsert_points(request)
                    .await
                    .map_err(anyhow::Error::from)
                    .with_context(|| self.context("upserting into"))?;
            }
            Ok(())
        })
    }

    fn delete(&self, ids: Vec<Uuid>) -> StoreFuture<'_, ()> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let ids = ids.into_iter().map(|id| id.to_string().into()).collect();
            self.delete_points(PointsIdsList { ids }).await
        })
    }

    fn delete_document(&self, document: Uuid) -> StoreFuture<'_, ()> {
        Box::pin(self.delete_points(Filter::must([Condition::matches(
            collection::DOCUMENT_ID,
            document.to_string(),
        )])))
    }

    fn search(&self, search: Search) -> StoreFuture<'_, Vec<(f32, Value)>> {
        Box::pin(async move {
            let found = self
                .client
                .query(hybrid_request(&self.collection, &search))
                .await
                .map_err(anyhow::Error::from)
                .with_context(|| self.context("searching"))?;
            let fused = found.result.into_iter().map(|p| {
                let payload = p
                    .payload
                    .into_iter()
                    .map(|(k, v)| (k, Value::from(v)))
                    .collect();
                (dense(p.vectors), Value::Object(payload))
            });
            Ok(admitted(fused, &search.dense, search.threshold))
        })
    }

    fn count(&self) -> StoreFuture<'_, usize> {
        Box::pin(async move {
            let counted = self
                .client
                .count(CountPointsBuilder::new(&self.collection).exact(true))
                .await
                .map_err(anyhow::Error::from)
                .with_context(|| self.context("counting"))?;
            Ok(counted.result.map_or(0, |r| r.count as usize))
        })
    }

    /// The server persists every acknowledged write itself.
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn point(i: usize) -> Point {
        Point {
            id: Uuid::from_u128(i as u128),
            vector: vec![0.5; 4],
            lexical: Default::default(),
            payload: serde_json::json!({"text": format!("chunk {i}")}),
        }
    }

    /// Every write the store sends waits for Qdrant to apply it (a sync's
    /// "new points first, then the old go" depends on it); large documents
    /// go in batches.
    #[test]
    fn every_write_waits_and_upserts_go_in_batches() {
        let requests =
            upsert_requests("shop_knowledge", (0..600).map(point).collect()).expect("the requests");
        let sizes: Vec<usize> = requests.iter().map(|r| r.points.len()).collect();
        assert_eq!(sizes, [UPSERT_BATCH, UPSERT_BATCH, 600 - 2 * UPSERT_BATCH]);
        for r in &requests {
            assert_eq!(
                (r.collection_name.as_str(), r.wait),
                ("shop_knowledge", Some(true))
            );
        }
        assert!(
            upsert_requests("shop_knowledge", Vec::new())
                .expect("none")
                .is_empty()
        );
        let by_ids = delete_request("shop_knowledge", PointsIdsList { ids: Vec::new() });
        let by_document = delete_request(
            "shop_knowledge",
            Filter::must([Condition::matches(collection::DOCUMENT_ID, "d".to_owned())]),
        );
        for r in [by_ids, by_document] {
            assert_eq!(
                (r.collection_name.as_str(), r.wait),
                ("shop_knowledge", Some(true))
            );
        }
        let not_an_object = Point {
            payload: serde_json::json!("text"),
            ..point(1)
        };
        assert!(upsert_requests("shop_knowledge", vec![not_an_object]).is_err());
    }
}
