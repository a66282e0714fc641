//! Client ID Metadata Documents end to end: Moat fetches real documents from a local HTTPS
//! server (certificate from a CA generated here) and runs the authorization flow with them,
//! including every way a document can be bad, caching, coalescing, the allow-list, and
//! `private_key_jwt` client authentication.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED_SIGNING, EcdsaKeyPair, KeyPair as _};
use axum::Router;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moat_core::model::Resource;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::tls::{TlsServer, slow_body};

const HOST: &str = "client.test";
const CALLBACK: &str = "http://127.0.0.1:5555/callback";

/// The document server's state: request counts and the key of the `private_key_jwt` client.
#[derive(Clone)]
struct Docs {
    hits: Arc<Mutex<HashMap<String, usize>>>,
    version: Arc<AtomicUsize>,
    public_jwk: Value,
}

impl Docs {
    fn hits(&self, name: &str) -> usize {
        self.hits.lock().unwrap().get(name).copied().unwrap_or(0)
    }
}

fn json_response(body: Value, cache: &'static str) -> Response {
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, cache)], body.to_string()).into_response()
}

async fn serve(State(d): State<Docs>, Path(name): Path<String>, headers: HeaderMap) -> Response {
    *d.hits.lock().unwrap().entry(name.clone()).or_default() += 1;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    let id = format!("https://{host}/{name}");
    let base = |name_: &str| {
        json!({
            "client_id": id,
            "client_name": name_,
            "redirect_uris": ["http://127.0.0.1/callback"],
            "grant_types": ["authorization_code", "refresh_token"],
            "logo_uri": format!("https://{host}/logo.png"),
            "client_uri": format!("https://{host}/"),
        })
    };
    match name.as_str() {
        "client.json" => json_response(base("Docs Client"), "public, max-age=300"),
        "nocache.json" => json_response(base("Uncached Client"), "no-store"),
        "changing.json" => {
            let n = d.version.fetch_add(1, Ordering::SeqCst);
            json_response(base(&format!("Version {n}")), "no-store")
        }
        "https-client.json" => {
            let mut doc = base("Web Client");
            doc["redirect_uris"] = json!(["https://app.example.com/cb"]);
            json_response(doc, "max-age=300")
        }
        "mismatch.json" => {
            let mut doc = base("Mismatch");
            doc["client_id"] = json!(format!("https://{host}/other.json"));
            json_response(doc, "no-store")
        }
        "redirect.json" => (StatusCode::FOUND, [(header::LOCATION, "/client.json")]).into_response(),
        "huge.json" => {
            let mut doc = base("Huge");
            doc["padding"] = json!("x".repeat(8 * 1024));
            json_response(doc, "no-store")
        }
        "slow.json" => slow_body(),
        "html.json" => ([(header::CONTENT_TYPE, "text/html")], base("Html").to_string()).into_response(),
        "missing.json" => StatusCode::NOT_FOUND.into_response(),
        "secret.json" => {
            let mut doc = base("Secret");
            doc["client_secret"] = json!("s3cret");
            json_response(doc, "no-store")
        }
        "private.json" => {
            let mut doc = base("Private");
            doc["token_endpoint_auth_method"] = json!("private_key_jwt");
            let mut jwk = d.public_jwk.clone();
            jwk["d"] = json!("AAAA");
            doc["jwks"] = json!({ "keys": [jwk] });
            json_response(doc, "no-store")
        }
        "pkjwt.json" => {
            let mut doc = base("Signed Client");
            doc["token_endpoint_auth_method"] = json!("private_key_jwt");
            doc["jwks"] = json!({ "keys": [d.public_jwk.clone()] });
            json_response(doc, "max-age=300")
        }
        "logo.png" => {
            // A 1×1 PNG.
            let png = URL_SAFE_NO_PAD
                .decode(
                    "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk-M9QDwADhgGAWjR9awAAAABJRU5ErkJggg",
                )
                .unwrap();
            ([(header::CONTENT_TYPE, "image/png")], png).into_response()
        }
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

/// A signing key for `private_key_jwt` assertions and its public JWK.
struct ClientKey {
    pair: EcdsaKeyPair,
    jwk: Value,
}

impl ClientKey {
    fn new() -> Self {
        let rng = SystemRandom::new();
        let pkcs8 = EcdsaKeyPair::generate_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, &rng).unwrap();
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P256_SHA256_FIXED_SIGNING, pkcs8.as_ref()).unwrap();
        let p = pair.public_key().as_ref().to_vec();
        let jwk = json!({"kty": "EC", "crv": "P-256", "kid": "k1", "use": "sig", "alg": "ES256",
                         "x": URL_SAFE_NO_PAD.encode(&p[1..33]), "y": URL_SAFE_NO_PAD.encode(&p[33..])});
        Self { pair, jwk }
    }

    fn assertion(&self, claims: Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(json!({"alg": "ES256", "kid": "k1", "typ": "JWT"}).to_string());
        let body = URL_SAFE_NO_PAD.encode(claims.to_string());
        let input = format!("{header}.{body}");
        let sig = self.pair.sign(&SystemRandom::new(), input.as_bytes()).unwrap();
        format!("{input}.{}", URL_SAFE_NO_PAD.encode(sig.as_ref()))
    }
}

