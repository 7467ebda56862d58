//! Runtime throughput: webhook ACK latency and rate at fixed concurrency
//! (durable ACK: Redis dedup + PostgreSQL inbox), then the whole pipeline
//! (classify, answer from knowledge, outbox, fake ChatFlow) with a fake LLM
//! that answers instantly and one with a fixed latency.
//!
//!   make bench                                     # both benches
//!   TRUFFLES_BENCH_MESSAGES=2000 TRUFFLES_BENCH_CONCURRENCY=32 make bench
//!
//! Figures are printed, never asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Result, ensure};
use futures::StreamExt;
use serde_json::json;
use truffles_tests::peak_rss_mib;
use truffles_tests::runtime::{TenantRuntime, chatflow_text};

fn env_number(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    let index = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[index.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Posts `messages` webhooks from distinct customers, `concurrency` at a time.
/// Returns each ACK's latency and the wall time.
async fn post_all(
    rt: &Arc<TenantRuntime>,
    url: &str,
    run: &str,
    messages: usize,
    concurrency: usize,
) -> Result<(Vec<Duration>, Duration)> {
    let started = Instant::now();
    let results: Vec<Result<Duration>> = futures::stream::iter(0..messages)
        .map(|i| {
            let rt = rt.clone();
            let url = url.to_owned();
            let body = chatflow_text(
                &format!("{run}-{i}"),
                &format!("7701{i:07}"),
                "Сколько стоит букет из 25 роз?",
            );
            async move {
                let t = Instant::now();
                let (status, reply) = rt.post(&url, &body).await?;
                ensure!(
                    status == 200 && reply["status"] == "accepted",
                    "{status} {reply}"
                );
                Ok(t.elapsed())
            }
        })
        .buffer_unordered(concurrency)
        .collect()
        .await;
    let mut latencies = results.into_iter().collect::<Result<Vec<_>>>()?;
    latencies.sort();
    Ok((latencies, started.elapsed()))
}

async fn pipeline(
    rt: &Arc<TenantRuntime>,
    label: &str,
    llm_latency: Duration,
    messages: usize,
    concurrency: usize,
) -> Result<()> {
    rt.llm.set_latency(llm_latency);
    let running = rt
        .start(
            rt.config()?,
            vec!["Букет из 25 роз стоит 18 000 тенге.".into()],
        )
        .await?;
    let url = rt.webhook_url(&running);
    let already = rt.chatflow.sent().len();
    let started = Instant::now();
    let (acks, ack_wall) = post_all(rt, &url, label, messages, concurrency).await?;
    rt.chatflow
        .wait_sent(already + messages, Duration::from_secs(1800))
        .await?;
    let wall = started.elapsed();
    println!(
        "{label:<28} {messages} messages, concurrency {concurrency}: ACK {:.0}/s p50 {:.1} ms p99 {:.1} ms max {:.1} ms; \
         all replies sent in {:.2} s = {:.1} replies/s",
        messages as f64 / ack_wall.as_secs_f64(),
        ms(percentile(&acks, 0.5)),
        ms(percentile(&acks, 0.99)),
        ms(percentile(&acks, 1.0)),
        wall.as_secs_f64(),
        messages as f64 / wall.as_secs_f64(),
    );
    drop(running);
    Ok(())
}

#[tokio::main]
async fn main() -> Result<()> {
    truffles_tests::init();
    let messages = env_number("TRUFFLES_BENCH_MESSAGES", 1000);
    let concurrency = env_number("TRUFFLES_BENCH_CONCURRENCY", 32);
    let limits =
        json!({"runtime": {"rateLimitPerMinute": 100000, "userRateLimitPerMinute": 10000}});
    let rt = Arc::new(TenantRuntime::new("bench", limits).await?);
    pipeline(
        &rt,
        "fake LLM, instant",
        Duration::ZERO,
        messages,
        concurrency,
    )
    .await?;
    let slow = (messages / 10).max(50);
    pipeline(
        &rt,
        "fake LLM, 500 ms per call",
        Duration::from_millis(500),
        slow,
        concurrency,
    )
    .await?;
    println!(
        "peak RSS of the bench process (runtime + load generator + fakes): {:.0} MiB",
        peak_rss_mib()
    );
    Ok(())
}
