//! The daily e-mail report (`truffles-bot report`, a platform CronJob): per
//! client the day's messages, conversations, response time p50/p90, handover
//! rate, knowledge-base hit rate and errors; error kinds new that day; and the
//! state of each client's backups. Read with the platform's database role
//! (it reads every tenant schema); sent as HTML with a plain-text part.
//!
//! The figures come from the tables, not from Prometheus: the report must work
//! where no monitoring is installed, and it covers exactly one calendar day.

use std::fmt::Write as _;

use chrono::{DateTime, Duration, FixedOffset, NaiveDate, TimeZone, Utc};
use lettre::message::{Mailbox, MultiPart};
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use sqlx::{AssertSqlSafe, PgPool};

/// The alert thresholds (docs/architecture.md, "Product rules"), flagged in the report as well.
pub const HANDOVER_RATE_WARN: f64 = 0.30;
pub const RAG_HIT_RATE_WARN: f64 = 0.50;
pub const ERROR_RATE_WARN: f64 = 0.05;
/// A backup older than this at the end of the day is reported missing.
pub const BACKUP_MAX_AGE_HOURS: i64 = 26;

#[derive(Debug, thiserror::Error)]
pub enum ReportError {
    #[error("{action}: {source}")]
    Database {
        action: String,
        #[source]
        source: sqlx::Error,
    },
    #[error("the report e-mail: {0}")]
    Mail(String),
}

fn failed(action: impl Into<String>) -> impl FnOnce(sqlx::Error) -> ReportError {
    let action = action.into();
    move |source| ReportError::Database { action, source }
}

/// One calendar day in the platform's time zone.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Day {
    pub date: NaiveDate,
    pub start: DateTime<Utc>,
    pub end: DateTime<Utc>,
}

impl Day {
    pub fn new(date: NaiveDate, offset: FixedOffset) -> Self {
        let start = offset
            .from_local_datetime(&date.and_time(chrono::NaiveTime::MIN))
            .single()
            .map(|t| t.with_timezone(&Utc))
            .unwrap_or_else(|| date.and_time(chrono::NaiveTime::MIN).and_utc());
        Self {
            date,
            start,
            end: start + Duration::days(1),
        }
    }

    /// The day before `now` in the time zone (what a morning job reports).
    pub fn yesterday(now: DateTime<Utc>, offset: FixedOffset) -> Self {
        let today = now.with_timezone(&offset).date_naive();
        Self::new(today.pred_opt().unwrap_or(today), offset)
    }
}

#[derive(Debug, Clone, Default, PartialEq)]
pub struct ClientStats {
    pub name: String,
    pub company: String,
    pub status: String,
    pub messages_in: i64,
    pub messages_out: i64,
    pub conversations: i64,
    pub handovers: i64,
    pub rag_queries: i64,
    pub rag_hits: i64,
    pub errors: i64,
    pub response_p50_secs: Option<f64>,
    pub response_p90_secs: Option<f64>,
    /// The newest backup not yet pruned.
    pub last_backup: Option<(DateTime<Utc>, i64)>,
}

impl ClientStats {
    pub fn handover_rate(&self) -> Option<f64> {
        ratio(self.handovers, self.conversations)
    }
    pub fn rag_hit_rate(&self) -> Option<f64> {
        ratio(self.rag_hits, self.rag_queries)
    }
    pub fn error_rate(&self) -> Option<f64> {
        ratio(self.errors, self.messages_in)
    }
    pub fn backup_ok(&self, day: &Day) -> bool {
        self.last_backup
            .is_some_and(|(at, _)| day.end - at <= Duration::hours(BACKUP_MAX_AGE_HOURS))
    }
    /// What needs a look, in the alert thresholds.
    pub fn warnings(&self, day: &Day) -> Vec<String> {
        let mut out = Vec::new();
        let pct = |r: f64| format!("{:.0}%", r * 100.0);
        if let Some(r) = self.handover_rate().filter(|r| *r > HANDOVER_RATE_WARN) {
            out.push(format!("handover rate {}", pct(r)));
        }
        if let Some(r) = self.rag_hit_rate().filter(|r| *r < RAG_HIT_RATE_WARN) {
            out.push(format!("knowledge hit rate {}", pct(r)));
        }
        if let Some(r) = self.error_rate().filter(|r| *r > ERROR_RATE_WARN) {
            out.push(format!("error rate {}", pct(r)));
        }
        if self.response_p90_secs.is_some_and(|s| s > 10.0) {
            out.push("p90 response over 10 s".into());
        }
        if !self.backup_ok(day) {
            out.push("no backup in the last day".into());
        }
        out
    }
}

