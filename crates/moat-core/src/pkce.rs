//! PKCE (RFC 7636) with the only method OAuth 2.1 and MCP allow: `S256`.
//!
//! OAuth 2.1 §4.1.1 and the MCP authorization specification make PKCE mandatory and forbid the
//! `plain` method, so this module knows nothing but `S256`: the authorization request must carry
//! a well-formed S256 `code_challenge`, and the token request's `code_verifier` must hash to it.

use aws_lc_rs::digest;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use subtle::ConstantTimeEq as _;

use crate::error::OAuthError;

/// Verifier length bounds (RFC 7636 §4.1).
pub const VERIFIER_MIN_LEN: usize = 43;
pub const VERIFIER_MAX_LEN: usize = 128;

/// Length of an S256 challenge: unpadded base64url of a 32-byte digest is ⌈32·8/6⌉ = 43 chars.
pub const CHALLENGE_LEN: usize = 43;

/// The only `code_challenge_method` accepted (OAuth 2.1 §4.1.1; MCP authorization spec).
pub const METHOD_S256: &str = "S256";

/// RFC 7636 §4.1 `unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~"`.
fn is_unreserved(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~')
}

/// The base64url alphabet (RFC 4648 §5).
fn is_base64url(b: u8) -> bool {
    b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_')
}

/// True when `v` is 43–128 characters of `[A-Za-z0-9-._~]` (RFC 7636 §4.1).
pub fn is_valid_verifier(v: &str) -> bool {
    // Every allowed character is ASCII, so the byte length is the character length.
    (VERIFIER_MIN_LEN..=VERIFIER_MAX_LEN).contains(&v.len()) && v.bytes().all(is_unreserved)
}

/// True when `c` is a well-formed S256 challenge: exactly 43 characters of unpadded base64url
/// (the encoding of a 32-byte SHA-256 digest, RFC 7636 §4.2).
///
/// The last character must also be a canonical encoding (its two unused low bits zero): a
/// non-canonical challenge is not the output of any encoder, no verifier could ever satisfy it,
/// and rejecting it at `/authorize` gives the client a clear error instead of a failure at the
/// token endpoint.
pub fn is_valid_challenge(c: &str) -> bool {
    c.len() == CHALLENGE_LEN
        && c.bytes().all(is_base64url)
        && URL_SAFE_NO_PAD.decode(c).is_ok_and(|bytes| bytes.len() == 32)
}

/// `BASE64URL(SHA256(ASCII(verifier)))` (RFC 7636 §4.2).
pub fn s256_challenge(verifier: &str) -> String {
    URL_SAFE_NO_PAD.encode(digest::digest(&digest::SHA256, verifier.as_bytes()))
}

/// Checks a verifier against a stored challenge: the verifier must be well formed and its S256
/// transform must equal the challenge (constant-time comparison).
pub fn verify_s256(verifier: &str, challenge: &str) -> bool {
    // RFC 7636 §4.6: the server recomputes the challenge from the verifier and compares. The
    // verifier's syntax is checked first (§4.1: a malformed verifier is simply invalid), and the
    // comparison is constant-time so response timing reveals nothing about the stored challenge.
    if !is_valid_verifier(verifier) {
        return false;
    }
    let computed = s256_challenge(verifier);
    bool::from(computed.as_bytes().ct_eq(challenge.as_bytes()))
}

