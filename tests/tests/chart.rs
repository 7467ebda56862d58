//! The Helm chart: it lints, its output is accepted by the real API server
//! (server-side dry run), and its RBAC is enough for the operator — the controller
//! runs here with a token of the chart's ServiceAccount and nothing else.

use std::io::Write;
use std::process::{Command, Stdio};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context as _, Result, bail, ensure};
use kube::{Api, Client, Config};
use serde_json::json;
use truffles_crds::TrufflesClient;
use truffles_operator::tenant;
use truffles_tests::{
    TestDatabase, TestNamespace, client_manifest, condition_reason, create_raw, env_var,
    install_crds, kube_client, operator_context, secret_manifest, wait_for, wait_for_event,
    workspace_root,
};

fn chart() -> String {
    workspace_root()
        .join("charts/truffles")
        .display()
        .to_string()
}

/// Runs a command of the test environment's PATH (helm, kubectl), feeding `input`.
fn run(program: &str, args: &[&str], input: Option<&str>) -> Result<String> {
    let mut child = Command::new(program)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .with_context(|| format!("{program} is not on PATH: run the tests through `make test`"))?;
    if let (Some(text), Some(mut stdin)) = (input, child.stdin.take()) {
        stdin.write_all(text.as_bytes())?;
    }
    let out = child.wait_with_output()?;
    if !out.status.success() {
        bail!(
            "{program} {args:?} failed: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    Ok(String::from_utf8(out.stdout)?)
}

fn template(namespace: &str, set: &[&str]) -> Result<String> {
    let chart = chart();
    let mut args = vec![
        "template",
        "truffles",
        chart.as_str(),
        "--namespace",
        namespace,
        "--kube-version",
        "1.35.4",
    ];
    for s in set {
        args.extend(["--set", s]);
    }
    run("helm", &args, None)
}

#[tokio::test]
async fn chart_lints_and_renders_what_the_api_server_accepts() -> Result<()> {
    env_var("KUBECONFIG")?;
    run(
        "helm",
        &["lint", &chart(), "--kube-version", "1.35.4"],
        None,
    )?;
    let client = kube_client().await?;
    let ns = TestNamespace::create(&client, "chart").await?;

    let rendered = template(
        &ns.name,
        &[
            "telegram.existingSecret=owner-bot",
            "health.enabled=true",
            "health.adminChatId=123456789",
            "smtp.existingSecret=platform-smtp",
            "report.enabled=true",
            "report.to=ops@truffles.kz",
        ],
    )?;
    let out = run(
        "kubectl",
        &["apply", "--dry-run=server", "-f", "-"],
        Some(&rendered),
    )?;
    for object in [
        "serviceaccount/truffles-operator",
        "clusterrole.rbac.authorization.k8s.io/truffles-operator",
        "deployment.apps/truffles-operator",
        "deployment.apps/truffles-health",
        "cronjob.batch/truffles-report",
    ] {
        ensure!(out.contains(object), "{object} not accepted: {out}");
    }
    ensure!(
        rendered.contains("TRUFFLES_TELEGRAM_BOT_TOKEN"),
        "the bot token Secret is wired"
    );
    ensure!(
        rendered.contains("TRUFFLES_ADMIN_CHAT_ID") && rendered.contains(r#"args: ["health"]"#),
        "the health check runs `truffles-bot health` with the admin's chat"
    );
    ensure!(
        !template(&ns.name, &[])?.contains("truffles-health"),
        "the health check is off by default"
    );
    ensure!(
        !rendered.contains("kind: ServiceMonitor"),
        "monitoring objects are off by default"
    );

    // The Prometheus Operator's kinds only when asked for (their CRDs are not here).
    let monitored = template(
        &ns.name,
        &[
            "metrics.serviceMonitor.enabled=true",
            "metrics.prometheusRule.enabled=true",
        ],
    )?;
    ensure!(
        monitored.contains("kind: ServiceMonitor") && monitored.contains("kind: PrometheusRule")
    );
    ensure!(
        monitored.contains("truffles_operator_reconcile_failures_total"),
        "the rule watches the operator's metric"
    );
    let with_pods = template(&ns.name, &["metrics.podMonitor.enabled=true"])?;
    ensure!(with_pods.contains("kind: PodMonitor"));
    // Every runtime metric an alert uses is one the runtime exports.
    let exported = {
        let m = truffles_bot::metrics::Metrics::new("t");
        m.message("in");
        m.webhook("accepted");
        m.error("warning");
        m.handover("keyword");
        m.rag(true);
        m.response_time(1.0);
        m.render()
    };
    let used: std::collections::BTreeSet<&str> = monitored
        .split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
        .filter(|w| w.starts_with("truffles_") && !w.starts_with("truffles_operator"))
        .collect();
    ensure!(used.len() >= 5, "runtime alerts present: {used:?}");
    for metric in used {
        ensure!(
            exported.contains(metric),
            "the alerts use {metric}, which the runtime does not export:\n{exported}"
        );
    }
    // The chart ships exactly the generated CRDs.
    let crds = std::fs::read_to_string(
        workspace_root().join("charts/truffles/crds/truffles.kz_crds.yaml"),
    )?;
    ensure!(
        crds == truffles_crds::crds_yaml().map_err(|e| anyhow::anyhow!(e))?,
        "the chart's CRDs are stale: make crds"
    );
    ns.delete().await
}

#[tokio::test]
async fn the_operator_works_with_exactly_the_charts_rbac() -> Result<()> {
    let admin = kube_client().await?;
    install_crds(&admin).await?;
    let ns = TestNamespace::create(&admin, "rbac").await?;

    // Apply the chart's ServiceAccount and RBAC for real, under a unique name.
    let rendered = template(&ns.name, &[])?;
    let unique = format!("truffles-operator-{}", ns.name);
    let rbac_only: Vec<&str> = rendered
        .split("\n---")
        .filter(|doc| doc.contains("kind: ServiceAccount") || doc.contains("kind: ClusterRole"))
        .collect();
    let rbac = rbac_only
        .join("\n---\n")
        .replace("name: truffles-operator\n", &format!("name: {unique}\n"));
    run("kubectl", &["apply", "-f", "-"], Some(&rbac))?;
    let token = run(
        "kubectl",
        &[
            "create",
            "token",
            &unique,
            "-n",
            &ns.name,
            "--duration",
            "1h",
        ],
        None,
    )?;

    let mut config = Config::infer().await?;
    config.auth_info = kube::config::AuthInfo {
        token: Some(token.trim().to_owned().into()),
        ..Default::default()
    };
    let as_operator = Client::try_from(config)?;

    let db = TestDatabase::create().await?;
    truffles_migrations::migrate_platform(&db.pool).await?;
    let ctx = Arc::new(operator_context(as_operator, &db, None));
    let operator = tokio::spawn(tenant::run(ctx.clone()));

    create_raw::<k8s_openapi::api::core::v1::Secret>(&ns, &secret_manifest("rbac-shop")).await?;
    let tc = client_manifest("rbac-shop", json!({"ingress": {"host": "bots.example.kz"}}));
    create_raw::<TrufflesClient>(&ns, &tc).await?;
    let clients: Api<TrufflesClient> = ns.api();
    let ready =
        |tc: &TrufflesClient| condition_reason(tc, "Ready").as_deref() == Some("Provisioned");
    wait_for(
        &clients,
        "rbac-shop",
        "Ready with the chart's RBAC (a missing permission shows in the reconcile failures)",
        Duration::from_secs(90),
        ready,
    )
    .await?;
    // Publishing Events was allowed too.
    wait_for_event(
        &ns,
        "rbac-shop",
        "Active (published with the chart's RBAC)",
        Duration::from_secs(90),
        |e| e.reason.as_deref() == Some("Active"),
    )
    .await?;

    operator.abort();
    run(
        "kubectl",
        &["delete", "clusterrole,clusterrolebinding", &unique],
        None,
    )?;
    ns.delete().await
}

/// Runs an Argo CD health script on an object, as Argo CD does (a global `obj`,
/// the script returns `{status, message}`).
fn argocd_health(script: &str, obj: &serde_json::Value) -> Result<String> {
    let path = workspace_root().join("charts/truffles/argocd").join(script);
    let wrapper = format!(
        r#"local cjson = require("cjson"); obj = cjson.decode(io.read("a")); local hs = dofile({path:?}); io.write(hs.status)"#,
        path = path.display().to_string()
    );
    run("lua5.4", &["-e", &wrapper], Some(&obj.to_string()))
}

#[test]
fn argocd_health_follows_the_status_conditions() -> Result<()> {
    let tc = |generation: i64, observed: i64, status: &str, reason: &str| {
        json!({"metadata": {"generation": generation}, "status": {"observedGeneration": observed,
               "conditions": [{"type": "Ready", "status": status, "reason": reason, "message": "m"}]}})
    };
    let script = "trufflesclient-health.lua";
    assert_eq!(
        argocd_health(script, &json!({"metadata": {"generation": 1}}))?,
        "Progressing"
    );
    assert_eq!(
        argocd_health(script, &tc(1, 1, "True", "Provisioned"))?,
        "Healthy"
    );
    assert_eq!(
        argocd_health(script, &tc(2, 1, "True", "Provisioned"))?,
        "Progressing"
    );
    assert_eq!(
        argocd_health(script, &tc(1, 1, "False", "BillingSuspended"))?,
        "Suspended"
    );
    assert_eq!(
        argocd_health(script, &tc(1, 1, "False", "SecretMissing"))?,
        "Degraded"
    );
    assert_eq!(
        argocd_health(script, &tc(1, 1, "False", "DatabaseUnavailable"))?,
        "Progressing"
    );

    let sub = |state: &str| json!({"metadata": {}, "status": {"state": state, "conditions": [{"type": "Ready", "status": "True"}]}});
    let script = "subscription-health.lua";
    assert_eq!(argocd_health(script, &sub("Active"))?, "Healthy");
    assert_eq!(argocd_health(script, &sub("PastDue"))?, "Degraded");
    assert_eq!(argocd_health(script, &sub("Suspended"))?, "Suspended");
    Ok(())
}
