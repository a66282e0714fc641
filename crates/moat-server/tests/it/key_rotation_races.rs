//! Signing-key rotation under races and on an empty database (DESIGN.md §4, §7): concurrent
//! `moat keys rotate` runs must leave exactly one key in line to sign (never retire every key),
//! the signer must never use a key that has left the JWKS, and a key rotated into a database
//! that has no key able to sign must sign at once.
//!
//! PostgreSQL variants run when `MOAT_TEST_POSTGRES_URL` is set, each in a fresh schema
//! `moat_kr_<unix time>_<random>` that it drops at the end (schemas left over by an interrupted
//! run are swept after 15 minutes).

use std::collections::HashMap;
use std::process::Stdio;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moat_core::ids::{ClientId, ResourceId, random_secret};
use moat_core::model::{AuthMethod, Client, ClientKind, GrantType, Resource, ScopeDef, SigningKeyRecord};
use moat_server::Application;
use moat_server::config::{Config, Overrides, SigningAlg};
use moat_server::crypto::Sealer;
use moat_server::keys::{self, KeyRing, MAX_ACCESS_TOKEN_TTL};
use moat_store::{ConnectOptions, DynStore, PgStore, SqliteStore, Store};
use serde_json::{Value, json};
use sqlx::{Connection as _, PgConnection};
use tempfile::TempDir;
use tokio::sync::{Barrier, oneshot};

use crate::helpers::jwt_parts;

const ENV_URL: &str = "MOAT_TEST_POSTGRES_URL";
const SCHEMA_PREFIX: &str = "moat_kr_";
const STALE_AFTER_SECS: u64 = 900;
/// Rotations racing on one store.
const RACERS: usize = 8;
/// `key_publish_delay_seconds` of the racing rotations.
const DELAY: i64 = 900;

fn unix_now() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap()
}

fn sealer() -> Arc<Sealer> {
    Arc::new(Sealer::new([7u8; 32]).unwrap())
}

async fn sqlite_store() -> (DynStore, TempDir) {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("moat.db").display());
    let store = SqliteStore::connect(&url, &ConnectOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    (Arc::new(store), dir)
}

/// A fresh schema on the server `MOAT_TEST_POSTGRES_URL` names, dropped by [`PgSchema::drop`].
struct PgSchema {
    server: String,
    name: String,
}

impl PgSchema {
    /// A migrated store in a new schema, or `None` (saying why) when the variable is unset.
    async fn store() -> Option<(DynStore, Self)> {
        let Some(server) = std::env::var(ENV_URL).ok().filter(|u| !u.is_empty()) else {
            eprintln!("skipping the PostgreSQL key-rotation race: {ENV_URL} is not set");
            return None;
        };
        let mut conn = PgConnection::connect(&server).await.unwrap();
        let names: Vec<String> = sqlx::query_scalar("SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE $1")
            .bind(format!("{SCHEMA_PREFIX}%"))
            .fetch_all(&mut conn)
            .await
            .unwrap();
        let cutoff = unix_now().saturating_sub(STALE_AFTER_SECS as i64);
        for stale in names {
            let created = stale.strip_prefix(SCHEMA_PREFIX).and_then(|r| r.split('_').next()?.parse::<i64>().ok());
            if created.is_some_and(|t| t < cutoff) {
                sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{stale}\" CASCADE")).execute(&mut conn).await.ok();
            }
        }
        let name = format!("{SCHEMA_PREFIX}{}_{}", unix_now(), moat_core::ids::random_id("").to_lowercase());
        sqlx::query(&format!("CREATE SCHEMA \"{name}\"")).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
        let sep = if server.contains('?') { '&' } else { '?' };
        let url = format!("{server}{sep}options=-c%20search_path%3D{name}");
        let options = ConnectOptions { max_connections: RACERS as u32 + 2, ..ConnectOptions::default() };
        let store = PgStore::connect(&url, &options).await.unwrap();
        store.migrate().await.unwrap();
        Some((Arc::new(store), Self { server, name }))
    }

    async fn drop(self) {
        let mut conn = PgConnection::connect(&self.server).await.unwrap();
        sqlx::query(&format!("DROP SCHEMA IF EXISTS \"{}\" CASCADE", self.name)).execute(&mut conn).await.unwrap();
        conn.close().await.ok();
    }
}

