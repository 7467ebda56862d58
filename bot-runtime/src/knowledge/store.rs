//! The vector store trait both backends implement (Qdrant Edge in-process,
//! a Qdrant server over gRPC), and the point they store.

use std::future::Future;
use std::pin::Pin;

use anyhow::Result;
use serde_json::Value;
use uuid::Uuid;

/// A point to store: id, vector, payload (a JSON object).
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub payload: Value,
}

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Where a tenant's chunks live. Each store holds one tenant only (its own
/// shard directory or its own collection), so isolation is by construction.
pub trait VectorStore: Send + Sync {
    /// Makes the store ready (a lost collection is created again, empty).
    fn ensure(&self) -> StoreFuture<'_, ()>;
    fn upsert(&self, points: Vec<Point>) -> StoreFuture<'_, ()>;
    fn delete(&self, ids: Vec<Uuid>) -> StoreFuture<'_, ()>;
    /// Every point whose payload's `document_id` is `document` (a filter, so
    /// also points no database row records).
    fn delete_document(&self, document: Uuid) -> StoreFuture<'_, ()>;
    /// The `limit` nearest points scoring at least `threshold`, best first.
    fn search(
        &self,
        vector: Vec<f32>,
        limit: usize,
        threshold: f32,
    ) -> StoreFuture<'_, Vec<(f32, Value)>>;
    fn count(&self) -> StoreFuture<'_, usize>;
    /// Called after a sync.
    fn flush(&self) -> StoreFuture<'_, ()>;
}
