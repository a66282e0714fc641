//! The authorization endpoint: PKCE, resource indicators, scopes, client and redirect URI
//! validation (shown, never redirected), loopback port freedom, `iss` on every response,
//! `prompt`, remembered consent, denial, and unsupported response types.

use moat_core::ids::ClientId;
use moat_core::model::{Client, GrantType, Resource};
use serde_json::json;

use crate::helpers::*;

const CB: &str = "https://app.example.com/cb";
const EMAIL: &str = "alice@example.com";

/// An app with a resource, a user and a pre-registered public client redirecting to [`CB`].
async fn setup() -> (TestApp, Resource, Client) {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user(EMAIL).await;
    let (c, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode, GrantType::RefreshToken]).await;
    (app, r, c)
}

/// The parameters of a valid request, as owned pairs that tests then edit.
fn valid_pairs(client_id: &str, redirect: &str, pkce: &Pkce) -> Vec<(String, String)> {
    [
        ("response_type", "code"),
        ("client_id", client_id),
        ("redirect_uri", redirect),
        ("code_challenge", &pkce.challenge),
        ("code_challenge_method", "S256"),
        ("state", "st-123"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect()
}

/// `pairs` with `key` removed (`None`) or replaced.
fn set(mut pairs: Vec<(String, String)>, key: &str, value: Option<&str>) -> Vec<(String, String)> {
    pairs.retain(|(k, _)| k != key);
    if let Some(v) = value {
        pairs.push((key.to_owned(), v.to_owned()));
    }
    pairs
}

fn url_of(app: &TestApp, r: &Resource, pairs: &[(String, String)]) -> String {
    let borrowed: Vec<(&str, &str)> = pairs.iter().map(|(k, v)| (k.as_str(), v.as_str())).collect();
    authz_url(&app.issuer(r), &borrowed)
}

/// GETs an authorization URL and expects an error redirect to `redirect`.
async fn expect_redirect_error(
    app: &TestApp,
    r: &Resource,
    url: &str,
    redirect: &str,
    error: &str,
    state: Option<&str>,
) {
    let resp = app.http().get(url).send().await.unwrap();
    assert_eq!(resp.status(), 303, "{url}");
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    expect_error_redirect(&loc, redirect, error, state, &app.issuer(r));
}

/// GETs an authorization URL and expects an HTML error page, never a redirect.
async fn expect_error_page(app: &TestApp, url: &str, status: u16) -> String {
    let resp = app.http().get(url).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), status, "{url}");
    assert!(resp.headers().get("location").is_none(), "must not redirect: {url}");
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("text/html"));
    assert_eq!(resp.headers()["cache-control"], "no-store");
    let html = resp.text().await.unwrap();
    assert!(!html.contains("action=\"/login\""), "an error page, not the login page");
    html
}

#[tokio::test]
async fn pkce_is_mandatory_and_s256_only() {
    let (app, r, c) = setup().await;
    let pkce = Pkce::new();
    let ok = valid_pairs(c.id.as_str(), CB, &pkce);
    let plain_challenge = pkce.verifier.clone();
    let padded = format!("{}=", pkce.challenge);
    let bad_chars = format!("{}+", &pkce.challenge[..42]);
    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("missing challenge", set(ok.clone(), "code_challenge", None)),
        ("missing method", set(ok.clone(), "code_challenge_method", None)),
        (
            "plain",
            set(set(ok.clone(), "code_challenge_method", Some("plain")), "code_challenge", Some(&plain_challenge)),
        ),
        ("plain with an S256-shaped challenge", set(ok.clone(), "code_challenge_method", Some("plain"))),
        ("unknown method", set(ok.clone(), "code_challenge_method", Some("S512"))),
        ("method in lower case", set(ok.clone(), "code_challenge_method", Some("s256"))),
        ("short challenge", set(ok.clone(), "code_challenge", Some("abc"))),
        ("padded challenge", set(ok.clone(), "code_challenge", Some(&padded))),
        ("non-base64url challenge", set(ok.clone(), "code_challenge", Some(&bad_chars))),
        ("long challenge", set(ok.clone(), "code_challenge", Some(&"a".repeat(129)))),
    ];
    for (name, pairs) in cases {
        let url = url_of(&app, &r, &pairs);
        let resp = app.http().get(&url).send().await.unwrap();
        assert_eq!(resp.status(), 303, "{name}");
        let loc = resp.headers()["location"].to_str().unwrap().to_owned();
        let q = expect_error_redirect(&loc, CB, "invalid_request", Some("st-123"), &app.issuer(&r));
        assert!(!q["error_description"].is_empty(), "{name}");
    }
    // The valid request gets to the login page.
    assert!(is_login_page(&app.browser().go(&url_of(&app, &r, &ok)).await));
}

