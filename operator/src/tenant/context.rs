//! The controller's settings and shared state.

use kube::Client;
use kube::runtime::events::{Recorder, Reporter};
use sqlx::PgPool;
use sqlx::postgres::PgConnectOptions;

use super::build::network::NetworkSettings;
use super::keys;
use super::validate::Boundary;

/// Field manager of everything the operator applies.
pub const FIELD_MANAGER: &str = "truffles-operator";
/// Finalizer for what ownerReferences cannot clean up (database schema and role).
pub const FINALIZER: &str = "truffles.kz/cleanup";

/// Operator settings, loaded once at start.
#[derive(Clone, Debug)]
pub struct Settings {
    /// Image of truffles-bot used when a spec names none.
    pub default_image: String,
    /// Host (and port) tenant runtimes use to reach PostgreSQL, when it differs
    /// from the operator's (e.g. a cluster Service name).
    pub tenant_database_host: Option<(String, u16)>,
    /// Watch one namespace only (tests, or a tenant namespace per operator).
    pub namespace: Option<String>,
    /// Redis URL handed to tenant runtimes (none: they run without Redis).
    pub runtime_redis_url: Option<String>,
    /// Wraps the tenants' backup data keys in the platform database.
    pub backup_master_key: keys::MasterKey,
    /// The tenants' NetworkPolicies.
    pub network: NetworkSettings,
    /// The platform DATABASE_URL's TLS settings, kept in the tenants' URLs.
    pub tenant_database_tls: Vec<(String, String)>,
    /// What specs may choose where they cross the tenant boundary.
    pub boundary: Boundary,
}

/// Shared state of the controller.
pub struct Context {
    pub client: Client,
    pub metrics: crate::metrics::Metrics,
    pub pool: PgPool,
    pub database: PgConnectOptions,
    pub recorder: Recorder,
    pub settings: Settings,
    /// Where tenants' Redis keys live; purge deletes them.
    pub redis: Option<redis::Client>,
    /// One connection to it for every reconcile (made on first use).
    redis_connection: tokio::sync::OnceCell<redis::aio::ConnectionManager>,
    /// Caps concurrent database provisioning (DDL and catalog locks, and one extra
    /// connection each) so a thousand new tenants do not stampede PostgreSQL.
    pub provisioning: tokio::sync::Semaphore,
    /// The Subscriptions the controller watches, once its watch has listed
    /// them: a reconcile reads its tenant's billing state here instead of
    /// listing every Subscription of the namespace (a thousand tenants made
    /// that a thousand objects per reconcile). Replaced when the controller
    /// starts again, like `owned`.
    subscriptions:
        std::sync::RwLock<Option<kube::runtime::reflector::Store<truffles_crds::Subscription>>>,
    /// The tenants' objects as the watches of the running controller have
    /// them (replaced when the controller starts again).
    owned: std::sync::RwLock<Option<std::sync::Arc<super::applied::Owned>>>,
    /// What this process applied last (an unchanged object is not sent again).
    pub applied: super::applied::Applied,
}

impl Context {
    pub fn new(
        client: Client,
        pool: PgPool,
        database: PgConnectOptions,
        settings: Settings,
    ) -> Self {
        let reporter = Reporter {
            controller: FIELD_MANAGER.into(),
            instance: std::env::var("POD_NAME").ok(),
        };
        let recorder = Recorder::new(client.clone(), reporter);
        Self {
            client,
            metrics: Default::default(),
            pool,
            database,
            recorder,
            settings,
            redis: None,
            redis_connection: tokio::sync::OnceCell::new(),
            provisioning: tokio::sync::Semaphore::new(4),
            subscriptions: Default::default(),
            owned: Default::default(),
            applied: Default::default(),
        }
    }

    pub fn subscriptions(
        &self,
    ) -> Option<kube::runtime::reflector::Store<truffles_crds::Subscription>> {
        self.subscriptions
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn set_subscriptions(
        &self,
        store: kube::runtime::reflector::Store<truffles_crds::Subscription>,
    ) {
        *self
            .subscriptions
            .write()
            .unwrap_or_else(|e| e.into_inner()) = Some(store);
    }

    pub fn owned(&self) -> Option<std::sync::Arc<super::applied::Owned>> {
        self.owned.read().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn set_owned(&self, owned: super::applied::Owned) {
        *self.owned.write().unwrap_or_else(|e| e.into_inner()) = Some(std::sync::Arc::new(owned));
    }

    /// The shared Redis connection (reconnecting by itself), if there is a Redis.
    pub async fn redis_connection(
        &self,
    ) -> Option<redis::RedisResult<redis::aio::ConnectionManager>> {
        let redis = self.redis.as_ref()?;
        Some(
            self.redis_connection
                .get_or_try_init(|| redis.get_connection_manager())
                .await
                .cloned(),
        )
    }

    /// How many tenants may be provisioned at once (at least one).
    pub fn with_provisioning(self, concurrency: usize) -> Self {
        Self {
            provisioning: tokio::sync::Semaphore::new(concurrency.max(1)),
            ..self
        }
    }

    pub fn with_redis(self, redis: redis::Client) -> Self {
        Self {
            redis: Some(redis),
            ..self
        }
    }
}
