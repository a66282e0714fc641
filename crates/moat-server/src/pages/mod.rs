//! Server-rendered HTML pages (askama): login, consent, logout, errors. They work without
//! JavaScript, carry strict security headers (DESIGN.md §10) and protect every form against
//! CSRF with a per-form token bound to the browser and the pending request, plus the
//! `Sec-Fetch-Site` check.

mod consent;
mod login;
mod logout;

use askama::Template;
use axum::Router;
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use crate::http::{Params, fetch_site_allowed, page_security_headers, read_body};
use crate::state::AppState;

pub fn router() -> Router<AppState> {
    Router::new()
        .route("/login", get(login::show).post(login::submit))
        .route("/consent", get(consent::show).post(consent::submit))
        .route("/logout", get(logout::show).post(logout::submit))
        .route("/assets/moat.css", get(stylesheet))
        .route("/logos/{key}", get(logo))
}

#[derive(Template)]
#[template(path = "message.html")]
struct MessagePage<'a> {
    brand: &'a str,
    title: &'a str,
    message: &'a str,
    logout_csrf: Option<String>,
    /// A link the user may follow (`href`, label).
    link: Option<(&'a str, &'a str)>,
}

/// Renders a template with the page security headers.
pub fn render(status: StatusCode, page: &impl Template) -> Response {
    match page.render() {
        Ok(html) => {
            let mut resp = (status, axum::response::Html(html)).into_response();
            page_security_headers(resp.headers_mut());
            resp
        }
        Err(e) => {
            tracing::error!(error = %e, "rendering a page failed");
            let mut resp = (StatusCode::INTERNAL_SERVER_ERROR, "internal error").into_response();
            page_security_headers(resp.headers_mut());
            resp
        }
    }
}

/// A page explaining an error to the user (never a redirect).
pub fn error_page(state: &AppState, status: StatusCode, title: &str, message: &str) -> Response {
    render(status, &MessagePage { brand: &state.config.brand_name, title, message, logout_csrf: None, link: None })
}

/// An authorization error for a client anyone could have registered (dynamic registration, a
/// metadata document): shown to the user with a link back to the application, never an
/// automatic redirect, so Moat's URL cannot be used to bounce people to a site of an attacker's
/// choosing (RFC 9700 §4.11.2: redirect automatically only to a trusted redirect URI, otherwise
/// inform the user and let them decide).
pub fn untrusted_error_page(
    state: &AppState,
    client_name: &str,
    err: &moat_core::OAuthError,
    location: &str,
) -> Response {
    let host = url::Url::parse(location)
        .ok()
        .map(|u| u.host_str().map(str::to_owned).unwrap_or_else(|| format!("{}:", u.scheme())))
        .unwrap_or_default();
    let message = format!(
        "{client_name} ({host}) sent a sign-in request that could not be completed: {}. \
         You can return to the application, which will be told what went wrong.",
        err.description
    );
    let label = format!("Return to {host}");
    render(
        StatusCode::BAD_REQUEST,
        &MessagePage {
            brand: &state.config.brand_name,
            title: "This sign-in request could not be completed",
            message: &message,
            logout_csrf: None,
            link: Some((location, &label)),
        },
    )
}

/// Logs an internal error with context and shows an opaque error page.
pub fn internal_error(state: &AppState, context: &str, err: impl std::fmt::Display) -> Response {
    tracing::error!(error = %err, "{context}");
    error_page(
        state,
        StatusCode::INTERNAL_SERVER_ERROR,
        "Something went wrong",
        "Moat could not complete this step. Please try again in a moment.",
    )
}

fn message_page(state: &AppState, title: &str, message: &str, logout_csrf: Option<String>) -> Response {
    render(StatusCode::OK, &MessagePage { brand: &state.config.brand_name, title, message, logout_csrf, link: None })
}

/// CSRF token for a form: an HMAC over the form's purpose and what it is bound to.
fn csrf_token(state: &AppState, parts: &[&str]) -> String {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    state.derived.csrf.sign_b64(&bytes)
}

fn csrf_valid(state: &AppState, parts: &[&str], presented: Option<&str>) -> bool {
    let bytes: Vec<&[u8]> = parts.iter().map(|p| p.as_bytes()).collect();
    presented.is_some_and(|t| state.derived.csrf.verify_b64(&bytes, t))
}

/// Reads a page's form POST: refuses cross-site submissions (`Sec-Fetch-Site`), bodies over the
/// limit and malformed encodings with the 403 page; returns the headers and the fields.
async fn read_form(
    state: &AppState,
    request: axum::extract::Request,
) -> Result<(axum::http::HeaderMap, Params), Response> {
    let (parts, body) = request.into_parts();
    if !fetch_site_allowed(&parts.headers) {
        return Err(forbidden(state));
    }
    let bytes = read_body(body, state.config.max_body_bytes).await.map_err(|_| forbidden(state))?;
    let form = Params::parse(&bytes).map_err(|_| forbidden(state))?;
    Ok((parts.headers, form))
}

fn forbidden(state: &AppState) -> Response {
    error_page(
        state,
        StatusCode::FORBIDDEN,
        "This form could not be accepted",
        "The form was not submitted from this site, or it has expired. Go back and try again.",
    )
}

/// A client logo fetched through the safe fetcher, served from Moat's own origin with a
/// restrictive policy (`nosniff`, no scripts) so an image can never become active content.
async fn logo(
    axum::extract::State(state): axum::extract::State<AppState>,
    axum::extract::Path(key): axum::extract::Path<String>,
) -> Response {
    match state.cimd.cached_logo(&key) {
        Some(l) => {
            let mut resp = l.bytes.into_response();
            let h = resp.headers_mut();
            if let Ok(v) = HeaderValue::from_str(&l.content_type) {
                h.insert(header::CONTENT_TYPE, v);
            }
            h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
            h.insert(header::CONTENT_SECURITY_POLICY, HeaderValue::from_static("default-src 'none'; sandbox"));
            h.insert(header::CACHE_CONTROL, HeaderValue::from_static("private, max-age=300"));
            resp
        }
        None => StatusCode::NOT_FOUND.into_response(),
    }
}

async fn stylesheet() -> Response {
    let mut resp =
        ([(header::CONTENT_TYPE, "text/css; charset=utf-8")], include_str!("../../assets/moat.css")).into_response();
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("public, max-age=3600"));
    resp.headers_mut().insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    resp
}
