//! Who may call: the tenant's secret (its webhook URL, the admin bearer),
//! checked once here in constant time.

use std::sync::Arc;

use axum::extract::{FromRequestParts, RawPathParams};
use axum::http::request::Parts;
use axum::response::Response;
use subtle::ConstantTimeEq;

use super::reply::not_found;
use crate::runtime::Runtime;

/// The tenant's own URL with its secret, compared in constant time. Anything
/// else is an indistinguishable 404 (no tenant enumeration).
pub fn authorized(rt: &Runtime, tenant: &str, secret: &str) -> bool {
    let secret_ok: bool = secret
        .as_bytes()
        .ct_eq(rt.config.webhook_secret.as_bytes())
        .into();
    secret_ok && tenant == rt.config.client_name
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
        let tenant = params
            .iter()
            .find_map(|(k, v)| (k == "tenant").then_some(v))
            .unwrap_or_default();
        let bearer = parts
            .headers
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .unwrap_or_default();
        if authorized(rt, tenant, bearer) {
            Ok(Admin)
        } else {
            Err(not_found())
        }
    }
}
