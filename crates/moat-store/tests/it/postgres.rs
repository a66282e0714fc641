//! The PostgreSQL backend: the conformance suite, each check in a fresh schema of its own (so
//! checks are isolated and run in parallel), plus what only a shared server has: several Moat
//! instances (several pools) racing on one database, concurrent migrations, URL routing, TLS,
//! and the schema staying the twin of SQLite's.
//!
//! Server: `MOAT_TEST_POSTGRES_URL` if set (then it must be reachable: CI must not skip
//! silently), else `postgres://postgres@127.0.0.1:5432/test` if a server answers there, else
//! every check prints why it skips and passes (DESIGN.md §11).

use std::collections::BTreeMap;
use std::io::Write as _;
use std::str::FromStr;
use std::sync::mpsc::Sender;
use std::sync::{Arc, LazyLock, OnceLock};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use moat_core::ids::{random_id, random_secret};
use moat_store::{ConnectOptions, DynStore, PgStore, RedeemOutcome, RotateOutcome, Rotation, SqliteStore, Store};
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{ConnectOptions as _, Connection, PgConnection};
use tokio::sync::{Barrier, OnceCell};
use tokio::task::JoinSet;

use crate::fixtures::{self, NOW};

const DEFAULT_URL: &str = "postgres://postgres@127.0.0.1:5432/test";
const ENV_URL: &str = "MOAT_TEST_POSTGRES_URL";
/// Every scratch schema is named `moat_test_<unix seconds>_<random>`.
const SCHEMA_PREFIX: &str = "moat_test_";
/// Scratch schemas older than this are left over from an earlier run (its last drops were still
/// queued when it exited, or it was interrupted) and are swept. Far longer than a run lasts, so
/// a run going on in parallel keeps its schemas.
const STALE_AFTER_SECS: u64 = 900;
/// Most scratch schemas dropped by one statement.
const DROP_BATCH: usize = 16;

fn unix_now() -> u64 {
    SystemTime::now().duration_since(UNIX_EPOCH).unwrap().as_secs()
}

/// The server URL, probed once per test binary; `Err` says why there is none to test against.
async fn server() -> Result<&'static str, &'static str> {
    static SERVER: OnceCell<Result<String, String>> = OnceCell::const_new();
    SERVER.get_or_init(probe).await.as_deref().map_err(String::as_str)
}

async fn probe() -> Result<String, String> {
    let explicit = std::env::var(ENV_URL).ok().filter(|u| !u.is_empty());
    let url = explicit.clone().unwrap_or_else(|| DEFAULT_URL.to_owned());
    let connected = tokio::time::timeout(Duration::from_secs(5), PgConnection::connect(&url)).await;
    let mut conn = match connected {
        Ok(Ok(conn)) => conn,
        Ok(Err(e)) if explicit.is_none() => return Err(format!("no server at {url} ({e}); {ENV_URL} is not set")),
        Err(_) if explicit.is_none() => return Err(format!("no answer from {url} within 5 s; {ENV_URL} is not set")),
        Ok(Err(e)) => panic!("{ENV_URL} is set but {url} is unreachable: {e}"),
        Err(_) => panic!("{ENV_URL} is set but {url} did not answer within 5 s"),
    };
    sweep_stale_schemas(&mut conn, &url).await;
    conn.close().await.unwrap();
    Ok(url)
}

/// Queues for dropping the scratch schemas an earlier run left behind.
async fn sweep_stale_schemas(conn: &mut PgConnection, url: &str) {
    let names: Vec<String> = sqlx::query_scalar("SELECT nspname::TEXT FROM pg_namespace WHERE nspname LIKE $1")
        .bind(format!("{SCHEMA_PREFIX}%"))
        .fetch_all(&mut *conn)
        .await
        .unwrap();
    let cutoff = unix_now().saturating_sub(STALE_AFTER_SECS);
    for name in names {
        let created = name.strip_prefix(SCHEMA_PREFIX).and_then(|rest| rest.split('_').next()?.parse::<u64>().ok());
        if created.is_some_and(|t| t < cutoff) {
            dropper().send((url.to_owned(), name)).ok();
        }
    }
}

