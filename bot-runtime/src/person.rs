//! One end user's rights (GDPR; Kazakhstan's law "On personal data"): export
//! everything the tenant holds about a person, or erase it. The person is named
//! by phone number; stored numbers are keyed hashes, so the lookup goes through
//! the tenant's PII key and never through a clear-text column.
//!
//! Erasure reaches the tenant schema (customer, conversations, messages,
//! handovers and the managers' notices, queued and received webhooks, error rows
//! that hold their words or number) and Redis (conversation memory, dedup
//! marks, rate counters) in one pass; the knowledge base holds only the
//! business's documents, nothing learned from customers. Backups made later do
//! not contain the person. Earlier ones do (encrypted) until the retention
//! expires them, so the ids of every erased row are kept in `erased_rows` and a
//! restore leaves those rows out: an old backup never brings the person back.
//! Both requests are audited (`gdpr`) without the person's identity.

use serde_json::{Value, json};
use sqlx::PgPool;
use truffles_crds::contract::env;
use uuid::Uuid;

use crate::cache::Cache;
use crate::pii::{Pii, log_tag};

#[derive(Debug, thiserror::Error)]
pub enum PersonError {
    #[error("{0:?} is not a phone number (digits, optionally with +, spaces, dashes, brackets)")]
    NotAPhone(String),
    #[error("{action}: {source}")]
    Database {
        action: &'static str,
        #[source]
        source: sqlx::Error,
    },
}

/// The tables that hold rows of a person, each with an `id` column; an
/// erasure lists the ids it removed from them in `erased_rows`.
pub const PERSONAL_TABLES: [&str; 8] = [
    "users",
    "conversations",
    "messages",
    "handovers",
    "outbox",
    "manager_outbox",
    "inbox",
    "error_logs",
];

fn failed(action: &'static str) -> impl FnOnce(sqlx::Error) -> PersonError {
    move |source| PersonError::Database { action, source }
}

/// The digits of a phone number as channels write it (`77015550123`); a
/// Kazakh or Russian number written nationally (`8 701 …`) gets its country code.
pub fn normalize_phone(input: &str) -> Result<String, PersonError> {
    let allowed = |c: char| c.is_ascii_digit() || " +-()".contains(c);
    let digits: String = input.chars().filter(char::is_ascii_digit).collect();
    if !input.trim().chars().all(allowed) || !(10..=15).contains(&digits.len()) {
        return Err(PersonError::NotAPhone(input.to_owned()));
    }
    Ok(match digits.strip_prefix('8') {
        Some(national) if digits.len() == 11 => format!("7{national}"),
        _ => digits,
    })
}

/// Who a request is about, as the tenant stores it.
pub struct Subject {
    pub phone: String,
    /// The WhatsApp address (`<phone>@s.whatsapp.net`), as inbox rows hold it.
    pub address: String,
    pub user_ids: Vec<Uuid>,
}

pub async fn find(db: &PgPool, pii: &Pii, phone: &str) -> Result<Subject, PersonError> {
    let phone = normalize_phone(phone)?;
    let address = format!("{phone}@s.whatsapp.net");
    let user_ids = sqlx::query_scalar(
        "SELECT id FROM users WHERE phone_hash = $1 OR remote_jid = $2 ORDER BY created_at",
    )
    .bind(pii.hash(&phone))
    .bind(pii.hash(&address))
    .fetch_all(db)
    .await
    .map_err(failed("finding the person"))?;
    Ok(Subject {
        phone,
        address,
        user_ids,
    })
}

/// A customer with their conversations (JSON), and the encrypted phone and address.
type CustomerRow = (Value, Option<Vec<u8>>, Option<Vec<u8>>);

