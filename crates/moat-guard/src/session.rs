//! MCP session binding: each `Mcp-Session-Id` the protected server hands out is remembered
//! with the `(iss, sub, client_id)` of the token that received it, and a later request naming
//! that session under another user or client is refused with `404` before it reaches the server.
//!
//! Why: the MCP security best practices (Session Hijacking) say servers SHOULD bind session IDs
//! to user-specific information and MUST NOT use sessions for authentication. Every request is
//! still authenticated by its own token; the binding only stops one user from using, attaching
//! to (`GET`) or ending (`DELETE`) a session another user created. `404` is what the streamable
//! HTTP transport answers for a session it does not know (MCP basic/transports, session
//! management), so a well-formed request gets the same answer as for an unknown session, and a
//! conforming client that gets it starts a new session. (A malformed one can tell the two apart:
//! rmcp checks `Accept` and `Content-Type` before the session, the guard after the token.)
//!
//! Memory is bounded: at most `max_bound_sessions` bindings (least recently used forgotten
//! first), at most `max_bound_sessions_per_user` per owner (that user's least recently
//! used forgotten first, so one account opening sessions in a loop cannot push other users'
//! bindings out), each forgotten after `session_idle_ttl` without a request, or when its owner
//! ends it with a successful `DELETE`. Session ids and owners are stored as SHA-256 digests:
//! the ids, which are bearer-like handles, never sit in memory here, and every entry has the
//! same small size whatever the length of `sub`.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use aws_lc_rs::digest;
use http::{HeaderMap, Method, StatusCode};

use crate::claims::Claims;
use crate::guard::{Guard, Rejection};

/// The session header of the streamable HTTP transport (MCP basic/transports).
pub(crate) const MCP_SESSION_ID: &str = "mcp-session-id";

/// The body rmcp's streamable HTTP service sends with its `404` for an unknown session; the
/// guard sends the same, so a refused request looks like one for a session that does not exist.
pub(crate) const SESSION_NOT_FOUND_BODY: &str = "Not Found: Session not found";

type Digest = [u8; 32];

fn sha256(parts: &[&[u8]]) -> Digest {
    let mut ctx = digest::Context::new(&digest::SHA256);
    for part in parts {
        ctx.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(ctx.finish().as_ref());
    out
}

fn session_digest(id: &[u8]) -> Digest {
    sha256(&[id])
}

/// The owner digest: `iss` is length-prefixed so that no two `(iss, sub)` pairs share the
/// input (`("a", "bc")` and `("ab", "c")` differ).
/// The owner of a session: the user (`iss`, `sub`) and the client (`client_id`) that made it.
/// The client is part of it so that another app the same user once authorized (perhaps a less
/// trusted one) cannot use, attach to or end this app's session. Refresh and step-up keep the
/// `client_id`, so the owner stays the same for the session's life. Lengths are prefixed so no
/// two different triples hash alike.
fn owner_digest(iss: &str, sub: &str, client_id: &str) -> Digest {
    let len = |s: &str| u64::try_from(s.len()).unwrap_or(u64::MAX).to_be_bytes();
    sha256(&[&len(iss), iss.as_bytes(), &len(sub), sub.as_bytes(), client_id.as_bytes()])
}

/// What the bindings say about a session for a given caller.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Lookup {
    /// Never bound, forgotten, or idle past the TTL: the server decides.
    Unknown,
    /// Bound to the caller.
    Owner,
    /// Bound to someone else.
    Foreign,
}

struct Binding {
    owner: Digest,
    last_seen: Instant,
    /// Position in the recency order (`State::by_age` and the owner's map).
    stamp: u64,
}

#[derive(Default)]
struct State {
    by_session: HashMap<Digest, Binding>,
    /// Every binding by recency; the first is the least recently used.
    by_age: BTreeMap<u64, Digest>,
    /// Each owner's bindings by recency.
    by_owner: HashMap<Digest, BTreeMap<u64, Digest>>,
    next_stamp: u64,
}

