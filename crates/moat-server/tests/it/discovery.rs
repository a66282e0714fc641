//! Discovery: RFC 8414 metadata per resource, the JWKS, the protected resource metadata
//! document, health and metrics, signing-key rotation through the real `moat keys rotate`, and
//! every signing algorithm.

use std::time::{Duration, Instant};

use moat_core::model::GrantType;
use serde_json::{Value, json};

use crate::helpers::*;

fn metadata_url(app: &TestApp, id: &str) -> String {
    format!("{}/.well-known/oauth-authorization-server/resources/{id}", app.base)
}

#[tokio::test]
async fn authorization_server_metadata() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let issuer = app.issuer(&r);
    let resp = app.http().get(metadata_url(&app, r.id.as_str())).send().await.unwrap();
    assert_eq!(resp.status(), 200);
    assert!(resp.headers()["content-type"].to_str().unwrap().starts_with("application/json"));
    let m: Value = resp.json().await.unwrap();
    // RFC 8414 §3.3: byte-identical to the URL the client derived the metadata URL from.
    assert_eq!(m["issuer"], format!("{}/resources/{}", app.base, r.id));
    assert_eq!(m["authorization_endpoint"], format!("{issuer}/oauth/authorize"));
    assert_eq!(m["token_endpoint"], format!("{issuer}/oauth/token"));
    assert_eq!(m["registration_endpoint"], format!("{issuer}/oauth/register"));
    assert_eq!(m["revocation_endpoint"], format!("{issuer}/oauth/revoke"));
    assert_eq!(m["introspection_endpoint"], format!("{issuer}/oauth/introspect"));
    assert_eq!(m["jwks_uri"], format!("{}/keys", app.base));
    assert_eq!(m["scopes_supported"], json!(["todo:read", "todo:write"]));
    assert_eq!(m["response_types_supported"], json!(["code"]));
    assert_eq!(m["code_challenge_methods_supported"], json!(["S256"]));
    assert_eq!(m["authorization_response_iss_parameter_supported"], true);
    let grants = m["grant_types_supported"].as_array().unwrap();
    for g in ["authorization_code", "refresh_token", "client_credentials"] {
        assert!(grants.contains(&json!(g)), "{g}");
    }
    let methods = m["token_endpoint_auth_methods_supported"].as_array().unwrap();
    for a in ["none", "client_secret_basic", "client_secret_post"] {
        assert!(methods.contains(&json!(a)), "{a}");
    }
    // Client ID Metadata Documents are not implemented yet: never advertised.
    assert!(m.get("client_id_metadata_document_supported").is_none(), "{m}");
    for (_, v) in m.as_object().unwrap() {
        if let Some(s) = v.as_str().filter(|s| s.starts_with("http")) {
            assert!(s.starts_with(&app.base), "every URL is built from the public URL: {s}");
        }
    }
    // The advertised endpoints exist.
    let jwks = app.get_json(m["jwks_uri"].as_str().unwrap()).await;
    assert!(!jwks["keys"].as_array().unwrap().is_empty());
    let (status, _) = app.post_form(m["token_endpoint"].as_str().unwrap(), &[("grant_type", "x")], None).await;
    assert_eq!(status, 401);
}

#[tokio::test]
async fn metadata_advertises_cimd_and_dcr_exactly_when_enabled() {
    let app = TestApp::spawn().await;
    let r = app
        .resource_with(|r| {
            r.cimd_enabled = true;
            r.dcr_enabled = false;
        })
        .await;
    let m = app.get_json(&metadata_url(&app, r.id.as_str())).await;
    assert_eq!(m["client_id_metadata_document_supported"], true, "{m}");
    assert!(m.get("registration_endpoint").is_none(), "{m}");
    let r = app.resource_with(|r| r.cimd_enabled = false).await;
    let m = app.get_json(&metadata_url(&app, r.id.as_str())).await;
    assert!(m.get("client_id_metadata_document_supported").is_none(), "{m}");
    assert!(m.get("registration_endpoint").is_some(), "{m}");
}

#[tokio::test]
async fn metadata_issuer_follows_the_public_url() {
    let app = TestApp::spawn_with(&[("MOAT_PUBLIC_URL", "https://auth.example.test")]).await;
    assert_eq!(app.base, "https://auth.example.test");
    let r = app.resource().await;
    let url = format!("http://{}/.well-known/oauth-authorization-server/resources/{}", app.addr, r.id);
    let m: Value = app.http().get(&url).header("host", "evil.example").send().await.unwrap().json().await.unwrap();
    assert_eq!(m["issuer"], format!("https://auth.example.test/resources/{}", r.id));
    assert_eq!(m["jwks_uri"], "https://auth.example.test/keys");
}

#[tokio::test]
async fn unknown_resources_are_404() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    for url in [
        metadata_url(&app, "res_doesnotexist"),
        metadata_url(&app, "garbage"),
        format!("{}/resources/res_doesnotexist/protected-resource-metadata", app.base),
        format!("{}/.well-known/oauth-authorization-server", app.base),
        format!("{}/.well-known/oauth-authorization-server/resources/{}/extra", app.base, r.id),
        format!("{}/no/such/path", app.base),
    ] {
        let (status, _, _) = app.get_raw(&url).await;
        assert_eq!(status, 404, "{url}");
    }
}

