//! Column lists and row decoders for every table, shared by the backends: the one place that
//! knows how a row turns back into a domain record. Each backend only says how to read one
//! column of its row type ([`Columns`]); the conversions themselves live in [`crate::codec`], so
//! SQLite and PostgreSQL decode exactly the same shapes (DESIGN.md §7).

use moat_core::model::{
    AuditEvent, AuthorizationCode, AuthorizationRequest, Client, Consent, RefreshFamily, RefreshToken, Resource,
    Session, SigningKeyRecord, User,
};

use crate::Result;
use crate::codec::{self, scopes_from_text};

/// Typed access to the columns of one result row. Implementations turn a missing column or a
/// type mismatch into a `Backend` error naming the column ("corrupt row: column …").
pub(crate) trait Columns {
    fn text(&self, column: &str) -> Result<String>;
    fn opt_text(&self, column: &str) -> Result<Option<String>>;
    fn int(&self, column: &str) -> Result<i64>;
    fn opt_int(&self, column: &str) -> Result<Option<i64>>;
    fn bytes(&self, column: &str) -> Result<Vec<u8>>;
    /// A 0/1 flag column (INTEGER in SQLite, SMALLINT in PostgreSQL).
    fn flag(&self, column: &str) -> Result<bool>;

    /// The column read as whatever type the field needs (inferred at the call site).
    fn col<T: Column>(&self, column: &str) -> Result<T>
    where
        Self: Sized,
    {
        T::read(self, column)
    }
}

/// A field type that can be read from one column.
pub(crate) trait Column: Sized {
    fn read<R: Columns>(row: &R, column: &str) -> Result<Self>;
}

impl Column for String {
    fn read<R: Columns>(row: &R, column: &str) -> Result<Self> {
        row.text(column)
    }
}

impl Column for Option<String> {
    fn read<R: Columns>(row: &R, column: &str) -> Result<Self> {
        row.opt_text(column)
    }
}

impl Column for i64 {
    fn read<R: Columns>(row: &R, column: &str) -> Result<Self> {
        row.int(column)
    }
}

impl Column for Option<i64> {
    fn read<R: Columns>(row: &R, column: &str) -> Result<Self> {
        row.opt_int(column)
    }
}

impl Column for Vec<u8> {
    fn read<R: Columns>(row: &R, column: &str) -> Result<Self> {
        row.bytes(column)
    }
}

macro_rules! resource_columns {
    () => {
        "id, name, server_url, scopes, default_scopes, dcr_enabled, cimd_enabled, \
         cimd_allowed_hosts, access_token_ttl, refresh_token_ttl, refresh_idle_ttl, created_at, \
         updated_at"
    };
}
pub(crate) use resource_columns;

pub(crate) fn resource(row: &impl Columns) -> Result<Resource> {
    Ok(Resource {
        id: codec::resource_id(&row.text("id")?)?,
        name: row.col("name")?,
        server_url: row.col("server_url")?,
        scopes: codec::from_json(&row.text("scopes")?, "resource scopes")?,
        default_scopes: scopes_from_text(&row.text("default_scopes")?),
        dcr_enabled: row.flag("dcr_enabled")?,
        cimd_enabled: row.flag("cimd_enabled")?,
        cimd_allowed_hosts: codec::from_json(&row.text("cimd_allowed_hosts")?, "CIMD allowed hosts")?,
        access_token_ttl: row.col("access_token_ttl")?,
        refresh_token_ttl: row.col("refresh_token_ttl")?,
        refresh_idle_ttl: row.col("refresh_idle_ttl")?,
        created_at: row.col("created_at")?,
        updated_at: row.col("updated_at")?,
    })
}

macro_rules! client_columns {
    () => {
        "id, resource_id, kind, name, redirect_uris, grant_types, auth_method, secret_hash, \
         secret_expires_at, metadata, fingerprint, access_token_ttl, disabled, created_at, \
         updated_at, last_used_at"
    };
}
pub(crate) use client_columns;

