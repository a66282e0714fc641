//! URL rules: canonical comparison of resource URLs (RFC 8707 §2, RFC 3986 §6), validation of
//! the public base URL and of registered MCP server URLs, and RFC 8414 §3.1 path insertion.

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    #[error("not an absolute URL")]
    NotAbsolute,
    #[error("URL scheme must be https (or http for a loopback host)")]
    Scheme,
    #[error("URL must not contain a fragment")]
    Fragment,
    #[error("URL must not contain user information")]
    UserInfo,
    #[error("URL must not have a path, query or trailing slash")]
    NotAnOrigin,
    #[error("URL is too long")]
    TooLong,
}

/// Longest resource or server URL accepted.
pub const MAX_URL_LEN: usize = 2000;

/// The canonical form used to compare resource URLs: lowercase scheme and host, default port
/// dropped, empty path and a trailing slash ignored, no fragment allowed.
pub fn canonical_resource(url: &str) -> Result<String, UrlError> {
    let _ = url;
    todo!("helper")
}

/// True when both URLs are valid resource URLs with the same canonical form.
pub fn same_resource(a: &str, b: &str) -> bool {
    match (canonical_resource(a), canonical_resource(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// Validates an MCP server URL for registration: absolute, https (or http for a loopback
/// host), no fragment, no userinfo, at most [`MAX_URL_LEN`].
pub fn validate_server_url(url: &str) -> Result<(), UrlError> {
    let _ = url;
    todo!("helper")
}

/// Validates Moat's public URL: an origin (scheme http/https, host, optional port), no path,
/// query or fragment; a single trailing slash is removed. Returns the normalised origin.
pub fn parse_public_url(url: &str) -> Result<String, UrlError> {
    let _ = url;
    todo!("helper")
}

/// RFC 8414 §3.1 / RFC 9728 §3.1 path insertion: `https://h/p` + `oauth-authorization-server`
/// → `https://h/.well-known/oauth-authorization-server/p` (no trailing slash when the path is
/// empty).
pub fn well_known_url(url: &str, suffix: &str) -> Result<String, UrlError> {
    let _ = (url, suffix);
    todo!("helper")
}
