//! Signing keys: generation (ES256, EdDSA, RS256), encrypted storage, the published JWKS
//! (RFC 7517), rotation, and JWS signing/verification of access tokens (RFC 7515, RFC 9068).
//!
//! Rotation rule (DESIGN.md §4): a new key is published before it signs (its `activates_at` lies
//! `key_publish_delay_seconds` in the future, longer than the JWKS `max-age`), and a retiring key
//! stays published until every token it signed has expired. The one exception: when no stored
//! key can sign, a new key signs at once (no token is being issued, so no cached JWKS can lack
//! it in a way that matters, and waiting would stop all issuance for the delay).

use std::sync::{Arc, RwLock};

use anyhow::{Context, anyhow, bail};
use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED, ECDSA_P256_SHA256_FIXED_SIGNING, ED25519, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _,
    RSA_PKCS1_2048_8192_SHA256, RSA_PKCS1_SHA256, RsaKeyPair, UnparsedPublicKey,
};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moat_core::model::SigningKeyRecord;
use moat_store::DynStore;
use serde_json::{Value, json};

use crate::config::SigningAlg;
use crate::crypto::Sealer;

/// Upper bound of any access-token lifetime (resources and clients are capped to it); a
/// retired key stays published this long after it stops signing.
pub const MAX_ACCESS_TOKEN_TTL: i64 = 24 * 3600;

enum Signer {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

/// A signing key loaded into memory.
pub struct LoadedKey {
    pub kid: String,
    pub alg: SigningAlg,
    pub activates_at: i64,
    pub retires_at: Option<i64>,
    pub unpublish_at: Option<i64>,
    pub public_jwk: Value,
    signer: Signer,
}

impl LoadedKey {
    fn sign(&self, msg: &[u8]) -> anyhow::Result<Vec<u8>> {
        let rng = SystemRandom::new();
        match &self.signer {
            Signer::Es256(k) => Ok(k.sign(&rng, msg).map_err(|_| anyhow!("ECDSA signing failed"))?.as_ref().to_vec()),
            Signer::EdDsa(k) => Ok(k.sign(msg).as_ref().to_vec()),
            Signer::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, msg, &mut sig).map_err(|_| anyhow!("RSA signing failed"))?;
                Ok(sig)
            }
        }
    }

    fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        match &self.signer {
            Signer::Es256(k) => {
                UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, k.public_key().as_ref()).verify(msg, sig).is_ok()
            }
            Signer::EdDsa(k) => UnparsedPublicKey::new(&ED25519, k.public_key().as_ref()).verify(msg, sig).is_ok(),
            Signer::Rs256(k) => match k.public_key().as_der() {
                Ok(der) => {
                    // The public key DER is SubjectPublicKeyInfo; aws-lc-rs' RSA verifier takes it.
                    UnparsedPublicKey::new(&RSA_PKCS1_2048_8192_SHA256, der.as_ref()).verify(msg, sig).is_ok()
                }
                Err(_) => false,
            },
        }
    }

    /// Whether the key is in the JWKS at `now`.
    fn published_at(&self, now: i64) -> bool {
        self.unpublish_at.is_none_or(|t| now < t)
    }
}

/// A freshly generated key: its stored record (private key sealed).
pub fn generate_key(alg: SigningAlg, sealer: &Sealer, now: i64, activates_at: i64) -> anyhow::Result<SigningKeyRecord> {
    let rng = SystemRandom::new();
    let pkcs8: Vec<u8> = match alg {
        SigningAlg::ES256 => EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng)
            .map_err(|_| anyhow!("EC key generation failed"))?
            .as_ref()
            .to_vec(),
        SigningAlg::EdDSA => Ed25519KeyPair::generate_pkcs8(&rng)
            .map_err(|_| anyhow!("Ed25519 key generation failed"))?
            .as_ref()
            .to_vec(),
        SigningAlg::RS256 => {
            let kp = RsaKeyPair::generate(KeySize::Rsa2048).map_err(|_| anyhow!("RSA key generation failed"))?;
            kp.as_der().map_err(|_| anyhow!("RSA key encoding failed"))?.as_ref().to_vec()
        }
    };
    let signer = parse_signer(alg, &pkcs8)?;
    let mut jwk = public_jwk_members(&signer);
    let kid = jwk_thumbprint(&jwk)?;
    if let Value::Object(m) = &mut jwk {
        m.insert("kid".into(), json!(kid));
        m.insert("alg".into(), json!(alg.as_str()));
        m.insert("use".into(), json!("sig"));
    }
    let encrypted_private_key = sealer.seal(&pkcs8, kid.as_bytes())?;
    Ok(SigningKeyRecord {
        kid,
        alg: alg.as_str().to_owned(),
        encrypted_private_key,
        public_jwk: jwk.to_string(),
        created_at: now,
        activates_at,
        retires_at: None,
        unpublish_at: None,
    })
}

