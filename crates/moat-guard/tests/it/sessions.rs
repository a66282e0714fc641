//! MCP session binding in the layer (MCP security best practices, Session Hijacking): a session
//! id handed out to one `(iss, sub, client_id)` is refused with `404` for any other before the inner
//! service runs; unknown ids pass through; bindings are bounded (cap, per-user cap, idle TTL)
//! and forgotten when the owner's `DELETE` succeeds.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::Router;
use axum::body::Bytes;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use http::{HeaderMap, Method, StatusCode};
use moat_guard::{AuthenticatedCaller, Guard, GuardConfig, Validator};
use serde_json::{Value, json};

use crate::support::{Env, RES, config, env};

/// A stand-in for the streamable HTTP transport's session handling: `initialize` creates a
/// session and returns its id in `Mcp-Session-Id`; a request naming a session it knows gets
/// 200 (202 for `DELETE`, which ends it), an unknown one 404.
#[derive(Default)]
struct Transport {
    sessions: Mutex<HashSet<String>>,
    next: AtomicU64,
    /// Every request that reached it: (method, sub, session id).
    seen: Mutex<Vec<(Method, String, Option<String>)>>,
}

impl Transport {
    fn handle(&self, method: Method, claims: &moat_guard::Claims, headers: &HeaderMap, body: &Bytes) -> Response {
        let session = headers.get("mcp-session-id").map(|v| v.to_str().unwrap().to_owned());
        self.seen.lock().unwrap().push((method.clone(), claims.sub().to_owned(), session.clone()));
        let is_initialize = serde_json::from_slice::<Value>(body).is_ok_and(|b| b["method"] == "initialize");
        if method == Method::POST && is_initialize && session.is_none() {
            // Random-looking but unique ids, as a real transport's would be.
            let id = format!("sess-{}-{}", self.next.fetch_add(1, Ordering::SeqCst), crate::support::random_kid());
            self.sessions.lock().unwrap().insert(id.clone());
            return (StatusCode::OK, [("mcp-session-id", id)], axum::Json(json!({"jsonrpc":"2.0","id":1,"result":{}})))
                .into_response();
        }
        let Some(session) = session else {
            return (StatusCode::BAD_REQUEST, "Bad Request: Session ID is required").into_response();
        };
        let mut sessions = self.sessions.lock().unwrap();
        if !sessions.contains(&session) {
            return (StatusCode::NOT_FOUND, "Not Found: Session not found").into_response();
        }
        if method == Method::DELETE {
            sessions.remove(&session);
            return StatusCode::ACCEPTED.into_response();
        }
        (StatusCode::OK, axum::Json(json!({"sub": claims.sub()}))).into_response()
    }

    fn hits(&self) -> usize {
        self.seen.lock().unwrap().len()
    }
}

struct App {
    url: String,
    http: reqwest::Client,
    e: Env,
    transport: Arc<Transport>,
}

async fn spawn(configure: impl FnOnce(GuardConfig) -> GuardConfig) -> App {
    spawn_trusting(env().await, &[], configure).await
}

/// The app on 127.0.0.1:0; its validator trusts `e`'s issuer plus `extra_issuers` (all with
/// `e`'s key set).
async fn spawn_trusting(e: Env, extra_issuers: &[String], configure: impl FnOnce(GuardConfig) -> GuardConfig) -> App {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/mcp", listener.local_addr().unwrap());
    let mut vc = config(&e.authority);
    vc.audiences = vec![url.clone(), RES.to_owned()];
    vc.issuers.extend(extra_issuers.iter().cloned());
    let guard = Guard::new(Validator::new(vc).unwrap(), configure(GuardConfig::new(url.clone()))).unwrap();
    let transport = Arc::new(Transport::default());
    let handler = {
        let transport = transport.clone();
        move |method: Method, AuthenticatedCaller(claims): AuthenticatedCaller, headers: HeaderMap, body: Bytes| {
            let transport = transport.clone();
            async move { transport.handle(method, &claims, &headers, &body) }
        }
    };
    let app =
        Router::new().route("/mcp", post(handler.clone()).get(handler.clone()).delete(handler)).layer(guard.layer());
    tokio::spawn(async move {
        axum::serve(listener, app).await.unwrap();
    });
    App { url, http: reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap(), e, transport }
}

fn initialize() -> Value {
    json!({"jsonrpc":"2.0","id":1,"method":"initialize","params":{"protocolVersion":"2025-11-25",
        "capabilities":{},"clientInfo":{"name":"t","version":"1"}}})
}

