//! Resolving Client ID Metadata Document clients: fetch the document through the SSRF-safe
//! fetcher, validate it ([`moat_core::cimd`]), and cache it per its HTTP caching headers.
//!
//! Concurrent lookups of one URL share a single fetch; failures and invalid documents are never
//! cached (DESIGN.md §5). The cache is per instance, which DESIGN.md §7 allows: a document is
//! the client's own public data and every instance fetches the same one. Logos are fetched the
//! same way and served from Moat's own origin, so the consent page never loads a third-party
//! URL.

pub mod ttl;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Instant, SystemTime};

use bytes::Bytes;
use moat_core::cimd::{CimdClient, CimdError};
use tokio::sync::OnceCell;

use crate::fetch::{Expect, FetchError, SafeFetcher};
use crate::metrics::Metrics;

/// Largest client metadata document (MCP requirements item 11).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// Largest logo Moat fetches and serves.
pub const MAX_LOGO_BYTES: usize = 64 * 1024;
/// Most cached documents (and logos).
const MAX_ENTRIES: usize = 10_000;

/// Why a client id could not be resolved; the message is shown to the user and logged.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdFailure {
    #[error("{0}")]
    Url(CimdError),
    #[error("the client metadata document could not be fetched: {0}")]
    Fetch(FetchError),
    #[error("the client metadata document is not valid JSON")]
    NotJson,
    #[error("{0}")]
    Document(CimdError),
}

impl CimdFailure {
    /// Short label for metrics and audit.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Url(_) => "bad_client_id",
            Self::Fetch(e) => e.label(),
            Self::NotJson => "not_json",
            Self::Document(_) => "invalid_document",
        }
    }
}

struct Cached {
    client: Arc<CimdClient>,
    fresh_until: Instant,
}

type Flight = Arc<OnceCell<Result<Arc<CimdClient>, CimdFailure>>>;

/// A cached logo.
#[derive(Clone)]
pub struct Logo {
    pub bytes: Bytes,
    pub content_type: String,
    fresh_until: Instant,
}

/// The resolver (one per application).
pub struct CimdResolver {
    fetcher: SafeFetcher,
    metrics: Arc<Metrics>,
    cache: Mutex<HashMap<String, Cached>>,
    inflight: Mutex<HashMap<String, Flight>>,
    logos: Mutex<HashMap<String, Logo>>,
    jwks: Mutex<HashMap<String, CachedJwks>>,
}

/// How a resolution was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Fetched,
}

impl CimdResolver {
    pub fn new(fetcher: SafeFetcher, metrics: Arc<Metrics>) -> Self {
        Self {
            fetcher,
            metrics,
            cache: Mutex::new(HashMap::new()),
            inflight: Mutex::new(HashMap::new()),
            logos: Mutex::new(HashMap::new()),
            jwks: Mutex::new(HashMap::new()),
        }
    }

    /// The fetcher, for other client-supplied URLs (`jwks_uri`).
    pub fn fetcher(&self) -> &SafeFetcher {
        &self.fetcher
    }

    /// Resolves a client id URL to a validated client.
    pub async fn resolve(&self, client_id: &str) -> Result<(Arc<CimdClient>, Source), CimdFailure> {
        if let Err(e) = moat_core::cimd::validate_client_id_url(client_id) {
            let failure = CimdFailure::Url(e);
            self.metrics.cimd(failure.label());
            return Err(failure);
        }
        if let Some(c) = self.cached(client_id) {
            self.metrics.cimd("cache_hit");
            return Ok((c, Source::Cache));
        }
        let flight = {
            let Ok(mut inflight) = self.inflight.lock() else { return Err(CimdFailure::Fetch(FetchError::Body)) };
            Arc::clone(inflight.entry(client_id.to_owned()).or_insert_with(|| Arc::new(OnceCell::new())))
        };
        let result = flight.get_or_init(|| self.fetch_and_validate(client_id)).await.clone();
        if let Ok(mut inflight) = self.inflight.lock()
            && inflight.get(client_id).is_some_and(|f| Arc::ptr_eq(f, &flight))
        {
            inflight.remove(client_id);
        }
        result.map(|c| (c, Source::Fetched))
    }

    fn cached(&self, client_id: &str) -> Option<Arc<CimdClient>> {
        let cache = self.cache.lock().ok()?;
        cache.get(client_id).filter(|c| Instant::now() < c.fresh_until).map(|c| Arc::clone(&c.client))
    }

    async fn fetch_and_validate(&self, client_id: &str) -> Result<Arc<CimdClient>, CimdFailure> {
        let outcome = self.fetch_document(client_id).await;
        match &outcome {
            Ok(_) => self.metrics.cimd("fetched"),
            Err(e) => {
                self.metrics.cimd(e.label());
                tracing::warn!(client_id, reason = %e, "client metadata document rejected");
            }
        }
        outcome
    }

