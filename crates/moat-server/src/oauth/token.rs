//! The token endpoint (RFC 6749 §3.2, §4.1.3, §4.4, §6; OAuth 2.1 §3.2; RFC 8707 §2.2):
//! `authorization_code` with PKCE, rotating `refresh_token`, and `client_credentials`.
//!
//! Database work per request: one read of the client and one write transaction (code
//! redemption or refresh rotation); client credentials need no write at all (the audit event
//! is batched). No password hashing happens here: client secrets are 256-bit random values
//! stored as SHA-256.

use std::time::Instant;

use axum::extract::Request;
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use moat_core::OAuthError;
use moat_core::ids::FamilyId;
use moat_core::model::{AuditEvent, AuthorizationCode, Client, GrantType, NewFamily, Resource};
use moat_core::refresh::{RejectReason, successor_expiry};
use moat_core::{pkce, scope};
use moat_store::{RedeemOutcome, RotateOutcome, Rotation};
use serde_json::json;

use super::issue::{Grant, access_token_ttl, mint, token_response};
use crate::crypto::{ct_eq, sha256_hex};
use crate::http::{OAuthJsonError, Params};
use crate::state::{AppState, now};

/// `POST {issuer}/oauth/token`.
pub async fn token(State(state): State<AppState>, Path(resource_id): Path<String>, request: Request) -> Response {
    let started = Instant::now();
    match handle(&state, &resource_id, request).await {
        Ok((grant, resp)) => {
            state.metrics.token_issued(grant, started);
            resp
        }
        Err(e) => {
            state.metrics.token_error(e.error.code.as_str());
            e.into_response()
        }
    }
}

async fn handle(
    state: &AppState,
    resource_id: &str,
    request: Request,
) -> Result<(&'static str, Response), OAuthJsonError> {
    let super::ClientRequest { params, resource, client } = super::client_request(state, resource_id, request).await?;
    let grant_type = params.required("grant_type")?;
    let grant = GrantType::parse(grant_type)
        .ok_or_else(|| OAuthError::new(moat_core::OAuthErrorCode::UnsupportedGrantType, "unsupported grant_type"))?;
    if !client.allows_grant(grant) {
        return Err(OAuthError::unauthorized_client(format!("this client may not use the {grant_type} grant")).into());
    }
    let resp = match grant {
        GrantType::AuthorizationCode => authorization_code(state, &resource, &client, &params).await?,
        GrantType::RefreshToken => refresh_token(state, &resource, &client, &params).await?,
        GrantType::ClientCredentials => client_credentials(state, &resource, &client, &params).await?,
    };
    Ok((grant.as_str(), resp))
}

/// RFC 8707 §2.2: an explicit `resource` at the token endpoint must name this resource.
fn check_resource_param(params: &Params, expected: &str) -> Result<(), OAuthError> {
    match params.get("resource") {
        Some(r) if !moat_core::url::same_resource(r, expected) => {
            Err(OAuthError::invalid_target("the resource parameter does not match this grant"))
        }
        _ => Ok(()),
    }
}

/// The grant an authorization-code redemption creates (DESIGN.md §4). Its id prefixes the
/// access tokens' `jti`, so revoking it (a replayed code, a disabled client or user) deactivates
/// them at introspection even when the client gets no refresh token; with one, it is the refresh
/// family, and the first token is returned beside it.
fn new_family(client: &Client, resource: &Resource, now: i64) -> (Option<String>, NewFamily) {
    let id = FamilyId::generate();
    if client.allows_grant(GrantType::RefreshToken) {
        let token = moat_core::ids::random_secret();
        let expires_at = now.saturating_add(resource.refresh_token_ttl);
        let family = NewFamily {
            id,
            first_token_hash: Some(sha256_hex(token.as_bytes())),
            expires_at,
            token_expires_at: successor_expiry(now, resource.refresh_idle_ttl, expires_at),
        };
        (Some(token), family)
    } else {
        // No refresh token: the grant lives exactly as long as its access token.
        let expires_at = now.saturating_add(access_token_ttl(client, resource));
        (None, NewFamily { id, first_token_hash: None, expires_at, token_expires_at: expires_at })
    }
}

