//! The Qdrant Edge backend: Qdrant's engine in-process on the runtime's
//! volume, one shard per tenant (isolation by construction: a runtime opens
//! only its own directory). Its calls are synchronous, so they run on the
//! blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};

use qdrant_edge::{
    Condition, CreateVectorName, Distance, EdgeConfigBuilder, EdgeShard,
    EdgeSparseVectorParamsBuilder, EdgeVectorParamsBuilder, FieldCondition, Filter, Fusion,
    JsonPath, Match, Modifier, NamedQuery, Payload, PointId, PointInsertOperations,
    PointOperations, PointStructPersisted, Prefetch, QueryEnum, QueryRequest, ScoringQuery,
    SparseVector, UpdateOperation, VectorInternal, VectorNameConfig, VectorNameOperations,
    VectorPersisted, VectorStructInternal, VectorStructPersisted, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use uuid::Uuid;

use truffles_migrations::collection::DOCUMENT_ID;

use super::lexical;
use super::store::{Point, RRF_K, Search, StoreFuture, VectorStore, admitted};

#[derive(Clone)]
pub struct EdgeStore {
    shard: Arc<EdgeShard>,
    path: PathBuf,
    /// The shard was made before lexical search and got its `bm25` vector
    /// at open: its points must be written again.
    upgraded: Arc<AtomicBool>,
}

const VECTOR: &str = "";

impl EdgeStore {
    /// Opens the shard in `dir`, creating it (for `dimensions`-sized cosine
    /// vectors) the first time.
    pub fn open(dir: &Path, dimensions: usize) -> Result<Self> {
        std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
        let exists = dir.join("edge_config.json").exists();
        let shard = if exists {
            EdgeShard::load(dir, None)
                .map_err(|e| anyhow::anyhow!("opening the vector store: {e}"))?
        } else {
            let config = EdgeConfigBuilder::new()
                .vector(
                    VECTOR,
                    EdgeVectorParamsBuilder::new(dimensions, Distance::Cosine).build(),
                )
                .sparse_vector(
                    lexical::VECTOR,
                    EdgeSparseVectorParamsBuilder::new()
                        .modifier(Modifier::Idf)
                        .build(),
                )
                .build();
            EdgeShard::new(dir, config)
                .map_err(|e| anyhow::anyhow!("creating the vector store: {e}"))?
        };
        let upgraded = !shard.config().sparse_vectors.contains_key(lexical::VECTOR);
        if upgraded {
            shard
                .update(UpdateOperation::VectorNameOperation(
                    VectorNameOperations::CreateVectorName(CreateVectorName {
                        vector_name: lexical::VECTOR.into(),
                        config: idf_sparse()?,
                    }),
                ))
                .map_err(|e| anyhow::anyhow!("adding lexical vectors to the vector store: {e}"))?;
        }
        Ok(Self {
            shard: Arc::new(shard),
            path: dir.to_owned(),
            upgraded: Arc::new(AtomicBool::new(upgraded)),
        })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    fn delete_points(
        &self,
        operation: PointOperations,
    ) -> impl Future<Output = Result<()>> + Send + 'static {
        self.blocking(move |shard| {
            shard
                .update(UpdateOperation::PointOperation(operation))
                .map_err(|e| anyhow::anyhow!("deleting from the vector store: {e}"))?;
            Ok(())
        })
    }

    fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T> + Send + 'static,
    ) -> impl Future<Output = Result<T>> + Send + 'static {
        let shard = self.shard.clone();
        async move {
            tokio::task::spawn_blocking(move || f(&shard))
                .await
                .context("the vector store task panicked")?
        }
    }
}

