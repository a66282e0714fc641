//! The refresh-token rotation rule (OAuth 2.1 §4.3.1, RFC 9700 §4.14.2), as a pure decision
//! that every store backend applies inside its own transaction.
//!
//! Policy (DESIGN.md §4): every refresh rotates; re-presenting the previous token inside a short
//! grace window yields the same successor (clients retry and share token stores); any other
//! reuse revokes the whole family. Every refresh re-checks that the client, the user and the
//! consent are still in place.

use crate::ids::{ClientId, ResourceId};
use crate::model::{RefreshFamily, RefreshToken};
use crate::scope::is_protocol_scope;

/// Everything the rule looks at, read inside the rotating transaction.
#[derive(Debug)]
pub struct RotationFacts<'a> {
    pub token: &'a RefreshToken,
    pub family: &'a RefreshFamily,
    /// The successor row derived from `token`, if it already exists.
    pub successor: Option<&'a RefreshToken>,
    /// The client that authenticated (or identified itself) at the token endpoint.
    pub requesting_client: &'a ClientId,
    /// The resource whose token endpoint was called.
    pub requesting_resource: &'a ResourceId,
    /// The request's `scope` parameter, parsed; `None` when absent.
    pub requested_scopes: Option<&'a [String]>,
    /// The family's client exists and is not disabled.
    pub client_active: bool,
    /// The family's user exists and is not disabled (true for grants without a user).
    pub user_active: bool,
    /// Scopes the user currently consents to for this client and resource; `None` when there
    /// is no consent. Ignored for grants without a user.
    pub consent_scopes: Option<&'a [String]>,
    pub now: i64,
    /// Seconds after a rotation during which the previous token may be presented again.
    pub grace: i64,
}

/// Why a refresh was refused without changing anything.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RejectReason {
    WrongClient,
    /// The token was issued for another resource (a metadata-document client is a client of
    /// every resource that accepts it, so the client check alone does not bind the resource).
    WrongResource,
    /// The request asked for a scope the family was not granted (`invalid_scope`, not
    /// `invalid_grant`: RFC 6749 §6).
    ScopeNotGranted,
    FamilyRevoked,
    FamilyExpired,
    TokenExpired,
    ClientInactive,
    UserInactive,
    ConsentWithdrawn,
}

impl RejectReason {
    /// The `error_description` sent with `invalid_grant`.
    pub fn description(self) -> &'static str {
        match self {
            Self::WrongClient => "refresh token was not issued to this client",
            Self::WrongResource => "refresh token was not issued for this resource",
            Self::ScopeNotGranted => "a requested scope was not granted and cannot be added on refresh",
            Self::FamilyRevoked => "refresh token has been revoked",
            Self::FamilyExpired | Self::TokenExpired => "refresh token has expired",
            Self::ClientInactive => "client is disabled",
            Self::UserInactive => "user account is disabled",
            Self::ConsentWithdrawn => "consent for this client has been withdrawn",
        }
    }
}

/// What the store must do.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RotationDecision {
    /// Mark the token rotated and insert its successor.
    Rotate,
    /// The token was rotated moments ago and its successor is unused: hand out the same
    /// successor again, change nothing.
    ReplayWithinGrace,
    /// Reuse outside the grace window (or of a token whose successor was already used):
    /// revoke the whole family.
    RevokeFamily,
    /// Refuse with `invalid_grant`; change nothing.
    Reject(RejectReason),
}

