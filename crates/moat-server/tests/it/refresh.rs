//! Refresh tokens: rotation, the grace window for retries, reuse detection revoking the family,
//! scope narrowing (never widening), client binding, re-checks of user, client and consent,
//! clients without the grant, and concurrent refreshes.

use std::time::Duration;

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

fn rt_of(body: &Value) -> String {
    body["refresh_token"].as_str().unwrap_or_else(|| panic!("no refresh token in {body}")).to_owned()
}

fn assert_invalid_grant(status: u16, body: &Value) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

/// Whether the store still holds `rt` unrotated in an unrevoked family.
async fn is_live(app: &TestApp, rt: &str) -> bool {
    let hash = moat_server::crypto::sha256_hex(rt.as_bytes());
    match app.store.get_refresh_token(&hash).await.unwrap() {
        Some((t, f)) => t.rotated_at.is_none() && f.revoked_at.is_none(),
        None => false,
    }
}

#[tokio::test]
async fn every_refresh_rotates() {
    let (app, r, c) = setup().await;
    let id = c.id.as_str();
    let tokens = code_flow(&app, &r, id, CB, EMAIL, &[("scope", "todo:read todo:write")]).await;
    let first_claims = verify_with_jwks(&app, tokens["access_token"].as_str().unwrap()).await;
    let mut rt = rt_of(&tokens);
    let mut seen = vec![rt.clone()];
    for _ in 0..3 {
        let (status, body) = app.refresh(&r, id, &rt, &[]).await;
        assert_eq!(status, 200, "{body}");
        assert_eq!(body["scope"], "todo:read todo:write");
        let next = rt_of(&body);
        assert!(!seen.contains(&next), "a fresh refresh token every time");
        assert!(next.len() >= 43, "opaque 256-bit token");
        let claims = verify_with_jwks(&app, body["access_token"].as_str().unwrap()).await;
        assert_eq!(claims["sub"], first_claims["sub"]);
        assert_eq!(claims["sid"], first_claims["sid"]);
        assert_eq!(claims["client_id"], id);
        assert_ne!(claims["jti"], first_claims["jti"]);
        assert!(!is_live(&app, &rt).await, "the presented token is rotated");
        assert!(is_live(&app, &next).await);
        seen.push(next.clone());
        rt = next;
    }
    // Unknown or malformed refresh tokens.
    for bad in ["nope", &"x".repeat(300), &format!("{rt}x")] {
        let (status, body) = app.refresh(&r, id, bad, &[]).await;
        assert_invalid_grant(status, &body);
    }
    let (status, body) = app.token(&r, &[("grant_type", "refresh_token"), ("client_id", id)], None).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_request")), "{body}");
}

#[tokio::test]
async fn replay_inside_the_grace_window_returns_the_same_successor() {
    let (app, r, c) = setup().await;
    let id = c.id.as_str();
    let rt1 = rt_of(&code_flow(&app, &r, id, CB, EMAIL, &[]).await);
    let (status, a) = app.refresh(&r, id, &rt1, &[]).await;
    assert_eq!(status, 200, "{a}");
    let (status, b) = app.refresh(&r, id, &rt1, &[]).await;
    assert_eq!(status, 200, "{b}");
    assert_eq!(rt_of(&a), rt_of(&b), "the same successor");
    assert_ne!(a["access_token"], b["access_token"], "a new access token each time");
    // The successor works, and once it has been used the old token's replay is reuse.
    let (status, c2) = app.refresh(&r, id, &rt_of(&a), &[]).await;
    assert_eq!(status, 200, "{c2}");
    let (status, body) = app.refresh(&r, id, &rt1, &[]).await;
    assert_invalid_grant(status, &body);
    let (status, body) = app.refresh(&r, id, &rt_of(&c2), &[]).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test]
