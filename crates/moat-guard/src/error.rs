//! Errors: why a token was refused ([`ValidationError`]) and why a configuration was refused
//! ([`ConfigError`]).
//!
//! Messages say exactly which check failed but never echo the token or attacker-controlled
//! header values, and never contain `=` or quotes: they end up in `error_description` of an
//! RFC 6750 §3 challenge, which at least one MCP client scans with a `key=value` regex.

/// Why a token was not accepted. Every variant except [`ValidationError::InsufficientScope`] and
/// [`ValidationError::KeysUnavailable`] maps to `error="invalid_token"` (RFC 6750 §3.1).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ValidationError {
    /// Not a compact JWS (RFC 7515 §7.1), bad base64url, bad JSON, or a missing header field.
    #[error("malformed token: {0}")]
    Malformed(&'static str),
    /// Larger than the configured limit; refused before any parsing.
    #[error("token larger than {max} bytes")]
    TooLarge {
        /// The configured limit in bytes.
        max: usize,
    },
    /// `alg` is not in the allowed list (never `none`, never an HMAC algorithm).
    #[error("token algorithm {alg} is not accepted")]
    UnsupportedAlgorithm {
        /// The header's `alg`, reduced to safe characters.
        alg: String,
    },
    /// The header `typ` is not `at+jwt` (RFC 9068 §4).
    #[error("token type is not at+jwt as RFC 9068 section 4 requires")]
    WrongType,
    /// No key with the header's `kid` is published, even after a refetch of the key set.
    #[error("no published signing key matches the token key id")]
    UnknownKey {
        /// The header's `kid`, reduced to safe characters (for logs).
        kid: String,
    },
    /// The key named by `kid` is of another type, curve or algorithm than the header says.
    #[error("the published key for the token key id does not match the token algorithm")]
    KeyMismatch,
    /// The signature does not verify with the named key.
    #[error("token signature does not verify")]
    BadSignature,
    /// `iss` is not one of the configured issuers (exact string comparison, RFC 9068 §4).
    #[error("token issuer is not accepted by this resource")]
    WrongIssuer,
    /// `aud` does not contain this resource (RFC 9068 §4, RFC 8707).
    #[error("token audience does not include this resource")]
    WrongAudience,
    /// `exp` is in the past, beyond the leeway.
    #[error("token has expired")]
    Expired,
    /// `nbf` is in the future, beyond the leeway.
    #[error("token is not valid yet")]
    NotYetValid,
    /// `iat` is in the future, beyond the leeway.
    #[error("token was issued in the future")]
    IssuedInFuture,
    /// A claim RFC 9068 §2.2 requires is absent.
    #[error("token lacks the {0} claim")]
    MissingClaim(&'static str),
    /// A claim has the wrong JSON type or an invalid value.
    #[error("token {0} claim is invalid")]
    InvalidClaim(&'static str),
    /// The token is valid but lacks scopes the operation needs (RFC 6750 §3.1).
    #[error("token lacks a scope this operation needs: {}", needed.join(" "))]
    InsufficientScope {
        /// Every scope the operation needs (not only the missing ones).
        needed: Vec<String>,
    },
    /// The issuer's keys could not be fetched and none are cached: the token could not be
    /// checked at all. Not the client's fault (answer 503, not 401).
    #[error("signing keys are unavailable: {0}")]
    KeysUnavailable(String),
}

impl ValidationError {
    /// The RFC 6750 §3.1 error code this maps to, or `None` for [`Self::KeysUnavailable`]
    /// (a server-side problem).
    pub fn oauth_error_code(&self) -> Option<&'static str> {
        match self {
            Self::InsufficientScope { .. } => Some("insufficient_scope"),
            Self::KeysUnavailable(_) => None,
            _ => Some("invalid_token"),
        }
    }
}

/// Why a [`crate::ValidatorConfig`] or a guard configuration was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// At least one issuer is required.
    #[error("no issuer configured")]
    NoIssuer,
    /// At least one audience is required.
    #[error("no audience configured")]
    NoAudience,
    /// An issuer, JWKS or resource URL is not an absolute http(s) URL.
    #[error("{what} is not an absolute http(s) URL: {url}")]
    BadUrl {
        /// Which setting.
        what: &'static str,
        /// The configured value.
        url: String,
    },
    /// Plain http to a non-loopback host without `allow_insecure_http`.
    #[error("{what} uses plain http for a non-loopback host (set allow_insecure_http to allow it): {url}")]
    InsecureUrl {
        /// Which setting.
        what: &'static str,
        /// The configured value.
        url: String,
    },
    /// An audience is neither a URL nor a `res_…` id.
    #[error("audience is neither an http(s) URL nor a res_ id: {0}")]
    BadAudience(String),
    /// The allowed algorithm list is empty.
    #[error("no signature algorithm allowed")]
    NoAlgorithm,
    /// A scope is not a valid RFC 6749 §3.3 scope-token.
    #[error("invalid scope: {0}")]
    BadScope(String),
    /// The HTTP client could not be built.
    #[error("HTTP client: {0}")]
    HttpClient(String),
}
