//! Operator scale: creates N tenants and prints the time until all are Ready,
//! reconciles per second, and the peak RSS of this process (controller + client).
//!
//!   make bench                                   # N = 100
//!   TRUFFLES_BENCH_TENANTS=100,1000 make bench
//!
//! Runs inside the test environment (real PostgreSQL and kube-apiserver). Figures
//! are printed, never asserted.

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::StreamExt;
use serde_json::json;
use truffles_crds::TrufflesClient;
use truffles_operator::tenant;
use truffles_tests::{
    TestDatabase, TestNamespace, create_raw, install_crds, kube_client, operator_context,
    peak_rss_mib,
};

/// CPU seconds used so far by each kind of process on the machine (by its
/// command name: kube-apiserver, etcd, postgres, kube-controller, this bench).
fn cpu_by_process() -> std::collections::BTreeMap<String, f64> {
    let mut by = std::collections::BTreeMap::new();
    let Ok(dir) = std::fs::read_dir("/proc") else {
        return by;
    };
    for entry in dir.flatten() {
        let Ok(stat) = std::fs::read_to_string(entry.path().join("stat")) else {
            continue;
        };
        // pid (comm) state ... utime stime are fields 14 and 15.
        let (Some(open), Some(close)) = (stat.find('('), stat.rfind(')')) else {
            continue;
        };
        let comm = stat[open + 1..close].to_owned();
        let fields: Vec<&str> = stat[close + 2..].split_whitespace().collect();
        let ticks: u64 = fields.get(11).and_then(|v| v.parse().ok()).unwrap_or(0)
            + fields.get(12).and_then(|v| v.parse().ok()).unwrap_or(0);
        let name = if comm.starts_with("operator_scale") {
            "this bench (operator + client)".to_owned()
        } else {
            comm
        };
        *by.entry(name).or_insert(0.0) += ticks as f64 / 100.0;
    }
    by
}

fn reconciles(metrics: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix("truffles_operator_reconciles_total "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0)
}

async fn run(n: usize) -> Result<()> {
    let client = kube_client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, &format!("bench{n}")).await?;
    let db = TestDatabase::create().await?;
    truffles_migrations::migrate_platform(&db.pool).await?;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"token": "t"}});
    create_raw::<k8s_openapi::api::core::v1::Secret>(&ns, &secret).await?;

    let ctx = Arc::new(operator_context(client.clone(), &db, Some(&ns.name)));
    let operator = tokio::spawn(tenant::run(ctx.clone()));

    let cpu_before = cpu_by_process();
    let started = Instant::now();
    let prefix = format!("b{}", &ns.name[ns.name.len() - 6..]);
    futures::stream::iter(0..n)
        .map(|i| {
            let name = format!("{prefix}-{i}");
            let doc = json!({
                "apiVersion": "truffles.kz/v1alpha1", "kind": "TrufflesClient", "metadata": {"name": name},
                "spec": {"companyName": format!("Shop {i}"),
                         "channels": {"whatsapp": {"instanceId": "i", "tokenSecretRef": {"name": "creds", "key": "token"}}},
                         "handover": {"adapter": {"type": "whatsappWeb"}}}
            });
            let ns = &ns;
            async move {
                // A loaded API server may drop a connection; a bench retries it.
                let mut attempt = 0;
                loop {
                    match create_raw::<TrufflesClient>(ns, &doc).await {
                        Err(kube::Error::HyperError(_) | kube::Error::Service(_)) if attempt < 5 => {
                            attempt += 1;
                            tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
                        }
                        other => break other,
                    }
                }
            }
        })
        .buffer_unordered(16)
        .collect::<Vec<_>>()
        .await
        .into_iter()
        .collect::<Result<Vec<_>, _>>()?;
    let created = started.elapsed();

    let api = ns.api::<TrufflesClient>();
    let deadline = Instant::now() + Duration::from_secs(1800);
    let ready = loop {
        let list = match api.list(&Default::default()).await {
            Ok(list) => list,
            Err(e) => {
                eprintln!("list failed, retrying: {e}");
                tokio::time::sleep(Duration::from_secs(1)).await;
                continue;
            }
        };
        let ready = list
            .items
            .iter()
            .filter(|tc| {
                tc.status.as_ref().is_some_and(|s| {
                    s.conditions
                        .iter()
                        .any(|c| c.type_ == "Ready" && c.status == "True")
                })
            })
            .count();
        if ready == n || Instant::now() > deadline {
            break ready;
        }
        // Each look lists every tenant: once a second keeps the bench's own
        // load on the API server small.
        tokio::time::sleep(Duration::from_secs(1)).await;
    };
    let all_ready = started.elapsed();
    let count = reconciles(&ctx.metrics.render());
    println!(
        "tenants={n} ready={ready} created_in={:.1}s all_ready_in={:.1}s tenants_per_s={:.1} reconciles={count} reconciles_per_s={:.1} peak_rss_mib={:.0}",
        created.as_secs_f64(),
        all_ready.as_secs_f64(),
        ready as f64 / all_ready.as_secs_f64(),
        count as f64 / all_ready.as_secs_f64(),
        peak_rss_mib(),
    );
    let cpu_after = cpu_by_process();
    let mut used: Vec<(String, f64)> = cpu_after
        .iter()
        .map(|(k, v)| (k.clone(), v - cpu_before.get(k).copied().unwrap_or(0.0)))
        .filter(|(_, v)| *v >= 1.0)
        .collect();
    used.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "CPU seconds until all Ready: {}",
        used.iter()
            .map(|(k, v)| format!("{k} {v:.0}"))
            .collect::<Vec<_>>()
            .join(", ")
    );
    operator.abort();
    ns.delete().await.context("deleting the bench namespace")
}

#[tokio::main]
async fn main() -> Result<()> {
    let sizes = std::env::var("TRUFFLES_BENCH_TENANTS").unwrap_or_else(|_| "100".into());
    for n in sizes
        .split(',')
        .filter_map(|s| s.trim().parse::<usize>().ok())
    {
        run(n).await?;
    }
    Ok(())
}
