//! Sending replies (docs/architecture.md, "How a message flows"): the outbox row is written with the decision,
//! then sent here through the conversation's channel with retries and
//! exponential backoff. The idempotency key (the customer's message id) is
//! ChatFlow's `msg_id`, so a retry after a lost response does not message the
//! customer twice. A reply longer than the channel allows goes in parts, and
//! the row remembers how many went out.

//!
//! `mod.rs` queues (the pipeline and the handover write here, inside their own
//! transactions); `sender.rs` is the loop that delivers.

pub mod sender;

use anyhow::Result;

use crate::channels::{self, Channel, Outgoing};
use crate::pii::Pii;

/// Who a reply goes to: the channel and its address (sealed at rest).
#[derive(Clone, Copy, Debug)]
pub struct Recipient<'a> {
    pub channel: Channel,
    pub address: &'a str,
}

/// Queues `message` for `to`. The customer's message id is the idempotency
/// key: queueing twice sends once.
pub async fn queue<'e>(
    db: impl sqlx::PgExecutor<'e>,
    pii: &Pii,
    conversation_id: Option<uuid::Uuid>,
    message_id: Option<uuid::Uuid>,
    to: Recipient<'_>,
    message: &Outgoing,
    idempotency_key: &str,
) -> Result<()> {
    sqlx::query(
        "INSERT INTO outbox (conversation_id, message_id, channel, recipient, payload, idempotency_key)
         VALUES ($1, $2, $6, $3, $4, $5) ON CONFLICT (idempotency_key) DO NOTHING",
    )
    .bind(conversation_id)
    .bind(message_id)
    .bind(pii.seal_address(to.address))
    // Stored as sent: the channel's echo of it is then recognised by its text.
    .bind(serde_json::to_value(formatted(to.channel, message))?)
    .bind(idempotency_key)
    .bind(to.channel.as_str())
    .execute(db)
    .await?;
    Ok(())
}

fn formatted(channel: Channel, message: &Outgoing) -> Outgoing {
    match message {
        Outgoing::Text { text } => Outgoing::Text {
            text: channels::format(channel, text),
        },
    }
}

/// The idempotency key of part `index` (0-based) of a reply.
pub(crate) fn part_key(key: &str, index: usize) -> String {
    if index == 0 {
        key.to_owned()
    } else {
        format!("{key}#{}", index + 1)
    }
}

/// Backoff before attempt `attempts + 1`: 2, 4, 8 … seconds, at most 5 minutes.
pub fn backoff_seconds(attempts: i32) -> f64 {
    2f64.powi(attempts.clamp(1, 9)).min(300.0)
}

#[cfg(test)]
mod tests {
    #[test]
    fn backoff_grows_exponentially_and_is_capped() {
        let seconds: Vec<f64> = (1..=10).map(super::backoff_seconds).collect();
        assert_eq!(&seconds[..4], &[2.0, 4.0, 8.0, 16.0]);
        assert!(seconds.windows(2).all(|w| w[0] <= w[1]));
        assert_eq!(seconds[9], 300.0);
    }
}