/// A scratch schema on the test server, dropped (with everything in it) after the guard is.
pub struct Schema {
    url: String,
    name: String,
}

impl Schema {
    /// A new empty schema, or `None` (after saying why) when there is no server.
    async fn create() -> Option<Self> {
        let url = match server().await {
            Ok(url) => url,
            Err(why) => {
                // Straight to stderr, not `eprintln!`: the test harness captures the print macros
                // of passing tests, and a skip must be visible.
                writeln!(std::io::stderr(), "skipping PostgreSQL conformance: {why}").ok();
                return None;
            }
        };
        let name = format!("{SCHEMA_PREFIX}{}_{}", unix_now(), random_id(""));
        let mut conn = PgConnection::connect(url).await.unwrap();
        sqlx::query(&format!("CREATE SCHEMA \"{name}\"")).execute(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        Some(Self { url: url.to_owned(), name })
    }

    /// Connection options whose sessions work in this schema only.
    fn options(&self) -> PgConnectOptions {
        PgConnectOptions::from_str(&self.url).unwrap().options([("search_path", self.name.as_str())])
    }

    /// A new, unmigrated store (one "instance": a pool of its own) on this schema.
    async fn store(&self) -> PgStore {
        let opts = ConnectOptions {
            max_connections: 4,
            acquire_timeout: Duration::from_secs(30),
            ..ConnectOptions::default()
        };
        PgStore::connect_with(self.options(), &opts).await.unwrap()
    }

    /// A plain connection into the schema, to look at rows directly.
    async fn conn(&self) -> PgConnection {
        self.options().connect().await.unwrap()
    }

    /// Runs a `SELECT count(*) …` with text parameters.
    async fn count(&self, sql: &str, binds: &[&str]) -> i64 {
        let mut conn = self.conn().await;
        let mut query = sqlx::query_scalar(sql);
        for b in binds {
            query = query.bind(*b);
        }
        let n = query.fetch_one(&mut conn).await.unwrap();
        conn.close().await.unwrap();
        n
    }
}

impl Drop for Schema {
    /// Hands the schema to the background dropper: `DROP SCHEMA … CASCADE` costs a few hundred
    /// milliseconds of DDL commit, which no test needs to wait for. Best effort: drops still
    /// queued when the test binary exits are swept by a later run.
    fn drop(&mut self) {
        dropper().send((self.url.clone(), self.name.clone())).ok();
    }
}

/// The queue of (server URL, schema) to drop, served by one thread with a runtime and a
/// connection of its own (each test's runtime ends with the test). Whatever queued up while a
/// drop ran is dropped by the next statement together, so the queue keeps up with the tests
/// and little is left when the test binary exits.
fn dropper() -> &'static Sender<(String, String)> {
    static DROPPER: OnceLock<Sender<(String, String)>> = OnceLock::new();
    DROPPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<(String, String)>();
        std::thread::spawn(move || {
            let Ok(rt) = tokio::runtime::Builder::new_current_thread().enable_all().build() else { return };
            rt.block_on(async move {
                let mut conn: Option<PgConnection> = None;
                while let Ok((url, first)) = rx.recv() {
                    // At most a few schemas per statement: each table and index takes a lock,
                    // and a transaction's locks must fit the server's lock table.
                    let mut names = vec![first];
                    names.extend(rx.try_iter().take(DROP_BATCH - 1).map(|(_, name)| name));
                    if conn.is_none() {
                        conn = PgConnection::connect(&url).await.ok();
                    }
                    let Some(c) = conn.as_mut() else { continue };
                    let list = names.iter().map(|n| format!("\"{n}\"")).collect::<Vec<_>>().join(", ");
                    if let Err(e) = sqlx::query(&format!("DROP SCHEMA IF EXISTS {list} CASCADE")).execute(c).await {
                        eprintln!("could not drop scratch schemas {list}: {e}");
                        conn = None;
                    }
                }
            });
        });
        tx
    })
}

/// The migrations, without sqlx's advisory lock: a scratch schema is private to one test, so
/// nothing can race its migration, and the lock (one per database) would otherwise serialise
/// every test's migration. `PgStore::migrate` itself, with the lock, is exercised by the
/// `lifecycle` check and the concurrent-migration tests below.
static UNLOCKED_MIGRATOR: LazyLock<Migrator> = LazyLock::new(|| {
    let mut m = sqlx::migrate!("migrations/postgres");
    m.set_locking(false);
    m
});

