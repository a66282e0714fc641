//! Moat's storage: the one [`Store`] trait through which all state flows, and its backends.
//!
//! Everything that must stay consistent across several Moat instances (codes, refresh
//! families, sessions, consents, registrations) lives behind this trait and is updated
//! atomically by it; see DESIGN.md §7. Backends: [`sqlite::SqliteStore`] (the zero-setup
//! default) and [`postgres::PgStore`] (several instances on one database). Both must pass the
//! same conformance suite (`tests/it/conformance.rs`).

mod codec;
pub mod postgres;
mod rows;
pub mod sqlite;

use std::sync::Arc;

use async_trait::async_trait;
use moat_core::OAuthError;
use moat_core::ids::{ClientId, FamilyId, ResourceId, UserId};
use moat_core::model::{
    AuditEvent, AuthorizationCode, AuthorizationRequest, Client, ClientKind, Consent, NewFamily, RefreshFamily,
    RefreshToken, Resource, Session, SigningKeyRecord, User,
};

pub use postgres::PgStore;
pub use sqlite::SqliteStore;

/// How precisely a client's `last_used_at` is kept: redemptions and rotations write it only
/// when it is unset or older than this, so a busy client's row is not rewritten (and, on
/// PostgreSQL, locked) by every token request. Its one reader, the expiry of never-used dynamic
/// registrations (DESIGN.md §5), only asks whether it is set.
pub const LAST_USED_RESOLUTION_SECONDS: i64 = 60;

/// What [`Store::redeem_code`] refuses a code of a disabled client with (the same on every
/// backend).
pub(crate) fn client_disabled() -> OAuthError {
    OAuthError::invalid_grant("the client is disabled")
}

/// What [`Store::redeem_code`] refuses a code of a disabled (or deleted) user with.
pub(crate) fn user_disabled() -> OAuthError {
    OAuthError::invalid_grant("the user account is disabled")
}

/// What [`Store::upsert_cimd_client`] refuses to record: only metadata-document clients come
/// from documents (a backend error: the caller built the wrong record).
pub(crate) fn check_cimd(client: &Client) -> Result<()> {
    if client.kind == ClientKind::Cimd {
        Ok(())
    } else {
        Err(StoreError::Backend(format!(
            "record metadata-document client: expected a client of kind cimd, got {}",
            client.kind.as_str()
        )))
    }
}

/// What [`Store::upsert_cimd_client`] fails with when (resource, id) is taken by a client that
/// is not a metadata-document client (the same on every backend): a fetched document must never
/// rewrite an operator's or a dynamic registration's redirect URIs.
pub(crate) fn cimd_clash() -> StoreError {
    StoreError::Conflict(
        "record metadata-document client: a client with this id that is not a metadata-document client \
         already exists at this resource"
            .into(),
    )
}

/// Store failures.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A uniqueness rule was violated (duplicate email, duplicate resource server URL, …).
    #[error("conflict: {0}")]
    Conflict(String),
    /// The backend failed (I/O, connection, constraint other than uniqueness, corrupt row).
    #[error("storage backend error: {0}")]
    Backend(String),
}

pub type Result<T, E = StoreError> = std::result::Result<T, E>;

/// The check the token endpoint applies to a code before it is consumed (client, redirect URI,
/// PKCE, resource). It runs inside the redeeming transaction, after the row is locked; when it
/// fails the code stays unconsumed (a wrong verifier must not burn the legitimate client's
/// code).
pub type CodeCheck<'a> = &'a (dyn Fn(&AuthorizationCode) -> Result<(), OAuthError> + Send + Sync);

/// Result of redeeming an authorization code.
// Returned once per token request and matched at once: boxing the code would only add an
// allocation to the hot path.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone, PartialEq)]
pub enum RedeemOutcome {
    /// The code was valid and is now consumed; the refresh family (if one was requested) exists.
    Redeemed(AuthorizationCode),
    /// No such code (never issued, or purged).
    NotFound,
    /// The code exists but has expired; nothing changed.
    Expired,
    /// The check refused the code; nothing changed.
    Rejected(OAuthError),
    /// The code had already been redeemed: this replay revoked the family the first redemption
    /// created (RFC 9700 §4.4, OAuth 2.1 §4.1.3).
    Replayed { revoked_family: Option<FamilyId> },
}

