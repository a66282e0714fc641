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
/// the `application/` prefix be omitted; media types compare case-insensitively, RFC 6838 §4.2).
///
/// Compared as bytes: `typ` is attacker-controlled, and slicing the `str` at byte 12 would panic
/// when that byte falls inside a multibyte character (e.g. `aaaaaaaaaaa€`). A non-ASCII byte
/// never equals an ASCII one, so the byte comparison gives the same answer for every valid name.
fn is_at_jwt(typ: &str) -> bool {
    const PREFIX: &[u8] = b"application/";
    let t = typ.trim().as_bytes();
    let t = match t.split_at_checked(PREFIX.len()) {
        Some((prefix, rest)) if prefix.eq_ignore_ascii_case(PREFIX) => rest,
        _ => t,
    };
    t.eq_ignore_ascii_case(b"at+jwt")
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
    use proptest::prelude::*;

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
        // Byte 12 falls inside a multibyte character: must be a plain "no", not a panic from
        // slicing a str off a char boundary (the header is attacker-controlled).
        assert!(!is_at_jwt("aaaaaaaaaaa€"));
        assert!(!is_at_jwt("aaaaaaaaaaa€at+jwt"));
        assert!(!is_at_jwt("applicationé/at+jwt"));
        assert!(!is_at_jwt("€€€€€€€€"));
        // Found by the proptest below: byte 12 inside a four-byte character.
        assert!(!is_at_jwt("🩰AAAAa\u{119da}at+jwt"));
    }

    #[test]
    fn hostile_typ_is_refused_not_a_panic() {
        let all = Algorithm::defaults();
        let t = token(r#"{"alg":"ES256","typ":"aaaaaaaaaaa€","kid":"k"}"#);
        assert_eq!(parse(&t, 8192, &all).err(), Some(ValidationError::WrongType));
    }

    /// Header strings: anything, plus near-misses of the values the checks look for, so that
    /// generated headers get past the `alg` check and reach `typ` and `kid`.
    fn header_value(interesting: &'static [&'static str]) -> impl Strategy<Value = String> {
        prop_oneof![
            any::<String>(),
            proptest::sample::select(interesting).prop_map(str::to_owned),
            (proptest::sample::select(interesting), any::<String>()).prop_map(|(a, b)| format!("{a}{b}")),
            (any::<String>(), proptest::sample::select(interesting)).prop_map(|(a, b)| format!("{a}{b}")),
        ]
    }

    proptest! {
        /// RFC 7515 §4: header parameters are attacker-controlled JSON strings; parsing must
        /// answer Ok or Err for every one of them, never panic.
        #[test]
        fn arbitrary_header_values_never_panic(
            alg in header_value(&["ES256", "EdDSA", "RS256", "none", "HS256"]),
            typ in header_value(&["at+jwt", "application/at+jwt", "APPLICATION/", "aaaaaaaaaaa€", "€"]),
            kid in header_value(&["k1", ""]),
        ) {
            let header = serde_json::json!({"alg": alg, "typ": typ, "kid": kid}).to_string();
            if let Ok(jws) = parse(&token(&header), 64 * 1024, &Algorithm::defaults()) {
                prop_assert!(is_at_jwt(&typ));
                prop_assert_eq!(jws.kid, kid);
            }
        }

        /// Arbitrary token text (any Unicode, and strings over the JWS alphabet) never panics.
        #[test]
        fn arbitrary_tokens_never_panic(
            text in prop_oneof![any::<String>(), "[A-Za-z0-9_.=-]{0,300}"],
            max in 0usize..512,
        ) {
            let _ = parse(&text, max, &Algorithm::defaults());
            let _ = parse(&text, 8192, &[Algorithm::Es256]);
        }
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