impl State {
    fn stamp(&mut self) -> u64 {
        let s = self.next_stamp;
        self.next_stamp = self.next_stamp.wrapping_add(1);
        s
    }

    fn remove(&mut self, session: &Digest) {
        let Some(b) = self.by_session.remove(session) else {
            return;
        };
        self.by_age.remove(&b.stamp);
        if let Some(own) = self.by_owner.get_mut(&b.owner) {
            own.remove(&b.stamp);
            if own.is_empty() {
                self.by_owner.remove(&b.owner);
            }
        }
    }

    /// Marks a binding as used now (moves it to the most recent end).
    fn touch(&mut self, session: &Digest, now: Instant) {
        let stamp = self.stamp();
        let Some(b) = self.by_session.get_mut(session) else {
            return;
        };
        let old = std::mem::replace(&mut b.stamp, stamp);
        b.last_seen = now;
        let owner = b.owner;
        self.by_age.remove(&old);
        self.by_age.insert(stamp, *session);
        if let Some(own) = self.by_owner.get_mut(&owner) {
            own.remove(&old);
            own.insert(stamp, *session);
        }
    }

    /// Drops bindings idle for `ttl` or more, from the least recently used end.
    fn sweep(&mut self, now: Instant, ttl: Duration) {
        while let Some((&stamp, &session)) = self.by_age.first_key_value() {
            let idle = self.by_session.get(&session).is_none_or(|b| now.saturating_duration_since(b.last_seen) >= ttl);
            if !idle {
                break;
            }
            // Removed from the order directly, so the loop always progresses.
            self.by_age.remove(&stamp);
            self.remove(&session);
        }
    }
}

/// The bounded map session digest → owner digest.
pub(crate) struct SessionBindings {
    capacity: usize,
    per_owner: usize,
    idle_ttl: Duration,
    state: Mutex<State>,
}

impl SessionBindings {
    /// `None` when either limit is 0 (binding disabled).
    pub(crate) fn new(capacity: usize, per_owner: usize, idle_ttl: Duration) -> Option<Self> {
        if capacity == 0 || per_owner == 0 {
            return None;
        }
        Some(Self { capacity, per_owner, idle_ttl, state: Mutex::new(State::default()) })
    }

    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        // A panic elsewhere while holding the lock leaves consistent-enough maps (each mutation
        // is a few map operations); keep serving rather than propagate the poison.
        self.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// Who owns `session`, for `owner`; a binding of the caller counts as used now.
    pub(crate) fn lookup(&self, session: &Digest, owner: &Digest, now: Instant) -> Lookup {
        let mut st = self.state();
        st.sweep(now, self.idle_ttl);
        let Some(b) = st.by_session.get(session) else {
            return Lookup::Unknown;
        };
        // The sweep stops at the first live entry; an idle one can sit behind it when two
        // requests raced for the lock, so check this one explicitly.
        if now.saturating_duration_since(b.last_seen) >= self.idle_ttl {
            st.remove(session);
            return Lookup::Unknown;
        }
        if b.owner != *owner {
            return Lookup::Foreign;
        }
        st.touch(session, now);
        Lookup::Owner
    }

    /// Binds `session` to `owner`. An existing binding is never moved to another owner: the
    /// first `(iss, sub)` that received the id keeps it.
    pub(crate) fn bind(&self, session: Digest, owner: Digest, now: Instant) {
        let mut st = self.state();
        st.sweep(now, self.idle_ttl);
        if let Some(b) = st.by_session.get(&session) {
            if b.owner == owner {
                st.touch(&session, now);
            }
            return;
        }
        // Per-owner limit first: the owner's own least recently used binding makes room.
        let own_oldest = st
            .by_owner
            .get(&owner)
            .filter(|m| m.len() >= self.per_owner)
            .and_then(|m| m.first_key_value().map(|(_, s)| *s));
        if let Some(victim) = own_oldest {
            st.remove(&victim);
        }
        while st.by_session.len() >= self.capacity {
            // Popped from the order directly, so the loop always progresses.
            let Some((_, victim)) = st.by_age.pop_first() else {
                break;
            };
            st.remove(&victim);
        }
        let stamp = st.stamp();
        st.by_session.insert(session, Binding { owner, last_seen: now, stamp });
        st.by_age.insert(stamp, session);
        st.by_owner.entry(owner).or_default().insert(stamp, session);
    }