fn parse_signer(alg: SigningAlg, pkcs8: &[u8]) -> anyhow::Result<Signer> {
    Ok(match alg {
        SigningAlg::ES256 => Signer::Es256(
            EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8).map_err(|e| anyhow!("EC key: {e}"))?,
        ),
        SigningAlg::EdDSA => Signer::EdDsa(Ed25519KeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow!("Ed25519 key: {e}"))?),
        SigningAlg::RS256 => Signer::Rs256(RsaKeyPair::from_pkcs8(pkcs8).map_err(|e| anyhow!("RSA key: {e}"))?),
    })
}

/// The required public members of the JWK (RFC 7517 §4, RFC 7518 §6, RFC 8037 §2).
fn public_jwk_members(signer: &Signer) -> Value {
    let b64 = |b: &[u8]| URL_SAFE_NO_PAD.encode(b);
    match signer {
        Signer::Es256(k) => {
            // Uncompressed SEC1 point: 0x04 ‖ x (32) ‖ y (32).
            let p = k.public_key().as_ref();
            let (x, y) = if p.len() == 65 { (&p[1..33], &p[33..65]) } else { (&p[..0], &p[..0]) };
            json!({"kty": "EC", "crv": "P-256", "x": b64(x), "y": b64(y)})
        }
        Signer::EdDsa(k) => {
            json!({"kty": "OKP", "crv": "Ed25519", "x": b64(k.public_key().as_ref())})
        }
        Signer::Rs256(k) => {
            let pk = k.public_key();
            json!({
                "kty": "RSA",
                "n": b64(pk.modulus().big_endian_without_leading_zero()),
                "e": b64(pk.exponent().big_endian_without_leading_zero()),
            })
        }
    }
}

/// RFC 7638 JWK thumbprint (SHA-256, base64url) over the required members in lexicographic
/// order; used as the `kid`.
fn jwk_thumbprint(jwk: &Value) -> anyhow::Result<String> {
    let obj = jwk.as_object().ok_or_else(|| anyhow!("JWK is not an object"))?;
    let kty = obj.get("kty").and_then(Value::as_str).unwrap_or_default();
    let members: &[&str] = match kty {
        "EC" => &["crv", "kty", "x", "y"],
        "OKP" => &["crv", "kty", "x"],
        "RSA" => &["e", "kty", "n"],
        _ => bail!("unknown kty"),
    };
    // serde_json's Map keeps keys sorted (no preserve_order feature), so building a map of the
    // required members serialises them in the order RFC 7638 §3.3 requires, without whitespace.
    let mut m = serde_json::Map::new();
    for k in members {
        m.insert((*k).to_owned(), obj.get(*k).cloned().unwrap_or(Value::Null));
    }
    let canonical = Value::Object(m).to_string();
    Ok(URL_SAFE_NO_PAD.encode(aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, canonical.as_bytes())))
}

fn load_record(rec: &SigningKeyRecord, sealer: &Sealer) -> anyhow::Result<LoadedKey> {
    let alg: SigningAlg = rec.alg.parse().map_err(|e: String| anyhow!(e))?;
    let pkcs8 = sealer
        .open(&rec.encrypted_private_key, rec.kid.as_bytes())
        .with_context(|| format!("signing key {}", rec.kid))?;
    let signer = parse_signer(alg, &pkcs8)?;
    let public_jwk: Value = serde_json::from_str(&rec.public_jwk).context("stored public JWK")?;
    Ok(LoadedKey {
        kid: rec.kid.clone(),
        alg,
        activates_at: rec.activates_at,
        retires_at: rec.retires_at,
        unpublish_at: rec.unpublish_at,
        public_jwk,
        signer,
    })
}

/// The in-memory set of signing keys, reloaded from the store periodically so every instance
/// sees rotations done by another instance or by `moat keys rotate`.
pub struct KeyRing {
    store: DynStore,
    sealer: Arc<Sealer>,
    keys: RwLock<Arc<Vec<Arc<LoadedKey>>>>,
}

impl KeyRing {
    pub fn new(store: DynStore, sealer: Arc<Sealer>) -> Self {
        Self { store, sealer, keys: RwLock::new(Arc::new(Vec::new())) }
    }