#[tokio::test]
async fn jwks_is_public_cacheable_and_has_no_private_members() {
    let app = TestApp::spawn().await;
    let a = app.http().get(format!("{}/keys", app.base)).send().await.unwrap();
    let b = app.http().get(format!("{}/.well-known/jwks.json", app.base)).send().await.unwrap();
    for resp in [&a, &b] {
        assert_eq!(resp.status(), 200);
        assert_eq!(resp.headers()["cache-control"], "public, max-age=300");
    }
    let a: Value = a.json().await.unwrap();
    let b: Value = b.json().await.unwrap();
    assert_eq!(a, b);
    let keys = a["keys"].as_array().unwrap();
    assert_eq!(keys.len(), 1);
    for k in keys {
        assert_eq!(k["kty"], "EC");
        assert_eq!(k["crv"], "P-256");
        assert_eq!(k["alg"], "ES256");
        assert_eq!(k["use"], "sig");
        assert!(k["kid"].as_str().is_some_and(|kid| !kid.is_empty()));
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(k.get(private).is_none(), "{private} in {k}");
        }
    }
}

#[tokio::test]
async fn protected_resource_metadata_document() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let prm = app.get_json(&format!("{}/resources/{}/protected-resource-metadata", app.base, r.id)).await;
    assert_eq!(
        prm,
        json!({
            "resource": r.server_url,
            "authorization_servers": [app.issuer(&r)],
            "scopes_supported": ["todo:read"],
            "bearer_methods_supported": ["header"],
            "resource_name": "Todo MCP",
        })
    );
    // Without explicit defaults, every scope is a default; offline_access never appears.
    let all = app.resource_with(|r| r.default_scopes.clear()).await;
    let prm = app.get_json(&format!("{}/resources/{}/protected-resource-metadata", app.base, all.id)).await;
    assert_eq!(prm["scopes_supported"], json!(["todo:read", "todo:write"]));
}