/// A fresh, migrated store in a schema of its own (the guard drops the schema).
async fn pg_store() -> Option<(DynStore, Schema)> {
    let schema = Schema::create().await?;
    let mut conn = schema.conn().await;
    UNLOCKED_MIGRATOR.run(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    Some((Arc::new(schema.store().await), schema))
}

mod conformance {
    crate::conformance::conformance_suite!(super::pg_store);
}

/// Two instances (two pools) on one schema, both migrated.
async fn two_instances() -> Option<(DynStore, DynStore, Schema)> {
    let schema = Schema::create().await?;
    let a = schema.store().await;
    a.migrate().await.unwrap();
    let b = schema.store().await;
    b.migrate().await.unwrap();
    Some((Arc::new(a), Arc::new(b), schema))
}

const RACERS: usize = 32;

/// Many redemptions of one code, split across two instances: exactly one wins, every other one
/// is a replay (which revokes the winner's family), and only the winner's family exists.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_redeem_a_code_once() {
    let Some((a, b, schema)) = two_instances().await else { return };
    let w = fixtures::world(&a).await;
    let req = fixtures::request(&w.resource, &w.client);
    a.create_authorization_request(&req).await.unwrap();
    let code = fixtures::code(&w.resource, &w.client, &w.user.id);
    assert!(a.complete_authorization(&req.id, &code, None).await.unwrap());

    let start = Arc::new(Barrier::new(RACERS));
    let mut tasks = JoinSet::new();
    for i in 0..RACERS {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let hash = code.code_hash.clone();
        let start = start.clone();
        tasks.spawn(async move {
            let nf = fixtures::new_family();
            start.wait().await;
            (nf.id.clone(), store.redeem_code(&hash, NOW, &|_| Ok(()), Some(&nf)).await.unwrap())
        });
    }
    let mut winners = Vec::new();
    let mut revoked = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            (id, RedeemOutcome::Redeemed(c)) => {
                assert_eq!(c.family_id.as_ref(), Some(&id));
                winners.push(id);
            }
            (_, RedeemOutcome::Replayed { revoked_family }) => revoked.push(revoked_family),
            (_, other) => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(winners.len(), 1, "exactly one redemption wins");
    assert_eq!(revoked.len(), RACERS - 1);
    assert!(revoked.iter().all(|f| f.as_ref() == Some(&winners[0])), "every replay revokes the winner's family");
    assert_eq!(schema.count("SELECT count(*) FROM refresh_families", &[]).await, 1, "never a second family");
    assert_eq!(schema.count("SELECT count(*) FROM refresh_tokens", &[]).await, 1);
    // Both instances see the same, revoked, family.
    for store in [&a, &b] {
        assert_eq!(store.get_family(&winners[0]).await.unwrap().unwrap().revoked_at, Some(NOW));
    }
}

