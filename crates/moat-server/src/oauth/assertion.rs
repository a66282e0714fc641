//! `private_key_jwt` client authentication (RFC 7523 §2.2 and §3, RFC 7521 §4.2, OpenID Connect
//! Core §9): the client signs a short-lived JWT with a key it published (inline `jwks` or
//! `jwks_uri`), and Moat checks signature, `iss` = `sub` = client id, `aud`, `exp`, and that
//! the `jti` was never seen before.

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moat_core::OAuthError;
use moat_core::model::Client;
use serde_json::Value;

use crate::http::OAuthJsonError;
use crate::jwk;
use crate::state::{AppState, now};

/// RFC 7523 §2.2 `client_assertion_type`.
pub const JWT_BEARER_ASSERTION: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
/// Longest assertion accepted.
const MAX_ASSERTION_LEN: usize = 8 * 1024;
/// Clock skew tolerated on `exp`, `nbf` and `iat`.
const LEEWAY: i64 = 60;
/// Assertions may live at most this long: they are single-use proofs, and the `jti` replay
/// record only has to be kept this long.
const MAX_LIFETIME: i64 = 3600;
/// How much longer than the assertion is acceptable a `jti` is remembered. The purge deletes
/// records whose expiry is `<=` now, while an assertion is still accepted in the second
/// `exp + LEEWAY`, so the record must outlive that by at least one second; the rest absorbs
/// clock differences between instances sharing the store (one records, another purges).
const JTI_RETENTION_MARGIN: i64 = LEEWAY;

/// A client assertion, decoded but not yet verified.
pub struct Assertion {
    header: Value,
    pub claims: Value,
    signing_input: String,
    signature: Vec<u8>,
}

fn bad(msg: &str) -> OAuthJsonError {
    OAuthJsonError::new(OAuthError::invalid_client(msg))
}

impl Assertion {
    /// Decodes the compact JWS (no verification yet).
    pub fn parse(token: &str) -> Result<Self, OAuthJsonError> {
        if token.len() > MAX_ASSERTION_LEN {
            return Err(bad("the client assertion is too long"));
        }
        let mut parts = token.split('.');
        let (Some(h), Some(c), Some(s), None) = (parts.next(), parts.next(), parts.next(), parts.next()) else {
            return Err(bad("the client assertion is not a signed JWT"));
        };
        let decode = |p: &str| URL_SAFE_NO_PAD.decode(p).ok();
        let header: Value =
            decode(h).and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| bad("malformed assertion header"))?;
        let claims: Value =
            decode(c).and_then(|b| serde_json::from_slice(&b).ok()).ok_or_else(|| bad("malformed assertion claims"))?;
        let signature = decode(s).ok_or_else(|| bad("malformed assertion signature"))?;
        if !claims.is_object() {
            return Err(bad("malformed assertion claims"));
        }
        Ok(Self { header, claims, signing_input: format!("{h}.{c}"), signature })
    }

    /// The `kid` of the signing key, if the header names one.
    pub fn kid(&self) -> Option<String> {
        self.header.get("kid").and_then(Value::as_str).map(str::to_owned)
    }

    /// The client the assertion claims to come from (`iss`, RFC 7523 §3).
    pub fn issuer(&self) -> Option<&str> {
        self.claims.get("iss").and_then(Value::as_str)
    }
}

/// Verifies `assertion` for `client` at the resource whose issuer is `issuer` and whose token
/// endpoint is `{issuer}/oauth/token`. `jwks` are the client's public keys.
pub async fn verify(
    state: &AppState,
    client: &Client,
    assertion: &Assertion,
    jwks: &Value,
    issuer: &str,
) -> Result<(), OAuthJsonError> {
    let alg = assertion.header.get("alg").and_then(Value::as_str).unwrap_or_default();
    if !jwk::ASSERTION_ALGS.contains(&alg) {
        return Err(bad("unsupported client assertion algorithm"));
    }
    let kid = assertion.header.get("kid").and_then(Value::as_str);
    let verified = jwk::candidates(jwks, kid)
        .into_iter()
        .any(|k| jwk::verify(k, alg, assertion.signing_input.as_bytes(), &assertion.signature));
    if !verified {
        return Err(bad("the client assertion signature does not verify with the client's published keys"));
    }
    let c = &assertion.claims;
    let id = client.id.as_str();
    if c.get("iss").and_then(Value::as_str) != Some(id) || c.get("sub").and_then(Value::as_str) != Some(id) {
        return Err(bad("the client assertion's iss and sub must both be the client_id"));
    }
    // RFC 7523 §3: `aud` identifies the authorization server; the token endpoint URL or the
    // issuer are accepted (the same assertion may be presented to revocation/introspection).
    let token_endpoint = format!("{issuer}/oauth/token");
    let aud_ok = match c.get("aud") {
        Some(Value::String(a)) => *a == token_endpoint || a == issuer,
        Some(Value::Array(items)) => items.iter().filter_map(Value::as_str).any(|a| a == token_endpoint || a == issuer),
        _ => false,
    };
    if !aud_ok {
        return Err(bad("the client assertion's aud must be this issuer or its token endpoint"));
    }
    let jti_expires_at = check_times(c, now())?;
    let jti = c
        .get("jti")
        .and_then(Value::as_str)
        .filter(|j| !j.is_empty() && j.len() <= 256)
        .ok_or_else(|| bad("the client assertion has no valid jti"))?;
    // RFC 7523 §3 item 7: single use. Recorded until the assertion can no longer be accepted.
    let fresh = state
        .store
        .record_assertion_jti(&client.id, jti, jti_expires_at)
        .await
        .map_err(|e| OAuthJsonError::internal("recording an assertion jti", e))?;
    if !fresh {
        return Err(bad("the client assertion has already been used"));
    }
    Ok(())
}

