//! PostgreSQL backend (DESIGN.md §7): the store for deployments with several Moat instances on
//! one database.
//!
//! # Concurrency: READ COMMITTED with explicit row locks
//!
//! Every multi-statement operation runs in a transaction started with
//! `BEGIN ISOLATION LEVEL READ COMMITTED` (explicit, so a database whose default isolation was
//! changed behaves the same) and takes the row locks its decision depends on before deciding:
//!
//! * redeeming a code locks the code row (`SELECT … FOR UPDATE`); a concurrent redemption waits,
//!   then re-reads the committed row and sees it consumed (a replay);
//! * rotating a refresh token locks the presented token row, then its family row, and only then
//!   reads the successor, client, user and consent. A racing rotation of the same token waits on
//!   the token lock and re-reads the committed state, so it finds the successor the winner
//!   inserted and returns it as a grace replay: exactly one successor, never a second family;
//! * completing an authorization deletes the pending request first; of two concurrent
//!   completions the second's DELETE waits, re-checks, and matches no row (`false`);
//! * a redemption share-locks its client's row while it creates the family, and disabling a
//!   client revokes the client's families again after updating that row, so a client disabled
//!   while one of its codes is being redeemed is left with no live family.
//!
//! A client row is keyed by (resource, id) (DESIGN.md §5), and every statement that reads, locks
//! or revokes by client names both: the same metadata-document URL at two resources is two rows
//! whose locks, grants and revocations never touch each other.
//!
//! The state-changing statements are additionally guarded (`… WHERE consumed_at IS NULL`,
//! `… WHERE rotated_at IS NULL`); a guard matching no row means a race was lost, and the whole
//! operation is re-evaluated in a fresh transaction.
//!
//! Why not SERIALIZABLE: every decision here depends on a handful of rows that can be named and
//! locked up front, so locking gives the same guarantees with deterministic waiting instead of
//! optimistic aborts (under a burst of retries of one refresh token, SERIALIZABLE would abort all
//! but one transaction and retry them repeatedly). Row locks (`FOR UPDATE`) and conditional
//! updates are also what PostgreSQL-compatible distributed databases support well, and nothing
//! depends on advisory locks or session state.
//!
//! Deadlocks: the token-endpoint paths take their locks in one order (code or token, then
//! family, then client), and disabling a client revokes its families before touching the client
//! row, so those cannot deadlock with each other. Deletes that cascade (a client, user or
//! resource with its families and tokens) lock parents before children, the reverse order, and
//! bulk revocations lock many families in scan order; when such a rare administrative operation
//! meets a refresh of the same grant, PostgreSQL detects the deadlock (after
//! `deadlock_timeout`) and aborts one of them. That victim, like a transaction a distributed
//! database aborts with a serialization failure even at READ COMMITTED, is simply run again
//! (`Attempts`); nothing was committed, and the re-run decides on the new state (a refresh of
//! a deleted client's token is then unknown).
//!
//! Single-statement operations run as their own (autocommit) statement: one statement is atomic
//! on its own, and skipping BEGIN/COMMIT saves two round trips. The exceptions are the deletes
//! that cascade through many tables, which are retried like transactions
//! (`PgStore::delete_cascading`).
//!
//! Each aggregate's queries live in a submodule mirroring the SQLite backend; row decoding and
//! value conversions are shared with it (`crate::rows`, `crate::codec`).

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
use std::time::Duration;

use async_trait::async_trait;
use moat_core::ids::{ClientId, FamilyId, ResourceId, UserId};
use moat_core::model::{
    AuditEvent, AuthorizationCode, AuthorizationRequest, Client, Consent, NewFamily, RefreshFamily, RefreshToken,
    Resource, Session, SigningKeyRecord, User,
};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};

use crate::codec::db_error;
use crate::{
    AuditQuery, CodeCheck, ConnectOptions, PurgeStats, RedeemOutcome, Result, RotateOutcome, Rotation, Store,
    StoreError,
};

/// The embedded PostgreSQL migrations (`migrations/postgres`).
static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("migrations/postgres");

/// How every read-write transaction starts (see the module docs for why READ COMMITTED).
const BEGIN: &str = "BEGIN ISOLATION LEVEL READ COMMITTED";

