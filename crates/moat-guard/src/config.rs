//! [`ValidatorConfig`]: who may issue tokens for this resource, which audiences it answers to,
//! where the keys are, and the limits of the key and token caches.

use std::time::Duration;

use crate::jwt::Algorithm;
use crate::scope::ScopeHierarchy;

/// Settings of a [`crate::Validator`]. Start from [`ValidatorConfig::new`] (or `Default` with
/// struct-update syntax) and adjust fields.
#[derive(Debug, Clone)]
pub struct ValidatorConfig {
    /// Accepted `iss` values, compared as exact strings (RFC 9068 §4). For Moat this is the
    /// resource's issuer, `{base}/resources/{res_id}`.
    pub issuers: Vec<String>,
    /// Accepted audiences: this MCP server's URL (compared canonically: lowercase scheme and
    /// host, default port dropped, trailing slash ignored) and/or its `res_…` id (exact).
    pub audiences: Vec<String>,
    /// Where the signing keys are (Moat: `{base}/keys`). When `None`, each issuer's RFC 8414
    /// metadata (`{origin}/.well-known/oauth-authorization-server{issuer-path}`) is read for its
    /// `jwks_uri` on first use.
    pub jwks_url: Option<String>,
    /// Clock skew tolerated on `exp`, `nbf` and `iat`.
    pub leeway: Duration,
    /// Accepted JWS algorithms. HMAC and `none` cannot be expressed.
    pub algorithms: Vec<Algorithm>,
    /// Scope implications applied by [`crate::Claims::has_scope`] (opt-in; empty by default).
    pub scope_hierarchy: ScopeHierarchy,
    /// How long a fetched key set is fresh when the response has no usable
    /// `Cache-Control: max-age`.
    pub jwks_ttl: Duration,
    /// Lower bound applied to the key set's `max-age` (also used for `no-cache`/`no-store`).
    /// Whatever its value, a stale set is refetched at most once a second (or once per
    /// `jwks_refetch_interval`, if that is shorter), so 0 cannot disable the refetch limit.
    pub jwks_min_ttl: Duration,
    /// Upper bound applied to the key set's `max-age`.
    pub jwks_max_ttl: Duration,
    /// Least time between two key-set fetches triggered by an unknown `kid` while the cached set
    /// is fresh, and between two attempts after a failed fetch. A stale set may always be
    /// refetched once (still coalesced), so a key Moat pre-published is found.
    pub jwks_refetch_interval: Duration,
    /// Timeout of one metadata or key-set request.
    pub http_timeout: Duration,
    /// Largest key-set or metadata document read, in bytes.
    pub max_document_bytes: usize,
    /// How many verified tokens to remember (0 disables the cache).
    pub token_cache_capacity: usize,
    /// Largest token accepted, in bytes; longer ones are refused before parsing.
    pub max_token_bytes: usize,
    /// Allow plain-http issuer and key URLs for non-loopback hosts (e.g. a container network).
    /// Loopback (`127.0.0.1`, `[::1]`, `localhost`) is always allowed over http.
    pub allow_insecure_http: bool,
}

impl Default for ValidatorConfig {
    fn default() -> Self {
        Self {
            issuers: Vec::new(),
            audiences: Vec::new(),
            jwks_url: None,
            leeway: Duration::from_secs(30),
            algorithms: Algorithm::defaults(),
            scope_hierarchy: ScopeHierarchy::new(),
            jwks_ttl: Duration::from_secs(300),
            jwks_min_ttl: Duration::from_secs(30),
            jwks_max_ttl: Duration::from_secs(24 * 3600),
            jwks_refetch_interval: Duration::from_secs(10),
            http_timeout: Duration::from_secs(10),
            max_document_bytes: 256 * 1024,
            token_cache_capacity: 10_000,
            max_token_bytes: 8 * 1024,
            allow_insecure_http: false,
        }
    }
}

impl ValidatorConfig {
    /// One issuer and one audience (typically the MCP server URL), defaults for the rest.
    pub fn new(issuer: impl Into<String>, audience: impl Into<String>) -> Self {
        Self { issuers: vec![issuer.into()], audiences: vec![audience.into()], ..Self::default() }
    }

    /// Adds an accepted audience (e.g. the `res_…` id next to the URL).
    pub fn with_audience(mut self, audience: impl Into<String>) -> Self {
        self.audiences.push(audience.into());
        self
    }

    /// Adds an accepted issuer.
    pub fn with_issuer(mut self, issuer: impl Into<String>) -> Self {
        self.issuers.push(issuer.into());
        self
    }

    /// Sets the key-set URL instead of discovering it from the issuer's metadata.
    pub fn with_jwks_url(mut self, url: impl Into<String>) -> Self {
        self.jwks_url = Some(url.into());
        self
    }

    /// Sets the clock-skew leeway.
    pub fn with_leeway(mut self, leeway: Duration) -> Self {
        self.leeway = leeway;
        self
    }

    /// Sets the accepted algorithms.
    pub fn with_algorithms(mut self, algorithms: impl IntoIterator<Item = Algorithm>) -> Self {
        self.algorithms = algorithms.into_iter().collect();
        self
    }

    /// Sets the scope hierarchy.
    pub fn with_scope_hierarchy(mut self, hierarchy: ScopeHierarchy) -> Self {
        self.scope_hierarchy = hierarchy;
        self
    }

    /// Sets the token cache capacity (0 disables it).
    pub fn with_token_cache_capacity(mut self, capacity: usize) -> Self {
        self.token_cache_capacity = capacity;
        self
    }

    /// Sets the minimum interval between refetches of the key set.
    pub fn with_jwks_refetch_interval(mut self, interval: Duration) -> Self {
        self.jwks_refetch_interval = interval;
        self
    }

    /// Sets default, minimum and maximum key-set freshness.
    pub fn with_jwks_ttl(mut self, default: Duration, min: Duration, max: Duration) -> Self {
        self.jwks_ttl = default;
        self.jwks_min_ttl = min;
        self.jwks_max_ttl = max;
        self
    }

    /// Allows plain http to non-loopback hosts.
    pub fn with_insecure_http(mut self, allow: bool) -> Self {
        self.allow_insecure_http = allow;
        self
    }
}