#[tokio::test]
async fn absent_resource_defaults_to_the_issuers_server_and_variants_are_canonicalised() {
    let (app, r, c) = setup().await;
    let tokens = code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let claims = verify_with_jwks(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["aud"], json!([r.server_url, r.id.to_string()]));

    // A canonically equal spelling (upper-case host, trailing slash) names the same resource;
    // the token carries the registered string.
    let variant = format!("{}/", r.server_url.replacen("https://mcp-", "https://MCP-", 1));
    let tokens = code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[("resource", &variant)]).await;
    let claims = verify_with_jwks(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["aud"], json!([r.server_url, r.id.to_string()]));
}

#[tokio::test]
async fn unknown_mismatched_or_repeated_resource_is_invalid_target() {
    let (app, r, c) = setup().await;
    let other = app.resource().await;
    let pkce = Pkce::new();
    let ok = valid_pairs(c.id.as_str(), CB, &pkce);
    let with_fragment = format!("{}#frag", r.server_url);
    let other_path = format!("{}2", r.server_url);
    let http_scheme = r.server_url.replacen("https://", "http://", 1);
    for resource in [
        "https://unknown.example.com/mcp",
        other.server_url.as_str(),
        &with_fragment,
        &other_path,
        &http_scheme,
        "mcp",
        "urn:example:mcp",
    ] {
        let url = url_of(&app, &r, &set(ok.clone(), "resource", Some(resource)));
        expect_redirect_error(&app, &r, &url, CB, "invalid_target", Some("st-123")).await;
    }
    // Two resource parameters, even identical ones.
    let mut twice = set(ok.clone(), "resource", Some(&r.server_url));
    twice.push(("resource".into(), r.server_url.clone()));
    expect_redirect_error(&app, &r, &url_of(&app, &r, &twice), CB, "invalid_target", Some("st-123")).await;
}

#[tokio::test]
async fn unknown_scope_is_invalid_scope() {
    let (app, r, c) = setup().await;
    let pkce = Pkce::new();
    let ok = valid_pairs(c.id.as_str(), CB, &pkce);
    for scope in ["todo:delete", "todo:read admin", "todo\"read", "TODO:READ"] {
        let url = url_of(&app, &r, &set(ok.clone(), "scope", Some(scope)));
        expect_redirect_error(&app, &r, &url, CB, "invalid_scope", Some("st-123")).await;
    }
}

#[tokio::test]
async fn protocol_scopes_are_accepted_and_dropped() {
    let (app, r, c) = setup().await;
    let tokens =
        code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[("scope", "offline_access openid profile email")]).await;
    assert_eq!(tokens["scope"], "todo:read", "only protocol scopes: the default scopes");
    let tokens = code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[("scope", "openid todo:write offline_access")]).await;
    assert_eq!(tokens["scope"], "todo:write");
    let claims = verify_with_jwks(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["scope"], "todo:write");
}

