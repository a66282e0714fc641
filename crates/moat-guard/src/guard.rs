//! [`Guard`]: the resource-server policy of one MCP endpoint, independent of any web
//! framework: where the protected resource metadata lives (RFC 9728 §3.1 path insertion), how a
//! bearer token is taken from a request (RFC 6750 §2.1, header only), which scopes a request
//! needs ([`ScopePolicy`]) and what a rejection looks like (RFC 6750 §3 challenge). The `axum`
//! feature wraps it in a tower layer.

use std::collections::BTreeSet;
use std::sync::Arc;
use std::time::Duration;

use http::{HeaderMap, HeaderValue, StatusCode, Uri, header};
use serde_json::Value;

use crate::challenge::BearerChallenge;
use crate::claims::Claims;
use crate::error::{ConfigError, ValidationError};
use crate::metadata::ProtectedResourceMetadata;
use crate::policy::ScopePolicy;
use crate::scope::is_scope_token;
use crate::session::SessionBindings;
use crate::validator::Validator;

/// Settings of a [`Guard`].
#[derive(Debug, Clone)]
pub struct GuardConfig {
    /// The exact MCP endpoint URL as registered in Moat (`--server-url`), e.g.
    /// `https://mcp.example.com/mcp`. Published verbatim as the metadata `resource`.
    pub resource: String,
    /// Issuers published in `authorization_servers`; empty means the validator's issuers.
    pub authorization_servers: Vec<String>,
    /// `scopes_supported` of the metadata: the minimal set for basic use. `offline_access` is
    /// always left out. Empty means every scope of the policy.
    pub scopes_supported: Vec<String>,
    /// `scope` of the 401 challenge (what a client should ask for first); `None` means
    /// `scopes_supported`.
    pub challenge_scopes: Option<Vec<String>>,
    /// `resource_name` of the metadata.
    pub resource_name: Option<String>,
    /// Which scopes each request needs.
    pub policy: ScopePolicy,
    /// Largest request body buffered to read the JSON-RPC method and tool name (bigger bodies
    /// get `413`).
    pub max_body_bytes: usize,
    /// Remove the `Authorization` header before the request reaches the MCP server, so no tool
    /// can pass the client's token on (MCP spec: no token passthrough). On by default.
    pub strip_authorization: bool,
    /// Overrides the metadata URL put in challenges (default: the path-inserted well-known URL
    /// of `resource`).
    pub resource_metadata_url: Option<String>,
    /// Bind each MCP session (`Mcp-Session-Id`) to the `(iss, sub)` of the token that created
    /// it, and answer `404` to a request naming it under another `(iss, sub)` (MCP security best
    /// practices, Session Hijacking: servers SHOULD bind session IDs to user-specific
    /// information). Done by the tower layer. On by default.
    pub bind_sessions: bool,
    /// Most session bindings remembered; the least recently used is forgotten first (a
    /// forgotten session is unknown to the guard and the server decides). 0 disables binding.
    pub max_bound_sessions: usize,
    /// Most session bindings remembered per `(iss, sub)`; that user's least recently used is
    /// forgotten first, so one account opening sessions in a loop cannot push other users'
    /// bindings out. 0 disables binding.
    pub max_bound_sessions_per_user: usize,
    /// A binding without a request for this long is forgotten. Keep it longer than the
    /// server's own session idle timeout (rmcp's default keep-alive is 5 minutes).
    pub session_idle_ttl: Duration,
}

impl Default for GuardConfig {
    /// Defaults with an empty `resource` (which [`Guard::new`] refuses): for struct-update
    /// syntax, `GuardConfig { resource, policy, ..Default::default() }`.
    fn default() -> Self {
        Self::new(String::new())
    }
}

