//! The audit log (DESIGN.md §10): append-only, read newest first with optional filters and
//! id-based paging.

use moat_core::model::AuditEvent;
use sqlx::{PgConnection, Postgres, QueryBuilder};

use super::{Attempts, PgStore, TxResult, fail};
use crate::codec::{audit_page_size, db_error, to_json};
use crate::rows::{self, audit_columns};
use crate::{AuditQuery, Result};

/// Appends all events in one transaction. One INSERT per event, in order: each takes the next
/// identity value, so ids increase in append order (a multi-row VALUES list does not promise
/// the order in which its rows draw from the sequence).
pub(super) async fn append(s: &PgStore, events: &[AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    // Encode everything first: a bad event fails before anything is written.
    let details = events.iter().map(|e| to_json(&e.detail, "audit detail")).collect::<Result<Vec<_>>>()?;
    let mut attempts = Attempts::new("append audit events");
    loop {
        let mut tx = s.begin(attempts.context).await?;
        let outcome = append_in(&mut tx, events, &details).await;
        if let Some(done) = attempts.finish(tx, outcome).await {
            return done;
        }
    }
}

async fn append_in(tx: &mut PgConnection, events: &[AuditEvent], details: &[String]) -> TxResult<()> {
    for (e, detail) in events.iter().zip(details) {
        sqlx::query(
            "INSERT INTO audit_events (at, kind, resource_id, client_id, user_id, ip, detail) \
                 VALUES ($1, $2, $3, $4, $5, $6, $7)",
        )
        .bind(e.at)
        .bind(&e.kind)
        .bind(e.resource_id.as_deref())
        .bind(e.client_id.as_deref())
        .bind(e.user_id.as_deref())
        .bind(e.ip.as_deref())
        .bind(detail)
        .execute(&mut *tx)
        .await
        .map_err(fail("append audit event"))?;
    }
    Ok(())
}

/// Newest first. The WHERE clause only names the filters that are set, so each filter can use
/// its `(column, id)` index.
pub(super) async fn list(s: &PgStore, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
    let mut sql = QueryBuilder::<Postgres>::new(concat!("SELECT ", audit_columns!(), " FROM audit_events WHERE 1 = 1"));
    if let Some(kind) = &q.kind {
        sql.push(" AND kind = ").push_bind(kind.as_str());
    }
    if let Some(resource) = &q.resource_id {
        sql.push(" AND resource_id = ").push_bind(resource.as_str());
    }
    if let Some(client) = &q.client_id {
        sql.push(" AND client_id = ").push_bind(client.as_str());
    }
    if let Some(user) = &q.user_id {
        sql.push(" AND user_id = ").push_bind(user.as_str());
    }
    if let Some(before) = q.before_id {
        sql.push(" AND id < ").push_bind(before);
    }
    sql.push(" ORDER BY id DESC LIMIT ").push_bind(audit_page_size(q.limit));
    sql.build()
        .fetch_all(&s.pool)
        .await
        .map_err(|e| db_error("list audit events", e))?
        .iter()
        .map(rows::audit_event)
        .collect()
}