fn ping() -> Value {
    json!({"jsonrpc":"2.0","id":2,"method":"ping"})
}

impl App {
    /// A token for `sub` with no scopes at all (the layer's policy here needs none).
    fn token(&self, sub: &str) -> String {
        self.e.authority.token(&self.e.key, &self.url).subject(sub).sign().unwrap()
    }

    fn req(&self, method: Method, sub: &str, session: Option<&str>) -> reqwest::RequestBuilder {
        let mut r = self.http.request(method.clone(), &self.url).bearer_auth(self.token(sub));
        if method == Method::POST {
            r = r.json(&ping());
        }
        if let Some(s) = session {
            r = r.header("Mcp-Session-Id", s);
        }
        r
    }

    async fn status(&self, method: Method, sub: &str, session: Option<&str>) -> StatusCode {
        self.req(method, sub, session).send().await.unwrap().status()
    }

    /// `sub` creates a session; returns its id.
    async fn create_session(&self, sub: &str) -> String {
        let r = self.http.post(&self.url).bearer_auth(self.token(sub)).json(&initialize()).send().await.unwrap();
        assert_eq!(r.status(), 200);
        r.headers()["mcp-session-id"].to_str().unwrap().to_owned()
    }
}

#[tokio::test]
async fn another_users_token_cannot_use_attach_to_or_end_a_session() {
    let app = spawn(|c| c).await;
    let alice = app.create_session("usr_alice").await;
    let before = app.transport.hits();

    for method in [Method::POST, Method::GET, Method::DELETE] {
        let r = app.req(method.clone(), "usr_bob", Some(&alice)).send().await.unwrap();
        assert_eq!(r.status(), 404, "{method}");
        // The body rmcp's transport sends for an unknown session, and no challenge: nothing
        // tells Bob the session exists.
        assert!(r.headers().get("www-authenticate").is_none());
        assert!(r.headers().get("content-type").is_none());
        assert_eq!(r.text().await.unwrap(), "Not Found: Session not found", "{method}");
    }
    // A second header cannot smuggle Alice's session past Bob's own.
    let bob = app.create_session("usr_bob").await;
    let r = app.req(Method::POST, "usr_bob", Some(&bob)).header("Mcp-Session-Id", &alice).send().await.unwrap();
    assert_eq!(r.status(), 404);
    // None of Bob's requests with Alice's session reached the inner service (only his own
    // initialize did).
    let seen = app.transport.seen.lock().unwrap().clone();
    assert_eq!(seen.len(), before + 1);
    assert!(seen.iter().all(|(_, sub, session)| sub == "usr_alice" || session.is_none()), "{seen:?}");

    // Same issuer, same sub, another token (e.g. a refresh or a step-up): still Alice.
    assert_eq!(app.status(Method::POST, "usr_alice", Some(&alice)).await, 200);
    assert_eq!(app.status(Method::GET, "usr_alice", Some(&alice)).await, 200);
    assert_eq!(app.status(Method::POST, "usr_bob", Some(&bob)).await, 200);
    // Alice ends her session; Bob could not.
    assert_eq!(app.status(Method::DELETE, "usr_alice", Some(&alice)).await, 202);
    assert_eq!(app.status(Method::POST, "usr_alice", Some(&alice)).await, 404);
}

#[tokio::test]
async fn another_client_of_the_same_user_cannot_use_or_end_the_session() {
    let app = spawn(|c| c).await;
    let alice = app.create_session("usr_alice").await;
    // The same user through another app (another `client_id`): not the owner.
    let other_app = app
        .e
        .authority
        .token(&app.e.key, &app.url)
        .subject("usr_alice")
        .claim("client_id", json!("client_other"))
        .sign()
        .unwrap();
    for method in [Method::POST, Method::DELETE] {
        let mut r = app.http.request(method.clone(), &app.url).bearer_auth(&other_app).header("Mcp-Session-Id", &alice);
        if method == Method::POST {
            r = r.json(&ping());
        }
        assert_eq!(r.send().await.unwrap().status(), 404, "{method}");
    }
    // The app that made it still can.
    assert_eq!(app.status(Method::POST, "usr_alice", Some(&alice)).await, 200);
}