/// Everything about the person, as one JSON document (phone numbers and
/// addresses decrypted: it is theirs).
/// `actor` names who asked (the admin credential, or `cli`) in the audit row.
pub async fn export(
    db: &PgPool,
    pii: &Pii,
    actor: &str,
    phone: &str,
) -> Result<Value, PersonError> {
    let subject = find(db, pii, phone).await?;
    let rows: Vec<CustomerRow> = sqlx::query_as(
        "SELECT to_jsonb(u) - 'remote_jid' - 'phone_hash' - 'phone_encrypted' - 'address_encrypted'
                || jsonb_build_object('conversations', coalesce((
                     SELECT jsonb_agg(to_jsonb(c) || jsonb_build_object(
                              'messages', coalesce((SELECT jsonb_agg(to_jsonb(m) ORDER BY m.created_at)
                                                    FROM messages m WHERE m.conversation_id = c.id), '[]'),
                              'handovers', coalesce((SELECT jsonb_agg(to_jsonb(h) ORDER BY h.created_at)
                                                     FROM handovers h WHERE h.conversation_id = c.id), '[]'))
                            ORDER BY c.started_at)
                     FROM conversations c WHERE c.user_id = u.id), '[]')),
                u.phone_encrypted, u.address_encrypted
         FROM users u WHERE u.id = ANY($1) ORDER BY u.created_at",
    )
    .bind(&subject.user_ids)
    .fetch_all(db)
    .await
    .map_err(failed("exporting the person's data"))?;
    let customers: Vec<Value> = rows
        .into_iter()
        .map(|(mut user, phone, address)| {
            user["phone"] = json!(phone.as_deref().and_then(|p| pii.decrypt(p).ok()));
            user["address"] = json!(address.as_deref().and_then(|a| pii.decrypt(a).ok()));
            user
        })
        .collect();
    crate::audit::record_by(
        db,
        "gdpr",
        "admin",
        Some(actor),
        json!({"request": "export", "customers": customers.len()}),
    )
    .await
    .map_err(failed("auditing the export"))?;
    Ok(json!({
        "subject": {"phone": subject.phone},
        "exported_at": chrono::Utc::now().to_rfc3339(),
        "customers": customers,
    }))
}

/// What an erasure removed.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct Erased {
    pub customers: u64,
    pub conversations: u64,
    pub messages: u64,
    pub inbox_events: u64,
    pub error_rows: u64,
    /// Their Redis keys are gone (false: Redis was unreachable; the keys
    /// expire by their TTLs, at most a day).
    pub cache_cleared: bool,
}

