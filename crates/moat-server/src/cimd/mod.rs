//! Resolving Client ID Metadata Document clients: fetch the document through the SSRF-safe
//! fetcher, validate it ([`moat_core::cimd`]), and cache it per its HTTP caching headers.
//!
//! Concurrent lookups of one URL share a single fetch, which runs in its own task so that it
//! completes, is logged, counted and audited (for every request that asked), and leaves the
//! in-flight map even when every client that asked for it disconnects ([`flight`]); failures
//! and invalid documents are never cached (DESIGN.md §5). A lookup that would start a fetch can
//! be refused first ([`CimdResolver::resolve_for`]'s `admit`: the per-address fetch limit). Key
//! sets at a `jwks_uri` are fetched, coalesced and counted the same way. The caches are per
//! instance, which DESIGN.md §7 allows: a document is the client's own public data and every
//! instance fetches the same one. Logos are fetched the same way and served from Moat's own
//! origin, so the consent page never loads a third-party URL.
//!
//! Anyone can make Moat fetch and cache (the `client_id` is the URL), so the caches are bounded
//! by bytes, not only entries ([`cache`]), and hold what was received as raw bytes: a document
//! or key set is parsed again on each cache hit (at most 5 KiB or 16 KiB of JSON), because a
//! parsed `serde_json::Value` costs an order of magnitude more memory than its wire form.

pub mod cache;
pub mod flight;
pub mod ttl;

use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::{Duration, Instant, SystemTime};

use bytes::Bytes;
use moat_core::cimd::{CimdClient, CimdError};
use moat_core::model::AuditEvent;
use serde_json::{Value, json};

use self::cache::ByteCache;
use self::flight::{NotAdmitted, SingleFlight};
use crate::audit::AuditSink;
use crate::fetch::{Expect, FetchError, Fetched, SafeFetcher};
use crate::metrics::Metrics;

/// Largest client metadata document (MCP requirements item 11).
pub const MAX_DOCUMENT_BYTES: usize = 5 * 1024;
/// Largest logo Moat fetches and serves.
pub const MAX_LOGO_BYTES: usize = 64 * 1024;
/// Largest client key set fetched from a `jwks_uri`.
pub const MAX_JWKS_BYTES: usize = 16 * 1024;
/// Most entries in each cache.
pub const MAX_ENTRIES: usize = 10_000;
/// Bytes the document cache may hold (raw bodies, keys and per-entry overhead): 8 MiB, about
/// 1,500 documents of the largest size or 10,000 (the entry limit) of a typical ~500 bytes.
pub const DOCUMENT_CACHE_BYTES: usize = 8 * 1024 * 1024;
/// Bytes the `jwks_uri` key-set cache may hold: 4 MiB, at least 250 sets of the largest size.
pub const JWKS_CACHE_BYTES: usize = 4 * 1024 * 1024;
/// Bytes the logo cache may hold: 16 MiB, at least 250 logos of the largest size.
pub const LOGO_CACHE_BYTES: usize = 16 * 1024 * 1024;
/// A cached key set that lacks the assertion's `kid` is fetched again at most this often (the
/// client may have rotated its keys; an attacker's made-up `kid` must not force a fetch per
/// request).
const KID_REFETCH_INTERVAL: Duration = Duration::from_secs(30);
/// Logos are kept at least this long whatever their headers say: the consent page that names
/// one is followed by the browser's request for it.
const MIN_LOGO_TTL: Duration = Duration::from_secs(60);

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
    /// A key set fetched from a `jwks_uri` is not a usable JWKS.
    #[error("{0}")]
    KeySet(CimdError),
    /// The fetch task ended without an outcome (the server is shutting down).
    #[error("the fetch was interrupted")]
    Interrupted,
    /// The lookup would have fetched, and the caller's admission check (the per-address limit
    /// on fetches) refused it; nothing was fetched.
    #[error("too many client metadata documents were fetched for this address; try again later")]
    RateLimited,
}

impl CimdFailure {
    /// Short label for metrics and audit.
    pub fn label(&self) -> &'static str {
        match self {
            Self::Url(_) => "bad_client_id",
            Self::Fetch(e) => e.label(),
            Self::NotJson => "not_json",
            Self::Document(_) => "invalid_document",
            Self::KeySet(_) => "invalid_key_set",
            Self::Interrupted => "interrupted",
            Self::RateLimited => "rate_limited",
        }
    }
}

