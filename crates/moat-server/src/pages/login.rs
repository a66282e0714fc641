//! The login page: email and password against local accounts (argon2id), throttled per
//! account and per source address; a successful login starts a fresh server-side session
//! (the session id is never reused across logins, against fixation).

use askama::Template;
use axum::extract::{Query, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::Response;
use moat_core::ids::{random_id, random_secret};
use moat_core::model::{AuditEvent, AuthorizationRequest, Client, Resource, Session};
use serde::Deserialize;

use super::{csrf_token, csrf_valid, forbidden, internal_error, read_form, render};
use crate::crypto::sha256_hex;
use crate::http::{client_ip, cookie, set_cookie};
use crate::oauth::flow::{self, BrowserSession, SESSION_COOKIE};
use crate::passwords;
use crate::state::{AppState, now};

#[derive(Template)]
#[template(path = "login.html")]
struct LoginPage<'a> {
    brand: &'a str,
    title: &'a str,
    client_name: &'a str,
    resource_name: &'a str,
    req_id: &'a str,
    csrf: String,
    email: &'a str,
    error: Option<&'a str>,
}

#[derive(Deserialize)]
pub struct ReqQuery {
    pub req: Option<String>,
}

fn page(
    state: &AppState,
    status: StatusCode,
    req: &AuthorizationRequest,
    resource: &Resource,
    client: &Client,
    email: &str,
    error: Option<&str>,
) -> Response {
    render(
        status,
        &LoginPage {
            brand: &state.config.brand_name,
            title: "Sign in",
            client_name: &client.name,
            resource_name: &resource.name,
            req_id: &req.id,
            csrf: csrf_token(state, &["login", &req.id, &req.browser_hash]),
            email,
            error,
        },
    )
}

/// `GET /login?req=…`.
pub async fn show(State(state): State<AppState>, Query(q): Query<ReqQuery>, headers: HeaderMap) -> Response {
    match flow::load_request(&state, &headers, q.req.as_deref()).await {
        Ok((req, resource, client)) => page(&state, StatusCode::OK, &req, &resource, &client, "", None),
        Err(resp) => resp,
    }
}

/// `POST /login`.
pub async fn submit(State(state): State<AppState>, request: Request) -> Response {
    let ip = client_ip(&request, state.config.trusted_proxy_header.as_deref()).map(|i| i.to_string());
    let (headers, form) = match read_form(&state, request).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    let (req, resource, client) = match flow::load_request(&state, &headers, form.get("req")).await {
        Ok(x) => x,
        Err(resp) => return resp,
    };
    if !csrf_valid(&state, &["login", &req.id, &req.browser_hash], form.get("csrf")) {
        return forbidden(&state);
    }
    let email = form.get("email").unwrap_or_default().trim().to_lowercase();
    let password = form.get("password").unwrap_or_default().to_owned();
    let now = now();
    let account_key = format!("acct|{email}");
    let ip_key = format!("ip|{}", crate::throttle::address_key(ip.as_deref().unwrap_or("unknown")));
    let shown_email = if email.len() <= 320 { email.as_str() } else { "" };

    // Every attempt reserves its place in both budgets before the password is verified, each
    // check-and-record done under its limiter's lock: checking first and recording only after
    // the (slow) argon2 verification let every request that arrived before the first recorded
    // failure through. Attempts over budget are refused here, without running argon2. A
    // reservation stands unless the attempt turns out not to count (success, or a store error
    // before verifying); in particular it is not given back if the client goes away mid-way,
    // as that would let a client that disconnects early run argon2 without limit.
    let ip_reserved = state.login_by_ip.try_acquire(&ip_key, now);
    let reserved = ip_reserved && state.login_by_account.try_acquire(&account_key, now);
    if !reserved {
        // An attempt refused for the account was never made, so it spends no per-address
        // budget (as before: only verified failures count).
        if ip_reserved {
            state.login_by_ip.release(&ip_key, now);
        }
        state.metrics.login("throttled");
        let mut ev = AuditEvent::new("login.throttled", now);
        ev.ip = ip.clone();
        ev.detail = serde_json::json!({ "email": shown_email });
        state.audit.record(ev).await;
        return page(
            &state,
            StatusCode::TOO_MANY_REQUESTS,
            &req,
            &resource,
            &client,
            shown_email,
            Some("Too many failed sign-in attempts. Wait a few minutes and try again."),
        );
    }

    let user = if email.is_empty() || email.len() > 320 {
        None
    } else {
        match state.store.get_user_by_email(&email).await {
            Ok(u) => u,
            Err(e) => {
                // Nothing was verified: the attempt does not count against either budget.
                state.login_by_account.release(&account_key, now);
                state.login_by_ip.release(&ip_key, now);
                return internal_error(&state, "loading a user", e);
            }
        }
    };
    // Unknown accounts and accounts without a password verify against a dummy hash, so a
    // response's timing does not tell whether the email exists.
    let hash = user.as_ref().and_then(|u| u.password_hash.clone()).unwrap_or_else(|| state.dummy_password_hash.clone());
    let verified = passwords::verify_password(password, hash).await;
    let user = match user {
        Some(u) if verified && u.password_hash.is_some() && !u.disabled => u,
        _ => {
            // The reservations made above stand as this failure's record.
            state.metrics.login("failed");
            let mut ev = AuditEvent::new("login.failed", now);
            ev.ip = ip;
            ev.detail = serde_json::json!({ "email": shown_email });
            state.audit.record(ev).await;
            return page(
                &state,
                StatusCode::UNAUTHORIZED,
                &req,
                &resource,
                &client,
                shown_email,
                Some("Incorrect email or password."),
            );
        }
    };
    // A success clears the account's failures and gives back this attempt's per-address
    // reservation: that budget counts failures only, so many people signing in from one
    // address (a shared NAT) are not throttled.
    state.login_by_account.reset(&account_key);
    state.login_by_ip.release(&ip_key, now);

    // A fresh session on every login; the previous one (if any) ends.
    let cookie_name = state.cookie_name(SESSION_COOKIE);
    if let Some(old) = cookie(&headers, &cookie_name)
        && let Err(e) = state.store.delete_session(&sha256_hex(old.as_bytes())).await
    {
        return internal_error(&state, "ending the previous session", e);
    }
    let token = random_secret();
    let session = Session {
        id: random_id("ses_"),
        token_hash: sha256_hex(token.as_bytes()),
        user_id: user.id.clone(),
        auth_time: now,
        created_at: now,
        last_seen_at: now,
        expires_at: now + state.config.session_absolute_seconds,
    };
    if let Err(e) = state.store.create_session(&session).await {
        return internal_error(&state, "creating a session", e);
    }
    state.metrics.login("succeeded");
    let mut ev = AuditEvent::new("login.succeeded", now);
    ev.user_id = Some(user.id.to_string());
    ev.client_id = Some(client.id.to_string());
    ev.resource_id = Some(resource.id.to_string());
    ev.ip = ip;
    state.audit.record(ev).await;

    let mut resp = flow::proceed(&state, &req, &resource, &client, Some(BrowserSession { session, user })).await;
    let set = set_cookie(&cookie_name, &token, Some(state.config.session_absolute_seconds), state.secure());
    resp.headers_mut().append(header::SET_COOKIE, set);
    resp
}
