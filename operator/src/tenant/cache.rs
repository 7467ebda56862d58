//! The tenant's Redis keys. Convention for every component: all of a tenant's keys
//! start with [`key_prefix`] (`truffles:{client}:`), e.g.
//! `truffles:flower-shop:dedup:{message_id}`, so a purge can find them all.

use redis::AsyncCommands;

/// The prefix of every Redis key of a tenant.
pub fn key_prefix(client: &str) -> String {
    format!("truffles:{client}:")
}

/// Deletes every key of the tenant; returns how many were deleted. SCAN, not KEYS,
/// so a large Redis is not blocked.
pub async fn purge_keys(redis: &redis::Client, client: &str) -> redis::RedisResult<u64> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    // Glob metacharacters cannot occur: client names are [a-z0-9-].
    let pattern = format!("{}*", key_prefix(client));
    let keys: Vec<String> = {
        let mut iter = conn.scan_match::<_, String>(&pattern).await?;
        let mut keys = Vec::new();
        while let Some(key) = iter.next_item().await {
            keys.push(key?);
        }
        keys
    };
    let mut deleted = 0;
    for batch in keys.chunks(500) {
        deleted += conn.unlink::<_, u64>(batch).await?;
    }
    Ok(deleted)
}
