//! Browser login sessions, found by the SHA-256 of the cookie secret (DESIGN.md §6).

use moat_core::model::Session;

use super::{SqliteStore, commit};
use crate::Result;
use crate::codec::db_error;
use crate::rows::{self, session_columns};

pub(super) async fn create(s: &SqliteStore, x: &Session) -> Result<()> {
    let mut tx = s.begin_write().await?;
    sqlx::query(concat!("INSERT INTO sessions (", session_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?)"))
        .bind(&x.id)
        .bind(&x.token_hash)
        .bind(x.user_id.as_str())
        .bind(x.auth_time)
        .bind(x.created_at)
        .bind(x.last_seen_at)
        .bind(x.expires_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("create session", e))?;
    commit(tx, "create session").await
}

pub(super) async fn get_by_token_hash(s: &SqliteStore, token_hash: &str) -> Result<Option<Session>> {
    sqlx::query(concat!("SELECT ", session_columns!(), " FROM sessions WHERE token_hash = ?"))
        .bind(token_hash)
        .fetch_optional(&s.reader)
        .await
        .map_err(|e| db_error("get session", e))?
        .map(|row| rows::session(&row))
        .transpose()
}

/// Records activity (the idle lifetime counts from `last_seen_at`). A session that is gone is
/// not an error: the caller treats it as logged out on its next lookup anyway.
pub(super) async fn touch(s: &SqliteStore, token_hash: &str, now: i64) -> Result<()> {
    let mut tx = s.begin_write().await?;
    sqlx::query("UPDATE sessions SET last_seen_at = ? WHERE token_hash = ?")
        .bind(now)
        .bind(token_hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("touch session", e))?;
    commit(tx, "touch session").await
}

pub(super) async fn delete(s: &SqliteStore, token_hash: &str) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("DELETE FROM sessions WHERE token_hash = ?")
        .bind(token_hash)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("delete session", e))?;
    commit(tx, "delete session").await?;
    Ok(done.rows_affected() > 0)
}