/// Many refreshes of one token, split across two instances: exactly one rotation stores the
/// successor, every other one is a grace replay returning that same successor, and the family
/// stays whole and unrevoked.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_rotate_a_token_once() {
    let Some((a, b, schema)) = two_instances().await else { return };
    let g = fixtures::grant(&a).await;
    let successor = random_secret();

    let start = Arc::new(Barrier::new(RACERS));
    let mut tasks = JoinSet::new();
    for i in 0..RACERS {
        let store = if i % 2 == 0 { a.clone() } else { b.clone() };
        let presented = g.family.first_token_hash.clone().unwrap();
        let successor = successor.clone();
        let client = g.world.client.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            let rotation = Rotation {
                presented_hash: &presented,
                successor_hash: &successor,
                client_id: &client.id,
                resource_id: &client.resource_id,
                requested_scopes: None,
                now: NOW,
                grace_seconds: 60,
                idle_ttl: 86_400,
            };
            store.rotate_refresh_token(&rotation).await.unwrap()
        });
    }
    let mut rotated = Vec::new();
    let mut replays = Vec::new();
    while let Some(done) = tasks.join_next().await {
        match done.unwrap() {
            RotateOutcome::Rotated { family, successor_expires_at } => rotated.push((family.id, successor_expires_at)),
            RotateOutcome::GraceReplay { family, successor_expires_at } => {
                replays.push((family.id, successor_expires_at))
            }
            other => panic!("unexpected outcome {other:?}"),
        }
    }
    assert_eq!(rotated.len(), 1, "exactly one rotation wins");
    assert_eq!(replays.len(), RACERS - 1);
    assert!(replays.iter().all(|r| *r == rotated[0]), "every replay returns the same successor");
    assert_eq!(rotated[0].0, g.family.id);

    let children = "SELECT count(*) FROM refresh_tokens WHERE parent_hash = $1";
    assert_eq!(
        schema.count(children, &[g.family.first_token_hash.as_deref().unwrap()]).await,
        1,
        "exactly one successor row"
    );
    assert_eq!(schema.count("SELECT count(*) FROM refresh_tokens", &[]).await, 2);
    assert_eq!(schema.count("SELECT count(*) FROM refresh_families", &[]).await, 1, "never a second family");
    let (tok, fam) = b.get_refresh_token(&successor).await.unwrap().unwrap();
    assert_eq!(tok.parent_hash.as_deref(), Some(g.family.first_token_hash.as_deref().unwrap()));
    assert_eq!(fam.revoked_at, None);
}

/// A consent form submitted twice, each submission reaching another instance: one completion
/// stores its code, the other finds the pending request gone.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_instances_complete_an_authorization_once() {
    let Some((a, b, schema)) = two_instances().await else { return };
    let w = fixtures::world(&a).await;
    for _ in 0..8 {
        let req = fixtures::request(&w.resource, &w.client);
        a.create_authorization_request(&req).await.unwrap();
        let consent = fixtures::consent(&w.user.id, &w.client, &["todo:read"]);
        let (first, second) =
            (fixtures::code(&w.resource, &w.client, &w.user.id), fixtures::code(&w.resource, &w.client, &w.user.id));
        let (x, y) = tokio::join!(
            a.complete_authorization(&req.id, &first, Some(&consent)),
            b.complete_authorization(&req.id, &second, Some(&consent)),
        );
        assert!(x.unwrap() ^ y.unwrap(), "exactly one completion wins");
    }
    assert_eq!(schema.count("SELECT count(*) FROM authorization_codes", &[]).await, 8);
    assert_eq!(schema.count("SELECT count(*) FROM consents", &[]).await, 1);
}

/// Revoking a client's grants while they are being refreshed on two instances (disabling it,
/// then deleting it): every call succeeds (lock ordering, and a retry should the database
/// still pick a deadlock victim), and no family is left refreshable.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn revocations_racing_rotations_leave_nothing_refreshable() {
    const GRANTS: usize = 12;
    let Some((a, b, schema)) = two_instances().await else { return };
    let w = fixtures::world(&a).await;
    let client = w.client.clone();
    let mut grants = Vec::new();
    for _ in 0..GRANTS {
        let w = fixtures::World { resource: w.resource.clone(), client: w.client.clone(), user: w.user.clone() };
        grants.push(fixtures::grant_in(&a, w).await.family);
    }

    for revoke in ["disable", "delete"] {
        let start = Arc::new(Barrier::new(GRANTS + 1));
        let mut tasks = JoinSet::new();
        for (i, fam) in grants.iter().enumerate() {
            let store = if i % 2 == 0 { a.clone() } else { b.clone() };
            let (presented, client, start) = (fam.first_token_hash.clone().unwrap(), client.clone(), start.clone());
            tasks.spawn(async move {
                start.wait().await;
                let successor = random_secret();
                let rotation = Rotation {
                    presented_hash: &presented,
                    successor_hash: &successor,
                    client_id: &client.id,
                    resource_id: &client.resource_id,
                    requested_scopes: None,
                    now: NOW + 1,
                    grace_seconds: 60,
                    idle_ttl: 86_400,
                };
                store.rotate_refresh_token(&rotation).await.map(|_| ())
            });
        }
        let revoker = b.clone();
        let id = client.id.clone();
        start.wait().await;
        match revoke {
            "disable" => assert!(revoker.set_client_disabled(&w.resource.id, &id, true, NOW + 1).await.unwrap()),
            _ => assert!(revoker.delete_client(&w.resource.id, &id).await.unwrap()),
        }
        while let Some(done) = tasks.join_next().await {
            done.unwrap().unwrap();
        }
        if revoke == "disable" {
            let live = "SELECT count(*) FROM refresh_families WHERE revoked_at IS NULL";
            assert_eq!(schema.count(live, &[]).await, 0, "every family is revoked, rotated or not");
        }
    }
    assert_eq!(schema.count("SELECT count(*) FROM refresh_families", &[]).await, 0);
    assert_eq!(schema.count("SELECT count(*) FROM refresh_tokens", &[]).await, 0);
}