    /// Makes sure some stored key can sign at `now`, then loads all keys. When none can (an
    /// empty database, or only keys not yet active, retired or unpublished, as a rotation
    /// before the first start used to leave), a new key is added that signs at once: no key
    /// signs, so no resource server can hold a cached JWKS that a token of this key would
    /// contradict. It is stored like a rotation, so one key stays in line to sign and any
    /// other unretired key retires.
    pub async fn ensure_and_load(&self, alg: SigningAlg, now: i64) -> anyhow::Result<()> {
        let stored = self.store.list_signing_keys().await?;
        if !stored.iter().any(|k| can_sign(k, now)) {
            let rec = generate_key(alg, &self.sealer, now, now)?;
            self.store.rotate_signing_key(&rec, MAX_ACCESS_TOKEN_TTL).await?;
            if stored.is_empty() {
                tracing::info!(kid = %rec.kid, alg = %rec.alg, "generated the first signing key");
            } else {
                tracing::warn!(
                    kid = %rec.kid,
                    alg = %rec.alg,
                    "no stored signing key could sign; generated one that signs at once"
                );
            }
        }
        self.reload().await
    }

    /// Reloads every key from the store.
    pub async fn reload(&self) -> anyhow::Result<()> {
        let records = self.store.list_signing_keys().await?;
        let mut loaded = Vec::with_capacity(records.len());
        for rec in &records {
            loaded.push(Arc::new(load_record(rec, &self.sealer)?));
        }
        if let Ok(mut guard) = self.keys.write() {
            *guard = Arc::new(loaded);
        }
        Ok(())
    }

    fn snapshot(&self) -> Arc<Vec<Arc<LoadedKey>>> {
        self.keys.read().map(|g| Arc::clone(&g)).unwrap_or_default()
    }

    /// The key that signs at `now`: the most recently activated key that has not retired. If
    /// every active key has retired (rotations no longer leave that state, but a database may
    /// hold it), the most recently activated key still in the JWKS, so its tokens verify; never
    /// one that has left the JWKS: then nothing signs.
    pub fn current(&self, now: i64) -> Option<Arc<LoadedKey>> {
        let keys = self.snapshot();
        let newest = |a: &&Arc<LoadedKey>, b: &&Arc<LoadedKey>| {
            a.activates_at.cmp(&b.activates_at).then_with(|| a.kid.cmp(&b.kid))
        };
        let active = |k: &&Arc<LoadedKey>| k.activates_at <= now && k.published_at(now);
        keys.iter()
            .filter(active)
            .filter(|k| k.retires_at.is_none_or(|r| now < r))
            .max_by(newest)
            .or_else(|| keys.iter().filter(active).max_by(newest))
            .cloned()
    }

    /// The JWKS document published at `now`.
    pub fn jwks(&self, now: i64) -> Value {
        let keys: Vec<Value> =
            self.snapshot().iter().filter(|k| k.published_at(now)).map(|k| k.public_jwk.clone()).collect();
        json!({ "keys": keys })
    }

    /// Signs a JWT with the current key: header `{"alg","kid","typ"}`.
    pub fn sign_jwt(&self, typ: &str, claims: &impl serde::Serialize, now: i64) -> anyhow::Result<String> {
        // Rotations keep a key in line to sign, and `moat serve` adds one at start when none
        // can; reaching this means the stored keys are in a state no rotation leaves (edited by
        // hand, or left by an older Moat).
        let key = self.current(now).ok_or_else(|| {
            anyhow!(concat!(
                "no signing key can sign now (none is active and published): ",
                "run `moat keys rotate` (it then signs at once) or restart `moat serve`"
            ))
        })?;
        let header = json!({"alg": key.alg.as_str(), "kid": key.kid, "typ": typ});
        let mut out = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&header)?);
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(serde_json::to_vec(claims)?));
        let sig = key.sign(out.as_bytes())?;
        out.push('.');
        out.push_str(&URL_SAFE_NO_PAD.encode(sig));
        Ok(out)
    }

    /// Verifies a JWT Moat signed (any published key) and returns its claims; `None` when the
    /// token is malformed, not ours, or its signature is bad. Claims are not checked here.
    pub fn verify_jwt(&self, token: &str, now: i64) -> Option<Value> {
        if token.len() > 16 * 1024 {
            return None;
        }
        let mut parts = token.split('.');
        let (h, c, s) = (parts.next()?, parts.next()?, parts.next()?);
        if parts.next().is_some() {
            return None;
        }
        let header: Value = serde_json::from_slice(&URL_SAFE_NO_PAD.decode(h).ok()?).ok()?;
        let kid = header.get("kid")?.as_str()?;
        let alg = header.get("alg")?.as_str()?;
        let keys = self.snapshot();
        let key = keys.iter().find(|k| k.kid == kid && k.published_at(now))?;
        if key.alg.as_str() != alg {
            return None;
        }
        let sig = URL_SAFE_NO_PAD.decode(s).ok()?;
        let signing_input_len = h.len() + 1 + c.len();
        if !key.verify(&token.as_bytes()[..signing_input_len], &sig) {
            return None;
        }
        serde_json::from_slice(&URL_SAFE_NO_PAD.decode(c).ok()?).ok()
    }
}