#[tokio::test]
async fn client_and_redirect_uri_errors_are_shown_never_redirected() {
    let (app, r, c) = setup().await;
    let other = app.resource().await;
    let (foreign, _) = app.client(&other, &[CB], true, &[GrantType::AuthorizationCode]).await;
    let (disabled, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode]).await;
    app.store.set_client_disabled(&r.id, &disabled.id, true, 0).await.unwrap();
    let (two_uris, _) =
        app.client(&r, &[CB, "https://app.example.com/cb2"], true, &[GrantType::AuthorizationCode]).await;
    let pkce = Pkce::new();
    let ok = valid_pairs(c.id.as_str(), CB, &pkce);
    let unknown_id = ClientId::generate().to_string();
    let mut dup_client = ok.clone();
    dup_client.push(("client_id".into(), c.id.to_string()));
    let mut dup_redirect = ok.clone();
    dup_redirect.push(("redirect_uri".into(), CB.into()));
    // Everything else is wrong too (no PKCE, bad response_type): the client/redirect error wins.
    let broken = set(set(ok.clone(), "code_challenge", None), "response_type", Some("token"));

    let cases: Vec<(&str, Vec<(String, String)>)> = vec![
        ("unknown client", set(ok.clone(), "client_id", Some(&unknown_id))),
        ("malformed client_id", set(ok.clone(), "client_id", Some("not-a-client"))),
        ("missing client_id", set(ok.clone(), "client_id", None)),
        ("client of another resource", set(ok.clone(), "client_id", Some(foreign.id.as_str()))),
        ("disabled client", set(ok.clone(), "client_id", Some(disabled.id.as_str()))),
        ("unregistered redirect", set(ok.clone(), "redirect_uri", Some("https://evil.example/cb"))),
        ("redirect with trailing slash", set(ok.clone(), "redirect_uri", Some("https://app.example.com/cb/"))),
        ("redirect with query", set(ok.clone(), "redirect_uri", Some("https://app.example.com/cb?x=1"))),
        ("redirect with port", set(ok.clone(), "redirect_uri", Some("https://app.example.com:8443/cb"))),
        ("redirect in other case", set(ok.clone(), "redirect_uri", Some("https://app.example.com/CB"))),
        ("javascript redirect", set(ok.clone(), "redirect_uri", Some("javascript:alert(1)"))),
        ("duplicate client_id", dup_client),
        ("duplicate redirect_uri", dup_redirect),
        (
            "missing redirect_uri with several registered",
            set(set(ok.clone(), "client_id", Some(two_uris.id.as_str())), "redirect_uri", None),
        ),
        ("unknown client with broken request", set(broken, "client_id", Some(&unknown_id))),
    ];
    for (name, pairs) in cases {
        let html = expect_error_page(&app, &url_of(&app, &r, &pairs), 400).await;
        assert!(text_of(&html).contains("invalid"), "{name}: {}", text_of(&html));
    }
    // An issuer path naming no resource.
    let url = authz_url(&format!("{}/resources/res_doesnotexist", app.base), &[("client_id", c.id.as_str())]);
    expect_error_page(&app, &url, 404).await;

    // A single registered redirect URI may be omitted.
    let url = url_of(&app, &r, &set(ok, "redirect_uri", None));
    assert!(is_login_page(&app.browser().go(&url).await));
}

#[tokio::test]
async fn other_duplicate_parameters_are_invalid_request_redirects() {
    let (app, r, c) = setup().await;
    let pkce = Pkce::new();
    let ok = valid_pairs(c.id.as_str(), CB, &pkce);
    for (key, value) in [
        ("scope", "todo:read"),
        ("code_challenge", pkce.challenge.as_str()),
        ("code_challenge_method", "S256"),
        ("response_type", "code"),
        ("prompt", "login"),
    ] {
        let mut pairs = ok.clone();
        pairs.push((key.into(), value.into()));
        if key == "scope" || key == "prompt" {
            pairs.push((key.into(), value.into()));
        }
        expect_redirect_error(&app, &r, &url_of(&app, &r, &pairs), CB, "invalid_request", Some("st-123")).await;
    }
    // A repeated state is not echoed (which one would it be?).
    let mut pairs = ok.clone();
    pairs.push(("state".into(), "other".into()));
    expect_redirect_error(&app, &r, &url_of(&app, &r, &pairs), CB, "invalid_request", None).await;
}

