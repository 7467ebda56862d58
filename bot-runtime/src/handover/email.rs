//! `email`: the handover card and reminders as a readable HTML + text e-mail
//! over SMTP (lettre). Other notices are not e-mailed: managers on e-mail
//! answer the customer directly, and a message per customer line would flood
//! their inbox.

use lettre::message::{Mailbox, MultiPart};
use lettre::transport::smtp::authentication::Credentials;
use lettre::{AsyncSmtpTransport, AsyncTransport, Message, Tokio1Executor};
use serde_json::json;
use truffles_crds::client::{HandoverAdapterType, SmtpTls};

use super::adapter::{
    Adapter, AdapterConfig, AdapterError, CALL_TIMEOUT, Delivered, Delivery, Kind, Notice,
};

pub struct Email {
    transport: AsyncSmtpTransport<Tokio1Executor>,
    from: Mailbox,
    to: Vec<Mailbox>,
}

fn misconfigured(why: String) -> AdapterError {
    AdapterError::Misconfigured {
        adapter: "email",
        why,
    }
}

impl Email {
    pub fn new(config: &AdapterConfig) -> Result<Self, AdapterError> {
        let spec = config
            .spec
            .email
            .as_ref()
            .ok_or_else(|| misconfigured("the adapter has no `email` block".into()))?;
        let builder = match spec.tls {
            SmtpTls::StartTls => {
                AsyncSmtpTransport::<Tokio1Executor>::starttls_relay(&spec.smtp_host)
                    .map_err(|e| misconfigured(format!("smtpHost: {e}")))?
            }
            SmtpTls::Tls => AsyncSmtpTransport::<Tokio1Executor>::relay(&spec.smtp_host)
                .map_err(|e| misconfigured(format!("smtpHost: {e}")))?,
            // Only for a relay on the same network (or tests).
            SmtpTls::None => {
                AsyncSmtpTransport::<Tokio1Executor>::builder_dangerous(spec.smtp_host.clone())
            }
        };
        let mut builder = builder.port(spec.smtp_port).timeout(Some(CALL_TIMEOUT));
        if let (Some(user), Some(password)) = (
            config.secrets.get("username"),
            config.secrets.get("password"),
        ) {
            builder = builder.credentials(Credentials::new(user.clone(), password.clone()));
        }
        let from = spec
            .from
            .parse::<Mailbox>()
            .map_err(|e| misconfigured(format!("from: {e}")))?;
        let to = spec
            .to
            .iter()
            .map(|a| a.parse::<Mailbox>())
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| misconfigured(format!("to: {e}")))?;
        Ok(Self {
            transport: builder.build(),
            from,
            to,
        })
    }

    async fn send(&self, notice: &Notice) -> Result<Delivered, AdapterError> {
        if !matches!(notice.kind, Kind::Card | Kind::Reminder) {
            return Ok(Delivered {
                external_ref: None,
                response: json!({"skipped": notice.kind.as_str()}),
            });
        }
        let (subject, text, html) = compose(notice);
        let mut message = Message::builder()
            .from(self.from.clone())
            .subject(subject)
            .message_id(Some(format!(
                "<{}@truffles>",
                notice.key.replace(['<', '>', '@', ' '], "-")
            )));
        for to in &self.to {
            message = message.to(to.clone());
        }
        let message = message
            .multipart(MultiPart::alternative_plain_html(text, html))
            .map_err(|e| misconfigured(format!("the message: {e}")))?;
        let response =
            self.transport
                .send(message)
                .await
                .map_err(|e| AdapterError::Unreachable {
                    service: "SMTP",
                    why: e.to_string(),
                })?;
        Ok(Delivered {
            external_ref: None,
            response: json!({"smtp_code": response.code().to_string()}),
        })
    }
}

impl Adapter for Email {
    fn kind(&self) -> HandoverAdapterType {
        HandoverAdapterType::Email
    }
    fn deliver<'a>(&'a self, notice: &'a Notice) -> Delivery<'a> {
        Box::pin(self.send(notice))
    }
}

