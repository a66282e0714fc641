//! The interactive part of the authorization code flow shared by `/authorize`, `/login` and
//! `/consent`: browser binding, sessions, the login → consent → code decision, and the
//! authorization response (RFC 6749 §4.1.2, RFC 9207 `iss`).

use std::sync::Arc;

use axum::http::HeaderMap;
use axum::response::Response;
use moat_core::ids::random_secret;
use moat_core::model::{
    AuditEvent, AuthorizationCode, AuthorizationRequest, Client, ClientKind, Consent, Resource, Session, User,
};
use moat_core::redirect::{RedirectKind, validate_redirect_uri};
use moat_core::{OAuthError, scope};
use serde_json::json;

use crate::crypto::sha256_hex;
use crate::http::{cookie, see_other};
use crate::pages;
use crate::state::{AppState, now};

/// Cookie binding a pending authorization to the browser that started it.
pub const BROWSER_COOKIE: &str = "moat_browser";
/// Login session cookie.
pub const SESSION_COOKIE: &str = "moat_session";

/// A signed-in browser.
pub struct BrowserSession {
    pub session: Session,
    pub user: User,
}

/// The browser-binding cookie value, if the request has one.
pub fn browser_cookie<'a>(state: &AppState, headers: &'a HeaderMap) -> Option<&'a str> {
    cookie(headers, &state.cookie_name(BROWSER_COOKIE)).filter(|v| v.len() == 43)
}

/// The current session, if the cookie names a live one whose user is enabled. Refreshes its
/// idle timer (see below).
pub async fn current_session(state: &AppState, headers: &HeaderMap) -> anyhow::Result<Option<BrowserSession>> {
    let Some(token) = cookie(headers, &state.cookie_name(SESSION_COOKIE)).filter(|v| v.len() == 43) else {
        return Ok(None);
    };
    let hash = sha256_hex(token.as_bytes());
    let Some(session) = state.store.get_session_by_token_hash(&hash).await? else {
        return Ok(None);
    };
    let now = now();
    if now >= session.expires_at || now - session.last_seen_at >= state.config.session_idle_seconds {
        state.store.delete_session(&hash).await?;
        return Ok(None);
    }
    let Some(user) = state.store.get_user(&session.user_id).await? else {
        return Ok(None);
    };
    if user.disabled {
        return Ok(None);
    }
    // Refresh the idle timer at most once a minute (fewer writes), and at least twice per idle
    // period so that short idle settings never sign out an active user.
    if now - session.last_seen_at >= (state.config.session_idle_seconds / 2).clamp(1, 60) {
        state.store.touch_session(&hash, now).await?;
    }
    Ok(Some(BrowserSession { session, user }))
}

/// Flags of the `prompt` parameter (OpenID Connect Core §3.1.2.1).
#[derive(Debug, Default, Clone, Copy)]
pub struct Prompt {
    pub none: bool,
    pub login: bool,
    pub consent: bool,
}

impl Prompt {
    pub fn parse(s: Option<&str>) -> Result<Self, OAuthError> {
        let mut p = Prompt::default();
        for v in s.unwrap_or_default().split(' ').filter(|v| !v.is_empty()) {
            match v {
                "none" => p.none = true,
                "login" => p.login = true,
                "consent" => p.consent = true,
                // Unknown values (select_account, create, …) are ignored: Moat shows its own
                // pages in any case.
                _ => {}
            }
        }
        if p.none && (p.login || p.consent) {
            return Err(OAuthError::invalid_request("prompt=none cannot be combined with other values"));
        }
        Ok(p)
    }
}

/// Appends parameters to a redirect URI, keeping its existing query (RFC 6749 §3.1.2).
pub fn append_query(uri: &str, pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    let q = ser.finish();
    let sep = if uri.contains('?') { '&' } else { '?' };
    format!("{uri}{sep}{q}")
}

/// Where an error authorization response goes: the already validated redirect URI with
/// `error`, `state` and `iss` (RFC 6749 §4.1.2.1, RFC 9207 §2).
fn error_location(redirect_uri: &str, err: &OAuthError, state: Option<&str>, issuer: &str) -> String {
    let mut pairs = vec![("error", err.code.as_str()), ("error_description", err.description.as_str())];
    if let Some(s) = state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", issuer));
    append_query(redirect_uri, &pairs)
}

