//! Hybrid retrieval: the dense and the BM25 lists fused by Qdrant, in both
//! stores, with the relevance floor still on the dense similarity; and a
//! store made before lexical search gets its `bm25` vector and is re-indexed.

use anyhow::Result;
use qdrant_client::qdrant::Modifier;
use serde_json::{Value, json};
use truffles_bot::knowledge::edge::EdgeStore;
use truffles_bot::knowledge::lexical::{Lexical, Sparse};
use truffles_bot::knowledge::qdrant::QdrantStore;
use truffles_bot::knowledge::{
    Knowledge, KnowledgeBase, KnowledgeConfig, Point, QdrantConfig, Search, VectorStore,
};
use truffles_migrations::collection::LEXICAL_VECTOR;
use truffles_tests::qdrant::TestQdrant;
use truffles_tests::runtime::{TenantRuntime, local_knowledge};

use super::knowledge::{run, sources};

fn unit(v: [f32; 4]) -> Vec<f32> {
    let norm = v.iter().map(|x| x * x).sum::<f32>().sqrt();
    v.iter().map(|x| x / norm).collect()
}

/// Two tyre-change rows whose meanings the dense model cannot tell apart
/// (the wrong one nearest) and a truck row that shares the rare word but
/// not the meaning. Returns the hybrid order, the dense-only order and the
/// hybrid scores.
async fn ranks(store: &dyn VectorStore) -> Result<(Vec<String>, Vec<String>, Vec<f32>)> {
    let bm25 = Lexical::new(20)?;
    store.ensure().await?;
    let rows = [
        (
            "R13–R16",
            [0.99, 0.14, 0.0, 0.0],
            "Сезонная переобувка R13–R16 — 12 000 ₸ за комплект",
        ),
        (
            "R17–R18",
            [0.9, 0.43, 0.0, 0.0],
            "Сезонная переобувка R17–R18 — 16 000 ₸ за комплект",
        ),
        (
            "trucks",
            [0.1, 0.0, 0.99, 0.0],
            "Шины R18 и R18C для грузовиков под заказ",
        ),
    ];
    store
        .upsert(
            rows.iter()
                .map(|(name, vector, text)| Point {
                    id: uuid::Uuid::new_v4(),
                    vector: unit(*vector),
                    lexical: bm25.document(text),
                    payload: json!({"content": text, "name": name}),
                })
                .collect(),
        )
        .await?;
    let search = |lexical: Sparse| Search {
        dense: unit([1.0, 0.0, 0.0, 0.0]),
        lexical,
        limit: 10,
        threshold: 0.5,
    };
    let names = |found: &[(f32, Value)]| -> Vec<String> {
        found
            .iter()
            .map(|(_, p)| p["name"].as_str().unwrap_or("?").to_owned())
            .collect()
    };
    let hybrid = store
        .search(search(bm25.query("Переобувка R18 сколько?")))
        .await?;
    let dense = store.search(search(Sparse::default())).await?;
    Ok((
        names(&hybrid),
        names(&dense),
        hybrid.iter().map(|(s, _)| *s).collect(),
    ))
}

fn assert_ranks((hybrid, dense, scores): (Vec<String>, Vec<String>, Vec<f32>), store: &str) {
    // The rare word lifts the right row; meaning alone put the other first.
    assert_eq!(hybrid, ["R17–R18", "R13–R16"], "{store}");
    assert_eq!(dense, ["R13–R16", "R17–R18"], "{store}");
    // Scores are the dense similarity (the floor's), not fusion's ranks;
    // the truck row's words do not lift it over the floor.
    assert!((scores[0] - 0.9).abs() < 0.01, "{store}: {scores:?}");
}

