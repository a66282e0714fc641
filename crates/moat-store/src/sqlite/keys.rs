//! Signing keys, stored with the private key sealed under the master key (DESIGN.md §4).

use moat_core::model::SigningKeyRecord;

use sqlx::SqliteConnection;

use super::{SqliteStore, commit};
use crate::Result;
use crate::codec::db_error;
use crate::rows::{self, signing_key_columns};

pub(super) async fn insert(s: &SqliteStore, k: &SigningKeyRecord) -> Result<()> {
    let mut tx = s.begin_write().await?;
    insert_in(&mut tx, k).await?;
    commit(tx, "insert signing key").await
}

async fn insert_in(tx: &mut SqliteConnection, k: &SigningKeyRecord) -> Result<()> {
    sqlx::query(concat!("INSERT INTO signing_keys (", signing_key_columns!(), ") VALUES (?, ?, ?, ?, ?, ?, ?, ?)"))
        .bind(&k.kid)
        .bind(&k.alg)
        .bind(&k.encrypted_private_key)
        .bind(&k.public_jwk)
        .bind(k.created_at)
        .bind(k.activates_at)
        .bind(k.retires_at)
        .bind(k.unpublish_at)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("insert signing key", e))?;
    Ok(())
}

/// Oldest first (by creation, then activation, then kid for a stable order within a second).
pub(super) async fn list(s: &SqliteStore) -> Result<Vec<SigningKeyRecord>> {
    sqlx::query(concat!("SELECT ", signing_key_columns!(), " FROM signing_keys ORDER BY created_at, activates_at, kid"))
        .fetch_all(&s.reader)
        .await
        .map_err(|e| db_error("list signing keys", e))?
        .iter()
        .map(rows::signing_key)
        .collect()
}

pub(super) async fn retire(s: &SqliteStore, kid: &str, retires_at: i64, unpublish_at: i64) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("UPDATE signing_keys SET retires_at = ?, unpublish_at = ? WHERE kid = ?")
        .bind(retires_at)
        .bind(unpublish_at)
        .bind(kid)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("retire signing key", e))?;
    commit(tx, "retire signing key").await?;
    Ok(done.rows_affected() > 0)
}

/// Inserts `k` and retires the keys older than the newest unretired one in one write
/// transaction. `BEGIN IMMEDIATE` takes the database's write lock first, so rotations (in this
/// process or another on the same file) run one after the other and each sees every key the
/// previous ones stored: none can retire a key it has not seen to be superseded.
pub(super) async fn rotate(s: &SqliteStore, k: &SigningKeyRecord, unpublish_after: i64) -> Result<()> {
    let mut tx = s.begin_write().await?;
    insert_in(&mut tx, k).await?;
    retire_superseded(&mut tx, unpublish_after).await?;
    commit(tx, "rotate signing keys").await
}

/// Retires every unretired key older than the newest unretired one when the newest activates,
/// so the old key signs until the new one takes over; a key whose own activation is later
/// retires then, i.e. it never signs (a newer key has superseded it).
async fn retire_superseded(tx: &mut SqliteConnection, unpublish_after: i64) -> Result<()> {
    let newest: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT kid, created_at, activates_at FROM signing_keys WHERE retires_at IS NULL \
         ORDER BY created_at DESC, activates_at DESC, kid DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(|e| db_error("find the newest signing key", e))?;
    let Some((kid, created_at, activates_at)) = newest else { return Ok(()) };
    // Strictly older in list order (a row-value comparison), so the newest is never touched.
    sqlx::query(
        "UPDATE signing_keys SET retires_at = MAX(activates_at, ?1), unpublish_at = MAX(activates_at, ?1) + ?2 \
         WHERE retires_at IS NULL AND (created_at, activates_at, kid) < (?3, ?1, ?4)",
    )
    .bind(activates_at)
    .bind(unpublish_after)
    .bind(created_at)
    .bind(&kid)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("retire superseded signing keys", e))?;
    Ok(())
}
