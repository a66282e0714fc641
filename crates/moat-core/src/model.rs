//! Domain records: what Moat stores about resources, clients, users, sessions, pending
//! authorizations, codes, consents, refresh-token families, signing keys and audit events.
//!
//! Times are Unix seconds (`i64`) and are always passed in by the caller, so every rule that
//! depends on the clock can be tested without sleeping.

use serde::{Deserialize, Serialize};

use crate::ids::{ClientId, FamilyId, ResourceId, UserId};

/// One scope a resource defines, with the description shown on the consent page.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScopeDef {
    pub name: String,
    #[serde(default)]
    pub description: String,
}

/// A registered MCP server. Each one is its own issuer (`{base}/resources/{id}`).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Resource {
    pub id: ResourceId,
    pub name: String,
    /// The exact MCP endpoint URL as registered; tokens carry this string in `aud`.
    pub server_url: String,
    pub scopes: Vec<ScopeDef>,
    /// What a request without `scope` gets; empty means "all scopes".
    pub default_scopes: Vec<String>,
    pub dcr_enabled: bool,
    pub cimd_enabled: bool,
    /// Hosts (`example.com`, `*.example.com`) whose CIMD client ids are accepted; empty = any.
    pub cimd_allowed_hosts: Vec<String>,
    /// Access-token lifetime in seconds.
    pub access_token_ttl: i64,
    /// Absolute lifetime of a refresh-token family in seconds.
    pub refresh_token_ttl: i64,
    /// A refresh token not used for this many seconds expires.
    pub refresh_idle_ttl: i64,
    pub created_at: i64,
    pub updated_at: i64,
}

impl Resource {
    /// The scopes a request without `scope` receives.
    pub fn effective_default_scopes(&self) -> Vec<String> {
        if self.default_scopes.is_empty() {
            self.scopes.iter().map(|s| s.name.clone()).collect()
        } else {
            self.default_scopes.clone()
        }
    }

    pub fn scope(&self, name: &str) -> Option<&ScopeDef> {
        self.scopes.iter().find(|s| s.name == name)
    }
}

/// How a client came to exist.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum ClientKind {
    /// Created by an operator (`moat client create`).
    PreRegistered,
    /// Registered anonymously through RFC 7591.
    Dynamic,
    /// A Client ID Metadata Document client (its id is an https URL).
    Cimd,
}

impl ClientKind {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::PreRegistered => "pre_registered",
            Self::Dynamic => "dynamic",
            Self::Cimd => "cimd",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "pre_registered" => Some(Self::PreRegistered),
            "dynamic" => Some(Self::Dynamic),
            "cimd" => Some(Self::Cimd),
            _ => None,
        }
    }
}

/// RFC 7591 §2 `token_endpoint_auth_method` values Moat supports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AuthMethod {
    None,
    ClientSecretBasic,
    ClientSecretPost,
    PrivateKeyJwt,
}

impl AuthMethod {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::None => "none",
            Self::ClientSecretBasic => "client_secret_basic",
            Self::ClientSecretPost => "client_secret_post",
            Self::PrivateKeyJwt => "private_key_jwt",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "none" => Some(Self::None),
            "client_secret_basic" => Some(Self::ClientSecretBasic),
            "client_secret_post" => Some(Self::ClientSecretPost),
            "private_key_jwt" => Some(Self::PrivateKeyJwt),
            _ => None,
        }
    }

    /// Whether the client holds a shared secret.
    pub fn uses_secret(self) -> bool {
        matches!(self, Self::ClientSecretBasic | Self::ClientSecretPost)
    }

    /// Whether the client is confidential (authenticates at the token endpoint).
    pub fn is_confidential(self) -> bool {
        !matches!(self, Self::None)
    }
}

/// Grant types Moat issues tokens for.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum GrantType {
    AuthorizationCode,
    RefreshToken,
    ClientCredentials,
}

impl GrantType {
    pub fn as_str(self) -> &'static str {
        match self {
            Self::AuthorizationCode => "authorization_code",
            Self::RefreshToken => "refresh_token",
            Self::ClientCredentials => "client_credentials",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "authorization_code" => Some(Self::AuthorizationCode),
            "refresh_token" => Some(Self::RefreshToken),
            "client_credentials" => Some(Self::ClientCredentials),
            _ => None,
        }
    }
}

/// An OAuth client of one resource.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Client {
    pub id: ClientId,
    pub resource_id: ResourceId,
    pub kind: ClientKind,
    pub name: String,
    /// Registered redirect URIs, exact strings.
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub auth_method: AuthMethod,
    /// Lowercase hex SHA-256 of the client secret (secrets are 256-bit random, so a fast hash
    /// is enough and keeps the token endpoint free of password hashing).
    pub secret_hash: Option<String>,
    /// RFC 7591 `client_secret_expires_at`; `0` means never.
    pub secret_expires_at: Option<i64>,
    /// The registration metadata as it is echoed back (RFC 7591 §3.2.1), unknown fields kept.
    pub metadata: serde_json::Value,
    /// For dynamic public clients: a digest of the normalised registration, so an identical
    /// re-registration returns the existing client instead of piling up.
    pub fingerprint: Option<String>,
    /// Overrides the resource's access-token lifetime for this client.
    pub access_token_ttl: Option<i64>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
    /// Last successful token issuance; never-used dynamic registrations expire.
    pub last_used_at: Option<i64>,
}

impl Client {
    pub fn allows_grant(&self, g: GrantType) -> bool {
        self.grant_types.contains(&g)
    }
}