#[tokio::test]
async fn health_and_metrics() {
    let app = TestApp::spawn().await;
    let (status, _, body) = app.get_raw(&format!("{}/healthz", app.base)).await;
    assert_eq!(status, 200);
    assert_eq!(serde_json::from_str::<Value>(&body).unwrap(), json!({"status": "ok"}));

    let r = app.resource().await;
    let (m, secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let (status, _) =
        app.token(&r, &[("grant_type", "client_credentials")], Some((m.id.as_str(), &secret.unwrap()))).await;
    assert_eq!(status, 200);
    let (status, _) = app.token(&r, &[("grant_type", "client_credentials")], Some((m.id.as_str(), "wrong"))).await;
    assert_eq!(status, 401);
    let (status, _, metrics) = app.get_raw(&format!("{}/metrics", app.base)).await;
    assert_eq!(status, 200);
    for needle in [
        "moat_tokens_issued_total{kind=\"client_credentials\"} 1",
        "moat_token_errors_total{kind=\"invalid_client\"} 1",
        "moat_http_requests_total{route=\"/resources/{resource}/oauth/token\",method=\"POST\",status=\"200\"} 1",
        "moat_http_requests_total{route=\"/healthz\",method=\"GET\",status=\"200\"} 1",
        "moat_token_issuance_duration_seconds_count{kind=\"client_credentials\"} 1",
        "moat_http_request_duration_seconds_bucket",
    ] {
        assert!(metrics.contains(needle), "{needle} missing from:\n{metrics}");
    }

    // Graceful stop: the server goes away.
    let base = app.base.clone();
    app.stop().await;
    assert!(reqwest::get(format!("{base}/healthz")).await.is_err());
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

/// One observation of the rotation: the JWKS kids, then a token minted right after.
struct Observation {
    jwks: Vec<String>,
    token: String,
    kid: String,
    iat: i64,
}

#[tokio::test]
async fn key_rotation_publishes_before_signing_and_keeps_the_old_key() {
    // The publish delay leaves a window of at least a second between the server reloading the
    // new key (every second) and the key's activation.
    let env =
        [("MOAT_KEY_PUBLISH_DELAY_SECONDS", "3"), ("MOAT_JWKS_MAX_AGE_SECONDS", "1"), ("MOAT_KEY_RELOAD_SECONDS", "1")];
    let app = TestApp::spawn_with(&env).await;
    let r = app.resource().await;
    let (m, secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
    let secret = secret.unwrap();
    let token_url = format!("{}/oauth/token", app.issuer(&r));
    let jwks_url = format!("{}/keys", app.base);
    let resp = app.http().get(&jwks_url).send().await.unwrap();
    assert_eq!(resp.headers()["cache-control"], "public, max-age=1");
    let first = app.token(&r, &[("grant_type", "client_credentials")], Some((m.id.as_str(), &secret))).await.1;
    let first = first["access_token"].as_str().unwrap().to_owned();
    let old_kid = jwt_parts(&first).0["kid"].as_str().unwrap().to_owned();
    assert_eq!(kids(&app.get_json(&jwks_url).await), vec![old_kid.clone()]);

    // Observe the JWKS and the signing key continuously while the CLI rotates, so the
    // observations do not depend on how long the CLI process takes to exit.
    let poller = {
        let (http, old_kid, id) = (app.http(), old_kid.clone(), m.id.to_string());
        let (secret, jwks_url) = (secret.clone(), jwks_url.clone());
        tokio::spawn(async move {
            let mut seen = Vec::new();
            let deadline = Instant::now() + Duration::from_secs(8);
            while Instant::now() < deadline {
                let jwks: Value = http.get(&jwks_url).send().await.unwrap().json().await.unwrap();
                let resp = http
                    .post(&token_url)
                    .basic_auth(&id, Some(&secret))
                    .form(&[("grant_type", "client_credentials")])
                    .send()
                    .await
                    .unwrap();
                let body: Value = resp.json().await.unwrap();
                let token = body["access_token"].as_str().unwrap().to_owned();
                let (header, claims) = jwt_parts(&token);
                let kid = header["kid"].as_str().unwrap().to_owned();
                let done = kid != old_kid;
                seen.push(Observation { jwks: kids(&jwks), token, kid, iat: claims["iat"].as_i64().unwrap() });
                if done {
                    break;
                }
                tokio::time::sleep(Duration::from_millis(50)).await;
            }
            seen
        })
    };
    let out = app.moat(&["keys", "rotate", "--json"], &env, None).await;
    assert!(out.success, "{}", out.stderr);
    let rotated: Value = serde_json::from_str(&out.stdout).unwrap();
    let new_kid = rotated["kid"].as_str().unwrap().to_owned();
    let activates_at = rotated["activates_at"].as_i64().unwrap();
    assert_ne!(new_kid, old_kid);
    let seen = poller.await.unwrap();

    let signs = seen.iter().position(|o| o.kid == new_kid).expect("the new key never signed");
    let published = seen.iter().position(|o| o.jwks.contains(&new_kid)).expect("the new key was never published");
    assert!(
        seen[published..signs].iter().any(|o| o.kid == old_kid),
        "the new key must be published while the old one still signs"
    );
    for o in &seen {
        assert!(o.jwks.contains(&old_kid), "the old key stays published");
        if o.kid == new_kid {
            assert!(o.iat >= activates_at, "signed with the new key before it activated");
            assert!(o.jwks.contains(&new_kid));
        } else {
            assert_eq!(o.kid, old_kid);
            assert!(o.iat <= activates_at + 1, "the new key should sign by now");
        }
    }
    verify_with_jwks(&app, &seen[signs].token).await;
    // Tokens of the old key keep verifying: it stays in the JWKS.
    verify_with_jwks(&app, &first).await;
    assert_eq!(kids(&app.get_json(&jwks_url).await).len(), 2);

    let out = app.moat(&["keys", "list", "--json"], &env, None).await;
    assert!(out.success, "{}", out.stderr);
    let listed: Value = serde_json::from_str(&out.stdout).unwrap();
    let old = listed.as_array().unwrap().iter().find(|k| k["kid"] == old_kid.as_str()).unwrap();
    assert_eq!(old["retires_at"], activates_at);
    assert!(old["unpublish_at"].as_i64().unwrap() > activates_at);
}

#[tokio::test]
async fn every_signing_algorithm_verifies_with_the_jwks() {
    for (alg, kty) in [("EdDSA", "OKP"), ("RS256", "RSA"), ("ES256", "EC")] {
        let app = TestApp::spawn_with(&[("MOAT_SIGNING_ALG", alg)]).await;
        let r = app.resource().await;
        let (m, secret) = app.client(&r, &[], false, &[GrantType::ClientCredentials]).await;
        let secret = secret.unwrap();
        let (status, body) =
            app.token(&r, &[("grant_type", "client_credentials")], Some((m.id.as_str(), &secret))).await;
        assert_eq!(status, 200, "{body}");
        let token = body["access_token"].as_str().unwrap();
        let (header, _) = jwt_parts(token);
        assert_eq!(header["alg"], alg);
        assert_eq!(header["typ"], "at+jwt");
        let claims = verify_with_jwks(&app, token).await;
        assert_eq!(claims["iss"], app.issuer(&r));
        let jwks = app.get_json(&format!("{}/keys", app.base)).await;
        let key = &jwks["keys"][0];
        assert_eq!(key["kty"], kty, "{alg}");
        assert_eq!(key["alg"], alg);
        for private in ["d", "p", "q", "dp", "dq", "qi", "oth", "k"] {
            assert!(key.get(private).is_none(), "{alg}: {private}");
        }
        // Moat's own introspection accepts its tokens.
        let (status, intro) = app
            .post_form(
                &format!("{}/oauth/introspect", app.issuer(&r)),
                &[("token", token)],
                Some((m.id.as_str(), &secret)),
            )
            .await;
        assert_eq!((status, &intro["active"]), (200, &json!(true)), "{alg}: {intro}");
    }
}
