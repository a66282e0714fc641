//! The login, consent and logout pages: form structure, security headers, cookies, failed
//! logins and throttling, CSRF and browser binding, expired requests, double submission,
//! logout, disabled users, and escaping of untrusted text.

use std::time::Duration;

use moat_core::model::{GrantType, Resource};
use serde_json::json;

use crate::helpers::*;

const CB: &str = "https://app.example.com/cb";
const EMAIL: &str = "alice@example.com";

async fn setup_with(env: &[(&str, &str)]) -> (TestApp, Resource, String) {
    let app = TestApp::spawn_with(env).await;
    let r = app.resource().await;
    app.user(EMAIL).await;
    let (c, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode]).await;
    (app, r, c.id.to_string())
}

async fn setup() -> (TestApp, Resource, String) {
    setup_with(&[]).await
}

fn auth_url(app: &TestApp, r: &Resource, client_id: &str) -> String {
    authorize_url(&app.issuer(r), client_id, CB, &Pkce::new(), &[])
}

/// Starts an authorization in `browser` and returns the login page's HTML.
async fn login_page(app: &TestApp, browser: &Browser, r: &Resource, client_id: &str) -> String {
    match browser.go(&auth_url(app, r, client_id)).await {
        Step::Page(200, html) if html.contains("action=\"/login\"") => html,
        other => panic!("expected the login page, got {other:?}"),
    }
}

/// Signs in and returns the consent page's HTML.
async fn consent_page(app: &TestApp, browser: &Browser, r: &Resource, client_id: &str) -> String {
    let html = login_page(app, browser, r, client_id).await;
    match browser.login(&html, EMAIL, PASSWORD).await {
        Step::Page(200, html) if html.contains("action=\"/consent\"") => html,
        other => panic!("expected the consent page, got {other:?}"),
    }
}

/// POSTs a form as `browser` with an optional `Sec-Fetch-Site`, without following redirects.
async fn post(browser: &Browser, path: &str, form: &[(String, String)], site: Option<&str>) -> reqwest::Response {
    let mut req = browser.client.post(format!("{}{path}", browser.base)).form(form);
    if let Some(s) = site {
        req = req.header("sec-fetch-site", s);
    }
    req.send().await.unwrap()
}

fn with(mut form: Vec<(String, String)>, extra: &[(&str, &str)]) -> Vec<(String, String)> {
    for (k, v) in extra {
        form.retain(|(fk, _)| fk != k);
        form.push(((*k).into(), (*v).into()));
    }
    form
}

fn without(mut form: Vec<(String, String)>, key: &str) -> Vec<(String, String)> {
    form.retain(|(k, _)| k != key);
    form
}

fn credentials() -> [(&'static str, &'static str); 2] {
    [("email", EMAIL), ("password", PASSWORD)]
}

fn set_cookies(resp: &reqwest::Response) -> Vec<String> {
    resp.headers().get_all("set-cookie").iter().map(|v| v.to_str().unwrap().to_owned()).collect()
}

fn assert_page_headers(h: &reqwest::header::HeaderMap) {
    let csp = h["content-security-policy"].to_str().unwrap();
    assert!(csp.contains("frame-ancestors 'none'"), "{csp}");
    assert!(csp.contains("default-src 'none'"), "{csp}");
    assert_eq!(h["referrer-policy"], "no-referrer");
    assert_eq!(h["x-frame-options"], "DENY");
    assert_eq!(h["x-content-type-options"], "nosniff");
    assert_eq!(h["cache-control"], "no-store");
    assert!(h["content-type"].to_str().unwrap().starts_with("text/html"));
    assert!(h.get("access-control-allow-origin").is_none());
}

async fn forbidden(resp: reqwest::Response, what: &str) {
    assert_eq!(resp.status(), 403, "{what}");
    assert_page_headers(resp.headers());
    assert!(set_cookies(&resp).iter().all(|c| !c.starts_with("moat_session=")), "{what}: no session");
}

