//! Single-flight fetches: concurrent lookups of one URL share one fetch, which runs in its own
//! task.
//!
//! The fetch must not run inside a caller's future: axum drops a handler's future when its
//! HTTP client disconnects, and a fetch dropped half-way would neither remove its entry from
//! the in-flight map (so the map would grow with every abandoned request, and later callers
//! would wait on a flight nobody drives) nor log, count and audit its outcome. A spawned task
//! always runs to the end; callers only wait for its result, and a caller that goes away just
//! stops waiting. What must be done for each caller whether or not it stays (the audit event of
//! the request that asked) travels with the flight as a waiter and is done by the task
//! ([`SingleFlight::run_with`]).

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};

use tokio::sync::watch;

struct Flight<T, W> {
    id: u64,
    result: watch::Receiver<Option<T>>,
    /// Whoever asked for this flight and wants its outcome reported (see
    /// [`SingleFlight::run_with`]).
    waiters: Vec<W>,
}

struct Map<T, W> {
    flights: HashMap<String, Flight<T, W>>,
    next_id: u64,
}

/// The flights in progress, by key (cheap to clone; clones share the map). `W` is what a
/// caller leaves with a flight to have its outcome reported to it (`()` when nothing is).
pub struct SingleFlight<T, W = ()> {
    map: Arc<Mutex<Map<T, W>>>,
}

impl<T, W> Clone for SingleFlight<T, W> {
    fn clone(&self) -> Self {
        Self { map: Arc::clone(&self.map) }
    }
}

impl<T, W> Default for SingleFlight<T, W> {
    fn default() -> Self {
        Self { map: Arc::new(Mutex::new(Map { flights: HashMap::new(), next_id: 0 })) }
    }
}

/// A lookup that would have started a flight was not admitted (see [`SingleFlight::run_with`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NotAdmitted;

/// The map stays consistent even if a holder panicked (every update is a single insert, push or
/// remove), so a poisoned lock is simply taken over.
fn lock<T, W>(m: &Mutex<Map<T, W>>) -> MutexGuard<'_, Map<T, W>> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

/// Removes a flight's entry when its task ends, however it ends (normally, by panic, or by
/// being cancelled at runtime shutdown).
struct Landing<T, W> {
    map: Arc<Mutex<Map<T, W>>>,
    key: String,
    id: u64,
}

impl<T, W> Landing<T, W> {
    /// Removes this flight's entry and hands over its waiters. Only this flight's entry: a newer
    /// flight for the same key may have replaced it. Waiters join under the same lock, so once
    /// this returns nobody can join any more, and every caller that did is in the list.
    fn land(&self) -> Vec<W> {
        let mut map = lock(&self.map);
        if map.flights.get(&self.key).is_some_and(|f| f.id == self.id) {
            map.flights.remove(&self.key).map(|f| f.waiters).unwrap_or_default()
        } else {
            Vec::new()
        }
    }
}

impl<T, W> Drop for Landing<T, W> {
    fn drop(&mut self) {
        // After a normal landing the entry is already gone and this finds nothing.
        self.land();
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
        // Admission always succeeds here, so the error arm cannot be taken.
        self.run_with(key, None, || true, work, |_, _: Vec<()>| async {}).await.ok().flatten()
    }
}