async fn authorization_code(
    state: &AppState,
    resource: &Resource,
    client: &Client,
    params: &Params,
) -> Result<Response, OAuthJsonError> {
    let code = params.required("code")?;
    let verifier = params.required("code_verifier")?;
    if !pkce::is_valid_verifier(verifier) {
        return Err(OAuthError::invalid_grant("code_verifier is malformed (RFC 7636 section 4.1)").into());
    }
    let expected_challenge = pkce::s256_challenge(verifier);
    let redirect_uri = params.get("redirect_uri").map(str::to_owned);
    let resource_param = params.get("resource").map(str::to_owned);
    let client_id = client.id.clone();
    let resource_id = resource.id.clone();
    let check = move |c: &AuthorizationCode| -> Result<(), OAuthError> {
        if c.client_id != client_id || c.resource_id != resource_id {
            return Err(OAuthError::invalid_grant("the authorization code was not issued to this client"));
        }
        // RFC 6749 §4.1.3: redirect_uri is required when the authorization request had one, and
        // must be identical to it.
        match (&redirect_uri, c.redirect_uri_explicit) {
            (Some(r), _) if *r != c.redirect_uri => {
                return Err(OAuthError::invalid_grant("redirect_uri does not match the authorization request"));
            }
            (None, true) => {
                return Err(OAuthError::invalid_request("missing parameter redirect_uri"));
            }
            _ => {}
        }
        if !ct_eq(expected_challenge.as_bytes(), c.code_challenge.as_bytes()) {
            return Err(OAuthError::invalid_grant("PKCE verification failed"));
        }
        if let Some(r) = &resource_param
            && !moat_core::url::same_resource(r, &c.resource_url)
        {
            return Err(OAuthError::invalid_target("resource differs from the authorization request"));
        }
        Ok(())
    };
    let now = now();
    // Checked before the code is consumed: a server that cannot sign (no usable key) answers
    // 500 and leaves the code redeemable, rather than burning it and treating the client's
    // retry as a replay.
    if state.keys.current(now).is_none() {
        return Err(OAuthJsonError::internal("redeeming a code", "no signing key can sign now"));
    }
    let (refresh, family) = new_family(client, resource, now);
    let code_hash = sha256_hex(code.as_bytes());
    let outcome = state
        .store
        .redeem_code(&code_hash, now, &check, Some(&family))
        .await
        .map_err(|e| OAuthJsonError::internal("redeeming a code", e))?;
    let code = match outcome {
        RedeemOutcome::Redeemed(code) => code,
        RedeemOutcome::NotFound => {
            return Err(OAuthError::invalid_grant("the authorization code is invalid").into());
        }
        RedeemOutcome::Expired => {
            return Err(OAuthError::invalid_grant("the authorization code has expired").into());
        }
        RedeemOutcome::Rejected(e) => return Err(e.into()),
        RedeemOutcome::Replayed { revoked_family } => {
            let mut ev = audit(resource, client, "code.replayed", now);
            ev.detail = json!({ "revoked_family": revoked_family.map(|f| f.to_string()) });
            state.audit.record(ev).await;
            tracing::warn!(client_id = %client.id, "authorization code replayed; tokens it issued are revoked");
            return Err(OAuthError::invalid_grant("the authorization code has already been used").into());
        }
    };
    let minted = mint(
        state,
        &Grant {
            resource,
            client,
            subject: code.user_id.as_str(),
            scopes: &code.scopes,
            session_id: code.session_id.as_deref(),
            auth_time: Some(code.auth_time),
            family: Some(&family.id),
        },
        now,
    )?;
    let mut ev = audit(resource, client, "token.issued", now);
    ev.user_id = Some(code.user_id.to_string());
    ev.detail = json!({ "grant_type": "authorization_code", "scope": scope::join(&code.scopes),
                        "family": family.id.to_string() });
    state.audit.record(ev).await;
    Ok(token_response(&minted, &code.scopes, refresh.as_deref()))
}