async fn replay_after_the_grace_window_revokes_the_family() {
    let (app, r, c) = setup_with(&[("MOAT_REFRESH_REUSE_GRACE_SECONDS", "1")]).await;
    let (rs, rs_secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let id = c.id.as_str();
    let rt1 = rt_of(&code_flow(&app, &r, id, CB, EMAIL, &[]).await);
    let (status, body) = app.refresh(&r, id, &rt1, &[]).await;
    assert_eq!(status, 200, "{body}");
    let rt2 = rt_of(&body);
    let at2 = body["access_token"].as_str().unwrap().to_owned();
    tokio::time::sleep(Duration::from_millis(2100)).await;
    let (status, body) = app.refresh(&r, id, &rt1, &[]).await;
    assert_invalid_grant(status, &body);
    // The whole family is gone: the unused successor too, and its access token is inactive.
    let (status, body) = app.refresh(&r, id, &rt2, &[]).await;
    assert_invalid_grant(status, &body);
    let (_, body) = app
        .post_form(
            &format!("{}/oauth/introspect", app.issuer(&r)),
            &[("token", &at2)],
            Some((rs.id.as_str(), rs_secret.as_deref().unwrap())),
        )
        .await;
    assert_eq!(body, json!({"active": false}));
}

#[tokio::test]
async fn a_zero_grace_window_means_no_replay_at_all() {
    let (app, r, c) = setup_with(&[("MOAT_REFRESH_REUSE_GRACE_SECONDS", "0")]).await;
    let id = c.id.as_str();
    let rt1 = rt_of(&code_flow(&app, &r, id, CB, EMAIL, &[]).await);
    let (status, body) = app.refresh(&r, id, &rt1, &[]).await;
    assert_eq!(status, 200, "{body}");
    let rt2 = rt_of(&body);
    // Immediately (almost always within the same second).
    let (status, body) = app.refresh(&r, id, &rt1, &[]).await;
    assert_invalid_grant(status, &body);
    let (status, body) = app.refresh(&r, id, &rt2, &[]).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test]
async fn scope_may_narrow_but_never_widen() {
    let (app, r, c) = setup().await;
    let id = c.id.as_str();
    let rt = rt_of(&code_flow(&app, &r, id, CB, EMAIL, &[("scope", "todo:read todo:write")]).await);
    let (status, body) = app.refresh(&r, id, &rt, &[("scope", "todo:read")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "todo:read");
    let claims = verify_with_jwks(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["scope"], "todo:read");
    // Narrowing one access token does not shrink the grant.
    let (status, body) = app.refresh(&r, id, &rt_of(&body), &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "todo:read todo:write");
    // Protocol scopes alone keep the grant.
    let (status, body) = app.refresh(&r, id, &rt_of(&body), &[("scope", "offline_access")]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "todo:read todo:write");

    // A grant of todo:read only cannot widen.
    let rt = rt_of(&code_flow(&app, &r, id, CB, EMAIL, &[("scope", "todo:read")]).await);
    for wider in ["todo:write", "todo:read todo:write", "todo:admin"] {
        let (status, body) = app.refresh(&r, id, &rt, &[("scope", wider)]).await;
        assert_eq!((status, body["error"].as_str()), (400, Some("invalid_scope")), "{wider}: {body}");
        assert!(is_live(&app, &rt).await, "a refused refresh must not rotate the token");
    }
    let (status, body) = app.refresh(&r, id, &rt, &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "todo:read");
}

#[tokio::test]
async fn a_refresh_token_is_bound_to_its_client() {
    let (app, r, c) = setup().await;
    let (other, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode, GrantType::RefreshToken]).await;
    let rt = rt_of(&code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[]).await);
    let (status, body) = app.refresh(&r, other.id.as_str(), &rt, &[]).await;
    assert_invalid_grant(status, &body);
    assert!(is_live(&app, &rt).await, "another client's attempt changes nothing");
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt, &[]).await;
    assert_eq!(status, 200, "{body}");
    // A resource parameter naming another resource.
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt_of(&body), &[("resource", "https://x.example/mcp")]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_target")), "{body}");
}