#[tokio::test]
async fn login_form_structure() {
    let (app, r, c) = setup().await;
    let html = login_page(&app, &app.browser(), &r, &c).await;
    let doc = scraper::Html::parse_document(&html);
    let one = |sel: &str| {
        let s = scraper::Selector::parse(sel).unwrap();
        assert_eq!(doc.select(&s).count(), 1, "{sel} in {html}");
    };
    one("form[method=post][action=\"/login\"]");
    one("input[name=email][type=email]");
    one("input[name=password][type=password]");
    one("input[type=hidden][name=req]");
    one("input[type=hidden][name=csrf]");
    one("label[for=email]");
    one("label[for=password]");
    one("button[type=submit]");
    assert!(!html.contains("<script"), "pages work without JavaScript");
    assert!(text_of(&html).contains("Todo MCP"), "the resource is named");
    assert!(text_of(&html).contains("Test Client"), "the client is named");
}

#[tokio::test]
async fn pages_carry_security_headers() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    let req = hidden_fields(&html).into_iter().find(|(k, _)| k == "req").unwrap().1;
    let login = browser.client.get(format!("{}/login?req={req}", app.base)).send().await.unwrap();
    assert_eq!(login.status(), 200);
    assert_page_headers(login.headers());
    // The consent page, after signing in.
    let resp = post(&browser, "/login", &with(hidden_fields(&html), &credentials()), Some("same-origin")).await;
    assert_eq!(resp.status(), 303);
    let consent = browser.client.get(format!("{}/consent?req={req}", app.base)).send().await.unwrap();
    assert_eq!(consent.status(), 200);
    assert_page_headers(consent.headers());
    // Error pages and logout.
    for url in [format!("{}/login?req=unknown", app.base), format!("{}/logout", app.base)] {
        let resp = browser.client.get(&url).send().await.unwrap();
        assert_page_headers(resp.headers());
    }
    let resp = app.http().get(format!("{}/oauth/authorize?client_id=nope", app.issuer(&r))).send().await.unwrap();
    assert_eq!(resp.status(), 400);
    assert_page_headers(resp.headers());
}

#[tokio::test]
async fn cookies_are_httponly_lax_and_not_secure_over_http() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let resp = browser.client.get(auth_url(&app, &r, &c)).send().await.unwrap();
    let cookies = set_cookies(&resp);
    let b = cookies.iter().find(|c| c.starts_with("moat_browser=")).expect("a browser-binding cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(b.contains(attr), "{b}");
    }
    assert!(!b.contains("Secure"), "{b}");
    // A second authorization in the same browser keeps the binding cookie.
    let resp = browser.client.get(auth_url(&app, &r, &c)).send().await.unwrap();
    assert!(set_cookies(&resp).iter().all(|c| !c.starts_with("moat_browser=")));
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    let Step::Page(200, html) = browser.go(&loc).await else { panic!("login page") };
    let resp = post(&browser, "/login", &with(hidden_fields(&html), &credentials()), Some("same-origin")).await;
    assert_eq!(resp.status(), 303);
    let cookies = set_cookies(&resp);
    let s = cookies.iter().find(|c| c.starts_with("moat_session=")).expect("a session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/"] {
        assert!(s.contains(attr), "{s}");
    }
    assert!(!s.contains("Secure"), "{s}");
}

