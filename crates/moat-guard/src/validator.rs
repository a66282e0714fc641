//! [`Validator`]: checks an RFC 9068 JWT access token locally against the issuer's cached keys.
//!
//! Order of checks: size → compact JWS shape → header (`alg` allowed, `typ` at+jwt, `kid`) →
//! payload JSON → `iss` exactly one of the configured issuers (this only selects whose keys to
//! use; it is covered by the signature checked next) → key for `kid` (its type, curve and `alg`
//! agree with the header) → signature → `aud` → `exp`/`nbf`/`iat` with leeway → the remaining
//! RFC 9068 §2.2 claims. A forged token is thus reported as a bad signature, never as "expired".

use std::sync::Arc;
use std::time::{SystemTime, UNIX_EPOCH};

use serde_json::{Map, Value};
use url::Url;

use crate::cache::{self, TokenCache};
use crate::claims::{self, Claims};
use crate::config::ValidatorConfig;
use crate::error::{ConfigError, ValidationError};
use crate::jwk::KeyEntry;
use crate::jwt::{self, Algorithm};
use crate::keys::{KeySettings, KeySource, Location, Lookup};
use crate::scope::ScopeHierarchy;

/// Validates access tokens. Cheap to clone (an `Arc` inside); share one per process.
#[derive(Clone)]
pub struct Validator {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Validator {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Validator")
            .field("issuers", &self.inner.issuers)
            .field("audiences", &self.inner.audience_urls)
            .finish_non_exhaustive()
    }
}

struct Inner {
    /// Configured issuers, each with the index of its key source.
    issuers: Vec<(String, usize)>,
    sources: Vec<Arc<KeySource>>,
    /// Canonical audience URLs.
    audience_urls: Vec<String>,
    /// `res_…` ids, compared exactly.
    audience_ids: Vec<String>,
    leeway_secs: i64,
    algorithms: Vec<Algorithm>,
    hierarchy: ScopeHierarchy,
    cache: Option<TokenCache>,
    max_token_bytes: usize,
}

/// Checks that `url` is an absolute http(s) URL, https unless loopback or explicitly allowed.
pub(crate) fn check_url(url: &str, what: &'static str, allow_http: bool) -> Result<Url, ConfigError> {
    let parsed = Url::parse(url).map_err(|_| ConfigError::BadUrl { what, url: url.to_owned() })?;
    match parsed.scheme() {
        "https" => {}
        "http" if allow_http || crate::url::is_loopback_url(&parsed) => {}
        "http" => {
            return Err(ConfigError::InsecureUrl { what, url: url.to_owned() });
        }
        _ => {
            return Err(ConfigError::BadUrl { what, url: url.to_owned() });
        }
    }
    if parsed.host_str().is_none() {
        return Err(ConfigError::BadUrl { what, url: url.to_owned() });
    }
    Ok(parsed)
}

fn now_ms() -> i128 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i128).unwrap_or(0)
}

