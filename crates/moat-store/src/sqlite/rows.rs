//! Column lists and row decoders for every table: the one place that knows how a SQLite row
//! turns back into a domain record (conversions shared with other backends live in
//! [`crate::codec`]).

use moat_core::model::{
    AuditEvent, AuthorizationCode, AuthorizationRequest, Client, Consent, RefreshFamily, RefreshToken, Resource,
    Session, SigningKeyRecord, User,
};
use sqlx::sqlite::SqliteRow;
use sqlx::{Decode, Row, Sqlite, Type};

use crate::codec::{self, int_to_bool, scopes_from_text};
use crate::{Result, StoreError};

/// Reads one column, turning a type mismatch into a `Backend` error that names the column.
fn get<'r, T>(row: &'r SqliteRow, column: &str) -> Result<T>
where
    T: Decode<'r, Sqlite> + Type<Sqlite>,
{
    row.try_get(column).map_err(|e| StoreError::Backend(format!("corrupt row: column {column}: {e}")))
}

fn get_bool(row: &SqliteRow, column: &str) -> Result<bool> {
    get::<i64>(row, column).map(int_to_bool)
}

macro_rules! resource_columns {
    () => {
        "id, name, server_url, scopes, default_scopes, dcr_enabled, cimd_enabled, \
         cimd_allowed_hosts, access_token_ttl, refresh_token_ttl, refresh_idle_ttl, created_at, \
         updated_at"
    };
}
pub(super) use resource_columns;