struct Setup {
    app: TestApp,
    docs: Docs,
    server: TlsServer,
    resource: Resource,
    key: ClientKey,
    _ca_dir: tempfile::TempDir,
}

impl Setup {
    fn url(&self, name: &str) -> String {
        format!("{}/{name}", self.server.origin(HOST))
    }
}

async fn setup_with(allow_loopback: bool, extra_env: &[(&str, &str)]) -> Setup {
    let key = ClientKey::new();
    let docs = Docs { hits: Default::default(), version: Default::default(), public_jwk: key.jwk.clone() };
    let router = Router::new().route("/{name}", get(serve)).with_state(docs.clone());
    let server = TlsServer::start(HOST, router).await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_path, &server.ca_pem).unwrap();
    let ca = ca_path.display().to_string();
    let resolve = format!("{HOST}=127.0.0.1");
    let mut env: Vec<(&str, &str)> = vec![
        ("MOAT_CIMD_EXTRA_ROOT_CA", &ca),
        ("MOAT_CIMD_RESOLVE", &resolve),
        ("MOAT_CIMD_TIMEOUT_MS", "1500"),
        ("MOAT_CIMD_ALLOW_LOOPBACK", if allow_loopback { "true" } else { "false" }),
    ];
    env.extend_from_slice(extra_env);
    let app = TestApp::spawn_with(&env).await;
    let resource = app.resource_with(|r| r.cimd_enabled = true).await;
    app.user("dana@example.com").await;
    Setup { app, docs, server, resource, key, _ca_dir: ca_dir }
}

async fn setup() -> Setup {
    setup_with(true, &[]).await
}

/// Runs an authorization for `client_id` and returns the step Moat ended on.
async fn start(s: &Setup, client_id: &str, redirect: &str) -> Step {
    let pkce = Pkce::new();
    s.app.browser().go(&authorize_url(&s.app.issuer(&s.resource), client_id, redirect, &pkce, &[])).await
}

fn assert_error_page(step: Step, needle: &str) {
    match step {
        Step::Page(status, html) => {
            let text = text_of(&html);
            assert!(status >= 400, "expected an error page, got {status}: {text}");
            assert!(!html.contains("action=\"/login\""), "must not reach the login page: {text}");
            assert!(text.contains(needle), "expected {needle:?} in: {text}");
        }
        Step::Client(loc) => panic!("errors about the client must be shown, not redirected: {loc}"),
    }
}

#[tokio::test]
async fn metadata_advertises_cimd_only_when_enabled() {
    let s = setup().await;
    let meta: Value =
        reqwest::get(format!("{}/.well-known/oauth-authorization-server/resources/{}", s.app.base, s.resource.id))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert_eq!(meta["client_id_metadata_document_supported"], true);
    assert!(meta["token_endpoint_auth_methods_supported"].as_array().unwrap().contains(&json!("private_key_jwt")));
    assert!(meta["token_endpoint_auth_signing_alg_values_supported"].as_array().unwrap().contains(&json!("ES256")));
    let off = s.app.resource_with(|r| r.cimd_enabled = false).await;
    let meta: Value =
        reqwest::get(format!("{}/.well-known/oauth-authorization-server/resources/{}", s.app.base, off.id))
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
    assert!(meta.get("client_id_metadata_document_supported").is_none());
    // A resource that refuses metadata documents says so on an error page.
    let pkce = Pkce::new();
    let step =
        s.app.browser().go(&authorize_url(&s.app.issuer(&off), &s.url("client.json"), CALLBACK, &pkce, &[])).await;
    assert_error_page(step, "does not accept Client ID Metadata Documents");
}