#[tokio::test]
async fn cookies_are_secure_and_host_prefixed_over_https() {
    let (app, r, c) = setup_with(&[("MOAT_PUBLIC_URL", "https://auth.example.test")]).await;
    let local = format!("http://{}", app.addr);
    let path = auth_url(&app, &r, &c).replacen(&app.base, &local, 1);
    let resp = app.http().get(&path).send().await.unwrap();
    assert_eq!(resp.status(), 303);
    let loc = resp.headers()["location"].to_str().unwrap().to_owned();
    assert!(loc.starts_with("https://auth.example.test/login?req="), "{loc}");
    let cookies = set_cookies(&resp);
    let b = cookies.iter().find(|c| c.starts_with("__Host-moat_browser=")).expect("a __Host- cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure"] {
        assert!(b.contains(attr), "{b}");
    }
    assert!(!b.contains("Domain="), "{b}");
    let binding = b.split(';').next().unwrap().to_owned();
    // The login page and form, with the cookie presented by hand (plain http to the listener).
    let page = app.http().get(loc.replacen(&app.base, &local, 1)).header("cookie", &binding).send().await.unwrap();
    assert_eq!(page.status(), 200);
    let html = page.text().await.unwrap();
    let resp = app
        .http()
        .post(format!("{local}/login"))
        .header("cookie", &binding)
        .form(&with(hidden_fields(&html), &credentials()))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 303);
    let cookies = set_cookies(&resp);
    let s = cookies.iter().find(|c| c.starts_with("__Host-moat_session=")).expect("a __Host- session cookie");
    for attr in ["HttpOnly", "SameSite=Lax", "Path=/", "Secure"] {
        assert!(s.contains(attr), "{s}");
    }
}

#[tokio::test]
async fn wrong_password_and_unknown_email_look_the_same() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    let mut pages = Vec::new();
    for (email, password) in [(EMAIL, "wrong password"), ("nobody@example.com", PASSWORD), ("", ""), (EMAIL, "")] {
        let resp = post(
            &browser,
            "/login",
            &with(hidden_fields(&html), &[("email", email), ("password", password)]),
            Some("same-origin"),
        )
        .await;
        assert_eq!(resp.status(), 401, "{email}");
        assert!(set_cookies(&resp).iter().all(|c| !c.starts_with("moat_session=")), "no session for {email}");
        assert_page_headers(resp.headers());
        let page = resp.text().await.unwrap();
        let text = text_of(&page);
        assert!(text.contains("Incorrect email or password."), "{text}");
        assert!(page.contains("action=\"/login\""), "the form again");
        pages.push(text.replace(email, "EMAIL"));
    }
    assert_eq!(pages[0], pages[1], "a wrong password and an unknown email are indistinguishable");
    // Still not signed in.
    assert!(is_login_page(&browser.go(&auth_url(&app, &r, &c)).await));
    // The same form still works with the right password.
    assert!(is_consent_page(&browser.login(&html, EMAIL, PASSWORD).await));
}

#[tokio::test]
async fn login_is_throttled_per_account() {
    let (app, r, c) = setup().await;
    app.user("bob@example.com").await;
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    for i in 0..5 {
        // Case variations are the same account.
        let email = if i % 2 == 0 { EMAIL } else { "ALICE@Example.com" };
        let resp = post(
            &browser,
            "/login",
            &with(hidden_fields(&html), &[("email", email), ("password", "nope")]),
            Some("same-origin"),
        )
        .await;
        assert_eq!(resp.status(), 401, "attempt {i}");
    }
    let resp = post(&browser, "/login", &with(hidden_fields(&html), &credentials()), Some("same-origin")).await;
    assert_eq!(resp.status(), 429, "throttled even with the right password");
    assert!(set_cookies(&resp).iter().all(|c| !c.starts_with("moat_session=")));
    let text = text_of(&resp.text().await.unwrap());
    assert!(text.contains("Too many failed sign-in attempts"), "{text}");
    // Another account is not affected.
    let other = app.browser();
    let html = login_page(&app, &other, &r, &c).await;
    assert!(is_consent_page(&other.login(&html, "bob@example.com", PASSWORD).await));
}

