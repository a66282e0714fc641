//! The real `moat` binary against a running server's database: resources, clients, users and
//! keys, with the running server seeing every change at once.

use serde_json::{Value, json};

use crate::helpers::*;

const CB: &str = "https://app.example.com/cb";

/// Creates a resource through the CLI and returns its `--json` output.
async fn create_resource(app: &TestApp, server_url: &str) -> Value {
    app.moat_json(&[
        "resource",
        "create",
        "--name",
        "Docs MCP",
        "--server-url",
        server_url,
        "--scope",
        "docs:read=Read the docs",
        "--scope",
        "docs:write",
        "--default-scope",
        "docs:read",
        "--json",
    ])
    .await
}

/// Creates a client credentials client through the CLI: (id, secret).
async fn create_machine_client(app: &TestApp, resource: &str) -> (String, String) {
    let c = app
        .moat_json(&[
            "client",
            "create",
            "--resource",
            resource,
            "--name",
            "Agent",
            "--grant",
            "client-credentials",
            "--json",
        ])
        .await;
    (c["client_id"].as_str().unwrap().to_owned(), c["client_secret"].as_str().unwrap().to_owned())
}

/// A client credentials grant at `resource`'s issuer.
async fn client_credentials(app: &TestApp, resource: &str, id: &str, secret: &str) -> (u16, Value) {
    app.post_form(
        &format!("{}/resources/{resource}/oauth/token", app.base),
        &[("grant_type", "client_credentials")],
        Some((id, secret)),
    )
    .await
}

async fn expect_failure(app: &TestApp, args: &[&str], stdin: Option<&str>, message: &str) {
    let out = app.moat(args, &[], stdin).await;
    assert!(!out.success, "moat {args:?} should fail: {}", out.stdout);
    assert!(out.stderr.contains(message), "moat {args:?}: expected {message:?} in {:?}", out.stderr);
}

