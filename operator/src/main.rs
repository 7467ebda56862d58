//! truffles-operator: runs the TrufflesClient and Subscription controllers against
//! the cluster of the current kubeconfig (or the in-cluster service account);
//! `truffles-operator billing` evaluates every Subscription once and exits (the
//! chart's daily billing CronJob).

use std::sync::Arc;

use anyhow::{Context as _, Result};
use clap::Parser;
use sqlx::postgres::{PgConnectOptions, PgPoolOptions};
use truffles_operator::billing::controller::{
    BillingContext, EmailNotifier, Notifier, SystemClock, TelegramNotifier,
};
use truffles_operator::tenant::build::network::NetworkSettings;
use truffles_operator::tenant::keys::MasterKey;
use truffles_operator::tenant::{self, Context, Settings};
use truffles_operator::{billing, leader};

/// Truffles operator.
#[derive(Parser, Debug)]
#[command(version, about)]
struct Args {
    #[command(subcommand)]
    command: Option<Command>,
    /// Platform database (a role that may create roles and schemas).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    database_url: String,
    /// Image of truffles-bot for tenants whose spec names none.
    #[arg(
        long,
        env = "TRUFFLES_RUNTIME_IMAGE",
        default_value = "ghcr.io/truffles-kz/truffles-bot:0.1.0"
    )]
    runtime_image: String,
    /// host:port tenant runtimes use for PostgreSQL, if not the operator's.
    /// Wraps each tenant's backup data key (64 hex characters, from a Secret:
    /// `openssl rand -hex 32`). Losing it loses the stored copies of the keys.
    #[arg(long, env = "TRUFFLES_BACKUP_MASTER_KEY", hide_env_values = true)]
    backup_master_key: String,
    #[arg(long, env = "TRUFFLES_TENANT_DATABASE_HOST")]
    tenant_database_host: Option<String>,
    /// Watch only this namespace (default: all).
    #[arg(long, env = "TRUFFLES_WATCH_NAMESPACE")]
    namespace: Option<String>,
    /// Redis of the tenant runtimes; a purge deletes the tenant's keys there.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: Option<String>,
    /// Redis URL for tenant runtimes when it differs from REDIS_URL (e.g. a
    /// cluster Service name).
    #[arg(long, env = "TRUFFLES_RUNTIME_REDIS_URL", hide_env_values = true)]
    runtime_redis_url: Option<String>,
    /// Namespaces of the ingress controller (tenants' public port), comma-separated.
    #[arg(
        long,
        env = "TRUFFLES_INGRESS_NAMESPACES",
        value_delimiter = ',',
        default_value = "ingress-nginx"
    )]
    ingress_namespaces: Vec<String>,
    /// Namespaces of Prometheus (tenants' /metrics).
    #[arg(
        long,
        env = "TRUFFLES_MONITORING_NAMESPACES",
        value_delimiter = ',',
        default_value = "monitoring"
    )]
    monitoring_namespaces: Vec<String>,
    /// Namespaces of the platform (operator, PostgreSQL, Redis, Qdrant):
    /// tenants' admin port, and their egress to it.
    #[arg(
        long,
        env = "TRUFFLES_PLATFORM_NAMESPACES",
        value_delimiter = ',',
        default_value = "truffles-system"
    )]
    platform_namespaces: Vec<String>,
    /// Private ranges closed to tenants' egress (default: RFC 1918, CGNAT, fc00::/7).
    #[arg(long, env = "TRUFFLES_PRIVATE_CIDRS", value_delimiter = ',')]
    private_cidrs: Vec<String>,
    /// Ranges opened to tenants' egress anyway (a managed database's subnet).
    #[arg(long, env = "TRUFFLES_EGRESS_CIDRS", value_delimiter = ',')]
    egress_cidrs: Vec<String>,
    /// Special ranges tenants' runtimes may fetch customers' links and URL
    /// sources from anyway (none by default: loopback, private and metadata
    /// addresses are refused).
    #[arg(long, env = "TRUFFLES_FETCH_ALLOW_CIDRS", value_delimiter = ',')]
    fetch_allow_cidrs: Vec<String>,
    /// Image repositories tenants' specs may name (default: the runtime image's).
    #[arg(long, env = "TRUFFLES_ALLOWED_IMAGES", value_delimiter = ',')]
    allowed_images: Vec<String>,
    /// Ingress annotation keys (prefixes) tenants' specs may set.
    #[arg(
        long,
        env = "TRUFFLES_ALLOWED_INGRESS_ANNOTATIONS",
        value_delimiter = ','
    )]
    allowed_ingress_annotations: Vec<String>,
    /// Hosts the key-receiving URLs of tenants' specs may point at (empty: any).
    #[arg(long, env = "TRUFFLES_ALLOWED_API_HOSTS", value_delimiter = ',')]
    allowed_api_hosts: Vec<String>,
    /// Bot token of the platform owner's Telegram bot for billing reminders.
    #[arg(long, env = "TRUFFLES_TELEGRAM_BOT_TOKEN", hide_env_values = true)]
    telegram_bot_token: Option<String>,
    /// Telegram Bot API base URL.
    #[arg(long, env = "TRUFFLES_TELEGRAM_API_URL")]
    telegram_api_url: Option<String>,
    /// SMTP server for e-mail billing reminders, e.g. smtps://user:password@host:465.
    #[arg(long, env = "TRUFFLES_SMTP_URL", hide_env_values = true)]
    smtp_url: Option<String>,
    /// Sender of e-mail billing reminders.
    #[arg(
        long,
        env = "TRUFFLES_SMTP_FROM",
        default_value = "Truffles <billing@truffles.kz>"
    )]
    smtp_from: String,
    /// Namespace of the leader-election Lease; set (the chart sets it from the pod)
    /// to let several replicas run with one of them reconciling.
    #[arg(long, env = "POD_NAMESPACE")]
    leader_election_namespace: Option<String>,
    /// This replica's identity in the election.
    #[arg(long, env = "POD_NAME", default_value = "truffles-operator")]
    pod_name: String,
    /// Connections to the platform database.
    #[arg(long, env = "TRUFFLES_DB_CONNECTIONS", default_value_t = 10, value_parser = clap::value_parser!(u32).range(2..=200))]
    db_connections: u32,
    /// Tenants provisioned at once (roles, schemas, grants and migrations:
    /// catalog locks, and one connection more each). More is slower on a
    /// small server (BENCHMARKS.md, "Operator scale").
    #[arg(long, env = "TRUFFLES_PROVISIONING", default_value_t = 4, value_parser = clap::value_parser!(u32).range(1..=100))]
    provisioning: u32,
    /// Address of /metrics (Prometheus) and /healthz.
    #[arg(long, env = "TRUFFLES_METRICS_ADDR", default_value = "0.0.0.0:8080")]
    metrics_addr: std::net::SocketAddr,
}

