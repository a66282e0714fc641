//! Refresh-token families and rotation (DESIGN.md §4; OAuth 2.1 §4.3.1, RFC 9700 §4.14.2).
//!
//! The rule itself is the pure [`moat_core::refresh::decide`]; this module reads its facts and
//! applies its decision inside one write transaction, so two concurrent refreshes of the same
//! token can never both rotate it.

use moat_core::ids::{FamilyId, UserId};
use moat_core::model::{AuthorizationCode, NewFamily, RefreshFamily, RefreshToken};
use moat_core::refresh::{RotationDecision, RotationFacts, decide, successor_expiry};
use sqlx::SqliteConnection;

use super::{MAX_ATTEMPTS, SqliteStore, clients, commit, consents, rollback};
use crate::codec::{db_error, int_to_bool, scopes_to_text};
use crate::rows::{self, family_columns, token_columns};
use crate::{Result, RotateOutcome, Rotation, StoreError};

/// Creates the family a redeemed code starts, with its first token. Scopes, user, session,
/// resource, client and auth time come from the code.
pub(super) async fn create_family_in(
    conn: &mut SqliteConnection,
    nf: &NewFamily,
    code: &AuthorizationCode,
    now: i64,
) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO refresh_families (",
        family_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, NULL)"
    ))
    .bind(nf.id.as_str())
    .bind(code.resource_id.as_str())
    .bind(code.client_id.as_str())
    .bind(code.user_id.as_str())
    .bind(code.session_id.as_deref())
    .bind(scopes_to_text(&code.scopes))
    .bind(code.auth_time)
    .bind(now)
    .bind(nf.expires_at)
    .execute(&mut *conn)
    .await
    .map_err(|e| db_error("create refresh family", e))?;
    match &nf.first_token_hash {
        Some(hash) => insert_token_in(conn, hash, &nf.id, None, now, nf.token_expires_at).await,
        None => Ok(()),
    }
}

async fn insert_token_in(
    conn: &mut SqliteConnection,
    token_hash: &str,
    family: &FamilyId,
    parent_hash: Option<&str>,
    now: i64,
    expires_at: i64,
) -> Result<()> {
    sqlx::query(concat!("INSERT INTO refresh_tokens (", token_columns!(), ") VALUES (?, ?, ?, ?, ?, NULL)"))
        .bind(token_hash)
        .bind(family.as_str())
        .bind(parent_hash)
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await
        .map_err(|e| db_error("store refresh token", e))?;
    Ok(())
}

/// Revokes a family unless it already is (the first revocation time is kept).
pub(super) async fn revoke_family_in(conn: &mut SqliteConnection, id: &FamilyId, now: i64) -> Result<()> {
    sqlx::query("UPDATE refresh_families SET revoked_at = ? WHERE id = ? AND revoked_at IS NULL")
        .bind(now)
        .bind(id.as_str())
        .execute(conn)
        .await
        .map_err(|e| db_error("revoke refresh family", e))?;
    Ok(())
}

async fn token_in(conn: &mut SqliteConnection, token_hash: &str) -> Result<Option<RefreshToken>> {
    sqlx::query(concat!("SELECT ", token_columns!(), " FROM refresh_tokens WHERE token_hash = ?"))
        .bind(token_hash)
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error("load refresh token", e))?
        .map(|row| rows::token(&row))
        .transpose()
}

async fn family_in(conn: &mut SqliteConnection, id: &FamilyId) -> Result<Option<RefreshFamily>> {
    sqlx::query(concat!("SELECT ", family_columns!(), " FROM refresh_families WHERE id = ?"))
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error("load refresh family", e))?
        .map(|row| rows::family(&row))
        .transpose()
}