#[tokio::test]
async fn resource_create_prints_everything_and_the_server_serves_it_at_once() {
    let app = TestApp::spawn().await;
    let res = create_resource(&app, "https://docs.example.com/mcp").await;
    let id = res["id"].as_str().unwrap();
    assert!(id.starts_with("res_"), "{res}");
    let issuer = format!("{}/resources/{id}", app.base);
    assert_eq!(res["issuer"], issuer);
    assert_eq!(res["server_url"], "https://docs.example.com/mcp");
    assert_eq!(
        res["scopes"],
        json!([{"name": "docs:read", "description": "Read the docs"}, {"name": "docs:write", "description": ""}])
    );
    assert_eq!(res["default_scopes"], json!(["docs:read"]));
    let prm = json!({
        "resource": "https://docs.example.com/mcp",
        "authorization_servers": [issuer],
        "scopes_supported": ["docs:read"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Docs MCP",
    });
    assert_eq!(res["protected_resource_metadata"], prm);
    // The running server serves it immediately.
    assert_eq!(app.get_json(&format!("{issuer}/protected-resource-metadata")).await, prm);
    let meta_url = format!("{}/.well-known/oauth-authorization-server/resources/{id}", app.base);
    assert_eq!(res["authorization_server_metadata_url"], meta_url);
    let meta = app.get_json(&meta_url).await;
    assert_eq!(meta["issuer"], issuer);
    assert_eq!(meta["scopes_supported"], json!(["docs:read", "docs:write"]));
    assert!(meta["registration_endpoint"].is_string());
    // The text form names the same things.
    let out = app.moat(&["resource", "show", id], &[], None).await;
    assert!(out.success, "{}", out.stderr);
    for needle in [id, issuer.as_str(), "https://docs.example.com/mcp", "docs:read (Read the docs)"] {
        assert!(out.stdout.contains(needle), "{needle} in {}", out.stdout);
    }
    // --no-dcr.
    let nodcr = app
        .moat_json(&[
            "resource",
            "create",
            "--name",
            "X",
            "--server-url",
            "https://x.example.com/mcp",
            "--scope",
            "x",
            "--no-dcr",
            "--json",
        ])
        .await;
    assert_eq!(nodcr["dcr_enabled"], false);
    let meta = app
        .get_json(&format!(
            "{}/.well-known/oauth-authorization-server/resources/{}",
            app.base,
            nodcr["id"].as_str().unwrap()
        ))
        .await;
    assert!(meta.get("registration_endpoint").is_none());
}

#[tokio::test]
async fn resource_create_refuses_bad_input() {
    let app = TestApp::spawn().await;
    create_resource(&app, "https://docs.example.com/mcp").await;
    let base = ["resource", "create", "--name", "N", "--scope", "s"];
    let with = |extra: &[&'static str]| {
        let mut v = base.to_vec();
        v.extend_from_slice(extra);
        v
    };
    for (args, message) in [
        (with(&["--server-url", "https://docs.example.com/mcp"]), "already uses this server URL"),
        (with(&["--server-url", "HTTPS://DOCS.example.com/mcp/"]), "already uses this server URL"),
        (with(&["--server-url", "http://plain.example.com/mcp"]), "--server-url"),
        (with(&["--server-url", "https://x.example.com/mcp#frag"]), "--server-url"),
        (with(&["--server-url", "https://y.example.com/mcp", "--scope", "openid"]), "protocol scope"),
        (with(&["--server-url", "https://y.example.com/mcp", "--default-scope", "other"]), "default scope"),
        (with(&["--server-url", "https://y.example.com/mcp", "--access-token-ttl", "5"]), "--access-token-ttl"),
    ] {
        expect_failure(&app, &args, None, message).await;
    }
    let out =
        app.moat(&["resource", "create", "--name", "N", "--server-url", "https://z.example.com/mcp"], &[], None).await;
    assert!(!out.success, "a scope is required");
    assert_eq!(app.store.list_resources().await.unwrap().len(), 1, "nothing was created");
}

#[tokio::test]
async fn resource_list_show_update_delete() {
    let app = TestApp::spawn().await;
    let a = create_resource(&app, "https://a.example.com/mcp").await;
    let b = create_resource(&app, "https://b.example.com/mcp").await;
    let (id_a, id_b) = (a["id"].as_str().unwrap(), b["id"].as_str().unwrap());

    let list = app.moat_json(&["resource", "list", "--json"]).await;
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|r| r["id"].as_str().unwrap()).collect();
    assert!(ids.contains(&id_a) && ids.contains(&id_b) && ids.len() == 2, "{list}");
    let out = app.moat(&["resource", "list"], &[], None).await;
    assert!(out.stdout.contains(id_a) && out.stdout.contains("https://b.example.com/mcp"), "{}", out.stdout);
    assert_eq!(app.moat_json(&["resource", "show", id_a, "--json"]).await, a);

    // A shorter access-token lifetime applies to the next token.
    let (cid, secret) = create_machine_client(&app, id_a).await;
    let (status, body) = client_credentials(&app, id_a, &cid, &secret).await;
    assert_eq!((status, body["expires_in"].as_i64()), (200, Some(3600)), "{body}");
    let updated = app.moat_json(&["resource", "update", id_a, "--access-token-ttl", "120", "--json"]).await;
    assert_eq!(updated["access_token_ttl"], 120);
    let (status, body) = client_credentials(&app, id_a, &cid, &secret).await;
    assert_eq!((status, body["expires_in"].as_i64()), (200, Some(120)), "{body}");
    let claims = verify_with_jwks(&app, body["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["exp"].as_i64().unwrap() - claims["iat"].as_i64().unwrap(), 120);

    // Another resource's server URL is refused.
    expect_failure(
        &app,
        &["resource", "update", id_b, "--server-url", "https://a.example.com/mcp"],
        None,
        "already uses",
    )
    .await;
    // Disabling DCR takes effect at once.
    app.moat_json(&["resource", "update", id_b, "--no-dcr", "--json"]).await;
    let resp = app
        .http()
        .post(format!("{}/resources/{id_b}/oauth/register", app.base))
        .json(&json!({"redirect_uris": [CB]}))
        .send()
        .await
        .unwrap();
    assert_eq!(resp.status(), 404);

    // Delete: gone from the server and from the CLI.
    let out = app.moat(&["resource", "delete", id_a], &[], None).await;
    assert!(out.success, "{}", out.stderr);
    let (status, _, _) =
        app.get_raw(&format!("{}/.well-known/oauth-authorization-server/resources/{id_a}", app.base)).await;
    assert_eq!(status, 404);
    let (status, _) = client_credentials(&app, id_a, &cid, &secret).await;
    assert_eq!(status, 404);
    expect_failure(&app, &["resource", "show", id_a], None, "no resource").await;
    expect_failure(&app, &["resource", "show", "not-an-id"], None, "not a resource id").await;
}

#[tokio::test]
async fn client_create_list_show_disable_delete() {
    let app = TestApp::spawn().await;
    let res = create_resource(&app, "https://docs.example.com/mcp").await;
    let rid = res["id"].as_str().unwrap();

    // Confidential: a secret, shown once, that works.
    let (cid, secret) = create_machine_client(&app, rid).await;
    assert!(cid.starts_with("cli_"));
    let (status, body) = client_credentials(&app, rid, &cid, &secret).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(body["scope"], "docs:read");

    // Public: no secret.
    let public = app
        .moat_json(&[
            "client",
            "create",
            "--resource",
            rid,
            "--name",
            "Desk",
            "--public",
            "--redirect-uri",
            CB,
            "--json",
        ])
        .await;
    assert!(public.get("client_secret").is_none(), "{public}");
    assert_eq!(public["token_endpoint_auth_method"], "none");
    assert_eq!(public["redirect_uris"], json!([CB]));
    assert_eq!(public["grant_types"], json!(["authorization_code", "refresh_token"]));
    let pid = public["client_id"].as_str().unwrap();

    let list = app.moat_json(&["client", "list", "--resource", rid, "--json"]).await;
    let ids: Vec<&str> = list.as_array().unwrap().iter().map(|c| c["client_id"].as_str().unwrap()).collect();
    assert_eq!(ids.len(), 2);
    assert!(ids.contains(&cid.as_str()) && ids.contains(&pid));
    assert!(list.as_array().unwrap().iter().all(|c| c.get("client_secret").is_none()), "secrets are never listed");
    let shown = app.moat_json(&["client", "show", pid, "--json"]).await;
    assert_eq!(shown["name"], "Desk");
    assert_eq!(shown["disabled"], false);

    // Bad input.
    expect_failure(
        &app,
        &["client", "create", "--resource", rid, "--name", "X", "--public", "--grant", "client-credentials"],
        None,
        "public client",
    )
    .await;
    expect_failure(&app, &["client", "create", "--resource", rid, "--name", "X"], None, "redirect-uri").await;
    expect_failure(
        &app,
        &["client", "create", "--resource", rid, "--name", "X", "--redirect-uri", "http://app.example.com/cb"],
        None,
        "--redirect-uri",
    )
    .await;
    let unknown = moat_core::ids::ResourceId::generate().to_string();
    expect_failure(
        &app,
        &["client", "create", "--resource", &unknown, "--name", "X", "--redirect-uri", CB],
        None,
        "no resource",
    )
    .await;

    // A refresh token of the public client; disabling the client revokes it.
    app.user("alice@example.com").await;
    let r = app.store.get_resource(&moat_core::ids::ResourceId::parse(rid).unwrap()).await.unwrap().unwrap();
    let tokens = code_flow(&app, &r, pid, CB, "alice@example.com", &[]).await;
    let rt = tokens["refresh_token"].as_str().unwrap();
    let out = app.moat(&["client", "disable", pid], &[], None).await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(app.moat_json(&["client", "show", pid, "--json"]).await["disabled"], true);
    let (status, body) = app.refresh(&r, pid, rt, &[]).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")), "{body}");
    let (status, _, _) = app.get_raw(&authorize_url(&app.issuer(&r), pid, CB, &Pkce::new(), &[])).await;
    assert_eq!(status, 400, "a disabled client cannot start an authorization");
    let out = app.moat(&["client", "enable", pid], &[], None).await;
    assert!(out.success, "{}", out.stderr);
    let (status, body) = app.refresh(&r, pid, rt, &[]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "revoked for good: {body}");

    // Delete.
    let out = app.moat(&["client", "delete", &cid], &[], None).await;
    assert!(out.success, "{}", out.stderr);
    let (status, body) = client_credentials(&app, rid, &cid, &secret).await;
    assert_eq!((status, body["error"].as_str()), (401, Some("invalid_client")));
    expect_failure(&app, &["client", "show", &cid], None, "no client").await;
}

#[tokio::test]
async fn user_create_then_login() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    let (c, _) = app.client(&r, &[CB], true, &[moat_core::model::GrantType::AuthorizationCode]).await;
    let out = app
        .moat(
            &["user", "create", "--email", " Carol@Example.COM ", "--name", "Carol", "--password-stdin", "--json"],
            &[],
            Some(&format!("{PASSWORD}\n")),
        )
        .await;
    assert!(out.success, "{}", out.stderr);
    let user: Value = serde_json::from_str(&out.stdout).unwrap();
    assert!(user["id"].as_str().unwrap().starts_with("usr_"));
    assert_eq!(user["email"], "carol@example.com");
    assert!(!out.stdout.contains(PASSWORD));
    // She can sign in, with any case of her email.
    let tokens = code_flow(&app, &r, c.id.as_str(), CB, "CAROL@example.com", &[]).await;
    let claims = verify_with_jwks(&app, tokens["access_token"].as_str().unwrap()).await;
    assert_eq!(claims["sub"], user["id"]);

    let list = app.moat_json(&["user", "list", "--json"]).await;
    assert_eq!(list.as_array().unwrap().len(), 1);
    assert!(list[0].get("password_hash").is_none(), "{list}");

    let create = |email: &'static str| vec!["user", "create", "--email", email, "--password-stdin"];
    expect_failure(&app, &create("carol@example.com"), Some("another password\n"), "already exists").await;
    for bad in ["not-an-email", "a@b@c", "@example.com", "a b@example.com"] {
        expect_failure(&app, &create(bad), Some("long enough password\n"), "is not a valid email address").await;
    }
    expect_failure(&app, &create("dave@example.com"), Some("short\n"), "the password must be 8 to 1024 bytes").await;
    expect_failure(&app, &create("dave@example.com"), Some(""), "the password must be").await;
    expect_failure(&app, &create("dave@example.com"), Some(&"p".repeat(2000)), "the password must be").await;
    assert_eq!(app.store.list_users().await.unwrap().len(), 1, "no user was created by the failures");
}

#[tokio::test]
async fn user_disable_ends_sessions_and_revokes_refresh_tokens() {
    let app = TestApp::spawn().await;
    let r = app.resource().await;
    app.user("erin@example.com").await;
    let (c, _) = app
        .client(
            &r,
            &[CB],
            true,
            &[moat_core::model::GrantType::AuthorizationCode, moat_core::model::GrantType::RefreshToken],
        )
        .await;
    let browser = app.browser();
    let (code, pkce) = authorize_code(&app, &browser, &r, c.id.as_str(), CB, "erin@example.com", &[]).await;
    let (status, tokens) = app
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
    assert_eq!(status, 200);
    let rt = tokens["refresh_token"].as_str().unwrap();
    let url = authorize_url(&app.issuer(&r), c.id.as_str(), CB, &Pkce::new(), &[]);
    assert!(matches!(browser.go(&url).await, Step::Client(_)), "signed in with remembered consent");

    let out = app.moat(&["user", "disable", "ERIN@example.com"], &[], None).await;
    assert!(out.success, "{}", out.stderr);
    assert!(is_login_page(&browser.go(&url).await), "the session ended");
    let (status, body) = app.refresh(&r, c.id.as_str(), rt, &[]).await;
    assert_eq!((status, body["error"].as_str()), (400, Some("invalid_grant")), "{body}");
    expect_failure(&app, &["user", "disable", "nobody@example.com"], None, "no user").await;
}

#[tokio::test]
async fn keys_list_matches_the_jwks() {
    let app = TestApp::spawn().await;
    let keys = app.moat_json(&["keys", "list", "--json"]).await;
    let jwks = app.get_json(&format!("{}/keys", app.base)).await;
    assert_eq!(keys.as_array().unwrap().len(), 1);
    assert_eq!(keys[0]["kid"], jwks["keys"][0]["kid"]);
    assert_eq!(keys[0]["alg"], "ES256");
    assert!(keys[0]["retires_at"].is_null());
    let out = app.moat(&["keys", "list"], &[], None).await;
    assert!(out.success, "{}", out.stderr);
    assert!(out.stdout.contains(keys[0]["kid"].as_str().unwrap()) && out.stdout.contains("signing"), "{}", out.stdout);
    // A rotation needs the master key that sealed the existing keys: without the key file, or
    // with another key, it must refuse instead of storing a key no server can open.
    let key_file = format!("{}.key", app.db_url.trim_start_matches("sqlite://"));
    let saved = std::fs::read_to_string(&key_file).unwrap();
    let other_master = "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";
    let out = app.moat(&["keys", "rotate"], &[("MOAT_MASTER_KEY", other_master)], None).await;
    assert!(!out.success, "rotated with a foreign master key");
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
    std::fs::remove_file(&key_file).unwrap();
    let out = app.moat(&["keys", "rotate"], &[], None).await;
    assert!(!out.success, "rotated without the master key");
    assert!(out.stderr.contains("master key"), "{}", out.stderr);
    assert!(!std::path::Path::new(&key_file).exists(), "no new master key was made up");
    assert_eq!(app.moat_json(&["keys", "list", "--json"]).await.as_array().unwrap().len(), 1);
    // With the right key file back, rotation works.
    std::fs::write(&key_file, saved).unwrap();
    let out = app.moat(&["keys", "rotate", "--json"], &[], None).await;
    assert!(out.success, "{}", out.stderr);
    assert_eq!(app.moat_json(&["keys", "list", "--json"]).await.as_array().unwrap().len(), 2);
}

#[tokio::test]
async fn serve_refuses_a_database_whose_key_file_is_lost() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("moat.db").display());
    let key_file = dir.path().join("moat.db.key");
    let moat = |args: &[&str]| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_moat"));
        cmd.arg("--database").arg(&db).args(args).env_remove("MOAT_MASTER_KEY").env_remove("MOAT_MASTER_KEY_FILE");
        cmd.output().unwrap()
    };
    // First use creates the key file and a signing key sealed with it.
    let out = moat(&["keys", "rotate"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(key_file.exists());
    std::fs::remove_file(&key_file).unwrap();
    // `serve` must refuse (not invent a key that cannot open the stored ones) and exit.
    let out = moat(&["serve", "--listen", "127.0.0.1:0"]);
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("master key file is missing"), "{err}");
    assert!(!key_file.exists(), "no key file was made up");
}
