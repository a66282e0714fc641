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

/// RFC 6749 §3.3 / Appendix A.4: `NQCHAR = %x21 / %x23-5B / %x5D-7E`.
fn is_nqchar(b: u8) -> bool {
    matches!(b, 0x21 | 0x23..=0x5B | 0x5D..=0x7E)
}

/// True when `s` is a valid scope token: 1..=128 characters of NQCHAR
/// (%x21 / %x23-5B / %x5D-7E, RFC 6749 §3.3).
pub fn is_valid_scope_token(s: &str) -> bool {
    // NQCHAR is ASCII, so bytes and characters coincide for every valid token.
    (1..=MAX_SCOPE_TOKEN_LEN).contains(&s.len()) && s.bytes().all(is_nqchar)
}

/// True for the scopes of [`PROTOCOL_SCOPES`].
pub fn is_protocol_scope(s: &str) -> bool {
    PROTOCOL_SCOPES.contains(&s)
}

/// Parses a `scope` parameter into distinct tokens, in order of first appearance. Tokens are
/// separated by spaces; an empty or all-space parameter yields an empty list. Malformed tokens
/// or too many tokens are `invalid_scope`.
///
/// Only U+0020 separates tokens (RFC 6749 §3.3: `scope-token *( SP scope-token )`); runs of
/// spaces and leading or trailing spaces are tolerated because clients build the string by
/// joining lists. Tabs, newlines and other characters outside NQCHAR make the token invalid.
/// The limit of [`MAX_SCOPE_TOKENS`] counts distinct tokens.
pub fn parse_scope_param(s: &str) -> Result<Vec<String>, OAuthError> {
    let mut out: Vec<String> = Vec::new();
    for token in s.split(' ').filter(|t| !t.is_empty()) {
        if !is_valid_scope_token(token) {
            return Err(OAuthError::invalid_scope(format!("malformed scope: {token}")));
        }
        if out.iter().any(|t| t == token) {
            continue;
        }
        // Checked before pushing, so the duplicate search above never scans more than
        // MAX_SCOPE_TOKENS entries whatever the input length.
        if out.len() == MAX_SCOPE_TOKENS {
            return Err(OAuthError::invalid_scope(format!("too many scopes (at most {MAX_SCOPE_TOKENS})")));
        }
        out.push(token.to_owned());
    }
    Ok(out)
}

/// Keeps the tokens of `requested` found in `allowed`, drops protocol scopes not in `allowed`,
/// and fails on anything else with `unknown(token)`.
fn filter_tokens(
    requested: &str,
    allowed: &[String],
    unknown: impl Fn(&str) -> OAuthError,
) -> Result<Vec<String>, OAuthError> {
    let mut out = Vec::new();
    for token in parse_scope_param(requested)? {
        if allowed.contains(&token) {
            out.push(token);
        } else if !is_protocol_scope(&token) {
            return Err(unknown(&token));
        }
    }
    Ok(out)
}

/// The scopes an authorization or client-credentials request is granted. `requested` is the raw
/// `scope` parameter. Absent, empty, or consisting only of protocol scopes: `defaults`.
/// Otherwise every non-protocol token must be in `available` (else `invalid_scope` naming it);
/// protocol scopes are dropped unless `available` defines them.
///
/// RFC 6749 §3.3 lets the server apply a default when `scope` is omitted; the MCP conformance
/// suite sends none, and clients such as mcp-remote fall back to `openid email profile`, which
/// must not turn into an empty grant. The result keeps the request's order, without duplicates.
pub fn resolve_requested(
    requested: Option<&str>,
    available: &[String],
    defaults: &[String],
) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(defaults.to_vec());
    };
    let granted = filter_tokens(requested, available, |t| OAuthError::invalid_scope(format!("unknown scope: {t}")))?;
    if granted.is_empty() { Ok(defaults.to_vec()) } else { Ok(granted) }
}

