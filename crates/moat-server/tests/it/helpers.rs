//! Test harness: a spawned Moat, direct store access for setup, a cookie-keeping "browser"
//! that walks the login and consent forms, and token helpers.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::process::Stdio;

use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use moat_core::ids::{ClientId, ResourceId, UserId, random_secret};
use moat_core::model::{AuthMethod, Client, ClientKind, GrantType, Resource, ScopeDef, User};
use moat_server::config::{Config, Overrides};
use moat_server::{Application, passwords};
use moat_store::DynStore;
use reqwest::redirect::Policy;
use serde_json::{Value, json};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::oneshot;

pub const PASSWORD: &str = "correct horse battery staple";

pub struct TestApp {
    pub base: String,
    /// The address the server listens on (differs from `base` when `MOAT_PUBLIC_URL` is set).
    pub addr: SocketAddr,
    pub store: DynStore,
    pub dir: tempfile::TempDir,
    pub db_url: String,
    shutdown: Option<oneshot::Sender<()>>,
    handle: Option<tokio::task::JoinHandle<anyhow::Result<()>>>,
}

impl TestApp {
    pub async fn spawn() -> Self {
        Self::spawn_with(&[]).await
    }

    /// Spawns Moat with extra `MOAT_*` settings.
    pub async fn spawn_with(env: &[(&str, &str)]) -> Self {
        let dir = tempfile::tempdir().unwrap();
        let db_url = format!("sqlite://{}", dir.path().join("moat.db").display());
        let mut map: HashMap<String, String> = env.iter().map(|(k, v)| ((*k).into(), (*v).into())).collect();
        map.entry("MOAT_RESOURCE_CACHE_SECONDS".into()).or_insert_with(|| "0".into());
        let overrides = Overrides {
            listen: Some("127.0.0.1:0".parse().unwrap()),
            public_url: None,
            database_url: Some(db_url.clone()),
        };
        let config = Config::load_with(None, &|k| map.get(k).cloned(), &overrides).unwrap();
        let app = Application::build(config).await.unwrap();
        let base = app.base_url().to_owned();
        let addr = app.local_addr();
        let store = app.store();
        let (tx, rx) = oneshot::channel::<()>();
        let handle = tokio::spawn(app.run_until(async move {
            let _ = rx.await;
        }));
        Self { base, addr, store, dir, db_url, shutdown: Some(tx), handle: Some(handle) }
    }

    /// Stops the server gracefully and waits for it.
    pub async fn stop(mut self) {
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if let Some(h) = self.handle.take() {
            h.await.unwrap().unwrap();
        }
    }

    pub fn issuer(&self, r: &Resource) -> String {
        format!("{}/resources/{}", self.base, r.id)
    }

    pub fn http(&self) -> reqwest::Client {
        reqwest::Client::builder().redirect(Policy::none()).build().unwrap()
    }

    pub fn browser(&self) -> Browser {
        Browser {
            client: reqwest::Client::builder().redirect(Policy::none()).cookie_store(true).build().unwrap(),
            base: self.base.clone(),
        }
    }

    /// A resource with `todo:read` (default) and `todo:write`.
    pub async fn resource(&self) -> Resource {
        self.resource_with(|_| {}).await
    }

    pub async fn resource_with(&self, f: impl FnOnce(&mut Resource)) -> Resource {
        let mut r = Resource {
            id: ResourceId::generate(),
            name: "Todo MCP".into(),
            server_url: format!("https://mcp-{}.example.com/mcp", &random_secret()[..8].to_lowercase()),
            scopes: vec![
                ScopeDef { name: "todo:read".into(), description: "Read your todos".into() },
                ScopeDef { name: "todo:write".into(), description: "Change your todos".into() },
            ],
            default_scopes: vec!["todo:read".into()],
            dcr_enabled: true,
            cimd_enabled: false,
            cimd_allowed_hosts: vec![],
            access_token_ttl: 3600,
            refresh_token_ttl: 30 * 86400,
            refresh_idle_ttl: 14 * 86400,
            created_at: 0,
            updated_at: 0,
        };
        f(&mut r);
        self.store.create_resource(&r).await.unwrap();
        r
    }

