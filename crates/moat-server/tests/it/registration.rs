//! Dynamic client registration (RFC 7591): the echoed response, secrets for confidential
//! registrations, identical re-registration, validation errors, the per-resource switch, the
//! rate limit, and CORS on the public endpoints (and none on pages).

use moat_core::model::{GrantType, Resource};
use serde_json::{Value, json};

use crate::helpers::*;

const CB: &str = "http://127.0.0.1:33418/callback";

fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).unwrap().as_secs() as i64
}

#[tokio::test]
async fn registration_echoes_every_field() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let request = json!({
        "client_name": "Claude Desktop",
        "redirect_uris": [CB, "https://claude.example/cb"],
        "grant_types": ["authorization_code", "refresh_token"],
        "response_types": ["code"],
        "token_endpoint_auth_method": "none",
        "scope": "todo:read",
        "software_id": "8c4f6c1a-claude",
        "software_version": "1.2.3",
        "client_uri": "https://claude.example",
        "logo_uri": "https://claude.example/logo.png",
        "application_type": "native",
        "contacts": ["ops@claude.example"],
        "x_vendor_extension": {"nested": [1, 2, 3]},
    });
    let resp = app.http().post(format!("{}/oauth/register", app.issuer(&r))).json(&request).send().await.unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["cache-control"], "no-store");
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let reg: Value = resp.json().await.unwrap();
    for (k, v) in request.as_object().unwrap() {
        assert_eq!(&reg[k], v, "field {k} must be echoed: {reg}");
    }
    assert!(reg["client_id"].as_str().unwrap().starts_with("cli_"), "{reg}");
    let issued = reg["client_id_issued_at"].as_i64().unwrap();
    assert!((now() - issued).abs() < 60, "{reg}");
    assert!(reg.get("client_secret").is_none(), "no secret for a public client: {reg}");
    assert!(reg.get("client_secret_expires_at").is_none(), "{reg}");

    // The registration works: the client can complete a flow.
    app.user("alice@example.com").await;
    let tokens = code_flow(&app, &r, reg["client_id"].as_str().unwrap(), CB, "alice@example.com", &[]).await;
    assert!(tokens["refresh_token"].is_string());
}

#[tokio::test]
async fn defaults_are_filled_in_and_server_assigned_fields_replaced() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let (status, reg) = app
        .register(&r, json!({"redirect_uris": ["https://app.example.com/cb"], "client_id_issued_at": 1, "client_secret_expires_at": 5}))
        .await;
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["token_endpoint_auth_method"], "none");
    assert_eq!(reg["grant_types"], json!(["authorization_code"]));
    assert_eq!(reg["client_name"], "app.example.com", "a nameless client is named after its redirect host");
    assert_ne!(reg["client_id_issued_at"], 1);
    assert!(reg.get("client_secret_expires_at").is_none(), "{reg}");
    // A client cannot choose its own client_id.
    let (status, reg) =
        app.register(&r, json!({"redirect_uris": ["https://app.example.com/cb"], "client_id": "cli_mine"})).await;
    assert_eq!(status, 400, "{reg}");
    assert_eq!(reg["error"], "invalid_client_metadata");
}

#[tokio::test]
async fn confidential_registration_gets_a_working_secret() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user("alice@example.com").await;
    for method in ["client_secret_post", "client_secret_basic"] {
        let (status, reg) = app
            .register(
                &r,
                json!({"redirect_uris": [CB], "token_endpoint_auth_method": method,
                       "grant_types": ["authorization_code", "refresh_token"]}),
            )
            .await;
        assert_eq!(status, 201, "{reg}");
        assert_eq!(reg["token_endpoint_auth_method"], method);
        let secret = reg["client_secret"].as_str().unwrap().to_owned();
        assert!(secret.len() >= 43);
        assert_eq!(reg["client_secret_expires_at"], 0);
        let id = reg["client_id"].as_str().unwrap().to_owned();

        let browser = app.browser();
        let (code, pkce) = authorize_code(&app, &browser, &r, &id, CB, "alice@example.com", &[]).await;
        let mut form = vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", CB),
            ("code_verifier", pkce.verifier.as_str()),
        ];
        // Without the secret: invalid_client, and the code is not burnt.
        let mut no_secret = form.clone();
        no_secret.push(("client_id", &id));
        let (status, body) = app.token(&r, &no_secret, None).await;
        assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
        let (status, body) = if method == "client_secret_post" {
            form.extend([("client_id", id.as_str()), ("client_secret", secret.as_str())]);
            app.token(&r, &form, None).await
        } else {
            app.token(&r, &form, Some((&id, &secret))).await
        };
        assert_eq!(status, 200, "{method}: {body}");
        // Refreshing needs the secret too.
        let rt = body["refresh_token"].as_str().unwrap();
        let (status, body) =
            app.token(&r, &[("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", &id)], None).await;
        assert_eq!(status, 401, "{body}");
        let (status, body) = app
            .token(
                &r,
                &[
                    ("grant_type", "refresh_token"),
                    ("refresh_token", rt),
                    ("client_id", &id),
                    ("client_secret", &secret),
                ],
                None,
            )
            .await;
        assert_eq!(status, 200, "{body}");
    }
}

