//! Hardening of the metadata-document resolver against what unauthenticated requests can make
//! it do: bounded cache memory, fetches that outlive the request that started them, key sets
//! that are checked, counted and coalesced, client id URLs without a path, resolver failures,
//! and `Cache-Control` split over several field lines. The documents come from a local HTTPS
//! server (a CA generated here, as in `cimd.rs`).

use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use moat_core::cimd::{CimdError, MAX_JWKS_KEYS};
use moat_server::cimd::{CacheLimits, CimdFailure, CimdResolver, MAX_DOCUMENT_BYTES, Source};
use moat_server::fetch::{FetchError, FetchSettings, SafeFetcher, parse_resolve_overrides};
use moat_server::metrics::Metrics;
use serde_json::{Value, json};

use crate::helpers::*;
use crate::tls::{Hits, TlsServer, slow_body};

const HOST: &str = "clients.test";

fn ec_key(kid: &str) -> Value {
    json!({"kty": "EC", "crv": "P-256", "kid": kid,
           "x": "f83OJ3D2xF1Bg8vub9tLe1gHMzV76e8Tus9uPHvRVEU", "y": "x_FEzRu9m36HLN_tue659LNpXW6pCyStikYjKIWI5a0"})
}

/// A document for `id`, padded with `zeros` JSON zeros (an unknown member, which is kept).
fn document(id: &str, zeros: usize) -> Value {
    json!({
        "client_id": id,
        "client_name": "Hardening Client",
        "redirect_uris": ["http://127.0.0.1/callback"],
        "padding": vec![0; zeros],
    })
}

