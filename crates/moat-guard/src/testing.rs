//! Test support (`feature = "testing"`): a loopback stand-in for Moat's public key endpoints
//! that speaks Moat's wire format (DESIGN.md §3/§4), and a token minter.
//!
//! [`TestAuthority`] serves, on `127.0.0.1:<random port>`:
//! - `GET /keys` and `GET /.well-known/jwks.json`: the published JWKS (RFC 7517 §5), with an
//!   optional `Cache-Control`;
//! - `GET /.well-known/oauth-authorization-server/resources/{res}`: RFC 8414 metadata with
//!   `issuer` = `{base}/resources/{res}` and `jwks_uri` = `{base}/keys`.
//!
//! It counts requests, can answer 503 ("Moat is down") or shut down completely, and mints
//! tokens with [`TestKey`]s (ES256, EdDSA, RS256) exactly as Moat issues them: header
//! `{"typ":"at+jwt","alg":…,"kid":…}`, claims `iss`, `sub`, `aud` (array: server URL and
//! `res_…`), `client_id`, `scope`, `iat`, `nbf`, `exp`, `jti`.

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::rsa::KeySize;
use aws_lc_rs::signature::{
    ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, Ed25519KeyPair, KeyPair as _, RSA_PKCS1_SHA256, RsaKeyPair,
};
use axum::extract::{Path, State};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use http::{HeaderValue, StatusCode, header};
use serde_json::{Map, Value, json};

use crate::jwt::Algorithm;

enum Private {
    Es256(EcdsaKeyPair),
    EdDsa(Ed25519KeyPair),
    Rs256(RsaKeyPair),
}

/// A signing key with its public JWK.
pub struct TestKey {
    kid: String,
    alg: Algorithm,
    private: Private,
    jwk: Value,
}

impl std::fmt::Debug for TestKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestKey").field("kid", &self.kid).field("alg", &self.alg).finish_non_exhaustive()
    }
}

/// Errors of the test helpers (key generation, binding, signing).
#[derive(Debug, thiserror::Error)]
#[error("test authority: {0}")]
pub struct TestError(String);

fn err(e: impl std::fmt::Display) -> TestError {
    TestError(e.to_string())
}

fn b64(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

impl TestKey {
    /// A fresh P-256 key for ES256.
    pub fn es256(kid: &str) -> Result<Self, TestError> {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).map_err(err)?;
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).map_err(err)?;
        let point = pair.public_key().as_ref();
        // Uncompressed SEC 1 point: 0x04 || X(32) || Y(32).
        let (x, y) = (point.get(1..33), point.get(33..65));
        let (Some(x), Some(y)) = (x, y) else {
            return Err(err("unexpected EC public key length"));
        };
        let jwk = json!({"kty":"EC","crv":"P-256","x":b64(x),"y":b64(y),"kid":kid,"alg":"ES256","use":"sig"});
        Ok(Self { kid: kid.to_owned(), alg: Algorithm::Es256, private: Private::Es256(pair), jwk })
    }

    /// A fresh Ed25519 key for EdDSA.
    pub fn eddsa(kid: &str) -> Result<Self, TestError> {
        let pair = Ed25519KeyPair::generate().map_err(err)?;
        let jwk = json!({"kty":"OKP","crv":"Ed25519","x":b64(pair.public_key().as_ref()),"kid":kid,"alg":"EdDSA","use":"sig"});
        Ok(Self { kid: kid.to_owned(), alg: Algorithm::EdDsa, private: Private::EdDsa(pair), jwk })
    }

    /// A fresh 2048-bit RSA key for RS256.
    pub fn rs256(kid: &str) -> Result<Self, TestError> {
        let pair = RsaKeyPair::generate(KeySize::Rsa2048).map_err(err)?;
        let public = pair.public_key();
        let n = b64(public.modulus().big_endian_without_leading_zero());
        let e = b64(public.exponent().big_endian_without_leading_zero());
        let jwk = json!({"kty":"RSA","n":n,"e":e,"kid":kid,"alg":"RS256","use":"sig"});
        Ok(Self { kid: kid.to_owned(), alg: Algorithm::Rs256, private: Private::Rs256(pair), jwk })
    }

    /// A fresh key of the given algorithm.
    pub fn generate(alg: Algorithm, kid: &str) -> Result<Self, TestError> {
        match alg {
            Algorithm::Es256 => Self::es256(kid),
            Algorithm::EdDsa => Self::eddsa(kid),
            Algorithm::Rs256 => Self::rs256(kid),
        }
    }

    /// The key id.
    pub fn kid(&self) -> &str {
        &self.kid
    }

    /// The algorithm.
    pub fn alg(&self) -> Algorithm {
        self.alg
    }

    /// The public JWK as published.
    pub fn jwk(&self) -> &Value {
        &self.jwk
    }

    /// Signs `message` (a JWS signing input).
    pub fn sign(&self, message: &[u8]) -> Result<Vec<u8>, TestError> {
        let rng = SystemRandom::new();
        match &self.private {
            Private::Es256(k) => Ok(k.sign(&rng, message).map_err(err)?.as_ref().to_vec()),
            Private::EdDsa(k) => Ok(k.sign(message).as_ref().to_vec()),
            Private::Rs256(k) => {
                let mut sig = vec![0u8; k.public_modulus_len()];
                k.sign(&RSA_PKCS1_SHA256, &rng, message, &mut sig).map_err(err)?;
                Ok(sig)
            }
        }
    }

    /// Builds a compact JWS from a header and claims, both as given (no checks).
    pub fn sign_jws(&self, header: &Value, claims: &Value) -> Result<String, TestError> {
        let input = format!("{}.{}", b64(header.to_string().as_bytes()), b64(claims.to_string().as_bytes()));
        let sig = self.sign(input.as_bytes())?;
        Ok(format!("{input}.{}", b64(&sig)))
    }
}