/// Instances starting together migrate together: every call succeeds, the migrations are
/// applied exactly once, and both instances work on the result.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn concurrent_migrations_apply_once() {
    let Some(schema) = Schema::create().await else { return };
    let a: DynStore = Arc::new(schema.store().await);
    let b: DynStore = Arc::new(schema.store().await);
    let start = Arc::new(Barrier::new(4));
    let mut tasks = JoinSet::new();
    for store in [&a, &b, &a, &b] {
        let store = store.clone();
        let start = start.clone();
        tasks.spawn(async move {
            start.wait().await;
            store.migrate().await
        });
    }
    while let Some(done) = tasks.join_next().await {
        done.unwrap().unwrap();
    }
    let migrations = std::fs::read_dir(concat!(env!("CARGO_MANIFEST_DIR"), "/migrations/postgres")).unwrap().count();
    let applied = schema.count("SELECT count(*) FROM _sqlx_migrations WHERE success", &[]).await;
    assert_eq!(applied, i64::try_from(migrations).unwrap());
    let w = fixtures::world(&a).await;
    assert_eq!(b.get_client(&w.resource.id, &w.client.id).await.unwrap(), Some(w.client));
}

/// A failed migration must not leave sqlx's advisory lock held on a pooled connection (it would
/// block every later migration on the database): after the obstacle is gone, migrating again
/// succeeds promptly.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_migration_releases_its_lock() {
    let Some(schema) = Schema::create().await else { return };
    let store = schema.store().await;
    let mut conn = schema.conn().await;
    sqlx::query("CREATE TABLE resources (id TEXT)").execute(&mut conn).await.unwrap();
    let err = store.migrate().await.unwrap_err();
    assert!(matches!(err, moat_store::StoreError::Backend(_)), "{err:?}");
    sqlx::query("DROP TABLE resources").execute(&mut conn).await.unwrap();
    conn.close().await.unwrap();
    tokio::time::timeout(Duration::from_secs(20), store.migrate()).await.expect("migration lock was released").unwrap();
    store.ping().await.unwrap();
}

/// Transactions state their isolation level: on a server whose default is SERIALIZABLE the
/// racing operations behave exactly the same (no serialization failures leak out).
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn serializable_server_default_changes_nothing() {
    let Some(schema) = Schema::create().await else { return };
    let opts = schema.options().options([("default_transaction_isolation", "serializable")]);
    let store =
        PgStore::connect_with(opts, &ConnectOptions { max_connections: 4, ..ConnectOptions::default() }).await.unwrap();
    store.migrate().await.unwrap();
    let store: DynStore = Arc::new(store);
    crate::conformance::concurrent_redemptions_redeem_once(store.clone()).await;
    crate::conformance::concurrent_rotations_rotate_once(store).await;
}

/// `moat_store::connect` routes `postgres://` and `postgresql://` URLs to PostgreSQL, and
/// libpq-style `options` in the URL select the schema.
#[tokio::test]
async fn connect_routes_postgres_urls_and_honours_the_schema_option() {
    let Some(schema) = Schema::create().await else { return };
    for (i, scheme) in ["postgres://", "postgresql://"].into_iter().enumerate() {
        let rest = schema.url.split_once("://").unwrap().1;
        let sep = if rest.contains('?') { '&' } else { '?' };
        let url = format!("{scheme}{rest}{sep}options=-c%20search_path%3D{}", schema.name);
        let store = moat_store::connect(&url, &ConnectOptions::default()).await.unwrap();
        assert_eq!(store.backend(), "postgres");
        store.migrate().await.unwrap();
        store.create_user(&fixtures::user(&fixtures::unique_email())).await.unwrap();
        assert_eq!(schema.count("SELECT count(*) FROM users", &[]).await, i64::try_from(i + 1).unwrap());
    }
    // A URL that cannot be parsed is a clean error.
    assert!(moat_store::connect("postgres://[bad", &ConnectOptions::default()).await.is_err());
}

