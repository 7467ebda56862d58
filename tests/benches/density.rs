//! Density: what N idle tenants cost on one PostgreSQL and one Redis, and how
//! fast an idle one answers. The real operator provisions N tenants; the
//! development supervisor runs one real `truffles-bot serve` per tenant
//! Deployment (each with its knowledge base: a Qdrant Edge shard and the local
//! embedding model); this bench probes every runtime's `/readyz` and
//! `/livez` every 10 s as the kubelet would. After the settling time it
//! measures an idle minute: the runtimes' RSS (total, p50, max), PostgreSQL
//! transactions per second (`pg_stat_database`), open connections, and the
//! machine's idle CPU share; then one message to each of 50 random tenants,
//! one after another, through the real webhook to the ChatFlow stand-in, with
//! the instant fake model: time to reply p50/p99.
//!
//!   make bench-density                              # N = 100
//!   TRUFFLES_BENCH_DENSITY=100,500 make bench-density
//!   TRUFFLES_BENCH_IDLE_SECONDS=60 (the idle window)
//!   TRUFFLES_DEV_BOT=/path/to/truffles-bot runs another build of the runtime
//!   (before and after a change) under the same operator and supervisor
//!   TRUFFLES_PG_MAX_CONNECTIONS=1000 for N = 500 and more (the test
//!   environment's server allows 300; what is open is measured, not the limit)
//!
//! Runs inside the test environment. Figures are printed, never asserted.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::StreamExt;
use serde_json::json;
use truffles_tests::dev::{LocalTenant, Platform, Settings, StandIns};
use truffles_tests::fakes::{FakeChatflow, FakeLlm};
use truffles_tests::proc_kib;
use truffles_tests::runtime::chatflow_text;

const TOKEN: &str = "density-chatflow-token";
const INSTANCE: &str = "density-1";
const LLM_KEY: &str = "density-llm-key";
const PROBE_EVERY: Duration = Duration::from_secs(10);

fn env_list(name: &str, default: &str) -> Vec<usize> {
    std::env::var(name)
        .unwrap_or_else(|_| default.into())
        .split(',')
        .filter_map(|n| n.trim().parse().ok())
        .collect()
}

/// Busy and total jiffies of all CPUs (`/proc/stat`'s first line).
fn cpu_jiffies() -> Result<(u64, u64)> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    let fields: Vec<u64> = stat
        .lines()
        .next()
        .context("/proc/stat")?
        .split_whitespace()
        .skip(1)
        .filter_map(|v| v.parse().ok())
        .collect();
    let total: u64 = fields.iter().sum();
    // idle + iowait
    let idle = fields.get(3).copied().unwrap_or(0) + fields.get(4).copied().unwrap_or(0);
    Ok((total - idle, total))
}

