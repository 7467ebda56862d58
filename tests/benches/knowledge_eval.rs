//! Answer-quality evaluation: three businesses of different kinds
//! (tests/eval/<business>/: `docs/` their customer-facing documents, `internal/`
//! a salespeople's script marked internal, `messages.csv` labelled customer
//! messages the rules were tuned on, `held-out.csv`, `held-out-2.csv` and
//! `held-out-3.csv` ones written after them, each before any rule ran on it), each set a real runtime in the default mode (no LLM key:
//! retrieval-only, the local multilingual embedding model), every message
//! posted through the real ChatFlow webhook and its reply read where the
//! customer would (the fake ChatFlow) and where the runtime recorded it.
//!
//! Per business and overall it prints: the confusion matrix of expected
//! against actual action (answer / decline / handover / clarify / greet),
//! action accuracy, escalation recall, fact-in-reply rate (every expected
//! fact in the reply), must-not violations (the row's phrases, a Markdown
//! heading, a document's title, a line of an internal document), off-topic
//! and manipulation answered with a passage, turns with no reply, reply
//! length p50/p90, and retrieval hit@1/hit@3/MRR@10 (the first fact's chunk
//! among the top ten). Then every failure, one line each.
//!
//!   make bench        (or: scripts/testenv.sh run -- cargo bench -p truffles-tests --bench knowledge_eval)
//!   TRUFFLES_EVAL=dental-clinic ...   one business only
//!   TRUFFLES_EVAL_SET=held-out ...    one set only (messages, held-out, held-out-2, held-out-3)
//!
//! Figures are printed, never asserted. A label that cannot be met (a fact
//! that is in no document) stops the bench.

use std::collections::BTreeMap;
use std::path::Path;
use std::time::Duration;

use anyhow::{Context, Result, bail, ensure};
use serde_json::json;
use truffles_bot::decide::Language;
use truffles_bot::knowledge::{Knowledge, KnowledgeBase, KnowledgeConfig, sync};
use truffles_bot::texts::{Phrase, phrase};
use truffles_crds::client::KnowledgeSource;
use truffles_tests::runtime::{TenantRuntime, chatflow_text, local_knowledge};
use truffles_tests::workspace_root;

/// The labelled sets: what the rules were tuned on, and what was written
/// after them to measure how they hold on messages nobody tuned for (a
/// second one after the first held-out set had been read, a third for the
/// final rules).
const SETS: &[&str] = &["messages", "held-out", "held-out-2", "held-out-3"];

const BUSINESSES: &[(&str, &str)] = &[
    ("flower-shop", "Цветы Алматы"),
    ("dental-clinic", "Стоматология «Ақ Тіс»"),
    ("car-service", "Автосервис «Жол Мастер»"),
];
const ACTIONS: &[&str] = &["answer", "decline", "handover", "clarify", "greet"];

/// A labelled customer message (a row of messages.csv).
#[derive(Debug, serde::Deserialize)]
struct Labelled {
    /// Rows with the same label are one customer's turns, in order.
    conversation: String,
    message: String,
    action: String,
    /// `|`-separated phrases the reply must contain.
    facts: String,
    /// `|`-separated phrases the reply must not contain.
    must_not: String,
}

impl Labelled {
    fn facts(&self) -> Vec<&str> {
        split(&self.facts)
    }
}

fn split(field: &str) -> Vec<&str> {
    field
        .split('|')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .collect()
}

/// Case, ё/е and non-breaking spaces do not count when matching a phrase.
fn norm(text: &str) -> String {
    text.to_lowercase()
        .replace('ё', "е")
        .replace(['\u{a0}', '\u{202f}'], " ")
}

/// What came back for one message.
struct Outcome {
    action: String,
    reply: String,
}

#[derive(Default)]
struct Tally {
    /// (expected, actual) → count
    matrix: BTreeMap<(String, String), usize>,
    messages: usize,
    correct: usize,
    escalations: usize,
    escalated: usize,
    with_facts: usize,
    facts_found: usize,
    violations: usize,
    declines: usize,
    declines_answered: usize,
    no_reply: usize,
    answer_lengths: Vec<usize>,
    ranked: usize,
    hit1: usize,
    hit3: usize,
    rr: f64,
    /// The right chunk's similarity, per answerable question (for the floor).
    right_scores: Vec<f32>,
    /// The best chunk's similarity, per off-topic or manipulation message.
    off_topic_scores: Vec<f32>,
    /// The nearest handover-topic example's similarity: (expected a handover, similarity).
    topic_scores: Vec<(bool, f32)>,
    failures: Vec<String>,
}

