//! Redis: deduplication, rate limits, circuit breakers and conversation memory.
//! Every key is `truffles:<client>:…` (the operator purges that prefix). Redis
//! is an accelerator, never the source of truth: every call has a short
//! timeout and callers degrade when it fails.

use std::sync::Arc;
use std::time::Duration;

use redis::AsyncCommands;
use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::OnceCell;

const TIMEOUT: Duration = Duration::from_millis(300);
/// After a failure Redis is skipped for this long, so an outage costs a webhook
/// nothing instead of a timeout per command.
const BACK_OFF: Duration = Duration::from_secs(2);

#[derive(Debug, thiserror::Error)]
pub enum CacheError {
    #[error("Redis is not configured")]
    NotConfigured,
    #[error("Redis did not answer within {TIMEOUT:?}")]
    Timeout,
    #[error("Redis failed moments ago; skipped for {BACK_OFF:?}")]
    BackingOff,
    #[error("Redis: {0}")]
    Redis(#[from] redis::RedisError),
}

/// Called with each message published on the tenant's channel (and with
/// "subscribed" after every (re)subscription: what was published while the
/// connection was down is lost, so the listener looks at everything again).
pub type OnMessage = Arc<dyn Fn(&str) + Send + Sync>;

pub struct Cache {
    prefix: String,
    client: Option<redis::Client>,
    /// The tenant's channel this process listens to, on the same connection
    /// as its commands (RESP3 push): no second connection per runtime.
    channel: Option<(String, OnMessage)>,
    conn: OnceCell<ConnectionManager>,
    down_until: std::sync::Mutex<Option<std::time::Instant>>,
    /// Fixed-window counters of this process while Redis is down.
    local_counts: std::sync::Mutex<std::collections::HashMap<String, (std::time::Instant, u64)>>,
}

impl Cache {
    /// No connection is made here: the runtime starts while Redis is down.
    pub fn new(client_name: &str, url: Option<&str>) -> anyhow::Result<Self> {
        let client = url
            .map(redis::Client::open)
            .transpose()
            .map_err(|e| anyhow::anyhow!("REDIS_URL is invalid: {:?}", e.kind()))?;
        Ok(Self {
            prefix: format!("truffles:{client_name}:"),
            client,
            channel: None,
            conn: OnceCell::new(),
            down_until: std::sync::Mutex::new(None),
            local_counts: std::sync::Mutex::new(std::collections::HashMap::new()),
        })
    }

    /// Listens to the tenant's channel `suffix` from the first connection on
    /// (RESP3, resubscribed after every reconnection).
    pub fn with_channel(mut self, suffix: &str, on_message: OnMessage) -> anyhow::Result<Self> {
        if let Some(client) = self.client.take() {
            let info = client.get_connection_info().clone();
            let settings = info
                .redis_settings()
                .clone()
                .set_protocol(redis::ProtocolVersion::RESP3);
            self.client = Some(
                redis::Client::open(info.set_redis_settings(settings))
                    .map_err(|e| anyhow::anyhow!("REDIS_URL: {:?}", e.kind()))?,
            );
        }
        self.channel = Some((self.key(suffix), on_message));
        Ok(self)
    }

    /// Connects (and so subscribes) if no connection is up yet; nothing when
    /// Redis is down or not configured: the caller's sweep is the fallback.
    pub async fn listen(&self) {
        if self.channel.is_some() && self.conn.get().is_none() {
            let _ = self.run(async |_| Ok(())).await;
        }
    }

    /// Publishes `message` on the tenant's channel `suffix`.
    pub async fn publish(&self, suffix: &str, message: &str) -> Result<(), CacheError> {
        let channel = self.key(suffix);
        let message = message.to_owned();
        self.run(async move |mut c| c.publish::<_, _, ()>(&channel, message).await)
            .await
    }

    /// The tenant's key for `suffix`.
    pub fn key(&self, suffix: &str) -> String {
        format!("{}{suffix}", self.prefix)
    }

    async fn conn(&self) -> Result<ConnectionManager, CacheError> {
        let client = self.client.clone().ok_or(CacheError::NotConfigured)?;
        let conn = self
            .conn
            .get_or_try_init(|| async move {
                let mut config = ConnectionManagerConfig::new()
                    .set_connection_timeout(Some(TIMEOUT))
                    .set_response_timeout(Some(TIMEOUT))
                    .set_number_of_retries(1);
                if let Some((_, on_message)) = &self.channel {
                    let on_message = on_message.clone();
                    config = config
                        .set_push_sender(move |push: redis::PushInfo| {
                            match push.kind {
                                redis::PushKind::Message => {
                                    if let Some(redis::Value::BulkString(payload)) =
                                        push.data.get(1)
                                    {
                                        on_message(&String::from_utf8_lossy(payload));
                                    }
                                }
                                redis::PushKind::Subscribe => on_message("subscribed"),
                                _ => {}
                            }
                            Ok::<(), std::convert::Infallible>(())
                        })
                        .set_automatic_resubscription();
                }
                let mut conn = tokio::time::timeout(
                    TIMEOUT * 2,
                    ConnectionManager::new_with_config(client, config),
                )
                .await
                .map_err(|_| CacheError::Timeout)?
                .map_err(CacheError::from)?;
                if let Some((channel, _)) = &self.channel
                    && let Err(e) = conn.subscribe(channel).await
                {
                    // Commands still work; other replicas' wakes reach this
                    // one through the sweep (an ACL from an older operator).
                    tracing::warn!(error = %e, "could not subscribe to the tenant's channel");
                }
                Ok::<_, CacheError>(conn)
            })
            .await?;
        Ok(conn.clone())
    }

