//! The PostgreSQL schema of Truffles and the provisioning of tenant schemas.
//!
//! - `platform/`: the `platform` schema (clients, subscriptions, billing, prompt
//!   templates, platform audit and error logs, backups, aggregated statistics).
//! - `tenant/`: one tenant's operational data, applied inside the tenant's own
//!   schema. Each tenant has a login role with DML rights on its schema only, so a
//!   tenant runtime cannot read another tenant's rows or the platform tables —
//!   except its own rows of `platform.backups` (row-level security), which its
//!   backup job records.

pub mod collection;

use sqlx::migrate::{MigrateError, Migrator};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use sqlx::{AssertSqlSafe, raw_sql};

/// Migrations of the platform schema.
pub static PLATFORM: Migrator = sqlx::migrate!("./platform");
/// Migrations applied inside every tenant schema.
pub static TENANT: Migrator = sqlx::migrate!("./tenant");

/// The tenant migrator without sqlx's advisory lock. That lock is per database, so
/// it would serialise every tenant's migrations although each touches only its own
/// schema; one tenant is never provisioned twice at once (the operator reconciles an
/// object at a time, and its Deployment runs one replica).
fn tenant_migrator() -> Migrator {
    let mut migrator = sqlx::migrate!("./tenant");
    migrator.set_locking(false);
    migrator
}

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error(
        "invalid tenant name {0:?}: use 1-40 lowercase letters, digits or '-', starting with a letter and not ending with '-'"
    )]
    InvalidTenantName(String),
    #[error("applying the {what} migrations: {source}")]
    Migrate {
        what: String,
        #[source]
        source: MigrateError,
    },
    #[error("{action} for tenant schema {schema}: {source}")]
    Database {
        action: &'static str,
        schema: String,
        #[source]
        source: sqlx::Error,
    },
}

/// Names of a tenant's database objects, derived from the TrufflesClient name.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TenantDb {
    /// Schema holding the tenant's tables.
    pub schema: String,
    /// Login role of the tenant's runtime.
    pub role: String,
}

impl TenantDb {
    /// Derives the schema and role names. The name rule is the CRD's, so every
    /// valid TrufflesClient maps to a distinct, safe SQL identifier
    /// (`-` becomes `_`, which Kubernetes names cannot contain).
    pub fn for_client(name: &str) -> Result<Self, Error> {
        if !is_valid_tenant_name(name) {
            return Err(Error::InvalidTenantName(name.to_owned()));
        }
        let ident = format!("tenant_{}", name.replace('-', "_"));
        Ok(Self {
            schema: ident.clone(),
            role: ident,
        })
    }

    /// Connection options for the tenant's runtime: the platform database as the
    /// tenant's role.
    pub fn connect_options(&self, platform: &PgConnectOptions, password: &str) -> PgConnectOptions {
        platform.clone().username(&self.role).password(password)
    }

    fn db_error(&self, action: &'static str, source: sqlx::Error) -> Error {
        Error::Database {
            action,
            schema: self.schema.clone(),
            source,
        }
    }
}

fn is_valid_tenant_name(name: &str) -> bool {
    let bytes = name.as_bytes();
    (1..=40).contains(&bytes.len())
        && bytes[0].is_ascii_lowercase()
        && bytes.last().is_some_and(|b| *b != b'-')
        && bytes
            .iter()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || *b == b'-')
}

/// Applies the platform migrations (idempotent).
pub async fn migrate_platform(pool: &PgPool) -> Result<(), Error> {
    PLATFORM.run(pool).await.map_err(|source| Error::Migrate {
        what: "platform".into(),
        source,
    })
}