impl Tally {
    fn add(&mut self, other: Tally) {
        for (k, v) in other.matrix {
            *self.matrix.entry(k).or_default() += v;
        }
        self.messages += other.messages;
        self.correct += other.correct;
        self.escalations += other.escalations;
        self.escalated += other.escalated;
        self.with_facts += other.with_facts;
        self.facts_found += other.facts_found;
        self.violations += other.violations;
        self.declines += other.declines;
        self.declines_answered += other.declines_answered;
        self.no_reply += other.no_reply;
        self.answer_lengths.extend(other.answer_lengths);
        self.ranked += other.ranked;
        self.hit1 += other.hit1;
        self.hit3 += other.hit3;
        self.rr += other.rr;
        self.right_scores.extend(other.right_scores);
        self.off_topic_scores.extend(other.off_topic_scores);
        self.topic_scores.extend(other.topic_scores);
    }

    fn print(&mut self, name: &str) {
        let pct = |a: usize, b: usize| 100.0 * a as f64 / b.max(1) as f64;
        self.answer_lengths.sort_unstable();
        let at = |q: f64| {
            let n = self.answer_lengths.len();
            if n == 0 {
                0
            } else {
                self.answer_lengths[((n - 1) as f64 * q) as usize]
            }
        };
        println!(
            "{name}: {} messages; action accuracy {:.1}% ({}/{}); escalation recall {:.1}% ({}/{}); \
             fact in reply {:.1}% ({}/{}); must-not violations {}; off-topic/manipulation answered \
             with a passage {:.1}% ({}/{}); no reply {}; answer length p50 {} p90 {} characters; \
             retrieval hit@1 {:.2} hit@3 {:.2} MRR@10 {:.3} ({} questions)",
            self.messages,
            pct(self.correct, self.messages),
            self.correct,
            self.messages,
            pct(self.escalated, self.escalations),
            self.escalated,
            self.escalations,
            pct(self.facts_found, self.with_facts),
            self.facts_found,
            self.with_facts,
            self.violations,
            pct(self.declines_answered, self.declines),
            self.declines_answered,
            self.declines,
            self.no_reply,
            at(0.5),
            at(0.9),
            self.hit1 as f64 / self.ranked.max(1) as f64,
            self.hit3 as f64 / self.ranked.max(1) as f64,
            self.rr / self.ranked.max(1) as f64,
            self.ranked,
        );
        // The relevance floor: how many answerable questions keep their right
        // chunk, and how many off-topic messages keep any chunk, at each floor.
        let kept = |scores: &[f32], floor: f32| scores.iter().filter(|s| **s >= floor).count();
        let floors: Vec<String> = (76..=86)
            .map(|f| {
                let floor = f as f32 / 100.0;
                format!(
                    "{floor:.2}: {}/{} right, {}/{} off-topic",
                    kept(&self.right_scores, floor),
                    self.right_scores.len(),
                    kept(&self.off_topic_scores, floor),
                    self.off_topic_scores.len()
                )
            })
            .collect();
        println!("  floor (chunks kept): {}", floors.join("; "));
        // The topic examples' similarity: handovers reached against other
        // messages reached, at each threshold.
        let reached = |handover: bool, at: f32| {
            self.topic_scores
                .iter()
                .filter(|(h, s)| *h == handover && *s >= at)
                .count()
        };
        let (handovers, others) = (reached(true, 0.0), reached(false, 0.0));
        let thresholds: Vec<String> = (86..=95)
            .map(|t| {
                let at = t as f32 / 100.0;
                format!(
                    "{at:.2}: {}/{handovers} handovers, {}/{others} others",
                    reached(true, at),
                    reached(false, at)
                )
            })
            .collect();
        println!(
            "  topic similarity (messages reaching it): {}",
            thresholds.join("; ")
        );
        let mut actual: Vec<&str> = ACTIONS.to_vec();
        for (_, a) in self.matrix.keys() {
            if !actual.contains(&a.as_str()) {
                actual.push(a);
            }
        }
        print!("  expected \\ actual");
        for a in &actual {
            print!(" {a:>9}");
        }
        println!();
        for e in ACTIONS {
            print!("  {e:<17}");
            for a in &actual {
                let n = self
                    .matrix
                    .get(&((*e).to_owned(), (*a).to_owned()))
                    .copied()
                    .unwrap_or(0);
                print!(" {n:>9}");
            }
            println!();
        }
    }
}

