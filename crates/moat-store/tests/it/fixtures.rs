//! Builders for valid domain records, so each conformance check states only what it is about.

use moat_core::ids::{ClientId, FamilyId, ResourceId, UserId, random_id, random_secret};
use moat_core::model::{
    AuthMethod, AuthorizationCode, AuthorizationRequest, Client, ClientKind, Consent, GrantType, NewFamily, Resource,
    ScopeDef, Session, User,
};
use moat_store::DynStore;

/// A fixed "now" well away from zero; lifetimes below are relative to it.
pub const NOW: i64 = 1_700_000_000;

pub fn resource(server_url: &str) -> Resource {
    Resource {
        id: ResourceId::generate(),
        name: "Todo".into(),
        server_url: server_url.into(),
        scopes: vec![
            ScopeDef { name: "todo:read".into(), description: "Read todos".into() },
            ScopeDef { name: "todo:write".into(), description: "Write todos".into() },
        ],
        default_scopes: vec!["todo:read".into()],
        dcr_enabled: true,
        cimd_enabled: false,
        cimd_allowed_hosts: vec!["*.example.com".into()],
        access_token_ttl: 3600,
        refresh_token_ttl: 30 * 86_400,
        refresh_idle_ttl: 7 * 86_400,
        created_at: NOW,
        updated_at: NOW,
    }
}

/// A unique server URL per call, so tests never collide on the canonical-URL constraint.
pub fn unique_server_url() -> String {
    format!("https://{}.example.com/mcp", random_id("h"))
}

pub fn client(resource: &ResourceId) -> Client {
    Client {
        id: ClientId::generate(),
        resource_id: resource.clone(),
        kind: ClientKind::PreRegistered,
        name: "Claude".into(),
        redirect_uris: vec!["https://app.example.com/cb".into(), "http://127.0.0.1/cb".into()],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        auth_method: AuthMethod::ClientSecretBasic,
        secret_hash: Some("ab".repeat(32)),
        secret_expires_at: Some(0),
        metadata: serde_json::json!({"client_name": "Claude", "x-unknown": [1, 2]}),
        fingerprint: None,
        access_token_ttl: Some(600),
        disabled: false,
        created_at: NOW,
        updated_at: NOW,
        last_used_at: None,
    }
}

/// A Client ID Metadata Document client of `resource` whose id is the document's URL, as the
/// server records it from a validated document: public, no secret, no optional settings.
pub fn cimd_client(resource: &ResourceId, url: &str) -> Client {
    Client {
        id: ClientId::parse(url).unwrap(),
        kind: ClientKind::Cimd,
        name: "Doc Client".into(),
        redirect_uris: vec!["https://app.example.com/cb".into()],
        grant_types: vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
        auth_method: AuthMethod::None,
        secret_hash: None,
        secret_expires_at: None,
        metadata: serde_json::json!({"client_id": url, "client_name": "Doc Client"}),
        access_token_ttl: None,
        ..client(resource)
    }
}

pub fn user(email: &str) -> User {
    User {
        id: UserId::generate(),
        email: email.into(),
        name: Some("Ada".into()),
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".into()),
        disabled: false,
        created_at: NOW,
        updated_at: NOW,
    }
}

pub fn unique_email() -> String {
    format!("{}@example.com", random_id("u"))
}

pub fn session(user: &UserId) -> Session {
    Session {
        id: random_id("ses_"),
        token_hash: random_secret(),
        user_id: user.clone(),
        auth_time: NOW,
        created_at: NOW,
        last_seen_at: NOW,
        expires_at: NOW + 86_400,
    }
}

pub fn request(resource: &Resource, client: &Client) -> AuthorizationRequest {
    AuthorizationRequest {
        id: random_secret(),
        browser_hash: random_secret(),
        resource_id: resource.id.clone(),
        client_id: client.id.clone(),
        redirect_uri: "https://app.example.com/cb".into(),
        redirect_uri_explicit: true,
        scopes: vec!["todo:read".into(), "todo:write".into()],
        state: Some("xyz".into()),
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        resource_url: resource.server_url.clone(),
        prompt: None,
        created_at: NOW,
        expires_at: NOW + 600,
    }
}

pub fn code(resource: &Resource, client: &Client, user: &UserId) -> AuthorizationCode {
    AuthorizationCode {
        code_hash: random_secret(),
        resource_id: resource.id.clone(),
        client_id: client.id.clone(),
        user_id: user.clone(),
        session_id: Some(random_id("ses_")),
        redirect_uri: "https://app.example.com/cb".into(),
        redirect_uri_explicit: true,
        scopes: vec!["todo:read".into(), "todo:write".into()],
        code_challenge: "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM".into(),
        resource_url: resource.server_url.clone(),
        auth_time: NOW - 5,
        created_at: NOW,
        expires_at: NOW + 60,
        consumed_at: None,
        family_id: None,
    }
}

pub fn consent(user: &UserId, client: &Client, scopes: &[&str]) -> Consent {
    Consent {
        user_id: user.clone(),
        client_id: client.id.clone(),
        resource_id: client.resource_id.clone(),
        scopes: scopes.iter().map(|s| (*s).to_owned()).collect(),
        created_at: NOW,
        updated_at: NOW,
    }
}

pub fn new_family() -> NewFamily {
    NewFamily {
        id: FamilyId::generate(),
        first_token_hash: Some(random_secret()),
        expires_at: NOW + 30 * 86_400,
        token_expires_at: NOW + 7 * 86_400,
    }
}

/// A resource, a client of it and a user, all stored.
#[derive(Clone)]
pub struct World {
    pub resource: Resource,
    pub client: Client,
    pub user: User,
}

pub async fn world(store: &DynStore) -> World {
    let resource = resource(&unique_server_url());
    store.create_resource(&resource).await.unwrap();
    let client = client(&resource.id);
    store.create_client(&client).await.unwrap();
    let user = user(&unique_email());
    store.create_user(&user).await.unwrap();
    World { resource, client, user }
}

/// A granted authorization: consent stored, code redeemed, a family with its first token.
pub struct Grant {
    pub world: World,
    pub code: AuthorizationCode,
    pub family: NewFamily,
}

pub async fn grant(store: &DynStore) -> Grant {
    let world = world(store).await;
    grant_in(store, world).await
}

pub async fn grant_in(store: &DynStore, world: World) -> Grant {
    let req = request(&world.resource, &world.client);
    store.create_authorization_request(&req).await.unwrap();
    let code = code(&world.resource, &world.client, &world.user.id);
    let consent = consent(&world.user.id, &world.client, &["todo:read", "todo:write"]);
    assert!(store.complete_authorization(&req.id, &code, Some(&consent)).await.unwrap());
    let family = new_family();
    let outcome = store.redeem_code(&code.code_hash, NOW, &|_| Ok(()), Some(&family)).await.unwrap();
    assert!(matches!(outcome, moat_store::RedeemOutcome::Redeemed(_)), "{outcome:?}");
    Grant { world, code, family }
}
