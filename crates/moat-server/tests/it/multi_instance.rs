//! Several Moat instances serving one deployment (DESIGN.md §7): two real `moat serve` processes
//! on one PostgreSQL schema, sharing one `MOAT_MASTER_KEY` and one public URL, with real
//! concurrent requests split across them.
//!
//! The public URL is a small round-robin HTTP reverse proxy run by the test, as a load balancer
//! would be: every URL Moat emits (redirects to the login and consent pages, issuers) points at
//! it, so a browser walking an authorization alternates between the instances on every request
//! (the page comes from one, the form is posted to the other), which a public URL naming one
//! instance would never exercise. Where a test needs a request to reach a given instance (the
//! races), it calls that instance's own address.
//!
//! The instances listen on port 0 and report their address in their JSON "moat is ready" log
//! line, so no port is guessed (and raced for) on a busy CI machine. The first instance is ready
//! before the second starts, as in a rolling deployment: an empty database gets its first
//! signing key from whichever instance starts first.
//!
//! PostgreSQL: `MOAT_TEST_POSTGRES_URL` if set (then it must be reachable), else
//! `postgres://postgres@127.0.0.1:5432/test` when a server answers there, else every test says
//! why it skips and passes. Each test works in a fresh schema `moat_mi_<unix time>_<random>`,
//! selected by the URL's `options=-c search_path=…`; it drops it at the end, and schemas left
//! over by an interrupted run are swept after 15 minutes.

use std::io::Write as _;
use std::net::SocketAddr;
use std::process::Stdio;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use axum::body::Body;
use axum::extract::{Request, State};
use axum::http::header;
use axum::response::Response;
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::Value;
use sqlx::{Connection as _, PgConnection};
use tokio::io::{AsyncBufReadExt as _, AsyncWriteExt as _, BufReader};
use tokio::process::{Child, Command};
use tokio::sync::{Barrier, OnceCell, oneshot};

use crate::helpers::{Browser, CliOutput, PASSWORD, Pkce, authorize_url, jwt_parts, query_of};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const ENV_URL: &str = "MOAT_TEST_POSTGRES_URL";
const SCHEMA_PREFIX: &str = "moat_mi_";
/// Schemas older than this are left over from an interrupted run.
const STALE_AFTER_SECS: u64 = 900;
const CB: &str = "https://app.example.com/cb";
const EMAIL: &str = "ada@example.com";

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// Says why a test skips, past the test harness's output capture (a skip must be visible).
fn skip(why: &str) {
    writeln!(std::io::stderr(), "skipping multi-instance PostgreSQL test: {why}").ok();
}

// ---- PostgreSQL --------------------------------------------------------------------------------

/// The server URL, probed once per test binary; `Err` says why there is none.
async fn server() -> Result<&'static str, &'static str> {
    static SERVER: OnceCell<Result<String, String>> = OnceCell::const_new();
    SERVER.get_or_init(probe).await.as_deref().map_err(String::as_str)
}

async fn probe() -> Result<String, String> {
    let explicit = std::env::var(ENV_URL).ok().filter(|u| !u.is_empty());
    let url = explicit.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
    let mut conn = match tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) if explicit.is_none() => return Err(format!("no server at {url} ({e}); {ENV_URL} is not set")),
        Err(_) if explicit.is_none() => return Err(format!("no answer from {url} within 5 s; {ENV_URL} is not set")),
        Ok(Err(e)) => panic!("{ENV_URL} is set but {url} is unreachable: {e}"),
        Err(_) => panic!("{ENV_URL} is set but {url} did not answer within 5 s"),
    };
    let names: Vec<String> = sqlx::query_scalar("SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE $1")
        .bind(format!("{SCHEMA_PREFIX}%"))
        .fetch_all(&mut conn)
        .await
        .unwrap();
    let cutoff = unix_now().saturating_sub(STALE_AFTER_SECS);
    for name in names {
        let created = name.strip_prefix(SCHEMA_PREFIX).and_then(|rest| rest.split('_').next()?.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{name}\" CASCADE")).execute(&mut conn).await.ok();
        }
    }
    conn.close().await.ok();
    Ok(url)
}

/// A fresh, empty schema on the test server.
struct Schema {
    server: String,
    name: String,
    /// The database URL Moat gets: the server URL selecting this schema.
    url: String,
}