#[tokio::test]
async fn the_same_sub_from_another_trusted_issuer_is_another_user() {
    // Two issuers the validator trusts (sharing one key set): the owner is the (iss, sub) pair.
    let e = env().await;
    let other = moat_guard::testing::TestAuthority::start("res_other").await.unwrap();
    let app = spawn_trusting(e, &[other.issuer()], |c| c).await;
    let alice = app.create_session("usr_alice").await;
    let impostor = other.token(&app.e.key, &app.url).subject("usr_alice").sign().unwrap();
    let r = app.http.post(&app.url).bearer_auth(&impostor).json(&ping()).send().await.unwrap();
    assert_eq!(r.status(), 400, "the token itself is accepted (the stand-in wants a session id)");
    let before = app.transport.hits();
    let r = app.http.post(&app.url).bearer_auth(&impostor).header("Mcp-Session-Id", &alice).json(&ping()).send();
    assert_eq!(r.await.unwrap().status(), 404);
    assert_eq!(app.transport.hits(), before);
    assert_eq!(app.status(Method::POST, "usr_alice", Some(&alice)).await, 200);
}

#[tokio::test]
async fn unknown_session_ids_pass_through_to_the_server() {
    let app = spawn(|c| c).await;
    let before = app.transport.hits();
    assert_eq!(app.status(Method::POST, "usr_bob", Some("sess-never-issued")).await, 404);
    assert_eq!(app.status(Method::DELETE, "usr_bob", Some("sess-never-issued")).await, 404);
    // The inner service answered both (its own 404), not the guard.
    assert_eq!(app.transport.hits(), before + 2);
}

#[tokio::test]
async fn a_successful_delete_by_the_owner_forgets_the_binding() {
    let app = spawn(|c| c).await;
    let alice = app.create_session("usr_alice").await;
    assert_eq!(app.status(Method::DELETE, "usr_alice", Some(&alice)).await, 202);
    // Forgotten: Bob's request now reaches the server, which no longer knows the session.
    let before = app.transport.hits();
    assert_eq!(app.status(Method::DELETE, "usr_bob", Some(&alice)).await, 404);
    assert_eq!(app.transport.hits(), before + 1);
}

#[tokio::test]
async fn the_least_recently_used_binding_is_evicted_at_the_cap() {
    let app = spawn(|c| c.with_session_limits(2, 1_000, Duration::from_secs(24 * 3600))).await;
    let s1 = app.create_session("usr_1").await;
    let s2 = app.create_session("usr_2").await;
    // s1 used after s2 was created: s2 is now the least recently used.
    assert_eq!(app.status(Method::POST, "usr_1", Some(&s1)).await, 200);
    let s3 = app.create_session("usr_3").await;

    // s2's binding is gone: Bob's request reaches the server (which still knows the session).
    let before = app.transport.hits();
    assert_eq!(app.status(Method::POST, "usr_bob", Some(&s2)).await, 200);
    assert_eq!(app.transport.hits(), before + 1);
    // s1 and s3 are still bound.
    assert_eq!(app.status(Method::POST, "usr_bob", Some(&s1)).await, 404);
    assert_eq!(app.status(Method::POST, "usr_bob", Some(&s3)).await, 404);
    assert_eq!(app.transport.hits(), before + 1);
}

#[tokio::test]
async fn one_user_opening_many_sessions_cannot_evict_another_users_binding() {
    let app = spawn(|c| c.with_session_limits(4, 2, Duration::from_secs(24 * 3600))).await;
    let alice = app.create_session("usr_alice").await;
    let mut mallory = Vec::new();
    for _ in 0..6 {
        mallory.push(app.create_session("usr_mallory").await);
    }
    assert_eq!(app.status(Method::DELETE, "usr_mallory", Some(&alice)).await, 404);
    assert_eq!(app.status(Method::POST, "usr_alice", Some(&alice)).await, 200);
    // Mallory's own oldest bindings made room: the newest are still bound.
    assert_eq!(app.status(Method::POST, "usr_bob", Some(&mallory[5])).await, 404);
    assert_eq!(app.status(Method::POST, "usr_bob", Some(&mallory[0])).await, 200);
}

#[tokio::test]
async fn idle_bindings_are_forgotten_after_the_ttl() {
    let app = spawn(|c| c.with_session_limits(100, 100, Duration::from_millis(300))).await;
    let alice = app.create_session("usr_alice").await;
    assert_eq!(app.status(Method::POST, "usr_bob", Some(&alice)).await, 404);
    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(app.status(Method::POST, "usr_bob", Some(&alice)).await, 200);
}

#[tokio::test]
async fn binding_can_be_turned_off() {
    let app = spawn(|c| c.with_session_binding(false)).await;
    let alice = app.create_session("usr_alice").await;
    assert_eq!(app.status(Method::DELETE, "usr_bob", Some(&alice)).await, 202);
}
