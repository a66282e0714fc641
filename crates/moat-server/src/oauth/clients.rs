//! Finding the client a request names at one resource: a registered client (pre-registered or
//! dynamic), or a Client ID Metadata Document client whose document is fetched, validated and
//! recorded (so consents, codes and refresh families can refer to it, and operators can list
//! and disable it).
//!
//! Fetching a document is the one thing an unauthenticated request can make Moat do for any
//! URL it names, so fetches (cache misses, not hits) are limited per source address (at the
//! authorization, token, revocation and introspection endpoints; key sets included).

use std::sync::Arc;

use moat_core::cimd::{CimdClient, client_id_host, host_allowed, is_client_id_url};
use moat_core::ids::ClientId;
use moat_core::model::{Client, ClientKind, Resource};
use serde_json::{Value, json};

use crate::cimd::{CimdFailure, Requester, Source};
use crate::state::{AppState, now};

/// Why no usable client was found. The message is safe to show to the user.
#[derive(Debug, thiserror::Error)]
pub enum LookupError {
    #[error("the application (client_id) is not registered with this MCP server")]
    Unknown,
    #[error("this application has been disabled")]
    Disabled,
    #[error("this MCP server does not accept Client ID Metadata Documents")]
    CimdDisabled,
    #[error("applications from {0} are not allowed to use this MCP server")]
    HostNotAllowed(String),
    #[error("the application's client metadata document was rejected: {0}")]
    Cimd(CimdFailure),
    /// Too many documents were fetched for this source address within the last minute.
    #[error(
        "the application's client metadata document could not be fetched right now: too many new \
         applications were looked up from your network address; try again in a minute"
    )]
    RateLimited,
    #[error("internal error")]
    Store(#[from] moat_store::StoreError),
}

/// What a lookup found.
pub struct Found {
    pub client: Client,
    /// The validated document, for metadata-document clients.
    pub document: Option<Arc<CimdClient>>,
}

/// Looks up `id` at `resource`. `ip` is recorded in audit events about documents and, when
/// known, limits how many documents this address can make Moat fetch
/// (`cimd_fetch_rate_limit_per_minute`); a request whose address is unknown is not limited.
pub async fn lookup(
    state: &AppState,
    resource: &Resource,
    id: &ClientId,
    ip: Option<&str>,
) -> Result<Found, LookupError> {
    if !is_client_id_url(id.as_str()) {
        return match state.store.get_client(&resource.id, id).await? {
            Some(c) if c.disabled => Err(LookupError::Disabled),
            Some(c) => Ok(Found { client: c, document: None }),
            None => Err(LookupError::Unknown),
        };
    }
    if !resource.cimd_enabled {
        return Err(LookupError::CimdDisabled);
    }
    let requester =
        Requester { audit: state.audit.clone(), resource_id: resource.id.to_string(), ip: ip.map(str::to_owned) };
    let host = client_id_host(id.as_str()).unwrap_or_default();
    if !host_allowed(&host, &resource.cimd_allowed_hosts) {
        requester.rejected(id.as_str(), "host_not_allowed").await;
        return Err(LookupError::HostNotAllowed(host));
    }
    // Asked by the resolver only when this lookup would start a fetch, so cache hits (and
    // lookups joining a fetch already under way) spend nothing.
    let admit = || match ip {
        Some(ip) => state.cimd_fetches_by_ip.try_acquire(&crate::throttle::address_key(ip), now()),
        None => true,
    };
    // The resolver audits the outcome for `requester` (a fetch's outcome from the fetch's own
    // task, so that it is not lost when this request is cancelled mid-fetch).
    let (doc, source) = match state.cimd.resolve_for(id.as_str(), Some(requester), admit).await {
        Ok(x) => x,
        Err(CimdFailure::RateLimited) => return Err(LookupError::RateLimited),
        Err(e) => return Err(LookupError::Cimd(e)),
    };
    // A document served from the cache is already recorded; read the row (it carries the
    // operator's `disabled` flag). A fresh fetch updates the row from the document.
    let stored = match source {
        Source::Cache => match state.store.get_client(&resource.id, id).await? {
            Some(c) => c,
            None => state.store.upsert_cimd_client(&client_from_document(resource, &doc)).await?,
        },
        Source::Fetched => state.store.upsert_cimd_client(&client_from_document(resource, &doc)).await?,
    };
    if stored.disabled {
        return Err(LookupError::Disabled);
    }
    Ok(Found { client: stored, document: Some(doc) })
}

/// The client row a validated document describes.
pub fn client_from_document(resource: &Resource, doc: &CimdClient) -> Client {
    let now = now();
    Client {
        id: ClientId::parse(&doc.client_id).unwrap_or_else(ClientId::generate),
        resource_id: resource.id.clone(),
        kind: ClientKind::Cimd,
        name: doc.client_name.clone(),
        redirect_uris: doc.redirect_uris.clone(),
        grant_types: doc.grant_types.clone(),
        auth_method: doc.auth_method,
        secret_hash: None,
        secret_expires_at: None,
        metadata: Value::Object(doc.metadata.clone()),
        fingerprint: None,
        access_token_ttl: None,
        disabled: false,
        created_at: now,
        updated_at: now,
        last_used_at: None,
    }
}

/// The public keys a `private_key_jwt` client authenticates with: its inline `jwks`, or the
/// set at its `jwks_uri` (fetched through the SSRF-safe fetcher).
pub async fn client_keys(
    state: &AppState,
    client: &Client,
    kid: Option<&str>,
    ip: Option<&str>,
) -> Result<Value, CimdFailure> {
    if let Some(jwks) = client.metadata.get("jwks").filter(|v| v.is_object()) {
        return Ok(jwks.clone());
    }
    // A new fetch of the key set is charged to the same per-address budget as documents.
    let admit = || match ip {
        Some(ip) => state.cimd_fetches_by_ip.try_acquire(&crate::throttle::address_key(ip), now()),
        None => true,
    };
    match client.metadata.get("jwks_uri").and_then(Value::as_str) {
        Some(uri) => state.cimd.client_jwks(uri, kid, admit).await,
        None => Ok(json!({ "keys": [] })),
    }
}
