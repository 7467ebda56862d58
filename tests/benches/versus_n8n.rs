//! Truffles against the engine it replaces, n8n, on the same machine in one
//! run, driven by one load generator (wrk, one thread) with the same
//! ChatFlow-shaped webhooks (a distinct customer and message id per request):
//!
//! - Truffles' webhook with its durable ACK: the real `truffles-bot serve`
//!   binary (release build) on a provisioned tenant schema, real PostgreSQL and
//!   Redis (secret check, parse, rate limits, dedup, inbox insert);
//! - the Truffles pipeline end to end (classify, answer, outbox, the fake
//!   ChatFlow) with a fake LLM that answers at once, and one with 500 ms a call;
//! - n8n (from the npm registry, pinned, installed by `scripts/bench-n8n.sh` into
//!   the cache) running the equivalent workflow: Webhook → PostgreSQL insert →
//!   Respond to Webhook, with executions of successful runs not saved, once
//!   with its default expression engine (isolated-vm) and once with its
//!   legacy one (faster);
//! - the same webhook load spread over 1, 10 and 100 tenants (one runtime each).
//!
//! CPU is the server's process tree's user+system time over the run; peak RSS
//! its VmHWM. Figures are printed, never asserted.
//!
//!   make bench-n8n

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context, Result, bail};
use serde_json::{Value, json};
use truffles_tests::runtime::{CHATFLOW_TOKEN, LLM_KEY, PII_KEY, TenantRuntime, WEBHOOK_SECRET};
use truffles_tests::{TestDatabase, env_var, free_port, workspace_root};

const SECONDS: u64 = 15;
const CONNECTIONS: u32 = 32;

/// A server process, stopped when dropped.
struct Server {
    child: Child,
    url: String,
    dir: PathBuf,
}

impl Drop for Server {
    fn drop(&mut self) {
        // The whole tree (n8n may start helpers).
        for pid in descendants(self.child.id()).into_iter().rev() {
            let _ = Command::new("kill").arg(pid.to_string()).status();
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn temp_dir(prefix: &str) -> Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("{prefix}-{}", uuid::Uuid::new_v4().simple()));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

/// `root` and every process below it.
fn descendants(root: u32) -> Vec<u32> {
    let mut parents = Vec::new();
    if let Ok(entries) = std::fs::read_dir("/proc") {
        for entry in entries.flatten() {
            let Ok(pid) = entry.file_name().to_string_lossy().parse::<u32>() else {
                continue;
            };
            let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
                continue;
            };
            // The command name is in parentheses and may hold spaces.
            if let Some(ppid) = stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().nth(1))
                .and_then(|p| p.parse::<u32>().ok())
            {
                parents.push((pid, ppid));
            }
        }
    }
    let mut tree = vec![root];
    let mut i = 0;
    while i < tree.len() {
        let parent = tree[i];
        tree.extend(
            parents
                .iter()
                .filter(|(_, p)| *p == parent)
                .map(|(c, _)| *c),
        );
        i += 1;
    }
    tree
}

/// User + system CPU seconds of a process tree so far.
fn cpu_seconds(root: u32) -> f64 {
    descendants(root)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/stat")).ok())
        .filter_map(|stat| {
            let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
            // utime and stime: fields 14 and 15 of stat, in clock ticks (100/s).
            let ticks: f64 =
                fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
            Some(ticks / 100.0)
        })
        .sum()
}

/// A memory figure (`VmHWM` peak, `VmRSS` now) of a process tree, in MiB.
fn memory_mib(root: u32, field: &str) -> f64 {
    descendants(root)
        .iter()
        .filter_map(|pid| std::fs::read_to_string(format!("/proc/{pid}/status")).ok())
        .filter_map(|status| {
            let line = status.lines().find(|l| l.starts_with(field))?;
            line.split_whitespace().nth(1)?.parse::<f64>().ok()
        })
        .sum::<f64>()
        / 1024.0
}

