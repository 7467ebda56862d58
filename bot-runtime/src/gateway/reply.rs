//! The gateway's JSON answers, and reading a body once its sender is known.

use axum::body::{Body, Bytes};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub fn not_found() -> Response {
    reply(StatusCode::NOT_FOUND, json!({"error": "not found"}))
}

/// Reads a request body of at most `limit` bytes: called by a handler after
/// it has checked who sent it, so an unauthenticated body is never read.
pub async fn read_body(body: Body, limit: usize) -> Result<Bytes, Response> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        reply(
            StatusCode::PAYLOAD_TOO_LARGE,
            json!({"error": format!("the body is over {limit} bytes or was cut short")}),
        )
    })
}