/// Erases the person in one transaction, then their Redis keys. Idempotent: a
/// second request finds nothing and says so.
pub async fn erase(
    db: &PgPool,
    pii: &Pii,
    cache: &Cache,
    actor: &str,
    phone: &str,
) -> Result<Erased, PersonError> {
    let subject = find(db, pii, phone).await?;
    let mut tx = db.begin().await.map_err(failed("starting the erasure"))?;
    let conversations: Vec<Uuid> =
        sqlx::query_scalar("SELECT id FROM conversations WHERE user_id = ANY($1)")
            .bind(&subject.user_ids)
            .fetch_all(&mut *tx)
            .await
            .map_err(failed("listing the conversations"))?;
    let messages: Vec<(Option<String>, Option<String>)> =
        sqlx::query_as("SELECT external_id, content FROM messages WHERE conversation_id = ANY($1)")
            .bind(&conversations)
            .fetch_all(&mut *tx)
            .await
            .map_err(failed("listing the messages"))?;
    let message_count = messages.len() as u64;
    let (external_ids, texts): (Vec<Option<String>>, Vec<Option<String>>) =
        messages.into_iter().unzip();
    let external_ids: Vec<String> = external_ids.into_iter().flatten().collect();
    let texts: Vec<String> = texts.into_iter().flatten().collect();
    // Every row that goes is listed first, so restores of older backups leave
    // it out; the customer's own rows follow the customer below.
    sqlx::query(
        "INSERT INTO erased_rows (table_name, row_id)
         SELECT 'users', id::text FROM users WHERE id = ANY($1)
         UNION ALL SELECT 'conversations', id::text FROM conversations WHERE id = ANY($2)
         UNION ALL SELECT 'messages', id::text FROM messages WHERE conversation_id = ANY($2)
         UNION ALL SELECT 'handovers', id::text FROM handovers WHERE conversation_id = ANY($2)
         UNION ALL SELECT 'outbox', id::text FROM outbox WHERE conversation_id = ANY($2)
           OR message_id IN (SELECT id FROM messages WHERE conversation_id = ANY($2))
         UNION ALL SELECT 'manager_outbox', n.id::text FROM manager_outbox n
           JOIN handovers h ON h.id = n.handover_id WHERE h.conversation_id = ANY($2)
         ON CONFLICT DO NOTHING",
    )
    .bind(&subject.user_ids)
    .bind(&conversations)
    .execute(&mut *tx)
    .await
    .map_err(failed("listing the erased rows"))?;
    // Raw webhooks carry the number; their rows go whatever their state.
    let inbox_events = sqlx::query(
        "WITH gone AS (DELETE FROM inbox WHERE sender = ANY($1) OR message_id = ANY($2) RETURNING id, message_id),
              replayable AS (INSERT INTO erased_messages (message_hash)
                  SELECT encode(sha256(convert_to(message_id, 'UTF8')), 'hex') FROM gone
                  ON CONFLICT DO NOTHING)
         INSERT INTO erased_rows (table_name, row_id) SELECT 'inbox', id::text FROM gone",
    )
    // The keyed hash, or the address itself in rows from before it was hashed.
    .bind([
        crate::channels::sender_key(pii, crate::channels::Channel::Whatsapp, &subject.address),
        subject.address.clone(),
    ])
    .bind(&external_ids)
    .execute(&mut *tx)
    .await
    .map_err(failed("erasing inbox events"))?
    .rows_affected();
    let error_rows = sqlx::query(
        "WITH gone AS (DELETE FROM error_logs
                       WHERE strpos(message || coalesce(input_data::text, ''), $1) > 0
                          OR input_data->>'query' = ANY($2) RETURNING id)
         INSERT INTO erased_rows (table_name, row_id) SELECT 'error_logs', id::text FROM gone",
    )
    .bind(&subject.phone)
    .bind(&texts)
    .execute(&mut *tx)
    .await
    .map_err(failed("erasing error rows"))?
    .rows_affected();
    // Conversations, messages, handovers, manager notices and queued replies
    // follow the customer (ON DELETE CASCADE).
    let customers = sqlx::query("DELETE FROM users WHERE id = ANY($1)")
        .bind(&subject.user_ids)
        .execute(&mut *tx)
        .await
        .map_err(failed("erasing the customer"))?
        .rows_affected();
    let erased = Erased {
        customers,
        conversations: conversations.len() as u64,
        messages: message_count,
        inbox_events,
        error_rows,
        cache_cleared: false,
    };
    crate::audit::record_by(
        &mut *tx,
        "gdpr",
        "admin",
        Some(actor),
        json!({"request": "erase", "erased": erased}),
    )
    .await
    .map_err(failed("auditing the erasure"))?;
    tx.commit()
        .await
        .map_err(failed("committing the erasure"))?;

    let keys: Vec<String> = conversations
        .iter()
        .map(|c| format!("conversation:{c}"))
        .chain(external_ids.iter().map(|id| format!("dedup:{id}")))
        .chain([format!(
            "rate_limit:user:{}",
            log_tag(pii, &subject.address)
        )])
        .collect();
    let mut cache_cleared = true;
    for key in &keys {
        cache_cleared &= cache.delete(key).await.is_ok();
    }
    Ok(Erased {
        cache_cleared,
        ..erased
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn phone_numbers_are_normalized_or_refused() {
        assert_eq!(
            normalize_phone("+7 (701) 555-01-23").ok().as_deref(),
            Some("77015550123")
        );
        assert_eq!(
            normalize_phone("8 701 555 01 23").ok().as_deref(),
            Some("77015550123")
        );
        assert_eq!(
            normalize_phone("447700900123").ok().as_deref(),
            Some("447700900123")
        );
        assert!(normalize_phone("12345").is_err());
        assert!(normalize_phone("77015550123@s.whatsapp.net").is_err());
        assert!(normalize_phone("'; DROP TABLE users; --").is_err());
    }
}

/// `truffles-bot person export|erase --phone …`: the same requests from a shell
/// in the tenant's pod (or a Job with its runtime Secret).
#[derive(clap::Args, Debug)]
pub struct PersonArgs {
    #[arg(value_parser = ["export", "erase"])]
    pub request: String,
    #[arg(long)]
    pub phone: String,
    #[arg(long, env = env::CLIENT_NAME)]
    pub client_name: String,
    #[arg(long, env = env::DATABASE_URL, hide_env_values = true)]
    pub database_url: String,
    #[arg(long, env = env::PII_KEY, hide_env_values = true)]
    pub pii_key: String,
    #[arg(long, env = env::REDIS_URL, hide_env_values = true)]
    pub redis_url: Option<String>,
}

pub async fn run(args: PersonArgs) -> anyhow::Result<()> {
    use anyhow::Context;
    let pii = Pii::new(&crate::pii::parse_key(&args.pii_key).context("TRUFFLES_PII_KEY")?);
    let db = PgPool::connect(&args.database_url)
        .await
        .context("connecting to the tenant's database")?;
    let out = if args.request == "erase" {
        let cache = Cache::new(&args.client_name, args.redis_url.as_deref())?;
        json!({"erased": erase(&db, &pii, &cache, "cli", &args.phone).await?})
    } else {
        export(&db, &pii, "cli", &args.phone).await?
    };
    println!("{}", serde_json::to_string_pretty(&out)?);
    Ok(())
}
