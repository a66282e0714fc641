//! Housekeeping: deletes what can no longer be used (see [`crate::Store::purge_expired`]).
//!
//! Expiry follows the same convention as the checks (`now >= expires_at` is expired). Rotated
//! refresh tokens are kept until their own expiry, so presenting one again is still recognised
//! as reuse and revokes the family (RFC 9700 §4.14.2); consumed codes are kept until they
//! expire for the same reason (RFC 9700 §4.4).

use moat_core::model::ClientKind;

use super::{SqliteStore, WriteTx, commit};
use crate::codec::db_error;
use crate::{PurgeStats, Result};

async fn delete(tx: &mut WriteTx, context: &str, sql: &'static str, binds: &[i64]) -> Result<u64> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let done = q.execute(&mut **tx).await.map_err(|e| db_error(context, e))?;
    Ok(done.rows_affected())
}

pub(super) async fn purge_expired(
    s: &SqliteStore,
    now: i64,
    session_idle_cutoff: i64,
    unused_client_cutoff: i64,
) -> Result<PurgeStats> {
    let mut tx = s.begin_write().await?;
    let mut stats = PurgeStats {
        authorization_requests: delete(
            &mut tx,
            "purge authorization requests",
            "DELETE FROM authorization_requests WHERE expires_at <= ?",
            &[now],
        )
        .await?,
        codes: delete(
            &mut tx,
            "purge authorization codes",
            "DELETE FROM authorization_codes WHERE expires_at <= ?",
            &[now],
        )
        .await?,
        sessions: delete(
            &mut tx,
            "purge sessions",
            "DELETE FROM sessions WHERE expires_at <= ? OR last_seen_at < ?",
            &[now, session_idle_cutoff],
        )
        .await?,
        // Tokens of families past their absolute expiry go too, counted here rather than
        // vanishing silently through the cascade below.
        // Two statements, each using its index: an `OR` of the two conditions scans the table.
        refresh_tokens: delete(
            &mut tx,
            "purge refresh tokens",
            "DELETE FROM refresh_tokens WHERE expires_at <= ?",
            &[now],
        )
        .await?
            + delete(
                &mut tx,
                "purge refresh tokens of expired families",
                "DELETE FROM refresh_tokens WHERE family_id IN (SELECT id FROM refresh_families WHERE expires_at <= ?)",
                &[now],
            )
            .await?,
        families: delete(
            &mut tx,
            "purge refresh families",
            "DELETE FROM refresh_families WHERE expires_at <= ?",
            &[now],
        )
        .await?,
        revoked_jtis: delete(
            &mut tx,
            "purge revoked access tokens",
            "DELETE FROM revoked_access_tokens WHERE expires_at <= ?",
            &[now],
        )
        .await?,
        assertion_jtis: delete(
            &mut tx,
            "purge assertion jtis",
            "DELETE FROM assertion_jtis WHERE expires_at <= ?",
            &[now],
        )
        .await?,
        unused_dynamic_clients: 0,
    };
    // Never-used dynamic registrations expire (DESIGN.md §5), and so do never-used
    // metadata-document clients (anyone can make Moat record one by starting an authorization;
    // a later request records it again). Their rows in other tables cascade. Kept: a disabled
    // metadata-document client (deleting it would lift the operator's block, as the next request
    // records the URL afresh, enabled) and any client with a sign-in under way (the expired
    // requests and codes are already gone above, so any left are live).
    let unused = sqlx::query(
        "DELETE FROM clients WHERE last_used_at IS NULL AND created_at < ? \
         AND (kind = ? OR (kind = ? AND disabled = 0)) \
         AND NOT EXISTS (SELECT 1 FROM authorization_requests r \
                         WHERE r.resource_id = clients.resource_id AND r.client_id = clients.id) \
         AND NOT EXISTS (SELECT 1 FROM authorization_codes c \
                         WHERE c.resource_id = clients.resource_id AND c.client_id = clients.id)",
    )
    .bind(unused_client_cutoff)
    .bind(ClientKind::Dynamic.as_str())
    .bind(ClientKind::Cimd.as_str())
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("purge unused dynamic clients", e))?;
    stats.unused_dynamic_clients = unused.rows_affected();
    commit(tx, "purge expired rows").await?;
    Ok(stats)
}