/// Input of a refresh-token rotation.
#[derive(Debug, Clone)]
pub struct Rotation<'a> {
    pub presented_hash: &'a str,
    /// Hash of the successor, derived deterministically from the presented token.
    pub successor_hash: &'a str,
    pub client_id: &'a ClientId,
    /// The resource whose token endpoint was called (a family is bound to one resource).
    pub resource_id: &'a ResourceId,
    /// The request's parsed `scope` parameter, `None` when absent (see
    /// [`moat_core::refresh::decide`]).
    pub requested_scopes: Option<&'a [String]>,
    pub now: i64,
    pub grace_seconds: i64,
    /// The resource's refresh idle lifetime.
    pub idle_ttl: i64,
}

/// Result of a refresh-token rotation (the rule is [`moat_core::refresh::decide`]).
#[derive(Debug, Clone, PartialEq)]
pub enum RotateOutcome {
    /// The presented token is now rotated and the successor stored.
    Rotated { family: RefreshFamily, successor_expires_at: i64 },
    /// The presented token was rotated within the grace window; its (unused) successor is
    /// returned again.
    GraceReplay { family: RefreshFamily, successor_expires_at: i64 },
    /// Reuse detected: the family is now revoked.
    Reused { family_id: FamilyId },
    /// Unknown token or a refused refresh; nothing changed.
    Invalid(Option<moat_core::refresh::RejectReason>),
}

/// Counts of rows removed by [`Store::purge_expired`].
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct PurgeStats {
    pub authorization_requests: u64,
    pub codes: u64,
    pub sessions: u64,
    pub refresh_tokens: u64,
    pub families: u64,
    pub revoked_jtis: u64,
    pub assertion_jtis: u64,
    /// Never-used dynamic and metadata-document clients.
    pub unused_dynamic_clients: u64,
}

/// Filter for reading the audit log (newest first).
#[derive(Debug, Clone, Default)]
pub struct AuditQuery {
    pub kind: Option<String>,
    pub resource_id: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// Only events with `id < before_id` (paging).
    pub before_id: Option<i64>,
    /// Page size; `0` (the default) means 100, and at most 1000 are returned.
    pub limit: u32,
}

