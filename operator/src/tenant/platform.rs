//! The tenant's rows in the platform schema: the client record, its prompts, the
//! audit trail of configuration changes, and the archive kept after a purge.

use serde_json::Value;
use sqlx::PgPool;
use truffles_migrations::TenantDb;
use uuid::Uuid;

#[derive(Debug, thiserror::Error)]
pub enum PlatformError {
    #[error(
        "the client name {name} is already used in namespace {namespace}; tenant names are unique across the cluster"
    )]
    NameTaken { name: String, namespace: String },
    #[error("platform database: {0}")]
    Database(#[from] sqlx::Error),
    #[error(transparent)]
    Provisioning(#[from] truffles_migrations::Error),
}

/// Status values of `platform.clients`.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ClientStatus {
    Onboarding,
    Active,
    Suspended,
    Deleted,
}

impl ClientStatus {
    fn as_str(self) -> &'static str {
        match self {
            Self::Onboarding => "onboarding",
            Self::Active => "active",
            Self::Suspended => "suspended",
            Self::Deleted => "deleted",
        }
    }
}

/// The client row after an upsert.
pub struct ClientRecord {
    pub id: Uuid,
    /// Top-level spec fields that differ from the previously stored config.
    pub changed_fields: Vec<String>,
    pub created: bool,
}

/// Creates or updates the client row. A name already held by another namespace is
/// refused rather than silently sharing a schema.
pub async fn upsert_client(
    pool: &PgPool,
    name: &str,
    namespace: &str,
    company_name: &str,
    schema: &str,
    config: &Value,
) -> Result<ClientRecord, PlatformError> {
    let mut tx = pool.begin().await?;
    let existing: Option<(Uuid, String, Value)> = sqlx::query_as(
        "SELECT id, namespace, config FROM platform.clients WHERE name = $1 FOR UPDATE",
    )
    .bind(name)
    .fetch_optional(&mut *tx)
    .await?;
    let record = match existing {
        Some((_, other_ns, _)) if other_ns != namespace => {
            return Err(PlatformError::NameTaken {
                name: name.into(),
                namespace: other_ns,
            });
        }
        Some((id, _, previous)) => {
            sqlx::query(
                "UPDATE platform.clients SET company_name = $2, config = $3, updated_at = now(), deleted_at = NULL,
                 status = CASE WHEN status = 'deleted' THEN 'onboarding' ELSE status END WHERE id = $1",
            )
            .bind(id)
            .bind(company_name)
            .bind(config)
            .execute(&mut *tx)
            .await?;
            ClientRecord {
                id,
                changed_fields: changed_fields(&previous, config),
                created: false,
            }
        }
        None => {
            let id: Uuid = sqlx::query_scalar(
                "INSERT INTO platform.clients (name, namespace, company_name, schema_name, config)
                 VALUES ($1, $2, $3, $4, $5) RETURNING id",
            )
            .bind(name)
            .bind(namespace)
            .bind(company_name)
            .bind(schema)
            .bind(config)
            .fetch_one(&mut *tx)
            .await?;
            ClientRecord {
                id,
                changed_fields: Vec::new(),
                created: true,
            }
        }
    };
    tx.commit().await?;
    Ok(record)
}

/// Top-level keys whose values differ (what the audit log records; the spec holds
/// no secret values, only references).
pub fn changed_fields(previous: &Value, current: &Value) -> Vec<String> {
    let empty = serde_json::Map::new();
    let prev = previous.as_object().unwrap_or(&empty);
    let curr = current.as_object().unwrap_or(&empty);
    let mut keys: Vec<String> = prev
        .keys()
        .chain(curr.keys())
        .filter(|k| prev.get(*k) != curr.get(*k))
        .cloned()
        .collect();
    keys.sort();
    keys.dedup();
    keys
}