/// Whether Moat may send an error to the client's redirect URI without the user's say: only
/// for clients the operator registered. Anyone can register a dynamic client or publish a
/// metadata document naming any redirect URI, so for those an error that the user did not
/// cause by a decision (a malformed request, `prompt=none`) would make Moat an open redirector
/// (RFC 9700 §4.11.2).
fn redirect_trusted(client: &Client) -> bool {
    client.kind == ClientKind::PreRegistered
}

/// An error authorization response that is not the user's own decision: a redirect for a
/// trusted client, otherwise a page with a link back (see [`redirect_trusted`]).
pub fn error_response(
    state: &AppState,
    client: &Client,
    redirect_uri: &str,
    err: &OAuthError,
    state_param: Option<&str>,
    issuer: &str,
) -> Response {
    let location = error_location(redirect_uri, err, state_param, issuer);
    if redirect_trusted(client) {
        see_other(&location)
    } else {
        pages::untrusted_error_page(state, &client.name, err, &location)
    }
}

/// Whether remembered consent may be applied without showing the consent page: only for
/// clients whose identity Moat can verify, redirecting to an https URI (DESIGN.md §6,
/// RFC 8252 §8.6: loopback and private-use-scheme redirects can be claimed by any local app).
pub fn client_verifiable(client: &Client, redirect_uri: &str) -> bool {
    matches!(client.kind, ClientKind::PreRegistered | ClientKind::Cimd)
        && matches!(validate_redirect_uri(redirect_uri), Ok(RedirectKind::Https))
}

/// Loads a pending request and checks it belongs to this browser and has not expired.
pub async fn load_request(
    state: &AppState,
    headers: &HeaderMap,
    id: Option<&str>,
) -> Result<(AuthorizationRequest, Arc<Resource>, Client), Response> {
    let expired = || {
        pages::error_page(
            state,
            axum::http::StatusCode::BAD_REQUEST,
            "This sign-in request is no longer valid",
            "It has expired or was already completed. Return to the application and start again.",
        )
    };
    // Request ids are short base64url (`random_secret`); anything else is not one, and never reaches the
    // database (PostgreSQL refuses some bytes outright).
    let Some(id) =
        id.filter(|i| i.len() <= 64 && i.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_' || b == b'-'))
    else {
        return Err(expired());
    };
    let req = match state.store.get_authorization_request(id).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(expired()),
        Err(e) => {
            return Err(pages::internal_error(state, "loading an authorization request", e));
        }
    };
    if now() >= req.expires_at {
        return Err(expired());
    }
    let bound = browser_cookie(state, headers)
        .is_some_and(|b| crate::crypto::ct_eq(sha256_hex(b.as_bytes()).as_bytes(), req.browser_hash.as_bytes()));
    if !bound {
        return Err(pages::error_page(
            state,
            axum::http::StatusCode::FORBIDDEN,
            "Open this sign-in in the browser that started it",
            "This sign-in request was started in a different browser (or its cookies were cleared). \
             Return to the application and start again.",
        ));
    }
    let resource = match state.resource(req.resource_id.as_str()).await {
        Ok(Some(r)) => r,
        Ok(None) => return Err(expired()),
        Err(e) => return Err(pages::internal_error(state, "loading a resource", e)),
    };
    let client = match state.store.get_client(&req.resource_id, &req.client_id).await {
        Ok(Some(c)) if !c.disabled => c,
        Ok(_) => return Err(expired()),
        Err(e) => return Err(pages::internal_error(state, "loading a client", e)),
    };
    Ok((req, resource, client))
}

/// Decides the next step of a pending request for this browser, given its current session:
/// the login page, the consent page, or (remembered consent, verifiable client) the redirect
/// back with a code.
pub async fn proceed(
    state: &AppState,
    req: &AuthorizationRequest,
    resource: &Resource,
    client: &Client,
    session: Option<BrowserSession>,
) -> Response {
    let prompt = Prompt::parse(req.prompt.as_deref()).unwrap_or_default();
    // prompt=login: only a login that happened after this request started counts.
    let session = session.filter(|s| !(prompt.login && s.session.auth_time < req.created_at));
    let Some(bs) = session else {
        if prompt.none {
            let e = OAuthError::new(moat_core::OAuthErrorCode::LoginRequired, "the user is not signed in");
            return finish_with_error(state, req, client, e, false).await;
        }
        return see_other(&format!("{}/login?req={}", state.base_url, req.id));
    };
    let remembered = match state.store.get_consent(&bs.user.id, &client.id, &resource.id).await {
        Ok(c) => c,
        Err(e) => return pages::internal_error(state, "loading consent", e),
    };
    let missing = scope::difference(&req.scopes, remembered.as_ref().map(|c| c.scopes.as_slice()).unwrap_or_default());
    let silent =
        remembered.is_some() && missing.is_empty() && !prompt.consent && client_verifiable(client, &req.redirect_uri);
    if silent {
        return issue_code(state, req, resource, client, &bs, None).await;
    }
    if prompt.none {
        let e = OAuthError::new(moat_core::OAuthErrorCode::ConsentRequired, "the user has not approved this client");
        return finish_with_error(state, req, client, e, false).await;
    }
    see_other(&format!("{}/consent?req={}", state.base_url, req.id))
}

