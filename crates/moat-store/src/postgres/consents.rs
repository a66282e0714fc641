//! Remembered consent per (user, client, resource) (DESIGN.md §6). Consent is written by
//! [`super::codes::complete_authorization`]; withdrawing it revokes the grants it backed.

use moat_core::ids::{ClientId, ResourceId, UserId};
use moat_core::model::Consent;
use sqlx::PgConnection;

use super::{Attempts, PgStore, TxResult, fail};
use crate::Result;
use crate::codec::{db_error, scopes_from_text, scopes_to_text};
use crate::rows::{self, consent_columns};

pub(super) async fn get(
    s: &PgStore,
    user: &UserId,
    client: &ClientId,
    resource: &ResourceId,
) -> Result<Option<Consent>> {
    sqlx::query(concat!(
        "SELECT ",
        consent_columns!(),
        " FROM consents WHERE user_id = $1 AND client_id = $2 AND resource_id = $3"
    ))
    .bind(user.as_str())
    .bind(client.as_str())
    .bind(resource.as_str())
    .fetch_optional(&s.pool)
    .await
    .map_err(|e| db_error("get consent", e))?
    .map(|row| rows::consent(&row))
    .transpose()
}

/// The granted scopes, read inside a rotating transaction (`None`: no consent).
pub(super) async fn scopes_in(
    conn: &mut PgConnection,
    user: &UserId,
    client: &ClientId,
    resource: &ResourceId,
) -> TxResult<Option<Vec<String>>> {
    let scopes: Option<String> =
        sqlx::query_scalar("SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2 AND resource_id = $3")
            .bind(user.as_str())
            .bind(client.as_str())
            .bind(resource.as_str())
            .fetch_optional(conn)
            .await
            .map_err(fail("read consent scopes"))?;
    Ok(scopes.as_deref().map(scopes_from_text))
}

/// Records a consent, merging its scopes into any remembered ones (`created_at` stays).
///
/// Two approvals of one (user, client, resource) may run at once, on one instance or two; a
/// plain upsert would let the last writer drop the other's scopes, and the family of the loser
/// would then fail its next refresh (consent no longer covers it). So: insert if absent (a
/// concurrent insert makes this one wait on the unique index, then do nothing), then lock the
/// row and merge.
pub(super) async fn merge_in(conn: &mut PgConnection, c: &Consent) -> TxResult<()> {
    let inserted = sqlx::query(concat!(
        "INSERT INTO consents (",
        consent_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT (user_id, client_id, resource_id) DO NOTHING"
    ))
    .bind(c.user_id.as_str())
    .bind(c.client_id.as_str())
    .bind(c.resource_id.as_str())
    .bind(scopes_to_text(&c.scopes))
    .bind(c.created_at)
    .bind(c.updated_at)
    .execute(&mut *conn)
    .await
    .map_err(fail("store consent"))?;
    if inserted.rows_affected() == 1 {
        return Ok(());
    }
    let existing: Option<String> = sqlx::query_scalar(
        "SELECT scopes FROM consents WHERE user_id = $1 AND client_id = $2 AND resource_id = $3 FOR UPDATE",
    )
    .bind(c.user_id.as_str())
    .bind(c.client_id.as_str())
    .bind(c.resource_id.as_str())
    .fetch_optional(&mut *conn)
    .await
    .map_err(fail("lock consent"))?;
    let merged = moat_core::scope::union(&existing.as_deref().map(scopes_from_text).unwrap_or_default(), &c.scopes);
    sqlx::query(
        "UPDATE consents SET scopes = $1, updated_at = $2 \
         WHERE user_id = $3 AND client_id = $4 AND resource_id = $5",
    )
    .bind(scopes_to_text(&merged))
    .bind(c.updated_at)
    .bind(c.user_id.as_str())
    .bind(c.client_id.as_str())
    .bind(c.resource_id.as_str())
    .execute(&mut *conn)
    .await
    .map_err(fail("merge consent"))?;
    Ok(())
}

/// Withdraws consent and revokes the refresh families granted to this (user, client, resource)
/// in the same transaction. The families are revoked even when no consent row was left: they
/// could not be refreshed without one anyway, and revocation makes that explicit. A rotation
/// that holds one of these families' lock finishes first; the revocation then covers the
/// successor it stored too, since it revokes the family.
pub(super) async fn delete(
    s: &PgStore,
    user: &UserId,
    client: &ClientId,
    resource: &ResourceId,
    now: i64,
) -> Result<bool> {
    let mut attempts = Attempts::new("delete consent");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = delete_in(&mut tx, user, client, resource, now).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn delete_in(
    tx: &mut PgConnection,
    user: &UserId,
    client: &ClientId,
    resource: &ResourceId,
    now: i64,
) -> TxResult<bool> {
    let done = sqlx::query("DELETE FROM consents WHERE user_id = $1 AND client_id = $2 AND resource_id = $3")
        .bind(user.as_str())
        .bind(client.as_str())
        .bind(resource.as_str())
        .execute(&mut *tx)
        .await
        .map_err(fail("delete consent"))?;
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = $1 \
         WHERE user_id = $2 AND client_id = $3 AND resource_id = $4 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(user.as_str())
    .bind(client.as_str())
    .bind(resource.as_str())
    .execute(&mut *tx)
    .await
    .map_err(fail("revoke families of withdrawn consent"))?;
    Ok(done.rows_affected() > 0)
}