#[tokio::test]
async fn full_flow_with_a_metadata_document_client() {
    let s = setup().await;
    let client_id = s.url("client.json");
    let pkce = Pkce::new();
    let url = authorize_url(&s.app.issuer(&s.resource), &client_id, CALLBACK, &pkce, &[]);
    let browser = s.app.browser();
    let Step::Page(200, login) = browser.go(&url).await else { panic!("expected the login page") };
    let Step::Page(200, consent) = browser.login(&login, "dana@example.com", PASSWORD).await else {
        panic!("expected the consent page")
    };
    let text = text_of(&consent);
    assert!(text.contains("Docs Client"), "{text}");
    assert!(text.contains("Identified by its address: client.test"), "host shown prominently: {text}");
    assert!(text.contains(&client_id), "{text}");
    assert!(text.contains("a program running on this computer"), "loopback-only warning: {text}");
    assert!(!text.contains("registered itself automatically"), "{text}");
    // The logo is served from Moat's own origin, never the client's.
    let doc = scraper::Html::parse_document(&consent);
    let img = doc.select(&scraper::Selector::parse("img.logo").unwrap()).next().expect("logo img");
    let src = img.value().attr("src").unwrap().to_owned();
    assert!(src.starts_with("/logos/"), "{src}");
    let logo = reqwest::get(format!("{}{src}", s.app.base)).await.unwrap();
    assert_eq!(logo.status(), 200);
    assert_eq!(logo.headers()["content-type"], "image/png");
    assert_eq!(logo.headers()["x-content-type-options"], "nosniff");

    let Step::Client(loc) = browser.submit(&consent, "/consent", &[("decision", "approve")]).await else {
        panic!("expected the redirect back")
    };
    let q = query_of(&loc);
    let (status, tokens) = s
        .app
        .token(
            &s.resource,
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", CALLBACK),
                ("code_verifier", &pkce.verifier),
                ("client_id", &client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{tokens}");
    let claims = verify_with_jwks(&s.app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["client_id"], client_id);
    let (status, refreshed) = s
        .app
        .token(
            &s.resource,
            &[
                ("grant_type", "refresh_token"),
                ("refresh_token", tokens["refresh_token"].as_str().unwrap()),
                ("client_id", &client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{refreshed}");
    // One fetch for all of that: the document is cached per its Cache-Control.
    assert_eq!(s.docs.hits("client.json"), 1);

    // The client is recorded and visible to operators.
    let rows = s.app.store.list_clients(Some(&s.resource.id)).await.unwrap();
    let row = rows.iter().find(|c| c.id.as_str() == client_id).expect("recorded client");
    assert_eq!(row.kind, moat_core::model::ClientKind::Cimd);
    assert_eq!(row.name, "Docs Client");

    // Loopback-only: the consent page comes back every time, even with consent remembered.
    assert!(matches!(start(&s, &client_id, CALLBACK).await, Step::Page(200, _)));
}

#[tokio::test]
async fn bad_documents_are_explained_and_never_cached() {
    let s = setup().await;
    let cases = [
        ("mismatch.json", "does not match the URL"),
        ("redirect.json", "redirect"),
        ("huge.json", "larger than"),
        ("slow.json", "took too long"),
        ("html.json", "content type"),
        ("missing.json", "status 404"),
        ("secret.json", "client_secret"),
        ("private.json", "private or symmetric key material"),
    ];
    for (name, needle) in cases {
        let step = start(&s, &s.url(name), CALLBACK).await;
        assert_error_page(step, needle);
        assert_error_page(start(&s, &s.url(name), CALLBACK).await, needle);
        assert_eq!(s.docs.hits(name), 2, "{name}: failures are never cached");
    }
    // Not in the document's redirect_uris.
    assert_error_page(
        start(&s, &s.url("client.json"), "https://evil.example/cb").await,
        "redirect_uri is not registered",
    );
    // Malformed client id URLs are refused before any fetch.
    for bad in [format!("{}/", s.server.origin(HOST)), format!("{}/a/../client.json", s.server.origin(HOST))] {
        assert_error_page(start(&s, &bad, CALLBACK).await, "client_id");
    }
    // The audit writer commits asynchronously, in batches.
    tokio::time::sleep(Duration::from_millis(500)).await;
    let query = moat_store::AuditQuery { kind: Some("cimd.rejected".into()), ..Default::default() };
    let events = s.app.store.list_audit_events(&query).await.unwrap();
    assert!(events.len() >= 16, "every rejection is audited: {}", events.len());
    let metrics = reqwest::get(format!("{}/metrics", s.app.base)).await.unwrap().text().await.unwrap();
    assert!(metrics.contains("moat_cimd_events_total{kind=\"redirect\"}"), "{metrics}");
}

#[tokio::test]
async fn changing_uncached_documents_are_refetched_and_concurrent_lookups_coalesce() {
    let s = setup().await;
    let id = s.url("changing.json");
    for _ in 0..2 {
        assert!(matches!(start(&s, &id, CALLBACK).await, Step::Page(200, _)));
    }
    assert_eq!(s.docs.hits("changing.json"), 2, "no-store: fetched on every use");
    let rows = s.app.store.list_clients(Some(&s.resource.id)).await.unwrap();
    assert_eq!(rows.iter().find(|c| c.id.as_str() == id).unwrap().name, "Version 1", "the record follows the document");

    // Twenty simultaneous first lookups of a cacheable document: one fetch.
    let id = s.url("client.json");
    let futures: Vec<_> = (0..20).map(|_| start(&s, &id, CALLBACK)).collect();
    for step in futures::future::join_all(futures).await {
        assert!(matches!(step, Step::Page(200, _)), "{step:?}");
    }
    assert_eq!(s.docs.hits("client.json"), 1);
}

#[tokio::test]
async fn allow_list_and_loopback_policy() {
    let s = setup().await;
    let restricted = s
        .app
        .resource_with(|r| {
            r.cimd_enabled = true;
            r.cimd_allowed_hosts = vec!["*.trusted.example".into()];
        })
        .await;
    let pkce = Pkce::new();
    let step = s
        .app
        .browser()
        .go(&authorize_url(&s.app.issuer(&restricted), &s.url("client.json"), CALLBACK, &pkce, &[]))
        .await;
    assert_error_page(step, "from client.test are not allowed");
    assert_eq!(s.docs.hits("client.json"), 0, "refused before fetching");

    // Without MOAT_CIMD_ALLOW_LOOPBACK the fetcher refuses the loopback address.
    let strict = setup_with(false, &[]).await;
    assert_error_page(start(&strict, &strict.url("client.json"), CALLBACK).await, "is not allowed (loopback");
    assert_eq!(strict.docs.hits("client.json"), 0);
}

#[tokio::test]
async fn same_document_client_at_two_resources() {
    let s = setup().await;
    let other = s.app.resource_with(|r| r.cimd_enabled = true).await;
    let id = s.url("https-client.json");
    let redirect = "https://app.example.com/cb";
    for r in [&s.resource, &other] {
        let pkce = Pkce::new();
        let loc = s
            .app
            .browser()
            .authorize(&authorize_url(&s.app.issuer(r), &id, redirect, &pkce, &[]), "dana@example.com", "approve")
            .await;
        assert!(query_of(&loc).contains_key("code"), "{loc}");
    }
    let at_first =
        s.app.store.get_client(&s.resource.id, &moat_core::ids::ClientId::parse(&id).unwrap()).await.unwrap();
    let at_second = s.app.store.get_client(&other.id, &moat_core::ids::ClientId::parse(&id).unwrap()).await.unwrap();
    assert!(at_first.is_some() && at_second.is_some(), "one row per resource");

    // Verifiable (https redirect) metadata-document client with remembered consent: silent.
    let browser = s.app.browser();
    let pkce = Pkce::new();
    let url = authorize_url(&s.app.issuer(&s.resource), &id, redirect, &pkce, &[]);
    browser.authorize(&url, "dana@example.com", "approve").await;
    let pkce = Pkce::new();
    let url = authorize_url(&s.app.issuer(&s.resource), &id, redirect, &pkce, &[]);
    assert!(matches!(browser.go(&url).await, Step::Client(_)), "remembered consent applies silently");
}

#[tokio::test]
async fn private_key_jwt_metadata_document_client() {
    let s = setup().await;
    let id = s.url("pkjwt.json");
    let pkce = Pkce::new();
    let loc = s
        .app
        .browser()
        .authorize(&authorize_url(&s.app.issuer(&s.resource), &id, CALLBACK, &pkce, &[]), "dana@example.com", "approve")
        .await;
    let code = query_of(&loc)["code"].clone();
    let token_endpoint = format!("{}/oauth/token", s.app.issuer(&s.resource));
    let base = [
        ("grant_type", "authorization_code"),
        ("code", code.as_str()),
        ("redirect_uri", CALLBACK),
        ("code_verifier", pkce.verifier.as_str()),
    ];
    let now = moat_server::state::now();
    let claims =
        |jti: &str, aud: &str, exp: i64| json!({"iss": id, "sub": id, "aud": aud, "exp": exp, "iat": now, "jti": jti});

    // Without an assertion: the client must authenticate.
    let mut form: Vec<(&str, &str)> = base.to_vec();
    form.push(("client_id", &id));
    let (status, body) = s.app.token(&s.resource, &form, None).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");

    let post = |assertion: String| {
        let mut form: Vec<(String, String)> = base.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
        form.push(("client_assertion_type".into(), "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()));
        form.push(("client_assertion".into(), assertion));
        let http = s.app.http();
        let url = token_endpoint.clone();
        async move {
            let resp = http.post(url).form(&form).send().await.unwrap();
            (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
        }
    };
    // Wrong audience, expired, signed by another key: refused (and the code stays usable).
    let (st, b) = post(s.key.assertion(claims("j0", "https://elsewhere.example/token", now + 60))).await;
    assert_eq!((st, b["error"].as_str()), (401, Some("invalid_client")), "{b}");
    let (st, b) = post(s.key.assertion(claims("j1", &token_endpoint, now - 600))).await;
    assert_eq!((st, b["error"].as_str()), (401, Some("invalid_client")), "{b}");
    let (st, b) = post(ClientKey::new().assertion(claims("j2", &token_endpoint, now + 60))).await;
    assert_eq!((st, b["error"].as_str()), (401, Some("invalid_client")), "{b}");

    let good = s.key.assertion(claims("j3", &token_endpoint, now + 60));
    let (st, tokens) = post(good.clone()).await;
    assert_eq!(st, 200, "{tokens}");
    // The same assertion again: single-use jti (RFC 7523 §3).
    let (st, b) = post(good).await;
    assert_eq!((st, b["error"].as_str()), (401, Some("invalid_client")), "{b}");
    assert!(b["error_description"].as_str().unwrap().contains("already been used"), "{b}");

    // Refresh with a fresh assertion whose aud is the issuer.
    let mut form: Vec<(String, String)> = vec![
        ("grant_type".into(), "refresh_token".into()),
        ("refresh_token".into(), tokens["refresh_token"].as_str().unwrap().into()),
        ("client_assertion_type".into(), "urn:ietf:params:oauth:client-assertion-type:jwt-bearer".into()),
    ];
    form.push(("client_assertion".into(), s.key.assertion(claims("j4", &s.app.issuer(&s.resource), now + 60))));
    let resp = s.app.http().post(&token_endpoint).form(&form).send().await.unwrap();
    assert_eq!(resp.status(), 200);
}

#[tokio::test]
async fn pre_registered_private_key_jwt_client_via_cli() {
    let s = setup().await;
    let jwks_path = s.app.dir.path().join("jwks.json");
    std::fs::write(&jwks_path, json!({ "keys": [s.key.jwk] }).to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["--database", &s.app.db_url, "--public-url", &s.app.base, "client", "create", "--resource"])
        .arg(s.resource.id.as_str())
        .args(["--name", "Signed agent", "--grant", "client-credentials", "--jwks-file"])
        .arg(&jwks_path)
        .arg("--json")
        .env_remove("MOAT_MASTER_KEY")
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let created: Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(created["token_endpoint_auth_method"], "private_key_jwt");
    assert!(created.get("client_secret").is_none());
    let id = created["client_id"].as_str().unwrap();
    let token_endpoint = format!("{}/oauth/token", s.app.issuer(&s.resource));
    let now = moat_server::state::now();
    let assertion =
        s.key.assertion(json!({"iss": id, "sub": id, "aud": token_endpoint, "exp": now + 60, "jti": "cc-1"}));
    let (status, body) = s
        .app
        .post_form(
            &token_endpoint,
            &[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", &assertion),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    // A JWKS file with private key material is refused.
    let mut leaked = s.key.jwk.clone();
    leaked["d"] = json!("AAAA");
    std::fs::write(&jwks_path, json!({ "keys": [leaked] }).to_string()).unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_moat"))
        .args(["--database", &s.app.db_url, "client", "create", "--resource"])
        .arg(s.resource.id.as_str())
        .args(["--name", "Leaky", "--grant", "client-credentials", "--jwks-file"])
        .arg(&jwks_path)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("private or symmetric key material"));
}
