//! Sliding-window limiters for login failures (per account and per source address) and for
//! dynamic client registration (per source address).
//!
//! They are per instance by design (DESIGN.md §7 allows rate limits to be per instance): with
//! N instances an attacker gets at most N times the budget, which still bounds online guessing,
//! and nothing here must be consistent across instances. Memory is bounded: stale keys are
//! swept, and past `MAX_KEYS` the limiter refuses new keys (fails closed).

use std::collections::HashMap;
use std::sync::Mutex;

const MAX_KEYS: usize = 100_000;

/// At most `max` events per key within `window` seconds.
pub struct WindowLimiter {
    window: i64,
    max: u32,
    events: Mutex<HashMap<String, Vec<i64>>>,
}

impl WindowLimiter {
    pub fn new(max: u32, window: i64) -> Self {
        Self { window, max, events: Mutex::new(HashMap::new()) }
    }

    /// Whether another event for `key` is still within the budget (records nothing).
    pub fn allowed(&self, key: &str, now: i64) -> bool {
        let Ok(map) = self.events.lock() else {
            return false;
        };
        map.get(key).is_none_or(|v| (v.iter().filter(|t| now - **t < self.window).count() as u32) < self.max)
    }

    /// Records an event for `key`.
    pub fn record(&self, key: &str, now: i64) {
        let Ok(mut map) = self.events.lock() else {
            return;
        };
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, v| v.iter().any(|t| now - *t < window));
            if map.len() >= MAX_KEYS {
                return;
            }
        }
        let v = map.entry(key.to_owned()).or_default();
        v.retain(|t| now - *t < self.window);
        v.push(now);
    }

    /// Checks and records in one step; `false` (and nothing recorded) when over budget.
    pub fn try_acquire(&self, key: &str, now: i64) -> bool {
        let Ok(mut map) = self.events.lock() else {
            return false;
        };
        if map.len() >= MAX_KEYS && !map.contains_key(key) {
            let window = self.window;
            map.retain(|_, v| v.iter().any(|t| now - *t < window));
            if map.len() >= MAX_KEYS {
                return false;
            }
        }
        let v = map.entry(key.to_owned()).or_default();
        v.retain(|t| now - *t < self.window);
        if v.len() as u32 >= self.max {
            return false;
        }
        v.push(now);
        true
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
    fn window_budget() {
        let l = WindowLimiter::new(2, 60);
        assert!(l.try_acquire("a", 0));
        assert!(l.try_acquire("a", 1));
        assert!(!l.try_acquire("a", 2));
        assert!(l.try_acquire("b", 2), "keys are independent");
        assert!(l.try_acquire("a", 61), "old events leave the window");
    }

    #[test]
    fn record_allowed_reset() {
        let l = WindowLimiter::new(1, 60);
        assert!(l.allowed("x", 0));
        l.record("x", 0);
        assert!(!l.allowed("x", 10));
        l.reset("x");
        assert!(l.allowed("x", 10));
    }
}