/// `sslmode=require` in the URL gives TLS connections (rustls), when the server offers TLS.
#[tokio::test]
async fn tls_when_the_url_requires_it() {
    let Some(schema) = Schema::create().await else { return };
    let mut admin = schema.conn().await;
    let ssl: String = sqlx::query_scalar("SHOW ssl").fetch_one(&mut admin).await.unwrap();
    if ssl != "on" {
        eprintln!("skipping TLS check: the PostgreSQL server has ssl = {ssl}");
        return;
    }
    let app = random_id("moat_tls_");
    let rest = schema.url.split_once("://").unwrap().1;
    let sep = if rest.contains('?') { '&' } else { '?' };
    let url = format!("postgres://{rest}{sep}sslmode=require&application_name={app}");
    let store = PgStore::connect(&url, &ConnectOptions::default()).await.unwrap();
    store.ping().await.unwrap();
    let encrypted: Vec<bool> = sqlx::query_scalar(
        "SELECT s.ssl FROM pg_stat_ssl s JOIN pg_stat_activity a ON a.pid = s.pid WHERE a.application_name = $1",
    )
    .bind(&app)
    .fetch_all(&mut admin)
    .await
    .unwrap();
    assert!(!encrypted.is_empty() && encrypted.iter().all(|e| *e), "{encrypted:?}");
    store.close().await;
}

/// A foreign key as (table, columns, referenced table, referenced columns, on delete), columns
/// comma-joined in key order.
type ForeignKey = (String, String, String, String, String);

