//! `truffles-dev`: Truffles on this machine. Run inside `scripts/testenv.sh run`
//! (PostgreSQL, Redis, the API server, the embedding model), as `make run` and
//! `make scenario` do.
//!
//!   truffles-dev up         the operator, the development supervisor and the
//!                           example tenants (namespace demo); prints what to
//!                           try and what the stand-ins receive; Ctrl-C stops
//!   truffles-dev scenario   the end-to-end scenario with a printed transcript

use std::time::Duration;

use anyhow::{Context, Result};
use clap::{Parser, Subcommand};
use truffles_tests::dev::scenario::{self, Transcript};
use truffles_tests::dev::{LocalTenant, Platform, Settings};

#[derive(Parser)]
#[command(name = "truffles-dev", about = "Truffles on this machine")]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// The local platform with the example tenants, until Ctrl-C.
    Up {
        /// Namespace of the example tenants.
        #[arg(long, default_value = "demo")]
        namespace: String,
    },
    /// The scripted end-to-end scenario (its own namespace `scenario`).
    Scenario,
}

#[tokio::main]
async fn main() -> Result<()> {
    let _ = rustls::crypto::ring::default_provider().install_default();
    let cli = Cli::parse();
    // The scenario prints a transcript; `up` also tells what the supervisor does.
    let default_filter = match cli.command {
        Command::Up { .. } => "warn,truffles_tests=info",
        Command::Scenario => "warn",
    };
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_default_env()
                .unwrap_or_else(|_| default_filter.into()),
        )
        .with_target(false)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .init();
    match cli.command {
        Command::Up { namespace } => up(&namespace).await,
        Command::Scenario => {
            let platform = Platform::start(Settings::from_env(Some("scenario".into()))?).await?;
            let mut transcript = Transcript::new(true);
            println!("\n── The end-to-end scenario ──");
            let result = scenario::run(&platform, "scenario", None, &mut transcript).await;
            platform.stop().await;
            match &result {
                Ok(()) => println!("── Scenario passed ──"),
                Err(e) => println!("── Scenario failed: {e:#} ──"),
            }
            result
        }
    }
}

async fn up(namespace: &str) -> Result<()> {
    let platform = Platform::start(Settings::from_env(None)?).await?;
    let mut tenants = Vec::new();
    for path in truffles_tests::yaml_files("examples/tenants")? {
        tenants.push(platform.apply_tenant(namespace, &path, None).await?);
    }
    for tenant in &tenants {
        if let Err(e) = platform.wait_ready(tenant, Duration::from_secs(180)).await {
            tracing::warn!(tenant = %tenant.name, "not serving yet: {e:#}");
        }
    }
    print_summary(&platform, &tenants).await;
    let mut seen = Seen::default();
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())
        .context("installing the SIGTERM handler")?;
    loop {
        tokio::select! {
            _ = tokio::signal::ctrl_c() => break,
            _ = term.recv() => break,
            _ = tokio::time::sleep(Duration::from_millis(500)) => seen.print_new(&tenants),
        }
    }
    println!("stopping the runtimes and the operator…");
    platform.stop().await;
    Ok(())
}

