//! SQLite backend (DESIGN.md §7): WAL journal, `synchronous=NORMAL`, foreign keys on, a busy
//! timeout, one writer connection plus a pool of readers.
//!
//! Why one writer: SQLite allows a single writer at a time. Funnelling every in-process write
//! through one pooled connection turns lock contention into an orderly queue on the pool, and
//! starting every write transaction with `BEGIN IMMEDIATE` takes the write lock up front, so a
//! writer in *another* process (a management command run while the server runs, DESIGN.md §8)
//! waits on the busy timeout instead of failing with an unrecoverable `SQLITE_BUSY` lock
//! upgrade. Readers use their own pool and see every committed write at once (WAL).
//!
//! Each aggregate's queries live in a submodule; this file holds the connection handling and
//! the [`Store`] implementation that delegates to them.

mod audit;
mod clients;
mod codes;
mod consents;
mod keys;
mod purge;
mod refresh;
mod requests;
mod resources;
mod revocation;
mod rows;
mod sessions;
mod users;

use std::str::FromStr;

use async_trait::async_trait;
use moat_core::ids::{ClientId, FamilyId, ResourceId, UserId};
use moat_core::model::{
    AuditEvent, AuthorizationCode, AuthorizationRequest, Client, Consent, NewFamily, RefreshFamily, RefreshToken,
    Resource, Session, SigningKeyRecord, User,
};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::{Sqlite, Transaction};

use crate::codec::db_error;
use crate::{
    AuditQuery, CodeCheck, ConnectOptions, PurgeStats, RedeemOutcome, Result, RotateOutcome, Rotation, Store,
    StoreError,
};

/// The embedded SQLite migrations (`migrations/sqlite`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/sqlite");

/// A write transaction on the single writer connection.
type WriteTx = Transaction<'static, Sqlite>;

/// How often an atomic operation re-evaluates after losing a race on a guarded update. With one
/// writer connection and `BEGIN IMMEDIATE` a race cannot actually happen here; the guard and the
/// retry keep the logic identical to backends with concurrent writers.
const MAX_ATTEMPTS: usize = 3;

/// The SQLite implementation of [`crate::Store`].
pub struct SqliteStore {
    /// Exactly one connection: every write goes through it.
    writer: SqlitePool,
    /// Read-only connections (the writer itself for in-memory databases, which cannot be
    /// shared between independent connections reliably).
    reader: SqlitePool,
}

impl SqliteStore {
    /// Opens (creating if missing) the database a `sqlite://path`, `sqlite:path` or
    /// `sqlite::memory:` URL names. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        let in_memory = is_in_memory(url)?;
        let base = SqliteConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid SQLite database URL: {e}")))?
            .foreign_keys(true)
            .busy_timeout(options.busy_timeout)
            .synchronous(SqliteSynchronous::Normal);

        if in_memory {
            // One connection kept open forever: the database lives exactly as long as it.
            let pool = SqlitePoolOptions::new()
                .max_connections(1)
                .min_connections(1)
                .idle_timeout(None)
                .max_lifetime(None)
                .acquire_timeout(options.acquire_timeout)
                .connect_with(base)
                .await
                .map_err(|e| db_error("open in-memory SQLite database", e))?;
            return Ok(Self { writer: pool.clone(), reader: pool });
        }

        // The writer connects first: it creates the file and switches it to WAL (a persistent
        // property of the file, so readers need not, and must not, change the journal mode).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .min_connections(1)
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base.clone().create_if_missing(true).journal_mode(SqliteJournalMode::Wal))
            .await
            .map_err(|e| db_error("open SQLite database for writing", e))?;
        let reader = SqlitePoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(base.read_only(true))
            .await
            .map_err(|e| db_error("open SQLite database for reading", e))?;
        Ok(Self { writer, reader })
    }

    /// Starts a write transaction holding the database write lock from its first statement.
    async fn begin_write(&self) -> Result<WriteTx> {
        self.writer.begin_with("BEGIN IMMEDIATE").await.map_err(|e| db_error("begin write transaction", e))
    }

    /// Closes both pools (waits for connections in use to be returned).
    pub async fn close(&self) {
        self.writer.close().await;
        self.reader.close().await;
    }
}