/// Ends a pending request with an error for the client. `by_user` is true when the user
/// decided it (the deny button): that goes straight back, as the user asked; other errors follow
/// [`error_response`].
pub async fn finish_with_error(
    state: &AppState,
    req: &AuthorizationRequest,
    client: &Client,
    err: OAuthError,
    by_user: bool,
) -> Response {
    if let Err(e) = state.store.delete_authorization_request(&req.id).await {
        return pages::internal_error(state, "deleting an authorization request", e);
    }
    let issuer = state.issuer(&req.resource_id);
    if by_user {
        // RFC 9110 §15.4.4: 303 turns the form POST into a GET (RFC 9700 §4.12).
        see_other(&error_location(&req.redirect_uri, &err, req.state.as_deref(), &issuer))
    } else {
        error_response(state, client, &req.redirect_uri, &err, req.state.as_deref(), &issuer)
    }
}

/// Issues the authorization code and redirects back to the client with `code`, `state` and
/// `iss`. `consent` is the consent to remember (when the user just approved).
pub async fn issue_code(
    state: &AppState,
    req: &AuthorizationRequest,
    resource: &Resource,
    client: &Client,
    bs: &BrowserSession,
    consent: Option<Consent>,
) -> Response {
    let now = now();
    let code = random_secret();
    let record = AuthorizationCode {
        code_hash: sha256_hex(code.as_bytes()),
        resource_id: resource.id.clone(),
        client_id: client.id.clone(),
        user_id: bs.user.id.clone(),
        session_id: Some(bs.session.id.clone()),
        redirect_uri: req.redirect_uri.clone(),
        redirect_uri_explicit: req.redirect_uri_explicit,
        scopes: req.scopes.clone(),
        code_challenge: req.code_challenge.clone(),
        resource_url: req.resource_url.clone(),
        auth_time: bs.session.auth_time,
        created_at: now,
        expires_at: now + state.config.auth_code_ttl_seconds,
        consumed_at: None,
        family_id: None,
    };
    match state.store.complete_authorization(&req.id, &record, consent.as_ref()).await {
        Ok(true) => {}
        Ok(false) => {
            return pages::error_page(
                state,
                axum::http::StatusCode::BAD_REQUEST,
                "This sign-in request is no longer valid",
                "It was already completed. Return to the application.",
            );
        }
        Err(e) => return pages::internal_error(state, "completing an authorization", e),
    }
    let mut ev = AuditEvent::new(if consent.is_some() { "consent.granted" } else { "authorization.approved" }, now);
    ev.resource_id = Some(resource.id.to_string());
    ev.client_id = Some(client.id.to_string());
    ev.user_id = Some(bs.user.id.to_string());
    ev.detail = json!({ "scope": scope::join(&req.scopes), "remembered": consent.is_none() });
    state.audit.record(ev).await;
    let issuer = state.issuer(&resource.id);
    let mut pairs = vec![("code", code.as_str())];
    if let Some(s) = &req.state {
        pairs.push(("state", s));
    }
    pairs.push(("iss", &issuer));
    // 303 rather than 302: this often answers the login or consent form POST, and a redirect
    // that may carry the user's credentials must turn into a GET (RFC 9700 §4.12).
    see_other(&append_query(&req.redirect_uri, &pairs))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn query_appending_keeps_existing_query() {
        assert_eq!(append_query("https://a/cb", &[("code", "x y")]), "https://a/cb?code=x+y");
        assert_eq!(append_query("https://a/cb?k=v", &[("code", "c")]), "https://a/cb?k=v&code=c");
    }

    #[test]
    fn prompt_rules() {
        assert!(Prompt::parse(Some("none login")).is_err());
        let p = Prompt::parse(Some("login consent")).unwrap();
        assert!(p.login && p.consent && !p.none);
        assert!(!Prompt::parse(Some("select_account")).unwrap().none);
    }
}
