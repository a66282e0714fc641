//! Login throttling under concurrency: attempts reserve their budget before the password is
//! verified, so a parallel burst cannot run more guesses than the budget allows, and a
//! successful login does not spend the per-address budget.

use moat_core::model::{GrantType, Resource};

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

/// Starts an authorization in `browser` and returns the login page's HTML.
async fn login_page(app: &TestApp, browser: &Browser, r: &Resource, client_id: &str) -> String {
    match browser.go(&authorize_url(&app.issuer(r), client_id, CB, &Pkce::new(), &[])).await {
        Step::Page(200, html) if html.contains("action=\"/login\"") => html,
        other => panic!("expected the login page, got {other:?}"),
    }
}

/// POSTs the login form of `html` with `email` and `password`; returns the status.
async fn post_login(browser: &Browser, html: &str, email: &str, password: &str) -> u16 {
    let mut form = hidden_fields(html);
    form.push(("email".into(), email.into()));
    form.push(("password".into(), password.into()));
    let resp = browser
        .client
        .post(format!("{}/login", browser.base))
        .header("sec-fetch-site", "same-origin")
        .form(&form)
        .send()
        .await
        .unwrap();
    resp.status().as_u16()
}

/// Sends all the attempts at once and returns their statuses.
async fn burst(browser: &Browser, html: &str, attempts: &[(String, &str)]) -> Vec<u16> {
    futures::future::join_all(attempts.iter().map(|(email, password)| post_login(browser, html, email, password))).await
}

fn count(statuses: &[u16], status: u16) -> usize {
    statuses.iter().filter(|s| **s == status).count()
}

#[tokio::test]
async fn concurrent_wrong_passwords_spend_at_most_the_account_budget() {
    let (app, r, c) = setup_with(&[]).await;
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    let attempts: Vec<(String, &str)> = (0..20).map(|_| (EMAIL.to_owned(), "wrong password")).collect();
    let statuses = burst(&browser, &html, &attempts).await;
    // The default per-account budget is 5: exactly that many were verified (401), the rest
    // were refused before verification (429).
    assert_eq!(count(&statuses, 401), 5, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 15, "{statuses:?}");
    // The right password is refused while the account is throttled.
    assert_eq!(post_login(&browser, &html, EMAIL, PASSWORD).await, 429);
}

#[tokio::test]
async fn concurrent_attempts_spend_at_most_the_address_budget() {
    let (app, r, c) = setup_with(&[("MOAT_LOGIN_MAX_FAILURES_PER_IP", "4")]).await;
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    // Distinct accounts, so only the per-address budget applies.
    let attempts: Vec<(String, &str)> = (0..20).map(|i| (format!("user{i}@example.com"), "nope")).collect();
    let statuses = burst(&browser, &html, &attempts).await;
    assert_eq!(count(&statuses, 401), 4, "{statuses:?}");
    assert_eq!(count(&statuses, 429), 16, "{statuses:?}");
    // A throttled address cannot sign in to any account, even with the right password.
    assert_eq!(post_login(&browser, &html, EMAIL, PASSWORD).await, 429);
}

#[tokio::test]
async fn refusals_for_the_account_do_not_spend_the_address_budget() {
    let (app, r, c) =
        setup_with(&[("MOAT_LOGIN_MAX_FAILURES_PER_ACCOUNT", "1"), ("MOAT_LOGIN_MAX_FAILURES_PER_IP", "3")]).await;
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    assert_eq!(post_login(&browser, &html, "bob@example.com", "nope").await, 401);
    for _ in 0..5 {
        assert_eq!(post_login(&browser, &html, "bob@example.com", "nope").await, 429);
    }
    // Only one failure counted against the address, so two more are verified.
    assert_eq!(post_login(&browser, &html, "carol@example.com", "nope").await, 401);
    assert_eq!(post_login(&browser, &html, "dave@example.com", "nope").await, 401);
    assert_eq!(post_login(&browser, &html, "erin@example.com", "nope").await, 429);
}

#[tokio::test]
async fn successful_logins_do_not_spend_the_address_budget() {
    let (app, r, c) = setup_with(&[("MOAT_LOGIN_MAX_FAILURES_PER_IP", "2")]).await;
    // More successful sign-ins from one address than its failure budget, each in a fresh
    // browser (as many people behind one NAT would).
    for i in 0..4 {
        let browser = app.browser();
        let html = login_page(&app, &browser, &r, &c).await;
        assert!(is_consent_page(&browser.login(&html, EMAIL, PASSWORD).await), "sign-in {i}");
    }
    let browser = app.browser();
    let html = login_page(&app, &browser, &r, &c).await;
    assert_eq!(post_login(&browser, &html, "bob@example.com", "nope").await, 401);
    assert_eq!(post_login(&browser, &html, "carol@example.com", "nope").await, 401);
    assert_eq!(post_login(&browser, &html, "dave@example.com", "nope").await, 429);
}
