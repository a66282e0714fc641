//! JSON Web Key Sets (RFC 7517) into parsed verification keys (RFC 7518 §6.2 EC, §6.3 RSA;
//! RFC 8037 §2 OKP/Ed25519). Keys are parsed once per key-set fetch and shared through `Arc`,
//! so a request never re-parses a JWK; an unchanged JWK keeps its parsed key across refetches.

use std::collections::HashMap;
use std::sync::Arc;

use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ED25519, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;

use crate::jwt::Algorithm;

/// Most keys read from one JWKS document; the rest are ignored.
pub(crate) const MAX_KEYS: usize = 64;

/// A parsed public key bound to the one algorithm it may verify.
pub(crate) struct VerifyingKey {
    pub alg: Algorithm,
    key: ParsedPublicKey,
    /// The JWK as served, to recognise an unchanged key on refetch.
    raw: String,
}

impl std::fmt::Debug for VerifyingKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("VerifyingKey").field("alg", &self.alg).finish_non_exhaustive()
    }
}

impl VerifyingKey {
    /// Verifies `signature` over `message`.
    pub fn verify(&self, message: &[u8], signature: &[u8]) -> bool {
        self.key.verify_sig(message, signature).is_ok()
    }
}

/// What a `kid` maps to.
#[derive(Debug, Clone)]
pub(crate) enum KeyEntry {
    Usable(Arc<VerifyingKey>),
    /// Published, but of a type, curve or algorithm this guard cannot use: a token naming it is
    /// refused with `KeyMismatch` (no refetch, the key set is not missing anything).
    Unusable,
}

/// The keys of one JWKS document, by `kid`.
#[derive(Debug, Default)]
pub(crate) struct KeySet {
    pub keys: HashMap<String, KeyEntry>,
}

impl KeySet {
    pub fn get(&self, kid: &str) -> Option<&KeyEntry> {
        self.keys.get(kid)
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Parses a JWKS document. `previous` lets unchanged keys keep their parsed form.
    /// Fails only when the document is not a JWKS at all; individual keys that cannot be used
    /// are skipped or marked unusable (forward compatibility with new key types).
    pub fn parse(document: &[u8], previous: Option<&KeySet>) -> Result<KeySet, &'static str> {
        let value: Value = serde_json::from_slice(document).map_err(|_| "key set is not valid JSON")?;
        let keys = value.get("keys").and_then(Value::as_array).ok_or("key set has no keys array")?;
        let mut out = KeySet::default();
        for jwk in keys.iter().take(MAX_KEYS) {
            let Some(obj) = jwk.as_object() else { continue };
            let Some(kid) = obj.get("kid").and_then(Value::as_str) else {
                // Without a kid a key can never be selected (moat-guard requires `kid`).
                continue;
            };
            // RFC 7517 §4.2/§4.3: only keys meant for signature verification.
            if obj.get("use").is_some_and(|u| u.as_str() != Some("sig")) {
                continue;
            }
            if let Some(ops) = obj.get("key_ops") {
                let verify = ops.as_array().is_some_and(|a| a.iter().any(|o| o.as_str() == Some("verify")));
                if !verify {
                    continue;
                }
            }
            if out.keys.contains_key(kid) {
                // Duplicate kids are ambiguous; the first one wins (RFC 7517 §4.5 asks for
                // distinct kids within a set).
                continue;
            }
            let raw = jwk.to_string();
            let reused = previous.and_then(|p| match p.keys.get(kid) {
                Some(KeyEntry::Usable(k)) if k.raw == raw => Some(KeyEntry::Usable(k.clone())),
                _ => None,
            });
            let entry = match reused {
                Some(entry) => entry,
                None => match parse_jwk(obj, raw) {
                    Some(key) => KeyEntry::Usable(Arc::new(key)),
                    None => KeyEntry::Unusable,
                },
            };
            out.keys.insert(kid.to_owned(), entry);
        }
        Ok(out)
    }
}

fn field(obj: &serde_json::Map<String, Value>, name: &str) -> Option<Vec<u8>> {
    let s = obj.get(name)?.as_str()?;
    URL_SAFE_NO_PAD.decode(s).ok()
}

/// One JWK into a verification key; `None` when it cannot be used by any allowed algorithm
/// or its `alg` disagrees with its `kty`/`crv`.
fn parse_jwk(obj: &serde_json::Map<String, Value>, raw: String) -> Option<VerifyingKey> {
    let kty = obj.get("kty")?.as_str()?;
    let crv = obj.get("crv").and_then(Value::as_str);
    let (alg, key) = match (kty, crv) {
        ("EC", Some("P-256")) => {
            let x = field(obj, "x")?;
            let y = field(obj, "y")?;
            if x.len() != 32 || y.len() != 32 {
                return None;
            }
            // SEC 1 §2.3.3 uncompressed point: 0x04 || X || Y.
            let mut point = Vec::with_capacity(65);
            point.push(0x04);
            point.extend_from_slice(&x);
            point.extend_from_slice(&y);
            let key = ParsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).ok()?;
            (Algorithm::Es256, key)
        }
        ("OKP", Some("Ed25519")) => {
            let x = field(obj, "x")?;
            if x.len() != 32 {
                return None;
            }
            (Algorithm::EdDsa, ParsedPublicKey::new(&ED25519, x).ok()?)
        }
        ("RSA", _) => {
            let n = field(obj, "n")?;
            let e = field(obj, "e")?;
            let key = RsaPublicKeyComponents { n: &n, e: &e }.to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA256).ok()?;
            (Algorithm::Rs256, key)
        }
        _ => return None,
    };
    // RFC 7517 §4.4: when the JWK names an algorithm, it must be the one its type implies.
    if let Some(named) = obj.get("alg")
        && named.as_str() != Some(alg.as_str())
    {
        return None;
    }
    Some(VerifyingKey { alg, key, raw })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skips_and_marks_keys() {
        // An Ed25519 public key (all-zero is not a valid point for every library, so use a
        // real one: the RFC 8037 §A.2 example key).
        let ed = "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo";
        let doc = serde_json::json!({"keys": [
            {"kty":"OKP","crv":"Ed25519","x":ed,"kid":"ed","alg":"EdDSA","use":"sig"},
            {"kty":"OKP","crv":"Ed25519","x":ed,"kid":"enc","use":"enc"},
            {"kty":"OKP","crv":"Ed25519","x":ed,"kid":"wrong-alg","alg":"ES256"},
            {"kty":"oct","k":"c2VjcmV0","kid":"hmac"},
            {"kty":"OKP","crv":"Ed25519","x":ed},
            {"kty":"OKP","crv":"Ed25519","x":ed,"kid":"ops","key_ops":["encrypt"]}
        ]});
        let set = KeySet::parse(doc.to_string().as_bytes(), None).map_err(String::from);
        let set = set.as_ref().map(|s| {
            let mut kids: Vec<(String, bool)> =
                s.keys.iter().map(|(k, v)| (k.clone(), matches!(v, KeyEntry::Usable(_)))).collect();
            kids.sort();
            kids
        });
        assert_eq!(set, Ok(vec![("ed".to_owned(), true), ("hmac".to_owned(), false), ("wrong-alg".to_owned(), false)]));
    }

    #[test]
    fn rejects_non_jwks() {
        assert!(KeySet::parse(b"[]", None).is_err());
        assert!(KeySet::parse(b"{\"keys\":{}}", None).is_err());
        assert!(KeySet::parse(b"not json", None).is_err());
    }
}