pub async fn set_status(
    pool: &PgPool,
    id: Uuid,
    status: ClientStatus,
) -> Result<(), PlatformError> {
    sqlx::query(
        "UPDATE platform.clients SET status = $2, updated_at = now(),
         deleted_at = CASE WHEN $2 = 'deleted' THEN now() ELSE NULL END
         WHERE id = $1 AND status IS DISTINCT FROM $2",
    )
    .bind(id)
    .bind(status.as_str())
    .execute(pool)
    .await?;
    Ok(())
}

/// Copies the active global prompt templates into the tenant's schema. Templates the
/// tenant already has are kept; the spec's overrides are read by the runtime.
pub async fn copy_prompt_templates(pool: &PgPool, tenant: &TenantDb) -> Result<u64, PlatformError> {
    let sql = format!(
        r#"INSERT INTO "{}".prompts (name, text, model, temperature)
           SELECT name, text, model, temperature FROM platform.prompts WHERE client_id IS NULL AND is_active
           ON CONFLICT (name, version) DO NOTHING"#,
        tenant.schema
    );
    Ok(sqlx::query(sqlx::AssertSqlSafe(sql))
        .execute(pool)
        .await?
        .rows_affected())
}

pub async fn audit(
    pool: &PgPool,
    client_id: Uuid,
    action: &str,
    details: Value,
) -> Result<(), PlatformError> {
    sqlx::query("INSERT INTO platform.audit_log (client_id, action, actor, details) VALUES ($1, $2, 'system', $3)")
        .bind(client_id)
        .bind(action)
        .bind(details)
        .execute(pool)
        .await?;
    Ok(())
}

/// Aggregates the tenant's messages per day into `platform.daily_stats` (no PII), so
/// the statistics outlive a purge.
pub async fn archive_statistics(
    pool: &PgPool,
    client_id: Uuid,
    name: &str,
    tenant: &TenantDb,
) -> Result<(), PlatformError> {
    let sql = format!(
        r#"INSERT INTO platform.daily_stats (client_id, client_name, day, messages_in, messages_out, conversations, handovers)
           SELECT $1, $2, d.day,
                  count(*) FILTER (WHERE m.role = 'user'),
                  count(*) FILTER (WHERE m.role IN ('assistant', 'manager')),
                  count(DISTINCT m.conversation_id),
                  (SELECT count(*) FROM "{s}".handovers h WHERE h.created_at::date = d.day)
           FROM "{s}".messages m CROSS JOIN LATERAL (SELECT m.created_at::date AS day) d
           GROUP BY d.day
           ON CONFLICT (client_id, day) DO UPDATE SET
               messages_in = EXCLUDED.messages_in, messages_out = EXCLUDED.messages_out,
               conversations = EXCLUDED.conversations, handovers = EXCLUDED.handovers"#,
        s = tenant.schema
    );
    sqlx::query(sqlx::AssertSqlSafe(sql))
        .bind(client_id)
        .bind(name)
        .execute(pool)
        .await?;
    Ok(())
}

/// Whether the tenant's schema still exists (a purge is verified by its absence).
pub async fn schema_exists(pool: &PgPool, tenant: &TenantDb) -> Result<bool, PlatformError> {
    Ok(
        sqlx::query_scalar("SELECT EXISTS (SELECT FROM pg_namespace WHERE nspname = $1)")
            .bind(&tenant.schema)
            .fetch_one(pool)
            .await?,
    )
}

/// Removes the tenant's kept keys: without them its backups and any copy of
/// its phone numbers are unreadable.
pub async fn shred_keys(pool: &PgPool, client_id: Uuid) -> Result<(), PlatformError> {
    sqlx::query(
        "WITH credentials AS (DELETE FROM platform.tenant_credentials WHERE client_id = $1)
         DELETE FROM platform.tenant_keys WHERE client_id = $1",
    )
    .bind(client_id)
    .execute(pool)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn changed_fields_lists_top_level_differences() {
        let before = json!({"companyName": "A", "llm": {"model": "x"}, "state": "Active"});
        let after = json!({"companyName": "A", "llm": {"model": "y"}, "backup": {}});
        assert_eq!(
            changed_fields(&before, &after),
            vec!["backup", "llm", "state"]
        );
        assert!(changed_fields(&after, &after).is_empty());
    }
}
