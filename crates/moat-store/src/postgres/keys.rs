//! Signing keys, stored with the private key sealed under the master key (DESIGN.md §4).

use moat_core::model::SigningKeyRecord;

use super::PgStore;
use crate::Result;
use crate::codec::db_error;
use crate::rows::{self, signing_key_columns};

pub(super) async fn insert(s: &PgStore, k: &SigningKeyRecord) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO signing_keys (",
        signing_key_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8)"
    ))
    .bind(&k.kid)
    .bind(&k.alg)
    .bind(&k.encrypted_private_key)
    .bind(&k.public_jwk)
    .bind(k.created_at)
    .bind(k.activates_at)
    .bind(k.retires_at)
    .bind(k.unpublish_at)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error("insert signing key", e))?;
    Ok(())
}

/// Oldest first (by creation, then activation, then kid for a stable order within a second).
pub(super) async fn list(s: &PgStore) -> Result<Vec<SigningKeyRecord>> {
    sqlx::query(concat!("SELECT ", signing_key_columns!(), " FROM signing_keys ORDER BY created_at, activates_at, kid"))
        .fetch_all(&s.pool)
        .await
        .map_err(|e| db_error("list signing keys", e))?
        .iter()
        .map(rows::signing_key)
        .collect()
}

pub(super) async fn retire(s: &PgStore, kid: &str, retires_at: i64, unpublish_at: i64) -> Result<bool> {
    let done = sqlx::query("UPDATE signing_keys SET retires_at = $1, unpublish_at = $2 WHERE kid = $3")
        .bind(retires_at)
        .bind(unpublish_at)
        .bind(kid)
        .execute(&s.pool)
        .await
        .map_err(|e| db_error("retire signing key", e))?;
    Ok(done.rows_affected() > 0)
}