/// A cached logo.
#[derive(Clone)]
pub struct Logo {
    pub bytes: Bytes,
    pub content_type: String,
}

/// A cached key set, as received.
#[derive(Clone)]
struct CachedJwks {
    body: Bytes,
    fetched_at: Instant,
}

/// The byte budgets of the caches ([`CacheLimits::default`] is what Moat runs with).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheLimits {
    pub document_bytes: usize,
    pub jwks_bytes: usize,
    pub logo_bytes: usize,
    /// Entries per cache.
    pub entries: usize,
}

impl Default for CacheLimits {
    fn default() -> Self {
        Self {
            document_bytes: DOCUMENT_CACHE_BYTES,
            jwks_bytes: JWKS_CACHE_BYTES,
            logo_bytes: LOGO_CACHE_BYTES,
            entries: MAX_ENTRIES,
        }
    }
}

/// What the caches hold (for tests and diagnostics).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct CacheUsage {
    pub documents: usize,
    pub document_bytes: usize,
    pub key_sets: usize,
    pub jwks_bytes: usize,
    pub logos: usize,
    pub logo_bytes: usize,
}

type DocumentOutcome = Result<Arc<CimdClient>, CimdFailure>;
type JwksOutcome = Result<Arc<Value>, CimdFailure>;

/// The request a document lookup is made for, so that the lookup's outcome is audited for it:
/// `cimd.fetched` (with the document's name and redirect URIs) or `cimd.rejected` (with the
/// reason). A cache hit is not audited.
///
/// The outcome of a fetch is recorded by the fetch's own task, for every request that started
/// or joined it, before the outcome is handed back: a request whose HTTP client disconnects
/// mid-fetch still leaves its event, and one that stays does not record it again.
#[derive(Clone)]
pub struct Requester {
    pub audit: AuditSink,
    pub resource_id: String,
    /// The request's source address.
    pub ip: Option<String>,
}

impl Requester {
    fn event(&self, kind: &str, client_id: &str, detail: Value) -> AuditEvent {
        let mut ev = AuditEvent::new(kind, crate::state::now());
        ev.resource_id = Some(self.resource_id.clone());
        ev.client_id = Some(client_id.to_owned());
        ev.ip = self.ip.clone();
        ev.detail = detail;
        ev
    }

    /// `cimd.rejected` for `client_id`, with `reason` (a [`CimdFailure::label`], or a refusal
    /// decided before the resolver is asked, such as `host_not_allowed`).
    pub async fn rejected(&self, client_id: &str, reason: &str) {
        self.audit.record(self.event("cimd.rejected", client_id, json!({ "reason": reason }))).await;
    }

    /// The audit event for a lookup's outcome, with the sink to record it in. Built before any
    /// await so that the recording future owns everything it needs.
    fn outcome_event(self, client_id: &str, outcome: &DocumentOutcome) -> (AuditSink, AuditEvent) {
        let ev = match outcome {
            Ok(doc) => self.event(
                "cimd.fetched",
                client_id,
                json!({ "client_name": doc.client_name, "redirect_uris": doc.redirect_uris }),
            ),
            Err(e) => self.event("cimd.rejected", client_id, json!({ "reason": e.label() })),
        };
        (self.audit, ev)
    }
}

struct Inner {
    fetcher: SafeFetcher,
    metrics: Arc<Metrics>,
    /// Raw bodies of valid documents, by client id.
    documents: Mutex<ByteCache<Bytes>>,
    /// Raw bodies of valid key sets, by `jwks_uri`.
    jwks: Mutex<ByteCache<CachedJwks>>,
    /// Logos by the SHA-256 of their URL.
    logos: Mutex<ByteCache<Logo>>,
    /// Each waiter is the request to audit the fetch's outcome for.
    document_flights: SingleFlight<DocumentOutcome, Requester>,
    jwks_flights: SingleFlight<JwksOutcome>,
}

/// The resolver (one per application).
pub struct CimdResolver {
    inner: Arc<Inner>,
}

/// How a resolution was served.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    Cache,
    Fetched,
}

