//! The authorization endpoint (RFC 6749 §4.1.1, OAuth 2.1 §4.1.1, RFC 7636, RFC 8707, RFC 9207,
//! MCP authorization spec).
//!
//! Order matters: until the client and its redirect URI are validated every error is shown to
//! the user and never redirected (RFC 6749 §4.1.2.1, RFC 9700 §4.11); afterwards errors go back
//! to the client with `state` and `iss`.

use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moat_core::ids::{ClientId, random_secret};
use moat_core::model::{AuthorizationRequest, GrantType};
use moat_core::{OAuthError, OAuthErrorCode, pkce, redirect, scope};

use super::flow::{self, BROWSER_COOKIE, Prompt};
use crate::crypto::sha256_hex;
use crate::http::{Params, client_ip, read_body, set_cookie};
use crate::pages;
use crate::state::{AppState, now};

/// Longest `state` echoed back.
const MAX_STATE_LEN: usize = 2048;

/// `GET {issuer}/oauth/authorize`.
pub async fn authorize_get(
    State(state): State<AppState>,
    Path(resource_id): Path<String>,
    request: Request,
) -> Response {
    let ip = client_ip(&request, state.config.trusted_proxy_header.as_deref()).map(|i| i.to_string());
    let query = request.uri().query().unwrap_or_default().to_owned();
    start(&state, &resource_id, query.as_bytes(), request.headers(), ip.as_deref()).await
}

/// `POST {issuer}/oauth/authorize` (form-encoded, OAuth 2.1 §4.1.1 allows POST).
pub async fn authorize_post(
    State(state): State<AppState>,
    Path(resource_id): Path<String>,
    request: Request,
) -> Response {
    let ip = client_ip(&request, state.config.trusted_proxy_header.as_deref()).map(|i| i.to_string());
    let (parts, body) = request.into_parts();
    match read_body(body, state.config.max_body_bytes).await {
        Ok(bytes) => start(&state, &resource_id, &bytes, &parts.headers, ip.as_deref()).await,
        Err(_) => pages::error_page(
            &state,
            StatusCode::PAYLOAD_TOO_LARGE,
            "Request too large",
            "The authorization request is too large.",
        ),
    }
}

fn capitalize(s: &str) -> String {
    let mut c = s.chars();
    c.next().map(|f| f.to_uppercase().chain(c).collect()).unwrap_or_default()
}

fn bad_request(state: &AppState, message: &str) -> Response {
    pages::error_page(state, StatusCode::BAD_REQUEST, "This authorization request is invalid", message)
}