/// Whether a stored key can sign at `now`: active, not retired, and in the JWKS.
fn can_sign(k: &SigningKeyRecord, now: i64) -> bool {
    k.activates_at <= now && k.retires_at.is_none_or(|r| now < r) && k.unpublish_at.is_none_or(|u| now < u)
}

/// Rotates keys in the store: a new key of `alg`, published now and signing after
/// `publish_delay`; every older key still in line to sign retires when it activates and stays
/// published for [`MAX_ACCESS_TOKEN_TTL`] more. Returns the new key's record.
///
/// When no stored key can sign at `now` (say `moat keys rotate` before the first `moat serve`),
/// the new key signs at once: the delay exists so caches learn a key before tokens use it, and
/// with no key signing no token can be verified against a cached JWKS anyway, whereas waiting
/// would leave the server unable to issue any token for the whole delay.
///
/// Insertion and retirement are one store transaction that retires only keys older than the
/// newest, so concurrent rotations (several operators, instances or timers) never retire each
/// other's new key: the newest stays and all others retire.
pub async fn rotate(
    store: &DynStore,
    sealer: &Sealer,
    alg: SigningAlg,
    now: i64,
    publish_delay: i64,
) -> anyhow::Result<SigningKeyRecord> {
    let signing = store.list_signing_keys().await?.iter().any(|k| can_sign(k, now));
    let activates_at = if signing { now.saturating_add(publish_delay) } else { now };
    let rec = generate_key(alg, sealer, now, activates_at)?;
    store.rotate_signing_key(&rec, MAX_ACCESS_TOKEN_TTL).await?;
    Ok(rec)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sealer() -> Sealer {
        Sealer::new([9u8; 32]).unwrap()
    }

    #[test]
    fn generated_keys_sign_and_verify_for_every_alg() {
        for alg in [SigningAlg::ES256, SigningAlg::EdDSA, SigningAlg::RS256] {
            let s = sealer();
            let rec = generate_key(alg, &s, 0, 0).unwrap();
            let key = load_record(&rec, &s).unwrap();
            let sig = key.sign(b"hello").unwrap();
            assert!(key.verify(b"hello", &sig), "{alg}");
            assert!(!key.verify(b"hellO", &sig), "{alg}");
            let jwk: Value = serde_json::from_str(&rec.public_jwk).unwrap();
            assert_eq!(jwk["kid"], json!(rec.kid));
            assert_eq!(jwk["alg"], json!(alg.as_str()));
            assert!(jwk.get("d").is_none(), "no private material in the JWK");
            assert_eq!(rec.kid.len(), 43);
        }
    }

    #[test]
    fn thumbprint_matches_rfc7638_example() {
        // RFC 7638 §3.1 example RSA key.
        let jwk = json!({
            "kty": "RSA",
            "n": "0vx7agoebGcQSuuPiLJXZptN9nndrQmbXEps2aiAFbWhM78LhWx4cbbfAAtVT86zwu1RK7aPFFxuhDR1L6tSoc_BJECPebWKRXjBZCiFV4n3oknjhMstn64tZ_2W-5JsGY4Hc5n9yBXArwl93lqt7_RN5w6Cf0h4QyQ5v-65YGjQR0_FDW2QvzqY368QQMicAtaSqzs8KJZgnYb9c7d0zgdAZHzu6qMQvRL5hajrn1n91CbOpbISD08qNLyrdkt-bFTWhAI4vMQFh6WeZu0fM4lFd2NcRwr3XPksINHaQ-G_xBniIqbw0Ls1jF44-csFCur-kEgU8awapJzKnqDKgw",
            "e": "AQAB",
            "alg": "RS256",
            "kid": "2011-04-29"
        });
        assert_eq!(jwk_thumbprint(&jwk).unwrap(), "NzbLsXh8uDCcd-6MNwXF4W_7noWXFZAfHkxZsRGC9Xs");
    }

    #[test]
    fn wrong_master_key_cannot_load() {
        let rec = generate_key(SigningAlg::ES256, &sealer(), 0, 0).unwrap();
        assert!(load_record(&rec, &Sealer::new([1u8; 32]).unwrap()).is_err());
    }
}