/// The caches stay consistent if a holder panicked (their updates cannot panic half-way), so
/// a poisoned lock is taken over rather than turning every later lookup into an error.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// The freshness lifetime of a response (RFC 9111 §4.2) as a deadline, or `None` when it must
/// not be reused.
fn fresh_until(fetched: &Fetched) -> Option<Instant> {
    let lifetime = freshness(fetched);
    if lifetime.is_zero() { None } else { Instant::now().checked_add(lifetime) }
}

/// The freshness lifetime of a response (RFC 9111 §4.2), from its caching headers.
fn freshness(fetched: &Fetched) -> Duration {
    ttl::freshness(
        fetched.cache_control.as_deref(),
        fetched.expires.as_deref(),
        fetched.date.as_deref(),
        fetched.age.as_deref(),
        SystemTime::now(),
    )
}

/// Parses and validates a document body for `client_id`.
fn parse_document(body: &[u8], client_id: &str) -> Result<CimdClient, CimdFailure> {
    let doc: Value = serde_json::from_slice(body).map_err(|_| CimdFailure::NotJson)?;
    moat_core::cimd::validate_document(&doc, client_id).map_err(CimdFailure::Document)
}

/// Parses and checks a key set body: a JSON object with a `keys` array of at most
/// [`moat_core::cimd::MAX_JWKS_KEYS`] JSON objects, public keys only (RFC 7517 §5).
fn parse_jwks(body: &[u8]) -> Result<Value, CimdFailure> {
    let keys: Value =
        serde_json::from_slice(body).map_err(|_| CimdFailure::KeySet(CimdError::KeySet("it is not valid JSON")))?;
    moat_core::cimd::check_public_jwks(&keys).map_err(CimdFailure::KeySet)?;
    Ok(keys)
}

impl CimdResolver {
    pub fn new(fetcher: SafeFetcher, metrics: Arc<Metrics>) -> Self {
        Self::with_limits(fetcher, metrics, CacheLimits::default())
    }

    /// A resolver with other cache budgets (tests).
    pub fn with_limits(fetcher: SafeFetcher, metrics: Arc<Metrics>, limits: CacheLimits) -> Self {
        Self {
            inner: Arc::new(Inner {
                fetcher,
                metrics,
                documents: Mutex::new(ByteCache::new(limits.document_bytes, limits.entries)),
                jwks: Mutex::new(ByteCache::new(limits.jwks_bytes, limits.entries)),
                logos: Mutex::new(ByteCache::new(limits.logo_bytes, limits.entries)),
                document_flights: SingleFlight::default(),
                jwks_flights: SingleFlight::default(),
            }),
        }
    }

    /// The fetcher, for other client-supplied URLs (`jwks_uri`).
    pub fn fetcher(&self) -> &SafeFetcher {
        &self.inner.fetcher
    }

    /// Fetches of documents and key sets in progress (for tests and diagnostics).
    pub fn inflight(&self) -> usize {
        self.inner.document_flights.len().saturating_add(self.inner.jwks_flights.len())
    }

    /// What the caches hold (for tests and diagnostics).
    pub fn cache_usage(&self) -> CacheUsage {
        let (documents, document_bytes) = {
            let c = lock(&self.inner.documents);
            (c.len(), c.used())
        };
        let (key_sets, jwks_bytes) = {
            let c = lock(&self.inner.jwks);
            (c.len(), c.used())
        };
        let (logos, logo_bytes) = {
            let c = lock(&self.inner.logos);
            (c.len(), c.used())
        };
        CacheUsage { documents, document_bytes, key_sets, jwks_bytes, logos, logo_bytes }
    }

    /// Resolves a client id URL to a validated client (no audit, no admission check).
    pub async fn resolve(&self, client_id: &str) -> Result<(Arc<CimdClient>, Source), CimdFailure> {
        self.resolve_for(client_id, None, || true).await
    }

