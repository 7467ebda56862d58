//! Probes and metrics: served to the kubelet and Prometheus inside the
//! cluster (the Ingress publishes only `/t/<name>/` paths).

use std::sync::Arc;

use axum::Router;
use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::runtime::Runtime;

pub fn routes() -> Router<Arc<Runtime>> {
    Router::new()
        .route("/healthz", get(live))
        .route("/livez", get(live))
        .route("/readyz", get(crate::health::ready))
        .route("/metrics", get(metrics))
}

async fn live() -> &'static str {
    "ok"
}

async fn metrics(State(rt): State<Arc<Runtime>>) -> Response {
    (
        [(
            "content-type",
            "application/openmetrics-text; version=1.0.0; charset=utf-8",
        )],
        rt.metrics.render(),
    )
        .into_response()
}
