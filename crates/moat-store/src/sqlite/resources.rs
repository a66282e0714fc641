//! Resources (registered MCP servers). The server URL is unique in its canonical form
//! (DESIGN.md §8: lowercase scheme and host, default port dropped, trailing slash ignored), so
//! `https://X.example/mcp/` and `https://x.example/mcp` cannot both be registered.

use moat_core::ids::ResourceId;
use moat_core::model::Resource;

use super::{SqliteStore, commit};
use crate::Result;
use crate::codec::{bool_to_int, canonical_server_url, db_error, scope_defs_to_json, scopes_to_text, to_json};
use crate::rows::{self, resource_columns};

pub(super) async fn create(s: &SqliteStore, r: &Resource) -> Result<()> {
    let canonical = canonical_server_url(&r.server_url)?;
    let mut tx = s.begin_write().await?;
    sqlx::query(concat!(
        "INSERT INTO resources (",
        resource_columns!(),
        ", server_url_canonical) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(r.id.as_str())
    .bind(&r.name)
    .bind(&r.server_url)
    .bind(scope_defs_to_json(&r.scopes)?)
    .bind(scopes_to_text(&r.default_scopes))
    .bind(bool_to_int(r.dcr_enabled))
    .bind(bool_to_int(r.cimd_enabled))
    .bind(to_json(&r.cimd_allowed_hosts, "CIMD allowed hosts")?)
    .bind(r.access_token_ttl)
    .bind(r.refresh_token_ttl)
    .bind(r.refresh_idle_ttl)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(canonical)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("create resource", e))?;
    commit(tx, "create resource").await
}

pub(super) async fn get(s: &SqliteStore, id: &ResourceId) -> Result<Option<Resource>> {
    sqlx::query(concat!("SELECT ", resource_columns!(), " FROM resources WHERE id = ?"))
        .bind(id.as_str())
        .fetch_optional(&s.reader)
        .await
        .map_err(|e| db_error("get resource", e))?
        .map(|row| rows::resource(&row))
        .transpose()
}

pub(super) async fn list(s: &SqliteStore) -> Result<Vec<Resource>> {
    sqlx::query(concat!("SELECT ", resource_columns!(), " FROM resources ORDER BY created_at, id"))
        .fetch_all(&s.reader)
        .await
        .map_err(|e| db_error("list resources", e))?
        .iter()
        .map(rows::resource)
        .collect()
}

pub(super) async fn update(s: &SqliteStore, r: &Resource) -> Result<bool> {
    let canonical = canonical_server_url(&r.server_url)?;
    let mut tx = s.begin_write().await?;
    // `created_at` is the only immutable field besides the id.
    let done = sqlx::query(
        "UPDATE resources SET name = ?, server_url = ?, server_url_canonical = ?, scopes = ?, \
         default_scopes = ?, dcr_enabled = ?, cimd_enabled = ?, cimd_allowed_hosts = ?, \
         access_token_ttl = ?, refresh_token_ttl = ?, refresh_idle_ttl = ?, updated_at = ? \
         WHERE id = ?",
    )
    .bind(&r.name)
    .bind(&r.server_url)
    .bind(canonical)
    .bind(scope_defs_to_json(&r.scopes)?)
    .bind(scopes_to_text(&r.default_scopes))
    .bind(bool_to_int(r.dcr_enabled))
    .bind(bool_to_int(r.cimd_enabled))
    .bind(to_json(&r.cimd_allowed_hosts, "CIMD allowed hosts")?)
    .bind(r.access_token_ttl)
    .bind(r.refresh_token_ttl)
    .bind(r.refresh_idle_ttl)
    .bind(r.updated_at)
    .bind(r.id.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("update resource", e))?;
    commit(tx, "update resource").await?;
    Ok(done.rows_affected() > 0)
}

/// Clients, codes, consents, pending requests, families and tokens go with it (foreign keys
/// with `ON DELETE CASCADE`).
pub(super) async fn delete(s: &SqliteStore, id: &ResourceId) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("DELETE FROM resources WHERE id = ?")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("delete resource", e))?;
    commit(tx, "delete resource").await?;
    Ok(done.rows_affected() > 0)
}