    /// Resolves a client id URL to a validated client for a request.
    ///
    /// `requester`, when given, gets the audit event of the outcome (see [`Requester`]; cache
    /// hits are not audited). `admit` is asked once, only when this lookup would start a fetch:
    /// not for a cache hit, nor for a lookup that joins a fetch already under way (it adds no
    /// outbound request). When it refuses, nothing is fetched and the lookup fails with
    /// [`CimdFailure::RateLimited`].
    pub async fn resolve_for(
        &self,
        client_id: &str,
        requester: Option<Requester>,
        admit: impl FnOnce() -> bool,
    ) -> Result<(Arc<CimdClient>, Source), CimdFailure> {
        if let Err(e) = moat_core::cimd::validate_client_id_url(client_id) {
            let failure = CimdFailure::Url(e);
            self.inner.metrics.cimd(failure.label());
            if let Some(r) = &requester {
                r.rejected(client_id, failure.label()).await;
            }
            return Err(failure);
        }
        if let Some(c) = self.inner.cached_document(client_id) {
            self.inner.metrics.cimd("cache_hit");
            return Ok((c, Source::Cache));
        }
        let inner = Arc::clone(&self.inner);
        let id = client_id.to_owned();
        let work = move || async move { inner.fetch_document(&id).await };
        let report_id = client_id.to_owned();
        let report = move |outcome: &DocumentOutcome, waiters: Vec<Requester>| {
            let events: Vec<_> = waiters.into_iter().map(|w| w.outcome_event(&report_id, outcome)).collect();
            async move {
                for (sink, ev) in events {
                    sink.record(ev).await;
                }
            }
        };
        let flight = self.inner.document_flights.run_with(client_id, requester.clone(), admit, work, report);
        let failure = match flight.await {
            // The flight has audited this outcome for the requester.
            Ok(Some(outcome)) => return outcome.map(|c| (c, Source::Fetched)),
            Ok(None) => CimdFailure::Interrupted,
            Err(NotAdmitted) => {
                self.inner.metrics.cimd("rate_limited");
                // `info`, not `warn` like failed fetches: an address over the limit can send
                // these as fast as it likes, and each costs Moat nothing but this line.
                tracing::info!(
                    client_id,
                    ip = requester.as_ref().and_then(|r| r.ip.as_deref()),
                    reason = "rate_limited",
                    "client metadata document not fetched: too many fetches from this address"
                );
                CimdFailure::RateLimited
            }
        };
        // Neither reached a flight that could report it: no fetch was started, or the flight
        // ended without an outcome (so it reported nothing).
        if let Some(r) = &requester {
            r.rejected(client_id, failure.label()).await;
        }
        Err(failure)
    }

    /// Fetches (or reuses) a client's logo and returns the key it is served under
    /// (`/logos/{key}`), or `None` when it cannot be fetched safely.
    pub async fn logo(&self, url: &str) -> Option<String> {
        let key = crate::crypto::sha256_hex(url.as_bytes());
        if lock(&self.inner.logos).fresh(&key, Instant::now()).is_some() {
            return Some(key);
        }
        let fetched = match self.inner.fetcher.fetch(url, Expect::Image, MAX_LOGO_BYTES).await {
            Ok(f) => f,
            Err(e) => {
                self.inner.metrics.cimd(&format!("logo_{}", e.label()));
                tracing::info!(url, reason = %e, "client logo not shown");
                return None;
            }
        };
        let lifetime = freshness(&fetched).max(MIN_LOGO_TTL);
        let until = Instant::now().checked_add(lifetime)?;
        // An exactly sized copy: the fetcher's buffer may have grown to twice the body.
        let bytes = Bytes::copy_from_slice(&fetched.body);
        let payload = bytes.len().saturating_add(fetched.content_type.len());
        let logo = Logo { bytes, content_type: fetched.content_type };
        lock(&self.inner.logos).insert(&key, logo, payload, until).then_some(key)
    }

    /// A cached logo by key.
    pub fn cached_logo(&self, key: &str) -> Option<Logo> {
        lock(&self.inner.logos).get(key).map(|(logo, _)| logo)
    }