/// Creates (or updates) the tenant's login role, schema, tables and grants.
/// Idempotent: running it again migrates the schema and resets the password.
/// `pool` must connect as a role that may create roles and schemas.
#[tracing::instrument(skip(pool, password), fields(schema = %tenant.schema))]
pub async fn provision_tenant(
    pool: &PgPool,
    tenant: &TenantDb,
    password: &str,
) -> Result<(), Error> {
    let TenantDb { schema, role } = tenant;
    // Identifiers were validated by `for_client`; quoting is belt and braces.
    let create_role = format!(
        r#"DO $$ BEGIN CREATE ROLE "{role}" LOGIN NOINHERIT; EXCEPTION WHEN duplicate_object THEN NULL; END $$"#
    );
    raw_sql(AssertSqlSafe(create_role))
        .execute(pool)
        .await
        .map_err(|e| tenant.db_error("creating the role", e))?;
    // A SCRAM verifier, not the password: the statement may land in the
    // server's log. The server quotes the literal instead of code here.
    let set_password: String = sqlx::query_scalar(
        "SELECT format('ALTER ROLE %I WITH LOGIN PASSWORD %L', $1::text, $2::text)",
    )
    .bind(role)
    .bind(scram_verifier(password))
    .fetch_one(pool)
    .await
    .map_err(|e| tenant.db_error("quoting the password", e))?;
    raw_sql(AssertSqlSafe(set_password))
        .execute(pool)
        .await
        .map_err(|e| tenant.db_error("setting the password", e))?;

    // The schema belongs to the platform's admin role, not the tenant: a runtime
    // can change rows but never drop or alter its tables.
    let create_schema = format!(
        r#"CREATE SCHEMA IF NOT EXISTS "{schema}"; REVOKE ALL ON SCHEMA "{schema}" FROM PUBLIC"#
    );
    raw_sql(AssertSqlSafe(create_schema))
        .execute(pool)
        .await
        .map_err(|e| tenant.db_error("creating the schema", e))?;

    migrate_tenant_schema(pool, tenant).await?;

    let grants = format!(
        r#"GRANT USAGE ON SCHEMA "{schema}" TO "{role}";
        GRANT SELECT, INSERT, UPDATE, DELETE ON ALL TABLES IN SCHEMA "{schema}" TO "{role}";
        GRANT USAGE, SELECT, UPDATE ON ALL SEQUENCES IN SCHEMA "{schema}" TO "{role}";
        REVOKE ALL ON TABLE "{schema}"._sqlx_migrations FROM "{role}";
        ALTER ROLE "{role}" SET search_path = "{schema}";
        GRANT USAGE ON SCHEMA platform TO "{role}";
        GRANT EXECUTE ON FUNCTION platform.session_client_id() TO "{role}";
        GRANT SELECT, INSERT ON platform.backups TO "{role}";
        GRANT UPDATE (deleted_at) ON platform.backups TO "{role}";
        GRANT USAGE ON SEQUENCE platform.backups_id_seq TO "{role}";"#
    );
    raw_sql(AssertSqlSafe(grants))
        .execute(pool)
        .await
        .map_err(|e| tenant.db_error("granting privileges", e))?;
    Ok(())
}

/// The statistics views PostgreSQL grants to everyone: other tenants' table
/// names and row counts.
pub const STATISTICS_VIEWS: [&str; 10] = [
    "pg_stat_all_tables",
    "pg_stat_user_tables",
    "pg_stat_xact_all_tables",
    "pg_stat_xact_user_tables",
    "pg_statio_all_tables",
    "pg_statio_user_tables",
    "pg_stat_all_indexes",
    "pg_stat_user_indexes",
    "pg_statio_all_indexes",
    "pg_statio_user_indexes",
];

/// Takes the statistics views away from PUBLIC, so a tenant role cannot read
/// other tenants' table statistics. Needs the views' owner (a superuser): the
/// operator tries it at start and, refused, logs the statement for a DBA.
pub async fn restrict_statistics(pool: &PgPool) -> Result<(), sqlx::Error> {
    let views = STATISTICS_VIEWS
        .iter()
        .map(|v| format!("pg_catalog.{v}"))
        .collect::<Vec<_>>()
        .join(", ");
    raw_sql(AssertSqlSafe(format!(
        "REVOKE SELECT ON {views} FROM PUBLIC"
    )))
    .execute(pool)
    .await?;
    Ok(())
}

/// PostgreSQL's stored form of a SCRAM-SHA-256 password (RFC 5802/7677):
/// `SCRAM-SHA-256$<iterations>:<salt>$<StoredKey>:<ServerKey>`. Given this,
/// the server keeps it as is and never sees the password.
pub fn scram_verifier(password: &str) -> String {
    use base64::Engine;
    use hmac::{Hmac, Mac};
    use sha2::{Digest, Sha256};
    const ITERATIONS: u32 = 4096;
    let mut salt = [0u8; 16];
    getrandom::fill(&mut salt).expect("the operating system's random source is available");
    let mut salted = [0u8; 32];
    pbkdf2::pbkdf2_hmac::<Sha256>(password.as_bytes(), &salt, ITERATIONS, &mut salted);
    let mac = |key: &[u8], text: &[u8]| {
        let mut m = <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key");
        m.update(text);
        m.finalize().into_bytes()
    };
    let client_key = mac(&salted, b"Client Key");
    let stored_key = Sha256::digest(client_key);
    let server_key = mac(&salted, b"Server Key");
    let b64 = |b: &[u8]| base64::engine::general_purpose::STANDARD.encode(b);
    format!(
        "SCRAM-SHA-256${ITERATIONS}:{}${}:{}",
        b64(&salt),
        b64(&stored_key),
        b64(&server_key)
    )
}

