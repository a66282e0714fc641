//! Short-lived replay and revocation lists: revoked access tokens (RFC 7009, kept until they
//! would have expired) and client-assertion jtis (RFC 7523 §3: an assertion is single-use).

use moat_core::ids::ClientId;

use super::{SqliteStore, commit};
use crate::Result;
use crate::codec::db_error;

/// Idempotent: revoking the same jti twice keeps the first entry.
pub(super) async fn revoke_access_token(s: &SqliteStore, jti: &str, expires_at: i64) -> Result<()> {
    let mut tx = s.begin_write().await?;
    sqlx::query(
        "INSERT INTO revoked_access_tokens (jti, expires_at) VALUES (?, ?) \
         ON CONFLICT (jti) DO NOTHING",
    )
    .bind(jti)
    .bind(expires_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("revoke access token", e))?;
    commit(tx, "revoke access token").await
}

pub(super) async fn is_access_token_revoked(s: &SqliteStore, jti: &str) -> Result<bool> {
    let found: Option<i64> = sqlx::query_scalar("SELECT 1 FROM revoked_access_tokens WHERE jti = ?")
        .bind(jti)
        .fetch_optional(&s.reader)
        .await
        .map_err(|e| db_error("check access token revocation", e))?;
    Ok(found.is_some())
}

/// `false` when this client already presented an assertion with this jti.
pub(super) async fn record_assertion_jti(
    s: &SqliteStore,
    client: &ClientId,
    jti: &str,
    expires_at: i64,
) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query(
        "INSERT INTO assertion_jtis (client_id, jti, expires_at) VALUES (?, ?, ?) \
         ON CONFLICT (client_id, jti) DO NOTHING",
    )
    .bind(client.as_str())
    .bind(jti)
    .bind(expires_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("record assertion jti", e))?;
    commit(tx, "record assertion jti").await?;
    Ok(done.rows_affected() == 1)
}