    pub async fn user(&self, email: &str) -> User {
        let u = User {
            id: UserId::generate(),
            email: email.into(),
            name: Some("Alice".into()),
            password_hash: Some(passwords::hash_password(PASSWORD.into()).await.unwrap()),
            disabled: false,
            created_at: 0,
            updated_at: 0,
        };
        self.store.create_user(&u).await.unwrap();
        u
    }

    /// A pre-registered client; confidential (returns its secret) unless `public`.
    pub async fn client(
        &self,
        r: &Resource,
        redirect_uris: &[&str],
        public: bool,
        grants: &[GrantType],
    ) -> (Client, Option<String>) {
        self.client_with(r, redirect_uris, public, grants, |_| {}).await
    }

    /// As [`TestApp::client`], with `f` adjusting the client before it is stored.
    pub async fn client_with(
        &self,
        r: &Resource,
        redirect_uris: &[&str],
        public: bool,
        grants: &[GrantType],
        f: impl FnOnce(&mut Client),
    ) -> (Client, Option<String>) {
        let secret = (!public).then(random_secret);
        let c = Client {
            id: ClientId::generate(),
            resource_id: r.id.clone(),
            kind: ClientKind::PreRegistered,
            name: "Test Client".into(),
            redirect_uris: redirect_uris.iter().map(|s| s.to_string()).collect(),
            grant_types: grants.to_vec(),
            auth_method: if public { AuthMethod::None } else { AuthMethod::ClientSecretBasic },
            secret_hash: secret.as_ref().map(|s| moat_server::crypto::sha256_hex(s.as_bytes())),
            secret_expires_at: secret.as_ref().map(|_| 0),
            metadata: json!({}),
            fingerprint: None,
            access_token_ttl: None,
            disabled: false,
            created_at: 0,
            updated_at: 0,
            last_used_at: None,
        };
        let mut c = c;
        f(&mut c);
        self.store.create_client(&c).await.unwrap();
        (c, secret)
    }

    /// Registers a public client through DCR.
    pub async fn register(&self, r: &Resource, body: Value) -> (reqwest::StatusCode, Value) {
        let resp = self.http().post(format!("{}/oauth/register", self.issuer(r))).json(&body).send().await.unwrap();
        let status = resp.status();
        (status, resp.json().await.unwrap_or(Value::Null))
    }

    /// POSTs a form to the token endpoint.
    pub async fn token(&self, r: &Resource, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        self.post_form(&format!("{}/oauth/token", self.issuer(r)), form, basic).await
    }