    async fn fetch_document(&self, client_id: &str) -> Result<Arc<CimdClient>, CimdFailure> {
        let fetched =
            self.fetcher.fetch(client_id, Expect::Json, MAX_DOCUMENT_BYTES).await.map_err(CimdFailure::Fetch)?;
        let doc: serde_json::Value = serde_json::from_slice(&fetched.body).map_err(|_| CimdFailure::NotJson)?;
        let client = Arc::new(moat_core::cimd::validate_document(&doc, client_id).map_err(CimdFailure::Document)?);
        let lifetime = ttl::freshness(
            fetched.cache_control.as_deref(),
            fetched.expires.as_deref(),
            fetched.date.as_deref(),
            fetched.age.as_deref(),
            SystemTime::now(),
        );
        if !lifetime.is_zero()
            && let Ok(mut cache) = self.cache.lock()
        {
            if cache.len() >= MAX_ENTRIES {
                let now = Instant::now();
                cache.retain(|_, c| now < c.fresh_until);
                if cache.len() >= MAX_ENTRIES {
                    cache.clear();
                }
            }
            cache.insert(
                client_id.to_owned(),
                Cached { client: Arc::clone(&client), fresh_until: Instant::now() + lifetime },
            );
        }
        Ok(client)
    }

    /// Fetches (or reuses) a client's logo and returns the key it is served under
    /// (`/logos/{key}`), or `None` when it cannot be fetched safely.
    pub async fn logo(&self, url: &str) -> Option<String> {
        let key = crate::crypto::sha256_hex(url.as_bytes());
        if self.logos.lock().ok()?.get(&key).is_some_and(|l| Instant::now() < l.fresh_until) {
            return Some(key);
        }
        let fetched = match self.fetcher.fetch(url, Expect::Image, MAX_LOGO_BYTES).await {
            Ok(f) => f,
            Err(e) => {
                self.metrics.cimd(&format!("logo_{}", e.label()));
                tracing::info!(url, reason = %e, "client logo not shown");
                return None;
            }
        };
        let lifetime = ttl::freshness(
            fetched.cache_control.as_deref(),
            fetched.expires.as_deref(),
            fetched.date.as_deref(),
            fetched.age.as_deref(),
            SystemTime::now(),
        )
        .max(std::time::Duration::from_secs(60));
        let mut logos = self.logos.lock().ok()?;
        if logos.len() >= MAX_ENTRIES {
            logos.clear();
        }
        logos.insert(
            key.clone(),
            Logo { bytes: fetched.body, content_type: fetched.content_type, fresh_until: Instant::now() + lifetime },
        );
        Some(key)
    }

    /// A cached logo by key.
    pub fn cached_logo(&self, key: &str) -> Option<Logo> {
        self.logos.lock().ok()?.get(key).cloned()
    }

    /// A client's published key set (`jwks_uri`), cached per its HTTP headers. When `kid` is not
    /// in a cached set older than 30 s, the set is fetched again once (the client rotated).
    pub async fn client_jwks(&self, url: &str, kid: Option<&str>) -> Result<serde_json::Value, CimdFailure> {
        let cached = self.jwks.lock().ok().and_then(|m| m.get(url).cloned());
        if let Some(entry) = &cached {
            let knows_kid = kid.is_none_or(|k| !crate::jwk::candidates(&entry.keys, Some(k)).is_empty());
            let fresh = Instant::now() < entry.fresh_until;
            if fresh && (knows_kid || entry.fetched_at.elapsed() < std::time::Duration::from_secs(30)) {
                return Ok(entry.keys.clone());
            }
        }
        let fetched = self.fetcher.fetch(url, Expect::Json, MAX_JWKS_BYTES).await.map_err(CimdFailure::Fetch)?;
        let keys: serde_json::Value = serde_json::from_slice(&fetched.body).map_err(|_| CimdFailure::NotJson)?;
        if !keys.get("keys").is_some_and(serde_json::Value::is_array) {
            return Err(CimdFailure::NotJson);
        }
        let lifetime = ttl::freshness(
            fetched.cache_control.as_deref(),
            fetched.expires.as_deref(),
            fetched.date.as_deref(),
            fetched.age.as_deref(),
            SystemTime::now(),
        );
        if let Ok(mut m) = self.jwks.lock() {
            if m.len() >= MAX_ENTRIES {
                m.clear();
            }
            m.insert(
                url.to_owned(),
                CachedJwks { keys: keys.clone(), fresh_until: Instant::now() + lifetime, fetched_at: Instant::now() },
            );
        }
        Ok(keys)
    }
}

/// Largest client key set fetched from a `jwks_uri`.
pub const MAX_JWKS_BYTES: usize = 16 * 1024;

#[derive(Clone)]
struct CachedJwks {
    keys: serde_json::Value,
    fresh_until: Instant,
    fetched_at: Instant,
}