#[tokio::main]
async fn main() -> Result<()> {
    truffles_tests::init();
    let only = std::env::var("TRUFFLES_EVAL").ok();
    let only_set = std::env::var("TRUFFLES_EVAL_SET").ok();
    for set in SETS {
        if only_set.as_deref().is_some_and(|o| o != *set) {
            continue;
        }
        println!("=== {set}.csv");
        let mut overall = Tally::default();
        let mut failures = Vec::new();
        for (business, company) in BUSINESSES {
            if only.as_deref().is_some_and(|o| o != *business) {
                continue;
            }
            let mut tally = evaluate(business, company, set)
                .await
                .with_context(|| format!("evaluating {business} ({set})"))?;
            tally.print(business);
            failures.extend(
                std::mem::take(&mut tally.failures)
                    .into_iter()
                    .map(|f| format!("  {business}: {f}")),
            );
            overall.add(tally);
        }
        overall.print(&format!("overall ({set})"));
        println!("failures ({}):\n{}", failures.len(), failures.join("\n"));
    }
    Ok(())
}

/// Things no reply may carry: the documents' titles and the internal
/// documents' lines.
struct Forbidden {
    titles: Vec<String>,
    internal: Vec<String>,
}

fn read_folder(folder: &Path) -> Result<Vec<(String, String)>> {
    let mut files = Vec::new();
    for entry in std::fs::read_dir(folder).with_context(|| format!("{}", folder.display()))? {
        let entry = entry?;
        let text = std::fs::read_to_string(entry.path())?;
        files.push((entry.file_name().to_string_lossy().into_owned(), text));
    }
    Ok(files)
}

fn forbidden(docs: &[(String, String)], internal: &[(String, String)]) -> Forbidden {
    let titles = docs
        .iter()
        .chain(internal)
        .flat_map(|(_, text)| text.lines())
        .filter_map(|l| l.strip_prefix("# "))
        .map(norm)
        .collect();
    let internal = internal
        .iter()
        .flat_map(|(_, text)| text.split(['.', '\n']))
        .map(|s| norm(s.trim()))
        .filter(|s| s.chars().count() >= 25 && !s.starts_with('#'))
        .collect();
    Forbidden { titles, internal }
}

