//! The resource-server duties: 401 challenges and PRM, 403 step-up for add_todo, Origin
//! checks, query-string tokens, starting while Moat is down, and sessions bound to their user.

use std::time::Duration;

use moat_guard::testing::{TestAuthority, TestKey};
use serde_json::{Value, json};

use crate::support::{spawn, spawn_with};

fn www(r: &reqwest::Response) -> String {
    r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

#[tokio::test]
async fn unauthenticated_requests_get_401_pointing_at_the_metadata() {
    let s = spawn().await;
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{}});
    let r = http.post(&s.url).header("Accept", "application/json, text/event-stream").json(&init).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(www(&r), format!(r#"Bearer resource_metadata="{}", scope="todo:read""#, s.prm_url()));

    for url in [s.prm_url(), format!("{}/.well-known/oauth-protected-resource", s.base)] {
        let prm: Value = http.get(&url).send().await.unwrap().json().await.unwrap();
        assert_eq!(
            prm,
            json!({
                "resource": s.url,
                "authorization_servers": [s.authority.issuer()],
                "scopes_supported": ["todo:read"],
                "bearer_methods_supported": ["header"],
                "resource_name": "Todo MCP",
            })
        );
    }

    // A token in the query string is refused even alongside a valid header.
    let token = s.token("usr_alice", "todo:write");
    let r = http
        .post(format!("{}?access_token={token}", s.url))
        .bearer_auth(&token)
        .header("Accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(www(&r).contains(r#"error="invalid_request""#), "{}", www(&r));

    // A token minted for another MCP server.
    let other = s
        .authority
        .token(&s.key, "https://elsewhere.example/mcp")
        .claim("aud", json!(["https://elsewhere.example/mcp", "res_other"]))
        .sign()
        .unwrap();
    let r = http
        .post(&s.url)
        .bearer_auth(other)
        .header("Accept", "application/json, text/event-stream")
        .json(&init)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(www(&r).contains(r#"error="invalid_token""#));
}

#[tokio::test]
async fn add_todo_with_read_scope_gets_a_403_step_up_challenge() {
    let s = spawn().await;
    let mut c = s.client(&s.token("usr_alice", "todo:read"));
    c.initialize().await;
    assert_eq!(c.call("list_todos", json!({})).await["isError"], false);

    let r = c.send("tools/call", json!({"name": "add_todo", "arguments": {"title": "x"}})).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        www(&r),
        format!(
            r#"Bearer error="insufficient_scope", scope="todo:read todo:write", resource_metadata="{}", error_description="token lacks a scope this operation needs: todo:write""#,
            s.prm_url()
        )
    );
    for tool in ["complete_todo", "delete_todo"] {
        let r = c.send("tools/call", json!({"name": tool, "arguments": {"id": 1}})).await;
        assert_eq!(r.status(), 403, "{tool}");
    }

    // After step-up (a new token with both scopes), the same session works.
    c.token = s.token("usr_alice", "todo:read todo:write");
    let added = c.call("add_todo", json!({"title": "after step-up"})).await;
    assert_eq!(added["isError"], false);
}

#[tokio::test]
async fn foreign_origins_are_refused() {
    let s = spawn().await;
    let mut c = s.client(&s.token("usr_alice", "todo:write"));
    let init = c.envelope(
        "initialize",
        json!({"protocolVersion": crate::support::PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}),
    );
    for origin in ["https://evil.example", "http://127.0.0.1:1", "null"] {
        let r = c.request(&init).header("Origin", origin).send().await.unwrap();
        assert_eq!(r.status(), 403, "{origin}");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body["error"]["code"], -32000);
    }
    // The server's own origin is allowed, and CORS lets the page read the challenge header.
    let r = c.request(&init).header("Origin", &s.base).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["access-control-allow-origin"], s.base.as_str());
    let r = reqwest::Client::new().post(&s.url).header("Origin", &s.base).json(&init).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let exposed = r.headers()["access-control-expose-headers"].to_str().unwrap().to_ascii_lowercase();
    assert!(exposed.contains("www-authenticate"), "{exposed}");
}

#[tokio::test]
async fn starts_while_moat_is_down() {
    let mut authority = TestAuthority::start("res_todo").await.unwrap();
    let key = TestKey::eddsa("k-late").unwrap();
    authority.publish(&key);
    authority.shutdown().await;
    let s = spawn_with(authority, key).await;

    let mut c = s.client(&s.token("usr_alice", "todo:write"));
    let init = c.envelope("initialize", json!({"protocolVersion": crate::support::PROTOCOL, "capabilities": {}, "clientInfo": {"name": "t", "version": "1"}}));
    let r = c.request(&init).send().await.unwrap();
    assert_eq!(r.status(), 503, "no keys yet: not the client's fault");

    let mut s = s;
    s.authority.restart().await.unwrap();
    tokio::time::sleep(Duration::from_millis(1100)).await;
    c.initialize().await;
    assert_eq!(c.call("list_todos", json!({})).await["isError"], false);
}

#[tokio::test]
async fn another_users_token_cannot_use_or_end_a_session() {
    // MCP security best practices (Session Hijacking): moat-guard binds the session to the
    // (iss, sub) that created it; another user's valid token naming it gets rmcp's 404.
    let s = spawn().await;
    let mut alice = s.client(&s.token("usr_alice", "todo:write"));
    alice.initialize().await;
    let session = alice.session.clone().unwrap();
    assert_eq!(alice.call("add_todo", json!({"title": "alice's"})).await["isError"], false);

    let mut bob = s.client(&s.token("usr_bob", "todo:write"));
    bob.session = Some(session.clone());
    let r = bob.send("tools/call", json!({"name": "list_todos", "arguments": {}})).await;
    assert_eq!(r.status(), 404);
    let headers = |r: reqwest::RequestBuilder| {
        r.header("Mcp-Session-Id", &session).header("MCP-Protocol-Version", crate::support::PROTOCOL)
    };
    let get = headers(bob.http.get(&s.url).bearer_auth(&bob.token).header("Accept", "text/event-stream"));
    assert_eq!(get.send().await.unwrap().status(), 404);
    let delete = headers(bob.http.delete(&s.url).bearer_auth(&bob.token));
    assert_eq!(delete.send().await.unwrap().status(), 404);

    // Alice's session survived Bob's DELETE, and she can end it herself.
    let listed = alice.call("list_todos", json!({})).await;
    assert!(listed.to_string().contains("alice's"), "{listed}");
    let delete = headers(alice.http.delete(&s.url).bearer_auth(&alice.token));
    assert_eq!(delete.send().await.unwrap().status(), 202);
    let r = alice.send("tools/call", json!({"name": "list_todos", "arguments": {}})).await;
    assert_eq!(r.status(), 404, "the session is gone");
}
