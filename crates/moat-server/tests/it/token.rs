//! The token endpoint: code redemption rules (PKCE, single use, redirect URI, resource,
//! expiry, client binding), grant types, client authentication failures, the success response,
//! token lifetimes, and client-credentials scopes.

use moat_core::model::{Client, GrantType, Resource};
use serde_json::{Value, json};

use crate::helpers::*;

const CB: &str = "https://app.example.com/cb";
const EMAIL: &str = "alice@example.com";

async fn setup_with(env: &[(&str, &str)]) -> (TestApp, Resource, Client) {
    let app = TestApp::spawn_with(env).await;
    let r = app.resource().await;
    app.user(EMAIL).await;
    let (c, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode, GrantType::RefreshToken]).await;
    (app, r, c)
}

async fn setup() -> (TestApp, Resource, Client) {
    setup_with(&[]).await
}

/// The code-redemption form of a public client, with `extra` replacing or adding fields
/// (an empty value removes the field).
fn redeem_form<'a>(
    client_id: &'a str,
    code: &'a str,
    verifier: &'a str,
    extra: &[(&'a str, &'a str)],
) -> Vec<(&'a str, &'a str)> {
    let mut form = vec![
        ("grant_type", "authorization_code"),
        ("code", code),
        ("redirect_uri", CB),
        ("code_verifier", verifier),
        ("client_id", client_id),
    ];
    for (k, v) in extra {
        form.retain(|(fk, _)| fk != k);
        if !v.is_empty() {
            form.push((k, v));
        }
    }
    form
}

fn assert_error(status: u16, body: &Value, want_status: u16, code: &str) {
    assert_eq!(status, want_status, "{body}");
    assert_eq!(body["error"], code, "{body}");
    assert!(body["error_description"].is_string(), "{body}");
}