/// Subject, text part and HTML part of a notice.
pub fn compose(notice: &Notice) -> (String, String, String) {
    let h = &notice.handover;
    let who = h.user_name.as_deref().unwrap_or("Клиент");
    let subject = match notice.kind {
        Kind::Reminder => format!("Напоминание: {who} ждёт менеджера"),
        _ => format!("Клиенту нужен менеджер: {who}"),
    };
    let phone = h
        .phone
        .as_deref()
        .map(|p| format!("+{p}"))
        .unwrap_or_else(|| "—".into());
    let mut text = format!("{}\n\n", notice.card);
    if let Some(extra) = &notice.text {
        text.push_str(&format!("{extra}\n\n"));
    }
    text.push_str(&format!(
        "Клиент: {who}\nТелефон: {phone}\nКанал: {}\nПричина: {}\n\nРазговор:\n{}\n",
        h.channel, h.trigger, h.context
    ));
    let lines: String = h
        .context
        .lines()
        .map(|l| format!("<p style=\"margin:4px 0\">{}</p>", escape(l)))
        .collect();
    let html = format!(
        "<!doctype html><html><body style=\"font-family:sans-serif;max-width:640px\">\
         <h2 style=\"margin:0 0 12px\">{subject}</h2>\
         <p style=\"white-space:pre-wrap\">{card}</p>{extra}\
         <table style=\"border-collapse:collapse\">\
         <tr><td style=\"padding:2px 12px 2px 0;color:#666\">Клиент</td><td>{who}</td></tr>\
         <tr><td style=\"padding:2px 12px 2px 0;color:#666\">Телефон</td><td><a href=\"tel:{phone}\">{phone}</a></td></tr>\
         <tr><td style=\"padding:2px 12px 2px 0;color:#666\">Канал</td><td>{channel}</td></tr>\
         <tr><td style=\"padding:2px 12px 2px 0;color:#666\">Причина</td><td>{trigger}</td></tr>\
         </table><h3>Разговор</h3><div style=\"background:#f5f5f5;padding:8px 12px\">{lines}</div>\
         </body></html>",
        subject = escape(&subject),
        card = escape(&notice.card),
        extra = notice
            .text
            .as_deref()
            .map(|t| format!("<p><b>{}</b></p>", escape(t)))
            .unwrap_or_default(),
        who = escape(who),
        phone = escape(&phone),
        channel = escape(&h.channel),
        trigger = escape(&h.trigger),
    );
    (subject, text, html)
}

/// Customer text goes into HTML: escape what HTML gives meaning to.
fn escape(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    for c in s.chars() {
        match c {
            '&' => out.push_str("&amp;"),
            '<' => out.push_str("&lt;"),
            '>' => out.push_str("&gt;"),
            '"' => out.push_str("&quot;"),
            '\'' => out.push_str("&#39;"),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::handover::adapter::HandoverView;
    use uuid::Uuid;

    #[test]
    fn customer_text_cannot_inject_html() {
        let notice = Notice {
            kind: Kind::Card,
            handover: HandoverView {
                id: Uuid::nil(),
                conversation_id: Uuid::nil(),
                status: "pending".into(),
                trigger: "keyword".into(),
                trigger_value: None,
                context: "Клиент: <script>alert(1)</script>".into(),
                user_name: Some("<b>Ерлан</b>".into()),
                phone: Some("77010000000".into()),
                channel: "whatsapp".into(),
                language: None,
                manager_name: None,
                external_ref: None,
            },
            text: None,
            key: "k".into(),
            card: "Новый клиент".into(),
            reply_url: None,
        };
        let (subject, text, html) = compose(&notice);
        assert!(
            subject.contains("<b>Ерлан</b>"),
            "the subject is plain text"
        );
        assert!(text.contains("<script>"), "the text part is plain text");
        assert!(!html.contains("<script>"));
        assert!(html.contains("&lt;script&gt;"));
        assert!(html.contains("+77010000000"));
    }
}