#[derive(clap::Subcommand, Debug)]
enum Command {
    /// Evaluate every Subscription once (state, reminders, status) and exit:
    /// the daily CronJob, for the days the operator was down and the
    /// namespaces no operator watches. Exits 1 if any failed.
    Billing,
}

#[tokio::main]
async fn main() -> Result<()> {
    // One rustls provider for kube and sqlx alike.
    let _ = rustls::crypto::ring::default_provider().install_default();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()),
        )
        .init();
    let args = Args::parse();

    let database: PgConnectOptions = args
        .database_url
        .parse()
        .context("DATABASE_URL is not a valid postgres:// URL")?;
    let tenant_database_host = args
        .tenant_database_host
        .as_deref()
        .map(parse_host_port)
        .transpose()?;
    let pool = PgPoolOptions::new()
        .max_connections(args.db_connections)
        .connect_with(database.clone())
        .await
        .context("connecting to the platform database")?;
    truffles_migrations::migrate_platform(&pool)
        .await
        .context("migrating the platform schema")?;
    if let Err(e) = truffles_migrations::restrict_statistics(&pool).await {
        tracing::warn!(error = %e, views = ?truffles_migrations::STATISTICS_VIEWS,
            "tenant roles can read the statistics views: as a superuser, REVOKE SELECT ON these views FROM PUBLIC");
    }
    let client = kube::Client::try_default()
        .await
        .context("connecting to Kubernetes")?;
    let lease_client = client.clone();

    let settings = Settings {
        backup_master_key: MasterKey::from_hex(&args.backup_master_key)
            .context("TRUFFLES_BACKUP_MASTER_KEY")?,
        default_image: args.runtime_image,
        tenant_database_host,
        namespace: args.namespace,
        runtime_redis_url: args
            .runtime_redis_url
            .clone()
            .or_else(|| args.redis_url.clone()),
        boundary: truffles_operator::tenant::validate::Boundary {
            images: args.allowed_images.clone(),
            ingress_annotations: args.allowed_ingress_annotations.clone(),
            api_hosts: args.allowed_api_hosts.clone(),
        },
        tenant_database_tls: truffles_operator::tenant::database::tls_params(&args.database_url),
        network: NetworkSettings {
            ingress_namespaces: args.ingress_namespaces.clone(),
            monitoring_namespaces: args.monitoring_namespaces.clone(),
            platform_namespaces: args.platform_namespaces.clone(),
            private_cidrs: if args.private_cidrs.is_empty() {
                NetworkSettings::default().private_cidrs
            } else {
                args.private_cidrs.clone()
            },
            egress_cidrs: args.egress_cidrs.clone(),
            fetch_allow_cidrs: args.fetch_allow_cidrs.clone(),
        },
    };
    tracing::info!(
        namespace = settings.namespace.as_deref().unwrap_or("*"),
        "truffles-operator starting"
    );
    let notifier = match &args.telegram_bot_token {
        Some(token) => Some(Arc::new(
            TelegramNotifier::new(token, args.telegram_api_url.as_deref())
                .map_err(anyhow::Error::msg)?,
        ) as Arc<dyn Notifier>),
        None => {
            tracing::warn!(
                "TRUFFLES_TELEGRAM_BOT_TOKEN is not set: billing reminders cannot be delivered"
            );
            None
        }
    };
    let mailer = match &args.smtp_url {
        Some(url) => Some(Arc::new(
            EmailNotifier::new(url, &args.smtp_from).map_err(anyhow::Error::msg)?,
        )),
        None => None,
    };
    let billing = Arc::new(BillingContext {
        mailer,
        client: client.clone(),
        pool: pool.clone(),
        clock: Arc::new(SystemClock),
        notifier,
        namespace: settings.namespace.clone(),
    });
    if let Some(Command::Billing) = args.command {
        let summary = billing::controller::run_once(&billing)
            .await
            .context("listing the Subscriptions")?;
        println!(
            "billing: {} Subscriptions evaluated, {} failed",
            summary.evaluated,
            summary.failed.len()
        );
        for failure in &summary.failed {
            eprintln!("billing: {failure}");
        }
        if !summary.failed.is_empty() {
            std::process::exit(1);
        }
        return Ok(());
    }
    let mut ctx = Context::new(client, pool, database, settings)
        .with_provisioning(args.provisioning as usize);
    match &args.redis_url {
        Some(url) => {
            ctx = ctx.with_redis(
                redis::Client::open(url.as_str())
                    .context("REDIS_URL is not a valid redis:// URL")?,
            )
        }
        None => {
            tracing::warn!("REDIS_URL is not set: a purge cannot delete the tenant's Redis keys")
        }
    }
    let ctx = Arc::new(ctx);
    let listener = tokio::net::TcpListener::bind(args.metrics_addr)
        .await
        .with_context(|| format!("binding {}", args.metrics_addr))?;
    let metrics_ctx = ctx.clone();
    let app = axum::Router::new()
        .route(
            "/metrics",
            axum::routing::get(move || async move { metrics_ctx.metrics.render() }),
        )
        .route("/healthz", axum::routing::get(|| async { "ok" }));
    let server = tokio::spawn(async move { axum::serve(listener, app).await });
    // The controllers return when the process is asked to stop (SIGTERM/SIGINT).
    let controllers = async {
        tokio::join!(tenant::run(ctx), billing::controller::run(billing));
    };
    match args.leader_election_namespace {
        Some(namespace) => {
            let election = leader::Election {
                namespace,
                identity: args.pod_name.clone(),
                lease_seconds: 15,
            };
            leader::run_while_leader(lease_client, &election, controllers).await?;
        }
        None => controllers.await,
    }
    server.abort();
    Ok(())
}

fn parse_host_port(value: &str) -> Result<(String, u16)> {
    let (host, port) = value.rsplit_once(':').unwrap_or((value, "5432"));
    Ok((
        host.to_owned(),
        port.parse()
            .with_context(|| format!("invalid port in {value:?}"))?,
    ))
}
