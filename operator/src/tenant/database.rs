//! Provisioning step: the client's platform record, its schema and role
//! (only when behind), the config-change audit and its backup data key.

use kube::ResourceExt;
use kube::runtime::events::EventType;
use truffles_crds::TrufflesClient;
use truffles_crds::common::condition_type;
use truffles_migrations::TenantDb;

use super::context::Context;
use super::custody::{self, InSecret, Kept};
use super::dereference;
use super::error::Error;
use super::keys;
use super::platform::{self};
use super::publish::publish;

/// What the database step hands to the build.
pub struct Provisioned {
    pub client_id: uuid::Uuid,
    /// The tenant's backup data key (64 hex characters).
    pub backup_key: String,
    /// The tenant's credentials, as the platform keeps them.
    pub credentials: Kept,
}

/// The client's record (created or updated from the spec), its credentials
/// (see [`custody`]; the runtime Secret is read only when custody lacks
/// one), its schema and role when they are behind, and its backup data key.
pub async fn provision(
    tc: &TrufflesClient,
    ctx: &Context,
    tenant: &TenantDb,
) -> Result<Provisioned, Error> {
    let name = tc.name_any();
    let ns = tc.namespace().unwrap_or_default();
    let config = serde_json::to_value(&tc.spec).map_err(|e| Error::InvalidSpec(e.to_string()))?;
    let record = platform::upsert_client(
        &ctx.pool,
        &name,
        &ns,
        &tc.spec.company_name,
        &tenant.schema,
        &config,
    )
    .await?;
    let master = &ctx.settings.backup_master_key;
    let kept = custody::load(&ctx.pool, record.id, master).await?;
    // A tenant from before custody, or a Secret restored by hand: only then
    // is the runtime Secret read (a GET per reconcile otherwise).
    let in_secret = if custody::needs_secret(kept.as_ref()) {
        dereference::in_secret(ctx, &ns, &name).await?
    } else {
        InSecret::default()
    };
    let requests = custody::rotation_requests(tc.annotations());
    // Only a tenant whose PII key is nowhere needs to know (a catalog query).
    let key_known =
        kept.as_ref().is_some_and(|k| !k.pii_key.is_empty()) || in_secret.pii_key.is_some();
    let schema_exists = !key_known && super::platform::schema_exists(&ctx.pool, tenant).await?;
    let now = k8s_openapi::jiff::Timestamp::now().as_second();
    let decision = custody::decide(kept, in_secret, schema_exists, &requests, now)?;
    // Stored before the role gets a new password: a crash in between leaves
    // the password the role will be given, never one nobody knows.
    if decision.store {
        custody::store(&ctx.pool, record.id, master, &decision.kept).await?;
    }
    let credentials = decision.kept;
    // Provisioning takes catalog locks (roles, grants, DDL): do it only when the
    // schema is behind, the password is new, or it never completed.
    let provisioned = tc.status.as_ref().is_some_and(|s| {
        s.conditions
            .iter()
            .any(|c| c.type_ == condition_type::DATABASE_READY && c.status == "True")
    });
    if decision.new_password
        || !provisioned
        || !truffles_migrations::tenant_is_current(&ctx.pool, tenant).await?
    {
        // Closed only if the Context is dropped, which ends the controller anyway.
        let _permit = ctx
            .provisioning
            .acquire()
            .await
            .map_err(|_| Error::InvalidSpec("operator shutting down".into()))?;
        truffles_migrations::provision_tenant(&ctx.pool, tenant, &credentials.db_password).await?;
        platform::copy_prompt_templates(&ctx.pool, tenant).await?;
    }
    if !record.created && !record.changed_fields.is_empty() {
        let details = serde_json::json!({"changed": record.changed_fields, "generation": tc.metadata.generation});
        platform::audit(&ctx.pool, record.id, "config_change", details).await?;
        publish(
            ctx,
            tc,
            EventType::Normal,
            "ConfigChanged",
            &format!("changed: {}", record.changed_fields.join(", ")),
        )
        .await;
    }
    let backup_key =
        keys::ensure_data_key(&ctx.pool, record.id, &ctx.settings.backup_master_key).await?;
    Ok(Provisioned {
        client_id: record.id,
        backup_key,
        credentials,
    })
}

pub fn tenant_database_url(ctx: &Context, tenant: &TenantDb, password: &str) -> String {
    let (host, port) = ctx
        .settings
        .tenant_database_host
        .clone()
        .unwrap_or_else(|| (ctx.database.get_host().to_owned(), ctx.database.get_port()));
    let database = ctx.database.get_database().unwrap_or("truffles_platform");
    database_url(
        &host,
        port,
        database,
        &tenant.role,
        password,
        &ctx.settings.tenant_database_tls,
    )
}

/// The platform's URL query settings a tenant's connection keeps: its TLS
/// mode and CA (never the platform's client certificate).
pub const TLS_PARAMS: [&str; 2] = ["sslmode", "sslrootcert"];

/// The TLS settings of the platform's DATABASE_URL, for the tenants' URLs.
pub fn tls_params(platform_url: &str) -> Vec<(String, String)> {
    url::Url::parse(platform_url)
        .map(|u| {
            u.query_pairs()
                .filter(|(k, _)| TLS_PARAMS.contains(&k.as_ref()))
                .map(|(k, v)| (k.into_owned(), v.into_owned()))
                .collect()
        })
        .unwrap_or_default()
}

fn database_url(
    host: &str,
    port: u16,
    database: &str,
    role: &str,
    password: &str,
    tls: &[(String, String)],
) -> String {
    let mut url = format!("postgres://{role}:{password}@{host}:{port}/{database}");
    if !tls.is_empty() {
        let query = url::form_urlencoded::Serializer::new(String::new())
            .extend_pairs(tls)
            .finish();
        url.push('?');
        url.push_str(&query);
    }
    url
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_url_keeps_the_platforms_tls_and_nothing_else() {
        let tls = tls_params(
            "postgres://admin:pw@db:5432/p?sslmode=verify-full&sslrootcert=/etc/ca.pem&sslcert=/etc/admin.crt&application_name=op",
        );
        assert_eq!(
            database_url("db", 5432, "p", "tenant_a", "s3", &tls),
            "postgres://tenant_a:s3@db:5432/p?sslmode=verify-full&sslrootcert=%2Fetc%2Fca.pem"
        );
        assert_eq!(
            database_url(
                "db",
                5432,
                "p",
                "tenant_a",
                "s3",
                &tls_params("postgres://db/p")
            ),
            "postgres://tenant_a:s3@db:5432/p"
        );
    }
}