#[tokio::test]
async fn wrong_verifier_is_invalid_grant_and_does_not_burn_the_code() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let other = Pkce::new();
    let (status, body) = app.token(&r, &redeem_form(c.id.as_str(), &code, &other.verifier, &[]), None).await;
    assert_error(status, &body, 400, "invalid_grant");
    // Malformed verifiers (too short, bad characters) are invalid too.
    for bad in ["short", &format!("{}!", &pkce.verifier[..50]), &"a".repeat(129)] {
        let (status, body) = app.token(&r, &redeem_form(c.id.as_str(), &code, bad, &[]), None).await;
        assert_error(status, &body, 400, "invalid_grant");
    }
    // A missing verifier is a malformed request.
    let (status, body) = app.token(&r, &redeem_form(c.id.as_str(), &code, "", &[]), None).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = app.token(&r, &redeem_form(c.id.as_str(), &code, &pkce.verifier, &[]), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn a_reused_code_fails_and_revokes_what_the_first_redemption_issued() {
    let (app, r, with_refresh) = setup().await;
    // A client without the refresh grant gets no refresh token, and its access token must still
    // be revoked by the replay (RFC 9700 §4.4).
    let (access_only, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode]).await;
    let (rs, rs_secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let rs_secret = rs_secret.unwrap();
    for c in [with_refresh, access_only] {
        let browser = app.browser();
        let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
        let form = redeem_form(c.id.as_str(), &code, &pkce.verifier, &[]);
        let (status, first) = app.token(&r, &form, None).await;
        assert_eq!(status, 200, "{first}");
        let at = first["access_token"].as_str().unwrap();
        let introspect = async || {
            app.post_form(
                &format!("{}/oauth/introspect", app.issuer(&r)),
                &[("token", at)],
                Some((rs.id.as_str(), &rs_secret)),
            )
            .await
            .1
        };
        assert_eq!(introspect().await["active"], true);

        let (status, body) = app.token(&r, &form, None).await;
        assert_error(status, &body, 400, "invalid_grant");
        if let Some(rt) = first["refresh_token"].as_str() {
            let (status, body) = app.refresh(&r, c.id.as_str(), rt, &[]).await;
            assert_error(status, &body, 400, "invalid_grant");
        } else {
            assert!(!c.allows_grant(GrantType::RefreshToken), "{first}");
        }
        // The access token of the first redemption is no longer active either.
        assert_eq!(introspect().await, json!({"active": false}));
        // A third attempt is still refused.
        let (status, body) = app.token(&r, &form, None).await;
        assert_error(status, &body, 400, "invalid_grant");
    }
}

#[tokio::test]
async fn redirect_uri_must_match_the_authorization_request() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let id = c.id.as_str();
    for other in ["https://app.example.com/cb/", "https://app.example.com/CB", "https://evil.example/cb"] {
        let (status, body) =
            app.token(&r, &redeem_form(id, &code, &pkce.verifier, &[("redirect_uri", other)]), None).await;
        assert_error(status, &body, 400, "invalid_grant");
    }
    // Sent at authorize, so required at the token endpoint.
    let (status, body) = app.token(&r, &redeem_form(id, &code, &pkce.verifier, &[("redirect_uri", "")]), None).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = app.token(&r, &redeem_form(id, &code, &pkce.verifier, &[]), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn redirect_uri_may_be_omitted_when_the_authorization_request_omitted_it() {
    let (app, r, c) = setup().await;
    let pkce = Pkce::new();
    let url = authz_url(
        &app.issuer(&r),
        &[
            ("response_type", "code"),
            ("client_id", c.id.as_str()),
            ("code_challenge", &pkce.challenge),
            ("code_challenge_method", "S256"),
        ],
    );
    let loc = app.browser().authorize(&url, EMAIL, "approve").await;
    assert!(loc.starts_with(CB), "{loc}");
    let code = query_of(&loc).remove("code").unwrap();
    let (status, body) =
        app.token(&r, &redeem_form(c.id.as_str(), &code, &pkce.verifier, &[("redirect_uri", "")]), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn resource_at_the_token_endpoint_must_match_the_authorization_request() {
    let (app, r, c) = setup().await;
    let other = app.resource().await;
    let browser = app.browser();
    let id = c.id.as_str();
    let (code, pkce) = authorize_code(&app, &browser, &r, id, CB, EMAIL, &[("resource", &r.server_url)]).await;
    for bad in [other.server_url.as_str(), "https://unknown.example.com/mcp", "not a uri"] {
        let (status, body) = app.token(&r, &redeem_form(id, &code, &pkce.verifier, &[("resource", bad)]), None).await;
        assert_error(status, &body, 400, "invalid_target");
    }
    let same = format!("{}/", r.server_url);
    let (status, body) = app.token(&r, &redeem_form(id, &code, &pkce.verifier, &[("resource", &same)]), None).await;
    assert_eq!(status, 200, "{body}");
    let claims = verify_with_jwks(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["aud"], json!([r.server_url, r.id.to_string()]));
}

#[tokio::test]
async fn expired_codes_are_invalid_grant() {
    let (app, r, c) = setup_with(&[("MOAT_AUTH_CODE_TTL_SECONDS", "1")]).await;
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    tokio::time::sleep(std::time::Duration::from_millis(1100)).await;
    let (status, body) = app.token(&r, &redeem_form(c.id.as_str(), &code, &pkce.verifier, &[]), None).await;
    assert_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn a_code_is_bound_to_its_client() {
    let (app, r, a) = setup().await;
    let (b, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode]).await;
    let other_resource = app.resource().await;
    let (foreign, foreign_secret) = app.client(&other_resource, &[CB], false, &[GrantType::AuthorizationCode]).await;
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, a.id.as_str(), CB, EMAIL, &[]).await;
    let (status, body) = app.token(&r, &redeem_form(b.id.as_str(), &code, &pkce.verifier, &[]), None).await;
    assert_error(status, &body, 400, "invalid_grant");
    // A client of another resource cannot even authenticate here, nor redeem at its own issuer.
    let form = redeem_form(foreign.id.as_str(), &code, &pkce.verifier, &[("client_id", "")]);
    let creds = Some((foreign.id.as_str(), foreign_secret.as_deref().unwrap()));
    let (status, body) = app.token(&r, &form, creds).await;
    assert_error(status, &body, 401, "invalid_client");
    let (status, body) = app.token(&other_resource, &form, creds).await;
    assert_error(status, &body, 400, "invalid_grant");
    // The rightful client still can.
    let (status, body) = app.token(&r, &redeem_form(a.id.as_str(), &code, &pkce.verifier, &[]), None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unknown_and_unregistered_grant_types() {
    let (app, r, c) = setup().await;
    let (code_only, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode]).await;
    let (machine, secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let secret = secret.unwrap();
    for grant in ["password", "implicit", "urn:ietf:params:oauth:grant-type:device_code", "AUTHORIZATION_CODE"] {
        let (status, body) = app.token(&r, &[("grant_type", grant), ("client_id", c.id.as_str())], None).await;
        assert_error(status, &body, 400, "unsupported_grant_type");
    }
    let (status, body) = app.token(&r, &[("client_id", c.id.as_str())], None).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = app
        .token(
            &r,
            &[("grant_type", "refresh_token"), ("refresh_token", "x"), ("client_id", code_only.id.as_str())],
            None,
        )
        .await;
    assert_error(status, &body, 400, "unauthorized_client");
    let (status, body) = app
        .token(
            &r,
            &[("grant_type", "authorization_code"), ("code", "x"), ("code_verifier", &Pkce::new().verifier)],
            Some((machine.id.as_str(), &secret)),
        )
        .await;
    assert_error(status, &body, 400, "unauthorized_client");
    let (status, body) =
        app.token(&r, &[("grant_type", "client_credentials"), ("client_id", c.id.as_str())], None).await;
    assert_error(status, &body, 400, "unauthorized_client");
}

#[tokio::test]
async fn client_authentication_failures() {
    let (app, r, public) = setup().await;
    let (conf, secret) = app.client(&r, &[CB], false, &[GrantType::ClientCredentials]).await;
    let secret = secret.unwrap();
    let url = format!("{}/oauth/token", app.issuer(&r));
    let cc = [("grant_type", "client_credentials")];
    let id = conf.id.as_str();

    // Header attempts get 401 with a Basic challenge.
    for (who, pass) in [(id, "wrong"), ("cli_unknown000000000000", secret.as_str()), (id, "")] {
        let resp = app.post_form_resp(&url, &cc, Some((who, pass))).await;
        assert_eq!(resp.status(), 401, "{who}:{pass}");
        assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"), "{who}");
        assert_eq!(resp.headers()["cache-control"], "no-store");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client");
    }
    // Body attempts get 401 invalid_client without a challenge.
    let body_cases: Vec<Vec<(&str, &str)>> = vec![
        vec![("client_id", id), ("client_secret", "wrong")],
        vec![("client_id", "cli_unknown000000000000")],
        vec![("client_id", "not a client id")],
        vec![("client_id", id)],
        vec![("client_id", public.id.as_str()), ("client_secret", "anything")],
        vec![],
    ];
    for extra in body_cases {
        let mut form = cc.to_vec();
        form.extend(extra.iter().copied());
        let resp = app.post_form_resp(&url, &form, None).await;
        assert_eq!(resp.status(), 401, "{extra:?}");
        assert!(resp.headers().get("www-authenticate").is_none(), "{extra:?}");
        let body: Value = resp.json().await.unwrap();
        assert_eq!(body["error"], "invalid_client", "{extra:?}");
    }
    // Two methods at once.
    let mut form = cc.to_vec();
    form.push(("client_secret", &secret));
    let (status, body) = app.token(&r, &form, Some((id, &secret))).await;
    assert_error(status, &body, 400, "invalid_request");
    // A body client_id disagreeing with the header.
    let mut form = cc.to_vec();
    form.push(("client_id", public.id.as_str()));
    let (status, body) = app.token(&r, &form, Some((id, &secret))).await;
    assert_error(status, &body, 400, "invalid_request");
    // Client assertions are not supported for these clients.
    let mut form = cc.to_vec();
    form.extend([
        ("client_id", id),
        ("client_assertion_type", "urn:ietf:params:oauth:client-assertion-type:jwt-bearer"),
        ("client_assertion", "a.b.c"),
    ]);
    let (status, body) = app.token(&r, &form, None).await;
    assert_error(status, &body, 401, "invalid_client");

    // Both correct methods work on their own.
    let (status, body) = app.token(&r, &cc, Some((id, &secret))).await;
    assert_eq!(status, 200, "{body}");
    let mut form = cc.to_vec();
    form.extend([("client_id", id), ("client_secret", secret.as_str())]);
    let (status, body) = app.token(&r, &form, None).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn secrets_with_reserved_characters_are_form_decoded_in_basic() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let secret = "s3cret:with/reserved+chars%&=";
    let (c, _) = app
        .client_with(&r, &[], false, &[GrantType::ClientCredentials], |c| {
            c.secret_hash = Some(moat_server::crypto::sha256_hex(secret.as_bytes()));
        })
        .await;
    // RFC 6749 §2.3.1: id and secret are form-urlencoded before Base64.
    let encoded: String = form_urlencoded::byte_serialize(secret.as_bytes()).collect();
    let (status, body) = app.token(&r, &[("grant_type", "client_credentials")], Some((c.id.as_str(), &encoded))).await;
    assert_eq!(status, 200, "{body}");
}

/// Asserts the RFC 6749 §5.1 shape of a successful token response and returns its body.
async fn assert_success(resp: reqwest::Response) -> Value {
    assert_eq!(resp.status(), 200);
    let h = resp.headers().clone();
    assert_eq!(h["cache-control"], "no-store");
    assert_eq!(h["pragma"], "no-cache");
    assert!(h["content-type"].to_str().unwrap().starts_with("application/json"));
    let body: Value = resp.json().await.unwrap();
    assert_eq!(body["token_type"], "Bearer", "{body}");
    assert!(body["expires_in"].as_i64().unwrap() > 0, "{body}");
    assert!(body["scope"].is_string(), "{body}");
    assert!(body["access_token"].as_str().unwrap().split('.').count() == 3, "{body}");
    body
}

#[tokio::test]
async fn every_success_response_has_the_rfc_shape() {
    let (app, r, c) = setup().await;
    let (machine, secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let url = format!("{}/oauth/token", app.issuer(&r));
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[("scope", "todo:write")]).await;
    let body =
        assert_success(app.post_form_resp(&url, &redeem_form(c.id.as_str(), &code, &pkce.verifier, &[]), None).await)
            .await;
    assert_eq!(body["scope"], "todo:write");
    let rt = body["refresh_token"].as_str().unwrap();
    let form = [("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", c.id.as_str())];
    let body = assert_success(app.post_form_resp(&url, &form, None).await).await;
    assert_eq!(body["scope"], "todo:write");
    assert!(body["refresh_token"].is_string());
    let body = assert_success(
        app.post_form_resp(
            &url,
            &[("grant_type", "client_credentials")],
            Some((machine.id.as_str(), &secret.unwrap())),
        )
        .await,
    )
    .await;
    assert_eq!(body["scope"], "todo:read");
    assert!(body.get("refresh_token").is_none());
}

#[tokio::test]
async fn access_token_lifetime_per_resource_and_per_client() {
    let app = TestApp::spawn().await;
    let r = app.resource_with(|r| r.access_token_ttl = 600).await;
    app.user(EMAIL).await;
    let (plain, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode, GrantType::RefreshToken]).await;
    let (short, _) = app
        .client_with(&r, &[CB], true, &[GrantType::AuthorizationCode, GrantType::RefreshToken], |c| {
            c.access_token_ttl = Some(120)
        })
        .await;
    let (machine, secret) =
        app.client_with(&r, &[], false, &[GrantType::ClientCredentials], |c| c.access_token_ttl = Some(90)).await;
    for (client, ttl) in [(&plain, 600), (&short, 120)] {
        let tokens = code_flow(&app, &r, client.id.as_str(), CB, EMAIL, &[]).await;
        assert_eq!(tokens["expires_in"], ttl);
        let claims = verify_with_jwks(&app, tokens["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), ttl);
        let (status, refreshed) =
            app.refresh(&r, client.id.as_str(), tokens["refresh_token"].as_str().unwrap(), &[]).await;
        assert_eq!(status, 200, "{refreshed}");
        assert_eq!(refreshed["expires_in"], ttl);
    }
    let (status, body) =
        app.token(&r, &[("grant_type", "client_credentials")], Some((machine.id.as_str(), &secret.unwrap()))).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["expires_in"], 90);
}

#[tokio::test]
async fn client_credentials_scope_resolution() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let (m, secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let secret = secret.unwrap();
    let creds = Some((m.id.as_str(), secret.as_str()));
    let cc = |scope: Option<&'static str>| {
        let mut f = vec![("grant_type", "client_credentials")];
        if let Some(s) = scope {
            f.push(("scope", s));
        }
        f
    };
    for (scope, granted) in [
        (None, "todo:read"),
        (Some("todo:write"), "todo:write"),
        (Some("todo:read todo:write"), "todo:read todo:write"),
        (Some("todo:write todo:write"), "todo:write"),
        (Some("openid offline_access"), "todo:read"),
        (Some("todo:write profile"), "todo:write"),
    ] {
        let (status, body) = app.token(&r, &cc(scope), creds).await;
        assert_eq!(status, 200, "{scope:?}: {body}");
        assert_eq!(body["scope"], granted, "{scope:?}");
        let claims = verify_with_jwks(&app, body["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["scope"], granted);
        assert_eq!(claims["sub"], m.id.to_string());
        assert_eq!(claims["aud"], json!([r.server_url, r.id.to_string()]));
    }
    for bad in ["todo:delete", "todo:read admin", "bad\\scope"] {
        let (status, body) = app.token(&r, &cc(Some(bad)), creds).await;
        assert_error(status, &body, 400, "invalid_scope");
    }
    let mut form = cc(None);
    form.push(("resource", "https://unknown.example.com/mcp"));
    let (status, body) = app.token(&r, &form, creds).await;
    assert_error(status, &body, 400, "invalid_target");
    let mut form = cc(None);
    form.push(("resource", &r.server_url));
    let (status, body) = app.token(&r, &form, creds).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn unknown_codes_and_resources() {
    let (app, r, c) = setup().await;
    let v = Pkce::new().verifier;
    let (status, body) = app.token(&r, &redeem_form(c.id.as_str(), "no-such-code", &v, &[]), None).await;
    assert_error(status, &body, 400, "invalid_grant");
    let (status, body) = app.token(&r, &redeem_form(c.id.as_str(), "", &v, &[]), None).await;
    assert_error(status, &body, 400, "invalid_request");
    let (status, body) = app
        .post_form(
            &format!("{}/resources/res_doesnotexist/oauth/token", app.base),
            &redeem_form(c.id.as_str(), "x", &v, &[]),
            None,
        )
        .await;
    assert_eq!(status, 404, "{body}");
}

#[tokio::test]
async fn concurrent_redemptions_of_one_code_yield_exactly_one_token() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let url = format!("{}/oauth/token", app.issuer(&r));
    let tasks: Vec<_> = (0..8)
        .map(|_| {
            let (http, url, id) = (app.http(), url.clone(), c.id.to_string());
            let (code, verifier) = (code.clone(), pkce.verifier.clone());
            tokio::spawn(async move {
                let form = [
                    ("grant_type", "authorization_code"),
                    ("code", code.as_str()),
                    ("redirect_uri", CB),
                    ("code_verifier", verifier.as_str()),
                    ("client_id", id.as_str()),
                ];
                let resp = http.post(&url).form(&form).send().await.unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut ok = 0;
    for t in tasks {
        let (status, body) = t.await.unwrap();
        match status {
            200 => ok += 1,
            _ => assert_error(status, &body, 400, "invalid_grant"),
        }
    }
    assert_eq!(ok, 1, "a code is redeemed exactly once");
}

#[tokio::test]
async fn outstanding_codes_of_a_disabled_user_cannot_be_redeemed() {
    let (app, r, c) = setup().await;
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let user = app.store.get_user_by_email(EMAIL).await.unwrap().unwrap();
    app.store.set_user_disabled(&user.id, true, 0).await.unwrap();
    let (status, body) = app.token(&r, &redeem_form(c.id.as_str(), &code, &pkce.verifier, &[]), None).await;
    assert_error(status, &body, 400, "invalid_grant");
}

#[tokio::test]
async fn basic_scheme_is_case_insensitive_and_an_empty_first_copy_is_still_a_duplicate() {
    use base64::Engine as _;
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let (c, secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let secret = secret.unwrap();
    let url = format!("{}/oauth/token", app.issuer(&r));
    let creds = base64::engine::general_purpose::STANDARD.encode(format!("{}:{secret}", c.id));
    // RFC 7235 §2.1: the scheme is case-insensitive.
    for scheme in ["BASIC", "bAsIc"] {
        let resp = app
            .http()
            .post(&url)
            .header("authorization", format!("{scheme} {creds}"))
            .form(&[("grant_type", "client_credentials")])
            .send()
            .await
            .unwrap();
        assert_eq!(resp.status(), 200, "{scheme}: {}", resp.text().await.unwrap());
    }
    // RFC 6749 §3.2: no parameter twice, even when its first copy is empty.
    let form = [("grant_type", ""), ("grant_type", "client_credentials")];
    let (status, body) = app.token(&r, &form, Some((c.id.as_str(), &secret))).await;
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_request", "{body}");
}
