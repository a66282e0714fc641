//! Resources (registered MCP servers). The server URL is unique in its canonical form
//! (DESIGN.md §8: lowercase scheme and host, default port dropped, trailing slash ignored), so
//! `https://X.example/mcp/` and `https://x.example/mcp` cannot both be registered. Every
//! operation is one statement.

use moat_core::ids::ResourceId;
use moat_core::model::Resource;

use super::PgStore;
use crate::Result;
use crate::codec::{bool_to_small, canonical_server_url, db_error, scope_defs_to_json, scopes_to_text, to_json};
use crate::rows::{self, resource_columns};

pub(super) async fn create(s: &PgStore, r: &Resource) -> Result<()> {
    let canonical = canonical_server_url(&r.server_url)?;
    sqlx::query(concat!(
        "INSERT INTO resources (",
        resource_columns!(),
        ", server_url_canonical) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14)"
    ))
    .bind(r.id.as_str())
    .bind(&r.name)
    .bind(&r.server_url)
    .bind(scope_defs_to_json(&r.scopes)?)
    .bind(scopes_to_text(&r.default_scopes))
    .bind(bool_to_small(r.dcr_enabled))
    .bind(bool_to_small(r.cimd_enabled))
    .bind(to_json(&r.cimd_allowed_hosts, "CIMD allowed hosts")?)
    .bind(r.access_token_ttl)
    .bind(r.refresh_token_ttl)
    .bind(r.refresh_idle_ttl)
    .bind(r.created_at)
    .bind(r.updated_at)
    .bind(canonical)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error("create resource", e))?;
    Ok(())
}

pub(super) async fn get(s: &PgStore, id: &ResourceId) -> Result<Option<Resource>> {
    sqlx::query(concat!("SELECT ", resource_columns!(), " FROM resources WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error("get resource", e))?
        .map(|row| rows::resource(&row))
        .transpose()
}

pub(super) async fn list(s: &PgStore) -> Result<Vec<Resource>> {
    sqlx::query(concat!("SELECT ", resource_columns!(), " FROM resources ORDER BY created_at, id"))
        .fetch_all(&s.pool)
        .await
        .map_err(|e| db_error("list resources", e))?
        .iter()
        .map(rows::resource)
        .collect()
}

pub(super) async fn update(s: &PgStore, r: &Resource) -> Result<bool> {
    let canonical = canonical_server_url(&r.server_url)?;
    // `created_at` is the only immutable field besides the id.
    let done = sqlx::query(
        "UPDATE resources SET name = $1, server_url = $2, server_url_canonical = $3, scopes = $4, \
         default_scopes = $5, dcr_enabled = $6, cimd_enabled = $7, cimd_allowed_hosts = $8, \
         access_token_ttl = $9, refresh_token_ttl = $10, refresh_idle_ttl = $11, updated_at = $12 \
         WHERE id = $13",
    )
    .bind(&r.name)
    .bind(&r.server_url)
    .bind(canonical)
    .bind(scope_defs_to_json(&r.scopes)?)
    .bind(scopes_to_text(&r.default_scopes))
    .bind(bool_to_small(r.dcr_enabled))
    .bind(bool_to_small(r.cimd_enabled))
    .bind(to_json(&r.cimd_allowed_hosts, "CIMD allowed hosts")?)
    .bind(r.access_token_ttl)
    .bind(r.refresh_token_ttl)
    .bind(r.refresh_idle_ttl)
    .bind(r.updated_at)
    .bind(r.id.as_str())
    .execute(&s.pool)
    .await
    .map_err(|e| db_error("update resource", e))?;
    Ok(done.rows_affected() > 0)
}

/// Clients, codes, consents, pending requests, families and tokens go with it (foreign keys
/// with `ON DELETE CASCADE`, applied within the one DELETE statement).
pub(super) async fn delete(s: &PgStore, id: &ResourceId) -> Result<bool> {
    s.delete_cascading("delete resource", "DELETE FROM resources WHERE id = $1", &[id.as_str()]).await
}
