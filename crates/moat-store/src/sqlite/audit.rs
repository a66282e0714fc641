//! The audit log (DESIGN.md §10): append-only, read newest first with optional filters and
//! id-based paging.

use moat_core::model::AuditEvent;
use sqlx::{QueryBuilder, Sqlite};

use super::{SqliteStore, commit};
use crate::codec::{audit_page_size, db_error, to_json};
use crate::rows::{self, audit_columns};
use crate::{AuditQuery, Result};

/// Appends all events in one transaction; the store assigns increasing ids.
pub(super) async fn append(s: &SqliteStore, events: &[AuditEvent]) -> Result<()> {
    if events.is_empty() {
        return Ok(());
    }
    let mut tx = s.begin_write().await?;
    for e in events {
        sqlx::query(
            "INSERT INTO audit_events (at, kind, resource_id, client_id, user_id, ip, detail) \
             VALUES (?, ?, ?, ?, ?, ?, ?)",
        )
        .bind(e.at)
        .bind(&e.kind)
        .bind(e.resource_id.as_deref())
        .bind(e.client_id.as_deref())
        .bind(e.user_id.as_deref())
        .bind(e.ip.as_deref())
        .bind(to_json(&e.detail, "audit detail")?)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("append audit event", e))?;
    }
    commit(tx, "append audit events").await
}

/// Newest first. The WHERE clause only names the filters that are set, so each filter can use
/// its `(column, id)` index.
pub(super) async fn list(s: &SqliteStore, q: &AuditQuery) -> Result<Vec<AuditEvent>> {
    let mut sql = QueryBuilder::<Sqlite>::new(concat!("SELECT ", audit_columns!(), " FROM audit_events WHERE 1 = 1"));
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
        .fetch_all(&s.reader)
        .await
        .map_err(|e| db_error("list audit events", e))?
        .iter()
        .map(rows::audit_event)
        .collect()
}
