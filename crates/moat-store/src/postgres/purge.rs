//! Housekeeping: deletes what can no longer be used (see [`crate::Store::purge_expired`]).
//!
//! Expiry follows the same convention as the checks (`now >= expires_at` is expired). Rotated
//! refresh tokens are kept until their own expiry, so presenting one again is still recognised
//! as reuse and revokes the family (RFC 9700 §4.14.2); consumed codes are kept until they
//! expire for the same reason (RFC 9700 §4.4).
//!
//! Several instances may purge at the same time: a DELETE waiting on a row another purge is
//! deleting re-checks it afterwards and skips it, so every row is counted once overall. Should
//! two purges lock rows in different orders and deadlock, the victim is retried.

use moat_core::model::ClientKind;
use sqlx::PgConnection;

use super::{Attempts, PgStore, TxResult, fail};
use crate::{PurgeStats, Result};

async fn delete(tx: &mut PgConnection, context: &'static str, sql: &'static str, binds: &[i64]) -> TxResult<u64> {
    let mut q = sqlx::query(sql);
    for b in binds {
        q = q.bind(*b);
    }
    let done = q.execute(tx).await.map_err(fail(context))?;
    Ok(done.rows_affected())
}

pub(super) async fn purge_expired(
    s: &PgStore,
    now: i64,
    session_idle_cutoff: i64,
    unused_client_cutoff: i64,
) -> Result<PurgeStats> {
    let mut attempts = Attempts::new("purge expired rows");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = purge_in(&mut tx, now, session_idle_cutoff, unused_client_cutoff).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn purge_in(
    tx: &mut PgConnection,
    now: i64,
    session_idle_cutoff: i64,
    unused_client_cutoff: i64,
) -> TxResult<PurgeStats> {
    let mut stats = PurgeStats {
        authorization_requests: delete(
            tx,
            "purge authorization requests",
            "DELETE FROM authorization_requests WHERE expires_at <= $1",
            &[now],
        )
        .await?,
        codes: delete(
            tx,
            "purge authorization codes",
            "DELETE FROM authorization_codes WHERE expires_at <= $1",
            &[now],
        )
        .await?,
        sessions: delete(
            tx,
            "purge sessions",
            "DELETE FROM sessions WHERE expires_at <= $1 OR last_seen_at < $2",
            &[now, session_idle_cutoff],
        )
        .await?,
        // Tokens of families past their absolute expiry go too, counted here rather than
        // vanishing silently through the cascade below. Tokens before families: the same
        // lock order as a rotation.
        // Two statements, each using its index: an `OR` of the two conditions scans the table.
        refresh_tokens: delete(tx, "purge refresh tokens", "DELETE FROM refresh_tokens WHERE expires_at <= $1", &[now])
            .await?
            + delete(
                tx,
                "purge refresh tokens of expired families",
                "DELETE FROM refresh_tokens t USING refresh_families f WHERE t.family_id = f.id AND f.expires_at <= $1",
                &[now],
            )
            .await?,
        families: delete(tx, "purge refresh families", "DELETE FROM refresh_families WHERE expires_at <= $1", &[now])
            .await?,
        revoked_jtis: delete(
            tx,
            "purge revoked access tokens",
            "DELETE FROM revoked_access_tokens WHERE expires_at <= $1",
            &[now],
        )
        .await?,
        assertion_jtis: delete(tx, "purge assertion jtis", "DELETE FROM assertion_jtis WHERE expires_at <= $1", &[now])
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
        "DELETE FROM clients WHERE last_used_at IS NULL AND created_at < $1 \
         AND (kind = $2 OR (kind = $3 AND disabled = 0)) \
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
    .map_err(fail("purge unused dynamic clients"))?;
    stats.unused_dynamic_clients = unused.rows_affected();
    Ok(stats)
}