#[tokio::test]
async fn login_form_csrf_defences() {
    let (app, r, c) = setup().await;
    let a = app.browser();
    let b = app.browser();
    let html_a = login_page(&app, &a, &r, &c).await;
    let html_b = login_page(&app, &b, &r, &c).await;
    let form_a = with(hidden_fields(&html_a), &credentials());
    let csrf_b = hidden_fields(&html_b).into_iter().find(|(k, _)| k == "csrf").unwrap().1;

    forbidden(post(&a, "/login", &without(form_a.clone(), "csrf"), Some("same-origin")).await, "no csrf").await;
    forbidden(post(&a, "/login", &with(form_a.clone(), &[("csrf", "forged")]), Some("same-origin")).await, "forged")
        .await;
    forbidden(post(&a, "/login", &with(form_a.clone(), &[("csrf", &csrf_b)]), Some("same-origin")).await, "csrf of b")
        .await;
    forbidden(post(&a, "/login", &form_a, Some("cross-site")).await, "cross-site").await;
    forbidden(post(&a, "/login", &form_a, Some("same-site")).await, "same-site").await;
    // B's whole form submitted from A's browser: the request is bound to B's browser.
    let form_b = with(hidden_fields(&html_b), &credentials());
    let resp = post(&a, "/login", &form_b, Some("same-origin")).await;
    forbidden(resp, "b's request from a").await;
    // A browser without Fetch Metadata falls back on the token; the genuine form works.
    let resp = post(&a, "/login", &form_a, None).await;
    assert_eq!(resp.status(), 303);
}

#[tokio::test]
async fn consent_form_csrf_defences() {
    let (app, r, c) = setup().await;
    let a = app.browser();
    let b = app.browser();
    let html_a = consent_page(&app, &a, &r, &c).await;
    let html_b = consent_page(&app, &b, &r, &c).await;
    let form_a = with(hidden_fields(&html_a), &[("decision", "approve")]);
    let csrf_b = hidden_fields(&html_b).into_iter().find(|(k, _)| k == "csrf").unwrap().1;

    forbidden(post(&a, "/consent", &without(form_a.clone(), "csrf"), Some("same-origin")).await, "no csrf").await;
    forbidden(
        post(&a, "/consent", &with(form_a.clone(), &[("csrf", &csrf_b)]), Some("same-origin")).await,
        "csrf of b",
    )
    .await;
    forbidden(post(&a, "/consent", &form_a, Some("cross-site")).await, "cross-site").await;
    forbidden(
        post(&a, "/consent", &with(form_a.clone(), &[("decision", "maybe")]), Some("same-origin")).await,
        "decision",
    )
    .await;
    // A fresh browser (no cookies at all) posting A's form.
    forbidden(post(&app.browser(), "/consent", &form_a, Some("same-origin")).await, "no cookies").await;
    // None of this approved anything; the genuine form still does.
    let resp = post(&a, "/consent", &form_a, Some("same-origin")).await;
    assert_eq!(resp.status(), 303);
    assert!(query_of(resp.headers()["location"].to_str().unwrap()).contains_key("code"));
}

#[tokio::test]
async fn a_sign_in_link_only_works_in_the_browser_that_started_it() {
    let (app, r, c) = setup().await;
    let a = app.browser();
    let html = login_page(&app, &a, &r, &c).await;
    let req = hidden_fields(&html).into_iter().find(|(k, _)| k == "req").unwrap().1;
    let other = app.browser();
    for path in ["login", "consent"] {
        let resp = other.client.get(format!("{}/{path}?req={req}", app.base)).send().await.unwrap();
        assert_eq!(resp.status(), 403, "{path}");
        let text = text_of(&resp.text().await.unwrap());
        assert!(text.contains("different browser"), "{text}");
    }
    // A cookie that merely looks like a binding cookie does not help either.
    let resp = app
        .http()
        .get(format!("{}/login?req={req}", app.base))
        .header("cookie", format!("moat_browser={}", "A".repeat(43)))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 403);
}

