//! Who may call, checked once here: the tenant in the path (a middleware on
//! every `/t/{tenant}/` route of the customers' channels and the managers'
//! replies), the tenant's secret in constant time (ChatFlow's URL, the admin
//! bearer). Each channel's own signature or token is its handler's.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams, Request, State};
use axum::http::request::Parts;
use axum::middleware::Next;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::reply::not_found;
use crate::runtime::Runtime;

/// The tenant's secret, compared in constant time.
pub fn secret_matches(rt: &Runtime, secret: &str) -> bool {
    secret
        .as_bytes()
        .ct_eq(rt.config.webhook_secret.as_bytes())
        .into()
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

/// An admin caller: `Authorization: Bearer <webhook secret>` on the tenant's
/// own path. Any other request is the same 404 as an unknown path.
pub struct Admin;

impl FromRequestParts<Arc<Runtime>> for Admin {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        rt: &Arc<Runtime>,
    ) -> Result<Self, Self::Rejection> {
        let params = RawPathParams::from_request_parts(parts, rt)
            .await
            .map_err(|_| not_found())?;
        let tenant = tenant_of(&params);
        let bearer = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if tenant == rt.config.client_name && secret_matches(rt, bearer) {
            Ok(Admin)
        } else {
            Err(not_found())
        }
    }
}