/// Whether a SQLite URL names an in-memory database (`sqlite::memory:`, `sqlite://:memory:`,
/// `…?mode=memory`), which gets a single shared connection instead of separate pools.
fn is_in_memory(url: &str) -> Result<bool> {
    let rest = url
        .strip_prefix("sqlite://")
        .or_else(|| url.strip_prefix("sqlite:"))
        .ok_or_else(|| StoreError::Backend("a SQLite database URL starts with sqlite:".into()))?;
    let (path, query) = rest.split_once('?').unwrap_or((rest, ""));
    Ok(path == ":memory:" || query.split('&').any(|p| p == "mode=memory"))
}

async fn commit(tx: WriteTx, context: &str) -> Result<()> {
    tx.commit().await.map_err(|e| db_error(context, e))
}

async fn rollback(tx: WriteTx, context: &str) -> Result<()> {
    tx.rollback().await.map_err(|e| db_error(context, e))
}

#[async_trait]
impl Store for SqliteStore {
    async fn migrate(&self) -> Result<()> {
        MIGRATOR.run(&self.writer).await.map_err(|e| StoreError::Backend(format!("applying SQLite migrations: {e}")))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.reader).await.map_err(|e| db_error("ping", e))?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "sqlite"
    }

    async fn create_resource(&self, resource: &Resource) -> Result<()> {
        resources::create(self, resource).await
    }

    async fn get_resource(&self, id: &ResourceId) -> Result<Option<Resource>> {
        resources::get(self, id).await
    }

    async fn list_resources(&self) -> Result<Vec<Resource>> {
        resources::list(self).await
    }

    async fn update_resource(&self, resource: &Resource) -> Result<bool> {
        resources::update(self, resource).await
    }

    async fn delete_resource(&self, id: &ResourceId) -> Result<bool> {
        resources::delete(self, id).await
    }

    async fn create_client(&self, client: &Client) -> Result<()> {
        clients::create(self, client).await
    }

    async fn get_client(&self, resource: &ResourceId, id: &ClientId) -> Result<Option<Client>> {
        clients::get(self, resource, id).await
    }

    async fn upsert_cimd_client(&self, client: &Client) -> Result<Client> {
        clients::upsert_cimd(self, client).await
    }

    async fn list_clients(&self, resource: Option<&ResourceId>) -> Result<Vec<Client>> {
        clients::list(self, resource).await
    }

    async fn find_client_by_fingerprint(&self, resource: &ResourceId, fingerprint: &str) -> Result<Option<Client>> {
        clients::find_by_fingerprint(self, resource, fingerprint).await
    }

    async fn set_client_disabled(
        &self,
        resource: &ResourceId,
        id: &ClientId,
        disabled: bool,
        now: i64,
    ) -> Result<bool> {
        clients::set_disabled(self, resource, id, disabled, now).await
    }

    async fn delete_client(&self, resource: &ResourceId, id: &ClientId) -> Result<bool> {
        clients::delete(self, resource, id).await
    }

    async fn create_user(&self, user: &User) -> Result<()> {
        users::create(self, user).await
    }

    async fn get_user(&self, id: &UserId) -> Result<Option<User>> {
        users::get(self, id).await
    }

    async fn get_user_by_email(&self, email: &str) -> Result<Option<User>> {
        users::get_by_email(self, email).await
    }

    async fn list_users(&self) -> Result<Vec<User>> {
        users::list(self).await
    }

    async fn set_user_disabled(&self, id: &UserId, disabled: bool, now: i64) -> Result<bool> {
        users::set_disabled(self, id, disabled, now).await
    }

    async fn delete_user(&self, id: &UserId) -> Result<bool> {
        users::delete(self, id).await
    }

    async fn create_session(&self, session: &Session) -> Result<()> {
        sessions::create(self, session).await
    }

    async fn get_session_by_token_hash(&self, token_hash: &str) -> Result<Option<Session>> {
        sessions::get_by_token_hash(self, token_hash).await
    }

    async fn touch_session(&self, token_hash: &str, now: i64) -> Result<()> {
        sessions::touch(self, token_hash, now).await
    }

    async fn delete_session(&self, token_hash: &str) -> Result<bool> {
        sessions::delete(self, token_hash).await
    }

    async fn create_authorization_request(&self, request: &AuthorizationRequest) -> Result<()> {
        requests::create(self, request).await
    }

    async fn get_authorization_request(&self, id: &str) -> Result<Option<AuthorizationRequest>> {
        requests::get(self, id).await
    }

    async fn delete_authorization_request(&self, id: &str) -> Result<bool> {
        requests::delete(self, id).await
    }

    async fn get_consent(&self, user: &UserId, client: &ClientId, resource: &ResourceId) -> Result<Option<Consent>> {
        consents::get(self, user, client, resource).await
    }

    async fn delete_consent(&self, user: &UserId, client: &ClientId, resource: &ResourceId, now: i64) -> Result<bool> {
        consents::delete(self, user, client, resource, now).await
    }

    async fn complete_authorization(
        &self,
        request_id: &str,
        code: &AuthorizationCode,
        consent: Option<&Consent>,
    ) -> Result<bool> {
        codes::complete_authorization(self, request_id, code, consent).await
    }

    async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
        check: CodeCheck<'_>,
        family: Option<&NewFamily>,
    ) -> Result<RedeemOutcome> {
        codes::redeem(self, code_hash, now, check, family).await
    }

    async fn rotate_refresh_token(&self, rotation: &Rotation<'_>) -> Result<RotateOutcome> {
        refresh::rotate(self, rotation).await
    }

    async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<(RefreshToken, RefreshFamily)>> {
        refresh::get_token(self, token_hash).await
    }

    async fn get_family(&self, id: &FamilyId) -> Result<Option<RefreshFamily>> {
        refresh::get_family(self, id).await
    }

    async fn revoke_family(&self, id: &FamilyId, now: i64) -> Result<bool> {
        refresh::revoke_family(self, id, now).await
    }

    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<()> {
        revocation::revoke_access_token(self, jti, expires_at).await
    }

    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool> {
        revocation::is_access_token_revoked(self, jti).await
    }

    async fn record_assertion_jti(&self, client: &ClientId, jti: &str, expires_at: i64) -> Result<bool> {
        revocation::record_assertion_jti(self, client, jti, expires_at).await
    }

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()> {
        keys::insert(self, key).await
    }

    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>> {
        keys::list(self).await
    }

    async fn retire_signing_key(&self, kid: &str, retires_at: i64, unpublish_at: i64) -> Result<bool> {
        keys::retire(self, kid, retires_at, unpublish_at).await
    }

    async fn rotate_signing_key(&self, key: &SigningKeyRecord, unpublish_after: i64) -> Result<()> {
        keys::rotate(self, key, unpublish_after).await
    }

    async fn append_audit_events(&self, events: &[AuditEvent]) -> Result<()> {
        audit::append(self, events).await
    }

    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>> {
        audit::list(self, query).await
    }

    async fn purge_expired(&self, now: i64, session_idle_cutoff: i64, unused_client_cutoff: i64) -> Result<PurgeStats> {
        purge::purge_expired(self, now, session_idle_cutoff, unused_client_cutoff).await
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn recognises_in_memory_urls() {
        assert!(is_in_memory("sqlite::memory:").unwrap());
        assert!(is_in_memory("sqlite://:memory:").unwrap());
        assert!(is_in_memory("sqlite://x.db?mode=memory").unwrap());
        assert!(!is_in_memory("sqlite://moat.db").unwrap());
        assert!(!is_in_memory("sqlite:moat.db").unwrap());
        assert!(is_in_memory("postgres://x").is_err());
    }
}
