//! Compact JWS parsing (RFC 7515 §7.1) and the JOSE header checks of RFC 9068 §4: `typ` must be
//! `at+jwt`, `alg` must be one of the allowed asymmetric algorithms (RFC 7518 §3, RFC 8037).
//!
//! Header parameters that point at keys (`jku`, `jwk`, `x5u`, `x5c`) are ignored on purpose:
//! keys only ever come from the configured issuer's JWKS, never from the token itself.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde::Deserialize;

use crate::error::ValidationError;

/// A JWS signature algorithm moat-guard can verify. HMAC (`HS*`) and `none` are deliberately
/// absent: a resource server holds no shared secret, and an HMAC "signed" with a public key
/// would be forgeable by anyone (the classic algorithm-confusion attack).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Algorithm {
    /// ECDSA P-256 with SHA-256, fixed-length `r || s` signature (RFC 7518 §3.4).
    Es256,
    /// Ed25519 (RFC 8037 §3.1).
    EdDsa,
    /// RSASSA-PKCS1-v1_5 with SHA-256 (RFC 7518 §3.3), modulus 2048–8192 bits.
    Rs256,
}

impl Algorithm {
    /// The JOSE `alg` name.
    pub fn as_str(self) -> &'static str {
        match self {
            Self::Es256 => "ES256",
            Self::EdDsa => "EdDSA",
            Self::Rs256 => "RS256",
        }
    }

    /// Parses a JOSE `alg` name (case-sensitive, RFC 7515 §4.1.1).
    pub fn from_name(name: &str) -> Option<Self> {
        match name {
            "ES256" => Some(Self::Es256),
            "EdDSA" => Some(Self::EdDsa),
            "RS256" => Some(Self::Rs256),
            _ => None,
        }
    }

    /// The default allowed list: everything Moat can sign with.
    pub fn defaults() -> Vec<Self> {
        vec![Self::Es256, Self::EdDsa, Self::Rs256]
    }
}

impl std::fmt::Display for Algorithm {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.as_str())
    }
}

#[derive(Deserialize)]
struct RawHeader {
    alg: Option<String>,
    typ: Option<String>,
    kid: Option<String>,
    crit: Option<serde_json::Value>,
}

/// The checked parts of a compact JWS.
pub(crate) struct Jws<'a> {
    /// `BASE64URL(header) || '.' || BASE64URL(payload)`, the bytes the signature covers.
    pub signing_input: &'a [u8],
    pub alg: Algorithm,
    pub kid: String,
    pub payload: Vec<u8>,
    pub signature: Vec<u8>,
}