#[tokio::test]
async fn loopback_redirects_may_use_any_port_but_nothing_else_varies() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user(EMAIL).await;
    let (c, _) = app
        .client(
            &r,
            &["http://127.0.0.1/cb", "http://[::1]/cb", "https://app.example.com/cb"],
            true,
            &[GrantType::AuthorizationCode],
        )
        .await;
    let pkce = Pkce::new();
    for ok in ["http://127.0.0.1:4321/cb", "http://127.0.0.1/cb", "http://127.0.0.1:65535/cb", "http://[::1]:9/cb"] {
        let url = authorize_url(&app.issuer(&r), c.id.as_str(), ok, &pkce, &[]);
        assert!(is_login_page(&app.browser().go(&url).await), "{ok} must match");
    }
    for bad in [
        "http://localhost:4321/cb",
        "http://localhost/cb",
        "http://127.0.0.1:4321/cb/",
        "http://127.0.0.1:4321/CB",
        "http://127.0.0.1:4321/cb?x=1",
        "http://127.0.0.1:4321/cb2",
        "https://127.0.0.1:4321/cb",
        "http://127.0.0.2:4321/cb",
        "https://app.example.com:4321/cb",
    ] {
        let url = authorize_url(&app.issuer(&r), c.id.as_str(), bad, &pkce, &[]);
        expect_error_page(&app, &url, 400).await;
    }

    // The full flow returns to the port the client asked for, and the token endpoint wants that
    // exact string.
    let redirect = "http://127.0.0.1:4321/cb";
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), redirect, EMAIL, &[]).await;
    let form = |uri: &'static str| {
        vec![
            ("grant_type", "authorization_code"),
            ("code", code.as_str()),
            ("redirect_uri", uri),
            ("code_verifier", pkce.verifier.as_str()),
            ("client_id", c.id.as_str()),
        ]
    };
    let (status, body) = app.token(&r, &form("http://127.0.0.1/cb"), None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    let (status, body) = app.token(&r, &form(redirect), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn loopback_flow_redirects_to_the_requested_port() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user(EMAIL).await;
    let (c, _) = app.client(&r, &["http://127.0.0.1/callback"], true, &[GrantType::AuthorizationCode]).await;
    let pkce = Pkce::new();
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), "http://127.0.0.1:33418/callback", &pkce, &[]);
    let loc = app.browser().authorize(&url, EMAIL, "approve").await;
    assert!(loc.starts_with("http://127.0.0.1:33418/callback?code="), "{loc}");
    let q = query_of(&loc);
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], app.issuer(&r));
}

#[tokio::test]
async fn prompt_none_reports_login_and_consent_required() {
    let (app, r, c) = setup().await;
    let (other, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode]).await;
    let browser = app.browser();
    let pkce = Pkce::new();

    // Not signed in.
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &pkce, &[("prompt", "none")]);
    let Step::Client(loc) = browser.go(&url).await else { panic!("prompt=none must not show a page") };
    expect_error_redirect(&loc, CB, "login_required", Some("st-123"), &app.issuer(&r));

    // Signed in (through client `c`), but `other` was never approved.
    authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let url = authorize_url(&app.issuer(&r), other.id.as_str(), CB, &pkce, &[("prompt", "none")]);
    let Step::Client(loc) = browser.go(&url).await else { panic!("prompt=none must not show a page") };
    expect_error_redirect(&loc, CB, "consent_required", Some("st-123"), &app.issuer(&r));

    // Signed in and approved (pre-registered, https): a code without any page.
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &pkce, &[("prompt", "none")]);
    let Step::Client(loc) = browser.go(&url).await else { panic!("expected a silent redirect") };
    let q = query_of(&loc);
    assert!(q.contains_key("code"), "{loc}");
    assert_eq!(q["iss"], app.issuer(&r));

    // prompt=none cannot be combined.
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &pkce, &[("prompt", "none login")]);
    expect_redirect_error(&app, &r, &url, CB, "invalid_request", Some("st-123")).await;
}

#[tokio::test]
async fn prompt_login_forces_the_login_page_even_when_signed_in() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let pkce = Pkce::new();

    // Signed in and approved: without prompt the code comes back silently...
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &pkce, &[]);
    assert!(matches!(browser.go(&url).await, Step::Client(_)));
    // ...but prompt=login shows the login page, right away (the same second as the last login).
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &pkce, &[("prompt", "login")]);
    let step = browser.go(&url).await;
    assert!(is_login_page(&step), "expected the login page, got {step:?}");
    let Step::Page(_, html) = step else { unreachable!() };
    // After signing in again the remembered consent applies.
    let Step::Client(loc) = browser.login(&html, EMAIL, PASSWORD).await else { panic!("expected a redirect") };
    let code = query_of(&loc).remove("code").unwrap();
    let (status, body) = app
        .token(
            &r,
            &[
                ("grant_type", "authorization_code"),
                ("code", &code),
                ("redirect_uri", CB),
                ("code_verifier", &pkce.verifier),
                ("client_id", c.id.as_str()),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn prompt_consent_forces_the_consent_page() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let pkce = Pkce::new();
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &pkce, &[("prompt", "consent")]);
    assert!(is_consent_page(&browser.go(&url).await));
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &pkce, &[("prompt", "login consent")]);
    let step = browser.go(&url).await;
    assert!(is_login_page(&step));
    let Step::Page(_, html) = step else { unreachable!() };
    assert!(is_consent_page(&browser.login(&html, EMAIL, PASSWORD).await));
}