    /// Forgets `session` if `owner` owns it.
    pub(crate) fn forget(&self, session: &Digest, owner: &Digest) {
        let mut st = self.state();
        if st.by_session.get(session).is_some_and(|b| b.owner == *owner) {
            st.remove(session);
        }
    }

    /// Number of remembered bindings (idle ones not yet swept included).
    #[cfg(test)]
    pub(crate) fn len(&self) -> usize {
        self.state().by_session.len()
    }
}

/// What [`Guard::check_session`] learnt about a request, for
/// [`Guard::record_session_response`] once the server has answered.
#[derive(Debug, Clone)]
pub struct SessionCheck {
    owner: Digest,
    /// Digests of the request's session ids bound to the caller.
    owned: Vec<Digest>,
    delete: bool,
}

impl Guard {
    /// Checks the `Mcp-Session-Id` values of an authenticated request against the sessions'
    /// owners: a session bound to another `(iss, sub)` is refused with
    /// [`Rejection::SessionNotFound`] (`404`); unknown sessions pass (the server decides).
    /// The tower layer calls this after [`Guard::admit`]; other integrations call it, then
    /// [`Guard::record_session_response`] with the server's answer.
    pub fn check_session(
        &self,
        claims: &Claims,
        method: &Method,
        headers: &HeaderMap,
    ) -> Result<SessionCheck, Rejection> {
        let owner = owner_digest(claims.iss(), claims.sub(), claims.client_id());
        let mut check = SessionCheck { owner, owned: Vec::new(), delete: method == Method::DELETE };
        let Some(bindings) = self.session_bindings() else {
            return Ok(check);
        };
        let now = Instant::now();
        // Every value is checked, whichever one the server reads, so a second header cannot
        // smuggle another user's session past the first.
        for value in headers.get_all(MCP_SESSION_ID) {
            let session = session_digest(value.as_bytes());
            match bindings.lookup(&session, &owner, now) {
                Lookup::Unknown => {}
                Lookup::Owner => check.owned.push(session),
                Lookup::Foreign => {
                    tracing::info!(
                        sub = claims.sub(),
                        "moat-guard: request names an MCP session bound to another user; answered 404"
                    );
                    return Err(Rejection::SessionNotFound);
                }
            }
        }
        Ok(check)
    }

