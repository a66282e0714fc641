//! Spawning todo-mcp and a minimal streamable-HTTP MCP client.

use std::time::Duration;

use moat_guard::testing::{TestAuthority, TestKey};
use serde_json::{Value, json};
use todo_mcp::{Application, Config};

pub const PROTOCOL: &str = "2025-11-25";

pub struct Server {
    pub authority: TestAuthority,
    pub key: TestKey,
    pub url: String,
    pub base: String,
    pub stop: Option<tokio::sync::oneshot::Sender<()>>,
    _db: tempfile::TempDir,
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
    }
}

/// todo-mcp on 127.0.0.1:0 with a fresh database; keys discovered through the authority's
/// RFC 8414 metadata (no --jwks-url), as a real deployment would.
pub async fn spawn() -> Server {
    let authority = TestAuthority::start("res_todo").await.unwrap();
    let key = TestKey::es256("k1").unwrap();
    authority.publish(&key);
    spawn_with(authority, key).await
}

pub async fn spawn_with(authority: TestAuthority, key: TestKey) -> Server {
    let db = tempfile::tempdir().unwrap();
    let config = Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        server_url: None,
        issuer: authority.issuer(),
        jwks_url: None,
        database: format!("sqlite://{}", db.path().join("todo.db").display()),
        allowed_origins: Vec::new(),
        allowed_hosts: Vec::new(),
        allow_insecure_http: false,
    };
    let app = Application::build(config).await.unwrap();
    let url = app.server_url().to_owned();
    let base = format!("http://{}", app.local_addr());
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(async move {
        app.run_until_stopped(async move {
            let _ = rx.await;
        })
        .await
        .unwrap();
    });
    Server { authority, key, url, base, stop: Some(tx), _db: db }
}

impl Server {
    pub fn token(&self, sub: &str, scope: &str) -> String {
        self.authority.token(&self.key, &self.url).subject(sub).scope(scope).sign().unwrap()
    }

    pub fn client(&self, token: &str) -> Mcp {
        Mcp {
            http: reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap(),
            url: self.url.clone(),
            token: token.to_owned(),
            session: None,
            next_id: 1,
        }
    }

    pub fn prm_url(&self) -> String {
        format!("{}/.well-known/oauth-protected-resource/mcp", self.base)
    }
}

/// A bare-bones MCP client over streamable HTTP (MCP basic/transports).
pub struct Mcp {
    pub http: reqwest::Client,
    pub url: String,
    pub token: String,
    pub session: Option<String>,
    next_id: i64,
}

/// The JSON-RPC message of a POST response, whether sent as JSON or as an SSE stream.
pub async fn message(response: reqwest::Response) -> Value {
    let sse =
        response.headers().get("content-type").is_some_and(|v| v.to_str().unwrap().starts_with("text/event-stream"));
    let text = response.text().await.unwrap();
    if !sse {
        return serde_json::from_str(&text).unwrap_or_else(|_| panic!("not JSON: {text}"));
    }
    text.lines()
        .filter_map(|l| l.strip_prefix("data:"))
        .filter_map(|d| serde_json::from_str::<Value>(d.trim()).ok())
        .find(|m| m.get("result").is_some() || m.get("error").is_some())
        .unwrap_or_else(|| panic!("no JSON-RPC response in stream: {text}"))
}

impl Mcp {
    pub fn request(&self, body: &Value) -> reqwest::RequestBuilder {
        let mut r = self
            .http
            .post(&self.url)
            .bearer_auth(&self.token)
            .header("Accept", "application/json, text/event-stream")
            .json(body);
        if let Some(s) = &self.session {
            r = r.header("Mcp-Session-Id", s).header("MCP-Protocol-Version", PROTOCOL);
        }
        r
    }

    pub fn envelope(&mut self, method: &str, params: Value) -> Value {
        let id = self.next_id;
        self.next_id += 1;
        json!({"jsonrpc":"2.0","id":id,"method":method,"params":params})
    }

    pub async fn initialize(&mut self) -> Value {
        let body = self.envelope(
            "initialize",
            json!({"protocolVersion": PROTOCOL, "capabilities": {},
                   "clientInfo": {"name": "todo-mcp-test", "version": "1"}}),
        );
        let r = self.request(&body).send().await.unwrap();
        assert_eq!(r.status(), 200);
        self.session = r.headers().get("mcp-session-id").map(|v| v.to_str().unwrap().to_owned());
        let init = message(r).await;
        let note = json!({"jsonrpc":"2.0","method":"notifications/initialized"});
        let r = self.request(&note).send().await.unwrap();
        assert_eq!(r.status(), 202);
        init
    }

    /// Sends a request and returns the HTTP response (for status/header assertions).
    pub async fn send(&mut self, method: &str, params: Value) -> reqwest::Response {
        let body = self.envelope(method, params);
        self.request(&body).send().await.unwrap()
    }

    /// Sends a request that must succeed at the HTTP level; returns the JSON-RPC message.
    pub async fn rpc(&mut self, method: &str, params: Value) -> Value {
        let r = self.send(method, params).await;
        assert_eq!(r.status(), 200, "{method}");
        message(r).await
    }

    /// `tools/call`, returning the result.
    pub async fn call(&mut self, tool: &str, args: Value) -> Value {
        let m = self.rpc("tools/call", json!({"name": tool, "arguments": args})).await;
        m.get("result").cloned().unwrap_or_else(|| panic!("{tool}: {m}"))
    }
}