/// The scopes of a refreshed access token: absent means all of `granted`; otherwise every
/// non-protocol token must be in `granted` (a refresh may only keep or narrow scope, RFC 6749
/// §6), else `invalid_scope`.
///
/// A parameter that is empty or holds only protocol scopes (`scope=offline_access`) is treated
/// like an absent one and keeps the whole grant, for the same reason as in
/// [`resolve_requested`]: clients add those scopes on their own and an empty token is useless.
pub fn narrow(requested: Option<&str>, granted: &[String]) -> Result<Vec<String>, OAuthError> {
    let Some(requested) = requested else {
        return Ok(granted.to_vec());
    };
    let kept = filter_tokens(requested, granted, |t| {
        OAuthError::invalid_scope(format!("scope {t} was not granted and cannot be added on refresh"))
    })?;
    if kept.is_empty() { Ok(granted.to_vec()) } else { Ok(kept) }
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

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::error::OAuthErrorCode;

    fn v(s: &[&str]) -> Vec<String> {
        s.iter().map(|s| (*s).to_owned()).collect()
    }

    #[test]
    fn scope_token_syntax() {
        for ok in ["a", "todo:read", "https://api.example.com/read", "!", "~", "a[b]", &"x".repeat(128)] {
            assert!(is_valid_scope_token(ok), "{ok:?}");
        }
        for bad in ["", " ", "a b", "a\"b", "a\\b", "a\tb", "a\nb", "é", "\u{7f}", &"x".repeat(129)] {
            assert!(!is_valid_scope_token(bad), "{bad:?}");
        }
    }

    #[test]
    fn parse_splits_dedups_and_tolerates_spaces() {
        assert_eq!(parse_scope_param("").unwrap(), Vec::<String>::new());
        assert_eq!(parse_scope_param("   ").unwrap(), Vec::<String>::new());
        assert_eq!(parse_scope_param("a b").unwrap(), v(&["a", "b"]));
        assert_eq!(parse_scope_param("  b   a  b a ").unwrap(), v(&["b", "a"]));
        assert_eq!(parse_scope_param("todo:read todo:write").unwrap(), v(&["todo:read", "todo:write"]));
        // Case matters (RFC 6749 §3.3: scopes are case-sensitive).
        assert_eq!(parse_scope_param("A a").unwrap(), v(&["A", "a"]));
    }

    #[test]
    fn parse_rejects_bad_tokens_and_too_many() {
        for bad in ["a\tb", "a\nb", "a \"b\"", "a\\b", "é", &"x".repeat(129), "a,b \u{0}"] {
            let err = parse_scope_param(bad).unwrap_err();
            assert_eq!(err.code, OAuthErrorCode::InvalidScope, "{bad:?}");
        }
        let max: Vec<String> = (0..MAX_SCOPE_TOKENS).map(|i| format!("s{i}")).collect();
        assert_eq!(parse_scope_param(&max.join(" ")).unwrap(), max);
        let too_many: Vec<String> = (0..=MAX_SCOPE_TOKENS).map(|i| format!("s{i}")).collect();
        let err = parse_scope_param(&too_many.join(" ")).unwrap_err();
        assert_eq!(err.code, OAuthErrorCode::InvalidScope);
        assert!(err.description.contains("too many"));
        // Duplicates do not count towards the limit.
        let dups = vec!["a"; 1000].join(" ");
        assert_eq!(parse_scope_param(&dups).unwrap(), v(&["a"]));
    }

    #[test]
    fn resolve_requested_rules() {
        let available = v(&["todo:read", "todo:write", "todo:admin"]);
        let defaults = v(&["todo:read", "todo:write"]);
        let r = |s: Option<&str>| resolve_requested(s, &available, &defaults);
        assert_eq!(r(None).unwrap(), defaults);
        assert_eq!(r(Some("")).unwrap(), defaults);
        assert_eq!(r(Some("  ")).unwrap(), defaults);
        assert_eq!(r(Some("openid email profile")).unwrap(), defaults);
        assert_eq!(r(Some("offline_access")).unwrap(), defaults);
        assert_eq!(r(Some("todo:admin")).unwrap(), v(&["todo:admin"]));
        assert_eq!(r(Some("todo:write todo:read todo:write")).unwrap(), v(&["todo:write", "todo:read"]));
        assert_eq!(r(Some("openid todo:read offline_access")).unwrap(), v(&["todo:read"]));

        let err = r(Some("todo:read todo:delete")).unwrap_err();
        assert_eq!(err.code, OAuthErrorCode::InvalidScope);
        assert!(err.description.contains("todo:delete"), "{}", err.description);
        // Case-sensitive.
        assert_eq!(r(Some("TODO:READ")).unwrap_err().code, OAuthErrorCode::InvalidScope);
        // Malformed tokens are invalid_scope too.
        assert_eq!(r(Some("todo:read\t")).unwrap_err().code, OAuthErrorCode::InvalidScope);
    }

    #[test]
    fn resolve_keeps_protocol_scopes_a_resource_defines() {
        let available = v(&["openid", "todo:read"]);
        let defaults = v(&["todo:read"]);
        assert_eq!(resolve_requested(Some("openid"), &available, &defaults).unwrap(), v(&["openid"]));
        assert_eq!(resolve_requested(Some("openid email"), &available, &defaults).unwrap(), v(&["openid"]));
    }

    #[test]
    fn narrow_rules() {
        let granted = v(&["todo:read", "todo:write"]);
        assert_eq!(narrow(None, &granted).unwrap(), granted);
        assert_eq!(narrow(Some(""), &granted).unwrap(), granted);
        assert_eq!(narrow(Some("offline_access"), &granted).unwrap(), granted);
        assert_eq!(narrow(Some("todo:read"), &granted).unwrap(), v(&["todo:read"]));
        assert_eq!(narrow(Some("todo:write todo:read"), &granted).unwrap(), v(&["todo:write", "todo:read"]));
        assert_eq!(narrow(Some("todo:read openid"), &granted).unwrap(), v(&["todo:read"]));
        let err = narrow(Some("todo:read todo:admin"), &granted).unwrap_err();
        assert_eq!(err.code, OAuthErrorCode::InvalidScope);
        assert!(err.description.contains("todo:admin"));
    }

    #[test]
    fn set_helpers() {
        let a = v(&["a", "b"]);
        let b = v(&["b", "c"]);
        assert_eq!(join(&a), "a b");
        assert_eq!(difference(&b, &a), v(&["c"]));
        assert_eq!(union(&a, &b), v(&["a", "b", "c"]));
    }

    proptest! {
        #[test]
        fn parse_never_panics_and_yields_valid_distinct_tokens(s in ".{0,300}") {
            if let Ok(tokens) = parse_scope_param(&s) {
                prop_assert!(tokens.len() <= MAX_SCOPE_TOKENS);
                for (i, t) in tokens.iter().enumerate() {
                    prop_assert!(is_valid_scope_token(t));
                    prop_assert!(!tokens[..i].contains(t));
                }
            }
        }

        #[test]
        fn parse_roundtrips_through_join(tokens in proptest::collection::vec("[!#-\\[\\]-~]{1,20}", 0..20)) {
            let parsed = parse_scope_param(&tokens.join("  ")).unwrap();
            prop_assert_eq!(parse_scope_param(&join(&parsed)).unwrap(), parsed.clone());
            for t in &tokens {
                prop_assert!(parsed.contains(t));
            }
        }

        #[test]
        fn resolved_scopes_are_available_or_defaults(
            req in proptest::option::of("(a|b|c|d|openid|offline_access| ){0,8}"),
        ) {
            let available = v(&["a", "b", "c"]);
            let defaults = v(&["a"]);
            match resolve_requested(req.as_deref(), &available, &defaults) {
                Ok(scopes) => {
                    prop_assert!(!scopes.is_empty());
                    prop_assert!(scopes.iter().all(|s| available.contains(s)));
                }
                Err(e) => {
                    prop_assert_eq!(e.code, OAuthErrorCode::InvalidScope);
                    // Only a token that is neither available nor a protocol scope fails.
                    let req = req.unwrap_or_default();
                    let culprit = req
                        .split(' ')
                        .find(|t| !t.is_empty() && !available.iter().any(|a| a == t) && !is_protocol_scope(t));
                    prop_assert!(culprit.is_some());
                    prop_assert!(e.description.contains(culprit.unwrap_or_default()));
                }
            }
        }

        #[test]
        fn narrow_never_widens(
            granted in proptest::collection::vec("(a|b|c|d)", 0..4),
            req in proptest::option::of("(a|b|c|d|offline_access| ){0,8}"),
        ) {
            if let Ok(scopes) = narrow(req.as_deref(), &granted) {
                prop_assert!(scopes.iter().all(|s| granted.contains(s)));
            }
        }
    }
}
