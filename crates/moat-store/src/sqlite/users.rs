//! User accounts. Emails are unique and matched exactly (callers lowercase them).

use moat_core::ids::UserId;
use moat_core::model::User;

use super::{SqliteStore, commit};
use crate::Result;
use crate::codec::{bool_to_int, db_error};
use crate::rows::{self, user_columns};

pub(super) async fn create(s: &SqliteStore, u: &User) -> Result<()> {
    let mut tx = s.begin_write().await?;
    sqlx::query(concat!("INSERT INTO users (", user_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?)"))
        .bind(u.id.as_str())
        .bind(&u.email)
        .bind(u.name.as_deref())
        .bind(u.password_hash.as_deref())
        .bind(bool_to_int(u.disabled))
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("create user", e))?;
    commit(tx, "create user").await
}

pub(super) async fn get(s: &SqliteStore, id: &UserId) -> Result<Option<User>> {
    sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = ?"))
        .bind(id.as_str())
        .fetch_optional(&s.reader)
        .await
        .map_err(|e| db_error("get user", e))?
        .map(|row| rows::user(&row))
        .transpose()
}

pub(super) async fn get_by_email(s: &SqliteStore, email: &str) -> Result<Option<User>> {
    sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE email = ?"))
        .bind(email)
        .fetch_optional(&s.reader)
        .await
        .map_err(|e| db_error("get user by email", e))?
        .map(|row| rows::user(&row))
        .transpose()
}

pub(super) async fn list(s: &SqliteStore) -> Result<Vec<User>> {
    sqlx::query(concat!("SELECT ", user_columns!(), " FROM users ORDER BY created_at, id"))
        .fetch_all(&s.reader)
        .await
        .map_err(|e| db_error("list users", e))?
        .iter()
        .map(rows::user)
        .collect()
}

/// Disabling ends the user's browser sessions and revokes their refresh families in the same
/// transaction (DESIGN.md §4: every refresh re-checks the user, and nothing is left to refresh).
pub(super) async fn set_disabled(s: &SqliteStore, id: &UserId, disabled: bool, now: i64) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("UPDATE users SET disabled = ?, updated_at = ? WHERE id = ?")
        .bind(bool_to_int(disabled))
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("set user disabled", e))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if disabled {
        sqlx::query("DELETE FROM sessions WHERE user_id = ?")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("delete sessions of disabled user", e))?;
        sqlx::query("UPDATE refresh_families SET revoked_at = ? WHERE user_id = ? AND revoked_at IS NULL")
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(|e| db_error("revoke families of disabled user", e))?;
    }
    commit(tx, "set user disabled").await?;
    Ok(true)
}

/// Sessions, codes, consents, families and tokens cascade.
pub(super) async fn delete(s: &SqliteStore, id: &UserId) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("DELETE FROM users WHERE id = ?")
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("delete user", e))?;
    commit(tx, "delete user").await?;
    Ok(done.rows_affected() > 0)
}