/// Runs the tenant migrations inside the tenant schema. sqlx keeps its
/// `_sqlx_migrations` table in the first schema of the search path, so each tenant
/// schema tracks its own migration state.
async fn migrate_tenant_schema(pool: &PgPool, tenant: &TenantDb) -> Result<(), Error> {
    // A one-connection pool of its own: the search_path must not leak into `pool`.
    // (Running on a bare connection makes the future fail rustc's higher-ranked
    // `Send` check inside sqlx's `Acquire`, so the operator could not spawn it.)
    let options = (*pool.connect_options())
        .clone()
        .options([("search_path", tenant.schema.as_str())]);
    let schema_pool = PgPoolOptions::new()
        .max_connections(1)
        .connect_with(options)
        .await
        .map_err(|e| tenant.db_error("connecting", e))?;
    let result = tenant_migrator()
        .run(&schema_pool)
        .await
        .map_err(|source| Error::Migrate {
            what: format!("tenant {}", tenant.schema),
            source,
        });
    schema_pool.close().await;
    result
}

/// Whether the tenant schema has every tenant migration applied (a cheap check
/// that lets callers skip `provision_tenant`).
pub async fn tenant_is_current(pool: &PgPool, tenant: &TenantDb) -> Result<bool, Error> {
    let latest = TENANT.iter().map(|m| m.version).max().unwrap_or(0);
    let table = format!(r#""{}"._sqlx_migrations"#, tenant.schema);
    let exists: bool = sqlx::query_scalar("SELECT to_regclass($1) IS NOT NULL")
        .bind(&table)
        .fetch_one(pool)
        .await
        .map_err(|e| tenant.db_error("reading the migration state", e))?;
    if !exists {
        return Ok(false);
    }
    let applied: Option<i64> = sqlx::query_scalar(AssertSqlSafe(format!(
        "SELECT max(version) FROM {table} WHERE success"
    )))
    .fetch_one(pool)
    .await
    .map_err(|e| tenant.db_error("reading the migration state", e))?;
    Ok(applied == Some(latest))
}

/// Stops the tenant's role from logging in (its runtime is gone, its data retained).
/// `provision_tenant` enables it again.
pub async fn disable_login(pool: &PgPool, tenant: &TenantDb) -> Result<(), Error> {
    let sql = format!(
        r#"DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN ALTER ROLE "{role}" NOLOGIN; END IF;
        END $$;"#,
        role = tenant.role
    );
    raw_sql(AssertSqlSafe(sql))
        .execute(pool)
        .await
        .map_err(|e| tenant.db_error("disabling login", e))?;
    Ok(())
}

/// Drops the tenant's schema with all its data, and its role. Irreversible: the
/// operator calls it only for a confirmed purge.
#[tracing::instrument(skip(pool), fields(schema = %tenant.schema))]
pub async fn drop_tenant(pool: &PgPool, tenant: &TenantDb) -> Result<(), Error> {
    let TenantDb { schema, role } = tenant;
    let drop = format!(
        r#"DROP SCHEMA IF EXISTS "{schema}" CASCADE;
        DO $$ BEGIN
            IF EXISTS (SELECT FROM pg_roles WHERE rolname = '{role}') THEN
                DROP OWNED BY "{role}";
                DROP ROLE "{role}";
            END IF;
        END $$;"#
    );
    raw_sql(AssertSqlSafe(drop))
        .execute(pool)
        .await
        .map_err(|e| tenant.db_error("dropping", e))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tenant_names_map_to_identifiers() {
        let db = TenantDb::for_client("flower-shop").expect("valid name");
        assert_eq!(db.schema, "tenant_flower_shop");
        assert_eq!(db.role, "tenant_flower_shop");
    }

    #[test]
    fn unsafe_names_are_rejected() {
        for name in [
            "",
            "Flower",
            "1shop",
            "shop-",
            "a\"; DROP TABLE x; --",
            "shop_1",
            &"a".repeat(41),
        ] {
            assert!(
                matches!(TenantDb::for_client(name), Err(Error::InvalidTenantName(_))),
                "{name:?} should be rejected"
            );
        }
    }

    #[test]
    fn longest_valid_name_fits_a_postgres_identifier() {
        let db = TenantDb::for_client(&"a".repeat(40)).expect("valid name");
        assert!(
            db.schema.len() <= 63,
            "PostgreSQL truncates identifiers past 63 bytes"
        );
    }

    #[test]
    fn both_migration_sets_are_embedded() {
        assert!(PLATFORM.iter().count() >= 2);
        assert!(TENANT.iter().count() >= 1);
    }
}
