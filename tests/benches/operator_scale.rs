//! Operator scale: the real `truffles-operator` binary (release, next to the
//! bench) provisions N new tenants; prints the time until all are Ready,
//! reconciles per tenant, the operator's peak RSS, the CPU seconds of each
//! process on the machine, and the API requests per tenant by verb and kind.
//!
//!   make bench                                   # N = 100
//!   TRUFFLES_BENCH_TENANTS=100,1000 make bench
//!
//! Runs inside the test environment (real PostgreSQL and kube-apiserver). Figures
//! are printed, never asserted.

use std::time::{Duration, Instant};

use anyhow::{Context as _, Result};
use futures::StreamExt;
use serde_json::json;
use std::collections::BTreeMap;
use truffles_crds::TrufflesClient;

use kube::ResourceExt;
use kube::runtime::{WatchStreamExt, watcher};
use truffles_tests::dev::supervisor::{LocalProcess, binary};
use truffles_tests::{
    TEST_MASTER_KEY, TestDatabase, TestNamespace, create_raw, free_port, install_crds, kube_client,
    metric_value, proc_kib,
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
            "this bench (client)".to_owned()
        } else {
            comm
        };
        *by.entry(name).or_insert(0.0) += ticks as f64 / 100.0;
    }
    by
}

/// The API server's own count of requests, by verb and resource
/// (`apiserver_request_total`), so a run shows which calls a tenant costs.
async fn api_requests(client: &kube::Client) -> std::collections::BTreeMap<String, f64> {
    let mut by = std::collections::BTreeMap::new();
    let request = axum::http::Request::get("/metrics").body(Vec::new());
    let Ok(text) = (match request {
        Ok(r) => client.request_text(r).await.map_err(anyhow::Error::from),
        Err(e) => Err(e.into()),
    }) else {
        return by;
    };
    for line in text
        .lines()
        .filter(|l| l.starts_with("apiserver_request_total{"))
    {
        let (Some((labels, value)), Some(open)) = (line.rsplit_once(' '), line.find('{')) else {
            continue;
        };
        let label = |name: &str| {
            labels[open..]
                .split(',')
                .find_map(|kv| {
                    kv.trim_start_matches('{')
                        .strip_prefix(&format!("{name}=\""))
                })
                .map(|v| v.trim_end_matches('}').trim_end_matches('"').to_owned())
                .unwrap_or_default()
        };
        let key = match label("subresource").as_str() {
            "" => format!("{} {}", label("verb"), label("resource")),
            sub => format!("{} {}/{sub}", label("verb"), label("resource")),
        };
        *by.entry(key).or_insert(0.0) += value.parse::<f64>().unwrap_or(0.0);
    }
    by
}

/// The DATABASE_URL of the test environment, on database `name`.
fn database_url(name: &str) -> Result<String> {
    let mut url = url::Url::parse(&truffles_tests::env_var("DATABASE_URL")?)?;
    url.set_path(name);
    Ok(url.to_string())
}