#[tokio::test]
async fn identical_public_reregistration_returns_the_same_client() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let body = json!({"client_name": "Inspector", "redirect_uris": [CB], "grant_types": ["authorization_code", "refresh_token"]});
    let (s1, a) = app.register(&r, body.clone()).await;
    // Same metadata in another key order and grant order.
    let reordered = json!({"grant_types": ["refresh_token", "authorization_code"], "redirect_uris": [CB], "client_name": "Inspector"});
    let (s2, b) = app.register(&r, reordered).await;
    assert_eq!((s1.as_u16(), s2.as_u16()), (201, 201));
    assert_eq!(a["client_id"], b["client_id"]);
    assert_eq!(a["client_id_issued_at"], b["client_id_issued_at"]);
    // Different metadata: a different client.
    let (_, c) = app.register(&r, json!({"client_name": "Inspector 2", "redirect_uris": [CB]})).await;
    assert_ne!(a["client_id"], c["client_id"]);
    // The same registration at another resource is another client.
    let r2 = app.resource().await;
    let (_, d) = app.register(&r2, body).await;
    assert_ne!(a["client_id"], d["client_id"]);
    // Confidential registrations are never merged (each gets its own secret).
    let conf = json!({"redirect_uris": [CB], "token_endpoint_auth_method": "client_secret_post"});
    let (_, e) = app.register(&r, conf.clone()).await;
    let (_, f) = app.register(&r, conf).await;
    assert_ne!(e["client_id"], f["client_id"]);
    assert_ne!(e["client_secret"], f["client_secret"]);
}

#[tokio::test]
async fn invalid_redirect_uris_are_refused() {
    let app = TestApp::spawn_with(&[("MOAT_DCR_RATE_LIMIT_PER_MINUTE", "1000")]).await;
    let r = app.resource().await;
    let cases = [
        json!({}),
        json!({"redirect_uris": []}),
        json!({"redirect_uris": "https://app.example.com/cb"}),
        json!({"redirect_uris": [42]}),
        json!({"redirect_uris": ["javascript:alert(1)"]}),
        json!({"redirect_uris": ["data:text/html,hi"]}),
        json!({"redirect_uris": ["file:///etc/passwd"]}),
        json!({"redirect_uris": ["vbscript:msgbox"]}),
        json!({"redirect_uris": ["http://app.example.com/cb"]}),
        json!({"redirect_uris": ["https://app.example.com/cb#frag"]}),
        json!({"redirect_uris": ["/relative/cb"]}),
        json!({"redirect_uris": ["https://user:pw@app.example.com/cb"]}),
        json!({"redirect_uris": [CB, "javascript:alert(1)"]}),
        json!({"redirect_uris": (0..21).map(|i| format!("https://app.example.com/cb{i}")).collect::<Vec<_>>()}),
    ];
    for body in cases {
        let (status, reg) = app.register(&r, body.clone()).await;
        assert_eq!(status, 400, "{body}: {reg}");
        assert_eq!(reg["error"], "invalid_redirect_uri", "{body}: {reg}");
    }
    // A native app's private-use scheme and loopback hosts are fine.
    for uri in [
        "com.example.app:/oauth2redirect",
        "http://localhost:3334/oauth/callback",
        "http://[::1]/cb",
        "cursor://anysphere.cursor-retrieval/oauth/callback",
    ] {
        let (status, reg) = app.register(&r, json!({"redirect_uris": [uri], "application_type": "native"})).await;
        assert_eq!(status, 201, "{uri}: {reg}");
    }
}

