//! A cache bounded by bytes as well as entries, for what Moat fetched from client-supplied URLs.
//!
//! Anyone can make Moat fetch a document, key set or logo (the URL is the `client_id` or
//! comes from the client's document), before any client authentication. An entry-count bound
//! alone would let those fetches hold `entries × largest body` bytes, so every entry is
//! charged what it actually holds — the raw body (values are kept as received, in exactly
//! sized buffers, never as a parsed `serde_json::Value`, which costs many times the wire size),
//! its key, and a fixed allowance for the bookkeeping — against a byte budget. When a new
//! entry does not fit, the entries that expire soonest go first (already stale ones are the
//! soonest of all), so eviction costs O(log n).

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

/// What an entry costs beyond its payload and key: the map slot and entry struct, the
/// expiry-index node, and allocator headers. An allowance, not an exact figure; generous on
/// purpose so that many tiny entries cannot undercut the budget.
pub const ENTRY_OVERHEAD: usize = 256;

struct Slot<V> {
    value: V,
    cost: usize,
    fresh_until: Instant,
    /// The slot's key in `order`.
    order: (Instant, u64),
}

/// A map from URL-like keys to values with a freshness deadline, bounded by a byte budget and
/// an entry count.
pub struct ByteCache<V> {
    budget: usize,
    max_entries: usize,
    used: usize,
    entries: HashMap<String, Slot<V>>,
    /// Entries by expiry (then insertion), the eviction order.
    order: BTreeMap<(Instant, u64), String>,
    seq: u64,
}

impl<V: Clone> ByteCache<V> {
    pub fn new(budget: usize, max_entries: usize) -> Self {
        Self { budget, max_entries, used: 0, entries: HashMap::new(), order: BTreeMap::new(), seq: 0 }
    }

    /// What an entry with `payload` bytes under `key` is charged. The key is held twice (map
    /// and expiry index).
    pub fn cost(key: &str, payload: usize) -> usize {
        payload.saturating_add(key.len().saturating_mul(2)).saturating_add(ENTRY_OVERHEAD)
    }

    /// The value under `key` with its freshness deadline, fresh or not.
    pub fn get(&self, key: &str) -> Option<(V, Instant)> {
        self.entries.get(key).map(|s| (s.value.clone(), s.fresh_until))
    }

    /// The value under `key` if it is still fresh at `now`.
    pub fn fresh(&self, key: &str, now: Instant) -> Option<V> {
        self.entries.get(key).filter(|s| now < s.fresh_until).map(|s| s.value.clone())
    }

    /// Stores `value` (holding `payload` bytes) until `fresh_until`, evicting the soonest-expiring
    /// entries as needed. Returns false, storing nothing, when the entry alone exceeds the
    /// budget.
    pub fn insert(&mut self, key: &str, value: V, payload: usize, fresh_until: Instant) -> bool {
        self.remove(key);
        let cost = Self::cost(key, payload);
        if cost > self.budget || self.max_entries == 0 {
            return false;
        }
        while self.used.saturating_add(cost) > self.budget || self.entries.len() >= self.max_entries {
            let Some((_, victim)) = self.order.pop_first() else { break };
            if let Some(slot) = self.entries.remove(&victim) {
                self.used = self.used.saturating_sub(slot.cost);
            }
        }
        self.seq = self.seq.wrapping_add(1);
        let order = (fresh_until, self.seq);
        self.order.insert(order, key.to_owned());
        self.entries.insert(key.to_owned(), Slot { value, cost, fresh_until, order });
        self.used = self.used.saturating_add(cost);
        true
    }

    pub fn remove(&mut self, key: &str) {
        if let Some(slot) = self.entries.remove(key) {
            self.order.remove(&slot.order);
            self.used = self.used.saturating_sub(slot.cost);
        }
    }

    /// Bytes currently charged.
    pub fn used(&self) -> usize {
        self.used
    }

    pub fn len(&self) -> usize {
        self.entries.len()
    }

    pub fn is_empty(&self) -> bool {
        self.entries.is_empty()
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn byte_budget_evicts_soonest_expiring_first() {
        let now = Instant::now();
        let at = |s: u64| now + Duration::from_secs(s);
        let each = ByteCache::<u8>::cost("k0", 1000);
        let mut c = ByteCache::new(3 * each, 100);
        assert!(c.insert("k0", 0, 1000, at(300)));
        assert!(c.insert("k1", 1, 1000, at(10)));
        assert!(c.insert("k2", 2, 1000, at(600)));
        assert_eq!(c.used(), 3 * each);
        // A fourth does not fit: k1, the soonest to expire, goes.
        assert!(c.insert("k3", 3, 1000, at(60)));
        assert_eq!(c.len(), 3);
        assert!(c.get("k1").is_none());
        assert!(c.used() <= 3 * each);
        // A big one pushes out as many as needed, soonest first (k3, then k0).
        assert!(c.insert("big", 9, 2 * each - ByteCache::<u8>::cost("big", 0), at(30)));
        assert!(c.get("k3").is_none() && c.get("k0").is_none());
        assert_eq!(c.fresh("k2", now), Some(2));
        assert!(c.used() <= 3 * each);
        // Larger than the whole budget: not stored, nothing evicted.
        assert!(!c.insert("huge", 0, 3 * each, at(30)));
        assert_eq!(c.fresh("k2", now), Some(2));
    }

    #[test]
    fn replacing_and_entry_limit_keep_the_books_right() {
        let now = Instant::now();
        let mut c = ByteCache::new(1 << 20, 2);
        assert!(c.insert("a", 1, 100, now + Duration::from_secs(5)));
        assert!(c.insert("a", 2, 10, now + Duration::from_secs(50)));
        assert_eq!(c.len(), 1);
        assert_eq!(c.used(), ByteCache::<u8>::cost("a", 10));
        assert!(c.insert("b", 3, 10, now + Duration::from_secs(1)));
        assert!(c.insert("c", 4, 10, now + Duration::from_secs(100)));
        assert_eq!(c.len(), 2, "entry limit");
        assert!(c.get("b").is_none(), "soonest expiring evicted");
        // Stale entries are kept (and charged) until evicted, but not fresh.
        assert_eq!(c.fresh("a", now + Duration::from_secs(60)), None);
        assert_eq!(c.get("a").map(|(v, _)| v), Some(2));
        c.remove("a");
        c.remove("c");
        assert!(c.is_empty());
        assert_eq!(c.used(), 0);
    }
}