    /// A client's published key set (`jwks_uri`), cached per its HTTP headers. When `kid` is not
    /// in a cached set older than 30 s, the set is fetched again once (the client rotated).
    /// Concurrent fetches of one URL share one fetch, counted as `jwks_fetched` or
    /// `jwks_<reason>`.
    ///
    /// `admit` is asked only before a new fetch (not for a cache hit or a fetch under way), so
    /// the per-address fetch budget covers key sets too: one admitted document must not buy an
    /// unlimited number of fetches of whatever URL it names.
    pub async fn client_jwks(
        &self,
        url: &str,
        kid: Option<&str>,
        admit: impl FnOnce() -> bool,
    ) -> Result<Value, CimdFailure> {
        if let Some((keys, fetched_at)) = self.inner.cached_jwks(url) {
            let knows_kid = kid.is_none_or(|k| !crate::jwk::candidates(&keys, Some(k)).is_empty());
            if knows_kid || fetched_at.elapsed() < KID_REFETCH_INTERVAL {
                self.inner.metrics.cimd("jwks_cache_hit");
                return Ok(keys);
            }
        }
        let inner = Arc::clone(&self.inner);
        let owned = url.to_owned();
        let flight = self.inner.jwks_flights.run_with(
            url,
            None,
            admit,
            move || async move { inner.fetch_jwks(&owned).await },
            |_, _: Vec<()>| async {},
        );
        match flight.await {
            Ok(outcome) => outcome.unwrap_or(Err(CimdFailure::Interrupted)).map(|keys| Value::clone(&keys)),
            Err(NotAdmitted) => {
                self.inner.metrics.cimd("jwks_rate_limited");
                tracing::info!(
                    url,
                    reason = "rate_limited",
                    "client key set not fetched: too many fetches from this address"
                );
                Err(CimdFailure::RateLimited)
            }
        }
    }
}

impl Inner {
    /// A fresh cached document, parsed again from its bytes.
    fn cached_document(&self, client_id: &str) -> Option<Arc<CimdClient>> {
        let body = lock(&self.documents).fresh(client_id, Instant::now())?;
        match parse_document(&body, client_id) {
            Ok(c) => Some(Arc::new(c)),
            Err(_) => {
                // Cannot happen (only validated bodies are cached); fetch again rather than fail.
                lock(&self.documents).remove(client_id);
                None
            }
        }
    }

    /// A fresh cached key set, parsed again from its bytes, with when it was fetched.
    fn cached_jwks(&self, url: &str) -> Option<(Value, Instant)> {
        let cached = lock(&self.jwks).fresh(url, Instant::now())?;
        match parse_jwks(&cached.body) {
            Ok(keys) => Some((keys, cached.fetched_at)),
            Err(_) => {
                lock(&self.jwks).remove(url);
                None
            }
        }
    }

    /// Runs in the flight's own task: fetches, validates, caches, and logs and counts the
    /// outcome whether or not anyone still waits for it (the flight then audits it for every
    /// requester, [`CimdResolver::resolve_for`]).
    async fn fetch_document(&self, client_id: &str) -> DocumentOutcome {
        let outcome = self.fetch_and_validate_document(client_id).await;
        match &outcome {
            Ok(_) => self.metrics.cimd("fetched"),
            Err(e) => {
                self.metrics.cimd(e.label());
                tracing::warn!(client_id, reason = %e, "client metadata document rejected");
            }
        }
        outcome
    }

    async fn fetch_and_validate_document(&self, client_id: &str) -> DocumentOutcome {
        let fetched =
            self.fetcher.fetch(client_id, Expect::Json, MAX_DOCUMENT_BYTES).await.map_err(CimdFailure::Fetch)?;
        let client = Arc::new(parse_document(&fetched.body, client_id)?);
        if let Some(until) = fresh_until(&fetched) {
            // An exactly sized copy: the fetcher's buffer may have grown to twice the body.
            let body = Bytes::copy_from_slice(&fetched.body);
            let payload = body.len();
            lock(&self.documents).insert(client_id, body, payload, until);
        }
        Ok(client)
    }

    /// As [`Inner::fetch_document`], for a key set.
    async fn fetch_jwks(&self, url: &str) -> JwksOutcome {
        let outcome = self.fetch_and_check_jwks(url).await;
        match &outcome {
            Ok(_) => self.metrics.cimd("jwks_fetched"),
            Err(e) => {
                self.metrics.cimd(&format!("jwks_{}", e.label()));
                tracing::warn!(url, reason = %e, "client key set (jwks_uri) rejected");
            }
        }
        outcome
    }

    async fn fetch_and_check_jwks(&self, url: &str) -> JwksOutcome {
        let fetched = self.fetcher.fetch(url, Expect::Json, MAX_JWKS_BYTES).await.map_err(CimdFailure::Fetch)?;
        let keys = parse_jwks(&fetched.body)?;
        if let Some(until) = fresh_until(&fetched) {
            let body = Bytes::copy_from_slice(&fetched.body);
            let payload = body.len();
            lock(&self.jwks).insert(url, CachedJwks { body, fetched_at: Instant::now() }, payload, until);
        }
        Ok(Arc::new(keys))
    }
}
