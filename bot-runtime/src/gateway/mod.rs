//! The webhook gateway: authenticate, validate, rate-limit, deduplicate, store
//! durably, acknowledge. Nothing slow happens before the 200: ChatFlow reports
//! "webhook error" when an endpoint is slow. One router of sub-routers, one
//! per audience: customers' channels, admin calls, managers' replies, probes.

mod admin;
mod auth;
mod customers;
mod probes;
mod reply;

use std::sync::Arc;

use axum::Router;
use axum::extract::DefaultBodyLimit;
use axum::middleware;

pub use customers::{
    CUSTOMER_BOT, SIGNATURE_HEADER, poll_telegram, register_telegram_webhook, signature_valid,
};

use crate::runtime::Runtime;

/// The public listener's routes (what the tenant's Ingress publishes): the
/// customers' channels, the managers' replies and the probes. No admin route.
pub fn router(rt: Arc<Runtime>) -> Router {
    let limit = rt.config.tuning.max_body_bytes;
    // The tenant in the path is checked once for the channels' and the
    // managers' routes.
    let tenant_routes =
        customers::routes()
            .merge(handover_routes())
            .route_layer(middleware::from_fn_with_state(
                rt.clone(),
                auth::this_tenant,
            ));
    Router::new()
        .merge(tenant_routes)
        .merge(probes::routes())
        .layer(DefaultBodyLimit::max(limit))
        .with_state(rt)
}

/// The admin listener's routes (its own port and Service port, never routed by
/// the Ingress): the admin API behind its token, and the probes.
pub fn admin_router(rt: Arc<Runtime>) -> Router {
    let gate = Arc::new(auth::AdminGate::new(rt.clone()));
    Router::new()
        .merge(admin::routes(gate))
        .merge(probes::routes())
        .layer(DefaultBodyLimit::max(rt.config.tuning.max_body_bytes))
        .with_state(rt)
}

/// Managers' replies: the managers' Telegram bot and CRMs' reply webhook,
/// each authenticated by `handover::updates`.
fn handover_routes() -> Router<Arc<Runtime>> {
    Router::new()
        .route(
            "/t/{tenant}/handover/telegram",
            axum::routing::post(crate::handover::updates::telegram_webhook),
        )
        .route(
            "/t/{tenant}/handover/{id}/reply",
            axum::routing::post(crate::handover::updates::reply_webhook),
        )
}