impl GuardConfig {
    /// Defaults for the MCP endpoint at `resource`.
    pub fn new(resource: impl Into<String>) -> Self {
        Self {
            resource: resource.into(),
            authorization_servers: Vec::new(),
            scopes_supported: Vec::new(),
            challenge_scopes: None,
            resource_name: None,
            policy: ScopePolicy::new(),
            max_body_bytes: 4 * 1024 * 1024,
            strip_authorization: true,
            resource_metadata_url: None,
            bind_sessions: true,
            max_bound_sessions: 100_000,
            max_bound_sessions_per_user: 1_000,
            session_idle_ttl: Duration::from_secs(24 * 60 * 60),
        }
    }

    /// Sets the scope policy.
    pub fn with_policy(mut self, policy: ScopePolicy) -> Self {
        self.policy = policy;
        self
    }

    /// Sets `scopes_supported`.
    pub fn with_scopes_supported<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.scopes_supported = scopes.into_iter().map(Into::into).collect();
        self
    }

    /// Sets the scopes of the 401 challenge.
    pub fn with_challenge_scopes<I, S>(mut self, scopes: I) -> Self
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        self.challenge_scopes = Some(scopes.into_iter().map(Into::into).collect());
        self
    }

    /// Sets `resource_name`.
    pub fn with_resource_name(mut self, name: impl Into<String>) -> Self {
        self.resource_name = Some(name.into());
        self
    }

    /// Sets the body buffering limit.
    pub fn with_max_body_bytes(mut self, bytes: usize) -> Self {
        self.max_body_bytes = bytes;
        self
    }

    /// Turns MCP session binding on (the default) or off (see [`GuardConfig::bind_sessions`]).
    pub fn with_session_binding(mut self, enabled: bool) -> Self {
        self.bind_sessions = enabled;
        self
    }

    /// Sets the session binding limits: total bindings, bindings per `(iss, sub)`, and the idle
    /// time after which a binding is forgotten.
    pub fn with_session_limits(mut self, max_sessions: usize, max_per_user: usize, idle_ttl: Duration) -> Self {
        self.max_bound_sessions = max_sessions;
        self.max_bound_sessions_per_user = max_per_user;
        self.session_idle_ttl = idle_ttl;
        self
    }
}

/// Why a request was refused.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Rejection {
    /// No bearer token (`401`, challenge without error code, RFC 6750 §3.1).
    MissingToken,
    /// Malformed request, e.g. a token in the query string or two `Authorization` headers
    /// (`401 invalid_request`; 401 rather than RFC 6750's suggested 400 so that MCP clients run
    /// their discovery and retry with the header).
    InvalidRequest(&'static str),
    /// The token failed validation (`401 invalid_token`).
    InvalidToken(ValidationError),
    /// Valid token, missing scopes (`403 insufficient_scope`); `scopes` is what the challenge
    /// names: everything the operation needs plus what the client already holds of ours.
    InsufficientScope {
        /// Scopes for the challenge.
        scopes: Vec<String>,
        /// Human-readable detail.
        description: String,
    },
    /// Keys could not be fetched and none are cached (`503`).
    KeysUnavailable,
    /// The body is larger than the buffering limit (`413`).
    PayloadTooLarge,
    /// The body could not be read, or the scope policy must read it and it is not a JSON-RPC
    /// message or batch (`400`).
    BadRequest(&'static str),
    /// The request names an MCP session bound to another `(iss, sub)` (`404`, with the body
    /// rmcp sends for an unknown session: the MCP transport's answer for a session the server
    /// does not know, so nothing about other users' sessions leaks).
    SessionNotFound,
}

/// The bearer token of a request, from the `Authorization` header only (RFC 6750 §2.1).
/// `Ok(None)`: no credentials of the Bearer kind at all.
pub fn bearer_token(headers: &HeaderMap) -> Result<Option<&str>, Rejection> {
    let mut values = headers.get_all(header::AUTHORIZATION).iter();
    let Some(value) = values.next() else {
        return Ok(None);
    };
    if values.next().is_some() {
        return Err(Rejection::InvalidRequest("more than one Authorization header"));
    }
    let value = value.to_str().map_err(|_| Rejection::InvalidRequest("Authorization header is not ASCII"))?;
    let (scheme, rest) = value.split_once(' ').unwrap_or((value, ""));
    // RFC 7235 §2.1: the auth-scheme is case-insensitive.
    if !scheme.eq_ignore_ascii_case("bearer") {
        return Ok(None);
    }
    let token = rest.trim_matches(' ');
    if token.is_empty() {
        return Err(Rejection::InvalidRequest("empty bearer token"));
    }
    // RFC 6750 §2.1 b64token: no spaces inside.
    if token.contains(' ') {
        return Err(Rejection::InvalidRequest("bearer token contains spaces"));
    }
    Ok(Some(token))
}

/// True when the query string carries `access_token` (RFC 6750 §2.3, which the MCP
/// authorization spec forbids: tokens only in the header).
pub fn query_has_access_token(uri: &Uri) -> bool {
    uri.query().is_some_and(|q| url::form_urlencoded::parse(q.as_bytes()).any(|(k, _)| k == "access_token"))
}

/// The policy of one protected MCP endpoint. Cheap to clone.
#[derive(Clone)]
pub struct Guard {
    inner: Arc<GuardInner>,
}

struct GuardInner {
    validator: Validator,
    config: GuardConfig,
    metadata: ProtectedResourceMetadata,
    metadata_json: String,
    metadata_url: String,
    metadata_paths: Vec<String>,
    challenge_scopes: Vec<String>,
    supported: BTreeSet<String>,
    /// `None` when session binding is off.
    sessions: Option<SessionBindings>,
}

impl std::fmt::Debug for Guard {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Guard")
            .field("resource", &self.inner.config.resource)
            .field("metadata_url", &self.inner.metadata_url)
            .finish_non_exhaustive()
    }
}