/// The key set in brief for failure messages (a record's Debug prints the sealed key bytes).
fn brief(keys: &[SigningKeyRecord]) -> Vec<String> {
    keys.iter()
        .map(|k| {
            format!(
                "{} created {} activates {} retires {:?} unpublish {:?}",
                k.kid, k.created_at, k.activates_at, k.retires_at, k.unpublish_at
            )
        })
        .collect()
}

/// The times at which the key set can change at or after `now` (and a second either side).
fn moments(keys: &[SigningKeyRecord], now: i64) -> Vec<i64> {
    let mut ts: Vec<i64> = keys
        .iter()
        .flat_map(|k| [Some(k.activates_at), k.retires_at, k.unpublish_at])
        .flatten()
        .flat_map(|t| [t - 1, t, t + 1])
        .chain([now])
        .filter(|t| *t >= now)
        .collect();
    ts.sort_unstable();
    ts.dedup();
    ts
}

/// Asserts the rotation invariants of DESIGN.md §4 on the stored keys and on a key ring loaded
/// from them: from `now` on, at every moment some key signs, it has not retired, it is in the
/// JWKS, and it stays there until any token it signs then has expired.
async fn assert_signing_never_stops(store: &DynStore, sealer: &Arc<Sealer>, now: i64) {
    let stored = store.list_signing_keys().await.unwrap();
    let ring = KeyRing::new(Arc::clone(store), Arc::clone(sealer));
    ring.reload().await.unwrap();
    for t in moments(&stored, now) {
        let key = ring.current(t).unwrap_or_else(|| panic!("no key signs at now+{}: {:#?}", t - now, brief(&stored)));
        assert!(key.activates_at <= t, "{} signs before it activates", key.kid);
        assert!(key.retires_at.is_none_or(|r| t < r), "{} signs at now+{} after retiring", key.kid, t - now);
        let jwks = ring.jwks(t);
        let published = jwks["keys"].as_array().unwrap().iter().any(|k| k["kid"] == json!(key.kid));
        assert!(published, "{} signs at now+{} but is not in the JWKS", key.kid, t - now);
        assert!(
            key.unpublish_at.is_none_or(|u| t + MAX_ACCESS_TOKEN_TTL <= u),
            "{} signs at now+{} but leaves the JWKS before its tokens expire",
            key.kid,
            t - now
        );
    }
}

