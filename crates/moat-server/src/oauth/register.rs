//! Dynamic Client Registration (RFC 7591) at `{issuer}/oauth/register`, when the resource
//! enables it: anonymous, rate-limited per source address, metadata echoed (including
//! `redirect_uris`, which the TypeScript SDK requires), identical public re-registrations
//! answered with the existing client.

use axum::body::Body;
use axum::extract::{Path, Request, State};
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use moat_core::OAuthError;
use moat_core::ids::{ClientId, random_secret};
use moat_core::model::{AuditEvent, AuthMethod, Client, ClientKind};
use serde_json::{Value, json};

use crate::crypto::sha256_hex;
use crate::http::{OAuthJsonError, client_ip, no_store_json, read_body};
use crate::state::{AppState, now};

/// `POST {issuer}/oauth/register`.
pub async fn register(State(state): State<AppState>, Path(resource_id): Path<String>, req: Request) -> Response {
    let ip = client_ip(&req, state.config.trusted_proxy_header.as_deref());
    let (parts, body) = req.into_parts();
    match handle(&state, &resource_id, &parts.headers, body, ip).await {
        Ok(resp) => resp,
        Err(e) => {
            state.metrics.registration(e.error.code.as_str());
            e.into_response()
        }
    }
}

async fn handle(
    state: &AppState,
    resource_id: &str,
    headers: &HeaderMap,
    body: Body,
    ip: Option<std::net::IpAddr>,
) -> Result<Response, OAuthJsonError> {
    let resource = super::resource_or_404(state, resource_id).await?;
    if !resource.dcr_enabled {
        return Err(OAuthJsonError::new(OAuthError::invalid_request(
            "dynamic client registration is disabled for this MCP server",
        ))
        .with_status(StatusCode::NOT_FOUND));
    }
    let now = now();
    let ip_key = ip.map(|i| crate::throttle::address_key(&i.to_string())).unwrap_or_else(|| "unknown".into());
    if !state.registrations_by_ip.try_acquire(&format!("{}|{ip_key}", resource.id), now) {
        let mut resp = OAuthJsonError::new(OAuthError::new(
            moat_core::OAuthErrorCode::TemporarilyUnavailable,
            "too many registrations from this address; try again later",
        ))
        .with_status(StatusCode::TOO_MANY_REQUESTS)
        .into_response();
        resp.headers_mut().insert(header::RETRY_AFTER, HeaderValue::from_static("60"));
        return Ok(resp);
    }
    let json_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.split(';').next())
        .is_some_and(|v| v.trim().eq_ignore_ascii_case("application/json"));
    if !json_type {
        return Err(OAuthError::invalid_client_metadata("Content-Type must be application/json").into());
    }
    let bytes = read_body(body, state.config.max_body_bytes).await?;
    let body: Value = serde_json::from_slice(&bytes)
        .map_err(|_| OAuthError::invalid_client_metadata("the request body is not valid JSON"))?;
    let reg = moat_core::client_metadata::validate_registration(&body)?;

    if reg.auth_method == AuthMethod::None {
        match state.store.find_client_by_fingerprint(&resource.id, &reg.fingerprint).await {
            // Reused only while it has a good while to live: a never-used registration is
            // deleted `dcr_unused_client_ttl_seconds` after creation, and handing out one about
            // to go would break the login it is for. Past half its life, a new one is made.
            Ok(Some(existing))
                if existing.last_used_at.is_some()
                    || existing.created_at > now.saturating_sub(state.config.dcr_unused_client_ttl_seconds / 2) =>
            {
                state.metrics.registration("reused");
                return Ok(created(registration_json(&existing, None)));
            }
            Ok(Some(_)) => {}
            Ok(None) => {}
            Err(e) => return Err(OAuthJsonError::internal("looking up a registration", e)),
        }
    }
    let secret = reg.auth_method.uses_secret().then(random_secret);
    let mut grant_types = reg.grant_types.clone();
    grant_types.dedup();
    let client = Client {
        id: ClientId::generate(),
        resource_id: resource.id.clone(),
        kind: ClientKind::Dynamic,
        name: reg.client_name.clone(),
        redirect_uris: reg.redirect_uris.clone(),
        grant_types,
        auth_method: reg.auth_method,
        secret_hash: secret.as_ref().map(|s| sha256_hex(s.as_bytes())),
        // RFC 7591 §3.2.1: 0 means the secret does not expire.
        secret_expires_at: secret.as_ref().map(|_| 0),
        metadata: Value::Object(reg.metadata.clone()),
        fingerprint: (reg.auth_method == AuthMethod::None).then(|| reg.fingerprint.clone()),
        access_token_ttl: None,
        disabled: false,
        created_at: now,
        updated_at: now,
        last_used_at: None,
    };
    if let Err(e) = state.store.create_client(&client).await {
        return Err(OAuthJsonError::internal("storing a registration", e));
    }
    let mut ev = AuditEvent::new("client.registered", now);
    ev.resource_id = Some(resource.id.to_string());
    ev.client_id = Some(client.id.to_string());
    ev.ip = ip.map(|i| i.to_string());
    ev.detail = json!({ "client_name": client.name, "redirect_uris": client.redirect_uris,
                        "token_endpoint_auth_method": client.auth_method.as_str() });
    state.audit.record(ev).await;
    state.metrics.registration("created");
    Ok(created(registration_json(&client, secret.as_deref())))
}

fn created(body: Value) -> Response {
    let mut resp = no_store_json(body);
    *resp.status_mut() = StatusCode::CREATED;
    resp
}

/// The RFC 7591 §3.2.1 response: the registered metadata plus `client_id`,
/// `client_id_issued_at` and, for secret-based clients, `client_secret` (shown only now) and
/// `client_secret_expires_at`.
pub fn registration_json(client: &Client, secret: Option<&str>) -> Value {
    let mut obj = client.metadata.as_object().cloned().unwrap_or_default();
    obj.insert("client_id".into(), json!(client.id));
    obj.insert("client_id_issued_at".into(), json!(client.created_at));
    obj.insert("client_name".into(), json!(client.name));
    obj.insert("redirect_uris".into(), json!(client.redirect_uris));
    obj.insert("grant_types".into(), json!(client.grant_types.iter().map(|g| g.as_str()).collect::<Vec<_>>()));
    obj.insert("token_endpoint_auth_method".into(), json!(client.auth_method.as_str()));
    if let Some(s) = secret {
        obj.insert("client_secret".into(), json!(s));
    }
    if client.auth_method.uses_secret() {
        obj.insert("client_secret_expires_at".into(), json!(client.secret_expires_at.unwrap_or(0)));
    }
    Value::Object(obj)
}
