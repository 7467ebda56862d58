//! The vector store trait both backends implement (Qdrant Edge in-process,
//! a Qdrant server over gRPC), the point they store and the hybrid search
//! they run: the dense list (cosine, above the floor) and the lexical one
//! (BM25) fused by Qdrant with reciprocal rank fusion.

use std::future::Future;
use std::pin::Pin;

use anyhow::Result;
use serde_json::Value;
use uuid::Uuid;

use super::lexical::Sparse;

/// A point to store: id, dense vector, lexical vector, payload (a JSON
/// object).
pub struct Point {
    pub id: Uuid,
    pub vector: Vec<f32>,
    pub lexical: Sparse,
    pub payload: Value,
}

/// One hybrid search.
#[derive(Clone, Debug)]
pub struct Search {
    pub dense: Vec<f32>,
    pub lexical: Sparse,
    pub limit: usize,
    /// The floor: a point's cosine similarity to `dense` must reach it,
    /// however high the words rank it.
    pub threshold: f32,
}

/// Reciprocal rank fusion's `k` (Qdrant's default): a point's fused score
/// is the sum of `1 / (k + rank)` over the two lists.
pub const RRF_K: usize = 2;

pub type StoreFuture<'a, T> = Pin<Box<dyn Future<Output = Result<T>> + Send + 'a>>;

/// Where a tenant's chunks live. Each store holds one tenant only (its own
/// shard directory or its own collection), so isolation is by construction.
pub trait VectorStore: Send + Sync {
    /// Makes the store ready: a lost collection is created again, empty, and
    /// one from before lexical search gets its `bm25` vector. Returns whether
    /// every point must be written again (either happened).
    fn ensure(&self) -> StoreFuture<'_, bool>;
    fn upsert(&self, points: Vec<Point>) -> StoreFuture<'_, ()>;
    fn delete(&self, ids: Vec<Uuid>) -> StoreFuture<'_, ()>;
    /// Every point whose payload's `document_id` is `document` (a filter, so
    /// also points no database row records).
    fn delete_document(&self, document: Uuid) -> StoreFuture<'_, ()>;
    /// Up to `limit` points in fused order, each with its cosine similarity
    /// (at least the threshold) and payload.
    fn search(&self, search: Search) -> StoreFuture<'_, Vec<(f32, Value)>>;
    fn count(&self) -> StoreFuture<'_, usize>;
    /// Called after a sync.
    fn flush(&self) -> StoreFuture<'_, ()>;
}

/// The cosine similarity of two vectors (0 when either is zero).
pub fn cosine(a: &[f32], b: &[f32]) -> f32 {
    let dot: f32 = a.iter().zip(b).map(|(x, y)| x * y).sum();
    let norm = |v: &[f32]| v.iter().map(|x| x * x).sum::<f32>().sqrt();
    let n = norm(a) * norm(b);
    if a.len() != b.len() || n == 0.0 {
        0.0
    } else {
        dot / n
    }
}

/// The fused list as the search answers it: each point's similarity to the
/// question computed from its stored dense vector (fusion's scores are
/// ranks), points below the floor dropped (a word in common is not enough
/// to be relevant), the fused order kept.
pub fn admitted(
    fused: impl IntoIterator<Item = (Option<Vec<f32>>, Value)>,
    query: &[f32],
    threshold: f32,
) -> Vec<(f32, Value)> {
    fused
        .into_iter()
        .filter_map(|(vector, payload)| {
            let score = cosine(&vector?, query);
            (score >= threshold).then_some((score, payload))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fused_points_keep_their_order_and_answer_with_their_cosine() {
        let q = [1.0, 0.0];
        let fused = vec![
            // Ranked first by its words, but below the floor.
            (Some(vec![0.0, 1.0]), serde_json::json!("lexical only")),
            (Some(vec![0.8, 0.6]), serde_json::json!("second")),
            (None, serde_json::json!("no vector")),
            (Some(vec![2.0, 0.0]), serde_json::json!("third")),
        ];
        let kept = admitted(fused, &q, 0.5);
        let names: Vec<&Value> = kept.iter().map(|(_, p)| p).collect();
        assert_eq!(names, ["second", "third"]);
        assert!((kept[0].0 - 0.8).abs() < 1e-6 && (kept[1].0 - 1.0).abs() < 1e-6);
        assert_eq!(cosine(&[0.0, 0.0], &q), 0.0);
        assert_eq!(cosine(&[1.0], &q), 0.0);
    }
}
