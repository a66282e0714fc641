//! Sliding-window limiters for login attempts (per account and per source address) and for
//! dynamic client registration (per source address).
//!
//! They are per instance by design (DESIGN.md §7 allows rate limits to be per instance): with
//! N instances an attacker gets at most N times the budget, which still bounds online guessing,
//! and nothing here must be consistent across instances. Memory is bounded: stale keys are
//! swept, and past the key capacity the limiter refuses new keys (fails closed).
//!
//! There is deliberately no separate "is it allowed?" check followed by a later "record it":
//! that pair let every request that arrived before the first one was recorded through (a
//! concurrency bypass). The only way to spend budget is [`WindowLimiter::try_acquire`], which
//! checks and records under one lock; callers give back what turned out not to count with
//! [`WindowLimiter::release`] or [`WindowLimiter::reset`].

use std::collections::HashMap;
use std::net::{IpAddr, Ipv6Addr};
use std::sync::Mutex;

/// The key a source address is limited under: an IPv6 address by its /64, because a single
/// subscriber is normally given a whole /64 and could otherwise take a fresh address (and a
/// fresh budget, or a fresh slot of a limiter's key table) for every request. IPv4 (also
/// IPv4-mapped IPv6) by address. Anything else as given.
pub fn address_key(ip: &str) -> String {
    match ip.parse::<IpAddr>().map(|a| a.to_canonical()) {
        Ok(IpAddr::V6(v6)) => format!("{}/64", Ipv6Addr::from(u128::from(v6) & (u128::MAX << 64))),
        Ok(IpAddr::V4(v4)) => v4.to_string(),
        Err(_) => ip.to_owned(),
    }
}

/// Keys tracked per limiter in production; bounds memory at a few MiB per limiter.
const MAX_KEYS: usize = 100_000;

/// At most `max` events per key within `window` seconds.
pub struct WindowLimiter {
    window: i64,
    max: u32,
    max_keys: usize,
    events: Mutex<HashMap<String, Vec<i64>>>,
}

impl WindowLimiter {
    pub fn new(max: u32, window: i64) -> Self {
        Self::with_max_keys(max, window, MAX_KEYS)
    }

    /// As [`WindowLimiter::new`], tracking at most `max_keys` keys (small in tests, so the
    /// full-table behaviour can be exercised).
    pub fn with_max_keys(max: u32, window: i64, max_keys: usize) -> Self {
        Self { window, max, max_keys, events: Mutex::new(HashMap::new()) }
    }

    /// Checks and records an event for `key` in one step; `false` (and nothing recorded) when
    /// over budget. Fails closed: a poisoned lock, or a full key table with `key` not in it
    /// (after sweeping expired keys), refuses rather than letting an untracked key through,
    /// since an attacker who could fill the table would otherwise get unlimited attempts.
    pub fn try_acquire(&self, key: &str, now: i64) -> bool {
        let Ok(mut map) = self.events.lock() else {
            return false;
        };
        let window = self.window;
        if let Some(v) = map.get_mut(key) {
            v.retain(|t| now - *t < window);
            if v.len() as u32 >= self.max {
                return false;
            }
            v.push(now);
            return true;
        }
        // Checked before inserting so a zero budget does not leave empty entries behind.
        if self.max == 0 {
            return false;
        }
        if map.len() >= self.max_keys {
            map.retain(|_, v| v.iter().any(|t| now - *t < window));
            if map.len() >= self.max_keys {
                return false;
            }
        }
        map.insert(key.to_owned(), vec![now]);
        true
    }

    /// Gives back one event that [`WindowLimiter::try_acquire`] recorded for `key` at `at`,
    /// for an attempt that turned out not to count (e.g. a successful login, or one refused
    /// by another limiter). Events are bare timestamps, so any one recorded at `at` will do.
    pub fn release(&self, key: &str, at: i64) {
        let Ok(mut map) = self.events.lock() else {
            return;
        };
        let Some(v) = map.get_mut(key) else {
            return;
        };
        if let Some(i) = v.iter().rposition(|t| *t == at) {
            v.swap_remove(i);
        }
        // An empty entry would still occupy a slot of the key table.
        if v.is_empty() {
            map.remove(key);
        }
    }

    /// Forgets `key` (e.g. after a successful login).
    pub fn reset(&self, key: &str) {
        if let Ok(mut map) = self.events.lock() {
            map.remove(key);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_keys() {
        assert_eq!(address_key("198.51.100.7"), "198.51.100.7");
        assert_eq!(address_key("::ffff:198.51.100.7"), "198.51.100.7", "IPv4-mapped counts as the IPv4 address");
        assert_eq!(address_key("2001:db8:1:2:aaaa::1"), "2001:db8:1:2::/64");
        assert_eq!(address_key("2001:db8:1:2:bbbb::9"), address_key("2001:db8:1:2::1"), "one /64, one budget");
        assert_ne!(address_key("2001:db8:1:3::1"), address_key("2001:db8:1:2::1"));
        assert_eq!(address_key("unknown"), "unknown");
    }

    #[test]
    fn window_budget() {
        let l = WindowLimiter::new(2, 60);
        assert!(l.try_acquire("a", 0));
        assert!(l.try_acquire("a", 1));
        assert!(!l.try_acquire("a", 2));
        assert!(l.try_acquire("b", 2), "keys are independent");
        assert!(l.try_acquire("a", 61), "old events leave the window");
    }

    #[test]
    fn release_and_reset_give_budget_back() {
        let l = WindowLimiter::new(1, 60);
        assert!(l.try_acquire("x", 0));
        assert!(!l.try_acquire("x", 10));
        l.release("x", 0);
        assert!(l.try_acquire("x", 10), "released");
        l.release("x", 99);
        assert!(!l.try_acquire("x", 11), "releasing an event never recorded gives nothing back");
        l.reset("x");
        assert!(l.try_acquire("x", 12), "reset");
    }

    #[test]
    fn zero_budget_refuses_everything() {
        let l = WindowLimiter::with_max_keys(0, 60, 1);
        assert!(!l.try_acquire("a", 0));
        assert!(!l.try_acquire("b", 0), "no empty entry took the only slot");
    }

    #[test]
    fn full_key_table_fails_closed() {
        let l = WindowLimiter::with_max_keys(5, 60, 2);
        assert!(l.try_acquire("a", 0));
        assert!(l.try_acquire("b", 0));
        assert!(!l.try_acquire("c", 1), "a new key is refused while the table is full");
        assert!(!l.try_acquire("c", 2), "and stays refused: nothing was recorded for it");
        assert!(l.try_acquire("a", 2), "tracked keys keep their budget");
        // Releasing a key's only event frees its slot.
        l.release("b", 0);
        assert!(l.try_acquire("c", 3));
        assert!(!l.try_acquire("d", 3));
        // Once entries expire they are swept to make room.
        assert!(l.try_acquire("d", 63), "a and c expired and were swept");
        assert!(l.try_acquire("e", 63));
        assert!(!l.try_acquire("f", 63));
    }
}
