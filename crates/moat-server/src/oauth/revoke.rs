//! Token revocation (RFC 7009) at `{issuer}/oauth/revoke`.
//!
//! Revoking a refresh token revokes its whole family (and, through the `jti` prefix, the access
//! tokens it produced as far as introspection is concerned). Revoking an access token puts its
//! `jti` on the revocation list until it would have expired. Public clients may revoke their own
//! tokens by `client_id`. Unknown and invalid (expired, revoked, rotated) tokens get `200` with
//! nothing done (RFC 7009 §2.2); a live token issued to another client is refused with
//! `400 unauthorized_client`
//! (RFC 7009 §2.1: the server verifies the token was issued to the requesting client and informs
//! it when not). That tells the caller only what holding the token already tells it.

use axum::extract::Request;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use moat_core::OAuthError;
use moat_core::model::AuditEvent;
use serde_json::{Value, json};

use super::introspect::{Found, find_token};
use crate::http::{OAuthJsonError, no_store_json};
use crate::state::{AppState, now};

/// `POST {issuer}/oauth/revoke`.
pub async fn revoke(State(state): State<AppState>, Path(resource_id): Path<String>, request: Request) -> Response {
    match handle(&state, &resource_id, request).await {
        Ok(r) => r,
        Err(e) => e.into_response(),
    }
}

async fn handle(state: &AppState, resource_id: &str, request: Request) -> Result<Response, OAuthJsonError> {
    let super::ClientRequest { params, resource, client } = super::client_request(state, resource_id, request).await?;
    let token = params.required("token")?;
    let now = now();
    let mut ev = AuditEvent::new("token.revoked", now);
    ev.resource_id = Some(resource.id.to_string());
    ev.client_id = Some(client.id.to_string());
    match find_token(state, &resource, token).await? {
        Found::Refresh(_, family) if family.client_id == client.id => {
            state
                .store
                .revoke_family(&family.id, now)
                .await
                .map_err(|e| OAuthJsonError::internal("revoking a family", e))?;
            ev.user_id = family.user_id.as_ref().map(|u| u.to_string());
            ev.detail = json!({ "token_type": "refresh_token", "family": family.id.to_string() });
            state.audit.record(ev).await;
        }
        Found::Access(claims) if claims.get("client_id").and_then(Value::as_str) == Some(client.id.as_str()) => {
            let jti = claims.get("jti").and_then(Value::as_str).unwrap_or_default();
            let exp = claims.get("exp").and_then(Value::as_i64).unwrap_or(now);
            if !jti.is_empty() {
                state
                    .store
                    .revoke_access_token(jti, exp)
                    .await
                    .map_err(|e| OAuthJsonError::internal("revoking an access token", e))?;
                ev.user_id = claims.get("sub").and_then(Value::as_str).map(str::to_owned);
                ev.detail = json!({ "token_type": "access_token", "jti": jti });
                state.audit.record(ev).await;
            }
        }
        // Another client's token: refused only while it is live; an expired, revoked or rotated
        // one is an invalid token, which gets 200 like any other (RFC 7009 §2.2).
        Found::Refresh(token, family)
            if family.revoked_at.is_none()
                && now < family.expires_at
                && token.rotated_at.is_none()
                && now < token.expires_at =>
        {
            return Err(OAuthError::unauthorized_client("the token was not issued to this client").into());
        }
        Found::Access(claims) if claims.get("exp").and_then(Value::as_i64).is_some_and(|exp| now < exp) => {
            let jti = claims.get("jti").and_then(Value::as_str).unwrap_or_default();
            let revoked = state
                .store
                .is_access_token_revoked(jti)
                .await
                .map_err(|e| OAuthJsonError::internal("revocation list", e))?;
            if !revoked {
                return Err(OAuthError::unauthorized_client("the token was not issued to this client").into());
            }
        }
        Found::Refresh(..) | Found::Access(_) | Found::Unknown => {}
    }
    Ok(no_store_json(json!({})))
}