/// All of Moat's state, grouped by aggregate. Every method is one atomic unit.
#[async_trait]
pub trait Store: Send + Sync + 'static {
    // ---- lifecycle ---------------------------------------------------------------------------

    /// Applies pending migrations.
    async fn migrate(&self) -> Result<()>;
    /// Cheap liveness probe (`/healthz`).
    async fn ping(&self) -> Result<()>;
    /// Short backend name for logs and metrics (`sqlite`, `postgres`).
    fn backend(&self) -> &'static str;

    // ---- resources ---------------------------------------------------------------------------

    /// Fails with `Conflict` when another resource has the same canonical server URL.
    async fn create_resource(&self, resource: &Resource) -> Result<()>;
    async fn get_resource(&self, id: &ResourceId) -> Result<Option<Resource>>;
    async fn list_resources(&self) -> Result<Vec<Resource>>;
    /// Replaces every mutable field; `false` when no such resource. `Conflict` as for create.
    async fn update_resource(&self, resource: &Resource) -> Result<bool>;
    /// Deletes the resource with all its clients, codes, consents, families and tokens.
    async fn delete_resource(&self, id: &ResourceId) -> Result<bool>;

    // ---- clients -----------------------------------------------------------------------------

    /// A client belongs to one resource and is identified by (resource, client id): ids of
    /// pre-registered and dynamic clients are random and never repeat, but a Client ID Metadata
    /// Document client (its id is a URL) may be used with several resources, with a separate
    /// row, consent and token history at each.
    ///
    /// Fails with `Conflict` on a duplicate (resource, id).
    async fn create_client(&self, client: &Client) -> Result<()>;
    async fn get_client(&self, resource: &ResourceId, id: &ClientId) -> Result<Option<Client>>;
    /// Records a metadata-document client from a freshly validated document: inserts it, or
    /// updates name, redirect URIs, grant types, auth method and metadata of the existing row
    /// (keeping `disabled`, `created_at`, `last_used_at`). Returns the row as stored.
    ///
    /// `client.kind` must be `Cimd`. Fails with `Conflict`, changing nothing, when the
    /// (resource, id) row is a client of another kind.
    async fn upsert_cimd_client(&self, client: &Client) -> Result<Client>;
    /// All clients, or those of one resource; ordered by creation time.
    async fn list_clients(&self, resource: Option<&ResourceId>) -> Result<Vec<Client>>;
    /// An enabled dynamic client of `resource` registered with this fingerprint: one already
    /// used if any, else the newest (the one furthest from expiring unused).
    async fn find_client_by_fingerprint(&self, resource: &ResourceId, fingerprint: &str) -> Result<Option<Client>>;
    /// Enables or disables a client; disabling revokes all its refresh families at that
    /// resource. `false` when no such client.
    async fn set_client_disabled(&self, resource: &ResourceId, id: &ClientId, disabled: bool, now: i64)
    -> Result<bool>;
    /// Deletes a client with its codes, consents, families and tokens at that resource.
    async fn delete_client(&self, resource: &ResourceId, id: &ClientId) -> Result<bool>;

    // ---- users -------------------------------------------------------------------------------

    /// Fails with `Conflict` when the email is taken.
    async fn create_user(&self, user: &User) -> Result<()>;
    async fn get_user(&self, id: &UserId) -> Result<Option<User>>;
    /// `email` is matched exactly; callers pass it lowercased.
    async fn get_user_by_email(&self, email: &str) -> Result<Option<User>>;
    async fn list_users(&self) -> Result<Vec<User>>;
    /// Disabling also deletes the user's sessions and revokes their refresh families.
    async fn set_user_disabled(&self, id: &UserId, disabled: bool, now: i64) -> Result<bool>;
    /// Deletes the user with sessions, codes, consents, families and tokens.
    async fn delete_user(&self, id: &UserId) -> Result<bool>;

    // ---- browser sessions --------------------------------------------------------------------

    async fn create_session(&self, session: &Session) -> Result<()>;
    async fn get_session_by_token_hash(&self, token_hash: &str) -> Result<Option<Session>>;
    async fn touch_session(&self, token_hash: &str, now: i64) -> Result<()>;
    async fn delete_session(&self, token_hash: &str) -> Result<bool>;

    // ---- pending authorization requests ------------------------------------------------------

    async fn create_authorization_request(&self, request: &AuthorizationRequest) -> Result<()>;
    async fn get_authorization_request(&self, id: &str) -> Result<Option<AuthorizationRequest>>;
    async fn delete_authorization_request(&self, id: &str) -> Result<bool>;

    // ---- consents ----------------------------------------------------------------------------

    async fn get_consent(&self, user: &UserId, client: &ClientId, resource: &ResourceId) -> Result<Option<Consent>>;
    /// Removes a remembered consent and revokes the refresh families it backed.
    async fn delete_consent(&self, user: &UserId, client: &ClientId, resource: &ResourceId, now: i64) -> Result<bool>;

    // ---- authorization codes -----------------------------------------------------------------

    /// Finishes an authorization atomically: deletes the pending request (returns `false` and
    /// changes nothing when it is already gone, so a double-submitted consent form yields one
    /// code), stores the code, and records the consent when one is given, merging its scopes into
    /// the remembered ones (two approvals at once never lose either's scopes).
    async fn complete_authorization(
        &self,
        request_id: &str,
        code: &AuthorizationCode,
        consent: Option<&Consent>,
    ) -> Result<bool>;

    /// Redeems a code atomically: locks it; `NotFound`/`Expired`; a consumed code is a replay
    /// (revoke its family); `check` failing leaves it unconsumed, and so does a client disabled
    /// by the time of redemption (`Rejected(invalid_grant)`: a client disabled after the token
    /// endpoint checked it, even by a concurrent transaction, never gets a live family) or a
    /// user disabled or deleted since the code was issued; otherwise marks it consumed, creates `family` (scopes, user, session and resource taken
    /// from the code) and records it on the code, and marks the client used (see
    /// [`LAST_USED_RESOLUTION_SECONDS`]).
    async fn redeem_code(
        &self,
        code_hash: &str,
        now: i64,
        check: CodeCheck<'_>,
        family: Option<&NewFamily>,
    ) -> Result<RedeemOutcome>;

    // ---- refresh tokens ----------------------------------------------------------------------

    /// Applies [`moat_core::refresh::decide`] atomically (see [`RotateOutcome`]). On `Rotate`
    /// the successor gets idle expiry `successor_expiry(now, idle_ttl, family.expires_at)` and
    /// the client is marked used (see [`LAST_USED_RESOLUTION_SECONDS`]).
    async fn rotate_refresh_token(&self, rotation: &Rotation<'_>) -> Result<RotateOutcome>;
    /// A refresh token and its family (for revocation and introspection).
    async fn get_refresh_token(&self, token_hash: &str) -> Result<Option<(RefreshToken, RefreshFamily)>>;
    async fn get_family(&self, id: &FamilyId) -> Result<Option<RefreshFamily>>;
    /// Revokes a family (idempotent); `false` when no such family.
    async fn revoke_family(&self, id: &FamilyId, now: i64) -> Result<bool>;

    // ---- access-token revocation list --------------------------------------------------------

    /// Remembers a revoked access token until it would have expired anyway.
    async fn revoke_access_token(&self, jti: &str, expires_at: i64) -> Result<()>;
    async fn is_access_token_revoked(&self, jti: &str) -> Result<bool>;

    // ---- client assertions (private_key_jwt, RFC 7523 §3 single-use jti) --------------------

    /// Records an assertion `jti`; `false` when it was already seen for this client.
    async fn record_assertion_jti(&self, client: &ClientId, jti: &str, expires_at: i64) -> Result<bool>;

    // ---- signing keys ------------------------------------------------------------------------

    async fn insert_signing_key(&self, key: &SigningKeyRecord) -> Result<()>;
    /// All keys, oldest first.
    async fn list_signing_keys(&self) -> Result<Vec<SigningKeyRecord>>;
    /// Sets `retires_at`/`unpublish_at` of a key.
    async fn retire_signing_key(&self, kid: &str, retires_at: i64, unpublish_at: i64) -> Result<bool>;
    /// A rotation, atomically: stores `key`, then retires every unretired key that is older
    /// (in [`Store::list_signing_keys`] order: creation, activation, kid) than the newest
    /// unretired key — normally `key` itself, unless a concurrent rotation stored a newer one.
    /// A retired key retires when that newest key activates (or at its own activation, if
    /// later) and is unpublished `unpublish_after` seconds after retiring. The newest key is
    /// never retired, so rotations racing on one database (on several instances) leave exactly
    /// one unretired key, the newest, instead of retiring each other's new key.
    async fn rotate_signing_key(&self, key: &SigningKeyRecord, unpublish_after: i64) -> Result<()>;

    // ---- audit log ---------------------------------------------------------------------------

    /// Appends events in one transaction (ids are assigned by the store).
    async fn append_audit_events(&self, events: &[AuditEvent]) -> Result<()>;
    async fn list_audit_events(&self, query: &AuditQuery) -> Result<Vec<AuditEvent>>;

    // ---- housekeeping ------------------------------------------------------------------------

    /// Deletes what can no longer be used: expired pending requests, codes, sessions (absolute
    /// expiry or idle since `session_idle_cutoff`), refresh tokens and families, revoked-jti
    /// entries, assertion jtis, and dynamic and metadata-document clients never used and created
    /// before `unused_client_cutoff`.
    async fn purge_expired(&self, now: i64, session_idle_cutoff: i64, unused_client_cutoff: i64) -> Result<PurgeStats>;
}

