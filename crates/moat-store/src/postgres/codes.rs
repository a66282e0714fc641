//! Authorization codes: completing an authorization (pending request → code + consent) and
//! redeeming a code exactly once, even when several instances race (DESIGN.md §4 and §7;
//! OAuth 2.1 §4.1.3, RFC 9700 §4.4).

use moat_core::model::{AuthorizationCode, Consent, NewFamily};
use sqlx::PgConnection;

use super::{Attempts, Fail, PgStore, TxResult, clients, consents, fail, refresh};
use crate::codec::{bool_to_small, scopes_to_text};
use crate::rows::{self, code_columns};
use crate::{CodeCheck, RedeemOutcome, Result};

/// Deletes the pending request, stores the code and upserts the consent, all or nothing. The
/// delete comes first and decides: of two concurrent completions (a double-submitted consent
/// form, possibly on two instances) the second's DELETE waits for the first's row lock, finds
/// the row gone, and yields no second code.
pub(super) async fn complete_authorization(
    s: &PgStore,
    request_id: &str,
    code: &AuthorizationCode,
    consent: Option<&Consent>,
) -> Result<bool> {
    let mut attempts = Attempts::new("complete authorization");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = complete_in(&mut tx, request_id, code, consent).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn complete_in(
    tx: &mut PgConnection,
    request_id: &str,
    code: &AuthorizationCode,
    consent: Option<&Consent>,
) -> TxResult<bool> {
    let deleted = sqlx::query("DELETE FROM authorization_requests WHERE id = $1")
        .bind(request_id)
        .execute(&mut *tx)
        .await
        .map_err(fail("consume authorization request"))?;
    if deleted.rows_affected() == 0 {
        return Ok(false);
    }
    insert_in(tx, code).await?;
    if let Some(c) = consent {
        consents::merge_in(tx, c).await?;
    }
    Ok(true)
}

async fn insert_in(conn: &mut PgConnection, c: &AuthorizationCode) -> TxResult<()> {
    sqlx::query(concat!(
        "INSERT INTO authorization_codes (",
        code_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)"
    ))
    .bind(&c.code_hash)
    .bind(c.resource_id.as_str())
    .bind(c.client_id.as_str())
    .bind(c.user_id.as_str())
    .bind(c.session_id.as_deref())
    .bind(&c.redirect_uri)
    .bind(bool_to_small(c.redirect_uri_explicit))
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
    .map_err(fail("store authorization code"))?;
    Ok(())
}

/// Redeems a code (see [`crate::Store::redeem_code`]) in one transaction.
pub(super) async fn redeem(
    s: &PgStore,
    code_hash: &str,
    now: i64,
    check: CodeCheck<'_>,
    family: Option<&NewFamily>,
) -> Result<RedeemOutcome> {
    let mut attempts = Attempts::new("redeem code");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = redeem_in(&mut tx, code_hash, now, check, family).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn redeem_in(
    tx: &mut PgConnection,
    code_hash: &str,
    now: i64,
    check: CodeCheck<'_>,
    family: Option<&NewFamily>,
) -> TxResult<RedeemOutcome> {
    // The row lock serialises redemptions of this code across instances: a concurrent
    // redemption waits here until this transaction ends, then reads the committed row (consumed,
    // with its family) and takes the replay path below.
    let found =
        sqlx::query(concat!("SELECT ", code_columns!(), " FROM authorization_codes WHERE code_hash = $1 FOR UPDATE"))
            .bind(code_hash)
            .fetch_optional(&mut *tx)
            .await
            .map_err(fail("load authorization code"))?;
    let Some(row) = found else {
        return Ok(RedeemOutcome::NotFound);
    };
    let code = rows::code(&row)?;

    if code.consumed_at.is_some() {
        // A second redemption means the code leaked: revoke what the first one produced
        // (RFC 9700 §4.4) and commit that, whatever the caller does next.
        if let Some(family_id) = &code.family_id {
            refresh::revoke_family_in(tx, family_id, now).await?;
        }
        return Ok(RedeemOutcome::Replayed { revoked_family: code.family_id });
    }
    if now >= code.expires_at {
        return Ok(RedeemOutcome::Expired);
    }
    if let Err(e) = check(&code) {
        // A failed check (wrong verifier, client, redirect URI) must not burn the code of the
        // legitimate client; the transaction changed nothing.
        return Ok(RedeemOutcome::Rejected(e));
    }
    // A user disabled (or deleted) after the code was issued gets nothing. The share lock orders
    // this against a concurrent disable: either it waits for the disable and sees it, or the
    // disable waits for this transaction and then revokes the family it created.
    let user_active: Option<i16> = sqlx::query_scalar("SELECT disabled FROM users WHERE id = $1 FOR SHARE")
        .bind(code.user_id.as_str())
        .fetch_optional(&mut *tx)
        .await
        .map_err(fail("check user status"))?;
    if user_active.is_none_or(|d| d != 0) {
        return Ok(RedeemOutcome::Rejected(crate::user_disabled()));
    }

    // Mark the client used first (a no-op unless its `last_used_at` is stale, and never for a
    // disabled client): should it write, it takes the row's exclusive lock before the share lock
    // below, so two redemptions of one client never both hold a share lock and wait to upgrade
    // it (a deadlock). Then share-lock the client row while the family is created: a client
    // disabled since the token endpoint checked it is refused, and one being disabled right now
    // waits for this transaction and then revokes its family (see `clients::set_disabled`).
    clients::mark_used_in(tx, &code.resource_id, &code.client_id, now).await?;
    if !clients::lock_if_active_in(tx, &code.resource_id, &code.client_id).await? {
        // Nothing was written: `mark_used_in` skips disabled clients.
        return Ok(RedeemOutcome::Rejected(crate::client_disabled()));
    }

    // The family must exist before the code can reference it (foreign key).
    if let Some(nf) = family {
        refresh::create_family_in(tx, nf, &code, now).await?;
    }
    // Consume and record the family in one guarded update. Under the row lock it always
    // matches; should it not, another redemption won and a fresh attempt sees a replay (this
    // attempt, with the family it inserted, is rolled back).
    let consumed = sqlx::query(
        "UPDATE authorization_codes SET consumed_at = $1, family_id = $2 \
         WHERE code_hash = $3 AND consumed_at IS NULL",
    )
    .bind(now)
    .bind(family.map(|f| f.id.as_str()))
    .bind(code_hash)
    .execute(&mut *tx)
    .await
    .map_err(fail("consume authorization code"))?;
    if consumed.rows_affected() == 0 {
        return Err(Fail::lost_race("redeem code"));
    }
    Ok(RedeemOutcome::Redeemed(AuthorizationCode {
        consumed_at: Some(now),
        family_id: family.map(|f| f.id.clone()),
        ..code
    }))
}