/// What wrk measured.
#[derive(Debug, Default, Clone)]
struct Load {
    requests: u64,
    seconds: f64,
    rps: f64,
    p50_ms: f64,
    p99_ms: f64,
    max_ms: f64,
    errors: u64,
}

fn wrk_duration_ms(text: &str) -> Option<f64> {
    let (number, unit) = text
        .find(|c: char| c.is_ascii_alphabetic())
        .map(|i| text.split_at(i))?;
    let n: f64 = number.parse().ok()?;
    Some(match unit {
        "us" => n / 1000.0,
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        _ => return None,
    })
}

fn parse_wrk(out: &str) -> Result<Load> {
    let mut load = Load::default();
    for line in out.lines().map(str::trim) {
        let words: Vec<&str> = line.split_whitespace().collect();
        match words.as_slice() {
            ["Latency", _avg, _stdev, max, ..] => load.max_ms = wrk_duration_ms(max).unwrap_or(0.0),
            ["50%", v] => load.p50_ms = wrk_duration_ms(v).unwrap_or(0.0),
            ["99%", v] => load.p99_ms = wrk_duration_ms(v).unwrap_or(0.0),
            ["Requests/sec:", v] => load.rps = v.parse().unwrap_or(0.0),
            ["Non-2xx", "or", "3xx", "responses:", n] => {
                load.errors += n.parse::<u64>().unwrap_or(0)
            }
            ["Socket", "errors:", rest @ ..] => {
                load.errors += rest
                    .iter()
                    .filter_map(|w| w.trim_end_matches(',').parse::<u64>().ok())
                    .sum::<u64>();
            }
            [n, "requests", "in", secs, ..] => {
                load.requests = n.parse().unwrap_or(0);
                load.seconds = secs
                    .trim_end_matches(',')
                    .trim_end_matches('s')
                    .parse()
                    .unwrap_or(0.0);
            }
            _ => {}
        }
    }
    if load.requests == 0 {
        bail!("wrk made no requests:\n{out}");
    }
    Ok(load)
}

/// The ChatFlow webhook every target gets; `%d` is the send time (an old
/// one is refused as a replay), `%s` are the message id and phone.
const PAYLOAD: &str = r#"{"messageType":"text","message":"Сколько стоит букет из 25 роз?","metadata":{"sender":"Айгерим","timestamp":%d,"messageId":"%s","remoteJid":"%s@s.whatsapp.net"},"mediaData":null,"nodeData":{"nodeId":"start","flowId":"f-1"}}"#;

/// wrk's script: a new message id and customer per request; stops after
/// `max` responses when given (0: run for the duration).
fn wrk_script(dir: &Path) -> Result<PathBuf> {
    let script = format!(
        r#"local counter = 0
local prefix = "run"
local max = 0
local responses = 0
local template = [[{PAYLOAD}]]
function init(args)
  prefix = args[1] or prefix
  max = tonumber(args[2] or "0")
end
function request()
  counter = counter + 1
  local body = string.format(template, os.time(), prefix .. "-" .. counter, string.format("77%09d", counter))
  return wrk.format("POST", nil, {{["Content-Type"] = "application/json"}}, body)
end
function response(status, headers, body)
  responses = responses + 1
  if max > 0 and responses >= max then wrk.thread:stop() end
end
"#
    );
    let path = dir.join("chatflow.lua");
    std::fs::write(&path, script)?;
    Ok(path)
}

fn wrk(
    url: &str,
    script: &Path,
    connections: u32,
    seconds: u64,
    prefix: &str,
    max: u64,
) -> Result<Load> {
    let out = Command::new("wrk")
        .args([
            "-t1",
            &format!("-c{connections}"),
            &format!("-d{seconds}s"),
            "--latency",
            "--timeout",
            "30s",
            "-s",
        ])
        .arg(script)
        .arg(url)
        .args(["--", prefix, &max.to_string()])
        .output()
        .context("wrk is not installed: run `make bench-n8n`")?;
    parse_wrk(&String::from_utf8_lossy(&out.stdout))
}