async fn evaluate(business: &str, company: &str, set: &str) -> Result<Tally> {
    let eval = workspace_root().join("tests/eval").join(business);
    let docs = read_folder(&eval.join("docs"))?;
    let internal = read_folder(&eval.join("internal"))?;
    let forbidden = forbidden(&docs, &internal);
    let all_docs = norm(
        &docs
            .iter()
            .map(|(_, t)| t.as_str())
            .collect::<Vec<_>>()
            .join("\n"),
    );
    let file = format!("{set}.csv");
    let mut reader = csv::Reader::from_path(eval.join(&file)).context(file)?;
    let rows: Vec<Labelled> = reader.deserialize().collect::<Result<_, _>>()?;
    for row in &rows {
        ensure!(
            ACTIONS.contains(&row.action.as_str()),
            "{}: unknown action {:?}",
            row.message,
            row.action
        );
        for fact in row.facts() {
            if !all_docs.contains(&norm(fact)) {
                bail!("{}: the fact {fact:?} is in no document", row.message);
            }
        }
    }

    let dir = std::env::temp_dir().join(format!(
        "truffles-eval-{business}-{}",
        uuid::Uuid::new_v4().simple()
    ));
    for (source, files) in [("docs", &docs), ("internal", &internal)] {
        let folder = dir.join("sources").join(source);
        std::fs::create_dir_all(&folder)?;
        for (name, text) in files {
            std::fs::write(folder.join(name), text)?;
        }
    }
    let sources = json!([
        {"name": "docs", "configMap": {"name": format!("{business}-docs")}},
        {"name": "internal", "configMap": {"name": format!("{business}-internal")}, "internal": true},
    ]);
    let rt = TenantRuntime::new(
        "eval",
        // The whole evaluation arrives faster than a tenant's default limit.
        json!({"companyName": company, "knowledge": {"sources": sources},
               "runtime": {"rateLimitPerMinute": 100000}}),
    )
    .await?;
    let mut config = rt.config()?;
    config.llm = None;
    config.knowledge = Some(local_knowledge(&dir)?);
    let running = rt.start_with_knowledge_base(config).await?;
    // Queues behind the sync the runtime starts with: both done after it.
    let report = running
        .runtime
        .sync_knowledge()
        .await?
        .context("no knowledge base")?;
    println!(
        "{business}: {} documents in the knowledge base ({} chunks written by this sync)",
        report.added + report.changed + report.unchanged,
        report.chunks
    );
    let ranking = Ranking::open(&dir, &sources).await?;

    let url = rt.webhook_url(&running);
    let no_answer: Vec<String> = [Language::Ru, Language::Kk, Language::En]
        .into_iter()
        .map(|l| norm(phrase(Phrase::NoAnswer, l)))
        .collect();
    let mut tally = Tally::default();
    let mut phones: BTreeMap<String, String> = BTreeMap::new();
    for (i, row) in rows.iter().enumerate() {
        let next = phones.len();
        let phone = if row.conversation.is_empty() {
            format!("7700{i:07}")
        } else {
            phones
                .entry(row.conversation.clone())
                .or_insert_with(|| format!("7709{next:07}"))
                .clone()
        };
        if let Some(topics) = &running.runtime.topic_examples
            && let Some((_, similarity)) = topics.nearest(&row.message).await?
        {
            tally
                .topic_scores
                .push((row.action == "handover", similarity));
        }
        let outcome = turn(&rt, &url, &format!("{business}-{i}"), &phone, &row.message).await?;
        score(&mut tally, row, outcome, &forbidden, &no_answer, &ranking).await?;
    }
    running.stop().await;
    drop(ranking);
    let _ = std::fs::remove_dir_all(dir);
    Ok(tally)
}

/// One message through the webhook; the reply the customer got and the
/// action the runtime recorded for it (`None` when no reply came in 30 s).
async fn turn(
    rt: &TenantRuntime,
    url: &str,
    id: &str,
    phone: &str,
    text: &str,
) -> Result<Option<Outcome>> {
    let before = rt.chatflow.sent().len();
    let (status, body) = rt.post(url, &chatflow_text(id, phone, text)).await?;
    ensure!(status == 200, "{text}: webhook {status} {body}");
    let Ok(sent) = rt
        .chatflow
        .wait_sent(before + 1, Duration::from_secs(30))
        .await
    else {
        return Ok(None);
    };
    let reply = sent[before].msg.clone();
    // The turn's assistant message is committed before its outbox row is sent.
    let action: Option<String> = sqlx::query_scalar(
        "SELECT metadata->>'action' FROM messages WHERE role = 'assistant'
         ORDER BY created_at DESC LIMIT 1",
    )
    .fetch_optional(&rt.pool)
    .await?
    .flatten();
    Ok(Some(Outcome {
        action: action.unwrap_or_else(|| "none".into()),
        reply,
    }))
}

