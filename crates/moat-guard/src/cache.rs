//! A bounded cache of already-verified tokens, keyed by the SHA-256 of the token (the token
//! itself is never stored). Entries die at the token's `exp`: a hit past `exp` is a miss (the
//! full validation then decides, with leeway), and full shards drop expired entries first.
//!
//! Sharded `RwLock`ed maps: hits take a read lock only. When a shard is full and nothing in it
//! has expired, an arbitrary entry is evicted (`HashMap` iteration order is randomised per
//! process), which is enough to keep memory bounded under a flood of distinct valid tokens.

use std::collections::HashMap;
use std::sync::RwLock;

use aws_lc_rs::digest;

use crate::claims::Claims;

const SHARDS: usize = 16;
/// Sweep a shard for expired entries every this many inserts into it.
const SWEEP_EVERY: u32 = 1024;

pub(crate) type TokenHash = [u8; 32];

pub(crate) fn hash_token(token: &str) -> TokenHash {
    let d = digest::digest(&digest::SHA256, token.as_bytes());
    let mut out = [0u8; 32];
    out.copy_from_slice(d.as_ref());
    out
}

#[derive(Clone)]
pub(crate) struct Entry {
    pub claims: Claims,
    /// Which issuer's key source verified it, and the key id: a hit is served only while that
    /// key is still published (a key Moat withdrew stops its cached tokens too).
    pub source: usize,
    pub kid: String,
    /// `exp` in milliseconds since the epoch.
    pub exp_ms: i128,
}

#[derive(Default)]
struct Shard {
    map: HashMap<TokenHash, Entry>,
    inserts: u32,
}

pub(crate) struct TokenCache {
    shards: Vec<RwLock<Shard>>,
    per_shard: usize,
}

impl TokenCache {
    /// `None` when `capacity` is 0 (cache disabled).
    pub fn new(capacity: usize) -> Option<Self> {
        if capacity == 0 {
            return None;
        }
        Some(Self {
            shards: (0..SHARDS).map(|_| RwLock::new(Shard::default())).collect(),
            per_shard: capacity.div_ceil(SHARDS),
        })
    }

    fn shard(&self, key: &TokenHash) -> Option<&RwLock<Shard>> {
        self.shards.get(usize::from(key[0]) % SHARDS)
    }

    /// The cached entry if present and not expired at `now_ms`; an expired entry is removed.
    pub fn get(&self, key: &TokenHash, now_ms: i128) -> Option<Entry> {
        let shard = self.shard(key)?;
        {
            let guard = shard.read().unwrap_or_else(|p| p.into_inner());
            match guard.map.get(key) {
                None => return None,
                Some(e) if now_ms < e.exp_ms => return Some(e.clone()),
                Some(_) => {}
            }
        }
        let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
        if guard.map.get(key).is_some_and(|e| now_ms >= e.exp_ms) {
            guard.map.remove(key);
        }
        None
    }

    /// Remembers a verified token until its `exp`.
    pub fn insert(&self, key: TokenHash, entry: Entry, now_ms: i128) {
        if entry.exp_ms <= now_ms {
            return;
        }
        let Some(shard) = self.shard(&key) else {
            return;
        };
        let mut guard = shard.write().unwrap_or_else(|p| p.into_inner());
        guard.inserts = guard.inserts.wrapping_add(1);
        if guard.map.len() >= self.per_shard || guard.inserts % SWEEP_EVERY == 0 {
            guard.map.retain(|_, e| now_ms < e.exp_ms);
        }
        if guard.map.len() >= self.per_shard {
            let victim = guard.map.keys().next().copied();
            if let Some(victim) = victim {
                guard.map.remove(&victim);
            }
        }
        guard.map.insert(key, entry);
    }

    /// Forgets one token (e.g. its key was withdrawn).
    pub fn remove(&self, key: &TokenHash) {
        if let Some(shard) = self.shard(key) {
            shard.write().unwrap_or_else(|p| p.into_inner()).map.remove(key);
        }
    }

    /// Number of cached tokens (including not yet swept expired ones).
    pub fn len(&self) -> usize {
        self.shards.iter().map(|s| s.read().unwrap_or_else(|p| p.into_inner()).map.len()).sum()
    }
}