/// Whether the user exists and is not disabled.
pub(super) async fn user_active_in(conn: &mut SqliteConnection, id: &UserId) -> Result<bool> {
    let disabled: Option<i64> = sqlx::query_scalar("SELECT disabled FROM users WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(|e| db_error("check user status", e))?;
    Ok(disabled.is_some_and(|d| !int_to_bool(d)))
}

/// Rotates a refresh token (see [`crate::Store::rotate_refresh_token`]).
pub(super) async fn rotate(s: &SqliteStore, r: &Rotation<'_>) -> Result<RotateOutcome> {
    for _ in 0..MAX_ATTEMPTS {
        let mut tx = s.begin_write().await?;
        let Some(token) = token_in(&mut tx, r.presented_hash).await? else {
            rollback(tx, "rotate refresh token").await?;
            return Ok(RotateOutcome::Invalid(None));
        };
        let Some(family) = family_in(&mut tx, &token.family_id).await? else {
            // Unreachable with foreign keys on; treat a dangling token as unknown.
            rollback(tx, "rotate refresh token").await?;
            return Ok(RotateOutcome::Invalid(None));
        };
        // Only the successor derived from *this* token counts (its parent must match).
        let successor =
            token_in(&mut tx, r.successor_hash).await?.filter(|t| t.parent_hash.as_deref() == Some(r.presented_hash));
        // The family's client is the one at the family's resource.
        let client_active = clients::is_active_in(&mut tx, &family.resource_id, &family.client_id).await?;
        let (user_active, consent_scopes) = match &family.user_id {
            Some(user) => (
                user_active_in(&mut tx, user).await?,
                consents::scopes_in(&mut tx, user, &family.client_id, &family.resource_id).await?,
            ),
            None => (true, None),
        };

        let decision = decide(&RotationFacts {
            token: &token,
            family: &family,
            successor: successor.as_ref(),
            requesting_client: r.client_id,
            requesting_resource: r.resource_id,
            requested_scopes: r.requested_scopes,
            client_active,
            user_active,
            consent_scopes: consent_scopes.as_deref(),
            now: r.now,
            grace: r.grace_seconds,
        });

        match decision {
            RotationDecision::Rotate => {
                let rotated = sqlx::query(
                    "UPDATE refresh_tokens SET rotated_at = ? \
                     WHERE token_hash = ? AND rotated_at IS NULL",
                )
                .bind(r.now)
                .bind(r.presented_hash)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("mark refresh token rotated", e))?;
                if rotated.rows_affected() == 0 {
                    // Another rotation won; decide again on what it left.
                    rollback(tx, "rotate refresh token").await?;
                    continue;
                }
                let expires_at = successor_expiry(r.now, r.idle_ttl, family.expires_at);
                insert_token_in(&mut tx, r.successor_hash, &family.id, Some(r.presented_hash), r.now, expires_at)
                    .await?;
                clients::mark_used(&mut tx, &family.resource_id, &family.client_id, r.now).await?;
                commit(tx, "rotate refresh token").await?;
                return Ok(RotateOutcome::Rotated { family, successor_expires_at: expires_at });
            }
            RotationDecision::ReplayWithinGrace => {
                rollback(tx, "rotate refresh token").await?;
                let Some(successor) = successor else {
                    return Err(StoreError::Backend("rotate refresh token: grace replay without a successor".into()));
                };
                return Ok(RotateOutcome::GraceReplay { family, successor_expires_at: successor.expires_at });
            }
            RotationDecision::RevokeFamily => {
                revoke_family_in(&mut tx, &family.id, r.now).await?;
                commit(tx, "revoke reused refresh family").await?;
                return Ok(RotateOutcome::Reused { family_id: family.id });
            }
            RotationDecision::Reject(reason) => {
                rollback(tx, "rotate refresh token").await?;
                return Ok(RotateOutcome::Invalid(Some(reason)));
            }
        }
    }
    Err(StoreError::Backend("rotate refresh token: too many concurrent rotations".into()))
}

/// A token and its family, read in one snapshot.
pub(super) async fn get_token(s: &SqliteStore, token_hash: &str) -> Result<Option<(RefreshToken, RefreshFamily)>> {
    let mut tx = s.reader.begin().await.map_err(|e| db_error("begin read", e))?;
    let Some(token) = token_in(&mut tx, token_hash).await? else {
        return Ok(None);
    };
    let family = family_in(&mut tx, &token.family_id).await?;
    tx.commit().await.map_err(|e| db_error("end read", e))?;
    Ok(family.map(|f| (token, f)))
}

pub(super) async fn get_family(s: &SqliteStore, id: &FamilyId) -> Result<Option<RefreshFamily>> {
    let mut conn = s.reader.acquire().await.map_err(|e| db_error("acquire reader", e))?;
    family_in(&mut conn, id).await
}

/// Idempotent: revoking a revoked family keeps its first revocation time and still succeeds.
pub(super) async fn revoke_family(s: &SqliteStore, id: &FamilyId, now: i64) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let exists: Option<i64> = sqlx::query_scalar("SELECT 1 FROM refresh_families WHERE id = ?")
        .bind(id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(|e| db_error("find refresh family", e))?;
    if exists.is_none() {
        rollback(tx, "revoke refresh family").await?;
        return Ok(false);
    }
    revoke_family_in(&mut tx, id, now).await?;
    commit(tx, "revoke refresh family").await?;
    Ok(true)
}
