//! Admin routes: the knowledge sync, uploads, and one person's export or erasure.

use std::sync::Arc;

use axum::Router;
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Extension, Path, State};
use axum::http::StatusCode;
use axum::middleware;
use axum::response::Response;
use serde_json::{Value, json};

use crate::audit::Level;
use crate::runtime::Runtime;

use super::auth::{self, AdminActor, AdminGate};
use super::reply::{not_found, reply};

/// The platform's admin calls (the knowledge-sync CronJob, person requests,
/// uploads), served on the admin listener only. The gate (`auth::admin`)
/// covers every route and runs before any body is read.
pub fn routes(gate: Arc<AdminGate>) -> Router<Arc<Runtime>> {
    Router::new()
        .route(
            "/t/{tenant}/admin/knowledge/sync",
            axum::routing::post(knowledge_sync),
        )
        .route(
            "/t/{tenant}/admin/person/{request}",
            axum::routing::post(person_request),
        )
        .route(
            "/t/{tenant}/admin/knowledge/upload/{source}/{filename}",
            axum::routing::put(upload_document)
                .delete(delete_document)
                // The source's own limit (knowledge.sources[].upload.maxSizeMib, at
                // most 100) is checked in the handler.
                .layer(DefaultBodyLimit::max(100 * 1024 * 1024)),
        )
        .route_layer(middleware::from_fn_with_state(gate, auth::admin))
}

/// `POST /t/<name>/admin/knowledge/sync` with `Authorization: Bearer <admin
/// token>`: the knowledge-sync CronJob asks the runtime (which holds the Edge
/// shard) to sync now. Answers the sync report.
async fn knowledge_sync(State(rt): State<Arc<Runtime>>) -> Response {
    match rt.sync_knowledge().await {
        Ok(Some(report)) => reply(StatusCode::OK, json!(report)),
        Ok(None) => reply(
            StatusCode::CONFLICT,
            json!({"error": "this runtime has no knowledge base (no embeddings endpoint configured)"}),
        ),
        Err(e) => {
            let message = format!("{e:#}");
            rt.report(
                "knowledge_sync",
                Level::Critical,
                "sync_failed",
                &message,
                None,
            )
            .await;
            reply(StatusCode::INTERNAL_SERVER_ERROR, json!({"error": message}))
        }
    }
}

/// `PUT /t/<name>/admin/knowledge/upload/<source>/<file name>` with the file as
/// the body and the admin token: stores the document in an upload source and
/// syncs, so the answer says whether it was indexed (or why not).
async fn upload_document(
    Extension(actor): Extension<AdminActor>,
    State(rt): State<Arc<Runtime>>,
    Path((_tenant, source, filename)): Path<(String, String, String)>,
    body: Bytes,
) -> Response {
    use crate::knowledge::upload::{self, UploadError};
    let sources = &rt.config.spec.knowledge.sources;
    let checked =
        upload::source(sources, &source).and_then(|s| upload::check(s, &filename, body.len()));
    let refused = |e: UploadError| {
        let status = match e {
            UploadError::NoSuchSource(_) => StatusCode::NOT_FOUND,
            UploadError::TooLarge { .. } => StatusCode::PAYLOAD_TOO_LARGE,
            UploadError::Database(_) => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        reply(status, json!({"error": e.to_string()}))
    };
    if let Err(e) = checked {
        return refused(e);
    }
    if let Err(e) = upload::store(&rt.db, actor.as_str(), &source, &filename, &body).await {
        tracing::error!(error = %e, "storing an upload failed");
        return refused(e);
    }
    synced(&rt, json!({"stored": filename, "bytes": body.len()})).await
}

/// `DELETE` of the same path: the document leaves the knowledge base.
async fn delete_document(
    Extension(actor): Extension<AdminActor>,
    State(rt): State<Arc<Runtime>>,
    Path((_tenant, source, filename)): Path<(String, String, String)>,
) -> Response {
    match crate::knowledge::upload::delete(&rt.db, actor.as_str(), &source, &filename).await {
        Ok(true) => synced(&rt, json!({"deleted": filename})).await,
        Ok(false) => not_found(),
        Err(e) => {
            tracing::error!(error = %e, "deleting an upload failed");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the database is unavailable; nothing was changed, try again"}),
            )
        }
    }
}

/// Runs a sync after an upload change and answers with both.
async fn synced(rt: &Runtime, done: Value) -> Response {
    match rt.sync_knowledge().await {
        Ok(report) => reply(StatusCode::OK, json!({"upload": done, "sync": report})),
        // Stored: the next sync (hourly, or the CronJob) indexes it.
        Err(e) => reply(
            StatusCode::ACCEPTED,
            json!({"upload": done, "sync_error": format!("{e:#}")}),
        ),
    }
}

/// `POST /t/<name>/admin/person/export|erase` with `{"phone": "..."}` (in the
/// body, so the number stays out of URLs and access logs) and the admin token:
/// one end user's data, or its erasure (see [`crate::person`]).
async fn person_request(
    Extension(actor): Extension<AdminActor>,
    State(rt): State<Arc<Runtime>>,
    Path((_tenant, request)): Path<(String, String)>,
    body: Bytes,
) -> Response {
    let Some(phone) = serde_json::from_slice::<Value>(&body)
        .ok()
        .and_then(|v| v.get("phone")?.as_str().map(str::to_owned))
    else {
        return reply(
            StatusCode::BAD_REQUEST,
            json!({"error": "the body must be {\"phone\": \"+7 701 …\"}"}),
        );
    };
    let result = match request.as_str() {
        "export" => crate::person::export(&rt.db, &rt.pii, actor.as_str(), &phone).await,
        "erase" => crate::person::erase(&rt.db, &rt.pii, &rt.cache, actor.as_str(), &phone)
            .await
            .map(|erased| json!({"erased": erased})),
        _ => return not_found(),
    };
    match result {
        Ok(body) => reply(StatusCode::OK, body),
        Err(e @ crate::person::PersonError::NotAPhone(_)) => {
            reply(StatusCode::BAD_REQUEST, json!({"error": e.to_string()}))
        }
        Err(e) => {
            tracing::error!(error = %e, request, "person request failed");
            reply(
                StatusCode::SERVICE_UNAVAILABLE,
                json!({"error": "the database is unavailable; nothing was changed, try again"}),
            )
        }
    }
}