impl Guard {
    /// Builds the guard of the endpoint `config.resource`, validating tokens with `validator`.
    pub fn new(validator: Validator, config: GuardConfig) -> Result<Self, ConfigError> {
        let bad = |what: &'static str, url: &str| ConfigError::BadUrl { what, url: url.to_owned() };
        if crate::url::canonical_resource(&config.resource).is_none() {
            return Err(bad("resource", &config.resource));
        }
        config.policy.validate()?;
        let mut scopes_supported: Vec<String> = if config.scopes_supported.is_empty() {
            config.policy.all_scopes().into_iter().collect()
        } else {
            config.scopes_supported.clone()
        };
        scopes_supported.retain(|s| s != "offline_access");
        if let Some(bad_scope) =
            scopes_supported.iter().chain(config.challenge_scopes.iter().flatten()).find(|s| !is_scope_token(s))
        {
            return Err(ConfigError::BadScope(bad_scope.clone()));
        }
        let authorization_servers = if config.authorization_servers.is_empty() {
            validator.issuers().map(str::to_owned).collect()
        } else {
            config.authorization_servers.clone()
        };
        let mut metadata =
            ProtectedResourceMetadata::new(config.resource.clone(), authorization_servers, scopes_supported.clone());
        metadata.resource_name = config.resource_name.clone();
        let metadata_json = serde_json::to_string(&metadata).map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        let metadata_url = match &config.resource_metadata_url {
            Some(u) => u.clone(),
            None => crate::url::well_known_url(&config.resource, "oauth-protected-resource")
                .ok_or_else(|| bad("resource", &config.resource))?,
        };
        let path = crate::url::well_known_path(&config.resource, "oauth-protected-resource")
            .ok_or_else(|| bad("resource", &config.resource))?;
        let root = "/.well-known/oauth-protected-resource".to_owned();
        let metadata_paths = if path == root { vec![root] } else { vec![path, root] };
        let challenge_scopes = config.challenge_scopes.clone().unwrap_or_else(|| scopes_supported.clone());
        let sessions = if config.bind_sessions {
            SessionBindings::new(config.max_bound_sessions, config.max_bound_sessions_per_user, config.session_idle_ttl)
        } else {
            None
        };
        Ok(Self {
            inner: Arc::new(GuardInner {
                validator,
                // "Ours": what the metadata advertises plus every scope the policy names (the
                // metadata may advertise only the minimal set, e.g. todo:read).
                supported: scopes_supported.into_iter().chain(config.policy.all_scopes()).collect(),
                config,
                metadata,
                metadata_json,
                metadata_url,
                metadata_paths,
                challenge_scopes,
                sessions,
            }),
        })
    }