pub(super) fn resource(row: &SqliteRow) -> Result<Resource> {
    Ok(Resource {
        id: codec::resource_id(&get::<String>(row, "id")?)?,
        name: get(row, "name")?,
        server_url: get(row, "server_url")?,
        scopes: codec::from_json(&get::<String>(row, "scopes")?, "resource scopes")?,
        default_scopes: scopes_from_text(&get::<String>(row, "default_scopes")?),
        dcr_enabled: get_bool(row, "dcr_enabled")?,
        cimd_enabled: get_bool(row, "cimd_enabled")?,
        cimd_allowed_hosts: codec::from_json(&get::<String>(row, "cimd_allowed_hosts")?, "CIMD allowed hosts")?,
        access_token_ttl: get(row, "access_token_ttl")?,
        refresh_token_ttl: get(row, "refresh_token_ttl")?,
        refresh_idle_ttl: get(row, "refresh_idle_ttl")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

macro_rules! client_columns {
    () => {
        "id, resource_id, kind, name, redirect_uris, grant_types, auth_method, secret_hash, \
         secret_expires_at, metadata, fingerprint, access_token_ttl, disabled, created_at, \
         updated_at, last_used_at"
    };
}
pub(super) use client_columns;

pub(super) fn client(row: &SqliteRow) -> Result<Client> {
    Ok(Client {
        id: codec::client_id(&get::<String>(row, "id")?)?,
        resource_id: codec::resource_id(&get::<String>(row, "resource_id")?)?,
        kind: codec::client_kind(&get::<String>(row, "kind")?)?,
        name: get(row, "name")?,
        redirect_uris: codec::from_json(&get::<String>(row, "redirect_uris")?, "redirect URIs")?,
        grant_types: codec::grant_types_from_json(&get::<String>(row, "grant_types")?)?,
        auth_method: codec::auth_method(&get::<String>(row, "auth_method")?)?,
        secret_hash: get(row, "secret_hash")?,
        secret_expires_at: get(row, "secret_expires_at")?,
        metadata: codec::from_json(&get::<String>(row, "metadata")?, "client metadata")?,
        fingerprint: get(row, "fingerprint")?,
        access_token_ttl: get(row, "access_token_ttl")?,
        disabled: get_bool(row, "disabled")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
        last_used_at: get(row, "last_used_at")?,
    })
}

macro_rules! user_columns {
    () => {
        "id, email, name, password_hash, disabled, created_at, updated_at"
    };
}
pub(super) use user_columns;

pub(super) fn user(row: &SqliteRow) -> Result<User> {
    Ok(User {
        id: codec::user_id(&get::<String>(row, "id")?)?,
        email: get(row, "email")?,
        name: get(row, "name")?,
        password_hash: get(row, "password_hash")?,
        disabled: get_bool(row, "disabled")?,
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

macro_rules! session_columns {
    () => {
        "id, token_hash, user_id, auth_time, created_at, last_seen_at, expires_at"
    };
}
pub(super) use session_columns;

pub(super) fn session(row: &SqliteRow) -> Result<Session> {
    Ok(Session {
        id: get(row, "id")?,
        token_hash: get(row, "token_hash")?,
        user_id: codec::user_id(&get::<String>(row, "user_id")?)?,
        auth_time: get(row, "auth_time")?,
        created_at: get(row, "created_at")?,
        last_seen_at: get(row, "last_seen_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

macro_rules! request_columns {
    () => {
        "id, browser_hash, resource_id, client_id, redirect_uri, redirect_uri_explicit, scopes, \
         state, code_challenge, resource_url, prompt, created_at, expires_at"
    };
}
pub(super) use request_columns;

pub(super) fn authorization_request(row: &SqliteRow) -> Result<AuthorizationRequest> {
    Ok(AuthorizationRequest {
        id: get(row, "id")?,
        browser_hash: get(row, "browser_hash")?,
        resource_id: codec::resource_id(&get::<String>(row, "resource_id")?)?,
        client_id: codec::client_id(&get::<String>(row, "client_id")?)?,
        redirect_uri: get(row, "redirect_uri")?,
        redirect_uri_explicit: get_bool(row, "redirect_uri_explicit")?,
        scopes: scopes_from_text(&get::<String>(row, "scopes")?),
        state: get(row, "state")?,
        code_challenge: get(row, "code_challenge")?,
        resource_url: get(row, "resource_url")?,
        prompt: get(row, "prompt")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
    })
}

macro_rules! consent_columns {
    () => {
        "user_id, client_id, resource_id, scopes, created_at, updated_at"
    };
}
pub(super) use consent_columns;

pub(super) fn consent(row: &SqliteRow) -> Result<Consent> {
    Ok(Consent {
        user_id: codec::user_id(&get::<String>(row, "user_id")?)?,
        client_id: codec::client_id(&get::<String>(row, "client_id")?)?,
        resource_id: codec::resource_id(&get::<String>(row, "resource_id")?)?,
        scopes: scopes_from_text(&get::<String>(row, "scopes")?),
        created_at: get(row, "created_at")?,
        updated_at: get(row, "updated_at")?,
    })
}

macro_rules! code_columns {
    () => {
        "code_hash, resource_id, client_id, user_id, session_id, redirect_uri, \
         redirect_uri_explicit, scopes, code_challenge, resource_url, auth_time, created_at, \
         expires_at, consumed_at, family_id"
    };
}
pub(super) use code_columns;

pub(super) fn code(row: &SqliteRow) -> Result<AuthorizationCode> {
    Ok(AuthorizationCode {
        code_hash: get(row, "code_hash")?,
        resource_id: codec::resource_id(&get::<String>(row, "resource_id")?)?,
        client_id: codec::client_id(&get::<String>(row, "client_id")?)?,
        user_id: codec::user_id(&get::<String>(row, "user_id")?)?,
        session_id: get(row, "session_id")?,
        redirect_uri: get(row, "redirect_uri")?,
        redirect_uri_explicit: get_bool(row, "redirect_uri_explicit")?,
        scopes: scopes_from_text(&get::<String>(row, "scopes")?),
        code_challenge: get(row, "code_challenge")?,
        resource_url: get(row, "resource_url")?,
        auth_time: get(row, "auth_time")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        consumed_at: get(row, "consumed_at")?,
        family_id: get::<Option<String>>(row, "family_id")?.map(|f| codec::family_id(&f)).transpose()?,
    })
}

macro_rules! family_columns {
    () => {
        "id, resource_id, client_id, user_id, session_id, scopes, auth_time, created_at, \
         expires_at, revoked_at"
    };
}
pub(super) use family_columns;

pub(super) fn family(row: &SqliteRow) -> Result<RefreshFamily> {
    Ok(RefreshFamily {
        id: codec::family_id(&get::<String>(row, "id")?)?,
        resource_id: codec::resource_id(&get::<String>(row, "resource_id")?)?,
        client_id: codec::client_id(&get::<String>(row, "client_id")?)?,
        user_id: get::<Option<String>>(row, "user_id")?.map(|u| codec::user_id(&u)).transpose()?,
        session_id: get(row, "session_id")?,
        scopes: scopes_from_text(&get::<String>(row, "scopes")?),
        auth_time: get(row, "auth_time")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        revoked_at: get(row, "revoked_at")?,
    })
}

macro_rules! token_columns {
    () => {
        "token_hash, family_id, parent_hash, created_at, expires_at, rotated_at"
    };
}
pub(super) use token_columns;

pub(super) fn token(row: &SqliteRow) -> Result<RefreshToken> {
    Ok(RefreshToken {
        token_hash: get(row, "token_hash")?,
        family_id: codec::family_id(&get::<String>(row, "family_id")?)?,
        parent_hash: get(row, "parent_hash")?,
        created_at: get(row, "created_at")?,
        expires_at: get(row, "expires_at")?,
        rotated_at: get(row, "rotated_at")?,
    })
}

macro_rules! signing_key_columns {
    () => {
        "kid, alg, encrypted_private_key, public_jwk, created_at, activates_at, retires_at, \
         unpublish_at"
    };
}
pub(super) use signing_key_columns;

pub(super) fn signing_key(row: &SqliteRow) -> Result<SigningKeyRecord> {
    Ok(SigningKeyRecord {
        kid: get(row, "kid")?,
        alg: get(row, "alg")?,
        encrypted_private_key: get(row, "encrypted_private_key")?,
        public_jwk: get(row, "public_jwk")?,
        created_at: get(row, "created_at")?,
        activates_at: get(row, "activates_at")?,
        retires_at: get(row, "retires_at")?,
        unpublish_at: get(row, "unpublish_at")?,
    })
}

macro_rules! audit_columns {
    () => {
        "id, at, kind, resource_id, client_id, user_id, ip, detail"
    };
}
pub(super) use audit_columns;

pub(super) fn audit_event(row: &SqliteRow) -> Result<AuditEvent> {
    Ok(AuditEvent {
        id: get(row, "id")?,
        at: get(row, "at")?,
        kind: get(row, "kind")?,
        resource_id: get(row, "resource_id")?,
        client_id: get(row, "client_id")?,
        user_id: get(row, "user_id")?,
        ip: get(row, "ip")?,
        detail: codec::from_json(&get::<String>(row, "detail")?, "audit detail")?,
    })
}
