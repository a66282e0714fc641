//! OAuth error codes (RFC 6749 §4.1.2.1 and §5.2, RFC 7591 §3.2.2, RFC 8707 §2, RFC 6750 §3.1,
//! OpenID Connect Core §3.1.2.6) and the error value every protocol check returns.

use std::fmt;

/// Every error code Moat emits on the OAuth wire, spelled exactly as the RFCs spell them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum OAuthErrorCode {
    /// RFC 6749 §4.1.2.1 / §5.2.
    InvalidRequest,
    /// RFC 6749 §5.2: client authentication failed.
    InvalidClient,
    /// RFC 6749 §5.2: the grant (code, refresh token) is invalid, expired, revoked or mismatched.
    InvalidGrant,
    /// RFC 6749 §4.1.2.1 / §5.2.
    UnauthorizedClient,
    /// RFC 6749 §5.2.
    UnsupportedGrantType,
    /// RFC 6749 §4.1.2.1 / §5.2.
    InvalidScope,
    /// RFC 8707 §2: the `resource` is unknown or not allowed.
    InvalidTarget,
    /// RFC 6749 §4.1.2.1: the user or server denied the request.
    AccessDenied,
    /// RFC 6749 §4.1.2.1.
    UnsupportedResponseType,
    /// RFC 6749 §4.1.2.1.
    ServerError,
    /// RFC 6749 §4.1.2.1.
    TemporarilyUnavailable,
    /// OpenID Connect Core §3.1.2.6, used for `prompt=none`.
    LoginRequired,
    /// OpenID Connect Core §3.1.2.6, used for `prompt=none`.
    ConsentRequired,
    /// OpenID Connect Core §3.1.2.6.
    InteractionRequired,
    /// RFC 7591 §3.2.2.
    InvalidRedirectUri,
    /// RFC 7591 §3.2.2.
    InvalidClientMetadata,
    /// RFC 6750 §3.1.
    InvalidToken,
    /// RFC 7009 §2.2.1.
    UnsupportedTokenType,
}

impl OAuthErrorCode {
    /// The code as it appears on the wire.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::InvalidRequest => "invalid_request",
            Self::InvalidClient => "invalid_client",
            Self::InvalidGrant => "invalid_grant",
            Self::UnauthorizedClient => "unauthorized_client",
            Self::UnsupportedGrantType => "unsupported_grant_type",
            Self::InvalidScope => "invalid_scope",
            Self::InvalidTarget => "invalid_target",
            Self::AccessDenied => "access_denied",
            Self::UnsupportedResponseType => "unsupported_response_type",
            Self::ServerError => "server_error",
            Self::TemporarilyUnavailable => "temporarily_unavailable",
            Self::LoginRequired => "login_required",
            Self::ConsentRequired => "consent_required",
            Self::InteractionRequired => "interaction_required",
            Self::InvalidRedirectUri => "invalid_redirect_uri",
            Self::InvalidClientMetadata => "invalid_client_metadata",
            Self::InvalidToken => "invalid_token",
            Self::UnsupportedTokenType => "unsupported_token_type",
        }
    }
}

impl fmt::Display for OAuthErrorCode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// A protocol error: an RFC code plus a human-readable description.
///
/// The description is shown to clients (`error_description`), so it must never contain secrets,
/// and it is restricted to the characters RFC 6749 §5.2 allows (%x20-21 / %x23-5B / %x5D-7E).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{code}: {description}")]
pub struct OAuthError {
    pub code: OAuthErrorCode,
    pub description: String,
}

impl OAuthError {
    pub fn new(code: OAuthErrorCode, description: impl Into<String>) -> Self {
        Self { code, description: sanitize_description(&description.into()) }
    }

    pub fn invalid_request(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRequest, description)
    }

    pub fn invalid_client(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidClient, description)
    }

    pub fn invalid_grant(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidGrant, description)
    }

    pub fn invalid_scope(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidScope, description)
    }

    pub fn invalid_target(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidTarget, description)
    }

    pub fn unauthorized_client(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::UnauthorizedClient, description)
    }

    pub fn invalid_client_metadata(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidClientMetadata, description)
    }

    pub fn invalid_redirect_uri(description: impl Into<String>) -> Self {
        Self::new(OAuthErrorCode::InvalidRedirectUri, description)
    }

    pub fn server_error() -> Self {
        Self::new(OAuthErrorCode::ServerError, "internal error")
    }
}

/// Replaces characters RFC 6749 §5.2 forbids in `error_description` (`"`, `\`, controls,
/// non-ASCII) so a description built from user input can never break the JSON or header it
/// is placed in; also caps its length.
pub fn sanitize_description(s: &str) -> String {
    const MAX: usize = 300;
    s.chars()
        .take(MAX)
        .map(|c| match c {
            '\x20'..='\x21' | '\x23'..='\x5b' | '\x5d'..='\x7e' => c,
            _ => '?',
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn description_drops_quotes_backslashes_controls_and_non_ascii() {
        let e = OAuthError::invalid_request("bad \"x\"\\\n\u{e9}");
        assert_eq!(e.description, "bad ?x????");
        assert_eq!(e.code.as_str(), "invalid_request");
    }

    #[test]
    fn description_is_capped() {
        let e = OAuthError::invalid_request("a".repeat(10_000));
        assert_eq!(e.description.len(), 300);
    }
}