    async fn run<T>(
        &self,
        f: impl AsyncFnOnce(ConnectionManager) -> redis::RedisResult<T>,
    ) -> Result<T, CacheError> {
        let now = std::time::Instant::now();
        {
            let down = self.down_until.lock().unwrap_or_else(|p| p.into_inner());
            if down.is_some_and(|until| now < until) {
                return Err(CacheError::BackingOff);
            }
        }
        let result = async {
            let conn = self.conn().await?;
            tokio::time::timeout(TIMEOUT, f(conn))
                .await
                .map_err(|_| CacheError::Timeout)?
                .map_err(CacheError::from)
        }
        .await;
        let unavailable = match &result {
            Err(CacheError::Timeout) => true,
            Err(CacheError::Redis(e)) => {
                e.is_io_error() || e.is_connection_refusal() || e.is_timeout()
            }
            _ => false,
        };
        if unavailable {
            *self.down_until.lock().unwrap_or_else(|p| p.into_inner()) = Some(now + BACK_OFF);
        }
        result
    }

    /// Marks `suffix` as seen for `ttl`; false when it was already marked.
    pub async fn mark_once(&self, suffix: &str, ttl: Duration) -> Result<bool, CacheError> {
        let key = self.key(suffix);
        self.run(async move |mut c| {
            let set: Option<String> = redis::cmd("SET")
                .arg(&key)
                .arg(1)
                .arg("NX")
                .arg("PX")
                .arg(ttl.as_millis() as u64)
                .query_async(&mut c)
                .await?;
            Ok(set.is_some())
        })
        .await
    }

    pub async fn delete(&self, suffix: &str) -> Result<(), CacheError> {
        let key = self.key(suffix);
        self.run(async move |mut c| c.del::<_, ()>(&key).await)
            .await
    }

    /// Counts a hit in a fixed window; returns the count so far.
    pub async fn count(&self, suffix: &str, window: Duration) -> Result<u64, CacheError> {
        let key = self.key(suffix);
        self.run(async move |mut c| {
            let (count, _): (u64, bool) = redis::pipe()
                .atomic()
                .incr(&key, 1)
                .cmd("PEXPIRE")
                .arg(&key)
                .arg(window.as_millis() as u64)
                .arg("NX")
                .query_async(&mut c)
                .await?;
            Ok(count)
        })
        .await
    }

    /// Like [`Cache::count`], but counted in this process while Redis is down
    /// (so limits still hold, per replica instead of per tenant).
    pub async fn count_or_local(&self, suffix: &str, window: Duration) -> u64 {
        match self.count(suffix, window).await {
            Ok(n) => n,
            Err(_) => {
                let now = std::time::Instant::now();
                let mut counts = self.local_counts.lock().unwrap_or_else(|p| p.into_inner());
                // Forget finished windows so the map stays small.
                counts.retain(|_, (start, _)| now.duration_since(*start) < window);
                let entry = counts.entry(suffix.to_owned()).or_insert((now, 0));
                entry.1 += 1;
                entry.1
            }
        }
    }

    pub async fn get(&self, suffix: &str) -> Result<Option<String>, CacheError> {
        let key = self.key(suffix);
        self.run(async move |mut c| c.get(&key).await).await
    }

    pub async fn set(&self, suffix: &str, value: &str, ttl: Duration) -> Result<(), CacheError> {
        let key = self.key(suffix);
        let value = value.to_owned();
        self.run(async move |mut c| c.pset_ex(&key, value, ttl.as_millis() as u64).await)
            .await
    }

    /// The list at `suffix`, oldest first.
    pub async fn list(&self, suffix: &str) -> Result<Vec<String>, CacheError> {
        let key = self.key(suffix);
        self.run(async move |mut c| c.lrange(&key, 0, -1).await)
            .await
    }

    /// Appends to a list, keeps its last `keep` items and refreshes its TTL.
    pub async fn push_capped(
        &self,
        suffix: &str,
        items: &[String],
        keep: isize,
        ttl: Duration,
    ) -> Result<(), CacheError> {
        let key = self.key(suffix);
        let items = items.to_vec();
        self.run(async move |mut c| {
            redis::pipe()
                .atomic()
                .rpush(&key, items)
                .ltrim(&key, -keep, -1)
                .pexpire(&key, ttl.as_millis() as i64)
                .query_async::<()>(&mut c)
                .await
        })
        .await
    }

    pub async fn ping(&self) -> Result<(), CacheError> {
        self.run(async move |mut c| {
            redis::cmd("PING")
                .query_async::<String>(&mut c)
                .await
                .map(|_| ())
        })
        .await
    }
}