/// Applies the rotation rule.
pub fn decide(f: &RotationFacts<'_>) -> RotationDecision {
    use RotationDecision::*;
    // RFC 6749 §6: a refresh token is bound to the client it was issued to.
    if f.family.client_id != *f.requesting_client {
        return Reject(RejectReason::WrongClient);
    }
    // RFC 8707 §2.2: a refresh token is only good for the resource it was issued for.
    if f.family.resource_id != *f.requesting_resource {
        return Reject(RejectReason::WrongResource);
    }
    if f.family.revoked_at.is_some() {
        return Reject(RejectReason::FamilyRevoked);
    }
    if f.now >= f.family.expires_at {
        return Reject(RejectReason::FamilyExpired);
    }
    if !f.client_active {
        return Reject(RejectReason::ClientInactive);
    }
    if f.family.user_id.is_some() {
        if !f.user_active {
            return Reject(RejectReason::UserInactive);
        }
        let covered = f.consent_scopes.is_some_and(|granted| f.family.scopes.iter().all(|s| granted.contains(s)));
        if !covered {
            return Reject(RejectReason::ConsentWithdrawn);
        }
    }
    if let Some(rotated_at) = f.token.rotated_at {
        // Times are whole seconds, so `<=` alone would let a grace of 0 still accept a replay
        // in the same second; 0 means the operator turned the window off (DESIGN.md §4).
        let within_grace = f.grace > 0 && f.now.saturating_sub(rotated_at) <= f.grace;
        let successor_unused = f.successor.is_some_and(|s| s.rotated_at.is_none());
        return if within_grace && successor_unused { ReplayWithinGrace } else { RevokeFamily };
    }
    if f.now >= f.token.expires_at {
        return Reject(RejectReason::TokenExpired);
    }
    // RFC 6749 §6: scope may only narrow; protocol scopes clients add on their own are ignored
    // (as in `scope::narrow`). Decided here, inside the transaction, so a bad request neither
    // rotates the token nor needs a read of its own.
    if let Some(requested) = f.requested_scopes
        && requested.iter().any(|s| !f.family.scopes.contains(s) && !is_protocol_scope(s))
    {
        return Reject(RejectReason::ScopeNotGranted);
    }
    Rotate
}

