//! Knowledge base figures: each vector store with 10k chunks (upsert rate,
//! hybrid query latency p50/p99 — dense and BM25 lists fused — with dense
//! vectors that need no embedder and the real BM25 model's sparse ones):
//! Qdrant Edge in-process, and the Qdrant server backend through
//! qdrant-client against the test environment's Qdrant server (a debug build
//! on loopback: the client, gRPC and engine cost, not a production server's).
//! Then a sync of generated documents through the real local embedding
//! model, with the embedder's own time measured apart.
//!
//!   make bench            (TRUFFLES_BENCH_CHUNKS=10000, TRUFFLES_BENCH_DOCS=200)
//!
//! Figures are printed, never asserted.

use std::time::{Duration, Instant};

use anyhow::Result;
use serde_json::json;
use truffles_bot::knowledge::edge::EdgeStore;
use truffles_bot::knowledge::embed::Kind;
use truffles_bot::knowledge::lexical::Lexical;
use truffles_bot::knowledge::qdrant::QdrantStore;
use truffles_bot::knowledge::{KnowledgeBase, Point, QdrantConfig, Search, VectorStore, sync};
use truffles_crds::client::KnowledgeSource;
use truffles_tests::peak_rss_mib;
use truffles_tests::runtime::{TenantRuntime, local_knowledge};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// A deterministic pseudo-random unit vector (xorshift), so runs compare.
fn vector(seed: u64, dims: usize) -> Vec<f32> {
    let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
    let v: Vec<f32> = (0..dims)
        .map(|_| {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            (x % 2000) as f32 / 1000.0 - 1.0
        })
        .collect();
    let norm = v.iter().map(|a| a * a).sum::<f32>().sqrt();
    v.into_iter().map(|a| a / norm).collect()
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted.get(i).map_or(0.0, |d| d.as_secs_f64() * 1000.0)
}

async fn store_figures(name: &str, store: &dyn VectorStore, chunks: usize) -> Result<()> {
    store.ensure().await?;
    let bm25 = Lexical::new(125)?;
    let text = |i: usize| {
        format!(
            "Букет {i}: {} роз, цена {} ₸, доставка по Алматы",
            i % 51,
            1_000 + i * 7
        )
    };
    let started = Instant::now();
    for batch in (0..chunks).collect::<Vec<_>>().chunks(500) {
        let points = batch
            .iter()
            .map(|i| Point {
                id: uuid::Uuid::new_v4(),
                vector: vector(*i as u64, 384),
                lexical: bm25.document(&text(*i)),
                payload: json!({"content": text(*i), "source": "bench", "source_id": format!("doc-{}", i / 10)}),
            })
            .collect();
        store.upsert(points).await?;
    }
    let upsert = started.elapsed();
    let mut latencies = Vec::new();
    for q in 0..500u64 {
        let t = Instant::now();
        store
            .search(Search {
                dense: vector(1_000_000 + q, 384),
                lexical: bm25.query(&format!("сколько стоит букет из {} роз", q % 51)),
                limit: 5,
                threshold: -1.0,
            })
            .await?;
        latencies.push(t.elapsed());
    }
    latencies.sort();
    println!(
        "{name}, {chunks} chunks of 384 dims: upsert {:.0} chunks/s; hybrid query top-5 p50 {:.2} ms p99 {:.2} ms (500 queries)",
        chunks as f64 / upsert.as_secs_f64(),
        percentile(&latencies, 0.5),
        percentile(&latencies, 0.99),
    );
    Ok(())
}

async fn sync_figures(docs: usize) -> Result<()> {
    let rt = TenantRuntime::new("kbbench", json!({})).await?;
    let dir =
        std::env::temp_dir().join(format!("truffles-bench-{}", uuid::Uuid::new_v4().simple()));
    let folder = dir.join("sources/catalog");
    std::fs::create_dir_all(&folder)?;
    for d in 0..docs {
        let sections: String = (0..5)
            .map(|s| format!("## Раздел {s}\nТовар {d}-{s}: букет, цена {} ₸, доставка по Алматы за 2 часа.\n\n", 10_000 + d * 7 + s))
            .collect();
        std::fs::write(
            folder.join(format!("doc-{d}.md")),
            format!("# Документ {d}\n\n{sections}"),
        )?;
    }
    let config = local_knowledge(&dir)?;
    let kb = KnowledgeBase::open(&config)?;
    let source: KnowledgeSource =
        serde_json::from_value(json!({"name": "catalog", "configMap": {"name": "x"}}))?;
    let started = Instant::now();
    let report = sync::run(&kb, &rt.pool, std::slice::from_ref(&source), &config).await?;
    let total = started.elapsed();
    // The embedder's own time for the same chunks, measured apart.
    let mut texts = Vec::new();
    let chunker = kb.chunker()?;
    for d in 0..docs {
        texts.extend(chunker.split("d.md", &std::fs::read(folder.join(format!("doc-{d}.md")))?)?);
    }
    let t = Instant::now();
    kb.embedder.embed(&texts, Kind::Passage).await?;
    let embedding = t.elapsed();
    let ours = total.saturating_sub(embedding);
    println!(
        "sync of {docs} documents ({} chunks) with the local e5 model: {:.1} s in all, of which the embedder {:.1} s; \
         without it {:.0} documents/s, {:.0} chunks/s",
        report.chunks,
        total.as_secs_f64(),
        embedding.as_secs_f64(),
        docs as f64 / ours.as_secs_f64(),
        report.chunks as f64 / ours.as_secs_f64(),
    );
    let t = Instant::now();
    let again = sync::run(&kb, &rt.pool, std::slice::from_ref(&source), &config).await?;
    println!(
        "a second sync with nothing changed: {} unchanged in {:.2} s, no embedding call",
        again.unchanged,
        t.elapsed().as_secs_f64()
    );
    drop(kb);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    truffles_tests::init();
    let chunks = env_number("TRUFFLES_BENCH_CHUNKS", 10_000);
    let dir =
        std::env::temp_dir().join(format!("truffles-bench-{}", uuid::Uuid::new_v4().simple()));
    let edge = EdgeStore::open(&dir, 384)?;
    store_figures("Qdrant Edge (in-process)", &edge, chunks).await?;
    drop(edge);
    let _ = std::fs::remove_dir_all(dir);
    let server = truffles_tests::qdrant::TestQdrant::from_env()?;
    let collection = format!("bench_{}_knowledge", uuid::Uuid::new_v4().simple());
    let qdrant = QdrantStore::connect(
        &QdrantConfig {
            url: server.url.clone(),
            api_key: Some(server.api_key.clone()),
            collection: collection.clone(),
        },
        384,
    )?;
    store_figures(
        "Qdrant server backend (gRPC, a real Qdrant 1.18.3 debug build on loopback)",
        &qdrant,
        chunks,
    )
    .await?;
    sync_figures(env_number("TRUFFLES_BENCH_DOCS", 200)).await?;
    println!("peak RSS of the bench process: {:.0} MiB", peak_rss_mib());
    Ok(())
}
