//! Verifying JWS signatures with public JWKs (RFC 7517/7518, RFC 8037) published by clients:
//! the `private_key_jwt` client assertions of RFC 7523. Only asymmetric algorithms exist here;
//! `none` and HMAC are refused by construction.

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P384_SHA384_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RSA_PSS_2048_8192_SHA256,
    RsaPublicKeyComponents, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

/// Algorithms accepted for client assertions (advertised as
/// `token_endpoint_auth_signing_alg_values_supported`).
pub const ASSERTION_ALGS: [&str; 5] = ["ES256", "ES384", "EdDSA", "RS256", "PS256"];

fn b64(jwk: &Value, member: &str) -> Option<Vec<u8>> {
    URL_SAFE_NO_PAD.decode(jwk.get(member)?.as_str()?.trim_end_matches('=')).ok()
}

/// Verifies `sig` over `msg` with `jwk` under `alg`. The JWK's `kty`/`crv` must fit the
/// algorithm and its `alg`, when present, must equal it (RFC 7517 §4.4); keys marked for
/// encryption only (`use: enc`) are refused.
pub fn verify(jwk: &Value, alg: &str, msg: &[u8], sig: &[u8]) -> bool {
    if jwk.get("alg").and_then(Value::as_str).is_some_and(|a| a != alg) {
        return false;
    }
    if jwk.get("use").and_then(Value::as_str).is_some_and(|u| u != "sig") {
        return false;
    }
    let kty = jwk.get("kty").and_then(Value::as_str).unwrap_or_default();
    let crv = jwk.get("crv").and_then(Value::as_str).unwrap_or_default();
    match (alg, kty, crv) {
        ("ES256", "EC", "P-256") | ("ES384", "EC", "P-384") => {
            let (Some(x), Some(y)) = (b64(jwk, "x"), b64(jwk, "y")) else { return false };
            let len = if alg == "ES256" { 32 } else { 48 };
            if x.len() != len || y.len() != len {
                return false;
            }
            let mut point = Vec::with_capacity(1 + 2 * len);
            point.push(4);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let algorithm = if alg == "ES256" { &ECDSA_P256_SHA256_FIXED } else { &ECDSA_P384_SHA384_FIXED };
            UnparsedPublicKey::new(algorithm, point).verify(msg, sig).is_ok()
        }
        ("EdDSA", "OKP", "Ed25519") => {
            let Some(x) = b64(jwk, "x") else { return false };
            x.len() == 32 && UnparsedPublicKey::new(&ED25519, x).verify(msg, sig).is_ok()
        }
        ("RS256" | "PS256", "RSA", _) => {
            let (Some(n), Some(e)) = (b64(jwk, "n"), b64(jwk, "e")) else { return false };
            let params = if alg == "RS256" { &RSA_PKCS1_2048_8192_SHA256 } else { &RSA_PSS_2048_8192_SHA256 };
            RsaPublicKeyComponents { n, e }.verify(params, msg, sig).is_ok()
        }
        _ => false,
    }
}

/// The candidate keys of a JWKS for a JWS header: the key named by `kid`, or, without a `kid`,
/// every key (the signature decides).
pub fn candidates<'a>(jwks: &'a Value, kid: Option<&str>) -> Vec<&'a Value> {
    let keys = jwks.get("keys").and_then(Value::as_array).map(Vec::as_slice).unwrap_or_default();
    match kid {
        Some(kid) => keys.iter().filter(|k| k.get("kid").and_then(Value::as_str) == Some(kid)).collect(),
        None => keys.iter().collect(),
    }
}

#[cfg(test)]
mod tests {
    use aws_lc_rs::rand::SystemRandom;
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _};
    use serde_json::json;

    use super::*;

    #[test]
    fn es256_and_eddsa_round_trip_and_mismatches_fail() {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let kp = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let p = kp.public_key().as_ref();
        let jwk = json!({"kty": "EC", "crv": "P-256", "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])});
        let sig = kp.sign(&rng, b"msg").unwrap();
        assert!(verify(&jwk, "ES256", b"msg", sig.as_ref()));
        assert!(!verify(&jwk, "ES256", b"other", sig.as_ref()));
        assert!(!verify(&jwk, "RS256", b"msg", sig.as_ref()), "alg must fit kty");
        assert!(!verify(&jwk, "HS256", b"msg", sig.as_ref()));
        assert!(!verify(&jwk, "none", b"msg", b""));
        let mut wrong_alg = jwk.clone();
        wrong_alg["alg"] = json!("ES384");
        assert!(!verify(&wrong_alg, "ES256", b"msg", sig.as_ref()));

        let ed = Ed25519KeyPair::from_pkcs8(Ed25519KeyPair::generate_pkcs8(&rng).unwrap().as_ref()).unwrap();
        let jwk = json!({"kty": "OKP", "crv": "Ed25519", "x": URL_SAFE_NO_PAD.encode(ed.public_key().as_ref())});
        assert!(verify(&jwk, "EdDSA", b"m", ed.sign(b"m").as_ref()));
        assert!(!verify(&jwk, "EdDSA", b"n", ed.sign(b"m").as_ref()));
    }

    #[test]
    fn candidates_by_kid() {
        let jwks = json!({"keys": [{"kid": "a"}, {"kid": "b"}]});
        assert_eq!(candidates(&jwks, Some("b")).len(), 1);
        assert_eq!(candidates(&jwks, None).len(), 2);
        assert!(candidates(&jwks, Some("z")).is_empty());
        assert!(candidates(&json!({}), None).is_empty());
    }
}