/// Validates the authorization request's `code_challenge` and `code_challenge_method`:
/// both required, method exactly `S256` (`plain`, unknown and missing methods are
/// `invalid_request`), challenge well formed. Returns the challenge to store with the request.
///
/// An empty parameter counts as missing. RFC 7636 §4.3 would default a missing method to
/// `plain`, which OAuth 2.1 forbids, so a missing method is an error rather than a default.
/// Method names are case-sensitive (RFC 7636 §4.2 defines exactly `S256`).
pub fn check_authorization_params(challenge: Option<&str>, method: Option<&str>) -> Result<String, OAuthError> {
    let challenge = match challenge {
        Some(c) if !c.is_empty() => c,
        _ => {
            return Err(OAuthError::invalid_request("code_challenge is required (PKCE with S256)"));
        }
    };
    match method {
        None | Some("") => {
            return Err(OAuthError::invalid_request("code_challenge_method is required and must be S256"));
        }
        Some(METHOD_S256) => {}
        Some("plain") => {
            return Err(OAuthError::invalid_request("code_challenge_method plain is not allowed, use S256"));
        }
        Some(_) => {
            return Err(OAuthError::invalid_request("unsupported code_challenge_method, only S256 is supported"));
        }
    }
    if !is_valid_challenge(challenge) {
        return Err(OAuthError::invalid_request(
            "malformed code_challenge: expected 43 characters of base64url (S256)",
        ));
    }
    Ok(challenge.to_owned())
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::error::OAuthErrorCode;

    /// RFC 7636 Appendix B.
    const RFC_VERIFIER: &str = "dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXk";
    const RFC_CHALLENGE: &str = "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM";

    #[test]
    fn rfc7636_appendix_b_vector() {
        assert_eq!(s256_challenge(RFC_VERIFIER), RFC_CHALLENGE);
        assert!(is_valid_verifier(RFC_VERIFIER));
        assert!(is_valid_challenge(RFC_CHALLENGE));
        assert!(verify_s256(RFC_VERIFIER, RFC_CHALLENGE));
    }

    #[test]
    fn verify_rejects_wrong_or_malformed_inputs() {
        // Wrong verifier (last character changed).
        assert!(!verify_s256("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1gFWFOEjXj", RFC_CHALLENGE));
        // The challenge itself presented as the verifier (the `plain` method).
        assert!(!verify_s256(RFC_CHALLENGE, RFC_CHALLENGE));
        // Challenge with different case.
        assert!(!verify_s256(RFC_VERIFIER, &RFC_CHALLENGE.to_lowercase()));
        // Padded challenge.
        assert!(!verify_s256(RFC_VERIFIER, &format!("{RFC_CHALLENGE}=")));
        // Truncated challenge.
        assert!(!verify_s256(RFC_VERIFIER, &RFC_CHALLENGE[..42]));
        assert!(!verify_s256(RFC_VERIFIER, ""));
        // Malformed verifiers never verify, even against their own transform.
        for v in ["", "short", &"a".repeat(42), &"a".repeat(129), &format!("{}+", "a".repeat(43))] {
            assert!(!verify_s256(v, &s256_challenge(v)), "{v:?}");
        }
    }

    #[test]
    fn verifier_syntax() {
        let ok = [
            "a".repeat(43),
            "a".repeat(128),
            "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~".to_owned(),
        ];
        for v in &ok {
            assert!(is_valid_verifier(v), "{v:?}");
        }
        let bad = [
            String::new(),
            "a".repeat(42),
            "a".repeat(129),
            format!("{}+", "a".repeat(42)),
            format!("{}/", "a".repeat(42)),
            format!("{}=", "a".repeat(42)),
            format!("{} ", "a".repeat(42)),
            format!("{}\t", "a".repeat(42)),
            format!("{}%41", "a".repeat(42)),
            // 43 characters but 44 bytes: non-ASCII is not allowed.
            format!("{}é", "a".repeat(42)),
        ];
        for v in &bad {
            assert!(!is_valid_verifier(v), "{v:?}");
        }
    }

    #[test]
    fn challenge_syntax() {
        assert!(is_valid_challenge(RFC_CHALLENGE));
        assert!(is_valid_challenge(&"A".repeat(43)));
        let bad = [
            String::new(),
            "A".repeat(42),
            "A".repeat(44),
            format!("{RFC_CHALLENGE}="),
            // Standard (not url-safe) alphabet.
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw+cM".to_owned(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw/cM".to_owned(),
            "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw cM".to_owned(),
            // Non-canonical last character (its low bits are not zero): no digest encodes so.
            format!("{}B", "A".repeat(42)),
            format!("{}_", &RFC_CHALLENGE[..42]),
        ];
        for c in &bad {
            assert!(!is_valid_challenge(c), "{c:?}");
        }
    }

    #[test]
    fn authorization_params_accept_s256() {
        assert_eq!(check_authorization_params(Some(RFC_CHALLENGE), Some("S256")).unwrap(), RFC_CHALLENGE);
    }

    #[test]
    fn authorization_params_errors() {
        let cases: [(Option<&str>, Option<&str>, &str); 11] = [
            (None, Some("S256"), "code_challenge is required"),
            (Some(""), Some("S256"), "code_challenge is required"),
            (None, None, "code_challenge is required"),
            (Some(RFC_CHALLENGE), None, "code_challenge_method is required"),
            (Some(RFC_CHALLENGE), Some(""), "code_challenge_method is required"),
            (Some(RFC_CHALLENGE), Some("plain"), "plain is not allowed"),
            (Some(RFC_CHALLENGE), Some("s256"), "unsupported code_challenge_method"),
            (Some(RFC_CHALLENGE), Some("S512"), "unsupported code_challenge_method"),
            (Some(RFC_CHALLENGE), Some("S256 "), "unsupported code_challenge_method"),
            (Some("abc"), Some("S256"), "malformed code_challenge"),
            (Some(&RFC_CHALLENGE[..42]), Some("S256"), "malformed code_challenge"),
        ];
        for (c, m, needle) in cases {
            let err = check_authorization_params(c, m).unwrap_err();
            assert_eq!(err.code, OAuthErrorCode::InvalidRequest, "{c:?} {m:?}");
            assert!(err.description.contains(needle), "{c:?} {m:?}: {}", err.description);
        }
    }

    proptest! {
        #[test]
        fn every_valid_verifier_verifies_against_its_challenge(
            v in "[A-Za-z0-9._~-]{43,128}"
        ) {
            prop_assert!(is_valid_verifier(&v));
            let c = s256_challenge(&v);
            prop_assert!(is_valid_challenge(&c));
            prop_assert!(verify_s256(&v, &c));
            prop_assert_eq!(check_authorization_params(Some(&c), Some("S256")).unwrap(), c);
        }

        #[test]
        fn a_different_verifier_does_not_verify(
            a in "[A-Za-z0-9._~-]{43,128}",
            b in "[A-Za-z0-9._~-]{43,128}",
        ) {
            prop_assume!(a != b);
            prop_assert!(!verify_s256(&b, &s256_challenge(&a)));
        }

        #[test]
        fn arbitrary_strings_never_panic(v in ".{0,200}", c in ".{0,60}") {
            let ok = verify_s256(&v, &c);
            // Verification implies both sides are well formed.
            if ok {
                prop_assert!(is_valid_verifier(&v) && is_valid_challenge(&c));
            }
            let _ = check_authorization_params(Some(&c), Some(&v));
        }
    }
}