/// A user account.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct User {
    pub id: UserId,
    /// Lowercased email address, unique.
    pub email: String,
    pub name: Option<String>,
    /// PHC-format argon2id hash; `None` for accounts that only sign in through an upstream IdP.
    #[serde(skip_serializing)]
    pub password_hash: Option<String>,
    pub disabled: bool,
    pub created_at: i64,
    pub updated_at: i64,
}

/// A browser login session (server side); the cookie carries a secret whose hash is `token_hash`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Session {
    /// Public identifier (`ses_…`), used as the `sid` claim.
    pub id: String,
    /// SHA-256 (hex) of the cookie secret.
    pub token_hash: String,
    pub user_id: UserId,
    pub auth_time: i64,
    pub created_at: i64,
    pub last_seen_at: i64,
    /// Absolute expiry.
    pub expires_at: i64,
}

/// An authorization request between `/authorize` and the redirect back to the client, held
/// server side so the login and consent pages never trust parameters from the browser.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationRequest {
    /// Random, unguessable (256 bits); appears in the login/consent URLs.
    pub id: String,
    /// SHA-256 (hex) of the browser-binding cookie that started the request.
    pub browser_hash: String,
    pub resource_id: ResourceId,
    pub client_id: ClientId,
    /// The `redirect_uri` exactly as the client sent it (or the single registered one).
    pub redirect_uri: String,
    /// Whether the client sent `redirect_uri` (RFC 6749 §4.1.3: then it must send it again).
    pub redirect_uri_explicit: bool,
    pub scopes: Vec<String>,
    pub state: Option<String>,
    pub code_challenge: String,
    /// The RFC 8707 `resource` as requested, or the registered server URL by default.
    pub resource_url: String,
    pub prompt: Option<String>,
    pub created_at: i64,
    pub expires_at: i64,
}

/// A user's remembered consent for one client at one resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Consent {
    pub user_id: UserId,
    pub client_id: ClientId,
    pub resource_id: ResourceId,
    pub scopes: Vec<String>,
    pub created_at: i64,
    pub updated_at: i64,
}

/// An issued authorization code (stored by hash only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AuthorizationCode {
    pub code_hash: String,
    pub resource_id: ResourceId,
    pub client_id: ClientId,
    pub user_id: UserId,
    pub session_id: Option<String>,
    pub redirect_uri: String,
    pub redirect_uri_explicit: bool,
    pub scopes: Vec<String>,
    pub code_challenge: String,
    pub resource_url: String,
    pub auth_time: i64,
    pub created_at: i64,
    pub expires_at: i64,
    pub consumed_at: Option<i64>,
    /// The refresh family the successful redemption created (revoked on a replay).
    pub family_id: Option<FamilyId>,
}

/// Every refresh token descended from one grant. Revoking the family revokes them all.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshFamily {
    pub id: FamilyId,
    pub resource_id: ResourceId,
    pub client_id: ClientId,
    /// `None` only for grants without a user (never issued today: client credentials get no
    /// refresh token).
    pub user_id: Option<UserId>,
    pub session_id: Option<String>,
    pub scopes: Vec<String>,
    pub auth_time: Option<i64>,
    pub created_at: i64,
    /// Absolute expiry of the whole family.
    pub expires_at: i64,
    pub revoked_at: Option<i64>,
}

/// One refresh token (stored by hash only).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RefreshToken {
    pub token_hash: String,
    pub family_id: FamilyId,
    pub parent_hash: Option<String>,
    pub created_at: i64,
    /// Idle expiry (never later than the family's absolute expiry).
    pub expires_at: i64,
    /// When it was exchanged for its successor.
    pub rotated_at: Option<i64>,
}

/// What a new refresh family starts with. Every authorization-code redemption creates one: it is
/// the grant the access tokens' `jti` names, so revoking it (code replay, client or user disabled)
/// also deactivates them. A client without the `refresh_token` grant gets a family with no token.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewFamily {
    pub id: FamilyId,
    /// Hash of the first refresh token; `None` when no refresh token is issued.
    pub first_token_hash: Option<String>,
    /// Absolute family expiry.
    pub expires_at: i64,
    /// Idle expiry of the first token.
    pub token_expires_at: i64,
}

/// A signing key as stored: the private key encrypted under the master key.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SigningKeyRecord {
    pub kid: String,
    /// `ES256`, `EdDSA` or `RS256`.
    pub alg: String,
    /// AEAD-sealed PKCS#8 private key (nonce || ciphertext || tag).
    pub encrypted_private_key: Vec<u8>,
    /// The public JWK (JSON text) exactly as published.
    pub public_jwk: String,
    pub created_at: i64,
    /// The key signs from this time on (published earlier, so caches learn it first).
    pub activates_at: i64,
    /// Set when a newer key takes over; the key no longer signs from then on.
    pub retires_at: Option<i64>,
    /// When it leaves the JWKS (every token it signed has expired by then).
    pub unpublish_at: Option<i64>,
}

/// One audit-log entry.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct AuditEvent {
    /// Assigned by the store; `0` before insertion.
    pub id: i64,
    pub at: i64,
    /// Dotted kind, e.g. `login.succeeded`, `token.issued`, `client.registered`.
    pub kind: String,
    pub resource_id: Option<String>,
    pub client_id: Option<String>,
    pub user_id: Option<String>,
    /// Source address of the request, when there was one.
    pub ip: Option<String>,
    /// Event-specific fields; never secrets or tokens.
    pub detail: serde_json::Value,
}

impl AuditEvent {
    pub fn new(kind: &str, at: i64) -> Self {
        Self {
            id: 0,
            at,
            kind: kind.to_owned(),
            resource_id: None,
            client_id: None,
            user_id: None,
            ip: None,
            detail: serde_json::Value::Null,
        }
    }
}