#[tokio::test]
async fn disabled_users_lose_their_refresh_tokens() {
    let (app, r, c) = setup().await;
    let user = app.store.get_user_by_email(EMAIL).await.unwrap().unwrap();
    let rt = rt_of(&code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[]).await);
    app.store.set_user_disabled(&user.id, true, 0).await.unwrap();
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt, &[]).await;
    assert_invalid_grant(status, &body);
    // Re-enabling does not bring the tokens back.
    app.store.set_user_disabled(&user.id, false, 0).await.unwrap();
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt, &[]).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test]
async fn disabled_clients_lose_their_refresh_tokens() {
    let (app, r, c) = setup().await;
    let rt = rt_of(&code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[]).await);
    app.store.set_client_disabled(&r.id, &c.id, true, 0).await.unwrap();
    // A disabled client fails client identification before the grant is looked at.
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt, &[]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    // Re-enabled, its old refresh tokens stay revoked.
    app.store.set_client_disabled(&r.id, &c.id, false, 0).await.unwrap();
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt, &[]).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test]
async fn withdrawn_consent_ends_refresh() {
    let (app, r, c) = setup().await;
    let user = app.store.get_user_by_email(EMAIL).await.unwrap().unwrap();
    let rt = rt_of(&code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[]).await);
    assert!(app.store.delete_consent(&user.id, &c.id, &r.id, 0).await.unwrap());
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt, &[]).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test]
async fn clients_without_the_refresh_grant_get_no_refresh_token() {
    let (app, r, _) = setup().await;
    let (pre, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode]).await;
    let tokens = code_flow(&app, &r, pre.id.as_str(), CB, EMAIL, &[("scope", "todo:read offline_access")]).await;
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    let (status, reg) = app.register(&r, json!({"redirect_uris": [CB], "grant_types": ["authorization_code"]})).await;
    assert_eq!(status, 201, "{reg}");
    assert_eq!(reg["grant_types"], json!(["authorization_code"]));
    let dcr = reg["client_id"].as_str().unwrap();
    let tokens = code_flow(&app, &r, dcr, CB, EMAIL, &[("scope", "offline_access")]).await;
    assert!(tokens.get("refresh_token").is_none(), "{tokens}");
    // Registering without grant_types means authorization_code only.
    let (_, reg) = app.register(&r, json!({"redirect_uris": ["https://b.example/cb"]})).await;
    assert_eq!(reg["grant_types"], json!(["authorization_code"]));
}

#[tokio::test]
async fn concurrent_refreshes_of_one_token_all_get_the_same_successor() {
    let (app, r, c) = setup().await;
    let rt = rt_of(&code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[]).await);
    let url = format!("{}/oauth/token", app.issuer(&r));
    let http = app.http();
    let tasks: Vec<_> = (0..10)
        .map(|_| {
            let (http, url, rt, id) = (http.clone(), url.clone(), rt.clone(), c.id.to_string());
            tokio::spawn(async move {
                let form =
                    [("grant_type", "refresh_token"), ("refresh_token", rt.as_str()), ("client_id", id.as_str())];
                let resp = http.post(&url).form(&form).send().await.unwrap();
                (resp.status().as_u16(), resp.json::<Value>().await.unwrap())
            })
        })
        .collect();
    let mut successors = Vec::new();
    for t in tasks {
        let (status, body) = t.await.unwrap();
        assert_eq!(status, 200, "{body}");
        successors.push(rt_of(&body));
    }
    assert!(successors.iter().all(|s| *s == successors[0]), "{successors:?}");
    assert_ne!(successors[0], rt);
    let (status, body) = app.refresh(&r, c.id.as_str(), &successors[0], &[]).await;
    assert_eq!(status, 200, "{body}");
}

#[tokio::test]
async fn revoked_refresh_token_family_is_dead() {
    let (app, r, c) = setup().await;
    let tokens = code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let rt1 = rt_of(&tokens);
    let (_, body) = app.refresh(&r, c.id.as_str(), &rt1, &[]).await;
    let rt2 = rt_of(&body);
    // Revoking the *old* token (within the grace window) revokes the family too.
    let (status, _) = app
        .post_form(&format!("{}/oauth/revoke", app.issuer(&r)), &[("token", &rt1), ("client_id", c.id.as_str())], None)
        .await;
    assert_eq!(status, 200);
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt2, &[]).await;
    assert_invalid_grant(status, &body);
}