fn ratio(part: i64, whole: i64) -> Option<f64> {
    (whole > 0).then(|| part as f64 / whole as f64)
}

/// An error kind a client had this day and not in the week before.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewError {
    pub client: String,
    pub stage: String,
    pub error_type: String,
    pub count: i64,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Report {
    pub day: Day,
    pub clients: Vec<ClientStats>,
    pub new_errors: Vec<NewError>,
}

/// Schema names come from platform.clients, written by the operator; still,
/// only plain identifiers are interpolated.
fn schema_ident(schema: &str) -> Option<String> {
    (!schema.is_empty()
        && schema
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_'))
    .then(|| format!("\"{schema}\""))
}

/// Reads the day's figures of every client that is not deleted.
pub async fn collect(pool: &PgPool, day: Day) -> Result<Report, ReportError> {
    let clients: Vec<(uuid::Uuid, String, String, String, String)> = sqlx::query_as(
        "SELECT id, name, company_name, status, schema_name FROM platform.clients
         WHERE deleted_at IS NULL AND status <> 'deleted' ORDER BY name",
    )
    .fetch_all(pool)
    .await
    .map_err(failed("listing the clients"))?;
    let mut stats = Vec::new();
    let mut new_errors = Vec::new();
    for (id, name, company, status, schema) in clients {
        let Some(s) = schema_ident(&schema) else {
            continue;
        };
        let present: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
            .bind(format!("{schema}.messages"))
            .fetch_one(pool)
            .await
            .map_err(failed("checking a tenant schema"))?;
        if !present {
            continue;
        }
        let row: (i64, i64, i64, i64, i64, i64, i64, Option<Vec<f64>>) =
            sqlx::query_as(AssertSqlSafe(format!(
                "WITH m AS (SELECT * FROM {s}.messages WHERE created_at >= $1 AND created_at < $2)
                 SELECT
                   (SELECT count(*) FROM m WHERE role = 'user'),
                   (SELECT count(*) FROM m WHERE role IN ('assistant', 'manager')),
                   (SELECT count(DISTINCT conversation_id) FROM m),
                   (SELECT count(*) FROM {s}.handovers WHERE created_at >= $1 AND created_at < $2),
                   (SELECT count(*) FROM m WHERE role = 'assistant' AND metadata->>'action' = 'answer'),
                   (SELECT count(*) FROM m WHERE role = 'assistant' AND metadata->>'action' = 'answer'
                                              AND coalesce((metadata->>'facts')::int, 0) > 0),
                   (SELECT count(*) FROM {s}.error_logs WHERE created_at >= $1 AND created_at < $2),
                   (SELECT percentile_cont(ARRAY[0.5, 0.9]::float8[]) WITHIN GROUP (ORDER BY r.secs)
                    FROM (SELECT extract(epoch FROM (
                                   SELECT min(a.created_at) FROM {s}.messages a
                                   WHERE a.conversation_id = u.conversation_id AND a.role = 'assistant'
                                     AND a.created_at >= u.created_at) - u.created_at)::float8 AS secs
                          FROM m u WHERE u.role = 'user') r
                    WHERE r.secs IS NOT NULL)"
            )))
            .bind(day.start)
            .bind(day.end)
            .fetch_one(pool)
            .await
            .map_err(failed(format!("reading the figures of {name}")))?;
        let last_backup: Option<(DateTime<Utc>, i64)> = sqlx::query_as(
            "SELECT created_at, size_bytes FROM platform.backups
             WHERE client_id = $1 AND deleted_at IS NULL AND created_at < $2
             ORDER BY created_at DESC LIMIT 1",
        )
        .bind(id)
        .bind(day.end)
        .fetch_optional(pool)
        .await
        .map_err(failed("reading the backups"))?;
        let fresh: Vec<(String, String, i64)> = sqlx::query_as(AssertSqlSafe(format!(
            "SELECT stage, error_type, count(*) FROM {s}.error_logs e
             WHERE created_at >= $1 AND created_at < $2
               AND NOT EXISTS (SELECT FROM {s}.error_logs p
                               WHERE p.stage = e.stage AND p.error_type = e.error_type
                                 AND p.created_at >= $1 - interval '7 days' AND p.created_at < $1)
             GROUP BY stage, error_type ORDER BY count(*) DESC, stage, error_type"
        )))
        .bind(day.start)
        .bind(day.end)
        .fetch_all(pool)
        .await
        .map_err(failed(format!("reading the new errors of {name}")))?;
        new_errors.extend(
            fresh
                .into_iter()
                .map(|(stage, error_type, count)| NewError {
                    client: name.clone(),
                    stage,
                    error_type,
                    count,
                }),
        );
        let percentiles = row.7.unwrap_or_default();
        stats.push(ClientStats {
            name,
            company,
            status,
            messages_in: row.0,
            messages_out: row.1,
            conversations: row.2,
            handovers: row.3,
            rag_queries: row.4,
            rag_hits: row.5,
            errors: row.6,
            response_p50_secs: percentiles.first().copied(),
            response_p90_secs: percentiles.get(1).copied(),
            last_backup,
        });
    }
    Ok(Report {
        day,
        clients: stats,
        new_errors,
    })
}

fn opt_pct(r: Option<f64>) -> String {
    r.map_or_else(|| "—".into(), |r| format!("{:.0}%", r * 100.0))
}

fn opt_secs(s: Option<f64>) -> String {
    s.map_or_else(|| "—".into(), |s| format!("{s:.1} s"))
}

fn backup_cell(c: &ClientStats, day: &Day) -> String {
    match c.last_backup {
        Some((at, size)) if c.backup_ok(day) => {
            format!(
                "ok {} ({} KiB)",
                at.format("%Y-%m-%d %H:%M UTC"),
                size / 1024
            )
        }
        Some((at, _)) => format!("MISSING since {}", at.format("%Y-%m-%d %H:%M UTC")),
        None => "MISSING (never)".into(),
    }
}

fn escape(text: &str) -> String {
    text.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

/// Subject, plain text and HTML of the report.
pub fn render(report: &Report) -> (String, String, String) {
    let day = &report.day;
    let total_in: i64 = report.clients.iter().map(|c| c.messages_in).sum();
    let attention: Vec<(&ClientStats, Vec<String>)> = report
        .clients
        .iter()
        .map(|c| (c, c.warnings(day)))
        .filter(|(_, w)| !w.is_empty())
        .collect();
    let subject = format!(
        "Truffles daily report {}: {} clients, {} messages, {} need attention",
        day.date,
        report.clients.len(),
        total_in,
        attention.len()
    );

    let mut text = format!("Truffles — daily report for {}\n\n", day.date);
    for c in &report.clients {
        let _ = writeln!(
            text,
            "{} ({}, {})\n  messages in/out {}/{}, conversations {}, response p50 {} p90 {}\n  handovers {} ({}), knowledge hits {}/{} ({}), errors {} ({})\n  backup: {}",
            c.company,
            c.name,
            c.status,
            c.messages_in,
            c.messages_out,
            c.conversations,
            opt_secs(c.response_p50_secs),
            opt_secs(c.response_p90_secs),
            c.handovers,
            opt_pct(c.handover_rate()),
            c.rag_hits,
            c.rag_queries,
            opt_pct(c.rag_hit_rate()),
            c.errors,
            opt_pct(c.error_rate()),
            backup_cell(c, day),
        );
        let warnings = c.warnings(day);
        if !warnings.is_empty() {
            let _ = writeln!(text, "  ATTENTION: {}", warnings.join("; "));
        }
        text.push('\n');
    }
    text.push_str("New errors (not seen in the 7 days before):\n");
    if report.new_errors.is_empty() {
        text.push_str("  none\n");
    }
    for e in &report.new_errors {
        let _ = writeln!(
            text,
            "  {}: {} / {} × {}",
            e.client, e.stage, e.error_type, e.count
        );
    }

    let mut html = String::from(
        "<!doctype html><html><body style=\"font-family:Arial,sans-serif;color:#222\">",
    );
    let _ = write!(
        html,
        "<h2 style=\"margin:0 0 8px\">Truffles — daily report for {}</h2><p>{} clients, {} customer messages, {} need attention.</p>",
        day.date,
        report.clients.len(),
        total_in,
        attention.len()
    );
    html.push_str("<table cellpadding=\"6\" style=\"border-collapse:collapse;font-size:14px\"><tr style=\"background:#f0f0f0;text-align:left\"><th>Client</th><th>Messages in/out</th><th>Conversations</th><th>Response p50 / p90</th><th>Handover rate</th><th>Knowledge hit rate</th><th>Errors</th><th>Backup</th></tr>");
    for c in &report.clients {
        let warnings = c.warnings(day);
        let style = if warnings.is_empty() {
            ""
        } else {
            " style=\"background:#fff4e5\""
        };
        let _ = write!(
            html,
            "<tr{style}><td><b>{}</b><br><small>{} · {}</small></td><td>{} / {}</td><td>{}</td><td>{} / {}</td><td>{} ({})</td><td>{} ({}/{})</td><td>{}</td><td>{}</td></tr>",
            escape(&c.company),
            escape(&c.name),
            escape(&c.status),
            c.messages_in,
            c.messages_out,
            c.conversations,
            opt_secs(c.response_p50_secs),
            opt_secs(c.response_p90_secs),
            opt_pct(c.handover_rate()),
            c.handovers,
            opt_pct(c.rag_hit_rate()),
            c.rag_hits,
            c.rag_queries,
            c.errors,
            escape(&backup_cell(c, day)),
        );
        if !warnings.is_empty() {
            let _ = write!(
                html,
                "<tr{style}><td colspan=\"8\">⚠ {}</td></tr>",
                escape(&warnings.join("; "))
            );
        }
    }
    html.push_str("</table><h3>New errors</h3>");
    if report.new_errors.is_empty() {
        html.push_str("<p>None: every error kind of the day was seen in the week before.</p>");
    } else {
        html.push_str("<ul>");
        for e in &report.new_errors {
            let _ = write!(
                html,
                "<li><b>{}</b>: {} / {} × {}</li>",
                escape(&e.client),
                escape(&e.stage),
                escape(&e.error_type),
                e.count
            );
        }
        html.push_str("</ul>");
    }
    html.push_str("</body></html>");
    (subject, text, html)
}

/// Sends the report over SMTP (lettre's URL: `smtps://user:pass@host:465`,
/// `smtp://user:pass@host:587?tls=required` for STARTTLS, `smtp://host:25`
/// for a relay on the same network).
pub async fn send(
    smtp_url: &str,
    from: &str,
    to: &[String],
    report: &Report,
) -> Result<(), ReportError> {
    let transport = AsyncSmtpTransport::<Tokio1Executor>::from_url(smtp_url)
        // The URL holds the password: report the failure without it or its parse error.
        .map_err(|_| {
            ReportError::Mail("TRUFFLES_SMTP_URL is not a valid smtp:// or smtps:// URL".into())
        })?
        .build();
    let mailbox = |a: &str| {
        a.parse::<Mailbox>()
            .map_err(|e| ReportError::Mail(format!("address {a:?}: {e}")))
    };
    let (subject, text, html) = render(report);
    let mut builder = Message::builder().from(mailbox(from)?).subject(subject);
    for address in to {
        builder = builder.to(mailbox(address)?);
    }
    let message = builder
        .multipart(MultiPart::alternative_plain_html(text, html))
        .map_err(|e| ReportError::Mail(e.to_string()))?;
    transport
        .send(message)
        .await
        .map_err(|e| ReportError::Mail(format!("sending: {e}")))?;
    Ok(())
}

#[derive(clap::Args, Debug)]
pub struct ReportArgs {
    /// The platform database (a role that reads every tenant schema).
    #[arg(long, env = "DATABASE_URL", hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = "TRUFFLES_SMTP_URL", hide_env_values = true)]
    pub smtp_url: String,
    #[arg(long, env = "TRUFFLES_REPORT_FROM")]
    pub from: String,
    /// Recipients, comma-separated.
    #[arg(
        long,
        env = "TRUFFLES_REPORT_TO",
        value_delimiter = ',',
        required = true
    )]
    pub to: Vec<String>,
    /// The day to report (default: yesterday in the platform's time zone).
    #[arg(long)]
    pub date: Option<NaiveDate>,
    /// Offset of the platform's time zone (Kazakhstan: +5).
    #[arg(
        long,
        env = "TRUFFLES_REPORT_UTC_OFFSET_HOURS",
        default_value_t = 5,
        allow_hyphen_values = true
    )]
    pub utc_offset_hours: i32,
}

