//! `truffles-bot serve`: binds the HTTP listener and starts every task of one
//! tenant's runtime (inbox workers, the scheduler, outbox sender, managers' notifier, the
//! Telegram bots' webhooks or polling, the hourly knowledge sync and the
//! retention job) over one shared [`Runtime`].

use std::net::SocketAddr;
use std::sync::Arc;

use anyhow::{Context, Result};
use tokio::task::JoinSet;

use crate::audit;
use crate::runtime::Runtime;
use crate::{gateway, handover, outbox, pipeline, schedule};

/// A started runtime. Dropping it stops every task at once (as a killed pod
/// would): work in flight is finished by the next start.
pub struct Running {
    /// The public listener (webhooks, managers' replies, probes).
    pub addr: SocketAddr,
    /// The admin API's listener.
    pub admin_addr: SocketAddr,
    pub runtime: Arc<Runtime>,
    tasks: JoinSet<Result<()>>,
}

impl Running {
    /// Stops every task and waits until they have let go of the runtime: what
    /// it holds (an Edge shard flushes to its directory when it closes) is
    /// closed when this returns, unless the caller keeps a handle of its own.
    pub async fn stop(mut self) {
        self.tasks.shutdown().await;
        let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(10);
        while Arc::strong_count(&self.runtime) > 1 && tokio::time::Instant::now() < deadline {
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
    }

    /// Waits until a task ends (only on error or shutdown) and returns why.
    pub async fn wait(&mut self) -> Result<()> {
        match self.tasks.join_next().await {
            Some(Ok(result)) => result,
            Some(Err(e)) => Err(anyhow::anyhow!("a runtime task panicked: {e}")),
            None => Ok(()),
        }
    }
}

/// Binds the public and the admin listeners and starts the workers.
pub async fn start(runtime: Runtime) -> Result<Running> {
    let runtime = Arc::new(runtime);
    let listener = tokio::net::TcpListener::bind(runtime.config.listen)
        .await
        .with_context(|| format!("binding {}", runtime.config.listen))?;
    let addr = listener.local_addr()?;
    let admin_listener = tokio::net::TcpListener::bind(runtime.config.admin_listen)
        .await
        .with_context(|| format!("binding {}", runtime.config.admin_listen))?;
    let admin_addr = admin_listener.local_addr()?;
    let mut tasks = JoinSet::new();
    let app = gateway::router(runtime.clone());
    tasks.spawn(async move { axum::serve(listener, app).await.context("HTTP server") });
    let admin = gateway::admin_router(runtime.clone());
    tasks.spawn(async move {
        axum::serve(admin_listener, admin)
            .await
            .context("admin HTTP server")
    });
    for worker in 0..runtime.config.tuning.inbox_workers {
        let rt = runtime.clone();
        tasks.spawn(async move {
            pipeline::run_worker(rt, worker).await;
            Ok(())
        });
    }
    let rt = runtime.clone();
    tasks.spawn(async move {
        schedule::run_scheduler(rt).await;
        Ok(())
    });
    let rt = runtime.clone();
    tasks.spawn(async move {
        outbox::sender::run_sender(rt).await;
        Ok(())
    });
    let rt = runtime.clone();
    tasks.spawn(async move {
        handover::notifier::run_notifier(rt).await;
        Ok(())
    });
    // Telegram delivers webhooks only to HTTPS; otherwise its bots are polled.
    let https = runtime
        .config
        .public_url
        .clone()
        .filter(|u| u.starts_with("https://"));
    if let Some(telegram) = runtime.managers.telegram.clone() {
        let rt = runtime.clone();
        match https.clone() {
            Some(base) => tasks.spawn(async move {
                handover::updates::register_webhook(rt, telegram, base).await;
                Ok(())
            }),
            None => tasks.spawn(async move {
                handover::updates::run_polling(rt, telegram).await;
                Ok(())
            }),
        };
    }
    if runtime.channels.telegram.is_some() {
        let rt = runtime.clone();
        match https {
            Some(base) => tasks.spawn(async move {
                gateway::register_telegram_webhook(rt, base).await;
                Ok(())
            }),
            None => tasks.spawn(async move {
                gateway::poll_telegram(rt).await;
                Ok(())
            }),
        };
    }
    if runtime.knowledge_base.is_some() {
        let rt = runtime.clone();
        tasks.spawn(async move {
            // At start (a new or lost volume is filled) and hourly; the
            // CronJob can also trigger it through the admin endpoint.
            let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
            loop {
                every.tick().await;
                // Its own task: even a panic in a sync is that sync's failure,
                // not the end of the process. Held in a set, so stopping the
                // runtime stops a sync in progress too.
                let mut sync = JoinSet::new();
                sync.spawn({
                    let rt = rt.clone();
                    async move { rt.sync_knowledge().await }
                });
                match sync.join_next().await {
                    Some(Ok(Ok(_))) | None => {}
                    Some(Ok(Err(e))) => {
                        tracing::error!(error = %format!("{e:#}"), "knowledge sync failed")
                    }
                    Some(Err(e)) => tracing::error!(error = %e, "knowledge sync panicked"),
                }
            }
        });
    }
    let rt = runtime.clone();
    tasks.spawn(async move {
        // The retention job: old error rows lose the customer's data.
        let mut every = tokio::time::interval(std::time::Duration::from_secs(3600));
        loop {
            every.tick().await;
            match audit::anonymize_old_errors(&rt.db, audit::ERROR_INPUT_RETENTION).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "old error rows anonymized"),
                Err(e) => tracing::warn!(error = %e, "anonymizing old error rows failed"),
            }
            match audit::anonymize_old_inbox(&rt.db, audit::ERROR_INPUT_RETENTION).await {
                Ok(0) => {}
                Ok(rows) => tracing::info!(rows, "old inbox events anonymized"),
                Err(e) => tracing::warn!(error = %e, "anonymizing old inbox events failed"),
            }
        }
    });
    tracing::info!(%addr, tenant = %runtime.config.client_name, "runtime started");
    Ok(Running {
        addr,
        admin_addr,
        runtime,
        tasks,
    })
}