#[tokio::test]
async fn refresh_tokens_expire_when_idle_and_absolutely() {
    let app = TestApp::spawn().await;
    app.user(EMAIL).await;
    let idle = app.resource_with(|r| r.refresh_idle_ttl = 1).await;
    let absolute = app
        .resource_with(|r| {
            r.refresh_token_ttl = 1;
            r.refresh_idle_ttl = 1;
        })
        .await;
    let mut tokens = Vec::new();
    for r in [&idle, &absolute] {
        let (c, _) = app.client(r, &[CB], true, &[GrantType::AuthorizationCode, GrantType::RefreshToken]).await;
        let rt = rt_of(&code_flow(&app, r, c.id.as_str(), CB, EMAIL, &[]).await);
        tokens.push((r, c, rt));
    }
    tokio::time::sleep(Duration::from_millis(1100)).await;
    for (r, c, rt) in tokens {
        let (status, body) = app.refresh(r, c.id.as_str(), &rt, &[]).await;
        assert_invalid_grant(status, &body);
        assert!(body["error_description"].as_str().unwrap().contains("expired"), "{body}");
    }
}

#[tokio::test]
async fn revocation_and_introspection_are_scoped_to_the_client_and_resource() {
    let (app, r, c) = setup().await;
    let (other, _) = app.client(&r, &[CB], true, &[GrantType::AuthorizationCode, GrantType::RefreshToken]).await;
    let (rs, rs_secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let rs_secret = rs_secret.unwrap();
    let tokens = code_flow(&app, &r, c.id.as_str(), CB, EMAIL, &[]).await;
    let (rt, at) = (rt_of(&tokens), tokens["access_token"].as_str().unwrap().to_owned());
    let revoke = format!("{}/oauth/revoke", app.issuer(&r));
    // Another client's revocation is refused (RFC 7009 §2.1) and does nothing.
    for token in [&rt, &at] {
        let (status, body) = app.post_form(&revoke, &[("token", token), ("client_id", other.id.as_str())], None).await;
        assert_eq!(status, 400, "{body}");
        assert_eq!(body["error"], "unauthorized_client", "{body}");
    }
    let introspect = format!("{}/oauth/introspect", app.issuer(&r));
    let (_, body) = app.post_form(&introspect, &[("token", &at)], Some((rs.id.as_str(), &rs_secret))).await;
    assert_eq!(body["active"], true, "{body}");
    assert!(is_live(&app, &rt).await);
    // Another resource's introspection does not know this resource's tokens.
    let r2 = app.resource().await;
    let (rs2, rs2_secret) = app.client(&r2, &[], false, &[GrantType::ClientCredentials]).await;
    let introspect2 = format!("{}/oauth/introspect", app.issuer(&r2));
    for token in [&rt, &at] {
        let (_, body) = app
            .post_form(&introspect2, &[("token", token)], Some((rs2.id.as_str(), rs2_secret.as_deref().unwrap())))
            .await;
        assert_eq!(body, json!({"active": false}));
    }
    // The owner revokes the access token: inactive, while the refresh token lives on.
    let (status, _) = app.post_form(&revoke, &[("token", &at), ("client_id", c.id.as_str())], None).await;
    assert_eq!(status, 200);
    // Now an invalid token: another client's attempt gets 200 like any invalid token (§2.2).
    let (status, body) = app.post_form(&revoke, &[("token", &at), ("client_id", other.id.as_str())], None).await;
    assert_eq!(status, 200, "{body}");
    let (_, body) = app.post_form(&introspect, &[("token", &at)], Some((rs.id.as_str(), &rs_secret))).await;
    assert_eq!(body, json!({"active": false}));
    let (status, body) = app.refresh(&r, c.id.as_str(), &rt, &[]).await;
    assert_eq!(status, 200, "{body}");
}