impl<T: Clone + Send + Sync + 'static, W: Send + 'static> SingleFlight<T, W> {
    /// As [`SingleFlight::run`], and:
    ///
    /// - `waiter`, when given, is left with the flight (the one started or the one joined) and
    ///   handed to the starter's `report` together with the outcome, in the flight's own task,
    ///   before the outcome is published. A caller that goes away mid-flight is still reported
    ///   to (that is the point: what must happen for every caller cannot run in the caller's
    ///   future, which axum drops when the HTTP client disconnects); a caller that stays is
    ///   reported to once, by the flight, and need not do it itself.
    /// - `admit` is asked, under the map's lock, only when this call would start a new flight
    ///   (joining one costs nothing new); when it says no, nothing starts and the result is
    ///   [`NotAdmitted`].
    pub async fn run_with<A, F, Fut, R, RFut>(
        &self,
        key: &str,
        waiter: Option<W>,
        admit: A,
        work: F,
        report: R,
    ) -> Result<Option<T>, NotAdmitted>
    where
        A: FnOnce() -> bool,
        F: FnOnce() -> Fut,
        Fut: Future<Output = T> + Send + 'static,
        R: FnOnce(&T, Vec<W>) -> RFut + Send + 'static,
        RFut: Future<Output = ()> + Send + 'static,
    {
        let (mut result, start) = {
            let mut map = lock(&self.map);
            if let Some(f) = map.flights.get_mut(key) {
                f.waiters.extend(waiter);
                (f.result.clone(), None)
            } else {
                if !admit() {
                    return Err(NotAdmitted);
                }
                map.next_id = map.next_id.wrapping_add(1);
                let id = map.next_id;
                let (tx, rx) = watch::channel(None);
                let waiters = waiter.into_iter().collect();
                map.flights.insert(key.to_owned(), Flight { id, result: rx.clone(), waiters });
                (rx, Some((tx, id)))
            }
        };
        if let Some((tx, id)) = start {
            let landing = Landing { map: Arc::clone(&self.map), key: key.to_owned(), id };
            let fut = work();
            tokio::spawn(async move {
                let outcome = fut.await;
                // Leave the map before reporting and publishing: whoever looks the key up from
                // now on finds the cache (or, for what is not cached, starts afresh) instead of
                // a finished flight, and the list of waiters is final.
                let waiters = landing.land();
                report(&outcome, waiters).await;
                // Nobody may be waiting any more (every caller went away): that is fine.
                let _ = tx.send(Some(outcome));
            });
        }
        Ok(result.wait_for(Option::is_some).await.ok().and_then(|r| r.clone()))
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

    #[tokio::test]
    async fn every_waiter_is_reported_once_even_after_it_went_away() {
        let flights = SingleFlight::<u8, &'static str>::default();
        let reported = Arc::new(Mutex::new(Vec::new()));
        let run = |who: &'static str| {
            let flights = flights.clone();
            let reported = Arc::clone(&reported);
            async move {
                flights
                    .run_with(
                        "k",
                        Some(who),
                        || true,
                        || async {
                            tokio::time::sleep(Duration::from_millis(100)).await;
                            7
                        },
                        move |outcome: &u8, waiters: Vec<&'static str>| {
                            let outcome = *outcome;
                            async move {
                                let mut r = reported.lock().unwrap_or_else(PoisonError::into_inner);
                                r.extend(waiters.into_iter().map(|w| (w, outcome)));
                            }
                        },
                    )
                    .await
            }
        };
        let starter = tokio::spawn(run("starter"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        let leaver = tokio::spawn(run("leaver"));
        tokio::time::sleep(Duration::from_millis(20)).await;
        leaver.abort();
        let stayer = run("stayer").await;
        assert_eq!(stayer, Ok(Some(7)));
        assert_eq!(starter.await.ok(), Some(Ok(Some(7))));
        let mut got = reported.lock().unwrap_or_else(PoisonError::into_inner).clone();
        got.sort_unstable();
        assert_eq!(got, [("leaver", 7), ("starter", 7), ("stayer", 7)], "each once, by the flight");
        assert!(flights.is_empty());
    }

    #[tokio::test]
    async fn admission_is_asked_only_to_start_a_flight() {
        let flights = SingleFlight::<u8>::default();
        let refused = flights.run_with("k", None, || false, || async { 1 }, |_, _| async {}).await;
        assert_eq!(refused, Err(NotAdmitted));
        assert!(flights.is_empty(), "nothing started");
        let asked = Arc::new(AtomicUsize::new(0));
        let call = |admit: bool| {
            let flights = flights.clone();
            let asked = Arc::clone(&asked);
            async move {
                let admit = move || {
                    asked.fetch_add(1, Ordering::SeqCst);
                    admit
                };
                let work = || async {
                    tokio::time::sleep(Duration::from_millis(100)).await;
                    2
                };
                flights.run_with("k", None, admit, work, |_, _| async {}).await
            }
        };
        let starter = tokio::spawn(call(true));
        tokio::time::sleep(Duration::from_millis(20)).await;
        // A caller that would be refused a flight of its own still joins the one under way.
        assert_eq!(call(false).await, Ok(Some(2)));
        assert_eq!(starter.await.ok(), Some(Ok(Some(2))));
        assert_eq!(asked.load(Ordering::SeqCst), 1, "only the starter was asked");
    }
}