async fn print_summary(platform: &Platform, tenants: &[LocalTenant]) {
    println!("\nTruffles is running on this machine.\n");
    if let Ok(kubeconfig) = std::env::var("KUBECONFIG") {
        println!("  export KUBECONFIG={kubeconfig}");
    }
    if let Some(dir) = std::env::var_os("PATH")
        .and_then(|p| std::env::split_paths(&p).find(|d| d.join("kubectl").is_file()))
    {
        println!("  export PATH={}:$PATH   # kubectl", dir.display());
    }
    // The developer's own throwaway database: its URL is for their shell.
    println!(
        "  export DATABASE_URL='{}'\n  psql \"$DATABASE_URL\" -c '\\dn'   # the platform schema and one tenant_<name> schema per tenant",
        platform.settings.database_url
    );
    println!(
        "  logs: {}\n",
        platform.settings.state_dir.join("logs").display()
    );
    let mut example = None;
    for t in tenants {
        let runtime = platform.supervisor.runtime(&t.namespace, &t.name);
        let state = match &runtime {
            Some(r) if r.running => "running".to_owned(),
            Some(r) => format!("not running: {}", r.problem.as_deref().unwrap_or("?")),
            None => "no runtime yet (kubectl describe tc)".to_owned(),
        };
        println!("  {}/{} «{}»: {state}", t.namespace, t.name, t.company);
        if let Ok(url) = platform.webhook_url(t).await {
            println!("    webhook (ChatFlow posts here): {url}");
            // The sample question is about flowers.
            if t.name == "flower-shop" || example.is_none() {
                example = Some(url);
            }
        }
        if let Some(r) = runtime {
            println!("    log: {}", r.log.display());
        }
        if let Some(c) = &t.stand_ins.chatflow {
            println!("    ChatFlow stand-in: {} (replies print below)", c.url);
        }
        if let Some(bot) = &t.stand_ins.customer_bot {
            println!("    customers' Telegram bot stand-in: {}", bot.url);
        }
        if let Some(tg) = &t.stand_ins.telegram {
            println!(
                "    managers' Telegram stand-in: {} (cards print below)",
                tg.url
            );
        }
        for s in &t.stand_ins.services {
            println!("    {:?} stand-in: {}", s.service, s.url);
        }
        if let Some(smtp) = &t.stand_ins.smtp {
            println!("    SMTP stand-in: 127.0.0.1:{}", smtp.port);
        }
        if let Some(q) = &t.stand_ins.qdrant {
            println!(
                "    Qdrant server (the test environment's, built from source): {}",
                q.url
            );
        }
    }
    let llm = if platform.settings.options.openai_api_key.is_some() {
        "with the LLM (OPENAI_API_KEY)"
    } else {
        "retrieval-only (no OPENAI_API_KEY): answers are the knowledge base's best passage"
    };
    println!("\n  The bots answer {llm}.\n\nTry:");
    if let Some(url) = example {
        let body = truffles_tests::runtime::chatflow_text(
            "try-1",
            scenario::PHONE,
            "Сколько стоит букет из 25 роз?",
        );
        println!("  curl -s {url} -H 'content-type: application/json' -d '{body}'");
    }
    println!(
        "  kubectl get trufflesclients,subscriptions -A\n  \
         kubectl patch tc flower-shop -n demo --type merge -p '{{\"spec\":{{\"state\":\"Suspended\"}}}}'   # the runtime stops\n  \
         kubectl patch tc flower-shop -n demo --type merge -p '{{\"spec\":{{\"state\":\"Active\"}}}}'      # and starts again\n\nCtrl-C stops everything.\n"
    );
}

/// One message as a block of its own, so a conversation can be followed
/// when replies run over several lines.
fn block(header: &str, text: &str) -> String {
    let body: Vec<String> = text.lines().map(|l| format!("│ {l}")).collect();
    format!("┌─ {header}\n{}\n└─", body.join("\n"))
}

/// What the stand-ins received that was already printed.
#[derive(Default)]
struct Seen {
    counts: std::collections::HashMap<(String, &'static str), usize>,
}

impl Seen {
    fn print_new(&mut self, tenants: &[LocalTenant]) {
        for t in tenants {
            let s = &t.stand_ins;
            if let Some(c) = &s.chatflow {
                for m in self.fresh(&t.name, "chatflow", c.sent()) {
                    let to = m.jid.trim_end_matches("@s.whatsapp.net");
                    println!("{}", block(&format!("[{}] bot → {to}", t.name), &m.msg));
                }
            }
            if let Some(tg) = &s.telegram {
                for m in self.fresh(&t.name, "telegram", tg.messages()) {
                    println!(
                        "{}",
                        block(&format!("[{}] managers' group ←", t.name), &m.text)
                    );
                }
            }
            let calls: Vec<_> = s.services.iter().flat_map(|f| f.calls()).collect();
            for c in self.fresh(&t.name, "services", calls) {
                println!("[{}] CRM/webhook ← POST {}", t.name, c.path);
            }
            if let Some(smtp) = &s.smtp {
                for _ in self.fresh(&t.name, "smtp", smtp.messages()) {
                    println!(
                        "[{}] e-mail to the managers received by the SMTP stand-in",
                        t.name
                    );
                }
            }
        }
    }

    fn fresh<T>(&mut self, tenant: &str, what: &'static str, all: Vec<T>) -> Vec<T> {
        let seen = self.counts.entry((tenant.to_owned(), what)).or_default();
        let new: Vec<T> = all.into_iter().skip(*seen).collect();
        *seen += new.len();
        new
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn each_message_is_a_delimited_block() {
        let shown = super::block(
            "[flower-shop] bot → 77015550101",
            "Букет из 25 роз — 27 000 ₸.\nДоставка 2 000 ₸.",
        );
        assert_eq!(
            shown,
            "┌─ [flower-shop] bot → 77015550101\n│ Букет из 25 роз — 27 000 ₸.\n│ Доставка 2 000 ₸.\n└─"
        );
    }
}
