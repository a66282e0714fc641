//! Clients of a resource: pre-registered, dynamic (RFC 7591) and CIMD (DESIGN.md §5). A client
//! is identified by (resource, id): every query here names both.

use moat_core::ids::{ClientId, ResourceId};
use moat_core::model::{Client, ClientKind};
use sqlx::PgConnection;

use super::{Attempts, PgStore, TxResult, fail};
use crate::codec::{bool_to_small, db_error, grant_types_to_json, to_json};
use crate::rows::{self, client_columns};
use crate::{LAST_USED_RESOLUTION_SECONDS, Result, check_cimd, cimd_clash};

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

pub(super) async fn get(s: &PgStore, resource: &ResourceId, id: &ClientId) -> Result<Option<Client>> {
    sqlx::query(concat!("SELECT ", client_columns!(), " FROM clients WHERE resource_id = $1 AND id = $2"))
        .bind(resource.as_str())
        .bind(id.as_str())
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error("get client", e))?
        .map(|row| rows::client(&row))
        .transpose()
}

/// Records a metadata-document client (see [`crate::Store::upsert_cimd_client`]) in one
/// statement, atomic on its own: of two instances recording the same document at once, one
/// inserts and the other updates the row the first committed. The update is limited to CIMD rows:
/// a document must never rewrite the redirect URIs of a pre-registered or dynamic client that
/// happens to have the same id at this resource, so such a clash changes nothing and is a
/// `Conflict`. Only the client row is locked, like any update of it, so this adds no lock order.
pub(super) async fn upsert_cimd(s: &PgStore, c: &Client) -> Result<Client> {
    check_cimd(c)?;
    sqlx::query(concat!(
        "INSERT INTO clients (",
        client_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, $16) \
         ON CONFLICT (resource_id, id) DO UPDATE SET \
             name = excluded.name, redirect_uris = excluded.redirect_uris, \
             grant_types = excluded.grant_types, auth_method = excluded.auth_method, \
             metadata = excluded.metadata, updated_at = excluded.updated_at \
         WHERE clients.kind = excluded.kind \
         RETURNING ",
        client_columns!()
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
    .fetch_optional(&s.pool)
    .await
    .map_err(|e| db_error("record metadata-document client", e))?
    .map(|row| rows::client(&row))
    .transpose()?
    .ok_or_else(cimd_clash)
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
         ORDER BY (last_used_at IS NULL), created_at DESC, id LIMIT 1"
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

/// Disabling revokes every refresh family of the client at this resource in the same
/// transaction, so no token issued before can be refreshed (DESIGN.md §4); the same CIMD URL at
/// another resource is another client and keeps its grants. Enabling again does not revive them.
///
/// The families are revoked *before* the client row is updated: a rotation locks its family and
/// then may update the client row (`last_used_at`), so taking the locks in the same order here
/// means a concurrent rotation and disabling wait for each other instead of deadlocking. A
/// client that does not exist has no families, so the order changes no outcome.
///
/// They are revoked once more *after* the client row is updated: a redemption running
/// concurrently holds a share lock on the client row ([`lock_if_active_in`]) while it creates a
/// family, which the first sweep (its snapshot taken before that family committed) cannot see.
/// The update waits for that redemption to end, and the second sweep, a new statement with a
/// new snapshot, revokes what it created. Redemptions that start later see the client disabled.
pub(super) async fn set_disabled(
    s: &PgStore,
    resource: &ResourceId,
    id: &ClientId,
    disabled: bool,
    now: i64,
) -> Result<bool> {
    let mut attempts = Attempts::new("set client disabled");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = set_disabled_in(&mut tx, resource, id, disabled, now).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn set_disabled_in(
    tx: &mut PgConnection,
    resource: &ResourceId,
    id: &ClientId,
    disabled: bool,
    now: i64,
) -> TxResult<bool> {
    if disabled {
        revoke_families_in(tx, resource, id, now).await?;
    }
    let done = sqlx::query("UPDATE clients SET disabled = $1, updated_at = $2 WHERE resource_id = $3 AND id = $4")
        .bind(bool_to_small(disabled))
        .bind(now)
        .bind(resource.as_str())
        .bind(id.as_str())
        .execute(&mut *tx)
        .await
        .map_err(fail("set client disabled"))?;
    if disabled && done.rows_affected() > 0 {
        revoke_families_in(tx, resource, id, now).await?;
    }
    Ok(done.rows_affected() > 0)
}

async fn revoke_families_in(tx: &mut PgConnection, resource: &ResourceId, id: &ClientId, now: i64) -> TxResult<()> {
    sqlx::query(
        "UPDATE refresh_families SET revoked_at = $1 \
         WHERE resource_id = $2 AND client_id = $3 AND revoked_at IS NULL",
    )
    .bind(now)
    .bind(resource.as_str())
    .bind(id.as_str())
    .execute(&mut *tx)
    .await
    .map_err(fail("revoke families of disabled client"))?;
    Ok(())
}

/// Codes, consents, pending requests, families and tokens of the client at this resource
/// cascade. Seen assertion jtis are deliberately kept until they expire: a CIMD client id (a
/// URL) can come back, and its old assertions must stay single-use (RFC 7523 §3).
pub(super) async fn delete(s: &PgStore, resource: &ResourceId, id: &ClientId) -> Result<bool> {
    s.delete_cascading(
        "delete client",
        "DELETE FROM clients WHERE resource_id = $1 AND id = $2",
        &[resource.as_str(), id.as_str()],
    )
    .await
}

/// Records a successful token issuance (never-used dynamic registrations expire, DESIGN.md §5),
/// at most once per [`LAST_USED_RESOLUTION_SECONDS`]. The guard keeps a busy client's row from
/// being rewritten, and so locked, by every redemption and rotation: an `UPDATE` whose `WHERE`
/// does not match takes no row lock, so concurrent token requests of one client do not queue on
/// its row. Of two that find it stale at once, the second waits for the first, re-evaluates the
/// guard on the row the first committed, and skips. A disabled client is never touched.
pub(super) async fn mark_used_in(
    conn: &mut PgConnection,
    resource: &ResourceId,
    id: &ClientId,
    now: i64,
) -> TxResult<()> {
    sqlx::query(
        "UPDATE clients SET last_used_at = $1 \
         WHERE resource_id = $2 AND id = $3 AND disabled = 0 AND (last_used_at IS NULL OR last_used_at < $4)",
    )
    .bind(now)
    .bind(resource.as_str())
    .bind(id.as_str())
    .bind(now.saturating_sub(LAST_USED_RESOLUTION_SECONDS))
    .execute(conn)
    .await
    .map_err(fail("mark client used"))?;
    Ok(())
}

/// Whether the client exists and is enabled, holding a share lock on its row until the caller's
/// transaction ends, so it cannot be disabled meanwhile (see [`set_disabled`]). Share locks do
/// not conflict with each other: concurrent redemptions of one client do not wait on one another.
pub(super) async fn lock_if_active_in(conn: &mut PgConnection, resource: &ResourceId, id: &ClientId) -> TxResult<bool> {
    let disabled: Option<i16> =
        sqlx::query_scalar("SELECT disabled FROM clients WHERE resource_id = $1 AND id = $2 FOR SHARE")
            .bind(resource.as_str())
            .bind(id.as_str())
            .fetch_optional(conn)
            .await
            .map_err(fail("check client status"))?;
    Ok(disabled.is_some_and(|d| d == 0))
}

/// Whether the client exists and is enabled, without a lock. A rotation reads it while holding
/// its family's row lock, and disabling revokes the client's families (waiting for that lock)
/// before it touches the client row, so a rotation that read the client as enabled leaves a
/// family the disabling then revokes.
pub(super) async fn is_active_in(conn: &mut PgConnection, resource: &ResourceId, id: &ClientId) -> TxResult<bool> {
    let disabled: Option<i16> = sqlx::query_scalar("SELECT disabled FROM clients WHERE resource_id = $1 AND id = $2")
        .bind(resource.as_str())
        .bind(id.as_str())
        .fetch_optional(conn)
        .await
        .map_err(fail("check client status"))?;
    Ok(disabled.is_some_and(|d| d == 0))
}
