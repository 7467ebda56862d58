//! `/readyz`: each dependency probed with a short timeout. Only PostgreSQL is
//! required (events cannot be stored without it); the others are reported so
//! a degraded runtime is visible, while it keeps answering. What a probe may
//! trust without asking again is `health_cache.rs`.
//!
//! The platform's own health check (`truffles-bot health`) is
//! `platform::health`.

use std::sync::Arc;

use axum::Json;
use axum::extract::State;
use axum::http::StatusCode;
use serde_json::{Value, json};

use crate::runtime::Runtime;

fn state(ok: Option<bool>) -> Value {
    match ok {
        None => json!("not configured"),
        Some(true) => json!("ok"),
        Some(false) => json!("down"),
    }
}

pub async fn ready(State(rt): State<Arc<Runtime>>) -> (StatusCode, Json<Value>) {
    let timeout = rt.config.tuning.probe_timeout;
    let postgres = async {
        if rt.probes.postgres_recent() {
            return true;
        }
        let ok = tokio::time::timeout(timeout, sqlx::query("SELECT 1").execute(&rt.db))
            .await
            .is_ok_and(|r| r.is_ok());
        rt.probes.postgres_answered(ok);
        ok
    };
    let redis = async {
        match rt.config.redis_url {
            None => None,
            Some(_) => Some(rt.cache.ping().await.is_ok()),
        }
    };
    let services = async {
        if let Some(seen) = rt.probes.services() {
            return seen;
        }
        let llm = async {
            let base = rt.llm.base_url()?;
            // Any HTTP answer means the endpoint is reachable.
            Some(
                rt.http
                    .get(format!("{}/models", base.trim_end_matches('/')))
                    .timeout(timeout)
                    .send()
                    .await
                    .is_ok(),
            )
        };
        let chatflow = async {
            match &rt.channels.whatsapp {
                None => None,
                Some(c) => Some(c.reachable(timeout).await),
            }
        };
        let seen = tokio::join!(llm, chatflow);
        rt.probes.services_seen(seen);
        seen
    };
    let (postgres, redis, (llm, chatflow)) = tokio::join!(postgres, redis, services);
    let body = json!({
        "postgres": state(Some(postgres)),
        "redis": state(redis),
        "llm": state(llm),
        "chatflow": state(chatflow),
        // The knowledge issue adds the vector store here.
    });
    let status = if postgres {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    (status, Json(body))
}