struct Row {
    name: String,
    load: Load,
    cpu: f64,
    rss: f64,
}

fn print_row(row: &Row) {
    let l = &row.load;
    println!(
        "{:<44} {:>7} req {:>8.0}/s  p50 {:>7.2} ms  p99 {:>8.2} ms  max {:>8.2} ms  errors {:>4}  CPU {:>5.1} s ({:.2} ms/req)  peak RSS {:>5.0} MiB",
        row.name,
        l.requests,
        l.rps,
        l.p50_ms,
        l.p99_ms,
        l.max_ms,
        l.errors,
        row.cpu,
        row.cpu * 1000.0 / l.requests.max(1) as f64,
        row.rss
    );
}

/// Waits until `url` answers 2xx.
async fn ready(url: &str, within: Duration) -> Result<()> {
    let http = reqwest::Client::new();
    let deadline = Instant::now() + within;
    loop {
        if let Ok(r) = http.get(url).send().await
            && r.status().is_success()
        {
            return Ok(());
        }
        if Instant::now() > deadline {
            bail!("{url} did not come up within {within:?}");
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

/// The real runtime binary for one provisioned tenant, with `db_connections`
/// PostgreSQL connections.
async fn start_truffles(rt: &TenantRuntime, db_connections: u32) -> Result<Server> {
    let dir = temp_dir("truffles-bench")?;
    std::fs::write(dir.join("client.json"), serde_json::to_vec(&rt.spec)?)?;
    let port = free_port()?;
    let binary = std::env::var("TRUFFLES_BOT_BIN")
        .map(PathBuf::from)
        .unwrap_or_else(|_| workspace_root().join("target/release/truffles-bot"));
    let child = Command::new(&binary)
        .arg("serve")
        .env_clear()
        .env("PATH", std::env::var("PATH").unwrap_or_default())
        .env("TRUFFLES_CLIENT_NAME", &rt.name)
        .env("TRUFFLES_CONFIG_FILE", dir.join("client.json"))
        .env("DATABASE_URL", &rt.database_url)
        .env("REDIS_URL", env_var("REDIS_URL")?)
        .env("TRUFFLES_WEBHOOK_SECRET", WEBHOOK_SECRET)
        .env("TRUFFLES_PII_KEY", hex::encode(PII_KEY))
        .env("CHATFLOW_TOKEN", CHATFLOW_TOKEN)
        .env("OPENAI_API_KEY", LLM_KEY)
        .env("TRUFFLES_LISTEN", format!("127.0.0.1:{port}"))
        .env("TRUFFLES_COALESCE_MS", "200")
        .env("TRUFFLES_DB_CONNECTIONS", db_connections.to_string())
        .env("TRUFFLES_DATA_DIR", &dir)
        .env("TRUFFLES_KNOWLEDGE_DIR", &dir)
        .env("TRUFFLES_SECRETS_DIR", &dir)
        .env("RUST_LOG", "warn")
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("runtime.log"))?)
        .spawn()
        .with_context(|| {
            format!(
                "starting {} (cargo build --release -p truffles-bot)",
                binary.display()
            )
        })?;
    let server = Server {
        child,
        url: format!(
            "http://127.0.0.1:{port}/t/{}/webhook/{WEBHOOK_SECRET}",
            rt.name
        ),
        dir,
    };
    ready(
        &format!("http://127.0.0.1:{port}/readyz"),
        Duration::from_secs(30),
    )
    .await?;
    Ok(server)
}

async fn tenant(prefix: &str) -> Result<TenantRuntime> {
    // Limits far above the load: the bench measures the path, not the limiter.
    TenantRuntime::new(
        prefix,
        json!({"runtime": {"rateLimitPerMinute": 1_000_000, "userRateLimitPerMinute": 10_000}}),
    )
    .await
}

/// The runtime's durable ACK under wrk for a fixed time.
async fn truffles_ack(script: &Path) -> Result<(Row, f64)> {
    let rt = tenant("ack").await?;
    let server = start_truffles(&rt, 16).await?;
    let pid = server.child.id();
    let idle = memory_mib(pid, "VmRSS:");
    let before = cpu_seconds(pid);
    let load = wrk(&server.url, script, CONNECTIONS, SECONDS, "ack", 0)?;
    let row = Row {
        name: "Truffles webhook, durable ACK".into(),
        cpu: cpu_seconds(pid) - before,
        rss: memory_mib(pid, "VmHWM:"),
        load,
    };
    Ok((row, idle))
}

/// `messages` webhooks (wrk stops sending after them), then the time from
/// the first webhook to the last reply ChatFlow accepted.
async fn truffles_pipeline(
    script: &Path,
    label: &str,
    llm_latency: Duration,
    messages: u64,
) -> Result<(Row, f64)> {
    let rt = tenant("e2e").await?;
    rt.llm.set_latency(llm_latency);
    let server = start_truffles(&rt, 16).await?;
    let pid = server.child.id();
    let before = cpu_seconds(pid);
    // wrk runs for its duration; its thread stops sending after `messages`.
    let (url, script_path) = (server.url.clone(), script.to_owned());
    let load = std::thread::spawn(move || wrk(&url, &script_path, CONNECTIONS, 5, "e2e", messages));
    rt.chatflow
        .wait_sent(messages as usize, Duration::from_secs(1800))
        .await?;
    let load = load.join().map_err(|_| anyhow::anyhow!("wrk thread"))??;
    let accepted = rt.count("SELECT count(*) FROM inbox").await?;
    rt.chatflow
        .wait_sent(accepted as usize, Duration::from_secs(1800))
        .await?;
    let wall: f64 = sqlx::query_scalar(
        "SELECT extract(epoch FROM (SELECT max(sent_at) FROM outbox) - (SELECT min(received_at) FROM inbox))::float8",
    )
    .fetch_one(&rt.pool)
    .await?;
    let row = Row {
        name: format!("Truffles end to end, {label}"),
        cpu: cpu_seconds(pid) - before,
        rss: memory_mib(pid, "VmHWM:"),
        load,
    };
    Ok((row, accepted as f64 / wall))
}

/// The same load spread over `tenants` runtimes (one wrk per tenant).
async fn truffles_tenants(script: &Path, tenants: usize) -> Result<Row> {
    let mut runtimes = Vec::new();
    // Two connections a runtime: a hundred of them share one PostgreSQL
    // (max_connections 300 here) as thousands would share a real one.
    let connections = if tenants > 10 { 2 } else { 16 };
    for i in 0..tenants {
        let rt = tenant(&format!("t{i}")).await?;
        let server = start_truffles(&rt, connections).await?;
        // The harness's own pools are not needed any more.
        rt.pool.close().await;
        rt.db.pool.close().await;
        runtimes.push((rt, server));
    }
    let idle: f64 = runtimes
        .iter()
        .map(|(_, s)| memory_mib(s.child.id(), "VmRSS:"))
        .sum::<f64>()
        / tenants as f64;
    println!("  {tenants} runtimes started, idle RSS {idle:.0} MiB each");
    let roots: Vec<u32> = runtimes.iter().map(|(_, s)| s.child.id()).collect();
    let before: f64 = roots.iter().map(|p| cpu_seconds(*p)).sum();
    let per_tenant = (CONNECTIONS as usize / tenants).max(1) as u32;
    let urls: Vec<String> = runtimes.iter().map(|(_, s)| s.url.clone()).collect();
    let script = script.to_owned();
    let loads: Vec<Load> = std::thread::scope(|scope| {
        let handles: Vec<_> = urls
            .iter()
            .map(|url| {
                let script = script.clone();
                scope.spawn(move || wrk(url, &script, per_tenant, SECONDS, "scale", 0))
            })
            .collect();
        handles
            .into_iter()
            .map(|h| h.join().map_err(|_| anyhow::anyhow!("wrk thread"))?)
            .collect::<Result<Vec<_>>>()
    })?;
    let requests: u64 = loads.iter().map(|l| l.requests).sum();
    let load = Load {
        requests,
        seconds: SECONDS as f64,
        rps: loads.iter().map(|l| l.rps).sum(),
        p50_ms: loads.iter().map(|l| l.p50_ms).fold(0.0, f64::max),
        p99_ms: loads.iter().map(|l| l.p99_ms).fold(0.0, f64::max),
        max_ms: loads.iter().map(|l| l.max_ms).fold(0.0, f64::max),
        errors: loads.iter().map(|l| l.errors).sum(),
    };
    Ok(Row {
        name: format!("Truffles webhook ACK, {tenants} tenants"),
        cpu: roots.iter().map(|p| cpu_seconds(*p)).sum::<f64>() - before,
        rss: roots.iter().map(|p| memory_mib(*p, "VmHWM:")).sum(),
        load,
    })
}

/// n8n with the equivalent workflow on a database of its own. `engine`:
/// n8n's expression engine, `vm` (its default: isolated-vm) or `legacy`.
async fn start_n8n(engine: &str) -> Result<(Server, TestDatabase)> {
    let n8n = PathBuf::from(env_var("TRUFFLES_N8N_BIN")?);
    let db = TestDatabase::create().await?;
    sqlx::raw_sql(
        "CREATE TABLE inbox (id bigserial PRIMARY KEY, message_id text NOT NULL UNIQUE,
                             payload jsonb NOT NULL, received_at timestamptz NOT NULL DEFAULT now())",
    )
    .execute(&db.pool)
    .await?;
    let server: sqlx::postgres::PgConnectOptions = env_var("DATABASE_URL")?.parse()?;
    let url = url_parts(&env_var("DATABASE_URL")?)?;
    let dir = temp_dir("n8n-bench")?;
    let credentials = json!([{
        "id": "pgBench0000001", "name": "Bench PostgreSQL", "type": "postgres",
        "data": {"host": server.get_host(), "port": server.get_port(), "database": db.name,
                 "user": url.0, "password": url.1, "ssl": "disable", "allowUnauthorizedCerts": false,
                 "sshTunnel": false}
    }]);
    let workflow = n8n_workflow();
    std::fs::write(dir.join("credentials.json"), credentials.to_string())?;
    std::fs::write(dir.join("workflow.json"), workflow.to_string())?;
    let port = free_port()?;
    let env = |cmd: &mut Command| {
        cmd.env("N8N_USER_FOLDER", &dir)
            .env("N8N_PORT", port.to_string())
            .env("N8N_LISTEN_ADDRESS", "127.0.0.1")
            .env("N8N_ENCRYPTION_KEY", "bench-encryption-key-0123456789")
            .env("N8N_DIAGNOSTICS_ENABLED", "false")
            .env("N8N_VERSION_NOTIFICATIONS_ENABLED", "false")
            .env("N8N_TEMPLATES_ENABLED", "false")
            .env("N8N_PERSONALIZATION_ENABLED", "false")
            .env("N8N_SECURE_COOKIE", "false")
            .env("N8N_LOG_LEVEL", "warn")
            .env("N8N_RUNNERS_ENABLED", "false")
            .env("N8N_EXPRESSION_ENGINE", engine)
            .env("N8N_ENFORCE_SETTINGS_FILE_PERMISSIONS", "false")
            .env("EXECUTIONS_DATA_SAVE_ON_SUCCESS", "none")
            .env("EXECUTIONS_DATA_SAVE_MANUAL_EXECUTIONS", "false")
            .env("EXECUTIONS_DATA_SAVE_ON_PROGRESS", "false")
            .env("DB_SQLITE_POOL_SIZE", "4");
    };
    for args in [
        vec![
            "import:credentials".to_owned(),
            format!("--input={}", dir.join("credentials.json").display()),
        ],
        vec![
            "import:workflow".to_owned(),
            format!("--input={}", dir.join("workflow.json").display()),
        ],
        vec![
            "update:workflow".to_owned(),
            "--id=chatflowBench01".to_owned(),
            "--active=true".to_owned(),
        ],
    ] {
        let mut cmd = Command::new(&n8n);
        cmd.args(&args);
        env(&mut cmd);
        let out = cmd.output().with_context(|| format!("n8n {args:?}"))?;
        if !out.status.success() {
            bail!(
                "n8n {args:?} failed: {}{}",
                String::from_utf8_lossy(&out.stdout),
                String::from_utf8_lossy(&out.stderr)
            );
        }
    }
    let mut cmd = Command::new(&n8n);
    cmd.arg("start");
    env(&mut cmd);
    let child = cmd
        .stdout(std::fs::File::create(dir.join("n8n.log"))?)
        .stderr(std::fs::File::create(dir.join("n8n.err"))?)
        .spawn()
        .context("starting n8n")?;
    let server = Server {
        child,
        url: format!("http://127.0.0.1:{port}/webhook/chatflow"),
        dir,
    };
    ready(
        &format!("http://127.0.0.1:{port}/healthz"),
        Duration::from_secs(180),
    )
    .await?;
    // The webhook is registered once the workflow is activated; a warm-up
    // request must come back accepted and be stored.
    let http = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut attempt = 0;
    loop {
        attempt += 1;
        let body = PAYLOAD
            .replacen("%d", &chrono::Utc::now().timestamp().to_string(), 1)
            .replacen("%s", &format!("warmup-{attempt}"), 1)
            .replacen("%s", "77000000000", 1);
        let answer = match http
            .post(&server.url)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
        {
            Ok(r) => r.text().await.unwrap_or_default(),
            Err(e) => e.to_string(),
        };
        let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
            .fetch_one(&db.pool)
            .await?;
        if answer.contains("accepted") && stored > 0 {
            break;
        }
        if Instant::now() > deadline {
            bail!(
                "n8n's webhook answers {answer:?} and stored {stored} rows; its log: {}",
                std::fs::read_to_string(server.dir.join("n8n.log")).unwrap_or_default()
            );
        }
        tokio::time::sleep(Duration::from_millis(500)).await;
    }
    Ok((server, db))
}