#[tokio::test]
async fn remembered_consent_is_silent_only_for_preregistered_https_clients() {
    let (app, r, c) = setup().await;
    let (loopback, _) = app.client(&r, &["http://127.0.0.1/cb"], true, &[GrantType::AuthorizationCode]).await;
    let (status, reg) = app.register(&r, json!({"redirect_uris": [CB], "client_name": "Dynamic"})).await;
    assert_eq!(status, 201, "{reg}");
    let dynamic = reg["client_id"].as_str().unwrap().to_owned();
    let browser = app.browser();
    let pkce = Pkce::new();
    for (client_id, redirect) in
        [(c.id.as_str(), CB), (loopback.id.as_str(), "http://127.0.0.1:5000/cb"), (dynamic.as_str(), CB)]
    {
        // First time: approve (logging in on the first one).
        authorize_code(&app, &browser, &r, client_id, redirect, EMAIL, &[]).await;
        // Second and third time, same scopes.
        for _ in 0..2 {
            let step = browser.go(&authorize_url(&app.issuer(&r), client_id, redirect, &pkce, &[])).await;
            if client_id == c.id.as_str() {
                assert!(matches!(step, Step::Client(ref loc) if query_of(loc).contains_key("code")), "{step:?}");
            } else {
                assert!(is_consent_page(&step), "{client_id} via {redirect} must see the consent page: {step:?}");
            }
        }
    }
}

#[tokio::test]
async fn denying_consent_is_access_denied_and_remembers_nothing() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let pkce = Pkce::new();
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &pkce, &[]);
    let loc = browser.authorize(&url, EMAIL, "deny").await;
    expect_error_redirect(&loc, CB, "access_denied", Some("st-123"), &app.issuer(&r));
    // Nothing was remembered: the consent page again.
    assert!(is_consent_page(&browser.go(&url).await));
}

#[tokio::test]
async fn response_type_other_than_code_is_refused() {
    let (app, r, c) = setup().await;
    let pkce = Pkce::new();
    let ok = valid_pairs(c.id.as_str(), CB, &pkce);
    for rt in ["token", "code id_token", "id_token", "CODE"] {
        let url = url_of(&app, &r, &set(ok.clone(), "response_type", Some(rt)));
        expect_redirect_error(&app, &r, &url, CB, "unsupported_response_type", Some("st-123")).await;
    }
    let url = url_of(&app, &r, &set(ok.clone(), "response_type", None));
    expect_redirect_error(&app, &r, &url, CB, "invalid_request", Some("st-123")).await;
    // Other unsupported request features.
    for (k, v) in [("response_mode", "fragment"), ("request", "eyJ.x.y"), ("request_uri", "urn:x")] {
        let url = url_of(&app, &r, &set(ok.clone(), k, Some(v)));
        expect_redirect_error(&app, &r, &url, CB, "invalid_request", Some("st-123")).await;
    }
    // An overlong state is refused and not echoed.
    let url = url_of(&app, &r, &set(ok.clone(), "state", Some(&"s".repeat(3000))));
    expect_redirect_error(&app, &r, &url, CB, "invalid_request", None).await;
}

#[tokio::test]
async fn clients_without_the_code_grant_are_unauthorized() {
    let (app, r, _) = setup().await;
    let (machine, _) = app.client(&r, &[CB], false, &[GrantType::ClientCredentials]).await;
    let pkce = Pkce::new();
    let url = authorize_url(&app.issuer(&r), machine.id.as_str(), CB, &pkce, &[]);
    expect_redirect_error(&app, &r, &url, CB, "unauthorized_client", Some("st-123")).await;
}

#[tokio::test]
async fn post_to_the_authorization_endpoint_works_like_get() {
    let (app, r, c) = setup().await;
    let pkce = Pkce::new();
    let pairs = valid_pairs(c.id.as_str(), CB, &pkce);
    let browser = app.browser();
    let resp = browser.client.post(format!("{}/oauth/authorize", app.issuer(&r))).form(&pairs).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with(&format!("{}/login?req=", app.base)), "{loc}");
    assert!(is_login_page(&browser.go(&loc).await));
    // Errors after client validation redirect from POST too.
    let resp = app
        .http()
        .post(format!("{}/oauth/authorize", app.issuer(&r)))
        .form(&set(pairs, "code_challenge", None))
        .send()
        .await
        .unwrap();
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    expect_error_redirect(&loc, CB, "invalid_request", Some("st-123"), &app.issuer(&r));
}

