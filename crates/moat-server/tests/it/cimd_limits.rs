//! Limits on what unauthenticated authorization requests can make Moat do with metadata
//! documents: how many distinct documents one source address can have fetched (cache misses
//! are limited, cache hits and lookups joining a fetch under way are not), and the audit event
//! of a fetch surviving the request that asked for it. The documents come from a local HTTPS
//! server (a CA generated here, as in `cimd.rs`).

use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use moat_core::model::{AuditEvent, Resource};
use serde_json::json;

use crate::helpers::*;
use crate::tls::{Hits, TlsServer, slow_body};

const HOST: &str = "limits.test";
const CALLBACK: &str = "http://127.0.0.1/callback";

fn document(id: &str, cache: &'static str) -> Response {
    let doc = json!({ "client_id": id, "client_name": "Limits Client", "redirect_uris": [CALLBACK] });
    ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, cache)], doc.to_string()).into_response()
}

async fn serve(State(hits): State<Hits>, uri: Uri, headers: HeaderMap) -> Response {
    let path = uri.path().to_owned();
    *hits.0.lock().unwrap().entry(path.clone()).or_default() += 1;
    let host = headers.get(header::HOST).and_then(|h| h.to_str().ok()).unwrap_or_default().to_owned();
    let id = format!("https://{host}{path}");
    match path.as_str() {
        // Any number of distinct, valid, cacheable documents.
        p if p.starts_with("/doc-") => document(&id, "max-age=300"),
        // Slow enough for concurrent lookups to overlap.
        p if p.starts_with("/pause-") => {
            tokio::time::sleep(Duration::from_millis(300)).await;
            document(&id, "max-age=300")
        }
        // Valid (well within the fetch timeout), but only after the impatient clients below
        // have given up.
        // A `private_key_jwt` client whose key set cannot be fetched (so it is never cached).
        "/pkjwt.json" => {
            let doc = json!({
                "client_id": id, "client_name": "Key Client", "redirect_uris": [CALLBACK],
                "token_endpoint_auth_method": "private_key_jwt",
                "jwks_uri": format!("https://{host}/keys-missing.json"),
            });
            ([(header::CONTENT_TYPE, "application/json"), (header::CACHE_CONTROL, "max-age=300")], doc.to_string())
                .into_response()
        }
        "/late.json" => {
            tokio::time::sleep(Duration::from_millis(700)).await;
            document(&id, "no-store")
        }
        // Trickles out for six seconds, past the fetch timeout (2 s).
        "/slow.json" => slow_body(),
        _ => StatusCode::NOT_FOUND.into_response(),
    }
}

struct Setup {
    app: TestApp,
    hits: Hits,
    server: TlsServer,
    resource: Resource,
    _ca_dir: tempfile::TempDir,
}

impl Setup {
    async fn start(extra_env: &[(&str, &str)]) -> Self {
        let hits = Hits::default();
        let server = TlsServer::start(HOST, Router::new().fallback(serve).with_state(hits.clone())).await;
        let ca_dir = tempfile::tempdir().unwrap();
        let ca_path = ca_dir.path().join("ca.pem");
        std::fs::write(&ca_path, &server.ca_pem).unwrap();
        let ca = ca_path.display().to_string();
        let resolve = format!("{HOST}=127.0.0.1");
        let mut env: Vec<(&str, &str)> = vec![
            ("MOAT_CIMD_EXTRA_ROOT_CA", &ca),
            ("MOAT_CIMD_RESOLVE", &resolve),
            ("MOAT_CIMD_TIMEOUT_MS", "2000"),
            ("MOAT_CIMD_ALLOW_LOOPBACK", "true"),
        ];
        env.extend_from_slice(extra_env);
        let app = TestApp::spawn_with(&env).await;
        let resource = app.resource_with(|r| r.cimd_enabled = true).await;
        Self { app, hits, server, resource, _ca_dir: ca_dir }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{path}", self.server.origin(HOST))
    }

    fn authorize_url(&self, client_id: &str) -> String {
        authorize_url(&self.app.issuer(&self.resource), client_id, CALLBACK, &Pkce::new(), &[])
    }