/// The shard is created (or given its lexical vector) at open: a lost
/// directory is a new, empty shard at the next start.
impl VectorStore for EdgeStore {
    fn ensure(&self) -> StoreFuture<'_, bool> {
        let upgraded = self.upgraded.swap(false, Ordering::SeqCst);
        Box::pin(async move { Ok(upgraded) })
    }

    fn upsert(&self, points: Vec<Point>) -> StoreFuture<'_, ()> {
        if points.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        Box::pin(self.blocking(move |shard| {
            let points = points.into_iter().map(persisted).collect::<Result<_>>()?;
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::UpsertPoints(PointInsertOperations::PointsList(points)),
                ))
                .map_err(|e| anyhow::anyhow!("upserting into the vector store: {e}"))?;
            Ok(())
        }))
    }

    fn delete(&self, ids: Vec<Uuid>) -> StoreFuture<'_, ()> {
        if ids.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        let ids = ids.into_iter().map(PointId::Uuid).collect();
        Box::pin(self.delete_points(PointOperations::DeletePoints { ids }))
    }

    fn delete_document(&self, document: Uuid) -> StoreFuture<'_, ()> {
        let key: JsonPath = match DOCUMENT_ID.parse() {
            Ok(key) => key,
            Err(_) => return Box::pin(async { anyhow::bail!("document_id is no payload path") }),
        };
        let filter = Filter::new_must(Condition::Field(FieldCondition::new_match(
            key,
            Match::from(document.to_string()),
        )));
        Box::pin(self.delete_points(PointOperations::DeletePointsByFilter(filter)))
    }

    fn search(&self, search: Search) -> StoreFuture<'_, Vec<(f32, Value)>> {
        Box::pin(self.blocking(move |shard| {
            let found = shard
                .query(hybrid(&search))
                .map_err(|e| anyhow::anyhow!("searching the vector store: {e}"))?;
            let fused = found.into_iter().map(|p| {
                let dense = match p.vector {
                    Some(VectorStructInternal::Single(v)) => Some(v),
                    Some(VectorStructInternal::Named(mut named)) => match named.remove(VECTOR) {
                        Some(VectorInternal::Dense(v)) => Some(v),
                        _ => None,
                    },
                    _ => None,
                };
                let payload = p
                    .payload
                    .map(|pl| Value::Object(pl.0.into_iter().collect()))
                    .unwrap_or(Value::Null);
                (dense, payload)
            });
            Ok(admitted(fused, &search.dense, search.threshold))
        }))
    }

    /// Writes the segments (the write-ahead log already makes every update
    /// durable; this makes the next start fast).
    fn flush(&self) -> StoreFuture<'_, ()> {
        Box::pin(self.blocking(|shard| {
            shard.flush();
            Ok(())
        }))
    }

    fn count(&self) -> StoreFuture<'_, usize> {
        Box::pin(self.blocking(|shard| {
            shard
                .count(qdrant_edge::CountRequest {
                    filter: None,
                    exact: true,
                })
                .map_err(|e| anyhow::anyhow!("counting the vector store: {e}"))
        }))
    }
}

/// A chunk as the shard stores it: the dense vector unnamed, the lexical one
/// as `bm25` (left out when the chunk has no word BM25 keeps).
fn persisted(p: Point) -> Result<PointStructPersisted> {
    let Value::Object(payload) = p.payload else {
        anyhow::bail!("a chunk's payload is no JSON object");
    };
    let mut vectors = HashMap::from([(VECTOR.to_owned(), VectorPersisted::Dense(p.vector))]);
    if !p.lexical.is_empty() {
        vectors.insert(
            lexical::VECTOR.to_owned(),
            VectorPersisted::Sparse(SparseVector {
                indices: p.lexical.indices,
                values: p.lexical.values,
            }),
        );
    }
    Ok(PointStructPersisted {
        id: PointId::Uuid(p.id),
        vector: VectorStructPersisted::Named(vectors),
        payload: Some(Payload(payload.into_iter().collect())),
    })
}

/// The dense nearest points above the floor and the lexical best matches,
/// fused by rank; each with its dense vector, for its cosine.
fn hybrid(search: &Search) -> QueryRequest {
    let prefetch = |query: VectorInternal, using: Option<&str>, threshold: Option<f32>| Prefetch {
        prefetches: vec![],
        query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
            query,
            using: using.map(Into::into),
        }))),
        limit: search.limit,
        params: None,
        filter: None,
        score_threshold: threshold.map(Into::into),
    };
    let mut prefetches = vec![prefetch(
        VectorInternal::Dense(search.dense.clone()),
        None,
        Some(search.threshold),
    )];
    if !search.lexical.is_empty() {
        prefetches.push(prefetch(
            VectorInternal::Sparse(SparseVector {
                indices: search.lexical.indices.clone(),
                values: search.lexical.values.clone(),
            }),
            Some(lexical::VECTOR),
            None,
        ));
    }
    QueryRequest {
        prefetches,
        query: Some(ScoringQuery::Fusion(Fusion::Rrf {
            k: RRF_K,
            weights: None,
        })),
        filter: None,
        score_threshold: None,
        limit: search.limit,
        offset: 0,
        params: None,
        with_vector: WithVector::Selector(vec![VECTOR.into()]),
        with_payload: WithPayloadInterface::Bool(true),
    }
}

/// `{"sparse": {"modifier": "idf"}}`: the vector-name configuration's sparse
/// variant is public only through its serialised form.
fn idf_sparse() -> Result<VectorNameConfig> {
    serde_json::from_value(serde_json::json!({"sparse": {"modifier": "idf"}}))
        .context("the lexical vector's configuration")
}
