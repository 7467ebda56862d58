//! What the pipeline needs from the knowledge base: facts relevant to a
//! question. The Qdrant-backed implementation (server and Qdrant Edge) is the
//! knowledge issue's; until then a runtime without a knowledge base answers
//! "I don't know, ask a manager" to questions, which is the grounded answer.

use std::future::Future;
use std::pin::Pin;

/// One retrieved passage.
#[derive(Clone, Debug, PartialEq, serde::Serialize)]
pub struct Fact {
    pub content: String,
    pub source: String,
    pub score: f32,
}

pub type SearchFuture<'a> = Pin<Box<dyn Future<Output = anyhow::Result<Vec<Fact>>> + Send + 'a>>;

pub trait Knowledge: Send + Sync {
    /// The most relevant facts for `query`, best first.
    fn search<'a>(&'a self, query: &'a str, limit: usize) -> SearchFuture<'a>;
}

/// A tenant without a knowledge base.
pub struct NoKnowledge;

impl Knowledge for NoKnowledge {
    fn search<'a>(&'a self, _query: &'a str, _limit: usize) -> SearchFuture<'a> {
        Box::pin(async { Ok(Vec::new()) })
    }
}