#[tokio::test]
async fn words_and_meaning_are_fused_in_both_stores_above_the_floor() -> Result<()> {
    let dir =
        std::env::temp_dir().join(format!("truffles-hybrid-{}", uuid::Uuid::new_v4().simple()));
    let edge = EdgeStore::open(&dir, 4)?;
    assert_ranks(ranks(&edge).await?, "Edge");
    drop(edge);

    let qdrant = TestQdrant::from_env()?;
    let collection = format!("hybrid-{}_knowledge", uuid::Uuid::new_v4().simple());
    let server = QdrantStore::connect(
        &QdrantConfig {
            url: qdrant.url.clone(),
            api_key: Some(qdrant.api_key.clone()),
            collection: collection.clone(),
        },
        4,
    )?;
    assert_ranks(ranks(&server).await?, "server");
    assert_eq!(qdrant.lexical(&collection).await?, Some(Modifier::Idf));
    qdrant.lose(&collection).await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Syncs, takes the lexical vector away as a store from before it had one,
/// and syncs again: every document is written again (with its BM25
/// weights), then the next sync changes nothing.
async fn reindexed_after_upgrade(
    rt: &TenantRuntime,
    config: &KnowledgeConfig,
    downgrade: impl AsyncFnOnce() -> Result<()>,
) -> Result<()> {
    let (_, sources) = sources_in(config)?;
    let kb = KnowledgeBase::open(config)?;
    let first = run(&kb, rt, &sources, config).await?;
    assert_eq!((first.added, first.failed), (4, 1), "{first:?}");
    drop(kb);
    downgrade().await?;
    let kb = KnowledgeBase::open(config)?;
    let upgraded = run(&kb, rt, &sources, config).await?;
    assert_eq!(
        (upgraded.changed, upgraded.chunks),
        (4, first.chunks),
        "{upgraded:?}"
    );
    assert_eq!(kb.store.count().await?, first.chunks);
    let again = run(&kb, rt, &sources, config).await?;
    assert_eq!((again.unchanged, again.chunks), (4, 0), "{again:?}");
    Ok(())
}

/// The sources of the folder `config` reads.
fn sources_in(
    config: &KnowledgeConfig,
) -> Result<(
    std::path::PathBuf,
    Vec<truffles_crds::client::KnowledgeSource>,
)> {
    let (dir, sources) = sources()?;
    let target = config.sources_dir.clone();
    std::fs::create_dir_all(&target)?;
    std::fs::rename(dir.join("sources/catalog"), target.join("catalog"))?;
    let _ = std::fs::remove_dir_all(&dir);
    Ok((target, sources))
}

#[tokio::test]
async fn a_store_from_before_lexical_search_gets_its_vector_and_is_reindexed() -> Result<()> {
    // The Qdrant server: the collection loses its `bm25` vector, keeps its
    // points; the runtime adds the vector back (with IDF) and re-indexes.
    let rt = TenantRuntime::new("kbupgrade", json!({})).await?;
    let dir = std::env::temp_dir().join(format!(
        "truffles-upgrade-{}",
        uuid::Uuid::new_v4().simple()
    ));
    let qdrant = TestQdrant::from_env()?;
    let collection = truffles_migrations::collection::name(&rt.name);
    let config = KnowledgeConfig {
        qdrant: Some(QdrantConfig {
            url: qdrant.url.clone(),
            api_key: Some(qdrant.api_key.clone()),
            collection: collection.clone(),
        }),
        ..local_knowledge(&dir)?
    };
    reindexed_after_upgrade(&rt, &config, async || {
        qdrant.drop_lexical(&collection).await?;
        assert_eq!(qdrant.lexical(&collection).await?, None);
        Ok(())
    })
    .await?;
    assert_eq!(qdrant.lexical(&collection).await?, Some(Modifier::Idf));
    qdrant.lose(&collection).await?;

    // Qdrant Edge: the same on the runtime's own shard.
    let rt = TenantRuntime::new("kbupgrade-edge", json!({})).await?;
    let config = local_knowledge(&dir.join("edge"))?;
    let store_dir = config.store_dir.clone();
    reindexed_after_upgrade(&rt, &config, async || {
        let shard =
            qdrant_edge::EdgeShard::load(&store_dir, None).map_err(|e| anyhow::anyhow!("{e}"))?;
        shard
            .update(qdrant_edge::UpdateOperation::VectorNameOperation(
                qdrant_edge::VectorNameOperations::DeleteVectorName(
                    qdrant_edge::DeleteVectorName {
                        vector_name: LEXICAL_VECTOR.into(),
                    },
                ),
            ))
            .map_err(|e| anyhow::anyhow!("{e}"))?;
        shard.flush();
        assert!(!shard.config().sparse_vectors.contains_key(LEXICAL_VECTOR));
        Ok(())
    })
    .await?;
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// The vocabulary a customer's words are read against is the synced
/// documents' own: empty before the first sync (nothing judged), a removed
/// document's words gone after the next; a word is known in any form.
#[tokio::test]
async fn a_customers_misspelt_words_are_read_as_the_synced_documents_words() -> Result<()> {
    let rt = TenantRuntime::new("kbvocab", json!({})).await?;
    let (dir, sources) = sources()?;
    let config = local_knowledge(&dir)?;
    let kb = KnowledgeBase::open(&config)?;
    assert_eq!(
        kb.correct("каспи есть? хризантемки"),
        "каспи есть? хризантемки"
    );
    assert_eq!(kb.knows("шашлык"), None);
    run(&kb, &rt, &sources, &config).await?;
    // Another form of a document's word is known; a stranger is not; a stop
    // word is not judged.
    assert_eq!(kb.knows("хризантемы"), Some(true));
    assert_eq!(kb.knows("шашлык"), Some(false));
    assert_eq!(kb.knows("сейчас"), None);
    // «Kaspi» is in faq.md, «хризантемами» in prices.md.
    assert_eq!(
        kb.correct("каспи есть? хрезантемами"),
        "kaspi есть? хризантемами"
    );
    let words: Vec<String> =
        sqlx::query_scalar("SELECT unnest(words) FROM documents WHERE source_id = 'faq.md'")
            .fetch_all(&rt.pool)
            .await?;
    assert!(words.iter().any(|w| w == "kaspi"), "{words:?}");
    std::fs::remove_file(dir.join("sources/catalog/faq.md"))?;
    run(&kb, &rt, &sources, &config).await?;
    assert_eq!(kb.correct("каспи есть?"), "каспи есть?");
    assert_eq!(kb.knows("kaspi"), Some(false));
    // The shard writes its segments when dropped: before its folder goes.
    drop(kb);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}
