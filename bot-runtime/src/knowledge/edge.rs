//! The Qdrant Edge backend: Qdrant's engine in-process on the runtime's
//! volume, one shard per tenant (isolation by construction: a runtime opens
//! only its own directory). Its calls are synchronous, so they run on the
//! blocking pool.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use anyhow::{Context, Result};
use qdrant_edge::{
    Distance, EdgeConfigBuilder, EdgeShard, EdgeVectorParamsBuilder, NamedQuery, PointId,
    PointInsertOperations, PointOperations, PointStruct, QueryEnum, QueryRequest, ScoringQuery,
    UpdateOperation, WithPayloadInterface, WithVector,
};
use serde_json::Value;
use uuid::Uuid;

/// A point to store: id, vector, payload (a JSON object).
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub payload: Value,
}

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

    async fn blocking<T: Send + 'static>(
        &self,
        f: impl FnOnce(&EdgeShard) -> Result<T> + Send + 'static,
    ) -> Result<T> {
        let shard = self.shard.clone();
        tokio::task::spawn_blocking(move || f(&shard))
            .await
            .context("the vector store task panicked")?
    }

    pub async fn upsert(&self, points: Vec<Point>) -> Result<()> {
        if points.is_empty() {
            return Ok(());
        }
        self.blocking(move |shard| {
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
        })
        .await
    }

    pub async fn delete(&self, ids: Vec<Uuid>) -> Result<()> {
        if ids.is_empty() {
            return Ok(());
        }
        self.blocking(move |shard| {
            let ids = ids.into_iter().map(PointId::Uuid).collect();
            shard
                .update(UpdateOperation::PointOperation(
                    PointOperations::DeletePoints { ids },
                ))
                .map_err(|e| anyhow::anyhow!("deleting from the vector store: {e}"))?;
            Ok(())
        })
        .await
    }

    /// The `limit` nearest points scoring at least `threshold`, best first.
    pub async fn search(
        &self,
        vector: Vec<f32>,
        limit: usize,
        threshold: f32,
    ) -> Result<Vec<(f32, Value)>> {
        self.blocking(move |shard| {
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
        })
        .await
    }

    /// Writes the segments (the write-ahead log already makes every update
    /// durable; this makes the next start fast). Called after a sync.
    pub async fn flush(&self) -> Result<()> {
        self.blocking(|shard| {
            shard.flush();
            Ok(())
        })
        .await
    }

    pub async fn count(&self) -> Result<usize> {
        self.blocking(|shard| {
            shard
                .count(qdrant_edge::CountRequest {
                    filter: None,
                    exact: true,
                })
                .map_err(|e| anyhow::anyhow!("counting the vector store: {e}"))
        })
        .await
    }
}