/// How many times a transaction is attempted when it loses a race (a guard matched no row) or
/// the database aborts it as a deadlock victim or with a serialization failure.
const MAX_ATTEMPTS: u32 = 5;

/// SQLSTATEs worth retrying: `serialization_failure`, `deadlock_detected`.
const RETRYABLE_SQLSTATES: [&str; 2] = ["40001", "40P01"];

/// The PostgreSQL implementation of [`crate::Store`]: one connection pool, shared by every
/// instance-local task; several instances (processes) may use the same database.
pub struct PgStore {
    pool: PgPool,
    /// Kept for the migration connection ([`Store::migrate`]).
    acquire_timeout: Duration,
}

/// Why a transaction body failed, and whether trying it again in a new transaction can help.
pub(crate) struct Fail {
    error: StoreError,
    retry: bool,
}

impl Fail {
    /// A driver error; retryable when PostgreSQL aborted the transaction as a deadlock victim or
    /// for a serialization failure (nothing was committed, so running it again is safe).
    pub(crate) fn db(context: &str, err: sqlx::Error) -> Self {
        let retry = err
            .as_database_error()
            .and_then(|db| db.code())
            .is_some_and(|code| RETRYABLE_SQLSTATES.contains(&code.as_ref()));
        Self { error: db_error(context, err), retry }
    }

    /// A guarded update matched no row: another transaction changed the row after it was read.
    /// Re-evaluating in a new transaction sees that change.
    pub(crate) fn lost_race(context: &str) -> Self {
        Self { error: StoreError::Backend(format!("{context}: too many concurrent updates, try again")), retry: true }
    }
}

impl From<StoreError> for Fail {
    fn from(error: StoreError) -> Self {
        Self { error, retry: false }
    }
}

/// The result of one attempt's transaction body.
pub(crate) type TxResult<T> = std::result::Result<T, Fail>;

/// Shorthand for mapping a driver error inside a transaction body.
pub(crate) fn fail(context: &'static str) -> impl Fn(sqlx::Error) -> Fail {
    move |e| Fail::db(context, e)
}

impl PgStore {
    /// Connects to the database a `postgres://…` or `postgresql://…` URL names, with a pool of
    /// `options.max_connections` and `options.acquire_timeout`. TLS follows the URL's `sslmode`
    /// (`require`, `verify-ca`, `verify-full` use rustls; `sslrootcert` names a CA file), and
    /// libpq-style `options` pick a schema, e.g. `?options=-c%20search_path%3Dmoat`. Opens one
    /// connection at once, so a wrong URL fails here. Does not migrate: call [`Store::migrate`].
    pub async fn connect(url: &str, options: &ConnectOptions) -> Result<Self> {
        // sqlx's URL parse errors never echo the URL, so a password cannot leak through them.
        let pg = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Backend(format!("invalid PostgreSQL database URL: {e}")))?;
        Self::connect_with(pg, options).await
    }

    /// Like [`PgStore::connect`] with connection options built by the caller (a `search_path`
    /// for a dedicated schema, TLS files, …).
    pub async fn connect_with(pg: PgConnectOptions, options: &ConnectOptions) -> Result<Self> {
        // Name the connections in `pg_stat_activity` unless the URL already does.
        let pg = if pg.get_application_name().is_none() { pg.application_name("moat") } else { pg };
        let pool = PgPoolOptions::new()
            .max_connections(options.max_connections.max(1))
            .acquire_timeout(options.acquire_timeout)
            .connect_with(pg)
            .await
            .map_err(|e| db_error("connect to PostgreSQL", e))?;
        Ok(Self { pool, acquire_timeout: options.acquire_timeout })
    }

    /// Closes the pool (waits for connections in use to be returned).
    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Starts a read-write transaction (READ COMMITTED, see the module docs).
    async fn begin(&self, context: &str) -> Result<Tx> {
        self.pool.begin_with(BEGIN).await.map_err(|e| db_error(context, e))
    }

    /// Deletes one row by its key (`binds`, in order), letting foreign keys cascade, and says
    /// whether it existed. A cascade locks rows in many tables in an order of the database's
    /// choosing (say, a client's families while a rotation holds one of them and waits for the
    /// client row), so it runs like a transaction and is retried should it be picked as a
    /// deadlock victim.
    async fn delete_cascading(&self, context: &'static str, sql: &'static str, binds: &[&str]) -> Result<bool> {
        let mut attempts = Attempts::new(context);
        loop {
            let mut tx = self.begin(context).await?;
            let mut query = sqlx::query(sql);
            for b in binds {
                query = query.bind(*b);
            }
            let outcome =
                query.execute(&mut *tx).await.map(|done| done.rows_affected() > 0).map_err(|e| Fail::db(context, e));
            if let Some(done) = attempts.finish(tx, outcome).await {
                return done;
            }
        }
    }
}