async fn start(state: &AppState, resource_id: &str, raw: &[u8], headers: &HeaderMap, ip: Option<&str>) -> Response {
    let params = match Params::parse(raw) {
        Ok(p) => p,
        Err(e) => return bad_request(state, &e.description),
    };
    let resource = match state.resource(resource_id).await {
        Ok(Some(r)) => r,
        Ok(None) => {
            return pages::error_page(
                state,
                StatusCode::NOT_FOUND,
                "Unknown MCP server",
                "No MCP server is registered at this address.",
            );
        }
        Err(e) => return pages::internal_error(state, "loading a resource", e),
    };
    let issuer = state.issuer(&resource.id);

    // --- client and redirect URI: errors are shown, never redirected --------------------------
    if params.is_duplicated("client_id") || params.is_duplicated("redirect_uri") {
        return bad_request(state, "The client_id or redirect_uri parameter was given more than once.");
    }
    let Some(client_id) = params.get("client_id").and_then(ClientId::parse) else {
        return bad_request(state, "The request has no valid client_id.");
    };
    let client = match super::clients::lookup(state, &resource, &client_id, ip).await {
        Ok(found) => found.client,
        Err(super::clients::LookupError::Store(e)) => return pages::internal_error(state, "loading a client", e),
        Err(e @ super::clients::LookupError::RateLimited) => {
            let message = format!("{}.", capitalize(&e.to_string()));
            let mut resp = pages::error_page(state, StatusCode::TOO_MANY_REQUESTS, "Please try again later", &message);
            resp.headers_mut().insert(header::RETRY_AFTER, axum::http::HeaderValue::from_static("60"));
            return resp;
        }
        Err(e) => return bad_request(state, &format!("{}.", capitalize(&e.to_string()))),
    };
    let (redirect_uri, explicit) = match params.get("redirect_uri") {
        Some(r) => match redirect::find_match(&client.redirect_uris, r) {
            Some(_) => (r.to_owned(), true),
            None => {
                return bad_request(state, "The redirect_uri is not registered for this application.");
            }
        },
        None => match client.redirect_uris.as_slice() {
            [only] => (only.clone(), false),
            _ => return bad_request(state, "The request must include a redirect_uri."),
        },
    };

    // --- from here on, errors go back to the client --------------------------------------------
    // `state` is echoed exactly as received. Params already refused invalid UTF-8 and NUL; other
    // characters outside RFC 6749's VSCHAR are tolerated (clients compare it byte for byte, and
    // refusing them would only break a client that works elsewhere).
    let state_param = params.get("state").filter(|s| !params.is_duplicated("state") && s.len() <= MAX_STATE_LEN);
    let fail = |e: OAuthError| flow::error_response(state, &client, &redirect_uri, &e, state_param, &issuer);
    if params.get("state").is_some_and(|s| s.len() > MAX_STATE_LEN) {
        return fail(OAuthError::invalid_request("state is too long"));
    }
    // RFC 8707 §2 lets a client name several resources; Moat issues a token for one resource
    // per request, so more than one is `invalid_target`.
    if params.is_duplicated("resource") {
        return fail(OAuthError::invalid_target("only one resource may be requested"));
    }
    if let Err(e) = params.reject_duplicates() {
        return fail(e);
    }
    match params.get("response_type") {
        Some("code") => {}
        Some(_) => {
            return fail(OAuthError::new(
                OAuthErrorCode::UnsupportedResponseType,
                "only response_type=code is supported",
            ));
        }
        None => {
            return fail(OAuthError::invalid_request("missing parameter response_type"));
        }
    }
    if params.get("response_mode").is_some_and(|m| m != "query") {
        return fail(OAuthError::invalid_request("only response_mode=query is supported"));
    }
    if params.get("request").is_some() || params.get("request_uri").is_some() {
        return fail(OAuthError::invalid_request("request objects are not supported"));
    }
    if !client.allows_grant(GrantType::AuthorizationCode) {
        return fail(OAuthError::unauthorized_client("this client may not use the authorization code grant"));
    }
    let challenge =
        match pkce::check_authorization_params(params.get("code_challenge"), params.get("code_challenge_method")) {
            Ok(c) => c,
            Err(e) => return fail(e),
        };
    // RFC 8707 / MCP: absent `resource` means this issuer's MCP server.
    let resource_url = match params.get("resource") {
        None => resource.server_url.clone(),
        Some(r) => {
            if moat_core::url::canonical_resource(r).is_err() {
                return fail(OAuthError::invalid_target("resource must be an absolute URI without a fragment"));
            }
            if !moat_core::url::same_resource(r, &resource.server_url) {
                return fail(OAuthError::invalid_target(
                    "this authorization server does not issue tokens for that resource",
                ));
            }
            r.to_owned()
        }
    };
    let available: Vec<String> = resource.scopes.iter().map(|s| s.name.clone()).collect();
    let scopes = match scope::resolve_requested(params.get("scope"), &available, &resource.effective_default_scopes()) {
        Ok(s) => s,
        Err(e) => return fail(e),
    };
    let prompt = params.get("prompt");
    if let Err(e) = Prompt::parse(prompt) {
        return fail(e);
    }
    if prompt.is_some_and(|p| p.len() > 100) {
        return fail(OAuthError::invalid_request("prompt is too long"));
    }

    // --- remember the request server side, bound to this browser ------------------------------
    let existing = flow::browser_cookie(state, headers).map(str::to_owned);
    let browser = existing.clone().unwrap_or_else(random_secret);
    let now = now();
    let req = AuthorizationRequest {
        id: random_secret(),
        browser_hash: sha256_hex(browser.as_bytes()),
        resource_id: resource.id.clone(),
        client_id: client.id.clone(),
        redirect_uri,
        redirect_uri_explicit: explicit,
        scopes,
        state: state_param.map(str::to_owned),
        code_challenge: challenge,
        resource_url,
        prompt: prompt.map(str::to_owned),
        created_at: now,
        expires_at: now + state.config.authorization_request_ttl_seconds,
    };
    if let Err(e) = state.store.create_authorization_request(&req).await {
        return pages::internal_error(state, "storing an authorization request", e);
    }
    // OpenID Connect Core §3.1.2.1: `prompt=login` must re-authenticate the user. Every session
    // that exists when the request starts predates it, so none counts here (comparing
    // `auth_time` with `created_at` alone lets a login from the same second through).
    let session = match flow::current_session(state, headers).await {
        Ok(_) if Prompt::parse(prompt).unwrap_or_default().login => None,
        Ok(s) => s,
        Err(e) => return pages::internal_error(state, "loading a session", e),
    };
    let mut resp = flow::proceed(state, &req, &resource, &client, session).await;
    if existing.is_none() {
        let cookie = set_cookie(&state.cookie_name(BROWSER_COOKIE), &browser, None, state.secure());
        resp.headers_mut().append(header::SET_COOKIE, cookie);
    }
    resp.into_response()
}
