//! Signing keys, stored with the private key sealed under the master key (DESIGN.md §4).

use moat_core::model::SigningKeyRecord;

use sqlx::PgConnection;

use super::{Attempts, PgStore, TxResult, fail};
use crate::Result;
use crate::codec::db_error;
use crate::rows::{self, signing_key_columns};

pub(super) async fn insert(s: &PgStore, k: &SigningKeyRecord) -> Result<()> {
    insert_query(k).execute(&s.pool).await.map_err(|e| db_error("insert signing key", e))?;
    Ok(())
}

fn insert_query(k: &SigningKeyRecord) -> sqlx::query::Query<'_, sqlx::Postgres, sqlx::postgres::PgArguments> {
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

/// Inserts `k` and retires the keys older than the newest unretired one, in one transaction.
///
/// READ COMMITTED does not stop two rotations that each insert a key from missing the other's
/// (uncommitted) key, so each first locks every stored key row: a rotation that finds keys
/// waits for any other rotation holding them, and only then inserts, and its retiring statement
/// (a fresh snapshot) sees every key stored before it. An empty table has no row to lock, so
/// racing first rotations may each commit without seeing the other; hence every rotation then
/// runs the retiring step once more in a transaction of its own. The last of those runs after
/// every racing rotation has committed and sees all their keys, so exactly one stays unretired.
/// Neither step can retire the newest key (only keys strictly older than the newest unretired
/// key the statement sees), whatever they race with.
pub(super) async fn rotate(s: &PgStore, k: &SigningKeyRecord, unpublish_after: i64) -> Result<()> {
    let mut attempts = Attempts::new("rotate signing keys");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = rotate_in(&mut tx, Some(k), unpublish_after).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            done?;
            break;
        }
    }
    let mut attempts = Attempts::new("retire superseded signing keys");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = rotate_in(&mut tx, None, unpublish_after).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn rotate_in(tx: &mut PgConnection, k: Option<&SigningKeyRecord>, unpublish_after: i64) -> TxResult<()> {
    // Locked in kid order, so two rotations cannot deadlock on each other's locks.
    sqlx::query("SELECT kid FROM signing_keys ORDER BY kid FOR UPDATE")
        .fetch_all(&mut *tx)
        .await
        .map_err(fail("lock signing keys"))?;
    if let Some(k) = k {
        insert_query(k).execute(&mut *tx).await.map_err(fail("insert signing key"))?;
    }
    let newest: Option<(String, i64, i64)> = sqlx::query_as(
        "SELECT kid, created_at, activates_at FROM signing_keys WHERE retires_at IS NULL \
         ORDER BY created_at DESC, activates_at DESC, kid DESC LIMIT 1",
    )
    .fetch_optional(&mut *tx)
    .await
    .map_err(fail("find the newest signing key"))?;
    let Some((kid, created_at, activates_at)) = newest else { return Ok(()) };
    // Retire when the newest activates, so an old key signs until the new one takes over; a
    // key whose own activation is later retires then, i.e. never signs (it was superseded).
    // Strictly older in list order (a row-value comparison): the newest is never touched, and
    // a key committed after `newest` was read is retired only if it is older than `newest`.
    sqlx::query(
        "UPDATE signing_keys \
         SET retires_at = CASE WHEN activates_at > $1 THEN activates_at ELSE $1 END, \
             unpublish_at = CASE WHEN activates_at > $1 THEN activates_at ELSE $1 END + $2 \
         WHERE retires_at IS NULL AND (created_at, activates_at, kid) < ($3, $1, $4)",
    )
    .bind(activates_at)
    .bind(unpublish_after)
    .bind(created_at)
    .bind(&kid)
    .execute(&mut *tx)
    .await
    .map_err(fail("retire superseded signing keys"))?;
    Ok(())
}
