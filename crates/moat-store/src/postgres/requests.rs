//! Pending authorization requests, held server side between `/authorize` and the redirect back
//! to the client (DESIGN.md §6). Completing one is in [`super::codes`].

use moat_core::model::AuthorizationRequest;

use super::PgStore;
use crate::Result;
use crate::codec::{bool_to_small, db_error, scopes_to_text};
use crate::rows::{self, request_columns};

pub(super) async fn create(s: &PgStore, r: &AuthorizationRequest) -> Result<()> {
    sqlx::query(concat!(
        "INSERT INTO authorization_requests (",
        request_columns!(),
        ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)"
    ))
    .bind(&r.id)
    .bind(&r.browser_hash)
    .bind(r.resource_id.as_str())
    .bind(r.client_id.as_str())
    .bind(&r.redirect_uri)
    .bind(bool_to_small(r.redirect_uri_explicit))
    .bind(scopes_to_text(&r.scopes))
    .bind(r.state.as_deref())
    .bind(&r.code_challenge)
    .bind(&r.resource_url)
    .bind(r.prompt.as_deref())
    .bind(r.created_at)
    .bind(r.expires_at)
    .execute(&s.pool)
    .await
    .map_err(|e| db_error("create authorization request", e))?;
    Ok(())
}

pub(super) async fn get(s: &PgStore, id: &str) -> Result<Option<AuthorizationRequest>> {
    sqlx::query(concat!("SELECT ", request_columns!(), " FROM authorization_requests WHERE id = $1"))
        .bind(id)
        .fetch_optional(&s.pool)
        .await
        .map_err(|e| db_error("get authorization request", e))?
        .map(|row| rows::authorization_request(&row))
        .transpose()
}

pub(super) async fn delete(s: &PgStore, id: &str) -> Result<bool> {
    let done = sqlx::query("DELETE FROM authorization_requests WHERE id = $1")
        .bind(id)
        .execute(&s.pool)
        .await
        .map_err(|e| db_error("delete authorization request", e))?;
    Ok(done.rows_affected() > 0)
}
