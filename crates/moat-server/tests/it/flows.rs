//! Complete flows through the real forms: DCR public client, pre-registered confidential
//! client with remembered consent, client credentials, revocation and introspection.

use moat_core::model::GrantType;
use serde_json::json;

use crate::helpers::*;

const LOOPBACK: &str = "http://127.0.0.1:33418/callback";

#[tokio::test]
async fn dcr_client_authorizes_refreshes_and_revokes() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let user = app.user("alice@example.com").await;
    let (status, reg) = app
        .register(&r, json!({"client_name": "Inspector", "redirect_uris": [LOOPBACK], "grant_types": ["authorization_code", "refresh_token"]}))
        .await;
    assert_eq!(status, 201, "{reg}");
    let client_id = reg["client_id"].as_str().unwrap();

    let tokens = code_flow(&app, &r, client_id, "http://127.0.0.1:5555/callback", "alice@example.com", &[]).await;
    assert_eq!(tokens["token_type"], "Bearer");
    assert_eq!(tokens["scope"], "todo:read", "no scope requested: the default scopes");
    assert_eq!(tokens["expires_in"], 3600);
    let at = tokens["access_token"].as_str().unwrap();
    let (header, _) = jwt_parts(at);
    assert_eq!(header["typ"], "at+jwt");
    assert_eq!(header["alg"], "ES256");
    let claims = verify_with_jwks(&app, at).await;
    assert_eq!(claims["iss"], app.issuer(&r));
    assert_eq!(claims["sub"], user.id.to_string());
    assert_eq!(claims["aud"], json!([r.server_url, r.id.to_string()]));
    assert_eq!(claims["client_id"], client_id);
    assert_eq!(claims["scope"], "todo:read");
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 3600);
    assert!(claims["sid"].as_str().unwrap().starts_with("ses_"));

    // Refresh rotates.
    let rt1 = tokens["refresh_token"].as_str().unwrap();
    let (status, refreshed) =
        app.token(&r, &[("grant_type", "refresh_token"), ("refresh_token", rt1), ("client_id", client_id)], None).await;
    assert_eq!(status, 200, "{refreshed}");
    let rt2 = refreshed["refresh_token"].as_str().unwrap();
    assert_ne!(rt1, rt2);

    // Revoking the refresh token (public client, client_id only) ends the family.
    let (status, _) = app
        .post_form(&format!("{}/oauth/revoke", app.issuer(&r)), &[("token", rt2), ("client_id", client_id)], None)
        .await;
    assert_eq!(status, 200);
    let (status, body) =
        app.token(&r, &[("grant_type", "refresh_token"), ("refresh_token", rt2), ("client_id", client_id)], None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "invalid_grant");
}

#[tokio::test]
async fn confidential_client_with_remembered_consent_skips_the_consent_page() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user("bob@example.com").await;
    let redirect = "https://app.example.com/cb";
    let (client, secret) =
        app.client(&r, &[redirect], false, &[GrantType::AuthorizationCode, GrantType::RefreshToken]).await;
    let secret = secret.unwrap();
    let browser = app.browser();

    let pkce = Pkce::new();
    let url = authorize_url(&app.issuer(&r), client.id.as_str(), redirect, &pkce, &[("scope", "todo:read")]);
    let loc = browser.authorize(&url, "bob@example.com", "approve").await;
    let q = query_of(&loc);
    assert!(loc.starts_with(redirect));
    assert_eq!(q["state"], "st-123");
    assert_eq!(q["iss"], app.issuer(&r));
    let (status, body) = app
        .token(
            &r,
            &[
                ("grant_type", "authorization_code"),
                ("code", &q["code"]),
                ("redirect_uri", redirect),
                ("code_verifier", &pkce.verifier),
            ],
            Some((client.id.as_str(), &secret)),
        )
        .await;
    assert_eq!(status, 200, "{body}");

    // Same scopes again: signed in, consent remembered, https redirect of a pre-registered
    // client → straight back to the client.
    let pkce = Pkce::new();
    let url = authorize_url(&app.issuer(&r), client.id.as_str(), redirect, &pkce, &[("scope", "todo:read")]);
    match browser.go(&url).await {
        Step::Client(loc) => assert!(query_of(&loc).contains_key("code"), "{loc}"),
        other => panic!("expected a silent redirect, got {other:?}"),
    }

    // More scopes: the consent page asks only for the new one.
    let pkce = Pkce::new();
    let url = authorize_url(&app.issuer(&r), client.id.as_str(), redirect, &pkce, &[("scope", "todo:read todo:write")]);
    let Step::Page(200, html) = browser.go(&url).await else { panic!("expected the consent page") };
    let text = text_of(&html);
    assert!(text.contains("asking for permission to todo:write"), "{text}");
    assert!(text.contains("You already allowed todo:read"), "{text}");
    assert!(text.contains("Change your todos"), "{text}");
}

