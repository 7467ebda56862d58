//! The gateway's JSON answers.

use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub fn reply(status: StatusCode, body: Value) -> Response {
    (status, axum::Json(body)).into_response()
}

pub fn not_found() -> Response {
    reply(StatusCode::NOT_FOUND, json!({"error": "not found"}))
}