    /// The validator.
    pub fn validator(&self) -> &Validator {
        &self.inner.validator
    }

    /// The configuration.
    pub fn config(&self) -> &GuardConfig {
        &self.inner.config
    }

    /// The protected resource metadata document.
    pub fn metadata(&self) -> &ProtectedResourceMetadata {
        &self.inner.metadata
    }

    /// The metadata document as JSON.
    pub fn metadata_json(&self) -> &str {
        &self.inner.metadata_json
    }

    /// The metadata URL challenges point to.
    pub fn resource_metadata_url(&self) -> &str {
        &self.inner.metadata_url
    }

    /// The session bindings, when on.
    pub(crate) fn session_bindings(&self) -> Option<&SessionBindings> {
        self.inner.sessions.as_ref()
    }

    /// Paths the metadata is served at: the path-inserted one for the endpoint and the root one
    /// (RFC 9728 §3.1; MCP clients try both).
    pub fn metadata_paths(&self) -> &[String] {
        &self.inner.metadata_paths
    }

    /// Checks the request head: no token in the query, a bearer token in the header, a valid
    /// token. Returns the claims (scopes are checked by [`Guard::check_scopes`]).
    pub async fn authenticate(&self, uri: &Uri, headers: &HeaderMap) -> Result<Claims, Rejection> {
        if query_has_access_token(uri) {
            return Err(Rejection::InvalidRequest("access tokens are accepted only in the Authorization header"));
        }
        let Some(token) = bearer_token(headers)? else {
            return Err(Rejection::MissingToken);
        };
        self.inner.validator.validate(token).await.map_err(|e| match e {
            ValidationError::KeysUnavailable(reason) => {
                tracing::warn!(%reason, "moat-guard: cannot validate tokens, keys unavailable");
                Rejection::KeysUnavailable
            }
            other => {
                tracing::debug!(error = %other, "moat-guard: token rejected");
                Rejection::InvalidToken(other)
            }
        })
    }

    /// True when the request body must be read to decide its scopes.
    pub fn needs_body(&self) -> bool {
        self.inner.config.policy.needs_body()
    }

    /// Checks the scopes a request needs against `claims`, for a `POST` whose raw JSON-RPC body
    /// is `body` (read it only when [`Guard::needs_body`]).
    ///
    /// Fails closed: a body that is not JSON, or JSON but not a JSON-RPC message or batch
    /// (JSON-RPC 2.0 §4, §6), is refused with [`Rejection::BadRequest`] (`400`) whatever the
    /// token holds — which tool it would call cannot be known, so it must not reach the server
    /// with only the base scopes checked.
    pub fn check_body_scopes(&self, claims: &Claims, body: &[u8]) -> Result<(), Rejection> {
        let parsed: Value = serde_json::from_slice(body)
            .map_err(|_| Rejection::BadRequest("request body is not JSON, so its required scopes cannot be decided"))?;
        self.check_scopes(claims, Some(&parsed))
    }

