//! Redirect URI rules: what may be registered (OAuth 2.1 §2.3.1, RFC 8252 §7) and how a
//! requested `redirect_uri` matches a registered one (exact string match; loopback port
//! freedom per RFC 8252 §7.3).

/// Longest redirect URI accepted.
pub const MAX_REDIRECT_URI_LEN: usize = 2000;

/// The kinds of redirect URI Moat accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `https://…`
    Https,
    /// `http://127.0.0.1…`, `http://[::1]…`, `http://localhost…` (RFC 8252 §7.3).
    LoopbackHttp,
    /// A native app's private-use scheme such as `com.example.app:/cb` (RFC 8252 §7.1).
    PrivateUseScheme,
}

/// Why a redirect URI cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("redirect URI is too long")]
    TooLong,
    #[error("redirect URI is not an absolute URI")]
    NotAbsolute,
    #[error("redirect URI must not contain a fragment")]
    Fragment,
    #[error("redirect URI must not contain user information")]
    UserInfo,
    #[error("redirect URI scheme is not allowed")]
    ForbiddenScheme,
    #[error("plain http redirect URIs are only allowed for loopback hosts")]
    InsecureHttp,
}

/// Validates a redirect URI for registration and says which kind it is.
pub fn validate_redirect_uri(uri: &str) -> Result<RedirectKind, RedirectUriError> {
    let _ = uri;
    todo!("helper")
}

/// True for an `http` redirect URI whose host is `127.0.0.1`, `[::1]` or `localhost`.
pub fn is_loopback_redirect(uri: &str) -> bool {
    let _ = uri;
    todo!("helper")
}

/// Whether `requested` matches `registered`: byte-exact equality, except that for loopback
/// `http` URIs the port may differ (host, path and query must still be exactly equal, and
/// `localhost` and `127.0.0.1` are different hosts).
pub fn matches_registered(registered: &str, requested: &str) -> bool {
    let _ = (registered, requested);
    todo!("helper")
}

/// The registered URI `requested` matches, if any.
pub fn find_match<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    registered.iter().map(String::as_str).find(|r| matches_registered(r, requested))
}
