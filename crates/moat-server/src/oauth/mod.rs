//! The OAuth endpoints of each resource's issuer (`{base}/resources/{R}/oauth/*`, DESIGN.md §3).

pub mod assertion;
pub mod authorize;
pub mod client_auth;
pub mod clients;
pub mod flow;
pub mod introspect;
pub mod issue;
pub mod register;
pub mod revoke;
pub mod token;

use std::sync::Arc;

use axum::Router;
use axum::http::StatusCode;
use axum::routing::{get, post};
use moat_core::OAuthError;
use moat_core::model::Resource;

use crate::http::OAuthJsonError;
use crate::state::AppState;

/// Routes for the token-style (JSON) endpoints; CORS is applied by the caller.
pub fn api_router() -> Router<AppState> {
    Router::new()
        .route("/resources/{resource}/oauth/token", post(token::token))
        .route("/resources/{resource}/oauth/register", post(register::register))
        .route("/resources/{resource}/oauth/revoke", post(revoke::revoke))
        .route("/resources/{resource}/oauth/introspect", post(introspect::introspect))
}

/// The browser-facing authorization endpoint (no CORS).
pub fn authorize_router() -> Router<AppState> {
    Router::new()
        .route("/resources/{resource}/oauth/authorize", get(authorize::authorize_get).post(authorize::authorize_post))
}

/// The resource of an issuer path, or a 404 OAuth error.
pub async fn resource_or_404(state: &AppState, id: &str) -> Result<Arc<Resource>, OAuthJsonError> {
    match state.resource(id).await {
        Ok(Some(r)) => Ok(r),
        Ok(None) => {
            Err(OAuthJsonError::new(OAuthError::invalid_request("unknown resource")).with_status(StatusCode::NOT_FOUND))
        }
        Err(e) => Err(OAuthJsonError::internal("loading a resource", e)),
    }
}
