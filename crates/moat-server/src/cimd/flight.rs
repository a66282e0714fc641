//! Single-flight fetches: concurrent lookups of one URL share one fetch, which runs in its own
//! task.
//!
//! The fetch must not run inside a caller's future: axum drops a handler's future when its
//! HTTP client disconnects, and a fetch dropped half-way would neither remove its entry from
//! the in-flight map (so the map would grow with every abandoned request, and later callers
//! would wait on a flight nobody drives) nor log and count its outcome. A spawned task always
//! runs to the end; callers only wait for its result, and a caller that goes away just stops
//! waiting.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

struct Flight<T> {
    id: u64,
    result: watch::Receiver<Option<T>>,
}

struct Map<T> {
    flights: HashMap<String, Flight<T>>,
    next_id: u64,
}

/// The flights in progress, by key (cheap to clone; clones share the map).
pub struct SingleFlight<T> {
    map: Arc<Mutex<Map<T>>>,
}

impl<T> Clone for SingleFlight<T> {
    fn clone(&self) -> Self {
        Self { map: Arc::clone(&self.map) }
    }
}

impl<T> Default for SingleFlight<T> {
    fn default() -> Self {
        Self { map: Arc::new(Mutex::new(Map { flights: HashMap::new(), next_id: 0 })) }
    }
}

/// The map stays consistent even if a holder panicked (every update is a single insert or
/// remove), so a poisoned lock is simply taken over.
fn lock<T>(m: &Mutex<Map<T>>) -> MutexGuard<'_, Map<T>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a flight's entry when its task ends, however it ends (normally, by panic, or by
/// being cancelled at runtime shutdown).
struct Landing<T> {
    map: Arc<Mutex<Map<T>>>,
    key: String,
    id: u64,
}

impl<T> Drop for Landing<T> {
    fn drop(&mut self) {
        let mut map = lock(&self.map);
        // Only this flight's entry: a newer flight for the same key may have replaced it.
        if map.flights.get(&self.key).is_some_and(|f| f.id == self.id) {
            map.flights.remove(&self.key);
        }
    }
}

impl<T: Clone + Send + Sync + 'static> SingleFlight<T> {
    /// The outcome of the flight for `key`: joins the one in progress, or starts `work()` in a
    /// new task. `None` only when the task ended without an outcome (it panicked, or the
    /// runtime is shutting down).
    pub async fn run<F, Fut>(&self, key: &str, work: F) -> Option<T>
    where
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
    {
        let (mut result, start) = {
            let mut map = lock(&self.map);
            match map.flights.get(key) {
                Some(f) => (f.result.clone(), None),
                None => {
                    map.next_id = map.next_id.wrapping_add(1);
                    let id = map.next_id;
                    let (tx, rx) = watch::channel(None);
                    map.flights.insert(key.to_owned(), Flight { id, result: rx.clone() });
                    (rx, Some((tx, id)))
                }
            }
        };
        if let Some((tx, id)) = start {
            let landing = Landing { map: Arc::clone(&self.map), key: key.to_owned(), id };
            let fut = work();
            tokio::spawn(async move {
                let outcome = fut.await;
                // Leave the map before publishing: whoever looks the key up from now on
                // finds the cache (or, for what is not cached, starts afresh) instead of a
                // finished flight.
                drop(landing);
                // Nobody may be waiting any more (every caller went away): that is fine.
                let _ = tx.send(Some(outcome));
            });
        }
        result.wait_for(Option::is_some).await.ok().and_then(|r| r.clone())
    }

    /// Flights in progress (for tests and diagnostics).
    pub fn len(&self) -> usize {
        lock(&self.map).flights.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};
    use std::time::Duration;

    use super::*;

    #[tokio::test]
    async fn concurrent_callers_share_one_run() {
        let flights = SingleFlight::<usize>::default();
        let runs = Arc::new(AtomicUsize::new(0));
        let calls = (0..10).map(|_| {
            let runs = Arc::clone(&runs);
            let flights = flights.clone();
            async move {
                flights
                    .run("k", move || async move {
                        tokio::time::sleep(Duration::from_millis(50)).await;
                        runs.fetch_add(1, Ordering::SeqCst) + 1
                    })
                    .await
            }
        });
        let results = futures::future::join_all(calls).await;
        assert!(results.iter().all(|r| *r == Some(1)), "{results:?}");
        assert_eq!(runs.load(Ordering::SeqCst), 1);
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn a_cancelled_caller_does_not_strand_the_flight() {
        let flights = SingleFlight::<u8>::default();
        let done = Arc::new(AtomicUsize::new(0));
        let caller = {
            let flights = flights.clone();
            let done = Arc::clone(&done);
            tokio::spawn(async move {
                flights
                    .run("k", move || async move {
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        done.fetch_add(1, Ordering::SeqCst);
                        7
                    })
                    .await
            })
        };
        tokio::time::sleep(Duration::from_millis(20)).await;
        assert_eq!(flights.len(), 1);
        caller.abort();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(done.load(Ordering::SeqCst), 1, "the work ran to the end");
        assert!(flights.is_empty(), "and left the map");
    }

    #[tokio::test]
    async fn a_panicking_flight_leaves_the_map_and_reports_none() {
        let flights = SingleFlight::<u8>::default();
        let out = flights
            .run("k", || async {
                if flights_panic() {
                    panic!("boom");
                }
                1
            })
            .await;
        assert_eq!(out, None);
        assert!(flights.is_empty());
    }

    fn flights_panic() -> bool {
        true
    }
}
