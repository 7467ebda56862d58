//! The Qdrant Edge backend: Qdrant's engine in-process on the runtime's
//! volume, one shard per tenant (isolation by construction: a runtime opens
//! only its own directory). Its calls are synchronous, so they run on the
//! blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use qdrant_edge::{
    Condition, Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, FieldCondition,
    Filter, JsonPath, Match, NamedQuery, PointId, PointInsertOperations, PointOperations,
    PointStruct, QueryEnum, QueryRequest, ScoringQuery, UpdateOperation, WithPayloadInterface,
    WithVector,
};
use serde_json::Value;
use uuid::Uuid;

use truffles_migrations::collection::DOCUMENT_ID;

use super::store::{Point, StoreFuture, VectorStore};

#[derive(Clone)]
pub struct EdgeStore {
    shard: Arc<EdgeShard>,
    path: PathBuf,
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
                .build();
            EdgeShard::new(dir, config)
                .map_err(|e| anyhow::anyhow!("creating the vector store: {e}"))?
        };
        Ok(Self {
            shard: Arc::new(shard),
            path: dir.to_owned(),
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

/// The shard is created at open, so there is nothing to ensure: a lost
/// directory is a new, empty shard at the next start.
impl VectorStore for EdgeStore {
    fn ensure(&self) -> StoreFuture<'_, ()> {
        Box::pin(async { Ok(()) })
    }

    fn upsert(&self, points: Vec<Point>) -> StoreFuture<'_, ()> {
        if points.is_empty() {
            return Box::pin(async { Ok(()) });
        }
        Box::pin(self.blocking(move |shard| {
            let points = points
                .into_iter()
                .map(|p| PointStruct::new(PointId::Uuid(p.id), p.vector, p.payload).into())
                .collect();
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

    fn search(
        &self,
        vector: Vec<f32>,
        limit: usize,
        threshold: f32,
    ) -> StoreFuture<'_, Vec<(f32, Value)>> {
        Box::pin(self.blocking(move |shard| {
            let found = shard
                .query(QueryRequest {
                    prefetches: vec![],
                    query: Some(ScoringQuery::Vector(QueryEnum::Nearest(NamedQuery {
                        query: vector.into(),
                        using: None,
                    }))),
                    filter: None,
                    score_threshold: Some(threshold.into()),
                    limit,
                    offset: 0,
                    params: None,
                    with_vector: WithVector::Bool(false),
                    with_payload: WithPayloadInterface::Bool(true),
                })
                .map_err(|e| anyhow::anyhow!("searching the vector store: {e}"))?;
            Ok(found
                .into_iter()
                .map(|p| {
                    let payload = p
                        .payload
                        .map(|pl| Value::Object(pl.0.into_iter().collect()))
                        .unwrap_or(Value::Null);
                    (p.score, payload)
                })
                .collect())
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
