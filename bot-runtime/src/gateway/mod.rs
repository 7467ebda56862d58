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

pub use customers::{
    CUSTOMER_BOT, SIGNATURE_HEADER, poll_telegram, register_telegram_webhook, signature_valid,
};

use crate::runtime::Runtime;

pub fn router(rt: Arc<Runtime>) -> Router {
    let limit = rt.config.tuning.max_body_bytes;
    Router::new()
        .merge(customers::routes())
        .merge(admin::routes())
        .merge(handover_routes())
        .merge(probes::routes())
        .layer(DefaultBodyLimit::max(limit))
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