#[tokio::test]
async fn redirect_uri_keeps_its_own_query_and_state_is_optional() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user(EMAIL).await;
    let redirect = "https://app.example.com/cb?tenant=a";
    let (c, _) = app.client(&r, &[redirect], true, &[GrantType::AuthorizationCode]).await;
    let pkce = Pkce::new();
    let pairs = set(valid_pairs(c.id.as_str(), redirect, &pkce), "state", None);
    let loc = app.browser().authorize(&url_of(&app, &r, &pairs), EMAIL, "approve").await;
    assert!(loc.starts_with("https://app.example.com/cb?tenant=a&code="), "{loc}");
    let q = query_of(&loc);
    assert!(!q.contains_key("state"));
    assert_eq!(q["iss"], app.issuer(&r));
}

#[tokio::test]
async fn prompt_login_cannot_be_skipped_by_opening_the_consent_page() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    // Signed in a while ago (the session's auth_time lies before the next request).
    authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[("prompt", "consent")]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &Pkce::new(), &[("prompt", "login consent")]);
    let step = browser.go(&url).await;
    assert!(is_login_page(&step), "{step:?}");
    let Step::Page(_, html) = step else { unreachable!() };
    let req = hidden_fields(&html).into_iter().find(|(k, _)| k == "req").unwrap().1;
    // Going straight to the consent page with the old session leads back to the login page.
    let consent = browser.go(&format!("{}/consent?req={req}", app.base)).await;
    assert!(is_login_page(&consent), "{consent:?}");
}

#[tokio::test]
async fn state_is_echoed_byte_for_byte() {
    let (app, r, c) = setup().await;
    let state = "a b&c=d/é?%20#x+y";
    // Invalid UTF-8 cannot be echoed exactly: refused (shown, as nothing can be sent back intact).
    let bad = format!("{}&state=%ff", url_of(&app, &r, &valid_pairs(c.id.as_str(), CB, &Pkce::new())));
    assert_eq!(app.http().get(&bad).send().await.unwrap().status(), 400);
    let pkce = Pkce::new();
    let pairs = set(valid_pairs(c.id.as_str(), CB, &pkce), "state", Some(state));
    let loc = app.browser().authorize(&url_of(&app, &r, &pairs), EMAIL, "approve").await;
    assert_eq!(query_of(&loc)["state"], state);
    // Also on errors.
    let pairs = set(set(valid_pairs(c.id.as_str(), CB, &pkce), "state", Some(state)), "scope", Some("nope"));
    expect_redirect_error(&app, &r, &url_of(&app, &r, &pairs), CB, "invalid_scope", Some(state)).await;
}

/// RFC 9700 §4.11.2: a client anyone can register (here through DCR) never gets an automatic
/// error redirect before the user has decided anything; the page explains the error and links
/// back, so Moat's URL cannot bounce people to an attacker's site.
#[tokio::test]
async fn errors_for_a_dynamically_registered_client_are_shown_with_a_link_not_redirected() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user(EMAIL).await;
    let phish = "https://phish.example.net/login";
    let (status, reg) = app
        .register(
            &r,
            json!({"redirect_uris": [phish], "token_endpoint_auth_method": "none", "client_name": "Totally Legit"}),
        )
        .await;
    assert_eq!(status, 201, "{reg}");
    let id = reg["client_id"].as_str().unwrap();
    let pkce = Pkce::new();
    let ok = valid_pairs(id, phish, &pkce);
    for (name, pairs, error) in [
        ("unknown scope", set(ok.clone(), "scope", Some("todo:admin")), "invalid_scope"),
        ("missing PKCE", set(ok.clone(), "code_challenge", None), "invalid_request"),
        ("prompt=none without a session", set(ok.clone(), "prompt", Some("none")), "login_required"),
    ] {
        let resp = app.http().get(url_of(&app, &r, &pairs)).send().await.unwrap();
        assert_eq!(resp.status(), 400, "{name}");
        assert!(resp.headers().get("location").is_none(), "{name}");
        let html = resp.text().await.unwrap();
        assert!(html.contains("Totally Legit (phish.example.net)"), "{name}: {html}");
        // The link carries the complete error response, for the user to follow if they wish.
        let doc = scraper::Html::parse_document(&html);
        let sel = scraper::Selector::parse("a.button").unwrap();
        let href = doc.select(&sel).next().and_then(|a| a.value().attr("href")).unwrap().to_owned();
        expect_error_redirect(&href, phish, error, Some("st-123"), &app.issuer(&r));
    }
}
