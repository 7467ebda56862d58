//! Retrieval evaluation: the flower shop's knowledge base (tests/eval/
//! flower-shop/docs: prices, FAQ, care, services, a CSV stock list; Russian with
//! Kazakh and English parts) and 62 customer questions, each with a phrase the
//! right chunk contains. Prints hit@1, hit@3 and MRR@10 with the local
//! multilingual model, and how many right chunks clear the relevance floor.
//!
//!   make bench        (or: scripts/testenv.sh run -- cargo bench -p truffles-tests --bench knowledge_eval)
//!
//! Figures are printed, never asserted.

use anyhow::{Context, Result};
use serde_json::json;
use truffles_bot::knowledge::{Knowledge, KnowledgeBase, KnowledgeConfig, sync};
use truffles_bot::pipeline::extract;
use truffles_crds::client::KnowledgeSource;
use truffles_tests::runtime::{TenantRuntime, local_knowledge};
use truffles_tests::workspace_root;

#[tokio::main]
async fn main() -> Result<()> {
    truffles_tests::init();
    let eval = workspace_root().join("tests/eval/flower-shop");
    let rt = TenantRuntime::new("kbeval", json!({})).await?;
    let dir = std::env::temp_dir().join(format!("truffles-eval-{}", uuid::Uuid::new_v4().simple()));
    let folder = dir.join("sources/shop");
    std::fs::create_dir_all(&folder)?;
    for entry in std::fs::read_dir(eval.join("docs"))? {
        let entry = entry?;
        std::fs::copy(entry.path(), folder.join(entry.file_name()))?;
    }
    let floor_config = local_knowledge(&dir)?;
    let floor = floor_config.min_score;
    // Rank everything: the floor is applied when counting, not when searching.
    let config = KnowledgeConfig {
        min_score: -1.0,
        ..floor_config
    };
    let kb = KnowledgeBase::open(&config)?;
    let source: KnowledgeSource =
        serde_json::from_value(json!({"name": "shop", "configMap": {"name": "x"}}))?;
    let report = sync::run(&kb, &rt.pool, &[source], &config).await?;

    let mut reader = csv::Reader::from_path(eval.join("questions.csv")).context("questions.csv")?;
    let (mut n, mut hit1, mut hit3, mut rr, mut above_floor) =
        (0usize, 0usize, 0usize, 0f64, 0usize);
    let mut misses = Vec::new();
    // Retrieval-only replies: the top passage as it was sent before, and the
    // extracted answer sent now, from the facts above the floor.
    let mut passage = Replies::default();
    let mut extracted = Replies::default();
    let mut extract_misses = Vec::new();
    for record in reader.records() {
        let record = record?;
        let (question, expected) = (&record[0], &record[1]);
        let facts = kb.search(question, 10).await?;
        let above: Vec<&str> = facts
            .iter()
            .filter(|f| f.score >= floor)
            .take(5)
            .map(|f| f.content.as_str())
            .collect();
        if let Some(top) = above.first() {
            passage.add(top, expected);
            let reply = extract::answer(&above, question, extract::REPLY_CHARS);
            if !reply.contains(expected) {
                extract_misses.push(format!("  {question} (wanted {expected:?}): {reply:?}"));
            }
            extracted.add(&reply, expected);
        }
        let rank = facts.iter().position(|f| f.content.contains(expected));
        n += 1;
        match rank {
            Some(r) => {
                hit1 += usize::from(r == 0);
                hit3 += usize::from(r < 3);
                rr += 1.0 / (r as f64 + 1.0);
                above_floor += usize::from(facts[r].score >= floor);
                if r > 0 {
                    misses.push(format!(
                        "  rank {}: {question} (top: {:?})",
                        r + 1,
                        first_line(&facts[0].content)
                    ));
                }
            }
            None => misses.push(format!("  not in top 10: {question}")),
        }
    }
    println!(
        "knowledge eval: {} documents, {} chunks, {n} questions; hit@1 {:.2}, hit@3 {:.2}, MRR@10 {:.3}; \
         right chunk above the {floor} floor for {above_floor}/{n}",
        report.added,
        report.chunks,
        hit1 as f64 / n as f64,
        hit3 as f64 / n as f64,
        rr / n as f64,
    );
    for (name, r) in [
        ("top passage (before)", &mut passage),
        ("extracted (now)", &mut extracted),
    ] {
        println!("retrieval-only replies, {name}: {}", r.summary());
    }
    println!(
        "extracted replies without the expected phrase:\n{}",
        extract_misses.join("\n")
    );
    println!("not first:\n{}", misses.join("\n"));
    drop(kb);
    let _ = std::fs::remove_dir_all(dir);
    Ok(())
}

/// Replies to the questions that had a fact above the floor.
#[derive(Default)]
struct Replies {
    lengths: Vec<usize>,
    with_fact: usize,
    with_heading: usize,
}

impl Replies {
    fn add(&mut self, reply: &str, expected: &str) {
        self.lengths.push(reply.chars().count());
        self.with_fact += usize::from(reply.contains(expected));
        self.with_heading += usize::from(reply.lines().any(|l| l.trim_start().starts_with('#')));
    }

    fn summary(&mut self) -> String {
        self.lengths.sort_unstable();
        let n = self.lengths.len().max(1);
        let at = |q: f64| {
            self.lengths
                .get(((n - 1) as f64 * q) as usize)
                .copied()
                .unwrap_or(0)
        };
        format!(
            "{} replies; the expected phrase in {} ({:.0}%), a heading or title in {}; length p50 {}, p90 {}, max {} characters",
            self.lengths.len(),
            self.with_fact,
            100.0 * self.with_fact as f64 / n as f64,
            self.with_heading,
            at(0.5),
            at(0.9),
            self.lengths.last().copied().unwrap_or(0)
        )
    }
}

fn first_line(text: &str) -> String {
    text.lines()
        .skip(1)
        .find(|l| !l.trim().is_empty())
        .unwrap_or(text)
        .chars()
        .take(60)
        .collect()
}
