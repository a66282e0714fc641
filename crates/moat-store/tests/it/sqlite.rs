//! The SQLite backend: the conformance suite on a fresh temp-file database per check, plus what
//! only SQLite has (URL forms, in-memory databases, several processes sharing one file).

use std::sync::Arc;
use std::time::{Duration, Instant};

use moat_store::{ConnectOptions, DynStore, SqliteStore, Store};
use sqlx::Connection;
use tempfile::TempDir;

use crate::fixtures;

/// A fresh, migrated store on a new file in its own temp dir (kept alive by the guard).
async fn sqlite_store() -> Option<(DynStore, TempDir)> {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("moat.db").display());
    let store = SqliteStore::connect(&url, &ConnectOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    Some((Arc::new(store), dir))
}

mod conformance {
    crate::conformance::conformance_suite!(super::sqlite_store);
}

#[tokio::test]
async fn url_forms_open_and_create_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let a = dir.path().join("a.db");
    let b = dir.path().join("nested-b.db");
    for url in [format!("sqlite://{}", a.display()), format!("sqlite:{}", b.display())] {
        let store = SqliteStore::connect(&url, &ConnectOptions::default()).await.unwrap();
        store.migrate().await.unwrap();
        let user = fixtures::user(&fixtures::unique_email());
        store.create_user(&user).await.unwrap();
        assert_eq!(store.get_user(&user.id).await.unwrap(), Some(user));
        store.close().await;
    }
    assert!(a.exists() && b.exists());
    // Reopening keeps the data and migrating again is a no-op.
    let store = SqliteStore::connect(&format!("sqlite://{}", a.display()), &ConnectOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    assert_eq!(store.list_users().await.unwrap().len(), 1);
    assert_eq!(store.backend(), "sqlite");
}

#[tokio::test]
async fn in_memory_database_works() {
    let store: DynStore = moat_store::connect("sqlite::memory:", &ConnectOptions::default()).await.unwrap();
    store.migrate().await.unwrap();
    let w = fixtures::world(&store).await;
    assert_eq!(store.get_client(&w.resource.id, &w.client.id).await.unwrap(), Some(w.client));
    assert_eq!(store.list_resources().await.unwrap(), vec![w.resource]);
}

#[tokio::test]
async fn unsupported_urls_are_refused() {
    assert!(moat_store::connect("mysql://x", &ConnectOptions::default()).await.is_err());
}

#[tokio::test]
async fn journal_is_wal_with_foreign_keys() {
    let (_store, dir) = sqlite_store().await.unwrap();
    let path = dir.path().join("moat.db");
    let mut conn = sqlx::SqliteConnection::connect(&format!("sqlite://{}", path.display())).await.unwrap();
    let mode: String = sqlx::query_scalar("PRAGMA journal_mode").fetch_one(&mut conn).await.unwrap();
    assert_eq!(mode.to_lowercase(), "wal");
    // Every table the migrations create has the expected cascading foreign keys (spot check).
    let fks: Vec<(String, String)> =
        sqlx::query_as("SELECT \"table\", on_delete FROM pragma_foreign_key_list('refresh_tokens')")
            .fetch_all(&mut conn)
            .await
            .unwrap();
    assert_eq!(fks, vec![("refresh_families".to_owned(), "CASCADE".to_owned())]);
    // A client is referenced by (resource, id): the same metadata-document URL may be a client
    // of several resources (DESIGN.md §5).
    for table in ["authorization_requests", "consents", "refresh_families", "authorization_codes"] {
        let cols: Vec<(String, String, String)> = sqlx::query_as(
            "SELECT \"from\", \"to\", on_delete FROM pragma_foreign_key_list(?) WHERE \"table\" = 'clients' \
             ORDER BY seq",
        )
        .bind(table)
        .fetch_all(&mut conn)
        .await
        .unwrap();
        let cascade = || "CASCADE".to_owned();
        let expected = vec![
            ("resource_id".to_owned(), "resource_id".to_owned(), cascade()),
            ("client_id".to_owned(), "id".to_owned(), cascade()),
        ];
        assert_eq!(cols, expected, "{table}");
    }
}

/// The server and a management command (two processes in real life) open the same file; while
/// one holds the write lock the other's write waits on the busy timeout and then succeeds.
#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn two_stores_on_one_file_both_write() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("shared.db").display());
    let opts = ConnectOptions { busy_timeout: Duration::from_secs(10), ..ConnectOptions::default() };
    let server: DynStore = Arc::new(SqliteStore::connect(&url, &opts).await.unwrap());
    server.migrate().await.unwrap();
    let cli: DynStore = Arc::new(SqliteStore::connect(&url, &opts).await.unwrap());
    cli.migrate().await.unwrap();

    // Both can write, interleaved.
    let w = fixtures::world(&server).await;
    let u = fixtures::user(&fixtures::unique_email());
    cli.create_user(&u).await.unwrap();
    assert_eq!(server.get_user(&u.id).await.unwrap(), Some(u));
    assert_eq!(cli.get_resource(&w.resource.id).await.unwrap(), Some(w.resource.clone()));

    // A third connection (standing in for another process mid-transaction) holds the lock.
    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
    sqlx::query("UPDATE users SET name = 'held' WHERE id = ?")
        .bind(w.user.id.as_str())
        .execute(&mut holder)
        .await
        .unwrap();
    let hold = Duration::from_millis(400);
    let release = tokio::spawn(async move {
        tokio::time::sleep(hold).await;
        sqlx::query("COMMIT").execute(&mut holder).await.unwrap();
    });

    let started = Instant::now();
    let blocked_user = fixtures::user(&fixtures::unique_email());
    let server_write = {
        let server = server.clone();
        let u = blocked_user.clone();
        tokio::spawn(async move { server.create_user(&u).await })
    };
    let cli_user = fixtures::user(&fixtures::unique_email());
    cli.create_user(&cli_user).await.unwrap();
    server_write.await.unwrap().unwrap();
    release.await.unwrap();
    assert!(started.elapsed() >= hold - Duration::from_millis(50), "the writes waited for the lock");

    for store in [&server, &cli] {
        assert!(store.get_user(&blocked_user.id).await.unwrap().is_some());
        assert!(store.get_user(&cli_user.id).await.unwrap().is_some());
        assert_eq!(store.get_user(&w.user.id).await.unwrap().unwrap().name.as_deref(), Some("held"));
    }
}

/// With a busy timeout shorter than the other writer's transaction the write fails cleanly with
/// a backend error (and no partial state), rather than hanging.
#[tokio::test]
async fn busy_timeout_bounds_the_wait() {
    let dir = tempfile::tempdir().unwrap();
    let url = format!("sqlite://{}", dir.path().join("busy.db").display());
    let opts = ConnectOptions { busy_timeout: Duration::from_millis(100), ..ConnectOptions::default() };
    let store = SqliteStore::connect(&url, &opts).await.unwrap();
    store.migrate().await.unwrap();

    let mut holder = sqlx::SqliteConnection::connect(&url).await.unwrap();
    sqlx::query("BEGIN IMMEDIATE").execute(&mut holder).await.unwrap();
    let u = fixtures::user(&fixtures::unique_email());
    let err = store.create_user(&u).await.unwrap_err();
    assert!(matches!(err, moat_store::StoreError::Backend(_)), "{err:?}");
    sqlx::query("ROLLBACK").execute(&mut holder).await.unwrap();
    // Once the lock is free the same store writes normally.
    store.create_user(&u).await.unwrap();
    assert!(store.get_user(&u.id).await.unwrap().is_some());
}
