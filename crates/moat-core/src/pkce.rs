//! PKCE (RFC 7636) with the only method OAuth 2.1 and MCP allow: `S256`.

use crate::error::OAuthError;

/// Verifier length bounds (RFC 7636 §4.1).
pub const VERIFIER_MIN_LEN: usize = 43;
pub const VERIFIER_MAX_LEN: usize = 128;

/// True when `v` is 43–128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
pub fn is_valid_verifier(v: &str) -> bool {
    let _ = v;
    todo!("helper")
}

/// True when `c` is a well-formed S256 challenge: exactly 43 characters of unpadded base64url
/// (the encoding of a 32-byte SHA-256 digest, RFC 7636 §4.2).
pub fn is_valid_challenge(c: &str) -> bool {
    let _ = c;
    todo!("helper")
}

/// `BASE64URL(SHA256(ASCII(verifier)))` (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    let _ = verifier;
    todo!("helper")
}

/// Checks a verifier against a stored challenge: the verifier must be well formed and its S256
/// transform must equal the challenge (constant-time comparison).
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    let _ = (verifier, challenge);
    todo!("helper")
}

/// Validates the authorization request's `code_challenge` and `code_challenge_method`:
/// both required, method exactly `S256` (`plain`, unknown and missing methods are
/// `invalid_request`), challenge well formed.
pub fn check_authorization_params(
    challenge: Option<&str>,
    method: Option<&str>,
) -> Result<String, OAuthError> {
    let _ = (challenge, method);
    todo!("helper")
}
