//! rmcp's own OAuth client (feature `auth`) against todo-mcp protected by a real Moat, both
//! in-process: the 401 challenge, discovery, dynamic registration, login and consent through
//! Moat's real pages in headless Chromium (the shared e2e helper `tests/e2e/browser/authorize.mjs`),
//! the token, tools over the authorized streamable-HTTP transport, then step-up to `todo:write`.
//!
//! Needs what `tests/e2e/setup.sh` installs (Chromium, `tests/e2e/node_modules`); `scripts/test`
//! runs it first. Without them the test prints a visible SKIPPED message and passes.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use moat_core::ids::{ResourceId, UserId};
use moat_core::model::{Resource, ScopeDef, User};
use moat_server::config::{Config as MoatConfig, Overrides};
use rmcp::ServiceExt as _;
use rmcp::model::CallToolRequestParams;
use rmcp::transport::StreamableHttpClientTransport;
use rmcp::transport::auth::{AuthClient, AuthorizationCallback, AuthorizationRequest, OAuthState};
use rmcp::transport::streamable_http_client::StreamableHttpClientTransportConfig;
use serde_json::{Value, json};
use todo_mcp::{Application, Config};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpListener;

const EMAIL: &str = "alice@example.com";
const PASSWORD: &str = "rmcp oauth e2e passphrase";

fn repo_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../..")
}

/// The browser helper and the node to run it with, or why they are missing.
fn browser_helper() -> Result<(PathBuf, PathBuf), String> {
    let e2e = repo_dir().join("tests/e2e");
    let helper = e2e.join("browser/authorize.mjs");
    if !e2e.join("node_modules/playwright-core/package.json").exists() {
        return Err("tests/e2e/node_modules is missing (run tests/e2e/setup.sh)".into());
    }
    let chromium = std::env::var("MOAT_E2E_CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    if !Path::new(&chromium).exists() {
        return Err(format!("{chromium} is missing (run tests/e2e/setup.sh)"));
    }
    let node22 = e2e.join("node_modules/node/bin/node");
    let node = if node22.exists() { node22 } else { PathBuf::from("node") };
    Ok((node, helper))
}

/// Moat on 127.0.0.1:0 with a fresh SQLite database in `dir`.
async fn spawn_moat(dir: &Path) -> (String, moat_store::DynStore, tokio::sync::oneshot::Sender<()>) {
    let env: HashMap<String, String> = HashMap::from([("MOAT_RESOURCE_CACHE_SECONDS".into(), "0".into())]);
    let overrides = Overrides {
        listen: Some("127.0.0.1:0".parse().unwrap()),
        public_url: None,
        database_url: Some(format!("sqlite://{}", dir.join("moat.db").display())),
    };
    let config = MoatConfig::load_with(None, &|k| env.get(k).cloned(), &overrides).unwrap();
    let app = moat_server::Application::build(config).await.unwrap();
    let base = app.base_url().to_owned();
    let store = app.store();
    let (tx, rx) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    (base, store, tx)
}

/// The client's loopback redirect target: answers every connection (Chromium may open more than
/// one, e.g. a preconnect) and queues the URLs of requests to `/callback`.
struct Callbacks {
    redirect_uri: String,
    received: tokio::sync::Mutex<tokio::sync::mpsc::UnboundedReceiver<String>>,
}

impl Callbacks {
    async fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let port = listener.local_addr().unwrap().port();
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(async move {
            while let Ok((socket, _)) = listener.accept().await {
                let tx = tx.clone();
                tokio::spawn(async move {
                    if let Some(target) = answer(socket).await
                        && target.starts_with("/callback?")
                    {
                        let _ = tx.send(format!("http://127.0.0.1:{port}{target}"));
                    }
                });
            }
        });
        Self { redirect_uri: format!("http://127.0.0.1:{port}/callback"), received: tokio::sync::Mutex::new(rx) }
    }

    async fn next(&self) -> String {
        let mut rx = self.received.lock().await;
        tokio::time::timeout(Duration::from_secs(90), rx.recv())
            .await
            .expect("no redirect reached the callback within 90 s")
            .expect("callback server stopped")
    }
}

