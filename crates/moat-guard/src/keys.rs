//! The issuer's signing keys: fetched lazily from the JWKS (RFC 7517 §5), optionally located
//! through the issuer's RFC 8414 metadata (`jwks_uri`), cached with a TTL taken from
//! `Cache-Control: max-age` (RFC 9111 §5.2.2.1) within configured bounds.
//!
//! Guarantees:
//! - **Coalesced**: concurrent lookups that need a fetch wait on the same one. The fetch runs in
//!   its own task, so a cancelled request does not abort it for the others.
//! - **Rate-limited**: an unknown `kid` triggers a fetch only when the last attempt is at least
//!   `jwks_refetch_interval` old, or when the cached set is stale and the last fetch succeeded
//!   (at most once per `jwks_min_ttl`, and at most once a second even when `jwks_min_ttl` is 0
//!   and the issuer sends `no-store`). A flood of random `kid`s cannot hammer Moat.
//! - **Stale keys keep serving**: a failed fetch never discards the last good set; a known `kid`
//!   in a stale set is used at once while a background refresh runs.
//! - **Rotation-safe**: Moat publishes a new key before signing with it, for longer than the
//!   key set's `max-age` (DESIGN.md §3), so by the time a token names it the cached set is
//!   stale and the unknown `kid` is allowed one immediate refetch.
//! - **Lazy**: nothing is fetched at construction, so a server starts while Moat is down.

use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use serde_json::Value;

use crate::jwk::{KeyEntry, KeySet};

/// Least time between two fetches of a stale key set, whatever `jwks_min_ttl` and the issuer's
/// `Cache-Control` say (unless `jwks_refetch_interval` is shorter still).
const MIN_STALE_REFETCH_SPACING: Duration = Duration::from_secs(1);

/// Settings shared by all key sources of a validator.
#[derive(Debug, Clone)]
pub(crate) struct KeySettings {
    pub default_ttl: Duration,
    pub min_ttl: Duration,
    pub max_ttl: Duration,
    pub refetch_interval: Duration,
    pub max_document_bytes: usize,
    pub allow_insecure_http: bool,
}

/// Where the key set lives.
#[derive(Debug, Clone)]
pub(crate) enum Location {
    /// A configured JWKS URL.
    Jwks(String),
    /// Discover `jwks_uri` from the issuer's RFC 8414 metadata at `metadata_url`.
    Metadata { issuer: String, metadata_url: String },
}

struct Cached {
    set: Arc<KeySet>,
    /// `None` until the first successful fetch.
    fresh_until: Option<Instant>,
}

struct FetchMeta {
    last_attempt: Option<Instant>,
    last_ok: bool,
    last_error: Option<String>,
    /// `jwks_uri` learned from metadata.
    resolved_jwks: Option<String>,
}

/// One issuer's (or one configured JWKS URL's) key cache.
pub(crate) struct KeySource {
    http: reqwest::Client,
    location: Location,
    settings: KeySettings,
    cached: RwLock<Cached>,
    fetch: tokio::sync::Mutex<FetchMeta>,
    /// Incremented after every completed fetch attempt; lets waiters tell that the fetch they
    /// waited for has happened.
    generation: AtomicU64,
    background: AtomicBool,
    fetch_count: AtomicU64,
}

/// Result of a key lookup.
pub(crate) enum Lookup {
    Found(KeyEntry),
    Unknown,
    /// Never fetched successfully: nothing to check the token against.
    Unavailable(String),
}

impl KeySource {
    pub fn new(http: reqwest::Client, location: Location, settings: KeySettings) -> Arc<Self> {
        Arc::new(Self {
            http,
            location,
            settings,
            cached: RwLock::new(Cached { set: Arc::new(KeySet::default()), fresh_until: None }),
            fetch: tokio::sync::Mutex::new(FetchMeta {
                last_attempt: None,
                last_ok: false,
                last_error: None,
                resolved_jwks: None,
            }),
            generation: AtomicU64::new(0),
            background: AtomicBool::new(false),
            fetch_count: AtomicU64::new(0),
        })
    }

    /// Number of key-set fetches attempted so far (for tests and metrics).
    pub fn fetch_count(&self) -> u64 {
        self.fetch_count.load(Ordering::Relaxed)
    }

    fn snapshot(&self) -> (Arc<KeySet>, Option<Instant>) {
        let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
        (c.set.clone(), c.fresh_until)
    }

    /// True when the current set still publishes `kid` as a usable key.
    pub fn has_usable(&self, kid: &str) -> bool {
        let c = self.cached.read().unwrap_or_else(|p| p.into_inner());
        matches!(c.set.get(kid), Some(KeyEntry::Usable(_)))
    }

