//! The application state every handler receives, and small lookups shared by many handlers
//! (the resource cache, URL building).

use std::collections::HashMap;
use std::ops::Deref;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use moat_core::ids::ResourceId;
use moat_core::model::Resource;
use moat_store::DynStore;

use crate::audit::AuditSink;
use crate::config::Config;
use crate::crypto::DerivedKeys;
use crate::keys::KeyRing;
use crate::metrics::Metrics;
use crate::throttle::WindowLimiter;

/// Current Unix time in seconds.
pub fn now() -> i64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs() as i64).unwrap_or(0)
}

/// Shared state (cheap to clone).
#[derive(Clone)]
pub struct AppState(Arc<Inner>);

impl Deref for AppState {
    type Target = Inner;
    fn deref(&self) -> &Inner {
        &self.0
    }
}

pub struct Inner {
    pub config: Config,
    /// Public base URL (origin, no trailing slash); every URL Moat emits starts with it.
    pub base_url: String,
    pub store: DynStore,
    pub keys: Arc<KeyRing>,
    pub derived: DerivedKeys,
    pub audit: AuditSink,
    pub metrics: Arc<Metrics>,
    pub login_by_account: WindowLimiter,
    pub login_by_ip: WindowLimiter,
    pub registrations_by_ip: WindowLimiter,
    /// Metadata-document and key-set fetches caused per source address (cache misses only),
    /// `cimd_fetch_rate_limit_per_minute` per minute.
    pub cimd_fetches_by_ip: WindowLimiter,
    pub resources: ResourceCache,
    /// Client ID Metadata Document resolution and the SSRF-safe fetcher.
    pub cimd: crate::cimd::CimdResolver,
    /// An argon2id hash of a random password, verified against when the email is unknown so
    /// that unknown and known accounts take the same time.
    pub dummy_password_hash: String,
}

impl AppState {
    pub fn new(inner: Inner) -> Self {
        Self(Arc::new(inner))
    }

    /// `{base}/resources/{id}`: the issuer of one resource (DESIGN.md §3).
    pub fn issuer(&self, id: &ResourceId) -> String {
        format!("{}/resources/{}", self.base_url, id)
    }

    /// Whether Moat is served over https (cookies get `Secure` and the `__Host-` prefix).
    pub fn secure(&self) -> bool {
        self.base_url.starts_with("https://")
    }

    /// Cookie name: `__Host-{name}` over https, plain `{name}` over http (browsers refuse
    /// `__Host-` cookies without `Secure`, DESIGN.md §6).
    pub fn cookie_name(&self, name: &str) -> String {
        if self.secure() { format!("__Host-{name}") } else { name.to_owned() }
    }

    /// The resource `id` names, through the short-lived cache.
    pub async fn resource(&self, id: &str) -> Result<Option<Arc<Resource>>, moat_store::StoreError> {
        let Some(id) = ResourceId::parse(id) else {
            return Ok(None);
        };
        self.resources.get(&self.store, &id).await
    }
}

/// Caches found resources for a few seconds (DESIGN.md §7: never a missing row, so a resource
/// created by the CLI is visible at once; updates show within the TTL).
pub struct ResourceCache {
    ttl: Duration,
    map: Mutex<HashMap<ResourceId, (Instant, Arc<Resource>)>>,
}

impl ResourceCache {
    pub fn new(ttl: Duration) -> Self {
        Self { ttl, map: Mutex::new(HashMap::new()) }
    }

    pub async fn get(
        &self,
        store: &DynStore,
        id: &ResourceId,
    ) -> Result<Option<Arc<Resource>>, moat_store::StoreError> {
        if !self.ttl.is_zero()
            && let Ok(map) = self.map.lock()
            && let Some((at, r)) = map.get(id)
            && at.elapsed() < self.ttl
        {
            return Ok(Some(Arc::clone(r)));
        }
        let found = store.get_resource(id).await?.map(Arc::new);
        if let Ok(mut map) = self.map.lock() {
            match &found {
                Some(r) if !self.ttl.is_zero() => {
                    if map.len() > 10_000 {
                        map.clear();
                    }
                    map.insert(id.clone(), (Instant::now(), Arc::clone(r)));
                }
                _ => {
                    map.remove(id);
                }
            }
        }
        Ok(found)
    }
}