impl Schema {
    /// A new schema, or `None` (after saying why) when there is no server.
    async fn create() -> Option<Self> {
        let server = match server().await {
            Ok(url) => url.to_owned(),
            Err(why) => {
                skip(why);
                return None;
            }
        };
        let name = format!("{SCHEMA_PREFIX}{}_{}", unix_now(), moat_core::ids::random_id(""));
        let mut conn = PgConnection::connect(&server).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA \"{name}\"")).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
        // libpq's `options` (percent-encoded `-c search_path=<schema>`), which PgStore honours.
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-c%20search_path%3D{name}");
        Some(Self { server, name, url })
    }

    async fn conn(&self) -> PgConnection {
        PgConnection::connect(&self.server).await.unwrap()
    }

    /// Tables in this schema (proves where migrations went).
    async fn tables(&self) -> Vec<String> {
        let mut conn = self.conn().await;
        let names = sqlx::query_scalar(
            "SELECT table_name::TEXT FROM information_schema.tables WHERE table_schema = $1 ORDER BY 1",
        )
        .bind(&self.name)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        conn.close().await.ok();
        names
    }

    /// One `i64` from a query against this schema's tables (`{s}` is replaced by the schema).
    async fn scalar(&self, sql: &str, bind: &str) -> i64 {
        let mut conn = self.conn().await;
        let sql = sql.replace("{s}", &format!("\"{}\"", self.name));
        let v: i64 = sqlx::query_scalar(&sql).bind(bind).fetch_one(&mut conn).await.unwrap();
        conn.close().await.ok();
        v
    }

    async fn families_of_client(&self, client_id: &str) -> i64 {
        self.scalar("SELECT count(*) FROM {s}.refresh_families WHERE client_id = $1", client_id).await
    }

    async fn live_families_of_client(&self, client_id: &str) -> i64 {
        self.scalar("SELECT count(*) FROM {s}.refresh_families WHERE client_id = $1 AND revoked_at IS NULL", client_id)
            .await
    }

    async fn tokens_of_client(&self, client_id: &str) -> i64 {
        self.scalar(
            "SELECT count(*) FROM {s}.refresh_tokens t JOIN {s}.refresh_families f ON f.id = t.family_id \
             WHERE f.client_id = $1",
            client_id,
        )
        .await
    }

    async fn drop(self) {
        let mut conn = self.conn().await;
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name)).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
    }
}

// ---- the load balancer ---------------------------------------------------------------------------

/// One request the proxy forwarded.
#[derive(Debug, Clone)]
struct Hop {
    method: String,
    path: String,
    backend: usize,
}

struct ProxyState {
    backends: RwLock<Vec<String>>,
    next: AtomicUsize,
    log: Mutex<Vec<Hop>>,
    http: reqwest::Client,
}

/// A round-robin HTTP reverse proxy: request `n` goes to backend `n mod N`, whatever the
/// connection it came on. Headers and bodies pass through untouched (cookies, `Location`,
/// `Sec-Fetch-Site`), except hop-by-hop headers.
struct Proxy {
    url: String,
    state: Arc<ProxyState>,
    task: tokio::task::JoinHandle<()>,
}

const HOP_BY_HOP: [&str; 8] =
    ["connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"];

impl Proxy {
    async fn start() -> Self {
        let state = Arc::new(ProxyState {
            backends: RwLock::new(Vec::new()),
            next: AtomicUsize::new(0),
            log: Mutex::new(Vec::new()),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        });
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("http://{}", listener.local_addr().unwrap());
        let app = axum::Router::new().fallback(forward).with_state(Arc::clone(&state));
        let task = tokio::spawn(async move {
            axum::serve(listener, app).await.unwrap();
        });
        Self { url, state, task }
    }

    fn set_backends(&self, backends: Vec<String>) {
        *self.state.backends.write().unwrap() = backends;
    }

    /// Hops logged from index `from` on.
    fn hops_since(&self, from: usize) -> Vec<Hop> {
        self.state.log.lock().unwrap()[from..].to_vec()
    }