pub(crate) fn client(row: &impl Columns) -> Result<Client> {
    Ok(Client {
        id: codec::client_id(&row.text("id")?)?,
        resource_id: codec::resource_id(&row.text("resource_id")?)?,
        kind: codec::client_kind(&row.text("kind")?)?,
        name: row.col("name")?,
        redirect_uris: codec::from_json(&row.text("redirect_uris")?, "redirect URIs")?,
        grant_types: codec::grant_types_from_json(&row.text("grant_types")?)?,
        auth_method: codec::auth_method(&row.text("auth_method")?)?,
        secret_hash: row.col("secret_hash")?,
        secret_expires_at: row.col("secret_expires_at")?,
        metadata: codec::from_json(&row.text("metadata")?, "client metadata")?,
        fingerprint: row.col("fingerprint")?,
        access_token_ttl: row.col("access_token_ttl")?,
        disabled: row.flag("disabled")?,
        created_at: row.col("created_at")?,
        updated_at: row.col("updated_at")?,
        last_used_at: row.col("last_used_at")?,
    })
}

macro_rules! user_columns {
    () => {
        "id, email, name, password_hash, disabled, created_at, updated_at"
    };
}
pub(crate) use user_columns;

pub(crate) fn user(row: &impl Columns) -> Result<User> {
    Ok(User {
        id: codec::user_id(&row.text("id")?)?,
        email: row.col("email")?,
        name: row.col("name")?,
        password_hash: row.col("password_hash")?,
        disabled: row.flag("disabled")?,
        created_at: row.col("created_at")?,
        updated_at: row.col("updated_at")?,
    })
}

macro_rules! session_columns {
    () => {
        "id, token_hash, user_id, auth_time, created_at, last_seen_at, expires_at"
    };
}
pub(crate) use session_columns;

pub(crate) fn session(row: &impl Columns) -> Result<Session> {
    Ok(Session {
        id: row.col("id")?,
        token_hash: row.col("token_hash")?,
        user_id: codec::user_id(&row.text("user_id")?)?,
        auth_time: row.col("auth_time")?,
        created_at: row.col("created_at")?,
        last_seen_at: row.col("last_seen_at")?,
        expires_at: row.col("expires_at")?,
    })
}

macro_rules! request_columns {
    () => {
        "id, browser_hash, resource_id, client_id, redirect_uri, redirect_uri_explicit, scopes, \
         state, code_challenge, resource_url, prompt, created_at, expires_at"
    };
}
pub(crate) use request_columns;

pub(crate) fn authorization_request(row: &impl Columns) -> Result<AuthorizationRequest> {
    Ok(AuthorizationRequest {
        id: row.col("id")?,
        browser_hash: row.col("browser_hash")?,
        resource_id: codec::resource_id(&row.text("resource_id")?)?,
        client_id: codec::client_id(&row.text("client_id")?)?,
        redirect_uri: row.col("redirect_uri")?,
        redirect_uri_explicit: row.flag("redirect_uri_explicit")?,
        scopes: scopes_from_text(&row.text("scopes")?),
        state: row.col("state")?,
        code_challenge: row.col("code_challenge")?,
        resource_url: row.col("resource_url")?,
        prompt: row.col("prompt")?,
        created_at: row.col("created_at")?,
        expires_at: row.col("expires_at")?,
    })
}

macro_rules! consent_columns {
    () => {
        "user_id, client_id, resource_id, scopes, created_at, updated_at"
    };
}
pub(crate) use consent_columns;

pub(crate) fn consent(row: &impl Columns) -> Result<Consent> {
    Ok(Consent {
        user_id: codec::user_id(&row.text("user_id")?)?,
        client_id: codec::client_id(&row.text("client_id")?)?,
        resource_id: codec::resource_id(&row.text("resource_id")?)?,
        scopes: scopes_from_text(&row.text("scopes")?),
        created_at: row.col("created_at")?,
        updated_at: row.col("updated_at")?,
    })
}

