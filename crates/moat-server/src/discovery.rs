//! Discovery documents: RFC 8414 authorization server metadata per resource (path-inserted
//! well-known URL, DESIGN.md §3), the JWKS (RFC 7517), and the RFC 9728 protected resource
//! metadata the operator's MCP server should serve.

use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use moat_core::model::Resource;
use serde_json::{Value, json};

use crate::oauth::resource_or_404;
use crate::state::{AppState, now};

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/.well-known/oauth-authorization-server/resources/{resource}", get(as_metadata))
        .route("/keys", get(jwks))
        .route("/.well-known/jwks.json", get(jwks))
        .route("/resources/{resource}/protected-resource-metadata", get(prm))
}

/// RFC 8414 §2 metadata of one resource's issuer.
pub fn metadata_json(state: &AppState, resource: &Resource) -> Value {
    let issuer = state.issuer(&resource.id);
    let mut m = json!({
        "issuer": issuer,
        "authorization_endpoint": format!("{issuer}/oauth/authorize"),
        "token_endpoint": format!("{issuer}/oauth/token"),
        "jwks_uri": format!("{}/keys", state.base_url),
        "revocation_endpoint": format!("{issuer}/oauth/revoke"),
        "introspection_endpoint": format!("{issuer}/oauth/introspect"),
        "scopes_supported": resource.scopes.iter().map(|s| s.name.as_str()).collect::<Vec<_>>(),
        "response_types_supported": ["code"],
        "response_modes_supported": ["query"],
        "grant_types_supported": ["authorization_code", "refresh_token", "client_credentials"],
        "token_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "token_endpoint_auth_signing_alg_values_supported": crate::jwk::ASSERTION_ALGS,
        "revocation_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt", "none"],
        "revocation_endpoint_auth_signing_alg_values_supported": crate::jwk::ASSERTION_ALGS,
        "introspection_endpoint_auth_methods_supported": ["client_secret_basic", "client_secret_post", "private_key_jwt"],
        "introspection_endpoint_auth_signing_alg_values_supported": crate::jwk::ASSERTION_ALGS,
        "code_challenge_methods_supported": ["S256"],
        "authorization_response_iss_parameter_supported": true,
        "prompt_values_supported": ["none", "login", "consent"],
    });
    if let Some(o) = m.as_object_mut() {
        if resource.dcr_enabled {
            o.insert("registration_endpoint".into(), json!(format!("{issuer}/oauth/register")));
        }
        // Advertised exactly when the resource accepts metadata-document clients (CIMD draft §6).
        if resource.cimd_enabled {
            o.insert("client_id_metadata_document_supported".into(), json!(true));
        }
    }
    m
}

/// RFC 9728 §2 protected resource metadata for the resource's MCP server. `scopes_supported`
/// is the default set (what basic use needs, DESIGN.md §8), never `offline_access`.
pub fn prm_json(issuer: &str, resource: &Resource) -> Value {
    json!({
        "resource": resource.server_url,
        "authorization_servers": [issuer],
        "scopes_supported": resource.effective_default_scopes(),
        "bearer_methods_supported": ["header"],
        "resource_name": resource.name,
    })
}

fn json_with_cache(body: Value, cache: &'static str) -> Response {
    let mut resp = axum::Json(body).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static(cache));
    resp
}

async fn as_metadata(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match resource_or_404(&state, &id).await {
        Ok(r) => json_with_cache(metadata_json(&state, &r), "public, max-age=60"),
        Err(e) => e.into_response(),
    }
}

async fn prm(State(state): State<AppState>, Path(id): Path<String>) -> Response {
    match resource_or_404(&state, &id).await {
        Ok(r) => json_with_cache(prm_json(&state.issuer(&r.id), &r), "public, max-age=60"),
        Err(e) => e.into_response(),
    }
}

/// The JWKS, cached by clients for less time than a new key waits before signing.
async fn jwks(State(state): State<AppState>) -> Response {
    let mut resp = axum::Json(state.keys.jwks(now())).into_response();
    let cc = format!("public, max-age={}", state.config.jwks_max_age_seconds);
    if let Ok(v) = HeaderValue::from_str(&cc) {
        resp.headers_mut().insert(header::CACHE_CONTROL, v);
    }
    resp
}
