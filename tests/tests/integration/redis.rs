//! The test Redis is a real server: the primitives the runtime's deduplication and
//! rate limits are built on behave as Redis documents.

use anyhow::Result;
use redis::AsyncCommands;
use truffles_tests::redis_connection;

#[tokio::test]
async fn set_nx_with_expiry_deduplicates() -> Result<()> {
    let mut conn = redis_connection().await?;
    let key = format!("dedup:{}", uuid::Uuid::new_v4());
    let options = redis::SetOptions::default()
        .conditional_set(redis::ExistenceCheck::NX)
        .with_expiration(redis::SetExpiry::EX(86_400));
    let first: Option<String> = conn.set_options(&key, "1", options.clone()).await?;
    let second: Option<String> = conn.set_options(&key, "1", options).await?;
    assert_eq!((first.as_deref(), second.as_deref()), (Some("OK"), None));
    let ttl: i64 = conn.ttl(&key).await?;
    assert!((86_000..=86_400).contains(&ttl), "ttl {ttl}");
    Ok(())
}