/// Idle expiry of a successor: never past the family's absolute expiry.
pub fn successor_expiry(now: i64, idle_ttl: i64, family_expires_at: i64) -> i64 {
    now.saturating_add(idle_ttl).min(family_expires_at)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::ids::{FamilyId, ResourceId, UserId};

    fn family(client: &ClientId) -> RefreshFamily {
        RefreshFamily {
            id: FamilyId::generate(),
            resource_id: ResourceId::generate(),
            client_id: client.clone(),
            user_id: Some(UserId::generate()),
            session_id: None,
            scopes: vec!["todo:read".into()],
            auth_time: Some(0),
            created_at: 0,
            expires_at: 10_000,
            revoked_at: None,
        }
    }

    fn token(fam: &RefreshFamily) -> RefreshToken {
        RefreshToken {
            token_hash: "h1".into(),
            family_id: fam.id.clone(),
            parent_hash: None,
            created_at: 0,
            expires_at: 5_000,
            rotated_at: None,
        }
    }

    struct Case {
        client: ClientId,
        resource: ResourceId,
        requested: Option<Vec<String>>,
        fam: RefreshFamily,
        tok: RefreshToken,
        succ: Option<RefreshToken>,
        consent: Option<Vec<String>>,
        client_active: bool,
        user_active: bool,
        now: i64,
        grace: i64,
    }

    impl Case {
        fn new() -> Self {
            let client = ClientId::generate();
            let fam = family(&client);
            let tok = token(&fam);
            Self {
                client,
                resource: fam.resource_id.clone(),
                requested: None,
                fam,
                tok,
                succ: None,
                consent: Some(vec!["todo:read".into(), "todo:write".into()]),
                client_active: true,
                user_active: true,
                now: 100,
                grace: 60,
            }
        }

        fn decide(&self) -> RotationDecision {
            decide(&RotationFacts {
                token: &self.tok,
                family: &self.fam,
                successor: self.succ.as_ref(),
                requesting_client: &self.client,
                requesting_resource: &self.resource,
                requested_scopes: self.requested.as_deref(),
                client_active: self.client_active,
                user_active: self.user_active,
                consent_scopes: self.consent.as_deref(),
                now: self.now,
                grace: self.grace,
            })
        }
    }

    #[test]
    fn fresh_token_rotates() {
        assert_eq!(Case::new().decide(), RotationDecision::Rotate);
    }

    #[test]
    fn other_client_is_rejected_without_revocation() {
        let mut c = Case::new();
        c.client = ClientId::generate();
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::WrongClient));
    }

    #[test]
    fn other_resource_is_rejected_without_revocation() {
        let mut c = Case::new();
        c.resource = ResourceId::generate();
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::WrongResource));
        // Even for a token already rotated: a wrong-resource request tells nothing about reuse.
        c.tok.rotated_at = Some(10);
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::WrongResource));
    }

    #[test]
    fn requested_scope_may_only_narrow() {
        let mut c = Case::new();
        c.requested = Some(vec!["todo:read".into(), "offline_access".into()]);
        assert_eq!(c.decide(), RotationDecision::Rotate);
        c.requested = Some(vec!["todo:read".into(), "todo:write".into()]);
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::ScopeNotGranted));
        // Reuse detection comes first: a stolen, rotated token revokes the family whatever
        // scope it asks for.
        c.tok.rotated_at = Some(10);
        assert_eq!(c.decide(), RotationDecision::RevokeFamily);
    }

    #[test]
    fn replay_inside_grace_returns_same_successor() {
        let mut c = Case::new();
        c.tok.rotated_at = Some(90);
        let mut s = c.tok.clone();
        s.token_hash = "h2".into();
        s.rotated_at = None;
        c.succ = Some(s);
        assert_eq!(c.decide(), RotationDecision::ReplayWithinGrace);
    }

    #[test]
    fn replay_after_grace_revokes_family() {
        let mut c = Case::new();
        c.tok.rotated_at = Some(10);
        c.succ = Some(c.tok.clone());
        c.succ.as_mut().unwrap().rotated_at = None;
        assert_eq!(c.decide(), RotationDecision::RevokeFamily);
    }

    #[test]
    fn zero_grace_means_no_replay_even_in_the_same_second() {
        let mut c = Case::new();
        c.grace = 0;
        c.tok.rotated_at = Some(c.now);
        let mut s = c.tok.clone();
        s.token_hash = "h2".into();
        s.rotated_at = None;
        c.succ = Some(s);
        assert_eq!(c.decide(), RotationDecision::RevokeFamily);
    }

    #[test]
    fn replay_inside_grace_after_successor_was_used_revokes_family() {
        let mut c = Case::new();
        c.tok.rotated_at = Some(90);
        let mut s = c.tok.clone();
        s.rotated_at = Some(95);
        c.succ = Some(s);
        assert_eq!(c.decide(), RotationDecision::RevokeFamily);
    }

    #[test]
    fn rechecks_client_user_and_consent() {
        let mut c = Case::new();
        c.client_active = false;
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::ClientInactive));
        let mut c = Case::new();
        c.user_active = false;
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::UserInactive));
        let mut c = Case::new();
        c.consent = None;
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::ConsentWithdrawn));
        let mut c = Case::new();
        c.consent = Some(vec!["todo:write".into()]);
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::ConsentWithdrawn));
    }

    #[test]
    fn expiry_and_revocation() {
        let mut c = Case::new();
        c.now = 5_000;
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::TokenExpired));
        let mut c = Case::new();
        c.now = 10_000;
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::FamilyExpired));
        let mut c = Case::new();
        c.fam.revoked_at = Some(1);
        assert_eq!(c.decide(), RotationDecision::Reject(RejectReason::FamilyRevoked));
    }

    #[test]
    fn successor_never_outlives_family() {
        assert_eq!(successor_expiry(100, 50, 1_000), 150);
        assert_eq!(successor_expiry(100, 5_000, 1_000), 1_000);
    }
}