    /// Checks the scopes a request needs against `claims`. `body` is the parsed JSON-RPC body,
    /// or `None` for a request without one (e.g. the `GET` of the SSE stream); a `body` that is
    /// not a JSON-RPC message or batch is refused with [`Rejection::BadRequest`] (fail closed,
    /// see [`Guard::check_body_scopes`]).
    pub fn check_scopes(&self, claims: &Claims, body: Option<&Value>) -> Result<(), Rejection> {
        if body.is_some_and(|b| crate::policy::json_rpc_messages(b).is_none()) {
            return Err(Rejection::BadRequest(
                "request body is not a JSON-RPC message or batch, so its required scopes cannot be decided",
            ));
        }
        let needed = self.inner.config.policy.needed_for(body);
        let needed: Vec<String> = needed.into_iter().collect();
        match claims.require_scopes(&needed) {
            Ok(()) => Ok(()),
            Err(e) => {
                // Name everything the operation needs plus the scopes of ours the client already
                // holds, so a client that requests exactly the challenged scopes does not lose
                // what it had (MCP spec, scope challenge handling).
                let mut scopes: BTreeSet<String> = needed.into_iter().collect();
                scopes.extend(claims.scopes().iter().filter(|s| self.inner.supported.contains(*s)).cloned());
                Err(Rejection::InsufficientScope { scopes: scopes.into_iter().collect(), description: e.to_string() })
            }
        }
    }

    /// The challenge for a rejection (none for 413/503).
    pub fn challenge(&self, rejection: &Rejection) -> Option<BearerChallenge> {
        let url = self.inner.metadata_url.clone();
        let scopes = &self.inner.challenge_scopes;
        match rejection {
            Rejection::MissingToken => Some(BearerChallenge::missing_token(url, scopes)),
            Rejection::InvalidRequest(d) => Some(BearerChallenge::invalid_request(url, scopes, *d)),
            Rejection::InvalidToken(e) => Some(BearerChallenge::invalid_token(url, scopes, e.to_string())),
            Rejection::InsufficientScope { scopes, description } => {
                Some(BearerChallenge::insufficient_scope(url, scopes, description.clone()))
            }
            Rejection::KeysUnavailable
            | Rejection::PayloadTooLarge
            | Rejection::BadRequest(_)
            | Rejection::SessionNotFound => None,
        }
    }

    /// The HTTP response for a rejection: status, `WWW-Authenticate`, a small JSON body
    /// (`error`, `error_description`), `Cache-Control: no-store`, and
    /// `Access-Control-Expose-Headers: WWW-Authenticate` so browser clients can read the
    /// challenge. [`Rejection::SessionNotFound`] is the exception: a bare `404` with rmcp's
    /// unknown-session body: what the server answers a well-formed request for an unknown session.
    pub fn rejection_response(&self, rejection: &Rejection) -> http::Response<String> {
        if matches!(rejection, Rejection::SessionNotFound) {
            let mut response = http::Response::new(crate::session::SESSION_NOT_FOUND_BODY.to_owned());
            *response.status_mut() = StatusCode::NOT_FOUND;
            return response;
        }
        let (status, error, description) = match rejection {
            // RFC 6750 §3.1: no OAuth error code without authentication information.
            Rejection::MissingToken => {
                (StatusCode::UNAUTHORIZED, "unauthorized", "an access token is required".to_owned())
            }
            Rejection::InvalidRequest(d) => (StatusCode::UNAUTHORIZED, "invalid_request", (*d).to_owned()),
            Rejection::InvalidToken(e) => (StatusCode::UNAUTHORIZED, "invalid_token", e.to_string()),
            Rejection::InsufficientScope { description, .. } => {
                (StatusCode::FORBIDDEN, "insufficient_scope", description.clone())
            }
            Rejection::KeysUnavailable => (
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the authorization server's signing keys are unavailable; retry later".to_owned(),
            ),
            Rejection::PayloadTooLarge => {
                (StatusCode::PAYLOAD_TOO_LARGE, "invalid_request", "request body too large".to_owned())
            }
            Rejection::BadRequest(d) => (StatusCode::BAD_REQUEST, "invalid_request", (*d).to_owned()),
            // Answered above; kept for an exhaustive match.
            Rejection::SessionNotFound => (StatusCode::NOT_FOUND, "not_found", "session not found".to_owned()),
        };
        let body = serde_json::json!({
            "error": error,
            "error_description": crate::challenge::sanitize_description(&description),
        })
        .to_string();
        let mut response = http::Response::new(body);
        *response.status_mut() = status;
        let headers = response.headers_mut();
        headers.insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
        headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
        headers.insert(header::ACCESS_CONTROL_EXPOSE_HEADERS, HeaderValue::from_static("WWW-Authenticate"));
        if let Some(challenge) = self.challenge(rejection)
            && let Ok(v) = HeaderValue::from_str(&challenge.header_value())
        {
            headers.insert(header::WWW_AUTHENTICATE, v);
        }
        if matches!(rejection, Rejection::KeysUnavailable) {
            headers.insert(header::RETRY_AFTER, HeaderValue::from_static("5"));
        }
        response
    }
}

