//! The axum layer over real HTTP: protected resource metadata, exact 401/403 challenges,
//! per-tool scopes from the JSON-RPC body, query-string tokens, claims in extensions.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::routing::post;
use http::HeaderMap;
use moat_guard::testing::TestKey;
use moat_guard::{AuthenticatedCaller, Guard, GuardConfig, ScopePolicy, Validator};
use serde_json::{Value, json};

use crate::support::{RES, config, env};

struct App {
    url: String,
    base: String,
    http: reqwest::Client,
    e: crate::support::Env,
    /// Requests that reached the protected handler.
    hits: Arc<AtomicU64>,
}

/// What the protected handler saw.
async fn echo(AuthenticatedCaller(claims): AuthenticatedCaller, headers: HeaderMap, body: Bytes) -> axum::Json<Value> {
    axum::Json(json!({
        "sub": claims.sub(),
        "body": String::from_utf8_lossy(&body),
        "authorization_forwarded": headers.contains_key("authorization"),
    }))
}

async fn spawn(max_body: usize) -> App {
    let e = env().await;
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let url = format!("http://{addr}/mcp");
    let mut vc = config(&e.authority);
    vc.audiences = vec![url.clone(), RES.to_owned()];
    let validator = Validator::new(vc).unwrap();
    let guard = Guard::new(
        validator,
        GuardConfig::new(url.clone())
            .with_policy(ScopePolicy::new().tool("list_todos", ["todo:read"]).tool("add_todo", ["todo:write"]))
            .with_scopes_supported(["todo:read", "todo:write", "offline_access"])
            .with_resource_name("Todo test")
            .with_max_body_bytes(max_body),
    )
    .unwrap();
    let hits = Arc::new(AtomicU64::new(0));
    let counted = {
        let hits = hits.clone();
        move |caller: AuthenticatedCaller, headers: HeaderMap, body: Bytes| {
            hits.fetch_add(1, Ordering::SeqCst);
            echo(caller, headers, body)
        }
    };
    let app = Router::new()
        .route("/mcp", post(counted.clone()).get(counted))
        .layer(guard.layer())
        .merge(guard.metadata_router());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    App {
        base: format!("http://{addr}"),
        url,
        http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap(),
        e,
        hits,
    }
}

fn call(tool: &str) -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":tool,"arguments":{}}})
}

fn www(r: &reqwest::Response) -> String {
    r.headers().get("www-authenticate").map(|v| v.to_str().unwrap().to_owned()).unwrap_or_default()
}

impl App {
    fn prm(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base)
    }

    fn token(&self, scope: &str) -> String {
        self.e.authority.token(&self.e.key, &self.url).subject("usr_alice").scope(scope).sign().unwrap()
    }

    async fn post(&self, token: Option<&str>, body: &Value) -> reqwest::Response {
        let mut r = self.http.post(&self.url).json(body);
        if let Some(t) = token {
            r = r.bearer_auth(t);
        }
        r.send().await.unwrap()
    }
}

#[tokio::test]
async fn serves_protected_resource_metadata() {
    let app = spawn(1 << 20).await;
    let expected = json!({
        "resource": app.url,
        "authorization_servers": [app.e.authority.issuer()],
        "scopes_supported": ["todo:read", "todo:write"],
        "bearer_methods_supported": ["header"],
        "resource_name": "Todo test",
    });
    for path in ["/.well-known/oauth-protected-resource/mcp", "/.well-known/oauth-protected-resource"] {
        let r = app.http.get(format!("{}{path}", app.base)).send().await.unwrap();
        assert_eq!(r.status(), 200, "{path}");
        assert_eq!(r.headers()["access-control-allow-origin"], "*");
        assert_eq!(r.headers()["content-type"], "application/json");
        let body: Value = r.json().await.unwrap();
        assert_eq!(body, expected, "{path}");
        let preflight = app
            .http
            .request(reqwest::Method::OPTIONS, format!("{}{path}", app.base))
            .header("Origin", "https://app.example")
            .header("Access-Control-Request-Method", "GET")
            .header("Access-Control-Request-Headers", "mcp-protocol-version")
            .send()
            .await
            .unwrap();
        assert_eq!(preflight.status(), 204);
        assert!(preflight.headers()["access-control-allow-headers"].to_str().unwrap().contains("MCP-Protocol-Version"));
    }
}