/// Reads one HTTP request head from `socket`, answers 200 (for `/callback`) or 404; returns the
/// request target.
async fn answer(mut socket: tokio::net::TcpStream) -> Option<String> {
    let mut buf = vec![0u8; 16 * 1024];
    let mut read = 0;
    while !buf[..read].windows(4).any(|w| w == b"\r\n\r\n") {
        if read == buf.len() {
            return None;
        }
        let n = socket.read(&mut buf[read..]).await.ok()?;
        if n == 0 {
            return None;
        }
        read += n;
    }
    let head = String::from_utf8_lossy(&buf[..read]);
    let target = head.split_whitespace().nth(1)?.to_owned();
    let (status, body) = if target.starts_with("/callback?") {
        ("200 OK", "Authorization received; you can close this page.")
    } else {
        ("404 Not Found", "not found")
    };
    let response = format!(
        "HTTP/1.1 {status}\r\nContent-Type: text/plain\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
    socket.write_all(response.as_bytes()).await.ok()?;
    Some(target)
}

/// Completes `auth_url` in headless Chromium (login + consent) and returns the redirect URL the
/// client's callback received.
async fn authorize_in_browser(auth_url: &str, callbacks: &Callbacks) -> String {
    let (node, helper) = browser_helper().unwrap();
    let output = tokio::process::Command::new(node)
        .arg(helper)
        .args(["--url", auth_url, "--email", EMAIL, "--password", PASSWORD, "--quiet"])
        .kill_on_drop(true)
        .output()
        .await
        .unwrap();
    assert!(
        output.status.success(),
        "browser helper failed: {}\n{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    let result: Value = serde_json::from_slice(output.stdout.trim_ascii()).unwrap();
    assert_eq!(result["pages"], json!(["login", "consent"]), "{result}");
    callbacks.next().await
}

fn claims(token: &str) -> Value {
    use base64::Engine as _;
    let payload = token.split('.').nth(1).unwrap();
    serde_json::from_slice(&base64::engine::general_purpose::URL_SAFE_NO_PAD.decode(payload).unwrap()).unwrap()
}

fn query(url: &str, key: &str) -> Option<String> {
    url::Url::parse(url).unwrap().query_pairs().find(|(k, _)| k == key).map(|(_, v)| v.into_owned())
}

#[tokio::test]
async fn rmcp_oauth_client_authorizes_through_moat_lists_and_calls_tools_and_steps_up() {
    if let Err(why) = browser_helper() {
        // Written past the test harness's output capture, so that the skip shows in `cargo test`.
        use std::io::Write as _;
        let _ = writeln!(std::io::stderr(), "SKIPPED rmcp_oauth_client_authorizes_through_moat…: {why}");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let (moat_base, store, _moat) = spawn_moat(dir.path()).await;

    // todo-mcp first (port 0), for the resource id we pick; then the resource with its real URL.
    let resource_id = ResourceId::generate();
    let issuer = format!("{moat_base}/resources/{resource_id}");
    let app = Application::build(Config {
        listen: "127.0.0.1:0".parse().unwrap(),
        server_url: None,
        issuer: issuer.clone(),
        jwks_url: None,
        database: format!("sqlite://{}", dir.path().join("todo.db").display()),
        allowed_origins: Vec::new(),
        allowed_hosts: Vec::new(),
        allow_insecure_http: false,
    })
    .await
    .unwrap();
    let mcp_url = app.server_url().to_owned();
    let (stop_todo, stopped) = tokio::sync::oneshot::channel::<()>();
    tokio::spawn(app.run_until_stopped(async move {
        let _ = stopped.await;
    }));
    let scope = |name: &str, description: &str| ScopeDef { name: name.into(), description: description.into() };
    store
        .create_resource(&Resource {
            id: resource_id.clone(),
            name: "Todo".into(),
            server_url: mcp_url.clone(),
            scopes: vec![scope("todo:read", "Read your todos"), scope("todo:write", "Change your todos")],
            default_scopes: vec!["todo:read".into()],
            dcr_enabled: true,
            cimd_enabled: false,
            cimd_allowed_hosts: vec![],
            access_token_ttl: 3600,
            refresh_token_ttl: 30 * 86400,
            refresh_idle_ttl: 14 * 86400,
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();
    store
        .create_user(&User {
            id: UserId::generate(),
            email: EMAIL.into(),
            name: Some("Alice".into()),
            password_hash: Some(moat_server::passwords::hash_password(PASSWORD.into()).await.unwrap()),
            disabled: false,
            created_at: 0,
            updated_at: 0,
        })
        .await
        .unwrap();

    // The server's 401 challenge is where rmcp's reactive discovery starts.
    let http = reqwest::Client::new();
    let init = json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",
        "capabilities":{},"clientInfo":{"name":"probe","version":"1"}}});
    let r =
        http.post(&mcp_url).header("Accept", "application/json, text/event-stream").json(&init).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let challenge = r.headers()["www-authenticate"].to_str().unwrap().to_owned();
    let base = mcp_url.trim_end_matches("/mcp");
    assert_eq!(
        challenge,
        format!(r#"Bearer resource_metadata="{base}/.well-known/oauth-protected-resource/mcp", scope="todo:read""#)
    );

    // rmcp: discovery from the challenge, DCR, authorization URL.
    let callbacks = Callbacks::start().await;
    let redirect_uri = callbacks.redirect_uri.clone();
    let mut oauth = OAuthState::new(mcp_url.as_str(), None).await.unwrap();
    oauth
        .start_authorization(
            AuthorizationRequest::new(redirect_uri.clone()).with_challenge(challenge).with_client_name("moat-e2e rmcp"),
        )
        .await
        .unwrap();
    let auth_url = oauth.get_authorization_url().await.unwrap();
    assert!(auth_url.starts_with(&format!("{issuer}/oauth/authorize?")), "{auth_url}");
    assert_eq!(query(&auth_url, "scope").as_deref(), Some("todo:read"), "{auth_url}");
    assert_eq!(query(&auth_url, "resource").as_deref(), Some(mcp_url.as_str()), "{auth_url}");
    assert_eq!(query(&auth_url, "code_challenge_method").as_deref(), Some("S256"));
    let client_id = query(&auth_url, "client_id").unwrap();
    assert!(client_id.starts_with("cli_"), "registered through DCR: {client_id}");

    let callback = authorize_in_browser(&auth_url, &callbacks).await;
    assert_eq!(query(&callback, "iss").as_deref(), Some(issuer.as_str()), "{callback}");
    oauth.handle_callback_url(&callback).await.unwrap();
    let manager = oauth.into_authorization_manager().expect("authorized after the callback");
    let token = manager.get_access_token().await.unwrap();
    let c = claims(&token);
    assert_eq!(c["iss"], issuer.as_str());
    assert_eq!(c["aud"], json!([mcp_url, resource_id.to_string()]));
    assert_eq!(c["scope"], "todo:read");
    assert_eq!(c["client_id"], client_id.as_str());

    // Tools over the authorized transport.
    let auth_client = AuthClient::new(reqwest::Client::default(), manager);
    let connect = |client: AuthClient<reqwest::Client>| {
        let url = mcp_url.clone();
        async move {
            let transport =
                StreamableHttpClientTransport::with_client(client, StreamableHttpClientTransportConfig::with_uri(url));
            ().serve(transport).await.unwrap()
        }
    };
    let service = connect(auth_client.clone()).await;
    let mut names: Vec<String> =
        service.list_all_tools().await.unwrap().into_iter().map(|t| t.name.into_owned()).collect();
    names.sort();
    assert_eq!(names, ["add_todo", "complete_todo", "delete_todo", "list_todos"]);
    let listed = service.call_tool(CallToolRequestParams::new("list_todos")).await.unwrap();
    assert_eq!(listed.is_error, Some(false));
    assert_eq!(listed.structured_content, Some(json!({"todos": []})));

    // add_todo needs todo:write: the server answers 403 insufficient_scope.
    let add = || {
        CallToolRequestParams::new("add_todo")
            .with_arguments(json!({"title": "from rmcp"}).as_object().cloned().unwrap_or_default())
    };
    let refused = service.call_tool(add()).await;
    let message = format!("{:?}", refused.expect_err("add_todo with todo:read must fail"));
    assert!(message.contains("insufficient_scope"), "{message}");
    let _ = service.cancel().await;

    // Step-up with rmcp's scope upgrade: the union of what it has and what the call needs.
    let upgrade_url = auth_client.auth_manager.lock().await.request_scope_upgrade("todo:write").await.unwrap();
    let mut requested: Vec<String> =
        query(&upgrade_url, "scope").unwrap().split_whitespace().map(str::to_owned).collect();
    requested.sort();
    assert_eq!(requested, ["todo:read", "todo:write"], "{upgrade_url}");
    let callback = authorize_in_browser(&upgrade_url, &callbacks).await;
    let cb = AuthorizationCallback::from_redirect_url(&callback).unwrap();
    auth_client
        .auth_manager
        .lock()
        .await
        .exchange_code_for_token_with_issuer(&cb.code, &cb.csrf_token, cb.issuer.as_deref())
        .await
        .unwrap();
    let token = auth_client.get_access_token().await.unwrap();
    assert_eq!(claims(&token)["scope"], "todo:read todo:write");

    let service = connect(auth_client.clone()).await;
    let added = service.call_tool(add()).await.unwrap();
    assert_eq!(added.is_error, Some(false), "{added:?}");
    let listed = service.call_tool(CallToolRequestParams::new("list_todos")).await.unwrap();
    assert_eq!(listed.structured_content.unwrap()["todos"][0]["title"], "from rmcp");
    let _ = service.cancel().await;
    let _ = stop_todo.send(());
}