async fn refresh_token(
    state: &AppState,
    resource: &Resource,
    client: &Client,
    params: &Params,
) -> Result<Response, OAuthJsonError> {
    let presented = params.required("refresh_token")?;
    if presented.len() > 256 {
        return Err(OAuthError::invalid_grant("the refresh token is invalid").into());
    }
    check_resource_param(params, &resource.server_url)?;
    let presented_hash = sha256_hex(presented.as_bytes());
    // A malformed `scope` fails here; whether it only narrows the grant is decided inside the
    // rotating transaction, so a bad request never rotates the token.
    let requested_scopes = params.get("scope").map(scope::parse_scope_param).transpose()?;
    // DESIGN.md §4: the successor is derived from the presented token, so a retry inside the
    // grace window can be answered with the same successor without storing it in plaintext.
    let successor = state.derived.refresh_successor.sign_b64(&[b"refresh-successor", presented.as_bytes()]);
    let successor_hash = sha256_hex(successor.as_bytes());
    let now = now();
    let outcome = state
        .store
        .rotate_refresh_token(&Rotation {
            presented_hash: &presented_hash,
            successor_hash: &successor_hash,
            client_id: &client.id,
            resource_id: &resource.id,
            requested_scopes: requested_scopes.as_deref(),
            now,
            grace_seconds: state.config.refresh_reuse_grace_seconds,
            idle_ttl: resource.refresh_idle_ttl,
        })
        .await
        .map_err(|e| OAuthJsonError::internal("rotating a refresh token", e))?;
    let (family, replay) = match outcome {
        RotateOutcome::Rotated { family, .. } => (family, false),
        RotateOutcome::GraceReplay { family, .. } => (family, true),
        RotateOutcome::Reused { family_id } => {
            let mut ev = audit(resource, client, "refresh.reuse_detected", now);
            ev.detail = json!({ "revoked_family": family_id.to_string() });
            state.audit.record(ev).await;
            tracing::warn!(client_id = %client.id, family = %family_id, "refresh token reuse; family revoked");
            return Err(OAuthError::invalid_grant("the refresh token has already been used").into());
        }
        RotateOutcome::Invalid(Some(reason @ RejectReason::ScopeNotGranted)) => {
            return Err(OAuthError::invalid_scope(reason.description()).into());
        }
        RotateOutcome::Invalid(reason) => {
            let d = reason.map(|r| r.description()).unwrap_or("the refresh token is invalid");
            return Err(OAuthError::invalid_grant(d).into());
        }
    };
    let scopes = scope::narrow(params.get("scope"), &family.scopes)?;
    let subject = family.user_id.as_ref().map(|u| u.to_string()).unwrap_or_else(|| client.id.to_string());
    let minted = mint(
        state,
        &Grant {
            resource,
            client,
            subject: &subject,
            scopes: &scopes,
            session_id: family.session_id.as_deref(),
            auth_time: family.auth_time,
            family: Some(&family.id),
        },
        now,
    )?;
    let mut ev = audit(resource, client, "token.refreshed", now);
    ev.user_id = family.user_id.as_ref().map(|u| u.to_string());
    ev.detail = json!({ "family": family.id.to_string(), "scope": scope::join(&scopes), "grace_replay": replay });
    state.audit.record(ev).await;
    Ok(token_response(&minted, &scopes, Some(&successor)))
}

async fn client_credentials(
    state: &AppState,
    resource: &Resource,
    client: &Client,
    params: &Params,
) -> Result<Response, OAuthJsonError> {
    // OAuth 2.1 §4.2: only confidential clients may use client credentials.
    if !client.auth_method.is_confidential() {
        return Err(OAuthError::unauthorized_client("client credentials require a confidential client").into());
    }
    check_resource_param(params, &resource.server_url)?;
    let available: Vec<String> = resource.scopes.iter().map(|s| s.name.clone()).collect();
    let scopes = scope::resolve_requested(params.get("scope"), &available, &resource.effective_default_scopes())?;
    let now = now();
    let minted = mint(
        state,
        &Grant {
            resource,
            client,
            subject: client.id.as_str(),
            scopes: &scopes,
            session_id: None,
            auth_time: None,
            family: None,
        },
        now,
    )?;
    let mut ev = audit(resource, client, "token.issued", now);
    ev.detail = json!({ "grant_type": "client_credentials", "scope": scope::join(&scopes) });
    state.audit.record(ev).await;
    Ok(token_response(&minted, &scopes, None))
}

fn audit(resource: &Resource, client: &Client, kind: &str, now: i64) -> AuditEvent {
    let mut ev = AuditEvent::new(kind, now);
    ev.resource_id = Some(resource.id.to_string());
    ev.client_id = Some(client.id.to_string());
    ev
}
