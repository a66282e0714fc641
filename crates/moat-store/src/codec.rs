//! Backend-agnostic conversions between domain values and their column representations, shared
//! by every SQL backend so SQLite and PostgreSQL store exactly the same shapes (DESIGN.md §7):
//! scope lists as space-joined text, other lists and documents as JSON text, booleans as 0/1
//! integers (INTEGER in SQLite, SMALLINT in PostgreSQL), typed ids parsed back strictly. Also
//! the mapping of driver errors to [`StoreError`].

use moat_core::ids::{ClientId, FamilyId, ResourceId, UserId};
use moat_core::model::{AuthMethod, ClientKind, GrantType, ScopeDef};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::{Result, StoreError};

/// Scopes are space-joined (scope tokens never contain spaces, RFC 6749 §3.3).
pub(crate) fn scopes_to_text(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// Inverse of [`scopes_to_text`]; an empty column is an empty list.
pub(crate) fn scopes_from_text(text: &str) -> Vec<String> {
    text.split(' ').filter(|s| !s.is_empty()).map(str::to_owned).collect()
}

pub(crate) fn bool_to_int(b: bool) -> i64 {
    i64::from(b)
}

/// A flag as bound to PostgreSQL's SMALLINT columns (sqlx binds `i16` as `int2`).
pub(crate) fn bool_to_small(b: bool) -> i16 {
    i16::from(b)
}

pub(crate) fn int_to_bool(i: i64) -> bool {
    i != 0
}

/// Audit page size: `limit: 0` (the `AuditQuery` default) means 100, and at most 1000 events
/// are served per page.
pub(crate) fn audit_page_size(limit: u32) -> i64 {
    const DEFAULT_PAGE: u32 = 100;
    const MAX_PAGE: u32 = 1000;
    i64::from(match limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    })
}

pub(crate) fn to_json<T: Serialize + ?Sized>(value: &T, what: &str) -> Result<String> {
    serde_json::to_string(value).map_err(|e| StoreError::Backend(format!("encoding {what}: {e}")))
}

pub(crate) fn from_json<T: DeserializeOwned>(text: &str, what: &str) -> Result<T> {
    serde_json::from_str(text).map_err(|e| StoreError::Backend(format!("corrupt row: cannot decode {what}: {e}")))
}

/// The canonical form of a resource's server URL, stored in the unique `server_url_canonical`
/// column (DESIGN.md §8: lowercase scheme and host, default port dropped, trailing slash
/// ignored).
pub(crate) fn canonical_server_url(server_url: &str) -> Result<String> {
    moat_core::url::canonical_resource(server_url)
        .map_err(|e| StoreError::Backend(format!("resource server URL is not valid: {e}")))
}

pub(crate) fn scope_defs_to_json(defs: &[ScopeDef]) -> Result<String> {
    to_json(defs, "resource scopes")
}

pub(crate) fn grant_types_to_json(grants: &[GrantType]) -> Result<String> {
    let names: Vec<&str> = grants.iter().map(|g| g.as_str()).collect();
    to_json(&names, "client grant types")
}

pub(crate) fn grant_types_from_json(text: &str) -> Result<Vec<GrantType>> {
    let names: Vec<String> = from_json(text, "client grant types")?;
    names.iter().map(|n| GrantType::parse(n).ok_or_else(|| corrupt("clients.grant_types", n))).collect()
}

pub(crate) fn client_kind(text: &str) -> Result<ClientKind> {
    ClientKind::parse(text).ok_or_else(|| corrupt("clients.kind", text))
}

pub(crate) fn auth_method(text: &str) -> Result<AuthMethod> {
    AuthMethod::parse(text).ok_or_else(|| corrupt("clients.auth_method", text))
}

pub(crate) fn resource_id(text: &str) -> Result<ResourceId> {
    ResourceId::parse(text).ok_or_else(|| corrupt("resource id", text))
}

pub(crate) fn user_id(text: &str) -> Result<UserId> {
    UserId::parse(text).ok_or_else(|| corrupt("user id", text))
}

pub(crate) fn client_id(text: &str) -> Result<ClientId> {
    ClientId::parse(text).ok_or_else(|| corrupt("client id", text))
}

pub(crate) fn family_id(text: &str) -> Result<FamilyId> {
    FamilyId::parse(text).ok_or_else(|| corrupt("family id", text))
}

/// A column that does not hold what the schema promises. Only identifiers and enum names are
/// quoted (bounded in length): hashes and secrets are never passed here.
fn corrupt(what: &str, value: &str) -> StoreError {
    let shown: String = value.chars().take(64).collect();
    StoreError::Backend(format!("corrupt row: invalid {what} {shown:?}"))
}

/// Maps a driver error: unique violations become [`StoreError::Conflict`] (the message names the
/// constraint, never a value), everything else [`StoreError::Backend`] with `context`. sqlx
/// errors never contain bound parameters, so hashes cannot leak through them.
pub(crate) fn db_error(context: &str, err: sqlx::Error) -> StoreError {
    if let sqlx::Error::Database(db) = &err
        && db.is_unique_violation()
    {
        return StoreError::Conflict(conflict_message(context, db.message(), db.constraint()));
    }
    StoreError::Backend(format!("{context}: {err}"))
}

/// A readable description of which uniqueness rule was violated. SQLite names the columns in
/// its message (`UNIQUE constraint failed: users.email`), PostgreSQL names the constraint; the
/// constraint names in the migrations are chosen so both spell the same column names.
fn conflict_message(context: &str, message: &str, constraint: Option<&str>) -> String {
    let haystack = format!("{message} {}", constraint.unwrap_or_default());
    let what = if haystack.contains("server_url_canonical") {
        "a resource with this server URL already exists"
    } else if haystack.contains("email") {
        "a user with this email already exists"
    } else if haystack.contains("resources.id") || haystack.contains("resources_pkey") {
        "a resource with this id already exists"
    } else if haystack.contains("clients.id") || haystack.contains("clients_pkey") {
        "a client with this id already exists at this resource"
    } else if haystack.contains("users.id") || haystack.contains("users_pkey") {
        "a user with this id already exists"
    } else if haystack.contains("signing_keys") {
        "a signing key with this kid already exists"
    } else {
        "a row with the same unique key already exists"
    };
    format!("{context}: {what}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_round_trip_and_empty_is_empty() {
        let s = vec!["a:read".to_owned(), "b".to_owned()];
        assert_eq!(scopes_from_text(&scopes_to_text(&s)), s);
        assert!(scopes_from_text("").is_empty());
    }

    #[test]
    fn grant_types_round_trip_and_reject_unknown() {
        let g = vec![GrantType::AuthorizationCode, GrantType::RefreshToken];
        assert_eq!(grant_types_from_json(&grant_types_to_json(&g).unwrap()).unwrap(), g);
        assert!(grant_types_from_json("[\"implicit\"]").is_err());
    }

    #[test]
    fn conflict_messages_name_the_rule() {
        assert!(
            conflict_message("create user", "UNIQUE constraint failed: users.email", None)
                .contains("email already exists")
        );
        assert!(conflict_message("x", "dup", Some("resources_server_url_canonical_key")).contains("server URL"));
    }
}
