//! Scope parsing and resolution (RFC 6749 §3.3) with the MCP rules of the requirements file:
//! a request without `scope` gets the resource's default scopes, unknown scopes are
//! `invalid_scope`, and the protocol scopes real clients add on their own are accepted and
//! dropped.

use crate::error::OAuthError;

/// Scopes clients add on their own; accepted in requests, left out of grants (unless a resource
/// defines one of them itself).
pub const PROTOCOL_SCOPES: [&str; 4] = ["offline_access", "openid", "profile", "email"];

/// Longest single scope token.
pub const MAX_SCOPE_TOKEN_LEN: usize = 128;
/// Most scope tokens in one request.
pub const MAX_SCOPE_TOKENS: usize = 64;

/// True when `s` is a valid scope token: 1..=128 characters of NQCHAR
/// (%x21 / %x23-5B / %x5D-7E, RFC 6749 §3.3).
pub fn is_valid_scope_token(s: &str) -> bool {
    let _ = s;
    todo!("helper")
}

/// Parses a `scope` parameter into distinct tokens, in order of first appearance. Tokens are
/// separated by spaces; an empty or all-space parameter yields an empty list. Malformed tokens
/// or too many tokens are `invalid_scope`.
pub fn parse_scope_param(s: &str) -> Result<Vec<String>, OAuthError> {
    let _ = s;
    todo!("helper")
}

/// The scopes an authorization or client-credentials request is granted. `requested` is the raw
/// `scope` parameter. Absent, empty, or consisting only of protocol scopes: `defaults`.
/// Otherwise every non-protocol token must be in `available` (else `invalid_scope` naming it);
/// protocol scopes are dropped unless `available` defines them.
pub fn resolve_requested(
    requested: Option<&str>,
    available: &[String],
    defaults: &[String],
) -> Result<Vec<String>, OAuthError> {
    let _ = (requested, available, defaults);
    todo!("helper")
}

/// The scopes of a refreshed access token: absent means all of `granted`; otherwise every
/// non-protocol token must be in `granted` (a refresh may only keep or narrow scope, RFC 6749
/// §6), else `invalid_scope`.
pub fn narrow(requested: Option<&str>, granted: &[String]) -> Result<Vec<String>, OAuthError> {
    let _ = (requested, granted);
    todo!("helper")
}

/// Space-joins scopes for the wire.
pub fn join(scopes: &[String]) -> String {
    scopes.join(" ")
}

/// The scopes of `wanted` not in `have`, in `wanted`'s order.
pub fn difference(wanted: &[String], have: &[String]) -> Vec<String> {
    wanted.iter().filter(|s| !have.contains(s)).cloned().collect()
}

/// `a` ∪ `b`, keeping `a`'s order and appending `b`'s new entries.
pub fn union(a: &[String], b: &[String]) -> Vec<String> {
    let mut out = a.to_vec();
    for s in b {
        if !out.contains(s) {
            out.push(s.clone());
        }
    }
    out
}
