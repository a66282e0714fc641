//! Clients of a resource: pre-registered, dynamic (RFC 7591) and CIMD (DESIGN.md §5).

use moat_core::ids::{ClientId, ResourceId};
use moat_core::model::{Client, ClientKind};

use super::{SqliteStore, commit};
use crate::codec::{bool_to_int, db_error, grant_types_to_json, to_json};
use crate::rows::{self, client_columns};
use crate::{LAST_USED_RESOLUTION_SECONDS, Result};

pub(super) async fn create(s: &SqliteStore, c: &Client) -> Result<()> {
    let mut tx = s.begin_write().await?;
    sqlx::query(concat!(
        "INSERT INTO clients (",
        client_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(c.id.as_str())
    .bind(c.resource_id.as_str())
    .bind(c.kind.as_str())
    .bind(&c.name)
    .bind(to_json(&c.redirect_uris, "redirect URIs")?)
    .bind(grant_types_to_json(&c.grant_types)?)
    .bind(c.auth_method.as_str())
    .bind(c.secret_hash.as_deref())
    .bind(c.secret_expires_at)
    .bind(to_json(&c.metadata, "client metadata")?)
    .bind(c.fingerprint.as_deref())
    .bind(c.access_token_ttl)
    .bind(bool_to_int(c.disabled))
    .bind(c.created_at)
    .bind(c.updated_at)
    .bind(c.last_used_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("create client", e))?;
    commit(tx, "create client").await
}

pub(super) async fn get(s: &SqliteStore, id: &ClientId) -> Result<Option<Client>> {
    sqlx::query(concat!("SELECT ", client_columns!(), " FROM clients WHERE id = ?"))
        .bind(id.as_str())
        .fetch_optional(&s.reader)
        .await
        .map_err(|e| db_error("get client", e))?
        .map(|row| rows::client(&row))
        .transpose()
}

pub(super) async fn list(s: &SqliteStore, resource: Option<&ResourceId>) -> Result<Vec<Client>> {
    let found = match resource {
        Some(r) => {
            sqlx::query(concat!(
                "SELECT ",
                client_columns!(),
                " FROM clients WHERE resource_id = ? ORDER BY created_at, id"
            ))
            .bind(r.as_str())
            .fetch_all(&s.reader)
            .await
        }
        None => {
            sqlx::query(concat!("SELECT ", client_columns!(), " FROM clients ORDER BY created_at, id"))
                .fetch_all(&s.reader)
                .await
        }
    };
    found.map_err(|e| db_error("list clients", e))?.iter().map(rows::client).collect()
}

pub(super) async fn find_by_fingerprint(
    s: &SqliteStore,
    resource: &ResourceId,
    fingerprint: &str,
) -> Result<Option<Client>> {
    sqlx::query(concat!(
        "SELECT ",
        client_columns!(),
        " FROM clients WHERE resource_id = ? AND fingerprint = ? AND kind = ? AND disabled = 0 \
         ORDER BY created_at, id LIMIT 1"
    ))
    .bind(resource.as_str())
    .bind(fingerprint)
    .bind(ClientKind::Dynamic.as_str())
    .fetch_optional(&s.reader)
    .await
    .map_err(|e| db_error("find client by fingerprint", e))?
    .map(|row| rows::client(&row))
    .transpose()
}

/// Disabling revokes every refresh family of the client in the same transaction, so no token
/// issued before can be refreshed (DESIGN.md §4). Enabling again does not revive them.
pub(super) async fn set_disabled(s: &SqliteStore, id: &ClientId, disabled: bool, now: i64) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("UPDATE clients SET disabled = ?, updated_at = ? WHERE id = ?")
        .bind(bool_to_int(disabled))
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("set client disabled", e))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if disabled {
        sqlx::query("UPDATE refresh_families SET revoked_at = ? WHERE client_id = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("revoke families of disabled client", e))?;
    }
    commit(tx, "set client disabled").await?;
    Ok(true)
}

/// Codes, consents, pending requests, families and tokens cascade. Seen assertion jtis are
/// deliberately kept until they expire: a CIMD client id (a URL) can come back, and its old
/// assertions must stay single-use (RFC 7523 §3).
pub(super) async fn delete(s: &SqliteStore, id: &ClientId) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("DELETE FROM clients WHERE id = ?")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("delete client", e))?;
    commit(tx, "delete client").await?;
    Ok(done.rows_affected() > 0)
}

/// Records a successful token issuance (never-used dynamic registrations expire, DESIGN.md §5),
/// at most once per [`LAST_USED_RESOLUTION_SECONDS`]: a busy client's row is not rewritten on
/// every request.
pub(super) async fn mark_used(conn: &mut sqlx::SqliteConnection, id: &ClientId, now: i64) -> Result<()> {
    sqlx::query("UPDATE clients SET last_used_at = ? WHERE id = ? AND (last_used_at IS NULL OR last_used_at < ?)")
        .bind(now)
        .bind(id.as_str())
        .bind(now.saturating_sub(LAST_USED_RESOLUTION_SECONDS))
        .execute(conn)
        .await
        .map_err(|e| db_error("mark client used", e))?;
    Ok(())
}

/// Whether the client exists and is enabled, read inside the caller's write transaction (which
/// holds the database write lock, so no disabling can slip in before it commits).
pub(super) async fn is_active_in(conn: &mut sqlx::SqliteConnection, id: &ClientId) -> Result<bool> {
    let disabled: Option<i64> = sqlx::query_scalar("SELECT disabled FROM clients WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error("check client status", e))?;
    Ok(disabled.is_some_and(|d| d == 0))
}