#[tokio::test]
async fn invalid_metadata_is_refused() {
    let app = TestApp::spawn_with(&[("MOAT_DCR_RATE_LIMIT_PER_MINUTE", "1000")]).await;
    let r = app.resource().await;
    let url = format!("{}/oauth/register", app.issuer(&r));
    for body in [
        json!({"redirect_uris": [CB], "grant_types": ["client_credentials"]}),
        json!({"redirect_uris": [CB], "grant_types": ["authorization_code", "client_credentials"]}),
        json!({"redirect_uris": [CB], "grant_types": ["implicit"]}),
        json!({"redirect_uris": [CB], "grant_types": ["refresh_token"]}),
        json!({"redirect_uris": [CB], "response_types": ["token"]}),
        json!({"redirect_uris": [CB], "token_endpoint_auth_method": "private_key_jwt"}),
        json!({"redirect_uris": [CB], "token_endpoint_auth_method": "tls_client_auth"}),
        json!({"redirect_uris": [CB], "client_name": 7}),
        json!({"redirect_uris": [CB], "client_name": "a\u{0}b"}),
        json!({"redirect_uris": [CB], "client_name": "x".repeat(201)}),
        json!({"redirect_uris": [CB], "scope": "bad\"scope"}),
        json!({"redirect_uris": [CB], "client_uri": "javascript:alert(1)"}),
        json!({"redirect_uris": [CB], "jwks": {"keys": [{"kty": "oct", "k": "c2VjcmV0"}]}}),
        json!([CB]),
        json!("string"),
    ] {
        let (status, reg) = app.register(&r, body.clone()).await;
        assert_eq!(status, 400, "{body}: {reg}");
        assert_eq!(reg["error"], "invalid_client_metadata", "{body}: {reg}");
    }
    // Not JSON, or not declared as JSON.
    let raw_cases: [(&str, &[u8]); 5] = [
        ("application/json", b"{not json"),
        ("application/json", b""),
        ("application/json", &[0xff, 0xfe, 0x00]),
        ("text/plain", br#"{"redirect_uris": ["http://127.0.0.1/cb"]}"#),
        ("application/x-www-form-urlencoded", b"redirect_uris=http%3A%2F%2F127.0.0.1%2Fcb"),
    ];
    for (ct, body) in raw_cases {
        let resp = app.http().post(&url).header("content-type", ct).body(body.to_vec()).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{ct}");
        let reg: Value = resp.json().await.unwrap();
        assert_eq!(reg["error"], "invalid_client_metadata", "{ct}: {reg}");
    }
    let resp = app.http().post(&url).body(r#"{"redirect_uris": ["http://127.0.0.1/cb"]}"#).send().await.unwrap();
    assert_eq!(resp.status(), 400, "no content type");
}

#[tokio::test]
async fn registration_can_be_disabled_per_resource() {
    let app = TestApp::spawn().await;
    let r = app.resource_with(|r| r.dcr_enabled = false).await;
    let (status, body) = app.register(&r, json!({"redirect_uris": [CB]})).await;
    assert_eq!(status, 404, "{body}");
    let meta = app.get_json(&format!("{}/.well-known/oauth-authorization-server/resources/{}", app.base, r.id)).await;
    assert!(meta.get("registration_endpoint").is_none(), "{meta}");
    // Enabled resources advertise it, and it is where registration happens.
    let on = app.resource().await;
    let meta = app.get_json(&format!("{}/.well-known/oauth-authorization-server/resources/{}", app.base, on.id)).await;
    assert_eq!(meta["registration_endpoint"], format!("{}/oauth/register", app.issuer(&on)));
    // Registration at an unknown resource.
    let resp = app
        .http()
        .post(format!("{}/resources/res_doesnotexist/oauth/register", app.base))
        .json(&json!({"redirect_uris": [CB]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);
}

#[tokio::test]
async fn registrations_are_rate_limited() {
    let app = TestApp::spawn_with(&[("MOAT_DCR_RATE_LIMIT_PER_MINUTE", "3")]).await;
    let r = app.resource().await;
    for i in 0..3 {
        let (status, body) =
            app.register(&r, json!({"redirect_uris": [format!("https://app{i}.example.com/cb")]})).await;
        assert_eq!(status, 201, "{body}");
    }
    let resp = app
        .http()
        .post(format!("{}/oauth/register", app.issuer(&r)))
        .json(&json!({"redirect_uris": ["https://late.example.com/cb"]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 429);
    let retry: u64 = resp.headers()["retry-after"].to_str().unwrap().parse().unwrap();
    assert!((1..=60).contains(&retry));
    let body: Value = resp.json().await.unwrap();
    assert!(body["error"].is_string(), "{body}");
    // Nothing was registered by the refused request.
    let clients = app.store.list_clients(Some(&r.id)).await.unwrap();
    assert_eq!(clients.len(), 3);
}

const ORIGIN: &str = "https://inspector.example";

async fn preflight(app: &TestApp, url: &str) -> reqwest::Response {
    app.http()
        .request(reqwest::Method::OPTIONS, url)
        .header("origin", ORIGIN)
        .header("access-control-request-method", "POST")
        .header("access-control-request-headers", "content-type, authorization, mcp-protocol-version")
        .send()
        .await
        .unwrap()
}

#[tokio::test]
async fn public_endpoints_allow_cors_and_pages_do_not() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let issuer = app.issuer(&r);
    let metadata = format!("{}/.well-known/oauth-authorization-server/resources/{}", app.base, r.id);
    let public = [
        format!("{issuer}/oauth/register"),
        format!("{issuer}/oauth/token"),
        format!("{issuer}/oauth/revoke"),
        format!("{issuer}/oauth/introspect"),
        metadata.clone(),
        format!("{}/keys", app.base),
        format!("{}/.well-known/jwks.json", app.base),
    ];
    for url in &public {
        let resp = preflight(&app, url).await;
        assert!(resp.status().is_success(), "{url}: {}", resp.status());
        let h = resp.headers();
        assert_eq!(h["access-control-allow-origin"], "*", "{url}");
        let allowed = h["access-control-allow-headers"].to_str().unwrap().to_ascii_lowercase();
        for needed in ["content-type", "authorization", "mcp-protocol-version"] {
            assert!(allowed.contains(needed), "{url}: {allowed}");
        }
        assert!(h["access-control-allow-methods"].to_str().unwrap().contains("POST"), "{url}");
        assert!(h.get("access-control-allow-credentials").is_none(), "{url}");
    }
    // Actual requests carry the header too, errors included.
    let resp = app.http().get(&metadata).header("origin", ORIGIN).send().await.unwrap();
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let resp = app
        .http()
        .post(format!("{issuer}/oauth/token"))
        .header("origin", ORIGIN)
        .form(&[("grant_type", "nope")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");
    let resp = app
        .http()
        .post(format!("{issuer}/oauth/register"))
        .header("origin", ORIGIN)
        .json(&json!({"redirect_uris": [CB]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 201);
    assert_eq!(resp.headers()["access-control-allow-origin"], "*");

    // Pages and the authorization endpoint: no CORS at all.
    app.user("alice@example.com").await;
    let (c, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode]).await;
    let authorize = authorize_url(&issuer, c.id.as_str(), CB, &Pkce::new(), &[]);
    let browser = app.browser();
    let resp = browser.client.get(&authorize).header("origin", ORIGIN).send().await.unwrap();
    assert!(resp.headers().get("access-control-allow-origin").is_none());
    let login = resp.headers()["location"].to_str().unwrap().to_owned();
    for url in [login.clone(), format!("{}/logout", app.base), format!("{}/consent?req=x", app.base), authorize] {
        let resp = browser.client.get(&url).header("origin", ORIGIN).send().await.unwrap();
        assert!(resp.headers().get("access-control-allow-origin").is_none(), "{url}");
        let resp = preflight(&app, &url).await;
        assert!(resp.headers().get("access-control-allow-origin").is_none(), "{url}");
    }
}

#[tokio::test]
async fn the_rate_limit_trusts_forwarded_addresses_only_when_configured() {
    let register = |app: &TestApp, r: &Resource, i: usize, forwarded: String| {
        app.http()
            .post(format!("{}/oauth/register", app.issuer(r)))
            .header("x-forwarded-for", forwarded)
            .json(&json!({"redirect_uris": [format!("https://app{i}.example.com/cb")]}))
            .send()
    };
    // Not configured: a spoofed header does not buy a fresh budget.
    let app = TestApp::spawn_with(&[("MOAT_DCR_RATE_LIMIT_PER_MINUTE", "2")]).await;
    let r = app.resource().await;
    let statuses: Vec<u16> =
        futures_statuses((0..3).map(|i| register(&app, &r, i, format!("198.51.100.{i}"))).collect::<Vec<_>>()).await;
    assert_eq!(statuses, vec![201, 201, 429]);
    // Configured: each client address (the right-most entry) has its own budget.
    let app = TestApp::spawn_with(&[
        ("MOAT_DCR_RATE_LIMIT_PER_MINUTE", "2"),
        ("MOAT_TRUSTED_PROXY_HEADER", "x-forwarded-for"),
    ])
    .await;
    let r = app.resource().await;
    let statuses = futures_statuses(
        (0..6).map(|i| register(&app, &r, i, format!("203.0.113.9, 198.51.100.{}", i / 3))).collect::<Vec<_>>(),
    )
    .await;
    assert_eq!(statuses, vec![201, 201, 429, 201, 201, 429]);
}

/// Sends the requests one after another and collects their statuses.
async fn futures_statuses(
    requests: Vec<impl std::future::Future<Output = reqwest::Result<reqwest::Response>>>,
) -> Vec<u16> {
    let mut out = Vec::new();
    for r in requests {
        out.push(r.await.unwrap().status().as_u16());
    }
    out
}
