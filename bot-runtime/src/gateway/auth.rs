//! Who may call, checked once here: the tenant in the path (a middleware on
//! every `/t/{tenant}/` route), the webhook secret in constant time
//! (ChatFlow's URL), and the admin API's own bearer with its failure limit.
//! Each channel's own signature or token is its handler's.

use std::num::NonZeroU32;
use std::sync::Arc;
use std::sync::atomic::{AtomicI64, Ordering};

use axum::extract::{RawPathParams, Request, State};
use axum::http::StatusCode;
use axum::middleware::Next;
use axum::response::Response;
use governor::{DefaultDirectRateLimiter, Quota, RateLimiter};
use serde_json::json;

use super::reply::{not_found, reply};
use crate::credential::Which;
use crate::runtime::Runtime;

/// The webhook secret (or, for its window, the one before a rotation),
/// compared in constant time.
pub fn secret_matches(rt: &Runtime, secret: &str) -> bool {
    rt.config.webhook_secret.check_now(secret).is_some()
}

fn tenant_of(params: &RawPathParams) -> &str {
    params
        .iter()
        .find_map(|(k, v)| (k == "tenant").then_some(v))
        .unwrap_or_default()
}

/// Only this runtime's tenant is served; another name in the path is the
/// same 404 as an unknown path (no tenant enumeration).
pub async fn this_tenant(
    State(rt): State<Arc<Runtime>>,
    params: RawPathParams,
    request: Request,
    next: Next,
) -> Response {
    if tenant_of(&params) != rt.config.client_name {
        rt.metrics.webhook("not_found");
        return not_found();
    }
    next.run(request).await
}

/// Which admin credential a request carried, for its audit row.
#[derive(Clone, Copy, Debug)]
pub struct AdminActor(pub Which);

impl AdminActor {
    pub fn as_str(self) -> &'static str {
        match self.0 {
            Which::Current => "admin-token",
            Which::Previous => "admin-token-previous",
        }
    }
}

/// Failed admin authentications allowed per minute; past that every admin
/// call is refused for [`LOCKOUT_SECONDS`], so a token is not guessed by volume.
const FAILURES_PER_MINUTE: u32 = 10;
const LOCKOUT_SECONDS: i64 = 60;

/// The admin API's gate: the tenant, then the bearer — before any body is read.
pub struct AdminGate {
    rt: Arc<Runtime>,
    failures: DefaultDirectRateLimiter,
    locked_until: AtomicI64,
}

impl AdminGate {
    pub fn new(rt: Arc<Runtime>) -> Self {
        let quota =
            Quota::per_minute(NonZeroU32::new(FAILURES_PER_MINUTE).unwrap_or(NonZeroU32::MIN));
        Self {
            rt,
            failures: RateLimiter::direct(quota),
            locked_until: AtomicI64::new(0),
        }
    }

    fn locked(&self, now: i64) -> bool {
        now < self.locked_until.load(Ordering::Relaxed)
    }

    fn failed(&self, now: i64) {
        if self.failures.check().is_err() {
            self.locked_until
                .store(now + LOCKOUT_SECONDS, Ordering::Relaxed);
        }
    }
}

/// A middleware of every admin route: `Authorization: Bearer <admin token>`
/// on the tenant's own path. Failures are counted in metrics, never stored.
pub async fn admin(
    State(gate): State<Arc<AdminGate>>,
    params: RawPathParams,
    mut request: Request,
    next: Next,
) -> Response {
    let rt = &gate.rt;
    if tenant_of(&params) != rt.config.client_name {
        rt.metrics.webhook("not_found");
        return not_found();
    }
    let now = chrono::Utc::now().timestamp();
    if gate.locked(now) {
        rt.metrics.webhook("admin_rate_limited");
        return reply(
            StatusCode::TOO_MANY_REQUESTS,
            json!({"error": "too many failed admin authentications; try again in a minute"}),
        );
    }
    let bearer = request
        .headers()
        .get("authorization")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.strip_prefix("Bearer "))
        .unwrap_or_default();
    match rt.config.admin_token.check(bearer, now) {
        Some(which) => {
            request.extensions_mut().insert(AdminActor(which));
            next.run(request).await
        }
        None => {
            gate.failed(now);
            rt.metrics.webhook("admin_unauthorized");
            reply(
                StatusCode::UNAUTHORIZED,
                json!({"error": "the admin API takes Authorization: Bearer <the tenant's admin token> (Secret <name>-runtime, key TRUFFLES_ADMIN_TOKEN)"}),
            )
        }
    }
}