/// User and password of a PostgreSQL URL.
fn url_parts(url: &str) -> Result<(String, String)> {
    let parsed = reqwest::Url::parse(url)?;
    Ok((
        parsed.username().to_owned(),
        parsed.password().unwrap_or_default().to_owned(),
    ))
}

/// Webhook → Postgres (insert the message id and the payload) → Respond.
fn n8n_workflow() -> Value {
    json!({
        "id": "chatflowBench01",
        "name": "ChatFlow webhook to PostgreSQL",
        "active": false,
        "settings": {"executionOrder": "v1", "saveDataSuccessExecution": "none", "saveManualExecutions": false},
        "nodes": [
            {"id": "1b0c1a5e-0000-4000-8000-000000000001", "name": "Webhook", "type": "n8n-nodes-base.webhook",
             "typeVersion": 2, "position": [0, 0], "webhookId": "6f1c8e9a-0000-4000-8000-00000000c0de",
             "parameters": {"httpMethod": "POST", "path": "chatflow", "responseMode": "responseNode", "options": {}}},
            {"id": "1b0c1a5e-0000-4000-8000-000000000002", "name": "Insert", "type": "n8n-nodes-base.postgres",
             "typeVersion": 2.5, "position": [220, 0],
             "credentials": {"postgres": {"id": "pgBench0000001", "name": "Bench PostgreSQL"}},
             "parameters": {"operation": "executeQuery",
                            "query": "INSERT INTO inbox (message_id, payload) VALUES ($1, $2::jsonb) ON CONFLICT (message_id) DO NOTHING",
                            "options": {"queryReplacement": "={{ [$json.body.metadata.messageId, JSON.stringify($json.body)] }}"}}},
            {"id": "1b0c1a5e-0000-4000-8000-000000000003", "name": "Respond", "type": "n8n-nodes-base.respondToWebhook",
             "typeVersion": 1.1, "position": [440, 0],
             "parameters": {"respondWith": "json", "responseBody": "={\"status\":\"accepted\"}", "options": {}}}
        ],
        "connections": {
            "Webhook": {"main": [[{"node": "Insert", "type": "main", "index": 0}]]},
            "Insert": {"main": [[{"node": "Respond", "type": "main", "index": 0}]]}
        },
        "pinData": {}
    })
}