/// The claims the guard put into a request's extensions (e.g. from the `http::request::Parts`
/// rmcp hands to tool handlers).
pub fn claims_from_extensions(extensions: &http::Extensions) -> Option<&Claims> {
    extensions.get::<Claims>()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(values: &[&str]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for v in values {
            if let Ok(v) = HeaderValue::from_str(v) {
                h.append(header::AUTHORIZATION, v);
            }
        }
        h
    }

    #[test]
    fn bearer_extraction() {
        assert_eq!(bearer_token(&headers(&[])), Ok(None));
        assert_eq!(bearer_token(&headers(&["Bearer abc"])), Ok(Some("abc")));
        assert_eq!(bearer_token(&headers(&["bearer abc"])), Ok(Some("abc")));
        assert_eq!(bearer_token(&headers(&["BEARER  abc "])), Ok(Some("abc")));
        assert_eq!(bearer_token(&headers(&["Basic dXNlcjpw"])), Ok(None));
        assert!(bearer_token(&headers(&["Bearer"])).is_err());
        assert!(bearer_token(&headers(&["Bearer a b"])).is_err());
        assert!(bearer_token(&headers(&["Bearer a", "Bearer b"])).is_err());
    }

    #[test]
    fn step_up_challenge_keeps_the_scopes_already_held() {
        let validator = match Validator::new(crate::ValidatorConfig::new(
            "https://moat.example/resources/res_1",
            "https://mcp.example/mcp",
        )) {
            Ok(v) => v,
            Err(e) => unreachable!("config: {e}"),
        };
        // The metadata advertises only the minimal scope; the policy names more.
        let guard = Guard::new(
            validator,
            GuardConfig::new("https://mcp.example/mcp")
                .with_policy(ScopePolicy::new().tool("add", ["todo:write"]).tool("purge", ["todo:admin"]))
                .with_scopes_supported(["todo:read"]),
        );
        let Ok(guard) = guard else { unreachable!("guard config") };
        let claims = serde_json::json!({"iss":"i","sub":"s","aud":"a","client_id":"c","jti":"j",
            "iat":1,"exp":2,"scope":"todo:read todo:write openid"});
        let serde_json::Value::Object(raw) = claims else { unreachable!() };
        let claims = Claims::from_verified(raw, vec!["a".into()], &crate::ScopeHierarchy::new());
        let Ok(claims) = claims else { unreachable!("claims") };
        let body = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"purge"}});
        match guard.check_scopes(&claims, Some(&body)) {
            Err(Rejection::InsufficientScope { scopes, .. }) => {
                // Needed todo:admin, plus todo:read and todo:write already held; not openid.
                assert_eq!(scopes, ["todo:admin", "todo:read", "todo:write"]);
            }
            other => unreachable!("expected insufficient scope, got {other:?}"),
        }
        let add = serde_json::json!({"jsonrpc":"2.0","id":1,"method":"tools/call","params":{"name":"add"}});
        assert_eq!(guard.check_scopes(&claims, Some(&add)), Ok(()));
    }

    #[test]
    fn query_tokens_are_detected() {
        let uri = |s: &str| s.parse::<Uri>().unwrap_or_default();
        assert!(query_has_access_token(&uri("/mcp?access_token=x")));
        assert!(query_has_access_token(&uri("/mcp?a=1&access_token=")));
        assert!(!query_has_access_token(&uri("/mcp?token=x")));
        assert!(!query_has_access_token(&uri("/mcp")));
    }
}
