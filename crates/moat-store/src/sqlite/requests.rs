//! Pending authorization requests, held server side between `/authorize` and the redirect back
//! to the client (DESIGN.md §6). Completing one is in [`super::codes`].

use moat_core::model::AuthorizationRequest;

use super::{SqliteStore, commit};
use crate::Result;
use crate::codec::{bool_to_int, db_error, scopes_to_text};
use crate::rows::{self, request_columns};

pub(super) async fn create(s: &SqliteStore, r: &AuthorizationRequest) -> Result<()> {
    let mut tx = s.begin_write().await?;
    sqlx::query(concat!(
        "INSERT INTO authorization_requests (",
        request_columns!(),
        ") VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)"
    ))
    .bind(&r.id)
    .bind(&r.browser_hash)
    .bind(r.resource_id.as_str())
    .bind(r.client_id.as_str())
    .bind(&r.redirect_uri)
    .bind(bool_to_int(r.redirect_uri_explicit))
    .bind(scopes_to_text(&r.scopes))
    .bind(r.state.as_deref())
    .bind(&r.code_challenge)
    .bind(&r.resource_url)
    .bind(r.prompt.as_deref())
    .bind(r.created_at)
    .bind(r.expires_at)
    .execute(&mut *tx)
    .await
    .map_err(|e| db_error("create authorization request", e))?;
    commit(tx, "create authorization request").await
}

pub(super) async fn get(s: &SqliteStore, id: &str) -> Result<Option<AuthorizationRequest>> {
    sqlx::query(concat!("SELECT ", request_columns!(), " FROM authorization_requests WHERE id = ?"))
        .bind(id)
        .fetch_optional(&s.reader)
        .await
        .map_err(|e| db_error("get authorization request", e))?
        .map(|row| rows::authorization_request(&row))
        .transpose()
}

pub(super) async fn delete(s: &SqliteStore, id: &str) -> Result<bool> {
    let mut tx = s.begin_write().await?;
    let done = sqlx::query("DELETE FROM authorization_requests WHERE id = ?")
        .bind(id)
        .execute(&mut *tx)
        .await
        .map_err(|e| db_error("delete authorization request", e))?;
    commit(tx, "delete authorization request").await?;
    Ok(done.rows_affected() > 0)
}
