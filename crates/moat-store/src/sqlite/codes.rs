//! Authorization codes: completing an authorization (pending request → code + consent) and
//! redeeming a code exactly once (DESIGN.md §4 and §7; OAuth 2.1 §4.1.3, RFC 9700 §4.4).

use moat_core::model::{AuthorizationCode, Consent, NewFamily};

use super::{MAX_ATTEMPTS, SqliteStore, clients, commit, consents, refresh, rollback};
use crate::codec::{bool_to_int, db_error, scopes_to_text};
use crate::rows::{self, code_columns};
use crate::{CodeCheck, RedeemOutcome, Result, StoreError};

/// Deletes the pending request, stores the code and upserts the consent, all or nothing. The
/// delete comes first and decides: a double-submitted consent form finds the request gone and
/// yields no second code.
pub(super) async fn complete_authorization(
    s: &SqliteStore,
    request_id: &str,
    code: &AuthorizationCode,
    consent: Option<&Consent>,
) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let deleted = sqlx::query("DELETE FROM authorization_requests WHERE id = ?")
        .bind(request_id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("consume authorization request", e))?;
    if deleted.rows_affected() == 0 {
        rollback(tx, "complete authorization").await?;
        return Ok(false);
    }
    insert_in(&mut tx, code).await?;
    if let Some(c) = consent {
        consents::merge_in(&mut tx, c).await?;
    }
    commit(tx, "complete authorization").await?;
    Ok(true)
}

async fn insert_in(conn: &mut sqlx::SqliteConnection, c: &AuthorizationCode) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO authorization_codes (",
        code_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&c.code_hash)
    .bind(c.resource_id.as_str())
    .bind(c.client_id.as_str())
    .bind(c.user_id.as_str())
    .bind(c.session_id.as_deref())
    .bind(&c.redirect_uri)
    .bind(bool_to_int(c.redirect_uri_explicit))
    .bind(scopes_to_text(&c.scopes))
    .bind(&c.code_challenge)
    .bind(&c.resource_url)
    .bind(c.auth_time)
    .bind(c.created_at)
    .bind(c.expires_at)
    .bind(c.consumed_at)
    .bind(c.family_id.as_ref().map(|f| f.as_str()))
    .execute(conn)
    .await
    .map_err(|e| db_error("store authorization code", e))?;
    Ok(())
}

/// Redeems a code inside one write transaction (see [`crate::Store::redeem_code`]).
pub(super) async fn redeem(
    s: &SqliteStore,
    code_hash: &str,
    now: i64,
    check: CodeCheck<'_>,
    family: Option<&NewFamily>,
) -> Result<RedeemOutcome> {
    for _ in 0..MAX_ATTEMPTS {
        let mut tx = s.begin_write().await?;
        let found = sqlx::query(concat!("SELECT ", code_columns!(), " FROM authorization_codes WHERE code_hash = ?"))
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(|e| db_error("load authorization code", e))?;
        let Some(row) = found else {
            rollback(tx, "redeem code").await?;
            return Ok(RedeemOutcome::NotFound);
        };
        let code = rows::code(&row)?;

        if code.consumed_at.is_some() {
            // A second redemption means the code leaked: revoke what the first one produced
            // (RFC 9700 §4.4) and commit that, whatever the caller does next.
            if let Some(family_id) = &code.family_id {
                refresh::revoke_family_in(&mut tx, family_id, now).await?;
            }
            commit(tx, "revoke family of replayed code").await?;
            return Ok(RedeemOutcome::Replayed { revoked_family: code.family_id });
        }
        if now >= code.expires_at {
            rollback(tx, "redeem code").await?;
            return Ok(RedeemOutcome::Expired);
        }
        if let Err(e) = check(&code) {
            // A failed check (wrong verifier, client, redirect URI) must not burn the code of
            // the legitimate client.
            rollback(tx, "redeem code").await?;
            return Ok(RedeemOutcome::Rejected(e));
        }
        if !clients::is_active_in(&mut tx, &code.resource_id, &code.client_id).await? {
            // Disabled since the token endpoint checked it: no new family (disabling revoked
            // the client's families, and this one would escape it).
            rollback(tx, "redeem code").await?;
            return Ok(RedeemOutcome::Rejected(crate::client_disabled()));
        }
        if !refresh::user_active_in(&mut tx, &code.user_id).await? {
            // A user disabled (or deleted) after the code was issued gets nothing.
            rollback(tx, "redeem code").await?;
            return Ok(RedeemOutcome::Rejected(crate::user_disabled()));
        }

        let consumed = sqlx::query(
            "UPDATE authorization_codes SET consumed_at = ? \
             WHERE code_hash = ? AND consumed_at IS NULL",
        )
        .bind(now)
        .bind(code_hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("consume authorization code", e))?;
        if consumed.rows_affected() == 0 {
            // Lost a race with another redemption: look again (it is now a replay).
            rollback(tx, "redeem code").await?;
            continue;
        }

        if let Some(nf) = family {
            refresh::create_family_in(&mut tx, nf, &code, now).await?;
            sqlx::query("UPDATE authorization_codes SET family_id = ? WHERE code_hash = ?")
                .bind(nf.id.as_str())
                .bind(code_hash)
                .execute(&mut *tx)
                .await
                .map_err(|e| db_error("record family on code", e))?;
        }
        clients::mark_used(&mut tx, &code.resource_id, &code.client_id, now).await?;
        commit(tx, "redeem code").await?;
        return Ok(RedeemOutcome::Redeemed(AuthorizationCode {
            consumed_at: Some(now),
            family_id: family.map(|f| f.id.clone()),
            ..code
        }));
    }
    Err(StoreError::Backend("redeem code: too many concurrent redemptions".into()))
}
