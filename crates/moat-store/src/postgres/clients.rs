//! Clients of a resource: pre-registered, dynamic (RFC 7591) and CIMD (DESIGN.md §5).

use moat_core::ids::{ClientId, ResourceId};
use moat_core::model::{Client, ClientKind};
use sqlx::PgConnection;

use super::{Attempts, PgStore, TxResult, fail};
use crate::Result;
use crate::codec::{bool_to_small, db_error, grant_types_to_json, to_json};
use crate::rows::{self, client_columns};

pub(super) async fn create(s: &PgStore, c: &Client) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO clients (",
        client_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16)"
    ))
    .bind(c.id.as_str())
    .bind(c.resource_id.as_str())
    .bind(c.kind.as_str())
    .bind(&c.name)
    .bind(to_json(&c.redirect_uris, "redirect URIs")?)
    .bind(grant_types_to_json(&c.grant_types)?)
    .bind(c.auth_method.as_str())
    .bind(c.secret_hash.as_deref())
    .bind(c.secret_expires_at)
    .bind(to_json(&c.metadata, "client metadata")?)
    .bind(c.fingerprint.as_deref())
    .bind(c.access_token_ttl)
    .bind(bool_to_small(c.disabled))
    .bind(c.created_at)
    .bind(c.updated_at)
    .bind(c.last_used_at)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error("create client", e))?;
    Ok(())
}

pub(super) async fn get(s: &PgStore, id: &ClientId) -> Result<Option<Client>> {
    sqlx::query(concat!("SELECT ", client_columns!(), " FROM clients WHERE id = $1"))
        .bind(id.as_str())
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error("get client", e))?
        .map(|row| rows::client(&row))
        .transpose()
}

pub(super) async fn list(s: &PgStore, resource: Option<&ResourceId>) -> Result<Vec<Client>> {
    let found = match resource {
        Some(r) => {
            sqlx::query(concat!(
                "SELECT ",
                client_columns!(),
                " FROM clients WHERE resource_id = $1 ORDER BY created_at, id"
            ))
            .bind(r.as_str())
            .fetch_all(&s.pool)
            .await
        }
        None => {
            sqlx::query(concat!("SELECT ", client_columns!(), " FROM clients ORDER BY created_at, id"))
                .fetch_all(&s.pool)
                .await
        }
    };
    found.map_err(|e| db_error("list clients", e))?.iter().map(rows::client).collect()
}

pub(super) async fn find_by_fingerprint(
    s: &PgStore,
    resource: &ResourceId,
    fingerprint: &str,
) -> Result<Option<Client>> {
    sqlx::query(concat!(
        "SELECT ",
        client_columns!(),
        " FROM clients WHERE resource_id = $1 AND fingerprint = $2 AND kind = $3 AND disabled = 0 \
         ORDER BY created_at, id LIMIT 1"
    ))
    .bind(resource.as_str())
    .bind(fingerprint)
    .bind(ClientKind::Dynamic.as_str())
    .fetch_optional(&s.pool)
    .await
    .map_err(|e| db_error("find client by fingerprint", e))?
    .map(|row| rows::client(&row))
    .transpose()
}

/// Disabling revokes every refresh family of the client in the same transaction, so no token
/// issued before can be refreshed (DESIGN.md §4). Enabling again does not revive them.
///
/// The families are revoked *before* the client row is updated: a rotation locks its family and
/// then updates the client row (`last_used_at`), so taking the locks in the same order here
/// means a concurrent rotation and disabling wait for each other instead of deadlocking. A
/// client that does not exist has no families, so the order changes no outcome.
pub(super) async fn set_disabled(s: &PgStore, id: &ClientId, disabled: bool, now: i64) -> Result<bool> {
    let mut attempts = Attempts::new("set client disabled");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = set_disabled_in(&mut tx, id, disabled, now).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn set_disabled_in(tx: &mut PgConnection, id: &ClientId, disabled: bool, now: i64) -> TxResult<bool> {
    if disabled {
        sqlx::query("UPDATE refresh_families SET revoked_at = $1 WHERE client_id = $2 AND revoked_at IS NULL")
            .bind(now)
            .bind(id.as_str())
            .execute(&mut *tx)
            .await
            .map_err(fail("revoke families of disabled client"))?;
    }
    let done = sqlx::query("UPDATE clients SET disabled = $1, updated_at = $2 WHERE id = $3")
        .bind(bool_to_small(disabled))
        .bind(now)
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(fail("set client disabled"))?;
    Ok(done.rows_affected() > 0)
}

/// Codes, consents, pending requests, families and tokens cascade. Seen assertion jtis are
/// deliberately kept until they expire: a CIMD client id (a URL) can come back, and its old
/// assertions must stay single-use (RFC 7523 §3).
pub(super) async fn delete(s: &PgStore, id: &ClientId) -> Result<bool> {
    s.delete_cascading("delete client", "DELETE FROM clients WHERE id = $1", id.as_str()).await
}

/// Records a successful token issuance (never-used dynamic registrations expire, DESIGN.md §5).
pub(super) async fn mark_used_in(conn: &mut PgConnection, id: &ClientId, now: i64) -> TxResult<()> {
    sqlx::query("UPDATE clients SET last_used_at = $1 WHERE id = $2")
        .bind(now)
        .bind(id.as_str())
        .execute(conn)
        .await
        .map_err(fail("mark client used"))?;
    Ok(())
}