    /// Records the server's answer: a successful response carrying `Mcp-Session-Id` (the
    /// initialize response of the streamable HTTP transport) binds that session to the caller;
    /// a successful `DELETE` of the caller's own session forgets it (the client ended it, MCP
    /// basic/transports).
    pub fn record_session_response(&self, check: &SessionCheck, status: StatusCode, headers: &HeaderMap) {
        let Some(bindings) = self.session_bindings() else {
            return;
        };
        if !status.is_success() {
            return;
        }
        if check.delete {
            for session in &check.owned {
                bindings.forget(session, &check.owner);
            }
        }
        let now = Instant::now();
        for value in headers.get_all(MCP_SESSION_ID) {
            bindings.bind(session_digest(value.as_bytes()), check.owner, now);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn d(n: u8) -> Digest {
        [n; 32]
    }

    #[test]
    fn owner_digest_is_unambiguous() {
        assert_ne!(owner_digest("a", "bc", "c"), owner_digest("ab", "c", "c"));
        assert_ne!(owner_digest("i", "s", "cli_a"), owner_digest("i", "s", "cli_b"));
        assert_ne!(owner_digest("i", "sc", "x"), owner_digest("i", "s", "cx"));
        assert_eq!(owner_digest("i", "s", "c"), owner_digest("i", "s", "c"));
    }

    #[test]
    fn lookup_bind_forget() {
        let Some(b) = SessionBindings::new(10, 10, Duration::from_secs(60)) else { unreachable!() };
        let now = Instant::now();
        assert_eq!(b.lookup(&d(1), &d(100), now), Lookup::Unknown);
        b.bind(d(1), d(100), now);
        assert_eq!(b.lookup(&d(1), &d(100), now), Lookup::Owner);
        assert_eq!(b.lookup(&d(1), &d(101), now), Lookup::Foreign);
        // Never rebound to another owner.
        b.bind(d(1), d(101), now);
        assert_eq!(b.lookup(&d(1), &d(101), now), Lookup::Foreign);
        // Only the owner can make it forget.
        b.forget(&d(1), &d(101));
        assert_eq!(b.lookup(&d(1), &d(101), now), Lookup::Foreign);
        b.forget(&d(1), &d(100));
        assert_eq!(b.lookup(&d(1), &d(101), now), Lookup::Unknown);
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn idle_bindings_expire_and_use_keeps_them_alive() {
        let ttl = Duration::from_secs(60);
        let Some(b) = SessionBindings::new(10, 10, ttl) else { unreachable!() };
        let t0 = Instant::now();
        b.bind(d(1), d(100), t0);
        b.bind(d(2), d(100), t0);
        // Session 1 is used at t0+50s; session 2 is not.
        assert_eq!(b.lookup(&d(1), &d(100), t0 + Duration::from_secs(50)), Lookup::Owner);
        let t1 = t0 + Duration::from_secs(70);
        assert_eq!(b.lookup(&d(2), &d(101), t1), Lookup::Unknown);
        assert_eq!(b.lookup(&d(1), &d(101), t1), Lookup::Foreign);
        assert_eq!(b.len(), 1);
        assert_eq!(b.lookup(&d(1), &d(101), t1 + ttl), Lookup::Unknown);
        assert_eq!(b.len(), 0);
    }

    #[test]
    fn the_least_recently_used_binding_is_evicted_at_the_cap() {
        let Some(b) = SessionBindings::new(3, 3, Duration::from_secs(60)) else { unreachable!() };
        let now = Instant::now();
        for (s, o) in [(1, 100), (2, 101), (3, 102)] {
            b.bind(d(s), d(o), now);
        }
        // Using session 1 makes session 2 the least recently used.
        assert_eq!(b.lookup(&d(1), &d(100), now), Lookup::Owner);
        b.bind(d(4), d(103), now);
        assert_eq!(b.len(), 3);
        assert_eq!(b.lookup(&d(2), &d(100), now), Lookup::Unknown);
        for (s, o) in [(1, 100), (3, 102), (4, 103)] {
            assert_eq!(b.lookup(&d(s), &d(o), now), Lookup::Owner, "{s}");
        }
    }

    #[test]
    fn one_user_cannot_push_out_other_users_bindings() {
        let Some(b) = SessionBindings::new(4, 2, Duration::from_secs(60)) else { unreachable!() };
        let now = Instant::now();
        b.bind(d(1), d(100), now);
        b.bind(d(2), d(100), now);
        for s in 10..50 {
            b.bind(d(s), d(200), now);
        }
        assert_eq!(b.len(), 4);
        assert_eq!(b.lookup(&d(1), &d(100), now), Lookup::Owner);
        assert_eq!(b.lookup(&d(2), &d(100), now), Lookup::Owner);
        // The flooding user keeps only its two most recent bindings.
        assert_eq!(b.lookup(&d(48), &d(200), now), Lookup::Owner);
        assert_eq!(b.lookup(&d(49), &d(200), now), Lookup::Owner);
        assert_eq!(b.lookup(&d(47), &d(200), now), Lookup::Unknown);
    }

    #[test]
    fn zero_limits_disable_binding() {
        assert!(SessionBindings::new(0, 10, Duration::from_secs(1)).is_none());
        assert!(SessionBindings::new(10, 0, Duration::from_secs(1)).is_none());
    }
}