    /// One authorization request for the document at `path`, from `from` (sent in the trusted
    /// proxy header) or from the TCP peer (127.0.0.1).
    async fn authorize(&self, path: &str, from: Option<&str>) -> Answer {
        let mut req = self.app.http().get(self.authorize_url(&self.url(path)));
        if let Some(ip) = from {
            req = req.header("x-forwarded-for", ip);
        }
        let resp = req.send().await.unwrap();
        Answer {
            status: resp.status().as_u16(),
            location: resp.headers().get(header::LOCATION).map(|l| l.to_str().unwrap().to_owned()),
            retry_after: resp.headers().get(header::RETRY_AFTER).map(|l| l.to_str().unwrap().to_owned()),
            text: text_of(&resp.text().await.unwrap()),
        }
    }

    /// The audit events of `kind` about the document at `path`, once `enough` holds for them
    /// (the audit writer commits asynchronously, in batches; up to 10 s).
    async fn events(&self, kind: &str, path: &str, enough: impl Fn(&[AuditEvent]) -> bool) -> Vec<AuditEvent> {
        let query =
            moat_store::AuditQuery { kind: Some(kind.into()), client_id: Some(self.url(path)), ..Default::default() };
        let deadline = Instant::now() + Duration::from_secs(10);
        loop {
            let events = self.app.store.list_audit_events(&query).await.unwrap();
            if enough(&events) {
                return events;
            }
            assert!(Instant::now() < deadline, "timed out waiting for {kind} events about {path}: {events:?}");
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    async fn metric(&self, kind: &str) -> u64 {
        let rendered = reqwest::get(format!("{}/metrics", self.app.base)).await.unwrap().text().await.unwrap();
        let prefix = format!("moat_cimd_events_total{{kind=\"{kind}\"}} ");
        rendered.lines().find_map(|l| l.strip_prefix(&prefix)).map_or(0, |v| v.trim().parse().unwrap())
    }
}

/// What Moat answered an authorization request with (redirects not followed).
#[derive(Debug)]
struct Answer {
    status: u16,
    location: Option<String>,
    retry_after: Option<String>,
    text: String,
}

impl Answer {
    /// The client was accepted: Moat moves on to sign-in (a page, or a redirect within Moat).
    fn accepted(&self) -> bool {
        self.status < 400
    }

    #[track_caller]
    fn assert_rate_limited(&self) {
        assert_eq!(self.status, 429, "{self:?}");
        assert_eq!(self.location, None, "shown on Moat's error page, never redirected: {self:?}");
        assert!(self.text.contains("could not be fetched right now"), "{self:?}");
        assert_eq!(self.retry_after.as_deref(), Some("60"), "{self:?}");
    }
}

#[tokio::test]
async fn distinct_documents_over_the_limit_get_429_error_pages_and_are_not_fetched() {
    let s = Setup::start(&[
        ("MOAT_CIMD_FETCH_RATE_LIMIT_PER_MINUTE", "3"),
        ("MOAT_TRUSTED_PROXY_HEADER", "x-forwarded-for"),
    ])
    .await;
    let a = Some("198.51.100.7");
    for i in 1..=3 {
        let answer = s.authorize(&format!("/doc-{i}.json"), a).await;
        assert!(answer.accepted(), "{i}: {answer:?}");
    }
    for i in 4..=6 {
        s.authorize(&format!("/doc-{i}.json"), a).await.assert_rate_limited();
    }
    assert_eq!(s.hits.total(), 3, "nothing fetched past the limit");
    // A document already cached costs nothing, even for an address over its limit.
    assert!(s.authorize("/doc-1.json", a).await.accepted());
    assert_eq!(s.hits.of("/doc-1.json"), 1);
    // The limit is per source address (here: the trusted proxy header's).
    assert!(s.authorize("/doc-4.json", Some("198.51.100.8")).await.accepted());
    assert_eq!(s.hits.of("/doc-4.json"), 1);
    // An IPv6 /64 is one source.
    for i in 10..=12 {
        assert!(s.authorize(&format!("/doc-{i}.json"), Some(&format!("2001:db8:1:2::{i}"))).await.accepted());
    }
    s.authorize("/doc-13.json", Some("2001:db8:1:2:ffff::1")).await.assert_rate_limited();
    assert_eq!(s.hits.of("/doc-13.json"), 0);
    assert!(s.authorize("/doc-13.json", Some("2001:db8:1:3::1")).await.accepted(), "another /64");

    // Audited like other refusals, and counted.
    let events = s.events("cimd.rejected", "/doc-5.json", |e| !e.is_empty()).await;
    assert_eq!(events.len(), 1, "{events:?}");
    assert_eq!(events[0].detail["reason"], "rate_limited");
    assert_eq!(events[0].ip.as_deref(), a);
    assert_eq!(events[0].resource_id.as_deref(), Some(s.resource.id.as_str()));
    assert_eq!(s.metric("rate_limited").await, 4);
    // Refused documents were never recorded as clients.
    let rows = s.app.store.list_clients(Some(&s.resource.id)).await.unwrap();
    assert!(!rows.iter().any(|c| c.id.as_str() == s.url("/doc-5.json")));
}

#[tokio::test]
async fn cache_hits_and_joined_fetches_are_not_limited() {
    // No proxy header: the TCP peer (127.0.0.1) is the source.
    let s = Setup::start(&[("MOAT_CIMD_FETCH_RATE_LIMIT_PER_MINUTE", "2")]).await;
    for i in 0..10 {
        let answer = s.authorize("/doc-a.json", None).await;
        assert!(answer.accepted(), "{i}: {answer:?}");
    }
    assert_eq!(s.hits.of("/doc-a.json"), 1, "one fetch, nine cache hits");
    // Simultaneous first lookups of one document share one fetch and spend one unit of budget.
    let lookups: Vec<_> = (0..5).map(|_| s.authorize("/pause-b.json", None)).collect();
    for answer in futures::future::join_all(lookups).await {
        assert!(answer.accepted(), "{answer:?}");
    }
    assert_eq!(s.hits.of("/pause-b.json"), 1);
    // Two fetches spent the budget of 2.
    s.authorize("/doc-c.json", None).await.assert_rate_limited();
    assert_eq!(s.hits.of("/doc-c.json"), 0);
    assert!(s.authorize("/doc-a.json", None).await.accepted(), "cache hits still served");
    assert!(s.authorize("/pause-b.json", None).await.accepted());
    assert_eq!(s.hits.total(), 2);
    assert_eq!(s.metric("cache_hit").await, 11);
    assert_eq!(s.metric("rate_limited").await, 1);
}

#[tokio::test]
async fn a_cancelled_authorization_still_leaves_its_audit_event() {
    let s = Setup::start(&[]).await;
    // Browsers that give up long before the document arrives.
    let impatient = reqwest::Client::builder().timeout(Duration::from_millis(200)).build().unwrap();
    let url = s.authorize_url(&s.url("/late.json"));
    let (first, second) = tokio::join!(impatient.get(&url).send(), impatient.get(&url).send());
    assert!(first.is_err() && second.is_err(), "both gave up");
    // One fetch, and an event for each request that asked, written after both went away.
    let fetched = s.events("cimd.fetched", "/late.json", |e| e.len() >= 2).await;
    assert_eq!(s.hits.of("/late.json"), 1);
    for ev in &fetched {
        assert_eq!(ev.detail["client_name"], "Limits Client", "{ev:?}");
        assert_eq!(ev.detail["redirect_uris"], json!([CALLBACK]), "{ev:?}");
        assert_eq!(ev.ip.as_deref(), Some("127.0.0.1"), "{ev:?}");
        assert_eq!(ev.resource_id.as_deref(), Some(s.resource.id.as_str()), "{ev:?}");
    }

    // A fetch that fails after its request went away is audited with its reason.
    assert!(impatient.get(s.authorize_url(&s.url("/slow.json"))).send().await.is_err());
    let rejected = s.events("cimd.rejected", "/slow.json", |e| !e.is_empty()).await;
    assert_eq!(rejected[0].detail["reason"], "timeout", "{rejected:?}");

    // A request that stays gets exactly one event: the flight's, not a second from the caller.
    assert!(s.authorize("/doc-stays.json", None).await.accepted());
    s.events("cimd.fetched", "/doc-stays.json", |e| !e.is_empty()).await;
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert_eq!(s.events("cimd.fetched", "/doc-stays.json", |_| true).await.len(), 1);
    assert_eq!(s.events("cimd.fetched", "/late.json", |_| true).await.len(), 2, "no more later either");
    assert_eq!(s.events("cimd.rejected", "/slow.json", |_| true).await.len(), 1);
}

/// The token endpoint resolves a `client_id` URL too (a public CIMD client identifies itself
/// there), so the same per-address budget applies: past it, `429 temporarily_unavailable` and
/// no fetch.
#[tokio::test]
async fn the_token_endpoint_shares_the_fetch_budget() {
    let s = Setup::start(&[
        ("MOAT_CIMD_FETCH_RATE_LIMIT_PER_MINUTE", "2"),
        ("MOAT_TRUSTED_PROXY_HEADER", "x-forwarded-for"),
    ])
    .await;
    let token_url = format!("{}/oauth/token", s.app.issuer(&s.resource));
    let mut statuses = Vec::new();
    for i in 1..=4 {
        let resp = s
            .app
            .http()
            .post(&token_url)
            .header("x-forwarded-for", "203.0.113.9")
            .form(&[
                ("grant_type", "authorization_code"),
                ("code", "x"),
                ("code_verifier", &"v".repeat(43)),
                ("client_id", &s.url(&format!("/doc-{i}.json"))),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        statuses.push((status, body["error"].as_str().unwrap_or_default().to_owned()));
    }
    // The first two documents are fetched (the code is then invalid); the rest are refused.
    assert_eq!(statuses[0].0, 400, "{statuses:?}");
    assert_eq!(statuses[1].0, 400, "{statuses:?}");
    assert_eq!(statuses[2], (429, "temporarily_unavailable".to_owned()), "{statuses:?}");
    assert_eq!(statuses[3], (429, "temporarily_unavailable".to_owned()), "{statuses:?}");
    assert_eq!(s.hits.total(), 2, "nothing fetched past the limit");
}

/// A key set named by an admitted document is charged to the same budget: junk assertions
/// cannot make Moat fetch a `jwks_uri` without limit.
#[tokio::test]
async fn key_set_fetches_share_the_fetch_budget() {
    use base64::Engine as _;
    let s = Setup::start(&[
        ("MOAT_CIMD_FETCH_RATE_LIMIT_PER_MINUTE", "3"),
        ("MOAT_TRUSTED_PROXY_HEADER", "x-forwarded-for"),
    ])
    .await;
    let client_id = s.url("/pkjwt.json");
    let token_url = format!("{}/oauth/token", s.app.issuer(&s.resource));
    let b64 = |v: serde_json::Value| base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(v.to_string());
    let mut statuses = Vec::new();
    for i in 0..4 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs();
        let assertion = format!(
            "{}.{}.AAAA",
            b64(json!({"alg": "ES256", "kid": "k1"})),
            b64(json!({"iss": client_id, "sub": client_id, "aud": token_url, "exp": now + 60, "jti": format!("j{i}")}))
        );
        let resp = s
            .app
            .http()
            .post(&token_url)
            .header("x-forwarded-for", "192.0.2.44")
            .form(&[
                ("grant_type", "client_credentials"),
                ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
                ("client_assertion", &assertion),
                ("client_id", &client_id),
            ])
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body: serde_json::Value = resp.json().await.unwrap();
        statuses.push((status, body["error"].as_str().unwrap_or_default().to_owned()));
    }
    // Budget 3: the document, then two key-set fetches (both fail: refused as invalid_client);
    // after that no more fetches.
    assert_eq!(statuses[0], (401, "invalid_client".to_owned()), "{statuses:?}");
    assert_eq!(statuses[1], (401, "invalid_client".to_owned()), "{statuses:?}");
    assert_eq!(statuses[2], (429, "temporarily_unavailable".to_owned()), "{statuses:?}");
    assert_eq!(statuses[3], (429, "temporarily_unavailable".to_owned()), "{statuses:?}");
    assert_eq!(s.hits.of("/pkjwt.json"), 1);
    assert_eq!(s.hits.of("/keys-missing.json"), 2);
}