    fn hop_count(&self) -> usize {
        self.state.log.lock().unwrap().len()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

async fn forward(State(p): State<Arc<ProxyState>>, req: Request) -> Response {
    let backends = p.backends.read().unwrap().clone();
    assert!(!backends.is_empty(), "the proxy has no backends yet");
    let backend = p.next.fetch_add(1, Ordering::SeqCst) % backends.len();
    let (parts, body) = req.into_parts();
    let body = axum::body::to_bytes(body, 1 << 20).await.unwrap();
    let path_and_query = parts.uri.path_and_query().map_or("/", |pq| pq.as_str());
    let mut out = p.http.request(parts.method.clone(), format!("{}{path_and_query}", backends[backend]));
    for (name, value) in &parts.headers {
        if name != header::HOST && !HOP_BY_HOP.contains(&name.as_str()) {
            out = out.header(name, value);
        }
    }
    let resp = out.body(body).send().await.unwrap();
    p.log.lock().unwrap().push(Hop { method: parts.method.to_string(), path: parts.uri.path().to_owned(), backend });
    let mut builder = Response::builder().status(resp.status());
    for (name, value) in resp.headers() {
        if !HOP_BY_HOP.contains(&name.as_str()) {
            builder = builder.header(name, value);
        }
    }
    builder.body(Body::from(resp.bytes().await.unwrap())).unwrap()
}

/// Asserts that the hops of one authorization walked through the proxy really alternated:
/// every form was posted to a different instance than the one that served the page it came
/// from, and both instances served part of the flow.
fn assert_alternated(hops: &[Hop]) {
    let posts: Vec<usize> = (0..hops.len()).filter(|&i| hops[i].method == "POST").collect();
    assert!(!posts.is_empty(), "no form was posted: {hops:?}");
    for i in posts {
        assert!(i > 0, "a POST without the page it came from: {hops:?}");
        assert_ne!(hops[i].backend, hops[i - 1].backend, "page and form post on one instance: {hops:?}");
    }
    assert!(hops.iter().any(|h| h.backend == 0) && hops.iter().any(|h| h.backend == 1), "{hops:?}");
    for path in ["/login", "/consent"] {
        assert!(hops.iter().any(|h| h.path == path && h.method == "POST"), "no POST {path} in {hops:?}");
    }
}

// ---- moat processes -------------------------------------------------------------------------------

/// A `moat` command with a clean environment: no inherited `MOAT_*` setting or config file.
fn moat_command(dir: &std::path::Path) -> Command {
    let mut cmd = Command::new(env!("CARGO_BIN_EXE_moat"));
    for (k, _) in std::env::vars() {
        if k.starts_with("MOAT_") || k == "RUST_LOG" {
            cmd.env_remove(k);
        }
    }
    cmd.current_dir(dir).kill_on_drop(true);
    cmd
}

/// A running `moat serve` process.
struct Instance {
    /// `http://{its own listening address}`.
    base: String,
    child: Child,
    /// Its log lines, kept for failure messages.
    log: Arc<Mutex<Vec<String>>>,
}

impl Instance {
    /// Starts `cmd` (a `moat serve` with `--listen 127.0.0.1:0`) and waits until it logs that it
    /// is ready, returning its address; `Err` with its exit status and log when it exits instead.
    async fn start(mut cmd: Command) -> Result<Self, String> {
        cmd.env("MOAT_LOG_FORMAT", "json").env("MOAT_LOG", "info,sqlx=warn");
        cmd.stdin(Stdio::null()).stdout(Stdio::null()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let stderr = child.stderr.take().unwrap();
        let log = Arc::new(Mutex::new(Vec::new()));
        let (ready_tx, ready_rx) = oneshot::channel::<SocketAddr>();
        let lines = Arc::clone(&log);
        // Keeps draining stderr for the whole life of the process (a full pipe would block it).
        let reader = tokio::spawn(async move {
            let mut ready_tx = Some(ready_tx);
            let mut reader = BufReader::new(stderr).lines();
            while let Ok(Some(line)) = reader.next_line().await {
                if let Ok(v) = serde_json::from_str::<Value>(&line)
                    && v["fields"]["message"] == "moat is ready"
                    && let Some(addr) = v["fields"]["address"].as_str().and_then(|a| a.parse().ok())
                    && let Some(tx) = ready_tx.take()
                {
                    tx.send(addr).ok();
                }
                lines.lock().unwrap().push(line);
            }
        });
        // The reader drops the sender without sending when stderr closes, i.e. the process is
        // exiting without having become ready.
        let ready = tokio::time::timeout(Duration::from_secs(60), ready_rx).await;
        match ready {
            Ok(Ok(addr)) => Ok(Self { base: format!("http://{addr}"), child, log }),
            Ok(Err(_)) => {
                let status = tokio::time::timeout(Duration::from_secs(10), child.wait()).await.unwrap().unwrap();
                let _ = tokio::time::timeout(Duration::from_secs(5), reader).await;
                Err(format!("moat serve exited ({status}):\n{}", log.lock().unwrap().join("\n")))
            }
            Err(_) => panic!("moat serve did not become ready:\n{}", log.lock().unwrap().join("\n")),
        }
    }

    async fn stop(mut self) {
        self.child.start_kill().ok();
        self.child.wait().await.ok();
    }
}

impl Drop for Instance {
    /// A failing test shows what the instance logged (the process is killed on drop).
    fn drop(&mut self) {
        if std::thread::panicking() {
            let log = self.log.lock().map(|l| l.join("\n")).unwrap_or_default();
            writeln!(std::io::stderr(), "--- log of the moat serve at {} ---\n{log}", self.base).ok();
        }
    }
}

/// Two (or more) `moat serve` on one schema behind one round-robin proxy, the public URL.
struct Cluster {
    schema: Schema,
    master_key: String,
    proxy: Proxy,
    instances: Vec<Instance>,
    /// Settings every instance and every management command gets (as a shared `moat.toml`
    /// would give them: `moat keys rotate` applies the publish delay it is configured with).
    env: Vec<(String, String)>,
    dir: tempfile::TempDir,
    http: reqwest::Client,
}

impl Cluster {
    /// A fresh schema and `n` instances with the extra settings `env`; `None` when there is no
    /// PostgreSQL to test against.
    async fn start(n: usize, env: &[(&str, &str)]) -> Option<Self> {
        let schema = Schema::create().await?;
        Some(Self::start_in(schema, n, env).await)
    }

    async fn start_in(schema: Schema, n: usize, env: &[(&str, &str)]) -> Self {
        let proxy = Proxy::start().await;
        let mut cluster = Self {
            schema,
            master_key: moat_server::crypto::MasterKey::generate().to_base64(),
            proxy,
            instances: Vec::new(),
            env: env.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect(),
            dir: tempfile::tempdir().unwrap(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
        };
        for _ in 0..n {
            let instance = Instance::start(cluster.serve_command(Some(&cluster.master_key))).await.unwrap();
            cluster.instances.push(instance);
        }
        cluster.proxy.set_backends(cluster.instances.iter().map(|i| i.base.clone()).collect());
        cluster
    }

    /// `moat serve` for this cluster's database and public URL.
    fn serve_command(&self, master_key: Option<&str>) -> Command {
        let mut cmd = moat_command(self.dir.path());
        cmd.args(["--database", &self.schema.url, "--public-url", &self.proxy.url, "serve", "--listen", "127.0.0.1:0"]);
        if let Some(key) = master_key {
            cmd.env("MOAT_MASTER_KEY", key);
        }
        cmd.envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd
    }

    /// Runs a management command on the cluster's database with its master key.
    async fn moat(&self, args: &[&str], stdin: Option<&str>) -> CliOutput {
        let mut cmd = moat_command(self.dir.path());
        cmd.args(["--database", &self.schema.url, "--public-url", &self.proxy.url]).args(args);
        cmd.env("MOAT_MASTER_KEY", &self.master_key).envs(self.env.iter().map(|(k, v)| (k, v)));
        cmd.stdin(Stdio::piped()).stdout(Stdio::piped()).stderr(Stdio::piped());
        let mut child = cmd.spawn().unwrap();
        let mut pipe = child.stdin.take().unwrap();
        if let Some(input) = stdin {
            pipe.write_all(input.as_bytes()).await.unwrap();
        }
        drop(pipe);
        let out = child.wait_with_output().await.unwrap();
        CliOutput {
            success: out.status.success(),
            stdout: String::from_utf8(out.stdout).unwrap(),
            stderr: String::from_utf8(out.stderr).unwrap(),
        }
    }

    async fn moat_json(&self, args: &[&str]) -> Value {
        let out = self.moat(args, None).await;
        assert!(out.success, "moat {args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("moat {args:?}: {e}: {}", out.stdout))
    }

    /// A resource (`todo:read`, `todo:write`), a user and a public client with the refresh
    /// grant, all created through the CLI.
    async fn setup(&self) -> Setup {
        let server_url = format!("https://mcp-{}.example.com/mcp", moat_core::ids::random_id(""));
        let res = self
            .moat_json(&[
                "resource",
                "create",
                "--name",
                "Todo",
                "--server-url",
                &server_url,
                "--scope",
                "todo:read=Read your todos",
                "--scope",
                "todo:write=Change your todos",
                "--json",
            ])
            .await;
        let out =
            self.moat(&["user", "create", "--email", EMAIL, "--name", "Ada", "--password-stdin"], Some(PASSWORD)).await;
        assert!(out.success, "user create: {}", out.stderr);
        let resource = res["id"].as_str().unwrap().to_owned();
        let client = self
            .moat_json(&[
                "client",
                "create",
                "--resource",
                &resource,
                "--name",
                "Desktop app",
                "--public",
                "--redirect-uri",
                CB,
                "--json",
            ])
            .await;
        Setup {
            issuer: res["issuer"].as_str().unwrap().to_owned(),
            resource,
            client_id: client["client_id"].as_str().unwrap().to_owned(),
        }
    }

    /// A cookie-keeping browser whose Moat is the public URL (the proxy).
    fn browser(&self) -> Browser {
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .cookie_store(true)
                .timeout(Duration::from_secs(30))
                .build()
                .unwrap(),
            base: self.proxy.url.clone(),
        }
    }

    /// Walks an authorization through the proxy (login, consent) and returns the code and its
    /// PKCE pair, asserting that the walk alternated between the instances.
    async fn code(&self, s: &Setup) -> (String, Pkce) {
        let pkce = Pkce::new();
        let url = authorize_url(&s.issuer, &s.client_id, CB, &pkce, &[("scope", "todo:read todo:write")]);
        let from = self.proxy.hop_count();
        let loc = self.browser().authorize(&url, EMAIL, "approve").await;
        assert_alternated(&self.proxy.hops_since(from));
        let q = query_of(&loc);
        assert_eq!(q.get("iss"), Some(&s.issuer), "{loc}");
        (q.get("code").unwrap_or_else(|| panic!("no code in {loc}")).clone(), pkce)
    }

    /// `POST {instance}/resources/{res}/oauth/token`, on the instance itself (not the proxy).
    async fn token_at(
        &self,
        instance: usize,
        s: &Setup,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> (u16, Value) {
        let url = format!("{}/resources/{}/oauth/token", self.instances[instance].base, s.resource);
        let mut req = self.http.post(url).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        let resp = req.send().await.unwrap();
        let status = resp.status().as_u16();
        let text = resp.text().await.unwrap();
        (status, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    async fn redeem_at(&self, instance: usize, s: &Setup, code: &str, pkce: &Pkce) -> (u16, Value) {
        let form = [
            ("grant_type", "authorization_code"),
            ("code", code),
            ("redirect_uri", CB),
            ("code_verifier", &pkce.verifier),
            ("client_id", &s.client_id),
        ];
        self.token_at(instance, s, &form, None).await
    }

    async fn refresh_at(&self, instance: usize, s: &Setup, rt: &str) -> (u16, Value) {
        let form = [("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", &s.client_id)];
        self.token_at(instance, s, &form, None).await
    }

    /// An authorization request sent to the instance itself: status and `Location`.
    async fn authorize_at(&self, instance: usize, s: &Setup) -> (u16, String) {
        let url = authorize_url(&s.issuer, &s.client_id, CB, &Pkce::new(), &[]);
        let direct = url.replace(&self.proxy.url, &self.instances[instance].base);
        let resp = self.http.get(direct).send().await.unwrap();
        let location = resp.headers().get(header::LOCATION).map(|l| l.to_str().unwrap().to_owned());
        (resp.status().as_u16(), location.unwrap_or_default())
    }

    /// `GET {instance}{path}`: status, headers and JSON body.
    async fn get_at(&self, instance: usize, path: &str) -> (u16, reqwest::header::HeaderMap, Value) {
        let resp = self.http.get(format!("{}{path}", self.instances[instance].base)).send().await.unwrap();
        let status = resp.status().as_u16();
        let headers = resp.headers().clone();
        let text = resp.text().await.unwrap();
        (status, headers, serde_json::from_str(&text).unwrap_or(Value::String(text)))
    }

    /// Stops every instance and drops the schema.
    async fn stop(self) {
        for instance in self.instances {
            instance.stop().await;
        }
        self.schema.drop().await;
    }
}

struct Setup {
    resource: String,
    issuer: String,
    client_id: String,
}

/// Fires `n` copies of a request at the same moment, alternating between the two instances;
/// returns `(instance, status, body)` for each.
async fn race<F, Fut>(n: usize, request: F) -> Vec<(usize, u16, Value)>
where
    F: Fn(usize) -> Fut,
    Fut: Future<Output = (u16, Value)> + Send + 'static,
{
    let start = Arc::new(Barrier::new(n));
    let tasks: Vec<_> = (0..n)
        .map(|i| {
            let (start, fut) = (Arc::clone(&start), request(i % 2));
            tokio::spawn(async move {
                start.wait().await;
                let (status, body) = fut.await;
                (i % 2, status, body)
            })
        })
        .collect();
    let mut out = Vec::new();
    for t in tasks {
        out.push(t.await.unwrap());
    }
    out
}

fn assert_invalid_grant(status: u16, body: &Value) {
    assert_eq!(status, 400, "{body}");
    assert_eq!(body["error"], "invalid_grant", "{body}");
}

// ---- the tests ------------------------------------------------------------------------------------

/// An authorization code redeemed at the same moment on both instances yields exactly one token
/// response; the replays revoke the family the winner got (RFC 9700 §4.4).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_code_redeemed_on_both_instances_at_once_yields_one_token_response() {
    const ATTEMPTS: usize = 16;
    let Some(cluster) = Cluster::start(2, &[]).await else { return };
    let cluster = Arc::new(cluster);
    let s = Arc::new(cluster.setup().await);
    let (code, pkce) = cluster.code(&s).await;
    let pkce = Arc::new(pkce);

    let results = race(ATTEMPTS, |instance| {
        let (cluster, s, code, pkce) = (Arc::clone(&cluster), Arc::clone(&s), code.clone(), Arc::clone(&pkce));
        async move { cluster.redeem_at(instance, &s, &code, &pkce).await }
    })
    .await;
    let winners: Vec<_> = results.iter().filter(|(_, status, _)| *status == 200).collect();
    assert_eq!(winners.len(), 1, "exactly one redemption succeeds: {results:?}");
    for (_, status, body) in results.iter().filter(|(_, status, _)| *status != 200) {
        assert_invalid_grant(*status, body);
    }
    // Both instances took part, and the losers include requests to both.
    for instance in [0, 1] {
        assert!(results.iter().any(|(i, status, _)| *i == instance && *status == 400), "{results:?}");
    }

    // The replays revoked the winner's family: its refresh token works on neither instance.
    let rt = winners[0].2["refresh_token"].as_str().unwrap().to_owned();
    for instance in [0, 1] {
        let (status, body) = cluster.refresh_at(instance, &s, &rt).await;
        assert_invalid_grant(status, &body);
    }
    assert_eq!(cluster.schema.families_of_client(&s.client_id).await, 1, "one family, never two");
    assert_eq!(cluster.schema.live_families_of_client(&s.client_id).await, 0, "the family is revoked");

    Arc::into_inner(cluster).unwrap().stop().await;
}

/// A refresh token rotated concurrently on both instances yields exactly one successor, which
/// every request gets (grace replay); a replay after the grace window revokes the family for
/// both instances.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_refresh_token_rotated_on_both_instances_at_once_has_one_successor() {
    const ATTEMPTS: usize = 16;
    const GRACE: u64 = 2;
    let Some(cluster) = Cluster::start(2, &[("MOAT_REFRESH_REUSE_GRACE_SECONDS", "2")]).await else { return };
    let cluster = Arc::new(cluster);
    let s = Arc::new(cluster.setup().await);
    let (code, pkce) = cluster.code(&s).await;
    let (status, body) = cluster.redeem_at(0, &s, &code, &pkce).await;
    assert_eq!(status, 200, "{body}");
    let rt0 = body["refresh_token"].as_str().unwrap().to_owned();

    let results = race(ATTEMPTS, |instance| {
        let (cluster, s, rt0) = (Arc::clone(&cluster), Arc::clone(&s), rt0.clone());
        async move { cluster.refresh_at(instance, &s, &rt0).await }
    })
    .await;
    let mut successors = Vec::new();
    for (instance, status, body) in &results {
        assert_eq!(*status, 200, "instance {instance}: {body}");
        assert!(body["access_token"].is_string(), "{body}");
        successors.push(body["refresh_token"].as_str().unwrap().to_owned());
    }
    let rt1 = successors[0].clone();
    assert!(successors.iter().all(|s| *s == rt1), "one successor for every request: {successors:?}");
    assert_ne!(rt1, rt0);
    assert_eq!(cluster.schema.families_of_client(&s.client_id).await, 1);
    assert_eq!(cluster.schema.tokens_of_client(&s.client_id).await, 2, "the presented token and one successor");

    // After the grace window, presenting the rotated token again is reuse: the family is
    // revoked, and the successor is refused by both instances.
    tokio::time::sleep(Duration::from_millis(GRACE * 1000 + 1200)).await;
    let (status, body) = cluster.refresh_at(1, &s, &rt0).await;
    assert_invalid_grant(status, &body);
    for instance in [0, 1] {
        let (status, body) = cluster.refresh_at(instance, &s, &rt1).await;
        assert_invalid_grant(status, &body);
    }
    assert_eq!(cluster.schema.live_families_of_client(&s.client_id).await, 0);
    assert_eq!(cluster.schema.tokens_of_client(&s.client_id).await, 2, "no successor was issued after the reuse");

    Arc::into_inner(cluster).unwrap().stop().await;
}

/// The kid and alg in a JWT's header, and its `iat`.
fn kid_and_iat(token: &str) -> (String, i64) {
    let (header, claims) = jwt_parts(token);
    (header["kid"].as_str().unwrap().to_owned(), claims["iat"].as_i64().unwrap())
}

fn kids(jwks: &Value) -> Vec<String> {
    jwks["keys"].as_array().unwrap().iter().map(|k| k["kid"].as_str().unwrap().to_owned()).collect()
}

/// Verifies an ES256 JWT against a JWKS (independently of Moat's code).
fn verifies_with(jwks: &Value, token: &str) -> bool {
    use aws_lc_rs::signature::{ECDSA_P256_SHA256_FIXED, UnparsedPublicKey};
    let (header, _) = jwt_parts(token);
    assert_eq!(header["alg"], "ES256");
    let Some(jwk) = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == header["kid"]) else {
        return false;
    };
    let b = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
    let mut point = vec![4u8];
    point.extend(b("x"));
    point.extend(b("y"));
    let (signing_input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(signing_input.as_bytes(), &sig).is_ok()
}

/// Both instances serve the same JWKS; a key rotated by `moat keys rotate` appears in both
/// instances' JWKS before either signs with it, and then both sign with it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn a_rotated_key_is_published_by_both_instances_before_either_signs_with_it() {
    let env =
        [("MOAT_KEY_PUBLISH_DELAY_SECONDS", "3"), ("MOAT_KEY_RELOAD_SECONDS", "1"), ("MOAT_JWKS_MAX_AGE_SECONDS", "1")];
    let Some(cluster) = Cluster::start(2, &env).await else { return };
    let s = cluster.setup().await;
    let machine = cluster
        .moat_json(&[
            "client",
            "create",
            "--resource",
            &s.resource,
            "--name",
            "Agent",
            "--grant",
            "client-credentials",
            "--json",
        ])
        .await;
    let (id, secret) = (machine["client_id"].as_str().unwrap(), machine["client_secret"].as_str().unwrap());
    let issue = async |instance: usize| {
        let (status, body) =
            cluster.token_at(instance, &s, &[("grant_type", "client_credentials")], Some((id, secret))).await;
        assert_eq!(status, 200, "instance {instance}: {body}");
        body["access_token"].as_str().unwrap().to_owned()
    };
    let jwks = async |instance: usize| {
        let (status, headers, body) = cluster.get_at(instance, "/keys").await;
        assert_eq!(status, 200, "{body}");
        let cache = headers.get(header::CACHE_CONTROL).unwrap().to_str().unwrap().to_owned();
        assert!(cache.contains("max-age=1"), "{cache}");
        body
    };

    let (jwks_a, jwks_b) = (jwks(0).await, jwks(1).await);
    assert_eq!(jwks_a, jwks_b, "both instances serve the same JWKS");
    let old = kids(&jwks_a);
    assert_eq!(old.len(), 1, "{jwks_a}");
    for instance in [0, 1] {
        let token = issue(instance).await;
        assert_eq!(kid_and_iat(&token).0, old[0]);
        assert!(verifies_with(&jwks_a, &token));
    }

    let rotated = cluster.moat_json(&["keys", "rotate", "--json"]).await;
    let new = rotated["kid"].as_str().unwrap().to_owned();
    let activates_at = rotated["activates_at"].as_i64().unwrap();
    assert_ne!(new, old[0]);

    // Poll both instances: in every round, first their JWKS, then a token from each. A token
    // signed with the new key must only appear once both JWKS fetched just before it carry the
    // key (a resource server that fetched either one would know it).
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut published_round = None;
    let mut first_signed_round = None;
    let mut signs_new = [false, false];
    let mut rounds_after = 0;
    for round in 0.. {
        assert!(
            Instant::now() < deadline,
            "both instances did not sign with {new} in time (published in round {published_round:?}, \
             signing: {signs_new:?}, activates at {activates_at}, now {})",
            unix_now()
        );
        let (jwks_a, jwks_b) = (jwks(0).await, jwks(1).await);
        let both_publish = kids(&jwks_a).contains(&new) && kids(&jwks_b).contains(&new);
        if both_publish && published_round.is_none() {
            published_round = Some(round);
        }
        for instance in [0, 1] {
            let token = issue(instance).await;
            let (kid, iat) = kid_and_iat(&token);
            if kid == new {
                assert!(both_publish, "instance {instance} signed with {new} before both instances published it");
                assert!(iat >= activates_at, "signed at {iat}, before the key activates at {activates_at}");
                assert!(verifies_with(&jwks_a, &token) && verifies_with(&jwks_b, &token));
                first_signed_round.get_or_insert(round);
                signs_new[instance] = true;
            } else {
                assert_eq!(kid, old[0], "an unknown kid");
                assert!(!signs_new[instance], "instance {instance} went back to the old key");
            }
        }
        if signs_new == [true, true] {
            rounds_after += 1;
            if rounds_after == 3 {
                break;
            }
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let (published, signed) = (published_round.unwrap(), first_signed_round.unwrap());
    assert!(published < signed, "the key was published (round {published}) before it signed (round {signed})");

    // Both serve the same JWKS again, with the old key still published (it retired, and tokens
    // it signed are still valid).
    let (jwks_a, jwks_b) = (jwks(0).await, jwks(1).await);
    assert_eq!(jwks_a, jwks_b);
    let mut all = kids(&jwks_a);
    all.sort();
    let mut expected = vec![old[0].clone(), new.clone()];
    expected.sort();
    assert_eq!(all, expected);

    cluster.stop().await;
}

/// A PostgreSQL deployment refuses to start without an explicit master key, before touching the
/// database; and an instance with a different master key than the deployment's cannot join it.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serving_postgres_needs_the_one_shared_master_key() {
    let Some(schema) = Schema::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = moat_command(dir.path());
    cmd.args(["--database", &schema.url, "serve", "--listen", "127.0.0.1:0"]);
    let out = tokio::time::timeout(Duration::from_secs(60), cmd.output()).await.unwrap().unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "moat serve started without a master key: {stderr}");
    assert!(
        stderr.contains("PostgreSQL deployment needs an explicit master key") && stderr.contains("MOAT_MASTER_KEY"),
        "{stderr}"
    );
    assert!(schema.tables().await.is_empty(), "the database was touched: {:?}", schema.tables().await);
    assert!(!dir.path().read_dir().unwrap().any(|_| true), "a key file was written");

    // A deployment is running; an instance started with another master key cannot open its
    // signing keys and says so, instead of serving a JWKS of its own.
    let cluster = Cluster::start_in(schema, 1, &[]).await;
    let other = moat_server::crypto::MasterKey::generate().to_base64();
    let Err(failure) = Instance::start(cluster.serve_command(Some(&other))).await else {
        panic!("an instance with a foreign master key started");
    };
    assert!(failure.contains("loading signing keys") && failure.contains("signing key"), "{failure}");
    cluster.stop().await;
}

/// `moat migrate` prepares a fresh schema; instances started with `MOAT_MIGRATE_ON_START=false`
/// serve it; management commands work on PostgreSQL and both running instances see their
/// effect at once.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn migrate_then_serve_and_manage_on_postgres() {
    let Some(schema) = Schema::create().await else { return };
    let dir = tempfile::tempdir().unwrap();
    let mut cmd = moat_command(dir.path());
    cmd.args(["--database", &schema.url, "migrate"]);
    let out = cmd.output().await.unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(String::from_utf8_lossy(&out.stdout).trim(), "migrations applied (postgres)");
    let tables = schema.tables().await;
    for table in ["_sqlx_migrations", "clients", "refresh_families", "resources", "signing_keys", "users"] {
        assert!(tables.iter().any(|t| t == table), "{table} missing from the schema: {tables:?}");
    }

    let cluster = Cluster::start_in(schema, 2, &[("MOAT_MIGRATE_ON_START", "false")]).await;
    let s = cluster.setup().await;
    // Created by separate processes a moment ago: both instances serve the resource's metadata
    // and accept the client.
    for instance in [0, 1] {
        let path = format!("/.well-known/oauth-authorization-server/resources/{}", s.resource);
        let (status, _, meta) = cluster.get_at(instance, &path).await;
        assert_eq!(status, 200, "{meta}");
        assert_eq!(meta["issuer"], s.issuer, "every instance builds URLs from the one public URL");
        let (status, location) = cluster.authorize_at(instance, &s).await;
        let login = format!("{}/login?req=", cluster.proxy.url);
        assert_eq!(status, 303, "instance {instance}");
        assert!(location.starts_with(&login), "instance {instance} did not send the browser to log in: {location}");
    }
    let listed = cluster.moat_json(&["client", "list", "--resource", &s.resource, "--json"]).await;
    assert_eq!(listed.as_array().unwrap().len(), 1, "{listed}");
    assert_eq!(cluster.moat_json(&["user", "list", "--json"]).await[0]["email"], EMAIL);
    assert_eq!(cluster.moat_json(&["keys", "list", "--json"]).await.as_array().unwrap().len(), 1);

    // A full flow through the load balancer.
    let (code, pkce) = cluster.code(&s).await;
    let (status, body) = cluster.redeem_at(1, &s, &code, &pkce).await;
    assert_eq!(status, 200, "{body}");
    let rt = body["refresh_token"].as_str().unwrap().to_owned();
    let (status, body) = cluster.refresh_at(0, &s, &rt).await;
    assert_eq!(status, 200, "{body}");
    let rt = body["refresh_token"].as_str().unwrap().to_owned();

    // Disabling the client from the CLI takes effect on both instances at once.
    let out = cluster.moat(&["client", "disable", &s.client_id], None).await;
    assert!(out.success, "{}", out.stderr);
    for instance in [0, 1] {
        let (status, body) = cluster.refresh_at(instance, &s, &rt).await;
        assert!(status == 400 || status == 401, "instance {instance}: {status} {body}");
        let (status, location) = cluster.authorize_at(instance, &s).await;
        assert_eq!((status, location.as_str()), (400, ""), "instance {instance} still accepts the client");
    }
    assert_eq!(cluster.schema.live_families_of_client(&s.client_id).await, 0);

    cluster.stop().await;
}