    pub async fn post_form(&self, url: &str, form: &[(&str, &str)], basic: Option<(&str, &str)>) -> (u16, Value) {
        let resp = self.post_form_resp(url, form, basic).await;
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    /// POSTs a form and returns the raw response (for header assertions).
    pub async fn post_form_resp(
        &self,
        url: &str,
        form: &[(&str, &str)],
        basic: Option<(&str, &str)>,
    ) -> reqwest::Response {
        let mut req = self.http().post(url).form(form);
        if let Some((id, secret)) = basic {
            req = req.basic_auth(id, Some(secret));
        }
        req.send().await.unwrap()
    }

    /// A `refresh_token` grant for a public client (`client_id` in the body).
    pub async fn refresh(&self, r: &Resource, client_id: &str, rt: &str, extra: &[(&str, &str)]) -> (u16, Value) {
        let mut form = vec![("grant_type", "refresh_token"), ("refresh_token", rt), ("client_id", client_id)];
        form.extend_from_slice(extra);
        self.token(r, &form, None).await
    }

    /// GETs `url` without following redirects: status, `Location` (if any) and body.
    pub async fn get_raw(&self, url: &str) -> (u16, Option<String>, String) {
        let resp = self.http().get(url).send().await.unwrap();
        let status = resp.status().as_u16();
        let loc = resp.headers().get("location").map(|l| l.to_str().unwrap().to_owned());
        (status, loc, resp.text().await.unwrap())
    }

    /// GETs `url` and parses the body as JSON (asserting 200).
    pub async fn get_json(&self, url: &str) -> Value {
        let resp = self.http().get(url).send().await.unwrap();
        assert_eq!(resp.status(), 200, "GET {url}");
        resp.json().await.unwrap()
    }

    /// Runs the real `moat` binary against this app's database and public URL, with
    /// `MOAT_MASTER_KEY` unset (so it uses the key file beside the database), in the app's
    /// directory (no stray `moat.toml`), with `env` added and `stdin` piped in.
    pub async fn moat(&self, args: &[&str], env: &[(&str, &str)], stdin: Option<&str>) -> CliOutput {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"));
        cmd.arg("--database").arg(&self.db_url).arg("--public-url").arg(&self.base).args(args);
        for var in ["MOAT_MASTER_KEY", "MOAT_CONFIG", "MOAT_DATABASE_URL", "MOAT_PUBLIC_URL", "MOAT_MASTER_KEY_FILE"] {
            cmd.env_remove(var);
        }
        cmd.envs(env.iter().copied()).current_dir(self.dir.path());
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

    /// As [`TestApp::moat`], asserting success and parsing stdout as JSON.
    pub async fn moat_json(&self, args: &[&str]) -> Value {
        let out = self.moat(args, &[], None).await;
        assert!(out.success, "moat {args:?} failed: {}", out.stderr);
        serde_json::from_str(&out.stdout).unwrap_or_else(|e| panic!("moat {args:?}: {e}: {}", out.stdout))
    }
}

/// What a `moat` command printed.
#[derive(Debug)]
pub struct CliOutput {
    pub success: bool,
    pub stdout: String,
    pub stderr: String,
}

/// A PKCE pair.
pub struct Pkce {
    pub verifier: String,
    pub challenge: String,
}

impl Pkce {
    pub fn new() -> Self {
        let verifier = format!("{}{}", random_secret(), random_secret());
        let challenge = moat_core::pkce::s256_challenge(&verifier);
        Self { verifier, challenge }
    }
}

/// An authorization request URL.
pub fn authorize_url(issuer: &str, client_id: &str, redirect_uri: &str, pkce: &Pkce, extra: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    ser.append_pair("response_type", "code")
        .append_pair("client_id", client_id)
        .append_pair("redirect_uri", redirect_uri)
        .append_pair("code_challenge", &pkce.challenge)
        .append_pair("code_challenge_method", "S256")
        .append_pair("state", "st-123");
    for (k, v) in extra {
        ser.append_pair(k, v);
    }
    format!("{issuer}/oauth/authorize?{}", ser.finish())
}

/// An authorization request URL with exactly `pairs` as its query.
pub fn authz_url(issuer: &str, pairs: &[(&str, &str)]) -> String {
    let mut ser = form_urlencoded::Serializer::new(String::new());
    for (k, v) in pairs {
        ser.append_pair(k, v);
    }
    format!("{issuer}/oauth/authorize?{}", ser.finish())
}

/// Asserts `loc` is an error authorization response to `redirect` with `error`, `state` and
/// `iss` (RFC 6749 §4.1.2.1, RFC 9207); returns its parameters.
pub fn expect_error_redirect(
    loc: &str,
    redirect: &str,
    error: &str,
    state: Option<&str>,
    iss: &str,
) -> HashMap<String, String> {
    assert!(loc.starts_with(&format!("{redirect}?")), "redirected to {loc}, expected {redirect}");
    let q = query_of(loc);
    assert_eq!(q.get("error").map(String::as_str), Some(error), "{loc}");
    assert_eq!(q.get("state").map(String::as_str), state, "state in {loc}");
    assert_eq!(q.get("iss").map(String::as_str), Some(iss), "iss in {loc}");
    assert!(!q.contains_key("code"), "{loc}");
    q
}

/// Whether a step is Moat's login page.
pub fn is_login_page(step: &Step) -> bool {
    matches!(step, Step::Page(200, html) if html.contains("action=\"/login\""))
}

/// Whether a step is Moat's consent page.
pub fn is_consent_page(step: &Step) -> bool {
    matches!(step, Step::Page(200, html) if html.contains("action=\"/consent\""))
}

/// Walks an authorization with `browser` (login and approval as needed) and returns the code
/// and the PKCE pair, without redeeming it.
pub async fn authorize_code(
    app: &TestApp,
    browser: &Browser,
    r: &Resource,
    client_id: &str,
    redirect: &str,
    email: &str,
    extra: &[(&str, &str)],
) -> (String, Pkce) {
    let pkce = Pkce::new();
    let loc =
        browser.authorize(&authorize_url(&app.issuer(r), client_id, redirect, &pkce, extra), email, "approve").await;
    let code = query_of(&loc).remove("code").unwrap_or_else(|| panic!("no code in {loc}"));
    (code, pkce)
}

/// Query parameters of a URL.
pub fn query_of(url: &str) -> HashMap<String, String> {
    let u = url::Url::parse(url).unwrap();
    u.query_pairs().map(|(k, v)| (k.into_owned(), v.into_owned())).collect()
}

/// Where a page or redirect sent the browser.
#[derive(Debug)]
pub enum Step {
    /// A redirect to a URL outside Moat (the client's redirect URI).
    Client(String),
    /// An HTML page from Moat: status and body.
    Page(u16, String),
}

/// A cookie-keeping HTTP client that walks Moat's pages like a browser without JavaScript.
pub struct Browser {
    pub client: reqwest::Client,
    pub base: String,
}

impl Browser {
    /// Follows redirects within Moat; stops at a page or at a redirect leaving Moat.
    pub async fn go(&self, url: &str) -> Step {
        let mut url = url.to_owned();
        for _ in 0..10 {
            let resp = self.client.get(&url).send().await.unwrap();
            if let Some(loc) = resp.headers().get("location") {
                let loc = loc.to_str().unwrap().to_owned();
                if loc.starts_with(&self.base) {
                    url = loc;
                    continue;
                }
                return Step::Client(loc);
            }
            let status = resp.status().as_u16();
            return Step::Page(status, resp.text().await.unwrap());
        }
        panic!("redirect loop");
    }

    /// Submits the page's form (hidden fields + `fields`) to `action`, then follows like `go`.
    pub async fn submit(&self, page: &str, action: &str, fields: &[(&str, &str)]) -> Step {
        let mut form = hidden_fields(page);
        for (k, v) in fields {
            form.push(((*k).into(), (*v).into()));
        }
        let resp = self
            .client
            .post(format!("{}{}", self.base, action))
            .header("sec-fetch-site", "same-origin")
            .form(&form)
            .send()
            .await
            .unwrap();
        if let Some(loc) = resp.headers().get("location") {
            let loc = loc.to_str().unwrap().to_owned();
            if loc.starts_with(&self.base) {
                return self.go(&loc).await;
            }
            return Step::Client(loc);
        }
        let status = resp.status().as_u16();
        Step::Page(status, resp.text().await.unwrap())
    }

    /// Logs in on a login page.
    pub async fn login(&self, page: &str, email: &str, password: &str) -> Step {
        self.submit(page, "/login", &[("email", email), ("password", password)]).await
    }

    /// Runs an authorization to the end: login if asked, consent `decision` if asked.
    /// Returns the URL Moat redirected to.
    pub async fn authorize(&self, url: &str, email: &str, decision: &str) -> String {
        let mut step = self.go(url).await;
        for _ in 0..3 {
            match step {
                Step::Client(loc) => return loc,
                Step::Page(_, ref html) if html.contains("action=\"/login\"") => {
                    step = self.login(html, email, PASSWORD).await;
                }
                Step::Page(_, ref html) if html.contains("action=\"/consent\"") => {
                    step = self.submit(html, "/consent", &[("decision", decision)]).await;
                }
                Step::Page(status, html) => panic!("unexpected page {status}: {}", text_of(&html)),
            }
        }
        panic!("authorization did not finish: {step:?}");
    }
}

/// Hidden inputs of the first form in `html`.
pub fn hidden_fields(html: &str) -> Vec<(String, String)> {
    let doc = scraper::Html::parse_document(html);
    let sel = scraper::Selector::parse("form input[type=hidden]").unwrap();
    doc.select(&sel)
        .map(|e| {
            (
                e.value().attr("name").unwrap_or_default().to_owned(),
                e.value().attr("value").unwrap_or_default().to_owned(),
            )
        })
        .collect()
}

/// Visible text of a page (for assertion messages).
pub fn text_of(html: &str) -> String {
    let doc = scraper::Html::parse_document(html);
    doc.root_element().text().collect::<Vec<_>>().join(" ").split_whitespace().collect::<Vec<_>>().join(" ")
}

/// Authorizes `client` for `user` and redeems the code; returns the token response.
pub async fn code_flow(
    app: &TestApp,
    r: &Resource,
    client_id: &str,
    redirect: &str,
    email: &str,
    extra: &[(&str, &str)],
) -> Value {
    let pkce = Pkce::new();
    let browser = app.browser();
    let loc =
        browser.authorize(&authorize_url(&app.issuer(r), client_id, redirect, &pkce, extra), email, "approve").await;
    let q = query_of(&loc);
    let code = q.get("code").unwrap_or_else(|| panic!("no code in {loc}"));
    let (status, body) = app
        .token(
            r,
            &[
                ("grant_type", "authorization_code"),
                ("code", code),
                ("redirect_uri", redirect),
                ("code_verifier", &pkce.verifier),
                ("client_id", client_id),
            ],
            None,
        )
        .await;
    assert_eq!(status, 200, "{body}");
    body
}

/// Decodes a JWT's header and claims without verifying it.
pub fn jwt_parts(token: &str) -> (Value, Value) {
    let mut it = token.split('.');
    let h = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    let c = URL_SAFE_NO_PAD.decode(it.next().unwrap()).unwrap();
    (serde_json::from_slice(&h).unwrap(), serde_json::from_slice(&c).unwrap())
}

/// Verifies a JWT's signature against the JWKS Moat publishes (independently of Moat's own
/// code, with the JWK's public key material).
pub async fn verify_with_jwks(app: &TestApp, token: &str) -> Value {
    use aws_lc_rs::signature::{
        ECDSA_P256_SHA256_FIXED, ED25519, RSA_PKCS1_2048_8192_SHA256, RsaPublicKeyComponents, UnparsedPublicKey,
    };
    let jwks: Value = reqwest::get(format!("{}/keys", app.base)).await.unwrap().json().await.unwrap();
    let (header, claims) = jwt_parts(token);
    let kid = header["kid"].as_str().unwrap();
    let jwk = jwks["keys"].as_array().unwrap().iter().find(|k| k["kid"] == kid).expect("kid not in JWKS");
    let b = |k: &str| URL_SAFE_NO_PAD.decode(jwk[k].as_str().unwrap()).unwrap();
    let (signing_input, sig) = token.rsplit_once('.').unwrap();
    let sig = URL_SAFE_NO_PAD.decode(sig).unwrap();
    let ok = match header["alg"].as_str().unwrap() {
        "ES256" => {
            let mut point = vec![4u8];
            point.extend(b("x"));
            point.extend(b("y"));
            UnparsedPublicKey::new(&ECDSA_P256_SHA256_FIXED, point).verify(signing_input.as_bytes(), &sig).is_ok()
        }
        "EdDSA" => UnparsedPublicKey::new(&ED25519, b("x")).verify(signing_input.as_bytes(), &sig).is_ok(),
        "RS256" => RsaPublicKeyComponents { n: b("n"), e: b("e") }
            .verify(&RSA_PKCS1_2048_8192_SHA256, signing_input.as_bytes(), &sig)
            .is_ok(),
        other => panic!("unexpected alg {other}"),
    };
    assert!(ok, "signature does not verify with the published JWKS");
    claims
}