/// A read-write transaction on a pooled connection.
type Tx = sqlx::Transaction<'static, sqlx::Postgres>;

/// Drives the attempts of one multi-statement operation:
///
/// ```text
/// let mut attempts = Attempts::new("redeem code");
/// loop {
///     let mut tx = s.begin(attempts.context).await?;
///     let outcome = redeem_in(&mut tx, …).await;
///     if let Some(done) = attempts.finish(tx, outcome).await {
///         return done;
///     }
/// }
/// ```
///
/// (A generic "run this closure in a transaction" helper would read better, but an async
/// closure borrowing the connection cannot currently be proven `Send` for `async_trait`.)
struct Attempts {
    context: &'static str,
    attempt: u32,
}

impl Attempts {
    fn new(context: &'static str) -> Self {
        Self { context, attempt: 1 }
    }

    /// Commits after a successful body, rolls back after a failed one. `None` means: the
    /// attempt lost a race or was aborted as a deadlock victim / serialization failure, so run
    /// the body again in a new transaction. Any other error is returned as is, and so is a
    /// retryable one after [`MAX_ATTEMPTS`].
    async fn finish<T>(&mut self, tx: Tx, outcome: TxResult<T>) -> Option<Result<T>> {
        let outcome = match outcome {
            Ok(value) => tx.commit().await.map(|()| value).map_err(|e| Fail::db(self.context, e)),
            Err(failure) => {
                // An explicit rollback hands a clean connection back to the pool at once; if it
                // fails the connection is broken and the pool discards it anyway.
                if let Err(e) = tx.rollback().await {
                    tracing::debug!(context = self.context, error = %e, "rollback failed");
                }
                Err(failure)
            }
        };
        match outcome {
            Ok(value) => Some(Ok(value)),
            Err(failure) if failure.retry && self.attempt < MAX_ATTEMPTS => {
                tracing::debug!(context = self.context, attempt = self.attempt, error = %failure.error, "retrying transaction");
                self.attempt += 1;
                None
            }
            Err(failure) => Some(Err(failure.error)),
        }
    }
}

#[async_trait]
impl Store for PgStore {
    /// Safe when several instances start at once: sqlx's PostgreSQL migrator holds a
    /// session-level advisory lock (keyed on the database name) while it creates its bookkeeping
    /// table, reads which migrations are applied and applies the rest, so a second instance
    /// waits and then finds nothing to do.
    async fn migrate(&self) -> Result<()> {
        // A one-connection pool of its own, closed afterwards whatever happened: when a
        // migration fails sqlx returns without releasing its advisory lock, and as the lock
        // belongs to the session, returning that connection to the shared pool would keep it
        // held and block every later migration (of this and every other instance).
        let pool = PgPoolOptions::new()
            .max_connections(1)
            .acquire_timeout(self.acquire_timeout)
            .connect_with((*self.pool.connect_options()).clone())
            .await
            .map_err(|e| db_error("connect to PostgreSQL for migrations", e))?;
        let applied = MIGRATOR.run(&pool).await;
        pool.close().await;
        applied.map_err(|e| StoreError::Backend(format!("applying PostgreSQL migrations: {e}")))
    }

    async fn ping(&self) -> Result<()> {
        sqlx::query("SELECT 1").execute(&self.pool).await.map_err(|e| db_error("ping", e))?;
        Ok(())
    }

    fn backend(&self) -> &'static str {
        "postgres"
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
