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

/// What the token, revocation and introspection endpoints read first.
pub struct ClientRequest {
    pub params: crate::http::Params,
    pub resource: Arc<Resource>,
    pub client: moat_core::model::Client,
}

/// The common start of the token-style endpoints: a form body (RFC 6749 §3.2) within the size
/// limit with no repeated parameter (§3.1), the resource of the issuer path, and the
/// authenticated client (§2.3).
pub async fn client_request(
    state: &AppState,
    resource_id: &str,
    request: axum::extract::Request,
) -> Result<ClientRequest, OAuthJsonError> {
    // The source address limits metadata-document fetches here as at the authorization endpoint
    // (a `client_id` URL at these endpoints makes Moat fetch it too).
    let ip = crate::http::client_ip(&request, state.config.trusted_proxy_header.as_deref()).map(|i| i.to_string());
    let (parts, body) = request.into_parts();
    crate::http::require_form_content_type(&parts.headers)?;
    let bytes = crate::http::read_body(body, state.config.max_body_bytes).await?;
    let params = crate::http::Params::parse(&bytes)?;
    params.reject_duplicates()?;
    let resource = resource_or_404(state, resource_id).await?;
    let client = client_auth::authenticate(state, &resource, &parts.headers, &params, ip.as_deref()).await?;
    Ok(ClientRequest { params, resource, client })
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