/// `RACERS` rotations at once, after the first key `moat serve` creates.
async fn check_concurrent_rotations(store: DynStore) {
    let sealer = sealer();
    let now = unix_now();
    KeyRing::new(Arc::clone(&store), Arc::clone(&sealer)).ensure_and_load(SigningAlg::ES256, now).await.unwrap();
    let first = store.list_signing_keys().await.unwrap();
    assert_eq!(first.len(), 1);

    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RACERS {
        let (store, sealer, barrier) = (Arc::clone(&store), Arc::clone(&sealer), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            keys::rotate(&store, &sealer, SigningAlg::ES256, now, DELAY).await.unwrap()
        });
    }
    let mut rotated = Vec::new();
    while let Some(rec) = tasks.join_next().await {
        rotated.push(rec.unwrap());
    }

    let stored = store.list_signing_keys().await.unwrap();
    assert_eq!(stored.len(), RACERS + 1);
    let unretired: Vec<&SigningKeyRecord> = stored.iter().filter(|k| k.retires_at.is_none()).collect();
    assert_eq!(unretired.len(), 1, "exactly one key must stay in line to sign: {:#?}", brief(&stored));
    // The store lists oldest first: the one left is the newest.
    let newest = stored.last().unwrap();
    assert_eq!(unretired[0].kid, newest.kid, "{:#?}", brief(&stored));
    // Every rotated key is published before it signs, and every retired key retires when the
    // key that stays takes over (or at its own activation, which is the same time here) and
    // stays published for the longest token lifetime after that.
    for rec in &rotated {
        assert_eq!(rec.activates_at, now + DELAY, "a rotated key must be published before it signs");
    }
    for k in stored.iter().filter(|k| k.retires_at.is_some()) {
        assert_eq!(
            k.retires_at,
            Some(k.activates_at.max(newest.activates_at)),
            "{:#?}",
            brief(std::slice::from_ref(k))
        );
        assert_eq!(
            k.unpublish_at,
            Some(k.retires_at.unwrap() + MAX_ACCESS_TOKEN_TTL),
            "{:#?}",
            brief(std::slice::from_ref(k))
        );
    }
    // The first key keeps signing until the new one activates.
    assert_eq!(stored.iter().find(|k| k.kid == first[0].kid).unwrap().retires_at, Some(now + DELAY));
    assert_signing_never_stops(&store, &sealer, now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_leave_exactly_the_newest_key_unretired_sqlite() {
    let (store, _dir) = sqlite_store().await;
    check_concurrent_rotations(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_leave_exactly_the_newest_key_unretired_postgres() {
    let Some((store, schema)) = PgSchema::store().await else { return };
    check_concurrent_rotations(store).await;
    schema.drop().await;
}

/// Racing rotations of a database without keys (`moat migrate`, then several `moat keys
/// rotate` before any `moat serve`): one key is left unretired and it signs at once.
async fn check_concurrent_rotations_of_an_empty_store(store: DynStore) {
    let sealer = sealer();
    let now = unix_now();
    let barrier = Arc::new(Barrier::new(RACERS));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..RACERS {
        let (store, sealer, barrier) = (Arc::clone(&store), Arc::clone(&sealer), Arc::clone(&barrier));
        tasks.spawn(async move {
            barrier.wait().await;
            keys::rotate(&store, &sealer, SigningAlg::ES256, now, DELAY).await.unwrap()
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap();
    }
    let stored = store.list_signing_keys().await.unwrap();
    assert_eq!(stored.len(), RACERS);
    let unretired: Vec<&SigningKeyRecord> = stored.iter().filter(|k| k.retires_at.is_none()).collect();
    assert_eq!(unretired.len(), 1, "{:#?}", brief(&stored));
    assert_eq!(unretired[0].kid, stored.last().unwrap().kid);
    assert_signing_never_stops(&store, &sealer, now).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_of_an_empty_database_leave_one_key_sqlite() {
    let (store, _dir) = sqlite_store().await;
    check_concurrent_rotations_of_an_empty_store(store).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_rotations_of_an_empty_database_leave_one_key_postgres() {
    let Some((store, schema)) = PgSchema::store().await else { return };
    check_concurrent_rotations_of_an_empty_store(store).await;
    schema.drop().await;
}

#[tokio::test]
async fn the_signer_never_uses_a_key_that_left_the_jwks() {
    let (store, _dir) = sqlite_store().await;
    let sealer = sealer();
    let now = unix_now();
    // The state the rotation race left behind: every key retired. One is still published (a
    // last resort the JWKS still carries), one has left the JWKS.
    let gone = keys::generate_key(SigningAlg::ES256, &sealer, now - 200_000, now - 200_000).unwrap();
    store.insert_signing_key(&gone).await.unwrap();
    store.retire_signing_key(&gone.kid, now - 190_000, now - 3_600).await.unwrap();
    let ring = KeyRing::new(Arc::clone(&store), Arc::clone(&sealer));
    ring.reload().await.unwrap();
    assert_eq!(ring.jwks(now)["keys"], json!([]));
    assert!(ring.current(now).is_none(), "a key missing from the JWKS was chosen to sign");
    let err = ring.sign_jwt("at+jwt", &json!({"sub": "x"}), now).unwrap_err().to_string();
    assert!(err.contains("no signing key"), "{err}");

    // A retired key that is still published remains the last resort.
    let retired = keys::generate_key(SigningAlg::ES256, &sealer, now - 100_000, now - 100_000).unwrap();
    store.insert_signing_key(&retired).await.unwrap();
    store.retire_signing_key(&retired.kid, now - 60, now - 60 + MAX_ACCESS_TOKEN_TTL).await.unwrap();
    ring.reload().await.unwrap();
    let token = ring.sign_jwt("at+jwt", &json!({"sub": "x"}), now).unwrap();
    assert_eq!(jwt_parts(&token).0["kid"], json!(retired.kid));
    assert!(ring.verify_jwt(&token, now).is_some());
}

// ---- rotating before the first `moat serve` ------------------------------------------------------

/// Runs the real `moat` binary on `db` (key file beside it, no environment leaking in).
async fn moat(dir: &TempDir, db: &str, args: &[&str]) -> (bool, String, String) {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_moat"));
    cmd.arg("--database").arg(db).args(args);
    for var in ["MOAT_MASTER_KEY", "MOAT_CONFIG", "MOAT_DATABASE_URL", "MOAT_PUBLIC_URL", "MOAT_MASTER_KEY_FILE"] {
        cmd.env_remove(var);
    }
    cmd.current_dir(dir.path()).stdin(Stdio::null()).stdout(Stdio::piped()).stderr(Stdio::piped());
    let out = cmd.output().await.unwrap();
    (out.status.success(), String::from_utf8(out.stdout).unwrap(), String::from_utf8(out.stderr).unwrap())
}

/// A `moat serve` (in process) on `db`, as `TestApp` runs one, with a client credentials client.
struct Served {
    base: String,
    store: DynStore,
    issuer: String,
    client: (String, String),
    shutdown: oneshot::Sender<()>,
    handle: tokio::task::JoinHandle<anyhow::Result<()>>,
}

async fn serve(db: &str) -> Served {
    let env: HashMap<String, String> = HashMap::from([("MOAT_RESOURCE_CACHE_SECONDS".into(), "0".into())]);
    let overrides =
        Overrides { listen: Some("127.0.0.1:0".parse().unwrap()), public_url: None, database_url: Some(db.into()) };
    let config = Config::load_with(None, &|k| env.get(k).cloned(), &overrides).unwrap();
    let app = Application::build(config).await.unwrap();
    let base = app.base_url().to_owned();
    let store = app.store();
    let resource = Resource {
        id: ResourceId::generate(),
        name: "Agent MCP".into(),
        server_url: "https://agent.example.com/mcp".into(),
        scopes: vec![ScopeDef { name: "run".into(), description: String::new() }],
        default_scopes: vec!["run".into()],
        dcr_enabled: false,
        cimd_enabled: false,
        cimd_allowed_hosts: vec![],
        access_token_ttl: 3600,
        refresh_token_ttl: 30 * 86400,
        refresh_idle_ttl: 14 * 86400,
        created_at: 0,
        updated_at: 0,
    };
    store.create_resource(&resource).await.unwrap();
    let secret = random_secret();
    let client = Client {
        id: ClientId::generate(),
        resource_id: resource.id.clone(),
        kind: ClientKind::PreRegistered,
        name: "Agent".into(),
        redirect_uris: vec![],
        grant_types: vec![GrantType::ClientCredentials],
        auth_method: AuthMethod::ClientSecretBasic,
        secret_hash: Some(moat_server::crypto::sha256_hex(secret.as_bytes())),
        secret_expires_at: Some(0),
        metadata: json!({}),
        fingerprint: None,
        access_token_ttl: None,
        disabled: false,
        created_at: 0,
        updated_at: 0,
        last_used_at: None,
    };
    store.create_client(&client).await.unwrap();
    let issuer = format!("{base}/resources/{}", resource.id);
    let (shutdown, rx) = oneshot::channel::<()>();
    let handle = tokio::spawn(app.run_until(async move {
        let _ = rx.await;
    }));
    Served { base, store, issuer, client: (client.id.as_str().to_owned(), secret), shutdown, handle }
}

impl Served {
    /// A client credentials grant: status and body.
    async fn token(&self) -> (u16, Value) {
        let resp = reqwest::Client::new()
            .post(format!("{}/oauth/token", self.issuer))
            .basic_auth(&self.client.0, Some(&self.client.1))
            .form(&[("grant_type", "client_credentials")])
            .timeout(Duration::from_secs(10))
            .send()
            .await
            .unwrap();
        let status = resp.status().as_u16();
        let body = resp.text().await.unwrap();
        (status, serde_json::from_str(&body).unwrap_or(Value::String(body)))
    }

    async fn jwks(&self) -> Value {
        reqwest::get(format!("{}/keys", self.base)).await.unwrap().json().await.unwrap()
    }

    async fn stop(self) {
        let _ = self.shutdown.send(());
        self.handle.await.unwrap().unwrap();
    }
}

#[tokio::test]
async fn keys_rotate_before_the_first_serve_gives_a_key_that_signs_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("moat.db").display());
    let (ok, _, err) = moat(&dir, &db, &["migrate"]).await;
    assert!(ok, "{err}");
    let before = unix_now();
    let (ok, out, err) = moat(&dir, &db, &["keys", "rotate", "--json"]).await;
    assert!(ok, "{err}");
    let rotated: Value = serde_json::from_str(&out).unwrap();
    // Nothing signs yet, so nothing can have cached a JWKS without the new key: it signs now.
    assert!(rotated["activates_at"].as_i64().unwrap() <= unix_now(), "{rotated}");
    assert!(rotated["activates_at"].as_i64().unwrap() >= before, "{rotated}");
    let (ok, out, err) = moat(&dir, &db, &["keys", "rotate"]).await;
    assert!(ok, "{err}");
    // The second rotation has a key signing: its key waits for the publish delay.
    assert!(!out.contains("signs now"), "{out}");

    let app = serve(&db).await;
    let (status, body) = app.token().await;
    assert_eq!(status, 200, "{body}");
    let token = body["access_token"].as_str().unwrap();
    assert_eq!(jwt_parts(token).0["kid"], rotated["kid"], "the rotated key signs; serve added none");
    let stored = app.store.list_signing_keys().await.unwrap();
    assert_eq!(stored.len(), 2, "{:#?}", brief(&stored));
    let jwks = app.jwks().await;
    assert_eq!(jwks["keys"].as_array().unwrap().len(), 2, "{jwks}");
    app.stop().await;
}

#[tokio::test]
async fn serve_adds_a_key_that_signs_at_once_when_no_stored_key_can_sign() {
    let dir = tempfile::tempdir().unwrap();
    let db = format!("sqlite://{}", dir.path().join("moat.db").display());
    let (ok, _, err) = moat(&dir, &db, &["migrate"]).await;
    assert!(ok, "{err}");
    // A database an older `moat keys rotate` left with only a key that is not signing yet:
    // made by the CLI with a key already stored (so the master key file exists), then the first
    // key deleted behind its back.
    let (ok, _, err) = moat(&dir, &db, &["keys", "rotate"]).await;
    assert!(ok, "{err}");
    {
        let store = SqliteStore::connect(&db, &ConnectOptions::default()).await.unwrap();
        let first = store.list_signing_keys().await.unwrap().remove(0);
        let mut conn = sqlx::SqliteConnection::connect(&db).await.unwrap();
        let pending = unix_now() + DELAY;
        sqlx::query("UPDATE signing_keys SET activates_at = ? WHERE kid = ?")
            .bind(pending)
            .bind(&first.kid)
            .execute(&mut conn)
            .await
            .unwrap();
        conn.close().await.unwrap();
        store.close().await;
    }
    let app = serve(&db).await;
    let (status, body) = app.token().await;
    assert_eq!(status, 200, "{body}");
    let stored = app.store.list_signing_keys().await.unwrap();
    assert_eq!(stored.len(), 2, "{:#?}", brief(&stored));
    assert_eq!(stored.iter().filter(|k| k.retires_at.is_none()).count(), 1, "{:#?}", brief(&stored));
    app.stop().await;
}