    /// Finds the key for `kid`, fetching when needed (see the module guarantees).
    pub async fn lookup(self: &Arc<Self>, kid: &str) -> Lookup {
        let (set, fresh_until) = self.snapshot();
        if let Some(entry) = set.get(kid) {
            if fresh_until.is_some_and(|t| Instant::now() >= t) {
                self.refresh_in_background();
            }
            return Lookup::Found(entry.clone());
        }
        self.refresh().await;
        let (set, fresh_until) = self.snapshot();
        match set.get(kid) {
            Some(entry) => Lookup::Found(entry.clone()),
            None if fresh_until.is_none() => Lookup::Unavailable(self.last_error().await),
            None => Lookup::Unknown,
        }
    }

    async fn last_error(&self) -> String {
        self.fetch.lock().await.last_error.clone().unwrap_or_else(|| "key set not fetched yet".to_owned())
    }

    fn refresh_in_background(self: &Arc<Self>) {
        if self.background.compare_exchange(false, true, Ordering::AcqRel, Ordering::Acquire).is_ok() {
            let this = self.clone();
            tokio::spawn(async move {
                this.refresh().await;
                this.background.store(false, Ordering::Release);
            });
        }
    }

    /// Fetches the key set unless another fetch completed while we waited (coalescing) or the
    /// rate limit forbids it. Runs the fetch in its own task so that cancelling one caller does
    /// not cancel the fetch others wait on.
    pub async fn refresh(self: &Arc<Self>) {
        let seen = self.generation.load(Ordering::Acquire);
        let this = self.clone();
        let task = tokio::spawn(async move { this.refresh_inner(seen).await });
        // A JoinError means the task panicked or the runtime is shutting down: nothing to do but
        // carry on with what is cached.
        let _ = task.await;
    }

    /// Fetches now, bypassing the rate limit (still coalesced). For explicit warm-up.
    pub async fn refresh_now(self: &Arc<Self>) -> Result<(), String> {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let mut meta = this.fetch.lock().await;
            this.fetch_locked(&mut meta).await;
            if meta.last_ok {
                Ok(())
            } else {
                Err(meta.last_error.clone().unwrap_or_else(|| "key set fetch failed".to_owned()))
            }
        });
        task.await.unwrap_or_else(|_| Err("key set fetch task failed".to_owned()))
    }

    async fn refresh_inner(&self, seen: u64) {
        let mut meta = self.fetch.lock().await;
        if self.generation.load(Ordering::Acquire) != seen {
            // Someone fetched while we were waiting: use their result.
            return;
        }
        let now = Instant::now();
        let (set, fresh_until) = self.snapshot();
        let never_fetched = fresh_until.is_none();
        let stale = fresh_until.is_some_and(|t| now >= t);
        let interval = if never_fetched || set.is_empty() {
            // While we have nothing at all, retry sooner (a server started before Moat).
            self.settings.refetch_interval.min(Duration::from_secs(1))
        } else {
            self.settings.refetch_interval
        };
        if let Some(last) = meta.last_attempt {
            // A stale set may be refetched before `interval` is over (rotation: a pre-published
            // key is found at once), but never sooner than `jwks_min_ttl`, and never sooner than
            // MIN_STALE_REFETCH_SPACING: with `jwks_min_ttl` 0 and an issuer answering
            // `no-store` or `max-age=0` (RFC 9111 §5.2.2.5, §5.2.2.1) the set is stale the moment
            // it arrives, and without this floor a flood of random `kid`s would cause
            // back-to-back fetches.
            let stale_spacing = interval.min(self.settings.min_ttl.max(MIN_STALE_REFETCH_SPACING));
            let elapsed = now.duration_since(last);
            let allowed = (stale && meta.last_ok && elapsed >= stale_spacing) || elapsed >= interval;
            if !allowed {
                return;
            }
        }
        self.fetch_locked(&mut meta).await;
    }

    async fn fetch_locked(&self, meta: &mut FetchMeta) {
        meta.last_attempt = Some(Instant::now());
        self.fetch_count.fetch_add(1, Ordering::Relaxed);
        let previous = self.snapshot().0;
        match self.fetch_once(meta, &previous).await {
            Ok((set, ttl)) => {
                let mut c = self.cached.write().unwrap_or_else(|p| p.into_inner());
                c.set = Arc::new(set);
                c.fresh_until = Some(Instant::now() + ttl);
                meta.last_ok = true;
                meta.last_error = None;
            }
            Err(e) => {
                tracing::warn!(error = %e, "moat-guard: fetching signing keys failed; keeping the last good keys");
                meta.last_ok = false;
                meta.last_error = Some(e);
                // A discovered jwks_uri may have moved: rediscover next time.
                if matches!(self.location, Location::Metadata { .. }) {
                    meta.resolved_jwks = None;
                }
            }
        }
        self.generation.fetch_add(1, Ordering::AcqRel);
    }

    async fn fetch_once(&self, meta: &mut FetchMeta, previous: &KeySet) -> Result<(KeySet, Duration), String> {
        let jwks_url = match &self.location {
            Location::Jwks(url) => url.clone(),
            Location::Metadata { issuer, metadata_url } => match &meta.resolved_jwks {
                Some(url) => url.clone(),
                None => {
                    let url = self.discover(issuer, metadata_url).await?;
                    meta.resolved_jwks = Some(url.clone());
                    url
                }
            },
        };
        let (body, cache_control) = self.get(&jwks_url).await?;
        let set = KeySet::parse(&body, Some(previous)).map_err(|e| format!("{e} ({jwks_url})"))?;
        let ttl = ttl_from_cache_control(cache_control.as_deref(), &self.settings);
        tracing::debug!(keys = set.keys.len(), ttl_secs = ttl.as_secs(), url = %jwks_url, "moat-guard: fetched signing keys");
        Ok((set, ttl))
    }

    /// Reads RFC 8414 metadata and returns its `jwks_uri`, checking that `issuer` is exactly
    /// the configured issuer (RFC 8414 §3.3).
    async fn discover(&self, issuer: &str, metadata_url: &str) -> Result<String, String> {
        let (body, _) = self.get(metadata_url).await?;
        let doc: Value = serde_json::from_slice(&body)
            .map_err(|_| format!("authorization server metadata is not JSON ({metadata_url})"))?;
        if doc.get("issuer").and_then(Value::as_str) != Some(issuer) {
            return Err(format!(
                "authorization server metadata issuer differs from the configured issuer ({metadata_url})"
            ));
        }
        let jwks = doc
            .get("jwks_uri")
            .and_then(Value::as_str)
            .ok_or_else(|| format!("authorization server metadata has no jwks_uri ({metadata_url})"))?;
        crate::validator::check_url(jwks, "jwks_uri", self.settings.allow_insecure_http).map_err(|e| e.to_string())?;
        Ok(jwks.to_owned())
    }

    /// GET with a body size cap; returns the body and the `Cache-Control` header.
    async fn get(&self, url: &str) -> Result<(Vec<u8>, Option<String>), String> {
        let mut resp = self
            .http
            .get(url)
            .header(http::header::ACCEPT, "application/json")
            .send()
            .await
            .map_err(|e| format!("request to {url} failed: {}", error_chain(&e)))?;
        if resp.status() != reqwest::StatusCode::OK {
            return Err(format!("{url} answered {}", resp.status()));
        }
        let cache_control = resp
            .headers()
            .get_all(http::header::CACHE_CONTROL)
            .iter()
            .filter_map(|v| v.to_str().ok())
            .collect::<Vec<_>>()
            .join(",");
        let mut body = Vec::new();
        while let Some(chunk) = resp.chunk().await.map_err(|e| format!("reading {url} failed: {}", error_chain(&e)))? {
            if body.len() + chunk.len() > self.settings.max_document_bytes {
                return Err(format!("{url} is larger than {} bytes", self.settings.max_document_bytes));
            }
            body.extend_from_slice(&chunk);
        }
        Ok((body, (!cache_control.is_empty()).then_some(cache_control)))
    }
}

