//! What can go wrong in a reconcile, and how soon it is retried.
use std::time::Duration;

use super::custody;
use super::keys;
use super::platform::PlatformError;
use super::validate::InvalidSpec;

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("invalid spec: {0}")]
    InvalidSpec(String),
    #[error(
        "Secret {name} (key {key}) referenced by the spec is missing: create it in namespace {namespace}"
    )]
    MissingSecret {
        namespace: String,
        name: String,
        key: String,
    },
    #[error(transparent)]
    Platform(#[from] PlatformError),
    #[error("Kubernetes API: {0}")]
    Kube(#[from] kube::Error),
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error(transparent)]
    VectorStore(#[from] truffles_migrations::collection::CollectionError),
    #[error(transparent)]
    BackupKey(#[from] keys::KeyError),
    #[error(transparent)]
    Custody(#[from] custody::CustodyError),
    #[error("finalizer: {0}")]
    Finalizer(#[source] Box<kube::runtime::finalizer::Error<Error>>),
}

impl Error {
    /// A CamelCase reason for conditions, Events and metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            Error::InvalidSpec(_) => "InvalidSpec",
            Error::MissingSecret { .. } => "SecretMissing",
            Error::Platform(PlatformError::NameTaken { .. }) => "NameTaken",
            Error::Platform(_) => "DatabaseUnavailable",
            Error::Kube(_) => "KubernetesApiError",
            Error::Redis(_) => "RedisUnavailable",
            Error::VectorStore(truffles_migrations::collection::CollectionError::WrongSize {
                ..
            }) => "VectorStoreMismatch",
            Error::VectorStore(_) => "VectorStoreUnavailable",
            Error::BackupKey(keys::KeyError::Database(_)) => "DatabaseUnavailable",
            Error::BackupKey(_) => "BackupKeyUnavailable",
            Error::Custody(custody::CustodyError::PiiKeyLost { .. }) => "CredentialsLost",
            Error::Custody(custody::CustodyError::Key(keys::KeyError::Database(_))) => {
                "DatabaseUnavailable"
            }
            Error::Custody(_) => "CredentialsUnavailable",
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner.reason(),
                _ => "FinalizerFailed",
            },
        }
    }
}

impl Error {
    /// The error of the reconcile step itself, unwrapped from the finalizer's.
    pub fn inner(&self) -> &Error {
        match self {
            Error::Finalizer(e) => match e.as_ref() {
                kube::runtime::finalizer::Error::ApplyFailed(inner)
                | kube::runtime::finalizer::Error::CleanupFailed(inner) => inner,
                _ => self,
            },
            other => other,
        }
    }
}

impl From<InvalidSpec> for Error {
    fn from(e: InvalidSpec) -> Self {
        Error::InvalidSpec(e.0)
    }
}

impl From<truffles_migrations::Error> for Error {
    fn from(e: truffles_migrations::Error) -> Self {
        match e {
            truffles_migrations::Error::InvalidTenantName(_) => Error::InvalidSpec(e.to_string()),
            other => Error::Platform(PlatformError::Provisioning(other)),
        }
    }
}

/// Invalid specs and missing Secrets wait for a person; outages retry sooner.
pub fn retry_delay(error: &Error) -> Duration {
    let base = match error {
        Error::InvalidSpec(_)
        | Error::Custody(custody::CustodyError::PiiKeyLost { .. })
        | Error::Platform(PlatformError::NameTaken { .. })
        | Error::VectorStore(truffles_migrations::collection::CollectionError::WrongSize {
            ..
        }) => 300,
        Error::MissingSecret { .. } => 10,
        Error::Kube(kube::Error::Api(s)) if s.code == 429 => 60,
        _ => 10,
    };
    // Jitter spreads retries of many tenants failing at once (a database outage).
    let jitter = u64::from(std::process::id() ^ rand_u32()) % (base / 5 + 1);
    Duration::from_secs(base + jitter)
}

fn rand_u32() -> u32 {
    let mut b = [0u8; 4];
    getrandom::fill(&mut b)
        .map(|_| u32::from_le_bytes(b))
        .unwrap_or(0)
}
