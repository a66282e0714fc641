//! Token revocation (RFC 7009) at `{issuer}/oauth/revoke`.
//!
//! Revoking a refresh token revokes its whole family (and, through the `jti` prefix, the access
//! tokens it produced as far as introspection is concerned). Revoking an access token puts its
//! `jti` on the revocation list until it would have expired. Public clients may revoke their own
//! tokens by `client_id`. Unknown and invalid tokens get `200` with nothing done (RFC 7009
//! §2.2); a valid token issued to another client is refused with `400 unauthorized_client`
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
        Found::Refresh(..) | Found::Access(_) => {
            return Err(OAuthError::unauthorized_client("the token was not issued to this client").into());
        }
        _ => {}
    }
    Ok(no_store_json(json!({})))
}