async fn n8n_ack(script: &Path, engine: &str) -> Result<(Row, f64, u64)> {
    let (server, db) = start_n8n(engine).await?;
    let pid = server.child.id();
    let idle = memory_mib(pid, "VmRSS:");
    let before = cpu_seconds(pid);
    let load = wrk(&server.url, script, CONNECTIONS, SECONDS, "n8n", 0)?;
    let cpu = cpu_seconds(pid) - before;
    let rss = memory_mib(pid, "VmHWM:");
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM inbox")
        .fetch_one(&db.pool)
        .await?;
    let version = Command::new(env_var("TRUFFLES_N8N_BIN")?)
        .arg("--version")
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_owned())
        .unwrap_or_default();
    let row = Row {
        name: format!("n8n {version} ({engine} expressions)"),
        load,
        cpu,
        rss,
    };
    Ok((row, idle, stored as u64))
}

#[tokio::main]
async fn main() -> Result<()> {
    truffles_tests::init();
    let dir = temp_dir("bench-wrk")?;
    let script = wrk_script(&dir)?;
    println!(
        "wrk -t1 -c{CONNECTIONS} -d{SECONDS}s, ChatFlow-shaped webhooks, a new customer per request; {} cores",
        std::thread::available_parallelism().map_or(0, |n| n.get())
    );

    let (ack, idle_runtime) = truffles_ack(&script).await?;
    print_row(&ack);
    // n8n's default expression engine first, then its faster legacy one,
    // which the ratios compare against.
    let (vm, _, vm_stored) = n8n_ack(&script, "vm").await?;
    print_row(&vm);
    println!(
        "  stored {vm_stored} rows for {} requests ({} errors)",
        vm.load.requests, vm.load.errors
    );
    let (n8n, idle_n8n, n8n_stored) = n8n_ack(&script, "legacy").await?;
    print_row(&n8n);
    println!(
        "  stored {n8n_stored} rows for {} requests ({} errors)",
        n8n.load.requests, n8n.load.errors
    );
    println!(
        "ratios Truffles / n8n (legacy expressions): requests/s ×{:.1}, p50 ÷{:.1}, p99 ÷{:.1}, CPU per request ÷{:.1}, peak RSS ÷{:.1}",
        ack.load.rps / n8n.load.rps.max(0.001),
        n8n.load.p50_ms / ack.load.p50_ms.max(0.001),
        n8n.load.p99_ms / ack.load.p99_ms.max(0.001),
        (n8n.cpu / n8n.load.requests.max(1) as f64)
            / (ack.cpu / ack.load.requests.max(1) as f64).max(1e-9),
        n8n.rss / ack.rss.max(0.001),
    );
    println!("idle RSS: truffles-bot {idle_runtime:.0} MiB, n8n {idle_n8n:.0} MiB");

    for (label, latency, messages) in [
        ("fake LLM instant", Duration::ZERO, 3000),
        ("fake LLM 500 ms/call", Duration::from_millis(500), 160),
    ] {
        let (row, replies) = truffles_pipeline(&script, label, latency, messages).await?;
        print_row(&row);
        println!("  every reply sent: {replies:.1} replies/s");
    }
    for tenants in [1, 10, 100] {
        print_row(&truffles_tenants(&script, tenants).await?);
    }
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}
