//! HTTP plumbing shared by every route: OAuth JSON errors (RFC 6749 §5.2), body reading with an
//! explicit limit, cookies, the client's address, and response headers.

pub mod params;

use std::net::{IpAddr, SocketAddr};

use axum::body::Body;
use axum::extract::ConnectInfo;
use axum::http::{HeaderMap, HeaderValue, Request, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moat_core::{OAuthError, OAuthErrorCode};
use serde_json::json;

pub use params::Params;

/// An OAuth error rendered as the RFC 6749 §5.2 JSON body.
#[derive(Debug)]
pub struct OAuthJsonError {
    pub error: OAuthError,
    /// `WWW-Authenticate` challenge for `invalid_client` when the client authenticated with the
    /// `Authorization` header (RFC 6749 §5.2).
    pub challenge: Option<&'static str>,
    pub status: StatusCode,
}

impl OAuthJsonError {
    pub fn new(error: OAuthError) -> Self {
        let status = match error.code {
            OAuthErrorCode::InvalidClient => StatusCode::UNAUTHORIZED,
            OAuthErrorCode::ServerError => StatusCode::INTERNAL_SERVER_ERROR,
            OAuthErrorCode::TemporarilyUnavailable => StatusCode::SERVICE_UNAVAILABLE,
            _ => StatusCode::BAD_REQUEST,
        };
        Self { error, challenge: None, status }
    }

    pub fn with_status(mut self, status: StatusCode) -> Self {
        self.status = status;
        self
    }

    pub fn with_challenge(mut self, challenge: &'static str) -> Self {
        self.challenge = Some(challenge);
        self
    }

    /// Logs an internal error with context and returns an opaque `server_error`.
    pub fn internal(context: &str, err: impl std::fmt::Display) -> Self {
        tracing::error!(error = %err, "{context}");
        Self::new(OAuthError::server_error())
    }
}

impl From<OAuthError> for OAuthJsonError {
    fn from(e: OAuthError) -> Self {
        Self::new(e)
    }
}

impl IntoResponse for OAuthJsonError {
    fn into_response(self) -> Response {
        let body = json!({ "error": self.error.code.as_str(), "error_description": self.error.description });
        let mut resp = (self.status, no_store_json(body)).into_response();
        if let Some(c) = self.challenge {
            resp.headers_mut().insert(header::WWW_AUTHENTICATE, HeaderValue::from_static(c));
        }
        resp
    }
}

/// A JSON response with `Cache-Control: no-store` and `Pragma: no-cache` (RFC 6749 §5.1).
pub fn no_store_json(body: serde_json::Value) -> Response {
    let mut resp = axum::Json(body).into_response();
    let h = resp.headers_mut();
    h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    h.insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    resp
}

/// Reads a request body up to `limit` bytes; larger bodies are refused with an OAuth error
/// (413) instead of being buffered.
pub async fn read_body(body: Body, limit: usize) -> Result<bytes::Bytes, OAuthJsonError> {
    axum::body::to_bytes(body, limit).await.map_err(|_| {
        OAuthJsonError::new(OAuthError::invalid_request(format!("request body exceeds {limit} bytes")))
            .with_status(StatusCode::PAYLOAD_TOO_LARGE)
    })
}

/// Requires `Content-Type: application/x-www-form-urlencoded` (RFC 6749 §3.2, §4.1.3).
pub fn require_form_content_type(headers: &HeaderMap) -> Result<(), OAuthJsonError> {
    let ok = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/x-www-form-urlencoded"));
    if ok {
        Ok(())
    } else {
        Err(OAuthError::invalid_request("Content-Type must be application/x-www-form-urlencoded").into())
    }
}

/// The value of cookie `name` in the request, if any.
pub fn cookie<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(k, _)| *k == name)
        .map(|(_, v)| v)
}

/// The client's address: the right-most entry of the trusted proxy header when one is
/// configured (the address the trusted proxy itself saw), else the TCP peer.
pub fn client_ip<B>(req: &Request<B>, trusted_header: Option<&str>) -> Option<IpAddr> {
    if let Some(name) = trusted_header {
        return req
            .headers()
            .get_all(name)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .flat_map(|v| v.split(','))
            .filter_map(|s| s.trim().parse::<IpAddr>().ok())
            .next_back();
    }
    req.extensions().get::<ConnectInfo<SocketAddr>>().map(|c| c.0.ip())
}

/// Security headers for HTML pages (DESIGN.md §10). `form-action` is deliberately absent:
/// Chromium applies it to the redirect that follows a form submission, and the consent form's
/// redirect goes to the client's own `redirect_uri`.
pub fn page_security_headers(headers: &mut HeaderMap) {
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; style-src 'self'; img-src 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
    );
    headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    headers.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    headers.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
}

/// A `303 See Other` to `location`, with no-store (used after form posts and for OAuth
/// redirects; 303 turns the browser's POST into a GET, RFC 9110 §15.4.4).
pub fn see_other(location: &str) -> Response {
    let mut resp = StatusCode::SEE_OTHER.into_response();
    if let Ok(v) = HeaderValue::from_str(location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp.headers_mut().insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    resp.headers_mut().insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    resp
}

/// Builds a `Set-Cookie` value. `secure` adds `Secure`; the caller picks a `__Host-` name only
/// together with `secure` (browsers reject `__Host-` cookies without it).
pub fn set_cookie(name: &str, value: &str, max_age: Option<i64>, secure: bool) -> HeaderValue {
    let mut s = format!("{name}={value}; Path=/; HttpOnly; SameSite=Lax");
    if let Some(age) = max_age {
        s.push_str(&format!("; Max-Age={age}"));
    }
    if secure {
        s.push_str("; Secure");
    }
    HeaderValue::from_str(&s).unwrap_or_else(|_| HeaderValue::from_static("invalid=; Max-Age=0"))
}

/// The `Sec-Fetch-Site` check behind every form POST (Fetch Metadata): a request a browser
/// marks `cross-site` or `same-site` did not come from our own pages. Requests without the
/// header (non-browser clients, old browsers) fall back on the per-form CSRF token alone.
pub fn fetch_site_allowed(headers: &HeaderMap) -> bool {
    match headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(v) => v.eq_ignore_ascii_case("same-origin") || v.eq_ignore_ascii_case("none"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cookie_lookup() {
        let mut h = HeaderMap::new();
        h.insert(header::COOKIE, HeaderValue::from_static("a=1; moat_session=xyz; b=2"));
        assert_eq!(cookie(&h, "moat_session"), Some("xyz"));
        assert_eq!(cookie(&h, "missing"), None);
    }

    #[test]
    fn proxy_header_uses_rightmost_entry() {
        let req = Request::builder().header("x-forwarded-for", "203.0.113.9, 198.51.100.7").body(()).unwrap();
        assert_eq!(client_ip(&req, Some("x-forwarded-for")), Some("198.51.100.7".parse().unwrap()));
        assert_eq!(client_ip(&req, None), None);
    }

    #[test]
    fn fetch_metadata() {
        let mut h = HeaderMap::new();
        assert!(fetch_site_allowed(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-origin"));
        assert!(fetch_site_allowed(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("cross-site"));
        assert!(!fetch_site_allowed(&h));
        h.insert("sec-fetch-site", HeaderValue::from_static("same-site"));
        assert!(!fetch_site_allowed(&h));
    }
}