#[tokio::test]
async fn missing_and_invalid_tokens_get_exact_401_challenges() {
    let app = spawn(1 << 20).await;
    let r = app.post(None, &call("list_todos")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(www(&r), format!(r#"Bearer resource_metadata="{}", scope="todo:read todo:write""#, app.prm()));
    assert_eq!(r.headers()["access-control-expose-headers"], "WWW-Authenticate");
    assert_eq!(r.headers()["cache-control"], "no-store");

    let expired = app.e.authority.token(&app.e.key, &app.url).expires_in(-3600).sign().unwrap();
    let r = app.post(Some(&expired), &call("list_todos")).await;
    assert_eq!(r.status(), 401);
    assert_eq!(
        www(&r),
        format!(
            r#"Bearer resource_metadata="{}", scope="todo:read todo:write", error="invalid_token", error_description="token has expired""#,
            app.prm()
        )
    );

    // A token for another resource.
    let other = app
        .e
        .authority
        .token(&app.e.key, "https://other.example/mcp")
        .claim("aud", json!(["https://other.example/mcp", "res_other"]))
        .sign()
        .unwrap();
    let r = app.post(Some(&other), &call("list_todos")).await;
    assert_eq!(r.status(), 401);
    assert!(
        www(&r)
            .ends_with(r#"error="invalid_token", error_description="token audience does not include this resource""#),
        "{}",
        www(&r)
    );
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["error"], "invalid_token");

    // Not a bearer credential at all: treated as no token.
    let r = app.http.post(&app.url).basic_auth("user", Some("pw")).json(&call("list_todos")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert!(!www(&r).contains("error="));
}

#[tokio::test]
async fn query_string_token_is_rejected_and_never_used() {
    let app = spawn(1 << 20).await;
    let token = app.token("todo:read");
    // Query only.
    let r = app.http.post(format!("{}?access_token={token}", app.url)).json(&call("list_todos")).send().await.unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(
        www(&r),
        format!(
            r#"Bearer resource_metadata="{}", scope="todo:read todo:write", error="invalid_request", error_description="access tokens are accepted only in the Authorization header""#,
            app.prm()
        )
    );
    // Query and a valid header: still refused.
    let r = app
        .http
        .post(format!("{}?access_token={token}", app.url))
        .bearer_auth(&token)
        .json(&call("list_todos"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert!(www(&r).contains(r#"error="invalid_request""#));
}

#[tokio::test]
async fn per_tool_scopes_give_403_with_the_full_scope_set() {
    let app = spawn(1 << 20).await;
    let read = app.token("todo:read");

    let r = app.post(Some(&read), &call("add_todo")).await;
    assert_eq!(r.status(), 403);
    assert_eq!(
        www(&r),
        format!(
            r#"Bearer error="insufficient_scope", scope="todo:read todo:write", resource_metadata="{}", error_description="token lacks a scope this operation needs: todo:write""#,
            app.prm()
        )
    );
    assert_eq!(r.headers()["access-control-expose-headers"], "WWW-Authenticate");

    // Allowed call: the handler sees the claims and the exact body, and no token.
    let body = call("list_todos");
    let r = app.post(Some(&read), &body).await;
    assert_eq!(r.status(), 200);
    let seen: Value = r.json().await.unwrap();
    assert_eq!(seen["sub"], "usr_alice");
    assert_eq!(seen["body"], body.to_string());
    assert_eq!(seen["authorization_forwarded"], false);

    // Batch: the union of what the calls need.
    let batch = json!([call("list_todos"), call("add_todo")]);
    let r = app.post(Some(&read), &batch).await;
    assert_eq!(r.status(), 403);
    assert!(www(&r).contains(r#"scope="todo:read todo:write""#));

    // todo:write implies todo:read (validator hierarchy): both tools pass.
    let write = app.token("todo:write");
    assert_eq!(app.post(Some(&write), &call("add_todo")).await.status(), 200);
    assert_eq!(app.post(Some(&write), &batch).await.status(), 200);
    // Methods without a rule only need a valid token.
    let ping = json!({"jsonrpc":"2.0","id":2,"method":"ping"});
    assert_eq!(app.post(Some(&app.token("")), &ping).await.status(), 200);
    // A token with no scope at all asking for list_todos: the challenge names todo:read.
    let r = app.post(Some(&app.token("")), &call("list_todos")).await;
    assert_eq!(r.status(), 403);
    assert!(www(&r).contains(r#"scope="todo:read""#), "{}", www(&r));
}

#[tokio::test]
async fn body_limit_and_unavailable_keys() {
    let app = spawn(256).await;
    let token = app.token("todo:write");
    let big = json!({"jsonrpc":"2.0","id":1,"method":"tools/call",
        "params":{"name":"add_todo","arguments":{"title":"x".repeat(1000)}}});
    let r = app.post(Some(&token), &big).await;
    assert_eq!(r.status(), 413);

    // Keys never fetched and Moat answering 503: the guard says 503, not 401.
    app.e.authority.set_available(false);
    let fresh_key = TestKey::es256("k-other").unwrap();
    let other_app = spawn(1 << 20).await;
    other_app.e.authority.set_available(false);
    let t = other_app.e.authority.token(&fresh_key, &other_app.url).sign().unwrap();
    let r = other_app.post(Some(&t), &call("list_todos")).await;
    assert_eq!(r.status(), 503);
    assert!(r.headers().get("www-authenticate").is_none());
    assert_eq!(r.headers()["retry-after"], "5");
}

#[tokio::test]
async fn body_the_policy_cannot_read_fails_closed_with_400() {
    let app = spawn(1 << 20).await;
    // Read-only: before the fix, any of these bodies reached the handler with only the base
    // scopes checked, whatever tool the server would make of it.
    let read = app.token("todo:read");
    let bodies = [
        // Truncated JSON naming a tool the token may not call.
        r#"{"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add_todo""#,
        "not json",
        "",
        // A byte-order mark is not JSON (RFC 8259 section 8.1).
        "\u{feff}{\"jsonrpc\":\"2.0\",\"id\":1,\"method\":\"tools/call\",\"params\":{\"name\":\"add_todo\"}}",
        // JSON, but neither a JSON-RPC message nor a batch of them (JSON-RPC 2.0 sections 4, 6).
        r#""tools/call""#,
        "null",
        "42",
        "[]",
        "[1]",
        r#"[1, {"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"list_todos"}}]"#,
    ];
    for body in bodies {
        let r = app
            .http
            .post(&app.url)
            .bearer_auth(&read)
            .header("content-type", "application/json")
            .body(body)
            .send()
            .await
            .unwrap();
        assert_eq!(r.status(), 400, "{body:?}");
        assert!(r.headers().get("www-authenticate").is_none(), "{body:?}");
        assert_eq!(r.headers()["content-type"], "application/json");
        let json: Value = r.json().await.unwrap();
        assert_eq!(json["error"], "invalid_request", "{body:?}");
        assert!(json["error_description"].as_str().is_some_and(|d| !d.is_empty()), "{json}");
    }
    assert_eq!(app.hits.load(Ordering::SeqCst), 0, "a malformed body reached the MCP service");

    // Valid JSON-RPC, single and batch, behaves as before.
    assert_eq!(app.post(Some(&read), &call("list_todos")).await.status(), 200);
    assert_eq!(app.post(Some(&read), &json!([call("list_todos"), call("list_todos")])).await.status(), 200);
    assert_eq!(app.post(Some(&read), &call("add_todo")).await.status(), 403);
    // A client's JSON-RPC response (no method) needs only the base scopes.
    assert_eq!(app.post(Some(&read), &json!({"jsonrpc":"2.0","id":7,"result":{}})).await.status(), 200);
    // No body to read on GET (the SSE stream): base scopes only.
    let r = app.http.get(&app.url).bearer_auth(&read).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(app.hits.load(Ordering::SeqCst), 4);
}
