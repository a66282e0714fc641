//! Token introspection (RFC 7662) for authenticated confidential clients of the resource, and
//! the token lookup shared with revocation.
//!
//! An access token is active when Moat signed it for this issuer, it is within its lifetime,
//! its `jti` is not revoked, its refresh family (if any) is not revoked, and its client and
//! user are still enabled. A refresh token is active when it is the live end of an unrevoked,
//! unexpired family of this resource.

use axum::extract::Request;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use moat_core::OAuthError;
use moat_core::ids::{ClientId, ResourceId, UserId};
use moat_core::model::{RefreshFamily, RefreshToken, Resource};
use serde_json::{Value, json};

use super::issue::family_of_jti;
use crate::crypto::sha256_hex;
use crate::http::{OAuthJsonError, no_store_json};
use crate::state::{AppState, now};

/// What a presented token turned out to be.
// Built once per request and matched at once: boxing the refresh variant would only add an
// allocation.
#[allow(clippy::large_enum_variant)]
pub enum Found {
    /// A JWT Moat signed for this resource's issuer (claims not yet checked for liveness).
    Access(Value),
    Refresh(RefreshToken, RefreshFamily),
    Unknown,
}

/// Identifies a token presented to revocation or introspection.
pub async fn find_token(state: &AppState, resource: &Resource, token: &str) -> Result<Found, OAuthJsonError> {
    if token.len() > 16 * 1024 {
        return Ok(Found::Unknown);
    }
    if token.matches('.').count() == 2 {
        if let Some(claims) = state.keys.verify_jwt(token, now()) {
            let ours = claims.get("iss").and_then(Value::as_str) == Some(state.issuer(&resource.id).as_str());
            return Ok(if ours { Found::Access(claims) } else { Found::Unknown });
        }
        return Ok(Found::Unknown);
    }
    match state.store.get_refresh_token(&sha256_hex(token.as_bytes())).await {
        Ok(Some((t, f))) if f.resource_id == resource.id => Ok(Found::Refresh(t, f)),
        Ok(_) => Ok(Found::Unknown),
        Err(e) => Err(OAuthJsonError::internal("looking up a refresh token", e)),
    }
}

/// `POST {issuer}/oauth/introspect`.
pub async fn introspect(State(state): State<AppState>, Path(resource_id): Path<String>, request: Request) -> Response {
    match handle(&state, &resource_id, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, resource_id: &str, request: Request) -> Result<Response, OAuthJsonError> {
    let super::ClientRequest { params, resource, client } = super::client_request(state, resource_id, request).await?;
    // RFC 7662 §4: introspection must be protected; Moat allows it to confidential clients.
    if !client.auth_method.is_confidential() {
        return Err(OAuthError::invalid_client("introspection requires a confidential client").into());
    }
    let token = params.required("token")?;
    let inactive = || no_store_json(json!({ "active": false }));
    let now = now();
    match find_token(state, &resource, token).await? {
        Found::Access(claims) => {
            if access_token_active(state, &resource.id, &claims, now).await? {
                let mut out = claims.as_object().cloned().unwrap_or_default();
                out.insert("active".into(), json!(true));
                out.insert("token_type".into(), json!("Bearer"));
                Ok(no_store_json(Value::Object(out)))
            } else {
                Ok(inactive())
            }
        }
        Found::Refresh(t, f) => {
            let live = f.revoked_at.is_none() && now < f.expires_at && t.rotated_at.is_none() && now < t.expires_at;
            if !live || !principals_active(state, &f.resource_id, &f.client_id, f.user_id.as_ref()).await? {
                return Ok(inactive());
            }
            Ok(no_store_json(json!({
                "active": true,
                "token_type": "refresh_token",
                "scope": moat_core::scope::join(&f.scopes),
                "client_id": f.client_id,
                "sub": f.user_id.as_ref().map(|u| u.to_string()).unwrap_or_else(|| f.client_id.to_string()),
                "iss": state.issuer(&resource.id),
                "exp": t.expires_at,
                "iat": t.created_at,
            })))
        }
        Found::Unknown => Ok(inactive()),
    }
}

async fn access_token_active(
    state: &AppState,
    resource: &ResourceId,
    claims: &Value,
    now: i64,
) -> Result<bool, OAuthJsonError> {
    let num = |k: &str| claims.get(k).and_then(Value::as_i64);
    let (Some(exp), Some(nbf)) = (num("exp"), num("nbf")) else {
        return Ok(false);
    };
    if now >= exp || now < nbf {
        return Ok(false);
    }
    let Some(jti) = claims.get("jti").and_then(Value::as_str) else {
        return Ok(false);
    };
    let revoked =
        state.store.is_access_token_revoked(jti).await.map_err(|e| OAuthJsonError::internal("revocation list", e))?;
    if revoked {
        return Ok(false);
    }
    if let Some(family) = family_of_jti(jti) {
        match state.store.get_family(&family).await {
            Ok(Some(f)) if f.revoked_at.is_none() => {}
            Ok(_) => return Ok(false),
            Err(e) => return Err(OAuthJsonError::internal("loading a family", e)),
        }
    }
    let Some(client_id) = claims.get("client_id").and_then(Value::as_str).and_then(ClientId::parse) else {
        return Ok(false);
    };
    let user = claims.get("sub").and_then(Value::as_str).and_then(UserId::parse);
    principals_active(state, resource, &client_id, user.as_ref()).await
}

/// The client exists and is enabled, and so is the user (when there is one).
async fn principals_active(
    state: &AppState,
    resource: &ResourceId,
    client: &ClientId,
    user: Option<&UserId>,
) -> Result<bool, OAuthJsonError> {
    match state.store.get_client(resource, client).await {
        Ok(Some(c)) if !c.disabled => {}
        Ok(_) => return Ok(false),
        Err(e) => return Err(OAuthJsonError::internal("loading a client", e)),
    }
    if let Some(u) = user {
        match state.store.get_user(u).await {
            Ok(Some(u)) if !u.disabled => {}
            Ok(_) => return Ok(false),
            Err(e) => return Err(OAuthJsonError::internal("loading a user", e)),
        }
    }
    Ok(true)
}