fn with_headers(body: String, headers: &[(header::HeaderName, &'static str)]) -> Response {
    let mut resp = ([(header::CONTENT_TYPE, "application/json")], body).into_response();
    for (name, value) in headers {
        resp.headers_mut().append(name.clone(), header::HeaderValue::from_static(value));
    }
    resp
}

async fn serve(State(hits): State<Hits>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    *hits.0.lock().unwrap().entry(path.clone()).or_default() += 1;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    let id = format!("https://{host}{path}");
    let cache = [(header::CACHE_CONTROL, "max-age=300")];
    match path.as_str() {
        // A document as large as allowed, almost all of it an array of zeros: each zero is 2
        // bytes on the wire and a 32-byte `serde_json::Value` once parsed.
        p if p.starts_with("/big-") => {
            let mut zeros = 0;
            while document(&id, zeros + 64).to_string().len() <= MAX_DOCUMENT_BYTES {
                zeros += 64;
            }
            with_headers(document(&id, zeros).to_string(), &cache)
        }
        "/two-lines.json" => with_headers(
            document(&id, 0).to_string(),
            &[(header::CACHE_CONTROL, "public, max-age=300"), (header::CACHE_CONTROL, "no-store")],
        ),
        "/slow.json" => slow_body(),
        "/jwks.json" => {
            // Slow enough for concurrent lookups to overlap.
            tokio::time::sleep(Duration::from_millis(300)).await;
            with_headers(json!({ "keys": [ec_key("k1")] }).to_string(), &cache)
        }
        "/jwks-too-many.json" => {
            let keys: Vec<Value> = (0..=MAX_JWKS_KEYS).map(|i| ec_key(&format!("k{i}"))).collect();
            with_headers(json!({ "keys": keys }).to_string(), &cache)
        }
        "/jwks-scalars.json" => with_headers(json!({ "keys": [ec_key("k1"), 0, "k"] }).to_string(), &cache),
        // 8 KiB on the wire, ~128 KiB as a parsed Value: refused by count before anything else.
        "/jwks-zeros.json" => with_headers(json!({ "keys": vec![0; 4000] }).to_string(), &cache),
        "/jwks-array.json" => with_headers(json!([ec_key("k1")]).to_string(), &cache),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

struct Docs {
    server: TlsServer,
    hits: Hits,
}

impl Docs {
    async fn start() -> Self {
        let hits = Hits::default();
        let router = Router::new().fallback(serve).with_state(hits.clone());
        Self { server: TlsServer::start(HOST, router).await, hits }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.origin(HOST))
    }

    /// A resolver that trusts the test CA and reaches the server on loopback.
    fn resolver(&self, limits: CacheLimits) -> (CimdResolver, Arc<Metrics>) {
        let settings = FetchSettings {
            allow_loopback: true,
            extra_root_ca_pem: Some(self.server.ca_pem.as_bytes().to_vec()),
            resolve: parse_resolve_overrides(&format!("{HOST}=127.0.0.1")).unwrap(),
            connect_timeout: Duration::from_secs(1),
            total_timeout: Duration::from_secs(1),
        };
        let metrics = Arc::new(Metrics::new());
        (CimdResolver::with_limits(SafeFetcher::new(settings).unwrap(), Arc::clone(&metrics), limits), metrics)
    }
}

/// The value of `moat_cimd_events_total{kind="…"}`, 0 when absent.
fn count(rendered: &str, kind: &str) -> u64 {
    let prefix = format!("moat_cimd_events_total{{kind=\"{kind}\"}} ");
    rendered.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
}

/// Waits (up to 10 s) for `f` to hold.
async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

#[tokio::test]
async fn document_cache_is_bounded_by_bytes_and_holds_raw_bodies() {
    let docs = Docs::start().await;
    let (resolver, _) = docs.resolver(CacheLimits::default());
    // Every URL here has the same length, so every document has the same size and cost.
    let first = docs.url("/big-999.json");
    let (client, source) = resolver.resolve(&first).await.unwrap();
    assert_eq!(source, Source::Fetched);
    assert!(client.metadata.contains_key("padding"));
    // One maximal document costs its wire size plus a small fixed overhead, not the ~16×
    // a parsed serde_json::Value of 2,500 zeros would.
    let usage = resolver.cache_usage();
    assert_eq!(usage.documents, 1);
    assert!(usage.document_bytes <= MAX_DOCUMENT_BYTES + 2 * first.len() + 256, "{usage:?}");
    assert!(usage.document_bytes > MAX_DOCUMENT_BYTES - 200, "the body is what is charged: {usage:?}");
    // A hit is parsed again from those bytes and is the same client.
    let (again, source) = resolver.resolve(&first).await.unwrap();
    assert_eq!((source, &*again), (Source::Cache, &*client));

    // With room for three such documents, ten distinct ones never exceed the budget; the
    // soonest to expire (here: the oldest) make way.
    let budget = 3 * usage.document_bytes;
    let (small, _) = docs.resolver(CacheLimits { document_bytes: budget, ..CacheLimits::default() });
    for i in 0..10 {
        let url = docs.url(&format!("/big-{}.json", i + 100));
        assert_eq!(small.resolve(&url).await.unwrap().1, Source::Fetched);
        let usage = small.cache_usage();
        assert!(usage.document_bytes <= budget, "{i}: {usage:?}");
    }
    assert_eq!(small.cache_usage().documents, 3);
    assert_eq!(small.resolve(&docs.url("/big-109.json")).await.unwrap().1, Source::Cache, "newest kept");
    assert_eq!(small.resolve(&docs.url("/big-100.json")).await.unwrap().1, Source::Fetched, "oldest evicted");
    assert_eq!(docs.hits.of("/big-100.json"), 2);
}

#[tokio::test]
async fn a_cancelled_lookup_still_finishes_is_counted_and_leaves_no_flight() {
    let docs = Docs::start().await;
    let (resolver, metrics) = docs.resolver(CacheLimits::default());
    let resolver = Arc::new(resolver);
    let url = docs.url("/slow.json");
    // What axum does when the HTTP client disconnects: the handler's future is dropped.
    let caller = {
        let resolver = Arc::clone(&resolver);
        let url = url.clone();
        tokio::spawn(async move { resolver.resolve(&url).await })
    };
    eventually("the fetch to start", || docs.hits.of("/slow.json") == 1).await;
    assert_eq!(resolver.inflight(), 1);
    caller.abort();
    assert!(caller.await.unwrap_err().is_cancelled());
    // A lookup arriving meanwhile joins the same fetch rather than starting another.
    assert_eq!(resolver.inflight(), 1);
    let joined = resolver.resolve(&url).await;
    assert_eq!(joined.unwrap_err(), CimdFailure::Fetch(FetchError::Timeout));
    assert_eq!(docs.hits.of("/slow.json"), 1);
    eventually("the flight to leave the map", || resolver.inflight() == 0).await;
    // Counted once, by the fetch itself.
    assert_eq!(count(&metrics.render(), "timeout"), 1);

    // Only a cancelled caller: the outcome is still counted and the map emptied.
    let caller = {
        let resolver = Arc::clone(&resolver);
        let url = url.clone();
        tokio::spawn(async move { resolver.resolve(&url).await })
    };
    eventually("the second fetch to start", || docs.hits.of("/slow.json") == 2).await;
    caller.abort();
    eventually("the abandoned fetch to be counted", || count(&metrics.render(), "timeout") == 2).await;
    eventually("the abandoned flight to leave the map", || resolver.inflight() == 0).await;
}

#[tokio::test]
async fn a_client_that_disconnects_does_not_lose_the_fetch_outcome() {
    let docs = Docs::start().await;
    let ca_dir = tempfile::tempdir().unwrap();
    let ca_path = ca_dir.path().join("ca.pem");
    std::fs::write(&ca_path, &docs.server.ca_pem).unwrap();
    let ca = ca_path.display().to_string();
    let resolve = format!("{HOST}=127.0.0.1");
    let app = TestApp::spawn_with(&[
        ("MOAT_CIMD_EXTRA_ROOT_CA", &ca),
        ("MOAT_CIMD_RESOLVE", &resolve),
        ("MOAT_CIMD_TIMEOUT_MS", "1000"),
        ("MOAT_CIMD_ALLOW_LOOPBACK", "true"),
    ])
    .await;
    let resource = app.resource_with(|r| r.cimd_enabled = true).await;
    let url =
        authorize_url(&app.issuer(&resource), &docs.url("/slow.json"), "http://127.0.0.1/callback", &Pkce::new(), &[]);
    // The browser gives up long before Moat's fetch times out.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(300)).build().unwrap();
    assert!(impatient.get(&url).send().await.is_err());
    let metrics_url = format!("{}/metrics", app.base);
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let rendered = reqwest::get(&metrics_url).await.unwrap().text().await.unwrap();
        if count(&rendered, "timeout") == 1 {
            break;
        }
        assert!(Instant::now() < deadline, "the abandoned fetch was never counted: {rendered}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    assert_eq!(docs.hits.of("/slow.json"), 1);
}

#[tokio::test]
async fn key_sets_are_checked_counted_and_coalesced() {
    let docs = Docs::start().await;
    let (resolver, metrics) = docs.resolver(CacheLimits::default());
    let url = docs.url("/jwks.json");
    let lookups: Vec<_> = (0..10).map(|_| resolver.client_jwks(&url, Some("k1"), || true)).collect();
    for keys in futures::future::join_all(lookups).await {
        assert_eq!(keys.unwrap()["keys"][0]["kid"], "k1");
    }
    assert_eq!(docs.hits.of("/jwks.json"), 1, "concurrent lookups share one fetch");
    assert_eq!(resolver.inflight(), 0);
    assert_eq!(count(&metrics.render(), "jwks_fetched"), 1);
    // Cached (re-parsed from its bytes); an unknown kid within 30 s of the fetch does not
    // force another fetch.
    assert_eq!(resolver.client_jwks(&url, Some("k1"), || true).await.unwrap()["keys"][0]["kid"], "k1");
    assert!(resolver.client_jwks(&url, Some("made-up"), || true).await.is_ok());
    assert_eq!(docs.hits.of("/jwks.json"), 1);
    assert_eq!(count(&metrics.render(), "jwks_cache_hit"), 2);
    let usage = resolver.cache_usage();
    assert_eq!(usage.key_sets, 1);
    assert!(usage.jwks_bytes < 1024, "a small set costs little: {usage:?}");

    // Sets that are not bounded lists of key objects are refused, counted, never cached.
    for path in ["/jwks-too-many.json", "/jwks-zeros.json"] {
        let err = resolver.client_jwks(&docs.url(path), None, || true).await.unwrap_err();
        assert_eq!(err, CimdFailure::KeySet(CimdError::TooManyKeys), "{path}");
    }
    for path in ["/jwks-scalars.json", "/jwks-array.json"] {
        let err = resolver.client_jwks(&docs.url(path), None, || true).await.unwrap_err();
        assert!(matches!(err, CimdFailure::KeySet(CimdError::KeySet(_))), "{path}: {err:?}");
    }
    let err = resolver.client_jwks(&docs.url("/jwks-missing.json"), None, || true).await.unwrap_err();
    assert_eq!(err, CimdFailure::Fetch(FetchError::Status(404)));
    let rendered = metrics.render();
    assert_eq!(count(&rendered, "jwks_invalid_key_set"), 4, "{rendered}");
    assert_eq!(count(&rendered, "jwks_status"), 1, "{rendered}");
    assert_eq!(count(&rendered, "fetched"), 0, "documents are counted apart: {rendered}");
    assert_eq!(resolver.cache_usage().key_sets, 1);
}

#[tokio::test]
async fn no_store_on_any_cache_control_line_wins() {
    let docs = Docs::start().await;
    let (resolver, _) = docs.resolver(CacheLimits::default());
    let url = docs.url("/two-lines.json");
    for _ in 0..2 {
        assert_eq!(resolver.resolve(&url).await.unwrap().1, Source::Fetched);
    }
    assert_eq!(docs.hits.of("/two-lines.json"), 2);
    assert_eq!(resolver.cache_usage().documents, 0);
}

#[tokio::test]
async fn a_client_id_whose_authority_ends_at_a_query_is_not_fetched() {
    let docs = Docs::start().await;
    let (resolver, metrics) = docs.resolver(CacheLimits::default());
    // The path of this URL is empty: `x/client.json` is its query.
    let url = format!("{}?x/client.json", docs.server.origin(HOST));
    assert_eq!(resolver.resolve(&url).await.unwrap_err(), CimdFailure::Url(CimdError::NotHttpsWithPath));
    assert_eq!(docs.hits.total(), 0, "refused before any fetch");
    assert_eq!(count(&metrics.render(), "bad_client_id"), 1);
}

#[tokio::test]
async fn resolver_failures_are_counted_as_dns() {
    let docs = Docs::start().await;
    let (resolver, metrics) = docs.resolver(CacheLimits::default());
    // RFC 6761 §6.4: never resolves (and has no override).
    let err = resolver.resolve("https://moat-hardening.invalid/client.json").await.unwrap_err();
    assert_eq!(err, CimdFailure::Fetch(FetchError::Resolve));
    let rendered = metrics.render();
    assert_eq!(count(&rendered, "dns"), 1, "{rendered}");
    assert_eq!(count(&rendered, "connect"), 0, "{rendered}");
}