impl Validator {
    /// Builds a validator. Fetches nothing: keys are loaded on first use (so a server starts
    /// while Moat is down). Call [`Validator::refresh_keys`] to warm up if you like.
    pub fn new(config: ValidatorConfig) -> Result<Self, ConfigError> {
        if config.issuers.is_empty() {
            return Err(ConfigError::NoIssuer);
        }
        if config.audiences.is_empty() {
            return Err(ConfigError::NoAudience);
        }
        if config.algorithms.is_empty() {
            return Err(ConfigError::NoAlgorithm);
        }
        let mut audience_urls = Vec::new();
        let mut audience_ids = Vec::new();
        for aud in &config.audiences {
            if aud.starts_with("res_") && !aud.contains(':') {
                audience_ids.push(aud.clone());
            } else if let Some(c) = crate::url::canonical_resource(aud) {
                audience_urls.push(c);
            } else {
                return Err(ConfigError::BadAudience(aud.clone()));
            }
        }
        let allow_http = config.allow_insecure_http;
        let http = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .timeout(config.http_timeout)
            .connect_timeout(config.http_timeout)
            .user_agent(concat!("moat-guard/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(|e| ConfigError::HttpClient(e.to_string()))?;
        let settings = KeySettings {
            default_ttl: config.jwks_ttl,
            min_ttl: config.jwks_min_ttl,
            max_ttl: config.jwks_max_ttl,
            refetch_interval: config.jwks_refetch_interval,
            max_document_bytes: config.max_document_bytes,
            allow_insecure_http: allow_http,
        };
        let mut sources = Vec::new();
        let mut issuers = Vec::new();
        if let Some(jwks) = &config.jwks_url {
            check_url(jwks, "jwks_url", allow_http)?;
            sources.push(KeySource::new(http.clone(), Location::Jwks(jwks.clone()), settings.clone()));
        }
        for issuer in &config.issuers {
            check_url(issuer, "issuer", allow_http)?;
            let index = if config.jwks_url.is_some() {
                0
            } else {
                let metadata_url = crate::url::well_known_url(issuer, "oauth-authorization-server")
                    .ok_or_else(|| ConfigError::BadUrl { what: "issuer", url: issuer.clone() })?;
                sources.push(KeySource::new(
                    http.clone(),
                    Location::Metadata { issuer: issuer.clone(), metadata_url },
                    settings.clone(),
                ));
                sources.len() - 1
            };
            issuers.push((issuer.clone(), index));
        }
        Ok(Self {
            inner: Arc::new(Inner {
                issuers,
                sources,
                audience_urls,
                audience_ids,
                leeway_secs: i64::try_from(config.leeway.as_secs()).unwrap_or(i64::MAX / 4),
                algorithms: config.algorithms,
                hierarchy: config.scope_hierarchy,
                cache: TokenCache::new(config.token_cache_capacity),
                max_token_bytes: config.max_token_bytes,
            }),
        })
    }

    /// The scope hierarchy claims are checked against.
    pub fn scope_hierarchy(&self) -> &ScopeHierarchy {
        &self.inner.hierarchy
    }

    /// The configured issuers.
    pub fn issuers(&self) -> impl Iterator<Item = &str> {
        self.inner.issuers.iter().map(|(i, _)| i.as_str())
    }

    /// Fetches every key source now, ignoring the refetch rate limit (still coalesced). For a
    /// warm-up at start; failure is not fatal (keys are fetched again on demand).
    pub async fn refresh_keys(&self) -> Result<(), ValidationError> {
        for source in &self.inner.sources {
            source.refresh_now().await.map_err(ValidationError::KeysUnavailable)?;
        }
        Ok(())
    }

    /// Number of key-set fetches attempted so far, all sources together.
    pub fn key_fetch_count(&self) -> u64 {
        self.inner.sources.iter().map(|s| s.fetch_count()).sum()
    }

    /// Number of tokens in the verified-token cache.
    pub fn cached_tokens(&self) -> usize {
        self.inner.cache.as_ref().map_or(0, TokenCache::len)
    }

    /// True when `token` is valid (see [`Validator::validate`]).
    pub async fn is_valid(&self, token: &str) -> bool {
        self.validate(token).await.is_ok()
    }

    /// Validates `token` (the bare token, without `Bearer `) and returns its claims.
    pub async fn validate(&self, token: &str) -> Result<Claims, ValidationError> {
        let inner = &*self.inner;
        if token.len() > inner.max_token_bytes {
            return Err(ValidationError::TooLarge { max: inner.max_token_bytes });
        }
        let key = inner.cache.as_ref().map(|_| cache::hash_token(token));
        if let (Some(cache), Some(key)) = (&inner.cache, &key)
            && let Some(hit) = cache.get(key, now_ms())
        {
            let still_published = inner.sources.get(hit.source).is_some_and(|s| s.has_usable(&hit.kid));
            if still_published {
                return Ok(hit.claims);
            }
            cache.remove(key);
        }
        let (claims, source, kid) = self.validate_uncached(token).await?;
        if let (Some(cache), Some(key)) = (&inner.cache, key) {
            cache.insert(
                key,
                cache::Entry { claims: claims.clone(), source, kid, exp_ms: i128::from(claims.exp()) * 1000 },
                now_ms(),
            );
        }
        Ok(claims)
    }

    async fn validate_uncached(&self, token: &str) -> Result<(Claims, usize, String), ValidationError> {
        let inner = &*self.inner;
        let jws = jwt::parse(token, inner.max_token_bytes, &inner.algorithms)?;
        let payload: Map<String, Value> = match serde_json::from_slice(&jws.payload) {
            Ok(Value::Object(map)) => map,
            _ => return Err(ValidationError::Malformed("payload is not a JSON object")),
        };
        let iss = match payload.get("iss") {
            Some(Value::String(s)) => s.as_str(),
            Some(_) => return Err(ValidationError::InvalidClaim("iss")),
            None => return Err(ValidationError::MissingClaim("iss")),
        };
        let source_index =
            inner.issuers.iter().find(|(i, _)| i == iss).map(|(_, s)| *s).ok_or(ValidationError::WrongIssuer)?;
        let source =
            inner.sources.get(source_index).ok_or(ValidationError::KeysUnavailable("no key source".to_owned()))?;

        let key = match source.lookup(&jws.kid).await {
            Lookup::Found(KeyEntry::Usable(key)) => key,
            Lookup::Found(KeyEntry::Unusable) => return Err(ValidationError::KeyMismatch),
            Lookup::Unknown => {
                return Err(ValidationError::UnknownKey { kid: jwt::sanitize(&jws.kid) });
            }
            Lookup::Unavailable(reason) => return Err(ValidationError::KeysUnavailable(reason)),
        };
        // RFC 7517 §4.4 / RFC 8725 §3.1: the key decides the algorithm; a header that names
        // another one (e.g. RS256 against an EC key) is refused before any crypto.
        if key.alg != jws.alg {
            return Err(ValidationError::KeyMismatch);
        }
        if !key.verify(jws.signing_input, &jws.signature) {
            return Err(ValidationError::BadSignature);
        }

        let aud = claims::audiences(&payload)?;
        if !self.audience_matches(&aud) {
            return Err(ValidationError::WrongAudience);
        }
        let claims = Claims::from_verified(payload, aud, &inner.hierarchy)?;
        let now = i64::try_from(now_ms() / 1000).unwrap_or(i64::MAX);
        let leeway = inner.leeway_secs;
        // RFC 7519 §4.1.4: the current time must be before `exp`.
        if now >= claims.exp().saturating_add(leeway) {
            return Err(ValidationError::Expired);
        }
        if claims.nbf().is_some_and(|nbf| now.saturating_add(leeway) < nbf) {
            return Err(ValidationError::NotYetValid);
        }
        if claims.iat() > now.saturating_add(leeway) {
            return Err(ValidationError::IssuedInFuture);
        }
        Ok((claims, source_index, jws.kid))
    }

    fn audience_matches(&self, aud: &[String]) -> bool {
        let inner = &*self.inner;
        aud.iter().any(|a| {
            inner.audience_ids.iter().any(|id| id == a)
                || crate::url::canonical_resource(a).is_some_and(|c| inner.audience_urls.contains(&c))
        })
    }
}