#[tokio::test]
async fn client_credentials_for_confidential_clients_only() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let (agent, secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let secret = secret.unwrap();
    let (status, body) = app
        .token(&r, &[("grant_type", "client_credentials"), ("scope", "todo:write")], Some((agent.id.as_str(), &secret)))
        .await;
    assert_eq!(status, 200, "{body}");
    assert!(body.get("refresh_token").is_none());
    let claims = verify_with_jwks(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], agent.id.to_string());
    assert_eq!(claims["scope"], "todo:write");

    // client_secret_post works too.
    let (status, _) = app
        .token(
            &r,
            &[("grant_type", "client_credentials"), ("client_id", agent.id.as_str()), ("client_secret", &secret)],
            None,
        )
        .await;
    assert_eq!(status, 200);

    // Wrong secret via Basic: 401 with a challenge.
    let resp = app
        .http()
        .post(format!("{}/oauth/token", app.issuer(&r)))
        .basic_auth(agent.id.as_str(), Some("wrong"))
        .form(&[("grant_type", "client_credentials")])
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 401);
    assert!(resp.headers()["www-authenticate"].to_str().unwrap().starts_with("Basic"));
    let body: serde_json::Value = resp.json().await.unwrap();
    assert_eq!(body["error"], "invalid_client");

    // A public client cannot use client credentials.
    let (public, _) = app.client(&r, &["https://a.example/cb"], true, &[GrantType::AuthorizationCode]).await;
    let (status, body) =
        app.token(&r, &[("grant_type", "client_credentials"), ("client_id", public.id.as_str())], None).await;
    assert_eq!(status, 400);
    assert_eq!(body["error"], "unauthorized_client");
}

#[tokio::test]
async fn introspection_reflects_revocation() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user("carol@example.com").await;
    let (rs, rs_secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let rs_secret = rs_secret.unwrap();
    let (status, reg) = app
        .register(&r, json!({"redirect_uris": [LOOPBACK], "grant_types": ["authorization_code", "refresh_token"]}))
        .await;
    assert_eq!(status, 201);
    let client_id = reg["client_id"].as_str().unwrap();
    let tokens = code_flow(&app, &r, client_id, LOOPBACK, "carol@example.com", &[]).await;
    let at = tokens["access_token"].as_str().unwrap();
    let rt = tokens["refresh_token"].as_str().unwrap();
    let introspect = format!("{}/oauth/introspect", app.issuer(&r));

    let (status, body) = app.post_form(&introspect, &[("token", at)], Some((rs.id.as_str(), &rs_secret))).await;
    assert_eq!(status, 200);
    assert_eq!(body["active"], true);
    assert_eq!(body["scope"], "todo:read");
    assert_eq!(body["client_id"], client_id);
    let (_, body) = app.post_form(&introspect, &[("token", rt)], Some((rs.id.as_str(), &rs_secret))).await;
    assert_eq!(body["active"], true);

    // Public clients may not introspect.
    let (status, body) = app.post_form(&introspect, &[("token", at), ("client_id", client_id)], None).await;
    assert_eq!(status, 401);
    assert_eq!(body["error"], "invalid_client");

    // Revoking the refresh token deactivates the family's access tokens too.
    let (status, _) = app
        .post_form(&format!("{}/oauth/revoke", app.issuer(&r)), &[("token", rt), ("client_id", client_id)], None)
        .await;
    assert_eq!(status, 200);
    let (_, body) = app.post_form(&introspect, &[("token", at)], Some((rs.id.as_str(), &rs_secret))).await;
    assert_eq!(body, json!({"active": false}));
    let (_, body) = app.post_form(&introspect, &[("token", "garbage")], Some((rs.id.as_str(), &rs_secret))).await;
    assert_eq!(body, json!({"active": false}));
}
