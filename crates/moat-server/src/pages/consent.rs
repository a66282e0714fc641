//! The consent page: who is asking (client name and host), for which MCP server, and each
//! scope with its description; only scopes not granted before are asked for (DESIGN.md §6).

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::Response;
use moat_core::model::{AuditEvent, AuthorizationRequest, ClientKind, Consent};
use moat_core::{OAuthError, OAuthErrorCode, scope};

use super::login::ReqQuery;
use super::{csrf_token, csrf_valid, forbidden, internal_error, read_form, render};
use crate::http::see_other;
use crate::oauth::flow;
use crate::state::{AppState, now};

#[derive(Template)]
#[template(path = "consent.html")]
struct ConsentPage<'a> {
    brand: &'a str,
    title: &'a str,
    client_name: &'a str,
    client_host: String,
    resource_name: &'a str,
    user_email: &'a str,
    req_id: &'a str,
    csrf: String,
    new_scopes: Vec<(String, String)>,
    granted_scopes: Vec<(String, String)>,
    unverified: bool,
    metadata_document: bool,
    client_id: &'a str,
    logo: Option<String>,
    loopback: bool,
    redirect_host: String,
}

/// Host (and port) of a URL, or the scheme of a private-use redirect.
fn host_of(uri: &str) -> String {
    match url::Url::parse(uri) {
        Ok(u) => match (u.host_str(), u.port()) {
            (Some(h), Some(p)) => format!("{h}:{p}"),
            (Some(h), None) => h.to_owned(),
            (None, _) => format!("{}:", u.scheme()),
        },
        Err(_) => "unknown".to_owned(),
    }
}

/// `prompt=login` (OpenID Connect Core §3.1.2.1): only a login after the request started
/// counts, also when the consent page is opened directly instead of through the login page.
fn login_required(req: &AuthorizationRequest, bs: &flow::BrowserSession) -> bool {
    flow::Prompt::parse(req.prompt.as_deref()).unwrap_or_default().login && bs.session.auth_time < req.created_at
}

/// `GET /consent?req=…`.
pub async fn show(State(state): State<AppState>, Query(q): Query<ReqQuery>, headers: HeaderMap) -> Response {
    let (req, resource, client) = match flow::load_request(&state, &headers, q.req.as_deref()).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let bs = match flow::current_session(&state, &headers).await {
        Ok(Some(bs)) => bs,
        Ok(None) => return see_other(&format!("{}/login?req={}", state.base_url, req.id)),
        Err(e) => return internal_error(&state, "loading a session", e),
    };
    if login_required(&req, &bs) {
        return see_other(&format!("{}/login?req={}", state.base_url, req.id));
    }
    let remembered = match state.store.get_consent(&bs.user.id, &client.id, &resource.id).await {
        Ok(c) => c.map(|c| c.scopes).unwrap_or_default(),
        Err(e) => return internal_error(&state, "loading consent", e),
    };
    let describe = |names: Vec<String>| -> Vec<(String, String)> {
        names
            .into_iter()
            .map(|n| {
                let d = resource.scope(&n).map(|s| s.description.clone()).unwrap_or_default();
                (n, d)
            })
            .collect()
    };
    let new_scopes = describe(scope::difference(&req.scopes, &remembered));
    let granted_scopes = describe(req.scopes.iter().filter(|s| remembered.contains(s)).cloned().collect());
    let loopback = client.redirect_uris.iter().all(|u| moat_core::redirect::is_loopback_redirect(u));
    let metadata_document = client.kind == ClientKind::Cimd;
    // A metadata-document client is named by its URL: its host is what the user can check.
    let client_host = if metadata_document {
        moat_core::cimd::client_id_host(client.id.as_str()).unwrap_or_default()
    } else {
        host_of(&req.redirect_uri)
    };
    // Logos only for metadata-document clients, fetched through the safe fetcher and served
    // from Moat's own origin (never a third-party URL in the page).
    let logo = match client.metadata.get("logo_uri").and_then(serde_json::Value::as_str) {
        Some(url) if metadata_document => state.cimd.logo(url).await.map(|k| format!("/logos/{k}")),
        _ => None,
    };
    render(
        StatusCode::OK,
        &ConsentPage {
            brand: &state.config.brand_name,
            title: "Allow access?",
            client_name: &client.name,
            client_host,
            resource_name: &resource.name,
            user_email: &bs.user.email,
            req_id: &req.id,
            csrf: csrf_token(&state, &["consent", &req.id, &req.browser_hash, &bs.session.id]),
            new_scopes,
            granted_scopes,
            unverified: client.kind == ClientKind::Dynamic,
            metadata_document,
            client_id: client.id.as_str(),
            logo,
            loopback,
            redirect_host: host_of(&req.redirect_uri),
        },
    )
}

/// `POST /consent` with `decision=approve|deny`.
pub async fn submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form) = match read_form(&state, request).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (req, resource, client) = match flow::load_request(&state, &headers, form.get("req")).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let bs = match flow::current_session(&state, &headers).await {
        Ok(Some(bs)) => bs,
        Ok(None) => return see_other(&format!("{}/login?req={}", state.base_url, req.id)),
        Err(e) => return internal_error(&state, "loading a session", e),
    };
    if login_required(&req, &bs) {
        return see_other(&format!("{}/login?req={}", state.base_url, req.id));
    }
    if !csrf_valid(&state, &["consent", &req.id, &req.browser_hash, &bs.session.id], form.get("csrf")) {
        return forbidden(&state);
    }
    let now = now();
    match form.get("decision") {
        Some("approve") => {
            // The store merges these scopes into any remembered ones, in the same transaction
            // that issues the code (two approvals at once never lose either's scopes).
            let consent = Consent {
                user_id: bs.user.id.clone(),
                client_id: client.id.clone(),
                resource_id: resource.id.clone(),
                scopes: req.scopes.clone(),
                created_at: now,
                updated_at: now,
            };
            flow::issue_code(&state, &req, &resource, &client, &bs, Some(consent)).await
        }
        Some("deny") => {
            let mut ev = AuditEvent::new("consent.denied", now);
            ev.resource_id = Some(resource.id.to_string());
            ev.client_id = Some(client.id.to_string());
            ev.user_id = Some(bs.user.id.to_string());
            state.audit.record(ev).await;
            let err = OAuthError::new(OAuthErrorCode::AccessDenied, "the user denied the request");
            flow::finish_with_error(&state, &req, &client, err, true).await
        }
        _ => forbidden(&state),
    }
}