/// Where a process's resident memory is, by mapping (`/proc/PID/smaps`):
/// kind → (resident, private) KiB. The binary's clean pages are shared by
/// every runtime (one page cache); private pages are each process's own.
fn smaps_breakdown(pid: u32) -> Vec<(String, (u64, u64))> {
    let Ok(smaps) = std::fs::read_to_string(format!("/proc/{pid}/smaps")) else {
        return Vec::new();
    };
    let exe = std::fs::read_link(format!("/proc/{pid}/exe"))
        .map(|p| p.display().to_string())
        .unwrap_or_default();
    let mut by: BTreeMap<String, (u64, u64)> = BTreeMap::new();
    let mut kind = String::new();
    for line in smaps.lines() {
        let first = line.split_whitespace().next().unwrap_or("");
        if first.contains('-') && first.chars().all(|c| c.is_ascii_hexdigit() || c == '-') {
            let path = line.split_whitespace().nth(5).unwrap_or("");
            kind = match path {
                "" => "anonymous (malloc arenas, thread stacks, mmap)".into(),
                "[heap]" => "heap (brk)".into(),
                p if p == exe => "the binary (code, data)".into(),
                p if p.contains(".so") => "shared libraries".into(),
                p if p.starts_with('[') => p.into(),
                _ => "other files (the knowledge shard)".into(),
            };
        } else if let Some((field, rest)) = line.split_once(':') {
            let kib: u64 = rest
                .split_whitespace()
                .next()
                .and_then(|v| v.parse().ok())
                .unwrap_or(0);
            let entry = by.entry(kind.clone()).or_default();
            match field {
                "Rss" => entry.0 += kib,
                "Private_Clean" | "Private_Dirty" => entry.1 += kib,
                _ => {}
            }
        }
    }
    let mut by: Vec<_> = by.into_iter().filter(|(_, (rss, _))| *rss > 0).collect();
    by.sort_by_key(|(_, (rss, _))| std::cmp::Reverse(*rss));
    by
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

async fn transactions(db: &sqlx::PgPool) -> Result<i64> {
    Ok(sqlx::query_scalar(
        "SELECT (xact_commit + xact_rollback)::int8 FROM pg_stat_database WHERE datname = current_database()",
    )
    .fetch_one(db)
    .await?)
}

async fn run(n: usize, idle: Duration) -> Result<()> {
    let namespace = format!(
        "density-{n}-{}",
        &uuid::Uuid::new_v4().simple().to_string()[..6]
    );
    let settings = Settings::from_env(Some(namespace.clone()))?;
    let embeddings = truffles_tests::env_var("TRUFFLES_EMBEDDINGS_URL")?;
    let platform_db = sqlx::PgPool::connect(&settings.database_url).await?;
    let platform = Platform::start(settings).await?;
    let chatflow = FakeChatflow::start(TOKEN, INSTANCE).await?;
    let llm = FakeLlm::start(LLM_KEY).await?;
    let prefix = &namespace[namespace.len() - 6..];
    let names: Vec<String> = (0..n).map(|i| format!("d{prefix}-{i}")).collect();
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "density-creds"},
                        "stringData": {"token": TOKEN, "openai": LLM_KEY}});
    // The namespace is created with the first tenant's objects.
    platform.ensure_namespace(&namespace).await?;
    platform.apply(&namespace, &secret).await?;

    let created = Instant::now();
    futures::stream::iter(names.iter().enumerate())
        .map(|(i, name)| {
            let doc = json!({
                "apiVersion": "truffles.kz/v1alpha1", "kind": "TrufflesClient", "metadata": {"name": name},
                "spec": {
                    "companyName": format!("Shop {i}"),
                    "channels": {"whatsapp": {"instanceId": INSTANCE, "apiBaseUrl": chatflow.url,
                                              "tokenSecretRef": {"name": "density-creds", "key": "token"}}},
                    "llm": {"baseUrl": llm.url, "apiKeySecretRef": {"name": "density-creds", "key": "openai"},
                            "embeddingBaseUrl": embeddings, "embeddingModel": "multilingual-e5-small",
                            "embeddingDimensions": 384},
                    "handover": {"adapter": {"type": "whatsappWeb"}}
                }
            });
            let (platform, namespace) = (&platform, &namespace);
            async move { platform.apply(namespace, &doc).await }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let tenants: Vec<LocalTenant> = names
        .iter()
        .map(|name| LocalTenant {
            namespace: namespace.clone(),
            name: name.clone(),
            company: name.clone(),
            stand_ins: StandIns::default(),
        })
        .collect();
    let within = Duration::from_secs(600);
    futures::stream::iter(&tenants)
        .map(|t| platform.wait_running(t, within))
        .buffer_unordered(32)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>>>()?;
    let all_running = created.elapsed();
    println!("density: {n} tenants applied and every runtime ready in {all_running:.1?}");

    // The kubelet's probes, for the whole idle window.
    let runtimes = platform.supervisor.runtimes();
    let mut probing = tokio::task::JoinSet::new();
    let http = reqwest::Client::new();
    for (k, runtime) in runtimes.iter().enumerate() {
        let (http, addr) = (http.clone(), runtime.addr);
        // Spread over the period, as pods started at different times are.
        let offset = PROBE_EVERY.mul_f64(k as f64 / runtimes.len().max(1) as f64);
        probing.spawn(async move {
            tokio::time::sleep(offset).await;
            let mut every = tokio::time::interval(PROBE_EVERY);
            loop {
                every.tick().await;
                for path in ["readyz", "livez"] {
                    let _ = http
                        .get(format!("http://{addr}/{path}"))
                        .timeout(Duration::from_secs(5))
                        .send()
                        .await;
                }
            }
        });
    }
    // Settle: start-up syncs and the first sweeps are not idle cost.
    tokio::time::sleep(Duration::from_secs(45)).await;
    let (busy0, total0) = cpu_jiffies()?;
    let tx0 = transactions(&platform_db).await?;
    let t0 = Instant::now();
    tokio::time::sleep(idle).await;
    let tx1 = transactions(&platform_db).await?;
    let seconds = t0.elapsed().as_secs_f64();
    let (busy1, total1) = cpu_jiffies()?;
    let connections: BTreeMap<String, i64> = sqlx::query_as::<_, (String, i64)>(
        "SELECT coalesce(nullif(application_name, ''), '(other)'), count(*)::int8 FROM pg_stat_activity
         WHERE datname = current_database() GROUP BY 1",
    )
    .fetch_all(&platform_db)
    .await?
    .into_iter()
    .collect();
    let threads = runtimes
        .first()
        .and_then(|r| r.pid)
        .and_then(|pid| std::fs::read_dir(format!("/proc/{pid}/task")).ok())
        .map(|d| d.count())
        .unwrap_or(0);
    if let Some(pid) = runtimes.first().and_then(|r| r.pid) {
        println!("one idle runtime's resident memory ({threads} threads):");
        println!("  resident    private   mapping");
        for (kind, (rss, private)) in smaps_breakdown(pid) {
            println!(
                "  {:>6.1} MiB {:>6.1} MiB  {kind}",
                rss as f64 / 1024.0,
                private as f64 / 1024.0
            );
        }
    }
    let mut rss: Vec<f64> = runtimes
        .iter()
        .filter_map(|r| r.pid.and_then(|pid| proc_kib(pid, "status", "VmRSS")))
        .map(|kib| kib as f64 / 1024.0)
        .collect();
    rss.sort_by(f64::total_cmp);
    let total_rss: f64 = rss.iter().sum();
    let total_pss: f64 = runtimes
        .iter()
        // Proportional set size: shared pages divided among the processes sharing them.
        .filter_map(|r| r.pid.and_then(|pid| proc_kib(pid, "smaps_rollup", "Pss")))
        .map(|kib| kib as f64 / 1024.0)
        .sum();
    let idle_share = 1.0 - (busy1 - busy0) as f64 / (total1 - total0).max(1) as f64;
    probing.abort_all();

    // One message to each of 50 random idle tenants, one after another.
    let mut seed = 0x5eed_u64 ^ n as u64;
    let mut picked = Vec::new();
    while picked.len() < 50.min(n) {
        seed ^= seed << 13;
        seed ^= seed >> 7;
        seed ^= seed << 17;
        let i = (seed % n as u64) as usize;
        if !picked.contains(&i) {
            picked.push(i);
        }
    }
    let mut replies = Vec::new();
    for (k, &i) in picked.iter().enumerate() {
        let url = platform.webhook_url(&tenants[i]).await?;
        let phone = format!("7701{:07}", 5_000_000 + k);
        let sent = Instant::now();
        let response = http
            .post(&url)
            .json(&chatflow_text(
                &format!("DENS-{n}-{k}"),
                &phone,
                "Здравствуйте",
            ))
            .send()
            .await?;
        anyhow::ensure!(
            response.status().is_success(),
            "{url}: {}",
            response.status()
        );
        chatflow
            .wait_sent_to(&phone, Duration::from_secs(30))
            .await
            .with_context(|| format!("no reply from {}", tenants[i].name))?;
        replies.push(sent.elapsed().as_secs_f64() * 1000.0);
    }
    replies.sort_by(f64::total_cmp);

    println!(
        "| tenants | all running | runtime RSS total | PSS total | RSS p50 | max | PostgreSQL tx/s | connections | machine idle | first reply p50 | p99 |"
    );
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!(
        "| {n} | {:.0} s | {:.0} MiB | {:.0} MiB | {:.1} MiB | {:.1} MiB | {:.1} | {} ({}) | {:.0}% | {:.0} ms | {:.0} ms |",
        all_running.as_secs_f64(),
        total_rss,
        total_pss,
        percentile(&rss, 0.5),
        rss.last().copied().unwrap_or(f64::NAN),
        (tx1 - tx0) as f64 / seconds,
        connections.values().sum::<i64>(),
        connections
            .iter()
            .map(|(k, v)| format!("{k} {v}"))
            .collect::<Vec<_>>()
            .join(", "),
        idle_share * 100.0,
        percentile(&replies, 0.5),
        percentile(&replies, 0.99),
    );
    println!(
        "(idle window {seconds:.0} s; {} runtimes measured; transactions are the whole database's, the operator's and the bench's included)",
        rss.len()
    );
    platform.stop().await;
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let idle = Duration::from_secs(
        std::env::var("TRUFFLES_BENCH_IDLE_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    for n in env_list("TRUFFLES_BENCH_DENSITY", "100") {
        run(n, idle).await?;
    }
    Ok(())
}