fn error_chain(e: &dyn std::error::Error) -> String {
    let mut out = e.to_string();
    let mut source = e.source();
    while let Some(s) = source {
        out.push_str(": ");
        out.push_str(&s.to_string());
        source = s.source();
    }
    out
}

/// Freshness of a key set from its `Cache-Control` (RFC 9111 §5.2.2.1 `max-age`; `no-store` and
/// `no-cache` mean "as short as allowed"), clamped to the configured bounds.
pub(crate) fn ttl_from_cache_control(header: Option<&str>, s: &KeySettings) -> Duration {
    let mut ttl = None;
    for directive in header.unwrap_or("").split(',') {
        let directive = directive.trim();
        let lower = directive.to_ascii_lowercase();
        if lower == "no-store" || lower == "no-cache" {
            ttl = Some(Duration::ZERO);
            break;
        }
        if let Some(v) = lower.strip_prefix("max-age=")
            && let Ok(secs) = v.trim_matches('"').parse::<u64>()
        {
            ttl = Some(Duration::from_secs(secs));
        }
    }
    ttl.unwrap_or(s.default_ttl).clamp(s.min_ttl, s.max_ttl.max(s.min_ttl))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cache_control_bounds() {
        let s = KeySettings {
            default_ttl: Duration::from_secs(300),
            min_ttl: Duration::from_secs(30),
            max_ttl: Duration::from_secs(3600),
            refetch_interval: Duration::from_secs(10),
            max_document_bytes: 1024,
            allow_insecure_http: false,
        };
        let secs = |h: Option<&str>| ttl_from_cache_control(h, &s).as_secs();
        assert_eq!(secs(None), 300);
        assert_eq!(secs(Some("public, max-age=600")), 600);
        assert_eq!(secs(Some("max-age=5")), 30);
        assert_eq!(secs(Some("max-age=999999")), 3600);
        assert_eq!(secs(Some("no-store")), 30);
        assert_eq!(secs(Some("Max-Age=120, must-revalidate")), 120);
        assert_eq!(secs(Some("max-age=abc")), 300);
    }
}