#[tokio::test]
async fn unknown_and_expired_requests_show_an_error_page() {
    let (app, r, c) = setup_with(&[("MOAT_AUTHORIZATION_REQUEST_TTL_SECONDS", "1")]).await;
    let browser = app.browser();
    for url in [
        format!("{}/login?req=unknown", app.base),
        format!("{}/login", app.base),
        format!("{}/consent?req=unknown", app.base),
        format!("{}/login?req={}", app.base, "x".repeat(500)),
    ] {
        let Step::Page(400, html) = browser.go(&url).await else { panic!("expected a 400 page for {url}") };
        assert!(text_of(&html).contains("no longer valid"), "{}", text_of(&html));
    }
    let html = login_page(&app, &browser, &r, &c).await;
    tokio::time::sleep(Duration::from_millis(1100)).await;
    let req = hidden_fields(&html).into_iter().find(|(k, _)| k == "req").unwrap().1;
    let Step::Page(400, _) = browser.go(&format!("{}/login?req={req}", app.base)).await else { panic!("expired") };
    let resp = post(&browser, "/login", &with(hidden_fields(&html), &credentials()), Some("same-origin")).await;
    assert_eq!(resp.status(), 400);
    assert!(set_cookies(&resp).iter().all(|c| !c.starts_with("moat_session=")));
}

#[tokio::test]
async fn a_double_submitted_consent_yields_one_code() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let html = consent_page(&app, &browser, &r, &c).await;
    let form = with(hidden_fields(&html), &[("decision", "approve")]);
    let attempts: Vec<_> = (0..5)
        .map(|_| {
            let (client, form, base) = (browser.client.clone(), form.clone(), app.base.clone());
            tokio::spawn(async move {
                let resp = client
                    .post(format!("{base}/consent"))
                    .header("sec-fetch-site", "same-origin")
                    .form(&form)
                    .send()
                    .await
                    .unwrap();
                (resp.status().as_u16(), resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned()))
            })
        })
        .collect();
    let mut codes = 0;
    for a in attempts {
        match a.await.unwrap() {
            (303, Some(loc)) => {
                assert!(query_of(&loc).contains_key("code"), "{loc}");
                codes += 1;
            }
            (400, None) => {}
            other => panic!("unexpected {other:?}"),
        }
    }
    assert_eq!(codes, 1);
    // And once more, later.
    let resp = post(&browser, "/consent", &form, Some("same-origin")).await;
    assert_eq!(resp.status(), 400);
}

#[tokio::test]
async fn logout_ends_the_session() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    let resp = post(&browser, "/login", &with(hidden_fields(&html), &credentials()), Some("same-origin")).await;
    let session = set_cookies(&resp).into_iter().find(|c| c.starts_with("moat_session=")).unwrap();
    let session = session.split(';').next().unwrap().to_owned();
    assert!(is_consent_page(&browser.go(&auth_url(&app, &r, &c)).await), "signed in");

    let Step::Page(200, page) = browser.go(&format!("{}/logout", app.base)).await else { panic!("logout page") };
    assert!(text_of(&page).contains(EMAIL));
    assert!(page.contains("action=\"/logout\""));
    let form = hidden_fields(&page);
    forbidden(post(&browser, "/logout", &without(form.clone(), "csrf"), Some("same-origin")).await, "no csrf").await;
    forbidden(post(&browser, "/logout", &form, Some("cross-site")).await, "cross-site").await;
    forbidden(
        post(&browser, "/logout", &with(form.clone(), &[("csrf", "forged")]), Some("same-origin")).await,
        "forged",
    )
    .await;
    assert!(is_consent_page(&browser.go(&auth_url(&app, &r, &c)).await), "still signed in");

    let resp = post(&browser, "/logout", &form, Some("same-origin")).await;
    assert_eq!(resp.status(), 200);
    assert!(set_cookies(&resp).iter().any(|c| c.starts_with("moat_session=;") && c.contains("Max-Age=0")));
    assert!(text_of(&resp.text().await.unwrap()).contains("signed out"));
    assert!(is_login_page(&browser.go(&auth_url(&app, &r, &c)).await), "signed out");
    // The old session cookie is dead on the server, not just cleared in this browser.
    let resp = app.http().get(format!("{}/logout", app.base)).header("cookie", &session).send().await.unwrap();
    let text = text_of(&resp.text().await.unwrap());
    assert!(text.contains("not signed in"), "{text}");
    // Logout without a session.
    let Step::Page(200, page) = app.browser().go(&format!("{}/logout", app.base)).await else { panic!() };
    assert!(!page.contains("<form"));
}