macro_rules! code_columns {
    () => {
        "code_hash, resource_id, client_id, user_id, session_id, redirect_uri, \
         redirect_uri_explicit, scopes, code_challenge, resource_url, auth_time, created_at, \
         expires_at, consumed_at, family_id"
    };
}
pub(crate) use code_columns;

pub(crate) fn code(row: &impl Columns) -> Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: row.col("code_hash")?,
        resource_id: codec::resource_id(&row.text("resource_id")?)?,
        client_id: codec::client_id(&row.text("client_id")?)?,
        user_id: codec::user_id(&row.text("user_id")?)?,
        session_id: row.col("session_id")?,
        redirect_uri: row.col("redirect_uri")?,
        redirect_uri_explicit: row.flag("redirect_uri_explicit")?,
        scopes: scopes_from_text(&row.text("scopes")?),
        code_challenge: row.col("code_challenge")?,
        resource_url: row.col("resource_url")?,
        auth_time: row.col("auth_time")?,
        created_at: row.col("created_at")?,
        expires_at: row.col("expires_at")?,
        consumed_at: row.col("consumed_at")?,
        family_id: row.opt_text("family_id")?.map(|f| codec::family_id(&f)).transpose()?,
    })
}

macro_rules! family_columns {
    () => {
        "id, resource_id, client_id, user_id, session_id, scopes, auth_time, created_at, \
         expires_at, revoked_at"
    };
}
pub(crate) use family_columns;

pub(crate) fn family(row: &impl Columns) -> Result<RefreshFamily> {
    Ok(RefreshFamily {
        id: codec::family_id(&row.text("id")?)?,
        resource_id: codec::resource_id(&row.text("resource_id")?)?,
        client_id: codec::client_id(&row.text("client_id")?)?,
        user_id: row.opt_text("user_id")?.map(|u| codec::user_id(&u)).transpose()?,
        session_id: row.col("session_id")?,
        scopes: scopes_from_text(&row.text("scopes")?),
        auth_time: row.col("auth_time")?,
        created_at: row.col("created_at")?,
        expires_at: row.col("expires_at")?,
        revoked_at: row.col("revoked_at")?,
    })
}

macro_rules! token_columns {
    () => {
        "token_hash, family_id, parent_hash, created_at, expires_at, rotated_at"
    };
}
pub(crate) use token_columns;

pub(crate) fn token(row: &impl Columns) -> Result<RefreshToken> {
    Ok(RefreshToken {
        token_hash: row.col("token_hash")?,
        family_id: codec::family_id(&row.text("family_id")?)?,
        parent_hash: row.col("parent_hash")?,
        created_at: row.col("created_at")?,
        expires_at: row.col("expires_at")?,
        rotated_at: row.col("rotated_at")?,
    })
}

macro_rules! signing_key_columns {
    () => {
        "kid, alg, encrypted_private_key, public_jwk, created_at, activates_at, retires_at, \
         unpublish_at"
    };
}
pub(crate) use signing_key_columns;

pub(crate) fn signing_key(row: &impl Columns) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: row.col("kid")?,
        alg: row.col("alg")?,
        encrypted_private_key: row.col("encrypted_private_key")?,
        public_jwk: row.col("public_jwk")?,
        created_at: row.col("created_at")?,
        activates_at: row.col("activates_at")?,
        retires_at: row.col("retires_at")?,
        unpublish_at: row.col("unpublish_at")?,
    })
}

macro_rules! audit_columns {
    () => {
        "id, at, kind, resource_id, client_id, user_id, ip, detail"
    };
}
pub(crate) use audit_columns;

pub(crate) fn audit_event(row: &impl Columns) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: row.col("id")?,
        at: row.col("at")?,
        kind: row.col("kind")?,
        resource_id: row.col("resource_id")?,
        client_id: row.col("client_id")?,
        user_id: row.col("user_id")?,
        ip: row.col("ip")?,
        detail: codec::from_json(&row.text("detail")?, "audit detail")?,
    })
}
