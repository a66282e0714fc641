//! User accounts. Emails are unique and matched exactly (callers lowercase them).

use moat_core::ids::UserId;
use moat_core::model::User;

use sqlx::PgConnection;

use super::{Attempts, PgStore, TxResult, fail};
use crate::Result;
use crate::codec::{bool_to_small, db_error};
use crate::rows::{self, user_columns};

pub(super) async fn create(s: &PgStore, u: &User) -> Result<()> {
    sqlx::query(concat!("INSERT INTO users (", user_columns!(), ") VALUES ($1, $2, $3, $4, $5, $6, $7)"))
        .bind(u.id.as_str())
        .bind(&u.email)
        .bind(u.name.as_deref())
        .bind(u.password_hash.as_deref())
        .bind(bool_to_small(u.disabled))
        .bind(u.created_at)
        .bind(u.updated_at)
        .execute(&s.pool)
        .await
        .map_err(|e| db_error("create user", e))?;
    Ok(())
}

pub(super) async fn get(s: &PgStore, id: &UserId) -> Result<Option<User>> {
    sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error("get user", e))?
        .map(|row| rows::user(&row))
        .transpose()
}

pub(super) async fn get_by_email(s: &PgStore, email: &str) -> Result<Option<User>> {
    sqlx::query(concat!("SELECT ", user_columns!(), " FROM users WHERE email = $1"))
        .bind(email)
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error("get user by email", e))?
        .map(|row| rows::user(&row))
        .transpose()
}

pub(super) async fn list(s: &PgStore) -> Result<Vec<User>> {
    sqlx::query(concat!("SELECT ", user_columns!(), " FROM users ORDER BY created_at, id"))
        .fetch_all(&s.pool)
        .await
        .map_err(|e| db_error("list users", e))?
        .iter()
        .map(rows::user)
        .collect()
}

/// Disabling ends the user's browser sessions and revokes their refresh families in the same
/// transaction (DESIGN.md §4: every refresh re-checks the user, and nothing is left to refresh).
/// Rotations only read the user row, so locking it first cannot deadlock with them.
pub(super) async fn set_disabled(s: &PgStore, id: &UserId, disabled: bool, now: i64) -> Result<bool> {
    let mut attempts = Attempts::new("set user disabled");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = set_disabled_in(&mut tx, id, disabled, now).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn set_disabled_in(tx: &mut PgConnection, id: &UserId, disabled: bool, now: i64) -> TxResult<bool> {
    let done = sqlx::query("UPDATE users SET disabled = $1, updated_at = $2 WHERE id = $3")
        .bind(bool_to_small(disabled))
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(fail("set user disabled"))?;
    if done.rows_affected() == 0 {
        return Ok(false);
    }
    if disabled {
        sqlx::query("DELETE FROM sessions WHERE user_id = $1")
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(fail("delete sessions of disabled user"))?;
        sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE user_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(fail("revoke families of disabled user"))?;
    }
    Ok(true)
}

/// Sessions, codes, consents, families and tokens cascade.
pub(super) async fn delete(s: &PgStore, id: &UserId) -> Result<bool> {
    s.delete_cascading("delete user", "DELETE FROM users WHERE id = $1", &[id.as_str()]).await
}