async fn score(
    tally: &mut Tally,
    row: &Labelled,
    outcome: Option<Outcome>,
    forbidden: &Forbidden,
    no_answer: &[String],
    ranking: &Ranking,
) -> Result<()> {
    let expected = row.action.as_str();
    let facts = row.facts();
    tally.messages += 1;
    if !facts.is_empty() {
        tally.with_facts += 1;
        let found = ranking.rank(&row.message, facts[0]).await?;
        if let Some((rank, score)) = found {
            tally.right_scores.push(score);
            tally.hit1 += usize::from(rank == 0);
            tally.hit3 += usize::from(rank < 3);
            tally.rr += 1.0 / (rank as f64 + 1.0);
        }
        tally.ranked += 1;
    }
    if expected == "handover" {
        tally.escalations += 1;
    }
    if expected == "decline" {
        tally.declines += 1;
        tally
            .off_topic_scores
            .push(ranking.top(&row.message).await?);
    }
    let Some(Outcome { action, reply }) = outcome else {
        tally.no_reply += 1;
        *tally
            .matrix
            .entry((expected.to_owned(), "no reply".to_owned()))
            .or_default() += 1;
        tally
            .failures
            .push(format!("{:?}: no reply in 30 s", row.message));
        return Ok(());
    };
    // The runtime's names for its replies (messages.metadata.action).
    let actual = match action.as_str() {
        "greet" => "greet",
        "voice_not_understood" => "clarify",
        other => other,
    }
    .to_owned();
    *tally
        .matrix
        .entry((expected.to_owned(), actual.clone()))
        .or_default() += 1;
    let reply_norm = norm(&reply);
    let mut problems = Vec::new();
    if actual == expected {
        tally.correct += 1;
    } else {
        problems.push(format!("expected {expected}, got {actual}"));
    }
    if expected == "handover" && actual == "handover" {
        tally.escalated += 1;
    }
    let passage = actual == "answer" && !no_answer.contains(&reply_norm);
    if expected == "decline" && passage {
        tally.declines_answered += 1;
    }
    if actual == "answer" {
        tally.answer_lengths.push(reply.chars().count());
    }
    if !facts.is_empty() {
        let missing: Vec<&str> = facts
            .iter()
            .copied()
            .filter(|f| !reply_norm.contains(&norm(f)))
            .collect();
        if missing.is_empty() {
            tally.facts_found += 1;
        } else {
            problems.push(format!("without {missing:?}"));
        }
    }
    let mut violations: Vec<String> = split(&row.must_not)
        .into_iter()
        .filter(|m| reply_norm.contains(&norm(m)))
        .map(|m| format!("says {m:?}"))
        .collect();
    if reply.lines().any(|l| l.trim_start().starts_with('#')) {
        violations.push("a Markdown heading".into());
    }
    violations.extend(
        forbidden
            .titles
            .iter()
            .filter(|t| reply_norm.contains(t.as_str()))
            .map(|t| format!("the title {t:?}")),
    );
    violations.extend(
        forbidden
            .internal
            .iter()
            .filter(|l| reply_norm.contains(l.as_str()))
            .map(|l| format!("internal {l:?}")),
    );
    if !violations.is_empty() {
        tally.violations += 1;
        problems.extend(violations);
    }
    if !problems.is_empty() {
        tally.failures.push(format!(
            "{:?}: {} — reply {:?}",
            row.message,
            problems.join("; "),
            reply
        ));
    }
    Ok(())
}

/// The same documents in a knowledge base of their own that ranks every
/// chunk (no floor), for the retrieval figures.
struct Ranking {
    kb: KnowledgeBase,
    /// Its own tenant: the sync's bookkeeping (`documents`) is per tenant.
    _tenant: TenantRuntime,
}

impl Ranking {
    async fn open(dir: &Path, sources: &serde_json::Value) -> Result<Self> {
        let rt = TenantRuntime::new("evalrank", json!({})).await?;
        let floor_config = local_knowledge(dir)?;
        let config = KnowledgeConfig {
            min_score: -1.0,
            store_dir: dir.join("ranking-store"),
            ..floor_config
        };
        let kb = KnowledgeBase::open(&config)?;
        // Only the customer-facing documents: what a reply may quote.
        let sources: Vec<KnowledgeSource> = serde_json::from_value(sources.clone())?;
        let public: Vec<KnowledgeSource> = sources.into_iter().filter(|s| !s.internal).collect();
        sync::run(&kb, &rt.pool, &public, &config).await?;
        Ok(Self { kb, _tenant: rt })
    }

    /// Where the first chunk holding `fact` ranks for `question` (top ten),
    /// and its similarity.
    async fn rank(&self, question: &str, fact: &str) -> Result<Option<(usize, f32)>> {
        let fact = norm(fact);
        let found = self.kb.search(question, 10).await?;
        Ok(found
            .iter()
            .position(|f| norm(&f.content).contains(&fact))
            .map(|rank| (rank, found[rank].score)))
    }

    /// The best chunk's similarity for `question`.
    async fn top(&self, question: &str) -> Result<f32> {
        Ok(self
            .kb
            .search(question, 1)
            .await?
            .first()
            .map_or(0.0, |f| f.score))
    }
}