/// Keeps only characters that are safe to show in logs and error messages.
pub(crate) fn sanitize(value: &str) -> String {
    value.chars().filter(|c| c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.' | '+' | ':')).take(64).collect()
}

fn b64(segment: &str, what: &'static str) -> Result<Vec<u8>, ValidationError> {
    URL_SAFE_NO_PAD.decode(segment).map_err(|_| ValidationError::Malformed(what))
}

/// True when `typ` names the `application/at+jwt` media type (RFC 9068 §4; RFC 7515 §4.1.9 lets
/// the `application/` prefix be omitted; media types compare case-insensitively).
fn is_at_jwt(typ: &str) -> bool {
    let t = typ.trim();
    let t = if t.len() > 12 && t[..12].eq_ignore_ascii_case("application/") { &t[12..] } else { t };
    t.eq_ignore_ascii_case("at+jwt")
}

/// Splits and decodes a compact JWS and checks its header against the allowed algorithms.
pub(crate) fn parse<'a>(token: &'a str, max_len: usize, allowed: &[Algorithm]) -> Result<Jws<'a>, ValidationError> {
    if token.len() > max_len {
        return Err(ValidationError::TooLarge { max: max_len });
    }
    let mut parts = token.split('.');
    let (Some(h), Some(p), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
        return Err(ValidationError::Malformed("expected three base64url segments separated by dots"));
    };
    if h.is_empty() || p.is_empty() {
        return Err(ValidationError::Malformed("empty JWS segment"));
    }
    let header_bytes = b64(h, "header is not base64url")?;
    let header: RawHeader =
        serde_json::from_slice(&header_bytes).map_err(|_| ValidationError::Malformed("header is not a JSON object"))?;

    let alg_name = header.alg.ok_or(ValidationError::Malformed("header has no alg"))?;
    let alg = Algorithm::from_name(&alg_name)
        .filter(|a| allowed.contains(a))
        .ok_or_else(|| ValidationError::UnsupportedAlgorithm { alg: sanitize(&alg_name) })?;
    match header.typ.as_deref() {
        Some(t) if is_at_jwt(t) => {}
        _ => return Err(ValidationError::WrongType),
    }
    // RFC 7515 §4.1.11: a recipient that does not understand a critical extension must reject.
    // We understand none.
    if header.crit.is_some() {
        return Err(ValidationError::Malformed("header has critical extensions this resource does not support"));
    }
    let kid = header.kid.filter(|k| !k.is_empty()).ok_or(ValidationError::Malformed("header has no kid"))?;

    let payload = b64(p, "payload is not base64url")?;
    // Checked after the header so that an unsecured `alg: none` token (empty signature,
    // RFC 7519 §6) is reported as the unsupported algorithm it is.
    if s.is_empty() {
        return Err(ValidationError::Malformed("empty signature"));
    }
    let signature = b64(s, "signature is not base64url")?;
    let signing_input = &token.as_bytes()[..h.len() + 1 + p.len()];
    Ok(Jws { signing_input, alg, kid, payload, signature })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn enc(v: &str) -> String {
        URL_SAFE_NO_PAD.encode(v)
    }

    fn token(header: &str) -> String {
        format!("{}.{}.{}", enc(header), enc("{}"), enc("sig"))
    }

    #[test]
    fn typ_variants() {
        assert!(is_at_jwt("at+jwt"));
        assert!(is_at_jwt("AT+JWT"));
        assert!(is_at_jwt("application/at+jwt"));
        assert!(is_at_jwt("Application/AT+jwt"));
        assert!(!is_at_jwt("JWT"));
        assert!(!is_at_jwt("application/jwt"));
        assert!(!is_at_jwt("xapplication/at+jwt"));
    }

    #[test]
    fn header_checks() {
        let all = Algorithm::defaults();
        let ok = token(r#"{"alg":"ES256","typ":"at+jwt","kid":"k1"}"#);
        let jws = parse(&ok, 8192, &all).map_err(|e| e.to_string());
        assert_eq!(jws.as_ref().map(|j| j.kid.as_str()), Ok("k1"));

        let cases = [
            (r#"{"alg":"none","typ":"at+jwt","kid":"k"}"#, "UnsupportedAlgorithm"),
            (r#"{"alg":"HS256","typ":"at+jwt","kid":"k"}"#, "UnsupportedAlgorithm"),
            (r#"{"alg":"es256","typ":"at+jwt","kid":"k"}"#, "UnsupportedAlgorithm"),
            (r#"{"alg":"ES256","typ":"JWT","kid":"k"}"#, "WrongType"),
            (r#"{"alg":"ES256","kid":"k"}"#, "WrongType"),
            (r#"{"alg":"ES256","typ":"at+jwt"}"#, "Malformed"),
            (r#"{"alg":"ES256","typ":"at+jwt","kid":"k","crit":["x"]}"#, "Malformed"),
            (r#"[1]"#, "Malformed"),
        ];
        for (header, want) in cases {
            let got = parse(&token(header), 8192, &all).err().map(|e| format!("{e:?}"));
            assert!(got.as_deref().is_some_and(|g| g.starts_with(want)), "{header}: got {got:?}, want {want}");
        }
        // A disallowed-but-known algorithm.
        let rs = token(r#"{"alg":"RS256","typ":"at+jwt","kid":"k"}"#);
        assert!(matches!(parse(&rs, 8192, &[Algorithm::Es256]), Err(ValidationError::UnsupportedAlgorithm { .. })));
    }

    #[test]
    fn shape_and_size() {
        let all = Algorithm::defaults();
        for bad in ["", "a.b", "a.b.c.d", "..", "a..c", "###.a.b", ".a.b"] {
            assert!(matches!(parse(bad, 8192, &all), Err(ValidationError::Malformed(_))), "{bad}");
        }
        let big = "a".repeat(9000);
        assert_eq!(parse(&big, 8192, &all).err(), Some(ValidationError::TooLarge { max: 8192 }));
        // Padding is not base64url as JWS uses it (RFC 7515 §2).
        let padded = format!("{}.{}=.{}", enc(r#"{"alg":"ES256","typ":"at+jwt","kid":"k"}"#), enc("{}x"), enc("sig"));
        assert!(matches!(parse(&padded, 8192, &all), Err(ValidationError::Malformed(_))));
    }

    #[test]
    fn sanitize_drops_unsafe_characters() {
        assert_eq!(sanitize("HS256\"; x=1"), "HS256x1");
        assert_eq!(sanitize(&"k".repeat(100)).len(), 64);
    }
}