/// Checks `exp`, `nbf` and `iat` (RFC 7523 §3 items 4–6) against `now` and returns until when
/// the `jti` must be remembered. The claims are chosen by whoever signed the assertion (for a
/// metadata-document client, anyone who publishes a document), so the arithmetic never
/// touches a claim: the claims are compared with bounds computed from `now`, and `exp` is only
/// added to once it is known to lie within [`MAX_LIFETIME`] of `now`.
fn check_times(c: &Value, now: i64) -> Result<i64, OAuthJsonError> {
    let exp = c.get("exp").and_then(Value::as_i64).ok_or_else(|| bad("the client assertion has no exp"))?;
    // now > exp + LEEWAY, without computing exp + LEEWAY.
    if exp < now.saturating_sub(LEEWAY) {
        return Err(bad("the client assertion has expired"));
    }
    if exp > now.saturating_add(MAX_LIFETIME) {
        return Err(bad("the client assertion lives too long (at most one hour)"));
    }
    if c.get("nbf").and_then(Value::as_i64).is_some_and(|nbf| nbf > now.saturating_add(LEEWAY)) {
        return Err(bad("the client assertion is not valid yet"));
    }
    if c.get("iat").and_then(Value::as_i64).is_some_and(|iat| iat > now.saturating_add(LEEWAY)) {
        return Err(bad("the client assertion was issued in the future"));
    }
    // The assertion is accepted up to and including `exp + LEEWAY`.
    Ok(exp.saturating_add(LEEWAY).saturating_add(JTI_RETENTION_MARGIN))
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const NOW: i64 = 1_700_000_000;

    fn times(exp: Value, extra: Value) -> Result<i64, String> {
        let mut c = json!({ "exp": exp });
        if let (Some(c), Some(extra)) = (c.as_object_mut(), extra.as_object()) {
            c.extend(extra.clone());
        }
        check_times(&c, NOW).map_err(|e| e.error.description)
    }

    #[test]
    fn extreme_times_are_refused_without_overflow() {
        // `exp` near i64::MAX overflowed `exp + LEEWAY` (a panic in debug builds); the other
        // extremes and the boundaries must be refused just as cleanly.
        let refused = [
            (json!(i64::MAX), json!({}), "lives too long"),
            (json!(i64::MAX - LEEWAY + 1), json!({}), "lives too long"),
            (json!(i64::MIN), json!({}), "expired"),
            (json!(i64::MIN + 1), json!({}), "expired"),
            (json!(NOW - LEEWAY - 1), json!({}), "expired"),
            (json!(NOW + MAX_LIFETIME + 1), json!({}), "lives too long"),
            (json!(NOW + 60), json!({ "nbf": i64::MAX }), "not valid yet"),
            (json!(NOW + 60), json!({ "iat": i64::MAX }), "issued in the future"),
            (json!(NOW + 60), json!({ "nbf": NOW + LEEWAY + 1 }), "not valid yet"),
        ];
        for (exp, extra, needle) in refused {
            let err = times(exp.clone(), extra.clone()).unwrap_err();
            assert!(err.contains(needle), "{exp} {extra}: {err}");
        }
        // Numbers that are not i64 are no exp at all.
        assert!(times(json!(u64::MAX), json!({})).unwrap_err().contains("no exp"));
        assert!(times(json!(1.5e300), json!({})).unwrap_err().contains("no exp"));
        // Extreme nbf/iat in the past are fine.
        assert!(times(json!(NOW + 60), json!({ "nbf": i64::MIN, "iat": i64::MIN })).is_ok());
    }

    #[test]
    fn the_jti_outlives_the_last_second_the_assertion_is_accepted() {
        for exp in [NOW - LEEWAY, NOW, NOW + 60, NOW + MAX_LIFETIME] {
            let keep_until = times(json!(exp), json!({})).unwrap();
            // Accepted while now <= exp + LEEWAY; the purge removes records with
            // expires_at <= now, so the record must be strictly later than that.
            assert!(keep_until > exp + LEEWAY, "{exp}: {keep_until}");
            assert!(keep_until > NOW);
        }
    }
}