/// The PostgreSQL schema stays the twin of SQLite's (migrations/sqlite says it must): the same
/// tables with the same columns in the same order and nullability, the same index names, and
/// the same foreign keys (columns, referenced columns, delete action).
#[tokio::test]
async fn schema_matches_sqlite() {
    let Some(schema) = Schema::create().await else { return };
    schema.store().await.migrate().await.unwrap();
    let mut pg = schema.conn().await;
    let pg_columns: Vec<(String, String, bool)> = sqlx::query_as(
        "SELECT table_name::TEXT, column_name::TEXT, is_nullable = 'NO' FROM information_schema.columns \
         WHERE table_schema = current_schema() AND table_name <> '_sqlx_migrations' \
         ORDER BY table_name, ordinal_position",
    )
    .fetch_all(&mut pg)
    .await
    .unwrap();
    // Indexes created by CREATE INDEX (not those backing primary keys or unique constraints).
    let mut pg_indexes: Vec<String> = sqlx::query_scalar(
        "SELECT i.relname::TEXT FROM pg_index x JOIN pg_class i ON i.oid = x.indexrelid \
         JOIN pg_class t ON t.oid = x.indrelid JOIN pg_namespace n ON n.oid = t.relnamespace \
         WHERE n.nspname = current_schema() AND t.relname <> '_sqlx_migrations' \
         AND NOT EXISTS (SELECT 1 FROM pg_constraint c WHERE c.conindid = x.indexrelid)",
    )
    .fetch_all(&mut pg)
    .await
    .unwrap();
    pg_indexes.sort();
    let mut pg_unique: Vec<String> = sqlx::query_scalar(
        "SELECT c.conname::TEXT FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = 'u' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut pg)
    .await
    .unwrap();
    pg_unique.sort();
    let mut pg_fks: Vec<ForeignKey> = sqlx::query_as(
        "SELECT c.conrelid::regclass::TEXT, \
           (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(c.conkey) WITH ORDINALITY k(num, n) \
              JOIN pg_attribute a ON a.attrelid = c.conrelid AND a.attnum = k.num), \
           c.confrelid::regclass::TEXT, \
           (SELECT string_agg(a.attname, ',' ORDER BY k.n) FROM unnest(c.confkey) WITH ORDINALITY k(num, n) \
              JOIN pg_attribute a ON a.attrelid = c.confrelid AND a.attnum = k.num), \
           CASE c.confdeltype WHEN 'c' THEN 'CASCADE' WHEN 'n' THEN 'SET NULL' ELSE 'NO ACTION' END \
         FROM pg_constraint c JOIN pg_namespace n ON n.oid = c.connamespace \
         WHERE c.contype = 'f' AND n.nspname = current_schema()",
    )
    .fetch_all(&mut pg)
    .await
    .unwrap();
    pg_fks.sort();

    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("twin.db").display());
    let lite = SqliteStore::connect(&url, &ConnectOptions::default()).await.unwrap();
    lite.migrate().await.unwrap();
    let mut conn = sqlx::SqliteConnection::connect(&url).await.unwrap();
    let tables: Vec<String> = sqlx::query_scalar(
        "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%' \
         AND name <> '_sqlx_migrations' ORDER BY name",
    )
    .fetch_all(&mut conn)
    .await
    .unwrap();
    let mut lite_columns = Vec::new();
    for table in &tables {
        let cols: Vec<(String, bool, i64)> =
            sqlx::query_as("SELECT name, \"notnull\" = 1, pk FROM pragma_table_info(?) ORDER BY cid")
                .bind(table)
                .fetch_all(&mut conn)
                .await
                .unwrap();
        lite_columns.extend(cols.into_iter().map(|(c, notnull, pk)| (table.clone(), c, notnull || pk > 0)));
    }
    let mut lite_indexes: Vec<String> =
        sqlx::query_scalar("SELECT name FROM sqlite_master WHERE type = 'index' AND sql IS NOT NULL")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    lite_indexes.sort();
    // SQLite keeps named UNIQUE constraints only in the table's SQL.
    let table_sql: Vec<String> =
        sqlx::query_scalar("SELECT sql FROM sqlite_master WHERE type = 'table'").fetch_all(&mut conn).await.unwrap();
    let mut lite_unique: Vec<String> = table_sql
        .iter()
        .flat_map(|sql| sql.split("CONSTRAINT ").skip(1))
        .filter_map(|rest| {
            let (name, def) = rest.split_once(char::is_whitespace)?;
            def.trim_start().starts_with("UNIQUE").then(|| name.to_owned())
        })
        .collect();
    lite_unique.sort();
    let mut lite_fks: Vec<ForeignKey> = Vec::new();
    for table in &tables {
        let rows: Vec<(i64, String, String, String, String)> = sqlx::query_as(
            "SELECT id, \"table\", \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?) ORDER BY id, seq",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        // One row per column of a key, in key order: join the columns of each key.
        let mut by_id: BTreeMap<i64, ForeignKey> = BTreeMap::new();
        for (id, parent, from, to, on_delete) in rows {
            match by_id.get_mut(&id) {
                Some(fk) => {
                    fk.1 = format!("{},{from}", fk.1);
                    fk.3 = format!("{},{to}", fk.3);
                }
                None => {
                    by_id.insert(id, (table.clone(), from, parent, to, on_delete));
                }
            }
        }
        lite_fks.extend(by_id.into_values());
    }
    lite_fks.sort();

    let by_table = |cols: &[(String, String, bool)]| {
        let mut m: BTreeMap<String, Vec<(String, bool)>> = BTreeMap::new();
        for (t, c, n) in cols {
            m.entry(t.clone()).or_default().push((c.clone(), *n));
        }
        m
    };
    assert_eq!(by_table(&pg_columns), by_table(&lite_columns));
    assert_eq!(pg_indexes, lite_indexes);
    assert_eq!(pg_unique, lite_unique);
    assert_eq!(pg_fks, lite_fks);
    // Whatever names a client references it by (resource, id) (DESIGN.md §5).
    let to_clients: Vec<_> = pg_fks.iter().filter(|fk| fk.2 == "clients").collect();
    assert_eq!(to_clients.len(), 4, "{to_clients:?}");
    assert!(to_clients.iter().all(|fk| fk.1 == "resource_id,client_id" && fk.3 == "resource_id,id"), "{to_clients:?}");
    assert!(!pg_unique.is_empty() && pg_indexes.len() > 20);
}