/// Seconds since the epoch.
pub fn now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX)).unwrap_or(0)
}

struct Published {
    keys: Vec<Value>,
    cache_control: Option<String>,
    available: bool,
}

struct Shared {
    published: Mutex<Published>,
    key_fetches: AtomicU64,
    metadata_fetches: AtomicU64,
    base: String,
}

/// A loopback stand-in for Moat's key and metadata endpoints.
pub struct TestAuthority {
    shared: Arc<Shared>,
    addr: SocketAddr,
    resource_id: String,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    task: Option<tokio::task::JoinHandle<()>>,
}

impl std::fmt::Debug for TestAuthority {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("TestAuthority")
            .field("addr", &self.addr)
            .field("resource_id", &self.resource_id)
            .finish_non_exhaustive()
    }
}

fn lock(shared: &Shared) -> std::sync::MutexGuard<'_, Published> {
    shared.published.lock().unwrap_or_else(|p| p.into_inner())
}

async fn keys_handler(State(shared): State<Arc<Shared>>) -> Response {
    shared.key_fetches.fetch_add(1, Ordering::SeqCst);
    let (available, body, cache_control) = {
        let p = lock(&shared);
        (p.available, json!({"keys": p.keys}).to_string(), p.cache_control.clone())
    };
    if !available {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let mut response = ([(header::CONTENT_TYPE, HeaderValue::from_static("application/json"))], body).into_response();
    if let Some(cc) = cache_control.and_then(|c| HeaderValue::from_str(&c).ok()) {
        response.headers_mut().insert(header::CACHE_CONTROL, cc);
    }
    response
}

async fn metadata_handler(State(shared): State<Arc<Shared>>, Path(resource): Path<String>) -> Response {
    shared.metadata_fetches.fetch_add(1, Ordering::SeqCst);
    if !lock(&shared).available {
        return StatusCode::SERVICE_UNAVAILABLE.into_response();
    }
    let base = &shared.base;
    axum::Json(json!({
        "issuer": format!("{base}/resources/{resource}"),
        "authorization_endpoint": format!("{base}/resources/{resource}/oauth/authorize"),
        "token_endpoint": format!("{base}/resources/{resource}/oauth/token"),
        "jwks_uri": format!("{base}/keys"),
        "response_types_supported": ["code"],
        "code_challenge_methods_supported": ["S256"],
    }))
    .into_response()
}

impl TestAuthority {
    /// Starts on `127.0.0.1:0` for resource `resource_id` (e.g. `res_test`).
    pub async fn start(resource_id: &str) -> Result<Self, TestError> {
        Self::start_on("127.0.0.1:0".parse().map_err(err)?, resource_id).await
    }

    /// Starts on a given address (e.g. to come up where a validator already points).
    pub async fn start_on(addr: SocketAddr, resource_id: &str) -> Result<Self, TestError> {
        let listener = tokio::net::TcpListener::bind(addr).await.map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        let shared = Arc::new(Shared {
            published: Mutex::new(Published { keys: Vec::new(), cache_control: None, available: true }),
            key_fetches: AtomicU64::new(0),
            metadata_fetches: AtomicU64::new(0),
            base: format!("http://{addr}"),
        });
        let mut this = Self { shared, addr, resource_id: resource_id.to_owned(), shutdown: None, task: None };
        this.serve(listener);
        Ok(this)
    }

    fn serve(&mut self, listener: tokio::net::TcpListener) {
        let app = axum::Router::new()
            .route("/keys", get(keys_handler))
            .route("/.well-known/jwks.json", get(keys_handler))
            .route("/.well-known/oauth-authorization-server/resources/{resource}", get(metadata_handler))
            .with_state(self.shared.clone());
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        self.shutdown = Some(tx);
        self.task = Some(tokio::spawn(async move {
            let _ = axum::serve(listener, app)
                .with_graceful_shutdown(async move {
                    let _ = rx.await;
                })
                .await;
        }));
    }

    /// Stops serving (connections are refused) until [`TestAuthority::restart`].
    pub async fn shutdown(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(task) = self.task.take() {
            let _ = task.await;
        }
    }

    /// Serves again on the same address.
    pub async fn restart(&mut self) -> Result<(), TestError> {
        self.shutdown().await;
        let listener = tokio::net::TcpListener::bind(self.addr).await.map_err(err)?;
        self.serve(listener);
        Ok(())
    }

    /// The listening address.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    /// `http://127.0.0.1:<port>`.
    pub fn base(&self) -> &str {
        &self.shared.base
    }

    /// The resource id (`res_…`).
    pub fn resource_id(&self) -> &str {
        &self.resource_id
    }

    /// The issuer of the resource: `{base}/resources/{res}`.
    pub fn issuer(&self) -> String {
        format!("{}/resources/{}", self.shared.base, self.resource_id)
    }

    /// `{base}/keys`.
    pub fn jwks_url(&self) -> String {
        format!("{}/keys", self.shared.base)
    }

    /// Publishes a key in the JWKS.
    pub fn publish(&self, key: &TestKey) {
        lock(&self.shared).keys.push(key.jwk().clone());
    }

    /// Publishes an arbitrary JWK.
    pub fn publish_jwk(&self, jwk: Value) {
        lock(&self.shared).keys.push(jwk);
    }

    /// Withdraws the key `kid` from the JWKS.
    pub fn unpublish(&self, kid: &str) {
        lock(&self.shared).keys.retain(|k| k.get("kid").and_then(Value::as_str) != Some(kid));
    }

    /// Sets the `Cache-Control` of the JWKS response.
    pub fn set_cache_control(&self, value: Option<&str>) {
        lock(&self.shared).cache_control = value.map(str::to_owned);
    }

    /// `false`: every endpoint answers 503.
    pub fn set_available(&self, available: bool) {
        lock(&self.shared).available = available;
    }

    /// JWKS requests served so far.
    pub fn key_fetches(&self) -> u64 {
        self.shared.key_fetches.load(Ordering::SeqCst)
    }

    /// Metadata requests served so far.
    pub fn metadata_fetches(&self) -> u64 {
        self.shared.metadata_fetches.load(Ordering::SeqCst)
    }

    /// A token builder with Moat's default claims for `server_url`, signed by `key`:
    /// `sub` `usr_test`, `client_id` `client_test`, no scope, valid for an hour.
    pub fn token<'k>(&self, key: &'k TestKey, server_url: &str) -> TokenBuilder<'k> {
        let now = now();
        let mut claims = Map::new();
        claims.insert("iss".into(), json!(self.issuer()));
        claims.insert("sub".into(), json!("usr_test"));
        claims.insert("aud".into(), json!([server_url, self.resource_id]));
        claims.insert("client_id".into(), json!("client_test"));
        claims.insert("iat".into(), json!(now));
        claims.insert("nbf".into(), json!(now));
        claims.insert("exp".into(), json!(now + 3600));
        claims.insert("jti".into(), json!(format!("jti_{}", b64(&rand_bytes::<12>()))));
        let mut header = Map::new();
        header.insert("typ".into(), json!("at+jwt"));
        header.insert("alg".into(), json!(key.alg().as_str()));
        header.insert("kid".into(), json!(key.kid()));
        TokenBuilder { key, header, claims }
    }
}

