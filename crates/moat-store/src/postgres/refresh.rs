//! Refresh-token families and rotation (DESIGN.md §4; OAuth 2.1 §4.3.1, RFC 9700 §4.14.2).
//!
//! The rule itself is the pure [`moat_core::refresh::decide`]; this module reads its facts and
//! applies its decision inside one transaction holding the row locks of the presented token and
//! its family, so two concurrent refreshes of the same token, on one instance or several, can
//! never both rotate it: the second waits for the first, then sees the rotation and the
//! successor it stored, and returns that successor again (grace replay) or revokes the family
//! (reuse), exactly as if the two requests had arrived one after the other.

use moat_core::ids::{FamilyId, UserId};
use moat_core::model::{AuthorizationCode, NewFamily, RefreshFamily, RefreshToken};
use moat_core::refresh::{RotationDecision, RotationFacts, decide, successor_expiry};
use sqlx::PgConnection;

use super::{Attempts, Fail, PgStore, TxResult, clients, consents, fail};
use crate::codec::{db_error, scopes_to_text};
use crate::rows::{self, family_columns, token_columns};
use crate::{Result, RotateOutcome, Rotation, StoreError};

/// Creates the family a redeemed code starts, with its first token. Scopes, user, session,
/// resource, client and auth time come from the code.
pub(super) async fn create_family_in(
    conn: &mut PgConnection,
    nf: &NewFamily,
    code: &AuthorizationCode,
    now: i64,
) -> TxResult<()> {
    sqlx::query(concat!(
        "INSERT INTO refresh_families (",
        family_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, NULL)"
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
    .map_err(fail("create refresh family"))?;
    match &nf.first_token_hash {
        Some(hash) => insert_token_in(conn, hash, &nf.id, None, now, nf.token_expires_at).await,
        None => Ok(()),
    }
}

async fn insert_token_in(
    conn: &mut PgConnection,
    token_hash: &str,
    family: &FamilyId,
    parent_hash: Option<&str>,
    now: i64,
    expires_at: i64,
) -> TxResult<()> {
    sqlx::query(concat!("INSERT INTO refresh_tokens (", token_columns!(), ") VALUES ($1, $2, $3, $4, $5, NULL)"))
        .bind(token_hash)
        .bind(family.as_str())
        .bind(parent_hash)
        .bind(now)
        .bind(expires_at)
        .execute(conn)
        .await
        .map_err(fail("store refresh token"))?;
    Ok(())
}

/// Revokes a family unless it already is (the first revocation time is kept).
pub(super) async fn revoke_family_in(conn: &mut PgConnection, id: &FamilyId, now: i64) -> TxResult<()> {
    sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE id = $2 AND revoked_at IS NULL")
        .bind(now)
        .bind(id.as_str())
        .execute(conn)
        .await
        .map_err(fail("revoke refresh family"))?;
    Ok(())
}

/// A token row, locked (`FOR UPDATE`) when `lock` is set.
async fn token_in(conn: &mut PgConnection, token_hash: &str, lock: bool) -> TxResult<Option<RefreshToken>> {
    let sql = if lock {
        concat!("SELECT ", token_columns!(), " FROM refresh_tokens WHERE token_hash = $1 FOR UPDATE")
    } else {
        concat!("SELECT ", token_columns!(), " FROM refresh_tokens WHERE token_hash = $1")
    };
    Ok(sqlx::query(sql)
        .bind(token_hash)
        .fetch_optional(conn)
        .await
        .map_err(fail("load refresh token"))?
        .map(|row| rows::token(&row))
        .transpose()?)
}

/// A family row, locked (`FOR UPDATE`) when `lock` is set.
async fn family_in(conn: &mut PgConnection, id: &FamilyId, lock: bool) -> TxResult<Option<RefreshFamily>> {
    let sql = if lock {
        concat!("SELECT ", family_columns!(), " FROM refresh_families WHERE id = $1 FOR UPDATE")
    } else {
        concat!("SELECT ", family_columns!(), " FROM refresh_families WHERE id = $1")
    };
    Ok(sqlx::query(sql)
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(fail("load refresh family"))?
        .map(|row| rows::family(&row))
        .transpose()?)
}

/// Whether the user exists and is not disabled.
async fn user_active_in(conn: &mut PgConnection, id: &UserId) -> TxResult<bool> {
    let disabled: Option<i16> = sqlx::query_scalar("SELECT disabled FROM users WHERE id = $1")
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(fail("check user status"))?;
    Ok(disabled.is_some_and(|d| d == 0))
}

/// Rotates a refresh token (see [`crate::Store::rotate_refresh_token`]).
pub(super) async fn rotate(s: &PgStore, r: &Rotation<'_>) -> Result<RotateOutcome> {
    let mut attempts = Attempts::new("rotate refresh token");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = rotate_in(&mut tx, r).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn rotate_in(tx: &mut PgConnection, r: &Rotation<'_>) -> TxResult<RotateOutcome> {
    // Lock order: the presented token, then its family (then, on rotation, the client row).
    // Every other writer of these rows takes them in the same order or only one of them.
    let Some(token) = token_in(tx, r.presented_hash, true).await? else {
        return Ok(RotateOutcome::Invalid(None));
    };
    let Some(family) = family_in(tx, &token.family_id, true).await? else {
        // Unreachable with the foreign key; treat a dangling token as unknown.
        return Ok(RotateOutcome::Invalid(None));
    };
    // Read after the locks, so a rotation committed while this one waited is visible (READ
    // COMMITTED takes a new snapshot per statement). Only the successor derived from *this*
    // token counts (its parent must match).
    let successor =
        token_in(tx, r.successor_hash, false).await?.filter(|t| t.parent_hash.as_deref() == Some(r.presented_hash));
    // The family's client is the one at the family's resource.
    let client_active = clients::is_active_in(tx, &family.resource_id, &family.client_id).await?;
    let (user_active, consent_scopes) = match &family.user_id {
        Some(user) => (
            user_active_in(tx, user).await?,
            consents::scopes_in(tx, user, &family.client_id, &family.resource_id).await?,
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
            // Guarded: under the token lock it always matches; if it does not, another rotation
            // won, and a fresh attempt decides again on what it left (a grace replay).
            let rotated = sqlx::query(
                "UPDATE refresh_tokens SET rotated_at = $1 \
                 WHERE token_hash = $2 AND rotated_at IS NULL",
            )
            .bind(r.now)
            .bind(r.presented_hash)
            .execute(&mut *tx)
            .await
            .map_err(fail("mark refresh token rotated"))?;
            if rotated.rows_affected() == 0 {
                return Err(Fail::lost_race("rotate refresh token"));
            }
            let expires_at = successor_expiry(r.now, r.idle_ttl, family.expires_at);
            insert_token_in(tx, r.successor_hash, &family.id, Some(r.presented_hash), r.now, expires_at).await?;
            clients::mark_used_in(tx, &family.resource_id, &family.client_id, r.now).await?;
            Ok(RotateOutcome::Rotated { family, successor_expires_at: expires_at })
        }
        RotationDecision::ReplayWithinGrace => {
            let Some(successor) = successor else {
                return Err(StoreError::Backend("rotate refresh token: grace replay without a successor".into()).into());
            };
            Ok(RotateOutcome::GraceReplay { family, successor_expires_at: successor.expires_at })
        }
        RotationDecision::RevokeFamily => {
            revoke_family_in(tx, &family.id, r.now).await?;
            Ok(RotateOutcome::Reused { family_id: family.id })
        }
        RotationDecision::Reject(reason) => Ok(RotateOutcome::Invalid(Some(reason))),
    }
}

/// A token and its family. Two statements without a transaction are enough: a token's family
/// never changes and a family is only ever deleted together with its tokens (cascade), so the
/// second read can only see a *newer* state of the family (say, revoked), or none.
pub(super) async fn get_token(s: &PgStore, token_hash: &str) -> Result<Option<(RefreshToken, RefreshFamily)>> {
    let mut conn = s.pool.acquire().await.map_err(|e| db_error("acquire connection", e))?;
    let Some(token) = token_in(&mut conn, token_hash, false).await.map_err(|f| f.error)? else {
        return Ok(None);
    };
    let family = family_in(&mut conn, &token.family_id, false).await.map_err(|f| f.error)?;
    Ok(family.map(|f| (token, f)))
}

pub(super) async fn get_family(s: &PgStore, id: &FamilyId) -> Result<Option<RefreshFamily>> {
    let mut conn = s.pool.acquire().await.map_err(|e| db_error("acquire connection", e))?;
    family_in(&mut conn, id, false).await.map_err(|f| f.error)
}

/// Idempotent: revoking a revoked family keeps its first revocation time and still succeeds.
/// One statement: `COALESCE` keeps an earlier revocation, and the row count says whether the
/// family exists.
pub(super) async fn revoke_family(s: &PgStore, id: &FamilyId, now: i64) -> Result<bool> {
    let done = sqlx::query("UPDATE refresh_families SET revoked_at = COALESCE(revoked_at, $1) WHERE id = $2")
        .bind(now)
        .bind(id.as_str())
        .execute(&s.pool)
        .await
        .map_err(|e| db_error("revoke refresh family", e))?;
    Ok(done.rows_affected() > 0)
}
