//! The contract between the operator and the runtime it deploys: the
//! environment variables the operator renders into a tenant's pods, where it
//! mounts files, and the port the runtime serves. Both crates spell them only
//! here; `tests/tests/integration/contract.rs` checks that the runtime reads
//! every variable the operator renders and the operator renders every one the
//! runtime requires.

/// Environment variables of a tenant's pods (the runtime and its CronJobs).
pub mod env {
    // The runtime ConfigMap (`envFrom`).
    pub const CLIENT_NAME: &str = "TRUFFLES_CLIENT_NAME";
    pub const CONFIG_FILE: &str = "TRUFFLES_CONFIG_FILE";
    /// Read by `tracing-subscriber`'s filter, not by an argument.
    pub const LOG_FILTER: &str = "RUST_LOG";
    pub const PUBLIC_URL: &str = "TRUFFLES_PUBLIC_URL";
    /// Special ranges (loopback, private…) the guarded fetcher may reach
    /// anyway, comma-separated CIDRs; absent: none.
    pub const FETCH_ALLOW_CIDRS: &str = "TRUFFLES_FETCH_ALLOW_CIDRS";

    // The runtime Secret the operator generates (`envFrom`).
    pub const DATABASE_URL: &str = "DATABASE_URL";
    pub const WEBHOOK_SECRET: &str = "TRUFFLES_WEBHOOK_SECRET";
    /// A rotated webhook secret, accepted until `…_UNTIL` (Unix seconds).
    pub const WEBHOOK_SECRET_PREVIOUS: &str = "TRUFFLES_WEBHOOK_SECRET_PREVIOUS";
    pub const WEBHOOK_SECRET_PREVIOUS_UNTIL: &str = "TRUFFLES_WEBHOOK_SECRET_PREVIOUS_UNTIL";
    /// The bearer of the runtime's admin API (its own port, never in a URL).
    pub const ADMIN_TOKEN: &str = "TRUFFLES_ADMIN_TOKEN";
    pub const ADMIN_TOKEN_PREVIOUS: &str = "TRUFFLES_ADMIN_TOKEN_PREVIOUS";
    pub const ADMIN_TOKEN_PREVIOUS_UNTIL: &str = "TRUFFLES_ADMIN_TOKEN_PREVIOUS_UNTIL";
    pub const PII_KEY: &str = "TRUFFLES_PII_KEY";
    pub const BACKUP_KEY: &str = "TRUFFLES_BACKUP_KEY";
    pub const REDIS_URL: &str = "REDIS_URL";

    // Keys of the Secrets the tenant's spec refers to (`secretKeyRef`).
    pub const CHATFLOW_TOKEN: &str = "CHATFLOW_TOKEN";
    pub const CHATFLOW_SIGNATURE_KEY: &str = "CHATFLOW_SIGNATURE_KEY";
    pub const TELEGRAM_BOT_TOKEN: &str = "TELEGRAM_BOT_TOKEN";
    pub const INSTAGRAM_ACCESS_TOKEN: &str = "INSTAGRAM_ACCESS_TOKEN";
    pub const INSTAGRAM_APP_SECRET: &str = "INSTAGRAM_APP_SECRET";
    pub const INSTAGRAM_VERIFY_TOKEN: &str = "INSTAGRAM_VERIFY_TOKEN";
    pub const OPENAI_API_KEY: &str = "OPENAI_API_KEY";
    pub const QDRANT_API_KEY: &str = "QDRANT_API_KEY";

    // The backup CronJob.
    pub const BACKUP_URL: &str = "TRUFFLES_BACKUP_URL";
    pub const BACKUP_RETENTION_DAYS: &str = "TRUFFLES_BACKUP_RETENTION_DAYS";

    // The backup job's S3 storage: the standard AWS variables, read by
    // object_store (the backup job hands it the process environment).
    pub const AWS_REGION: &str = "AWS_REGION";
    pub const AWS_ENDPOINT: &str = "AWS_ENDPOINT";
    pub const AWS_ALLOW_HTTP: &str = "AWS_ALLOW_HTTP";
    pub const AWS_ACCESS_KEY_ID: &str = "AWS_ACCESS_KEY_ID";
    pub const AWS_SECRET_ACCESS_KEY: &str = "AWS_SECRET_ACCESS_KEY";
    /// Read by a library from the environment, not by an argument.
    pub const READ_BY_LIBRARIES: [&str; 6] = [
        LOG_FILTER,
        AWS_REGION,
        AWS_ENDPOINT,
        AWS_ALLOW_HTTP,
        AWS_ACCESS_KEY_ID,
        AWS_SECRET_ACCESS_KEY,
    ];

    // Where the mounts are, for a process outside a pod (the development
    // supervisor points each at its own copy); the defaults are in [`super::path`].
    pub const DATA_DIR: &str = "TRUFFLES_DATA_DIR";
    pub const KNOWLEDGE_DIR: &str = "TRUFFLES_KNOWLEDGE_DIR";
    pub const SECRETS_DIR: &str = "TRUFFLES_SECRETS_DIR";
}

/// Where the operator mounts what the runtime reads.
pub mod path {
    /// The runtime ConfigMap, mounted whole.
    pub const CONFIG_DIR: &str = "/etc/truffles";
    /// The ConfigMap's key holding the tenant's spec as JSON.
    pub const CONFIG_FILE_KEY: &str = "client.json";
    pub const CONFIG_FILE: &str = "/etc/truffles/client.json";
    /// The runtime's volume (the Qdrant Edge shard lives in `knowledge/`).
    pub const DATA_DIR: &str = "/var/lib/truffles";
    /// The backup CronJob's Filesystem storage.
    pub const BACKUP_DIR: &str = "/var/lib/truffles/backups";
    /// ConfigMap knowledge sources, one folder per source name.
    pub const KNOWLEDGE_DIR: &str = "/etc/truffles/knowledge";
    /// Mounted Secrets, one folder each (below).
    pub const SECRETS_DIR: &str = "/etc/truffles/secrets";
    /// The primary handover adapter's Secret, a file per key.
    pub const HANDOVER_SECRETS: &str = "handover";
    /// The fallback adapter's Secret.
    pub const HANDOVER_FALLBACK_SECRETS: &str = "handover-fallback";
    /// A Google Drive source's service-account key is
    /// `SECRETS_DIR/knowledge/<source>/credentials.json`.
    pub const DRIVE_SECRETS: &str = "knowledge";
    pub const DRIVE_CREDENTIALS_FILE: &str = "credentials.json";

    /// Every path setting of the runtime as (variable, default).
    pub const SETTINGS: [(&str, &str); 4] = [
        (super::env::CONFIG_FILE, CONFIG_FILE),
        (super::env::DATA_DIR, DATA_DIR),
        (super::env::KNOWLEDGE_DIR, KNOWLEDGE_DIR),
        (super::env::SECRETS_DIR, SECRETS_DIR),
    ];
}

/// The runtime's public HTTP port (webhooks, managers' replies, probes,
/// metrics): the one the tenant's Ingress routes to.
pub const RUNTIME_PORT: u16 = 8080;
/// The runtime's admin API (knowledge sync and uploads, person requests):
/// its own Service port, never routed by the Ingress, reached only from the
/// tenant's own CronJobs and the platform's namespace (NetworkPolicy).
pub const ADMIN_PORT: u16 = 8081;