impl Drop for TestAuthority {
    fn drop(&mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
    }
}

fn rand_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    let _ = aws_lc_rs::rand::fill(&mut out);
    out
}

/// Builds and signs one token.
#[derive(Debug)]
pub struct TokenBuilder<'k> {
    key: &'k TestKey,
    header: Map<String, Value>,
    claims: Map<String, Value>,
}

impl TokenBuilder<'_> {
    /// Sets `sub`.
    pub fn subject(self, sub: &str) -> Self {
        self.claim("sub", json!(sub))
    }

    /// Sets `scope` (space-separated).
    pub fn scope(self, scope: &str) -> Self {
        self.claim("scope", json!(scope))
    }

    /// Sets `exp` relative to now (negative: already expired).
    pub fn expires_in(self, secs: i64) -> Self {
        self.claim("exp", json!(now() + secs))
    }

    /// Sets any claim.
    pub fn claim(mut self, name: &str, value: Value) -> Self {
        self.claims.insert(name.to_owned(), value);
        self
    }

    /// Removes a claim.
    pub fn without_claim(mut self, name: &str) -> Self {
        self.claims.remove(name);
        self
    }

    /// Sets any header parameter.
    pub fn header(mut self, name: &str, value: Value) -> Self {
        self.header.insert(name.to_owned(), value);
        self
    }

    /// Signs the token.
    pub fn sign(self) -> Result<String, TestError> {
        self.key.sign_jws(&Value::Object(self.header), &Value::Object(self.claims))
    }
}