/// A shared, dynamically dispatched store.
pub type DynStore = Arc<dyn Store>;

/// Opens the store a database URL names: `sqlite://path` (created if missing) or
/// `postgres://…`.
pub async fn connect(url: &str, options: &ConnectOptions) -> Result<DynStore> {
    if url.starts_with("sqlite:") {
        Ok(Arc::new(SqliteStore::connect(url, options).await?))
    } else if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        Ok(Arc::new(PgStore::connect(url, options).await?))
    } else {
        Err(StoreError::Backend(format!(
            "unsupported database URL scheme (expected sqlite:// or postgres://): {}",
            url.split(':').next().unwrap_or_default()
        )))
    }
}

/// Connection settings shared by the backends.
#[derive(Debug, Clone)]
pub struct ConnectOptions {
    /// Largest connection pool (PostgreSQL; SQLite readers).
    pub max_connections: u32,
    /// How long to wait for a pooled connection.
    pub acquire_timeout: std::time::Duration,
    /// SQLite busy timeout: how long a writer waits for the database lock (other processes,
    /// such as management commands, may hold it).
    pub busy_timeout: std::time::Duration,
}

impl Default for ConnectOptions {
    fn default() -> Self {
        Self {
            max_connections: 8,
            acquire_timeout: std::time::Duration::from_secs(5),
            busy_timeout: std::time::Duration::from_secs(5),
        }
    }
}