pub async fn run(args: ReportArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let offset = FixedOffset::east_opt(args.utc_offset_hours * 3600)
        .context("TRUFFLES_REPORT_UTC_OFFSET_HOURS must be between -23 and 23")?;
    let day = match args.date {
        Some(date) => Day::new(date, offset),
        None => Day::yesterday(Utc::now(), offset),
    };
    let pool = PgPool::connect(&args.database_url)
        .await
        .context("connecting to the platform database")?;
    let report = collect(&pool, day).await?;
    send(&args.smtp_url, &args.from, &args.to, &report).await?;
    println!(
        "report for {} sent to {} recipient(s): {} clients",
        day.date,
        args.to.len(),
        report.clients.len()
    );
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn day() -> Day {
        Day::new(
            NaiveDate::from_ymd_opt(2026, 11, 24).expect("date"),
            FixedOffset::east_opt(5 * 3600).expect("offset"),
        )
    }

    #[test]
    fn a_day_is_midnight_to_midnight_in_almaty() {
        let d = day();
        assert_eq!(d.start.to_rfc3339(), "2026-11-23T19:00:00+00:00");
        assert_eq!(d.end - d.start, Duration::days(1));
        let now = "2026-11-25T02:00:00Z"
            .parse::<DateTime<Utc>>()
            .expect("time");
        assert_eq!(
            Day::yesterday(now, FixedOffset::east_opt(5 * 3600).expect("offset")),
            d
        );
    }

    #[test]
    fn thresholds_and_missing_backups_are_flagged() {
        let d = day();
        let healthy = ClientStats {
            name: "flower-shop".into(),
            conversations: 10,
            handovers: 2,
            rag_queries: 10,
            rag_hits: 8,
            messages_in: 40,
            errors: 1,
            response_p90_secs: Some(3.0),
            last_backup: Some((d.end - Duration::hours(3), 4096)),
            ..ClientStats::default()
        };
        assert!(
            healthy.warnings(&d).is_empty(),
            "{:?}",
            healthy.warnings(&d)
        );
        let struggling = ClientStats {
            handovers: 4,
            rag_hits: 4,
            errors: 3,
            response_p90_secs: Some(12.0),
            last_backup: None,
            ..healthy.clone()
        };
        assert_eq!(
            struggling.warnings(&d),
            vec![
                "handover rate 40%",
                "knowledge hit rate 40%",
                "error rate 8%",
                "p90 response over 10 s",
                "no backup in the last day"
            ]
        );
        // An idle client divides by nothing.
        assert!(ClientStats::default().handover_rate().is_none());
    }

    #[test]
    fn the_html_escapes_what_clients_named() {
        let report = Report {
            day: day(),
            clients: vec![ClientStats {
                name: "shop".into(),
                company: "<script>Roses & Co</script>".into(),
                ..ClientStats::default()
            }],
            new_errors: vec![],
        };
        let (subject, text, html) = render(&report);
        assert!(subject.contains("2026-11-24") && subject.contains("1 clients"));
        assert!(text.contains("<script>Roses & Co</script>"));
        assert!(html.contains("&lt;script&gt;Roses &amp; Co") && !html.contains("<script>"));
    }
}
