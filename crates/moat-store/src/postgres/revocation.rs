//! Short-lived replay and revocation lists: revoked access tokens (RFC 7009, kept until they
//! would have expired) and client-assertion jtis (RFC 7523 §3: an assertion is single-use).
//! `INSERT … ON CONFLICT DO NOTHING` is atomic, so of two instances recording the same jti at
//! once exactly one inserts it.

use moat_core::ids::ClientId;

use super::PgStore;
use crate::Result;
use crate::codec::db_error;

/// Idempotent: revoking the same jti twice keeps the first entry.
pub(super) async fn revoke_access_token(s: &PgStore, jti: &str, expires_at: i64) -> Result<()> {
    sqlx::query(
        "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES ($1, $2) \
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(expires_at)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error("revoke access token", e))?;
    Ok(())
}

pub(super) async fn is_access_token_revoked(s: &PgStore, jti: &str) -> Result<bool> {
    // `SELECT 1` is an int4 in PostgreSQL; decode it as such.
    let found: Option<i32> = sqlx::query_scalar("SELECT 1 FROM revoked_access_tokens WHERE jti = $1")
        .bind(jti)
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error("check access token revocation", e))?;
    Ok(found.is_some())
}

/// `false` when this client already presented an assertion with this jti.
pub(super) async fn record_assertion_jti(s: &PgStore, client: &ClientId, jti: &str, expires_at: i64) -> Result<bool> {
    let done = sqlx::query(
        "INSERT INTO assertion_jtis (client_id, jti, expires_at) VALUES ($1, $2, $3) \
         ON CONFLICT (client_id, jti) DO NOTHING",
    )
    .bind(client.as_str())
    .bind(jti)
    .bind(expires_at)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error("record assertion jti", e))?;
    Ok(done.rows_affected() == 1)
}
