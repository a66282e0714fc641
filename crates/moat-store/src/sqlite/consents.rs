//! Remembered consent per (user, client, resource) (DESIGN.md §6). Consent is written by
//! [`super::codes::complete_authorization`]; withdrawing it revokes the grants it backed.

use moat_core::ids::{ClientId, ResourceId, UserId};
use moat_core::model::Consent;

use super::{SqliteStore, commit};
use crate::Result;
use crate::codec::{db_error, scopes_from_text, scopes_to_text};
use crate::rows::{self, consent_columns};

pub(super) async fn get(
    s: &SqliteStore,
    user: &UserId,
    client: &ClientId,
    resource: &ResourceId,
) -> Result<Option<Consent>> {
    sqlx::query(concat!(
        "SELECT ",
        consent_columns!(),
        " FROM consents WHERE user_id = ? AND client_id = ? AND resource_id = ?"
    ))
    .bind(user.as_str())
    .bind(client.as_str())
    .bind(resource.as_str())
    .fetch_optional(&s.reader)
    .await
    .map_err(|e| db_error("get consent", e))?
    .map(|row| rows::consent(&row))
    .transpose()
}

/// The granted scopes, read inside a rotating transaction (`None`: no consent).
pub(super) async fn scopes_in(
    conn: &mut sqlx::SqliteConnection,
    user: &UserId,
    client: &ClientId,
    resource: &ResourceId,
) -> Result<Option<Vec<String>>> {
    let scopes: Option<String> =
        sqlx::query_scalar("SELECT scopes FROM consents WHERE user_id = ? AND client_id = ? AND resource_id = ?")
            .bind(user.as_str())
            .bind(client.as_str())
            .bind(resource.as_str())
            .fetch_optional(conn)
            .await
            .map_err(|e| db_error("read consent scopes", e))?;
    Ok(scopes.as_deref().map(scopes_from_text))
}

/// Records a consent, merging its scopes into any remembered ones (`created_at` stays). Runs
/// inside the caller's write transaction, which SQLite serialises, so the read and the write
/// cannot interleave with another approval.
pub(super) async fn merge_in(conn: &mut sqlx::SqliteConnection, c: &Consent) -> Result<()> {
    let existing = scopes_in(&mut *conn, &c.user_id, &c.client_id, &c.resource_id).await?;
    let merged = moat_core::scope::union(&existing.unwrap_or_default(), &c.scopes);
    sqlx::query(concat!(
        "INSERT INTO consents (",
        consent_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?) \
         ON CONFLICT (user_id, client_id, resource_id) \
         DO UPDATE SET scopes = excluded.scopes, updated_at = excluded.updated_at"
    ))
    .bind(c.user_id.as_str())
    .bind(c.client_id.as_str())
    .bind(c.resource_id.as_str())
    .bind(scopes_to_text(&merged))
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("store consent", e))?;
    Ok(())
}

/// Withdraws consent and revokes the refresh families granted to this (user, client, resource)
/// in the same transaction. The families are revoked even when no consent row was left: they
/// could not be refreshed without one anyway, and revocation makes that explicit.
pub(super) async fn delete(
    s: &SqliteStore,
    user: &UserId,
    client: &ClientId,
    resource: &ResourceId,
    now: i64,
) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("DELETE FROM consents WHERE user_id = ? AND client_id = ? AND resource_id = ?")
        .bind(user.as_str())
        .bind(client.as_str())
        .bind(resource.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("delete consent", e))?;
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = ? \
         WHERE user_id = ? AND client_id = ? AND resource_id = ? AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(user.as_str())
    .bind(client.as_str())
    .bind(resource.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("revoke families of withdrawn consent", e))?;
    commit(tx, "delete consent").await?;
    Ok(done.rows_affected() > 0)
}
