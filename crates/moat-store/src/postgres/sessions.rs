//! Browser login sessions, found by the SHA-256 of the cookie secret (DESIGN.md §6). Every
//! operation is one statement.

use moat_core::model::Session;

use super::PgStore;
use crate::Result;
use crate::codec::db_error;
use crate::rows::{self, session_columns};

pub(super) async fn create(s: &PgStore, x: &Session) -> Result<()> {
    sqlx::query(concat!("INSERT INTO sessions (", session_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7)"))
        .bind(&x.id)
        .bind(&x.token_hash)
        .bind(x.user_id.as_str())
        .bind(x.auth_time)
        .bind(x.created_at)
        .bind(x.last_seen_at)
        .bind(x.expires_at)
        .execute(&s.pool)
        .await
        .map_err(|e| db_error("create session", e))?;
    Ok(())
}

pub(super) async fn get_by_token_hash(s: &PgStore, token_hash: &str) -> Result<Option<Session>> {
    sqlx::query(concat!("SELECT ", session_columns!(), " FROM sessions WHERE token_hash = $1"))
        .bind(token_hash)
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error("get session", e))?
        .map(|row| rows::session(&row))
        .transpose()
}

/// Records activity (the idle lifetime counts from `last_seen_at`). A session that is gone is
/// not an error: the caller treats it as logged out on its next lookup anyway.
pub(super) async fn touch(s: &PgStore, token_hash: &str, now: i64) -> Result<()> {
    sqlx::query("UPDATE sessions SET last_seen_at = $1 WHERE token_hash = $2")
        .bind(now)
        .bind(token_hash)
        .execute(&s.pool)
        .await
        .map_err(|e| db_error("touch session", e))?;
    Ok(())
}

pub(super) async fn delete(s: &PgStore, token_hash: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM sessions WHERE token_hash = $1")
        .bind(token_hash)
        .execute(&s.pool)
        .await
        .map_err(|e| db_error("delete session", e))?;
    Ok(done.rows_affected() > 0)
}