async fn run(n: usize) -> Result<()> {
    let client = kube_client().await?;
    install_crds(&client).await?;
    let ns = TestNamespace::create(&client, &format!("bench{n}")).await?;
    let db = TestDatabase::create().await?;
    let secret = json!({"apiVersion": "v1", "kind": "Secret", "metadata": {"name": "creds"}, "stringData": {"token": "t"}});
    create_raw::<k8s_openapi::api::core::v1::Secret>(&ns, &secret).await?;

    // The real operator binary, as the chart runs it (Redis users included).
    let metrics_port = free_port()?;
    let mut env = BTreeMap::from([
        ("DATABASE_URL".to_owned(), database_url(&db.name)?),
        (
            "TRUFFLES_BACKUP_MASTER_KEY".to_owned(),
            TEST_MASTER_KEY.to_owned(),
        ),
        (
            "TRUFFLES_METRICS_ADDR".to_owned(),
            format!("127.0.0.1:{metrics_port}"),
        ),
        ("TRUFFLES_WATCH_NAMESPACE".to_owned(), ns.name.clone()),
        (
            "KUBECONFIG".to_owned(),
            truffles_tests::env_var("KUBECONFIG")?,
        ),
        (
            "RUST_LOG".to_owned(),
            std::env::var("RUST_LOG").unwrap_or_else(|_| "warn".into()),
        ),
    ]);
    // The test environment's Redis, and the operator's database settings
    // when they are set (its defaults otherwise).
    for name in [
        "REDIS_URL",
        "TRUFFLES_DB_CONNECTIONS",
        "TRUFFLES_PROVISIONING",
    ] {
        if let Ok(value) = std::env::var(name) {
            env.insert(name.to_owned(), value);
        }
    }
    let log = std::env::temp_dir().join(format!("{}-truffles-operator.log", ns.name));
    let operator = LocalProcess::spawn(&binary("truffles-operator")?, &[], &env, log.clone())?;
    let pid = operator.id().context("the operator did not start")?;
    let metrics_url = format!("http://127.0.0.1:{metrics_port}/metrics");
    let http = reqwest::Client::new();
    // Started: it answers on its metrics port.
    let deadline = Instant::now() + Duration::from_secs(60);
    while http.get(&metrics_url).send().await.is_err() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the operator did not start; its log: {}",
            std::fs::read_to_string(&log).unwrap_or_default()
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }

    // Ready tenants, as a watch sees them (a list a second would be most of
    // the API server's work at a thousand).
    let api = ns.api::<TrufflesClient>();
    let (ready_tx, mut ready_rx) = tokio::sync::watch::channel(0usize);
    let watching = tokio::spawn(async move {
        let mut ready = std::collections::HashSet::new();
        let mut events = std::pin::pin!(
            watcher(api, watcher::Config::default())
                .default_backoff()
                .applied_objects()
        );
        while let Some(event) = events.next().await {
            let Ok(tc) = event else { continue };
            let is_ready = tc.status.as_ref().is_some_and(|s| {
                s.conditions
                    .iter()
                    .any(|c| c.type_ == "Ready" && c.status == "True")
            });
            if is_ready && ready.insert(tc.name_any()) {
                let _ = ready_tx.send(ready.len());
            }
        }
    });

    let cpu_before = cpu_by_process();
    let requests_before = api_requests(&client).await;
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

    let _ = tokio::time::timeout(
        Duration::from_secs(1800),
        ready_rx.wait_for(|ready| *ready >= n),
    )
    .await;
    let ready = *ready_rx.borrow();
    let all_ready = started.elapsed();
    watching.abort();
    let metrics = http.get(&metrics_url).send().await?.text().await?;
    let count = metric_value(&metrics, "truffles_operator_reconciles_total");
    let kib = |field| proc_kib(pid, "status", field).unwrap_or(0) as f64 / 1024.0;
    println!(
        "tenants={n} ready={ready} created_in={:.1}s all_ready_in={:.1}s tenants_per_s={:.1} reconciles={count} reconciles_per_tenant={:.2} operator_peak_rss_mib={:.0} operator_rss_mib={:.0}",
        created.as_secs_f64(),
        all_ready.as_secs_f64(),
        ready as f64 / all_ready.as_secs_f64(),
        count as f64 / n as f64,
        kib("VmHWM"),
        kib("VmRSS"),
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
    let requests_after = api_requests(&client).await;
    let mut calls: Vec<(String, f64)> = requests_after
        .iter()
        .map(|(k, v)| {
            (
                k.clone(),
                v - requests_before.get(k).copied().unwrap_or(0.0),
            )
        })
        .filter(|(_, v)| *v >= n as f64 / 10.0)
        .collect();
    calls.sort_by(|a, b| b.1.total_cmp(&a.1));
    println!(
        "API requests per tenant until all Ready (the bench's creates included): {:.1} in all; {}",
        calls.iter().map(|(_, v)| v).sum::<f64>() / n as f64,
        calls
            .iter()
            .map(|(k, v)| format!("{k} {:.1}", v / n as f64))
            .collect::<Vec<_>>()
            .join(", ")
    );
    operator.stop(Duration::from_secs(10)).await;
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
