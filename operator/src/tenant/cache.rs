//! The tenant's Redis keys and user. Convention for every component: all of a
//! tenant's keys start with [`key_prefix`] (`truffles:{client}:`), e.g.
//! `truffles:flower-shop:dedup:{message_id}`, so a purge can find them all —
//! and the tenant's own ACL user ([`ensure_user`]) may touch nothing else.

use redis::AsyncCommands;
use sha2::{Digest, Sha256};

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

/// The tenant's Redis ACL user.
pub fn user_name(client: &str) -> String {
    format!("truffles-{client}")
}

/// The ACL rules of the tenant's user: its key prefix only; reading and
/// writing keys, nothing that lists, scans or administers the server; Pub/Sub
/// only on its own prefix's channels (the replicas' wake-ups), with no
/// pattern subscriptions or channel listing. The password is given as its
/// SHA-256, so no command carries it in clear.
pub fn user_rules(client: &str, password: &str) -> Vec<String> {
    let hash = hex::encode(Sha256::digest(password.as_bytes()));
    [
        "reset",
        "on",
        &format!("#{hash}"),
        &format!("~{}*", key_prefix(client)),
        "resetchannels",
        &format!("&{}*", key_prefix(client)),
        "-@all",
        "+@read",
        "+@write",
        "+@transaction",
        "+ping",
        "+hello",
        "-@dangerous",
        "-@admin",
        "-scan",
        "-randomkey",
        "-select",
        "-@pubsub",
        "+publish",
        "+subscribe",
        "+unsubscribe",
    ]
    .into_iter()
    .map(str::to_owned)
    .collect()
}

/// Creates or updates the tenant's user (idempotent; run on every reconcile,
/// so a Redis that restarted without an ACL file gets it back), and saves the
/// ACL file when the server has one and the user changed: a save writes
/// every tenant's user, so a save per reconcile grew with the square of
/// the tenants.
pub async fn ensure_user(
    conn: &mut redis::aio::ConnectionManager,
    client: &str,
    password: &str,
) -> redis::RedisResult<()> {
    let user = user_name(client);
    let get_user = || redis::cmd("ACL").arg("GETUSER").arg(&user).clone();
    let before: redis::Value = get_user().query_async(conn).await?;
    redis::cmd("ACL")
        .arg("SETUSER")
        .arg(&user)
        .arg(user_rules(client, password))
        .query_async::<()>(conn)
        .await?;
    let after: redis::Value = get_user().query_async(conn).await?;
    if before != after {
        save_acl(conn).await;
    }
    Ok(())
}

/// Deletes the tenant's user (a purge).
pub async fn delete_user(redis: &redis::Client, client: &str) -> redis::RedisResult<()> {
    let mut conn = redis.get_multiplexed_async_connection().await?;
    redis::cmd("ACL")
        .arg("DELUSER")
        .arg(user_name(client))
        .query_async::<i64>(&mut conn)
        .await?;
    save_acl(&mut conn).await;
    Ok(())
}

/// `ACL SAVE` fails when the server has no ACL file: users then live until
/// a restart, and the next reconcile of each tenant makes its user again.
async fn save_acl(conn: &mut impl redis::aio::ConnectionLike) {
    if let Err(e) = redis::cmd("ACL").arg("SAVE").query_async::<()>(conn).await {
        tracing::debug!(error = %e, "ACL SAVE (no ACL file configured?)");
    }
}

/// The runtime's Redis URL: the platform's address with the tenant's user.
pub fn tenant_url(base: &str, client: &str, password: &str) -> Option<String> {
    let mut url = url::Url::parse(base).ok()?;
    url.set_username(&user_name(client)).ok()?;
    url.set_password(Some(password)).ok()?;
    Some(url.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_tenant_user_is_confined_to_its_prefix_and_its_password_is_hashed() {
        let rules = user_rules("flower-shop", "pw");
        assert!(rules.contains(&"~truffles:flower-shop:*".to_owned()));
        assert!(
            !rules
                .iter()
                .any(|r| r.contains("pw") && !r.starts_with('#'))
        );
        assert_eq!(rules.iter().filter(|r| r.starts_with('~')).count(), 1);
        assert_eq!(
            rules
                .iter()
                .filter(|r| r.starts_with('&'))
                .collect::<Vec<_>>(),
            ["&truffles:flower-shop:*"]
        );
        let url = tenant_url(
            "redis://:admin@redis.truffles-system:6379/0",
            "flower-shop",
            "s3",
        )
        .expect("url");
        assert_eq!(
            url,
            "redis://truffles-flower-shop:s3@redis.truffles-system:6379/0"
        );
    }
}
