//! Clients of a resource: pre-registered, dynamic (RFC 7591) and CIMD (DESIGN.md §5). A client
//! is identified by (resource, id): every query here names both.

use moat_core::ids::{ClientId, ResourceId};
use moat_core::model::{Client, ClientKind};

use super::{SqliteStore, commit, rollback};
use crate::codec::{bool_to_int, db_error, grant_types_to_json, int_to_bool, to_json};
use crate::rows::{self, client_columns};
use crate::{LAST_USED_RESOLUTION_SECONDS, Result, check_cimd, cimd_clash};

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

pub(super) async fn get(s: &SqliteStore, resource: &ResourceId, id: &ClientId) -> Result<Option<Client>> {
    sqlx::query(concat!("SELECT ", client_columns!(), " FROM clients WHERE resource_id = ? AND id = ?"))
        .bind(resource.as_str())
        .bind(id.as_str())
        .fetch_optional(&s.reader)
        .await
        .map_err(|e| db_error("get client", e))?
        .map(|row| rows::client(&row))
        .transpose()
}

/// Records a metadata-document client (see [`crate::Store::upsert_cimd_client`]) in one
/// statement. The update is limited to CIMD rows: a document must never rewrite the redirect URIs
/// of a pre-registered or dynamic client that happens to have the same id at this resource, so
/// such a clash changes nothing and is a `Conflict`.
pub(super) async fn upsert_cimd(s: &SqliteStore, c: &Client) -> Result<Client> {
    check_cimd(c)?;
    let mut tx = s.begin_write().await?;
    let stored = sqlx::query(concat!(
        "INSERT INTO clients (",
        client_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) \
         ON CONFLICT (resource_id, id) DO UPDATE SET \
             name = excluded.name, redirect_uris = excluded.redirect_uris, \
             grant_types = excluded.grant_types, auth_method = excluded.auth_method, \
             metadata = excluded.metadata, updated_at = excluded.updated_at \
         WHERE clients.kind = excluded.kind \
         RETURNING ",
        client_columns!()
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
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| db_error("record metadata-document client", e))?;
    let Some(row) = stored else {
        rollback(tx, "record metadata-document client").await?;
        return Err(cimd_clash());
    };
    let client = rows::client(&row)?;
    commit(tx, "record metadata-document client").await?;
    Ok(client)
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
         ORDER BY (last_used_at IS NULL), created_at DESC, id LIMIT 1"
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

/// Disabling revokes every refresh family of the client at this resource in the same
/// transaction, so no token issued before can be refreshed (DESIGN.md §4); the same CIMD URL at
/// another resource is another client and keeps its grants. Enabling again does not revive them.
pub(super) async fn set_disabled(
    s: &SqliteStore,
    resource: &ResourceId,
    id: &ClientId,
    disabled: bool,
    now: i64,
) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("UPDATE clients SET disabled = ?, updated_at = ? WHERE resource_id = ? AND id = ?")
        .bind(bool_to_int(disabled))
        .bind(now)
        .bind(resource.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("set client disabled", e))?;
    if done.rows_affected() == 0 {
        rollback(tx, "set client disabled").await?;
        return Ok(false);
    }
    if disabled {
        sqlx::query(
            "UPDATE refresh_families SET revoked_at = ? \
             WHERE resource_id = ? AND client_id = ? AND revoked_at IS NULL",
        )
        .bind(now)
        .bind(resource.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("revoke families of disabled client", e))?;
    }
    commit(tx, "set client disabled").await?;
    Ok(true)
}

/// Codes, consents, pending requests, families and tokens of the client at this resource
/// cascade. Seen assertion jtis are deliberately kept until they expire: a CIMD client id (a
/// URL) can come back, and its old assertions must stay single-use (RFC 7523 §3).
pub(super) async fn delete(s: &SqliteStore, resource: &ResourceId, id: &ClientId) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("DELETE FROM clients WHERE resource_id = ? AND id = ?")
        .bind(resource.as_str())
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
pub(super) async fn mark_used(
    conn: &mut sqlx::SqliteConnection,
    resource: &ResourceId,
    id: &ClientId,
    now: i64,
) -> Result<()> {
    sqlx::query(
        "UPDATE clients SET last_used_at = ? \
         WHERE resource_id = ? AND id = ? AND (last_used_at IS NULL OR last_used_at < ?)",
    )
    .bind(now)
    .bind(resource.as_str())
    .bind(id.as_str())
    .bind(now.saturating_sub(LAST_USED_RESOLUTION_SECONDS))
    .execute(conn)
    .await
    .map_err(|e| db_error("mark client used", e))?;
    Ok(())
}

/// Whether the client exists and is enabled, read inside the caller's write transaction (which
/// holds the database write lock, so no disabling can slip in before it commits).
pub(super) async fn is_active_in(
    conn: &mut sqlx::SqliteConnection,
    resource: &ResourceId,
    id: &ClientId,
) -> Result<bool> {
    let disabled: Option<i64> = sqlx::query_scalar("SELECT disabled FROM clients WHERE resource_id = ? AND id = ?")
        .bind(resource.as_str())
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error("check client status", e))?;
    Ok(disabled.is_some_and(|d| !int_to_bool(d)))
}
