//! `/logout`: a confirmation page (GET) and the CSRF-protected form that ends the session
//! (POST), so a third-party page cannot sign the user out.

use axum::extract::{Request, State};
use axum::http::{HeaderMap, header};
use axum::response::Response;
use moat_core::model::AuditEvent;

use super::{csrf_token, csrf_valid, forbidden, internal_error, message_page, read_form};
use crate::http::set_cookie;
use crate::oauth::flow::{self, SESSION_COOKIE};
use crate::state::{AppState, now};

/// `GET /logout`.
pub async fn show(State(state): State<AppState>, headers: HeaderMap) -> Response {
    match flow::current_session(&state, &headers).await {
        Ok(Some(bs)) => {
            let csrf = csrf_token(&state, &["logout", &bs.session.token_hash]);
            let msg = format!("You are signed in as {}.", bs.user.email);
            message_page(&state, "Sign out", &msg, Some(csrf))
        }
        Ok(None) => message_page(&state, "Signed out", "You are not signed in.", None),
        Err(e) => internal_error(&state, "loading a session", e),
    }
}

/// `POST /logout`.
pub async fn submit(State(state): State<AppState>, request: Request) -> Response {
    let (headers, form) = match read_form(&state, request).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let bs = match flow::current_session(&state, &headers).await {
        Ok(Some(bs)) => bs,
        Ok(None) => return message_page(&state, "Signed out", "You are not signed in.", None),
        Err(e) => return internal_error(&state, "loading a session", e),
    };
    if !csrf_valid(&state, &["logout", &bs.session.token_hash], form.get("csrf")) {
        return forbidden(&state);
    }
    if let Err(e) = state.store.delete_session(&bs.session.token_hash).await {
        return internal_error(&state, "ending a session", e);
    }
    let mut ev = AuditEvent::new("logout", now());
    ev.user_id = Some(bs.user.id.to_string());
    state.audit.record(ev).await;
    let mut resp = message_page(&state, "Signed out", "You have been signed out.", None);
    let clear = set_cookie(&state.cookie_name(SESSION_COOKIE), "", Some(0), state.secure());
    resp.headers_mut().append(header::SET_COOKIE, clear);
    resp
}