#[tokio::test]
async fn disabled_users_cannot_sign_in_and_lose_their_session() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    consent_page(&app, &browser, &r, &c).await;
    let user = app.store.get_user_by_email(EMAIL).await.unwrap().unwrap();
    app.store.set_user_disabled(&user.id, true, 0).await.unwrap();
    let step = browser.go(&auth_url(&app, &r, &c)).await;
    assert!(is_login_page(&step), "the session ended");
    let Step::Page(_, html) = step else { unreachable!() };
    let Step::Page(status, page) = browser.login(&html, EMAIL, PASSWORD).await else { panic!("no redirect") };
    assert_eq!(status, 401);
    assert!(text_of(&page).contains("Incorrect email or password."));
}

#[tokio::test]
async fn consent_page_describes_the_request_and_escapes_untrusted_text() {
    let (app, r, _) = setup().await;
    let loopback = "http://127.0.0.1:7777/cb";
    let (status, reg) = app
        .register(&r, json!({"client_name": "<script>alert('x')</script>Evil & Co", "redirect_uris": [loopback]}))
        .await;
    assert_eq!(status, 201, "{reg}");
    let id = reg["client_id"].as_str().unwrap();
    let browser = app.browser();
    let url = authorize_url(&app.issuer(&r), id, loopback, &Pkce::new(), &[("scope", "todo:read todo:write")]);
    let Step::Page(200, html) = browser.go(&url).await else { panic!("login") };
    assert!(!html.contains("<script>"), "client name escaped on the login page");
    let Step::Page(200, html) = browser.login(&html, EMAIL, PASSWORD).await else { panic!("consent") };
    assert!(!html.contains("<script>"), "client name escaped on the consent page");
    let text = text_of(&html);
    for needle in [
        "<script>alert('x')</script>Evil & Co",
        "Todo MCP",
        EMAIL,
        "127.0.0.1:7777",
        "todo:read",
        "Read your todos",
        "todo:write",
        "Change your todos",
        "registered itself automatically",
        "a program running on this computer",
    ] {
        assert!(text.contains(needle), "{needle} missing: {text}");
    }
    // An email with markup is escaped when echoed on a failed login.
    let b2 = app.browser();
    let Step::Page(200, html) = b2.go(&url).await else { panic!("login") };
    let Step::Page(401, html) = b2.login(&html, "\"><img src=x onerror=alert(1)>@x", "nope").await else { panic!() };
    assert!(!html.contains("<img"), "{html}");
}

#[tokio::test]
async fn sessions_end_when_idle_or_at_their_absolute_lifetime() {
    // Lifetimes are whole seconds: 2 s leave the sign-in itself a full second.
    let mut signed_in = Vec::new();
    for setting in ["MOAT_SESSION_IDLE_SECONDS", "MOAT_SESSION_ABSOLUTE_SECONDS"] {
        let (app, r, c) = setup_with(&[(setting, "2")]).await;
        let browser = app.browser();
        consent_page(&app, &browser, &r, &c).await;
        signed_in.push((setting, app, r, c, browser));
    }
    tokio::time::sleep(Duration::from_millis(2100)).await;
    for (setting, app, r, c, browser) in signed_in {
        assert!(is_login_page(&browser.go(&auth_url(&app, &r, &c)).await), "{setting}");
    }
}

#[tokio::test]
async fn login_is_throttled_per_source_address() {
    let (app, r, c) = setup_with(&[("MOAT_LOGIN_MAX_FAILURES_PER_IP", "3")]).await;
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    for email in ["a@example.com", "b@example.com", "c@example.com"] {
        let form = with(hidden_fields(&html), &[("email", email), ("password", "nope")]);
        assert_eq!(post(&browser, "/login", &form, Some("same-origin")).await.status(), 401, "{email}");
    }
    // A fourth account from the same address, even with the right password.
    let resp = post(&browser, "/login", &with(hidden_fields(&html), &credentials()), Some("same-origin")).await;
    assert_eq!(resp.status(), 429);
}
