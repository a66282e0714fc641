//! URL rules: canonical comparison of resource URLs (RFC 8707 §2, RFC 3986 §6), validation of
//! the public base URL and of registered MCP server URLs, and RFC 8414 §3.1 path insertion.
//!
//! Two levels of strictness:
//!
//! - [`canonical_resource`] compares what clients send (`resource`, RFC 8707) with what the
//!   operator registered. It parses with the WHATWG URL parser (the `url` crate, as clients do)
//!   and normalises (RFC 3986 §6.2.2–6.2.3), refusing only what can never be a resource
//!   identifier (fragments, userinfo, whitespace and control characters, other schemes).
//! - [`validate_server_url`], [`parse_public_url`] and [`well_known_url`] handle strings that
//!   Moat publishes verbatim (PRM `resource`, token `aud`, issuers) and that clients must be able
//!   to reproduce byte for byte. They accept only plain ASCII RFC 3986 text with an explicit
//!   `//` authority, a plain host, a numeric port and no dot segments, so that the text Moat
//!   stores is the text every parser agrees on.

use std::fmt::Write as _;

use ::url::{Host, Url};

use crate::redirect;

/// Why a URL was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum UrlError {
    /// Also used for malformed URLs: unparseable, whitespace or control characters, `\`,
    /// missing `//`, and (for the strict functions) non-ASCII text, percent-encoded or
    /// malformed hosts, bad ports and dot segments.
    #[error("not an absolute URL")]
    NotAbsolute,
    #[error("URL scheme must be https (or http for a loopback host)")]
    Scheme,
    #[error("URL must not contain a fragment")]
    Fragment,
    #[error("URL must not contain user information")]
    UserInfo,
    #[error("URL must not have a path, query or trailing slash")]
    NotAnOrigin,
    #[error("URL is too long")]
    TooLong,
}

/// Longest resource or server URL accepted.
pub const MAX_URL_LEN: usize = 2000;

/// An http(s) URL split on its raw text, plus the WHATWG parse of the same string.
struct Parsed<'a> {
    /// `scheme://authority`, exactly as written.
    origin: &'a str,
    /// The path as written (may be empty).
    path: &'a str,
    /// The query as written, without `?`.
    query: Option<&'a str>,
    url: Url,
}

/// Splits and checks an `http`/`https` URL. With `strict`, the text must be plain ASCII
/// RFC 3986 with a plain host and port and no dot segments (see the module docs).
fn parse_http_url(s: &str, strict: bool) -> Result<Parsed<'_>, UrlError> {
    if s.len() > MAX_URL_LEN {
        return Err(UrlError::TooLong);
    }
    // The WHATWG parser silently strips tabs and newlines, trims leading and trailing spaces
    // and controls and reads `\` as `/`: refuse those instead of letting it guess.
    if s.chars().any(|c| c.is_control() || c.is_whitespace() || c == '\\') {
        return Err(UrlError::NotAbsolute);
    }
    let (scheme, rest) = s.split_once(':').ok_or(UrlError::NotAbsolute)?;
    if !redirect::is_valid_scheme(scheme) {
        return Err(UrlError::NotAbsolute);
    }
    if !scheme.eq_ignore_ascii_case("https") && !scheme.eq_ignore_ascii_case("http") {
        return Err(UrlError::Scheme);
    }
    if strict && !redirect::has_only_uri_chars(rest) {
        return Err(UrlError::NotAbsolute);
    }
    // `https:host/p` and `https:/host/p` are accepted by the WHATWG parser; require `//`.
    let after = rest.strip_prefix("//").ok_or(UrlError::NotAbsolute)?;
    // RFC 8707 §2, RFC 8414 §2, RFC 9728 §1.2: no fragment.
    if after.contains('#') {
        return Err(UrlError::Fragment);
    }
    let auth_end = after.find(['/', '?']).unwrap_or(after.len());
    let authority = &after[..auth_end];
    if authority.contains('@') {
        return Err(UrlError::UserInfo);
    }
    if authority.is_empty() {
        return Err(UrlError::NotAbsolute);
    }
    let tail = &after[auth_end..];
    let (path, query) = match tail.split_once('?') {
        Some((p, q)) => (p, Some(q)),
        None => (tail, None),
    };
    if strict {
        let parsed = redirect::parse_authority(authority).map_err(|_| UrlError::NotAbsolute)?;
        if !redirect::is_valid_host(parsed.host) || redirect::has_dot_segment(path) {
            return Err(UrlError::NotAbsolute);
        }
    }
    let url = Url::parse(s).map_err(|_| UrlError::NotAbsolute)?;
    // The raw checks above already exclude these; kept so the WHATWG view agrees by
    // construction rather than by reasoning.
    if url.fragment().is_some() {
        return Err(UrlError::Fragment);
    }
    if !url.username().is_empty() || url.password().is_some() {
        return Err(UrlError::UserInfo);
    }
    if url.host_str().is_none_or(str::is_empty) {
        return Err(UrlError::NotAbsolute);
    }
    let origin_len = scheme.len() + 3 + authority.len();
    Ok(Parsed { origin: &s[..origin_len], path, query, url })
}

/// `scheme://host[:port]` from the WHATWG parse: lowercase scheme and host, IDNA applied,
/// default port dropped.
fn normalised_origin(url: &Url) -> String {
    let mut out = format!("{}://{}", url.scheme(), url.host_str().unwrap_or_default());
    if let Some(port) = url.port() {
        // Writing to a String cannot fail.
        let _ = write!(out, ":{port}");
    }
    out
}

/// The canonical form used to compare resource URLs: lowercase scheme and host, default port
/// dropped, empty path and a trailing slash ignored, no fragment allowed.
///
/// Details (RFC 3986 §6.2.2 syntax-based normalisation as done by the WHATWG parser, plus
/// §6.2.3 scheme-based rules):
/// - http/https only, with `//` authority; no userinfo, no fragment (RFC 8707 §2);
/// - IDNA and IPv4/IPv6 forms are normalised as clients' URL parsers do, dot segments resolved;
/// - every trailing `/` of the path is removed, so `https://x`, `https://x/` and `https://x//`
///   are one resource and the function is idempotent (`canonical(canonical(u)) == canonical(u)`);
/// - the query is kept, except that an empty query (`https://x/mcp?`) counts as none.
///
/// The result has no trailing slash: `https://X:443/mcp/` → `https://x/mcp`, `https://x/` →
/// `https://x`.
pub fn canonical_resource(url: &str) -> Result<String, UrlError> {
    let parsed = parse_http_url(url, false)?;
    let u = &parsed.url;
    let mut out = normalised_origin(u);
    out.push_str(u.path().trim_end_matches('/'));
    if let Some(q) = u.query().filter(|q| !q.is_empty()) {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

/// True when both URLs are valid resource URLs with the same canonical form.
pub fn same_resource(a: &str, b: &str) -> bool {
    match (canonical_resource(a), canonical_resource(b)) {
        (Ok(a), Ok(b)) => a == b,
        _ => false,
    }
}

/// True for `localhost`, `127.0.0.0/8` and `::1` as the WHATWG parser sees the host.
fn is_loopback_host(url: &Url) -> bool {
    match url.host() {
        Some(Host::Domain(d)) => d == "localhost",
        Some(Host::Ipv4(ip)) => ip.is_loopback(),
        Some(Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

/// Validates an MCP server URL for registration: absolute, https (or http for a loopback
/// host), no fragment, no userinfo, at most [`MAX_URL_LEN`].
///
/// The string is published verbatim (PRM `resource`, token `aud`), so it must also be plain
/// ASCII RFC 3986 text without dot segments or percent-encoded hosts (see the module docs).
/// Loopback hosts for `http` are `localhost`, any `127.0.0.0/8` address and `[::1]`
/// (RFC 8252 §8.3 / RFC 6890 ranges); an MCP server on the operator's own machine is the only
/// case where plain http is acceptable (MCP authorization spec: HTTPS everywhere else).
pub fn validate_server_url(url: &str) -> Result<(), UrlError> {
    let parsed = parse_http_url(url, true)?;
    if parsed.url.scheme() == "http" && !is_loopback_host(&parsed.url) {
        return Err(UrlError::Scheme);
    }
    Ok(())
}

/// Validates Moat's public URL: an origin (scheme http/https, host, optional port), no path,
/// query or fragment; a single trailing slash is removed. Returns the normalised origin.
///
/// The result is lowercased and drops a default port (`HTTPS://Moat.Example:443/` →
/// `https://moat.example`), so every issuer built from it is already in the form a WHATWG
/// parser produces: clients compare issuers byte for byte (RFC 8414 §3.3). Plain http is
/// allowed for any host here (local and lab deployments); production deployments use https.
pub fn parse_public_url(url: &str) -> Result<String, UrlError> {
    let parsed = parse_http_url(url, true)?;
    if parsed.query.is_some() || !(parsed.path.is_empty() || parsed.path == "/") {
        return Err(UrlError::NotAnOrigin);
    }
    Ok(normalised_origin(&parsed.url))
}

/// True for a well-known URI suffix (RFC 8615 §3: a `segment-nz`), restricted to unreserved
/// characters.
fn is_valid_suffix(suffix: &str) -> bool {
    !suffix.is_empty()
        && suffix != "."
        && suffix != ".."
        && suffix.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_' | b'~'))
}

/// RFC 8414 §3.1 / RFC 9728 §3.1 path insertion: `https://h/p` + `oauth-authorization-server`
/// → `https://h/.well-known/oauth-authorization-server/p` (no trailing slash when the path is
/// empty).
///
/// The scheme, host and port text of `url` is kept exactly as written (issuers must be
/// byte-identical, RFC 8414 §3.3); one terminating `/` of the path is removed first, as both
/// RFCs require; a query stays after the path (RFC 9728 §3.1). `url` must pass the strict checks
/// of the module docs, and `suffix` must be a single path segment of unreserved characters,
/// else [`UrlError::NotAbsolute`].
pub fn well_known_url(url: &str, suffix: &str) -> Result<String, UrlError> {
    if !is_valid_suffix(suffix) {
        return Err(UrlError::NotAbsolute);
    }
    let parsed = parse_http_url(url, true)?;
    let path = parsed.path.strip_suffix('/').unwrap_or(parsed.path);
    let mut out = String::with_capacity(url.len() + suffix.len() + 13);
    out.push_str(parsed.origin);
    out.push_str("/.well-known/");
    out.push_str(suffix);
    out.push_str(path);
    if let Some(q) = parsed.query {
        out.push('?');
        out.push_str(q);
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::UrlError::*;
    use super::*;

    #[test]
    fn canonical_resource_table() {
        let ok: &[(&str, &str)] = &[
            ("https://x/mcp", "https://x/mcp"),
            ("https://x/mcp/", "https://x/mcp"),
            ("https://x/mcp//", "https://x/mcp"),
            ("https://x", "https://x"),
            ("https://x/", "https://x"),
            ("HTTPS://MCP.Example.COM/mcp", "https://mcp.example.com/mcp"),
            ("https://mcp.example.com:443/mcp", "https://mcp.example.com/mcp"),
            ("http://mcp.example.com:80/mcp", "http://mcp.example.com/mcp"),
            ("https://mcp.example.com:8443/mcp", "https://mcp.example.com:8443/mcp"),
            ("http://127.0.0.1:3000/mcp", "http://127.0.0.1:3000/mcp"),
            ("http://127.1:3000/mcp", "http://127.0.0.1:3000/mcp"),
            ("http://[0:0:0:0:0:0:0:1]:3000/mcp", "http://[::1]:3000/mcp"),
            ("HTTP://LOCALHOST:3000/mcp", "http://localhost:3000/mcp"),
            ("https://x/a/../mcp", "https://x/mcp"),
            ("https://x/mcp?tenant=a", "https://x/mcp?tenant=a"),
            ("https://x/mcp/?tenant=a", "https://x/mcp?tenant=a"),
            ("https://x/mcp?", "https://x/mcp"),
            ("https://x/MCP", "https://x/MCP"),
            ("https://bücher.example/mcp", "https://xn--bcher-kva.example/mcp"),
            ("https://%65xample.com/mcp", "https://example.com/mcp"),
        ];
        for (input, want) in ok {
            assert_eq!(canonical_resource(input).as_deref(), Ok(*want), "{input}");
        }
        let long = format!("https://x/{}", "a".repeat(MAX_URL_LEN));
        let bad: &[(&str, UrlError)] = &[
            (&long, TooLong),
            ("", NotAbsolute),
            ("/mcp", NotAbsolute),
            ("x/mcp", NotAbsolute),
            ("https:x/mcp", NotAbsolute),
            ("https:/x/mcp", NotAbsolute),
            ("https://", NotAbsolute),
            ("https:///mcp", NotAbsolute),
            ("https://x/m cp", NotAbsolute),
            ("https://x/mcp\t", NotAbsolute),
            ("https://x/\nmcp", NotAbsolute),
            (" https://x/mcp", NotAbsolute),
            ("https://x\\mcp", NotAbsolute),
            ("https://x:99999/mcp", NotAbsolute),
            ("https://x/mcp#", Fragment),
            ("https://x/mcp#frag", Fragment),
            ("https://a@b/mcp", UserInfo),
            ("https://a:b@x/mcp", UserInfo),
            ("https://@x/mcp", UserInfo),
            ("ftp://x/mcp", Scheme),
            ("javascript:alert(1)", Scheme),
            ("urn:example:mcp", Scheme),
            ("wss://x/mcp", Scheme),
        ];
        for (input, err) in bad {
            assert_eq!(canonical_resource(input), Err(err.clone()), "{input:?}");
        }
    }

    #[test]
    fn same_resource_cases() {
        assert!(same_resource("https://x/mcp/", "https://x/mcp"));
        assert!(same_resource("https://X:443/mcp", "https://x/mcp"));
        assert!(same_resource("https://x", "https://x/"));
        assert!(!same_resource("https://x/mcp", "https://x/mcp2"));
        assert!(!same_resource("https://x/mcp", "http://x/mcp"));
        assert!(!same_resource("https://x/mcp", "https://x:8443/mcp"));
        assert!(!same_resource("https://x/mcp", "https://x/mcp?a=1"));
        assert!(!same_resource("https://x/mcp", "https://x/MCP"));
        assert!(!same_resource("https://x/mcp#a", "https://x/mcp#a"));
        assert!(!same_resource("", ""));
    }

    #[test]
    fn server_url_table() {
        for ok in [
            "https://mcp.example.com/mcp",
            "https://mcp.example.com",
            "https://mcp.example.com:8443/mcp?tenant=a",
            "HTTPS://MCP.example.com/mcp",
            "http://127.0.0.1:3000/mcp",
            "http://127.0.0.2:3000/mcp",
            "http://localhost:3000/mcp",
            "HTTP://LOCALHOST/mcp",
            "http://[::1]:3000/mcp",
            "http://[0:0:0:0:0:0:0:1]/mcp",
        ] {
            assert_eq!(validate_server_url(ok), Ok(()), "{ok}");
        }
        let long = format!("https://x/{}", "a".repeat(MAX_URL_LEN));
        for (input, err) in [
            (long.as_str(), TooLong),
            ("http://mcp.example.com/mcp", Scheme),
            ("http://localhost.:3000/mcp", Scheme),
            ("http://10.0.0.1/mcp", Scheme),
            ("ftp://mcp.example.com/mcp", Scheme),
            ("https://mcp.example.com/mcp#x", Fragment),
            ("https://u@mcp.example.com/mcp", UserInfo),
            ("mcp.example.com/mcp", NotAbsolute),
            ("https:mcp.example.com/mcp", NotAbsolute),
            ("https://mcp.example.com/a/../mcp", NotAbsolute),
            ("https://mcp.example.com/%2e/mcp", NotAbsolute),
            ("https://%6dcp.example.com/mcp", NotAbsolute),
            ("https://bücher.example/mcp", NotAbsolute),
            ("https://mcp.example.com/mcp\u{e9}", NotAbsolute),
            ("https://mcp.example.com:/mcp", NotAbsolute),
            ("https://mcp.example.com/m cp", NotAbsolute),
            ("https://mcp.example.com/{x}", NotAbsolute),
        ] {
            assert_eq!(validate_server_url(input), Err(err), "{input:?}");
        }
    }

    #[test]
    fn public_url_table() {
        for (input, want) in [
            ("http://127.0.0.1:8080", "http://127.0.0.1:8080"),
            ("http://127.0.0.1:8080/", "http://127.0.0.1:8080"),
            ("https://moat.example.com", "https://moat.example.com"),
            ("https://moat.example.com/", "https://moat.example.com"),
            ("HTTPS://Moat.Example.COM:443/", "https://moat.example.com"),
            ("https://moat.example.com:8443", "https://moat.example.com:8443"),
            ("http://localhost:0", "http://localhost:0"),
            ("http://[::1]:9000", "http://[::1]:9000"),
            ("http://moat.internal:8080", "http://moat.internal:8080"),
        ] {
            assert_eq!(parse_public_url(input).as_deref(), Ok(want), "{input}");
        }
        for (input, err) in [
            ("https://moat.example.com/auth", NotAnOrigin),
            ("https://moat.example.com//", NotAnOrigin),
            ("https://moat.example.com/?", NotAnOrigin),
            ("https://moat.example.com?x=1", NotAnOrigin),
            ("https://moat.example.com/#", Fragment),
            ("https://a@moat.example.com", UserInfo),
            ("ftp://moat.example.com", Scheme),
            ("moat.example.com", NotAbsolute),
            ("https://moat.example.com ", NotAbsolute),
            ("", NotAbsolute),
        ] {
            assert_eq!(parse_public_url(input), Err(err), "{input:?}");
        }
    }

    #[test]
    fn well_known_table() {
        const AS: &str = "oauth-authorization-server";
        const PR: &str = "oauth-protected-resource";
        for (input, suffix, want) in [
            (
                "https://h:8443/resources/res_x",
                AS,
                "https://h:8443/.well-known/oauth-authorization-server/resources/res_x",
            ),
            ("https://h/", AS, "https://h/.well-known/oauth-authorization-server"),
            ("https://h", AS, "https://h/.well-known/oauth-authorization-server"),
            ("https://h/mcp", PR, "https://h/.well-known/oauth-protected-resource/mcp"),
            ("https://h/mcp/", PR, "https://h/.well-known/oauth-protected-resource/mcp"),
            ("https://h/a/b?x=1", PR, "https://h/.well-known/oauth-protected-resource/a/b?x=1"),
            ("https://h/?x=1", PR, "https://h/.well-known/oauth-protected-resource?x=1"),
            // Host and port text is preserved exactly, even when not in normal form.
            ("HTTPS://H.Example:443/p", AS, "HTTPS://H.Example:443/.well-known/oauth-authorization-server/p"),
            (
                "http://127.0.0.1:8080/resources/res_a",
                AS,
                "http://127.0.0.1:8080/.well-known/oauth-authorization-server/resources/res_a",
            ),
            ("http://[::1]:8080/mcp", PR, "http://[::1]:8080/.well-known/oauth-protected-resource/mcp"),
        ] {
            assert_eq!(well_known_url(input, suffix).as_deref(), Ok(want), "{input}");
        }
        for (input, suffix, err) in [
            ("https://h/p#f", AS, Fragment),
            ("https://u@h/p", AS, UserInfo),
            ("ftp://h/p", AS, Scheme),
            ("h/p", AS, NotAbsolute),
            ("https://h/a/../p", AS, NotAbsolute),
            ("https://h/p", "", NotAbsolute),
            ("https://h/p", "a/b", NotAbsolute),
            ("https://h/p", "a?b", NotAbsolute),
            ("https://h/p", "..", NotAbsolute),
        ] {
            assert_eq!(well_known_url(input, suffix), Err(err), "{input:?} {suffix:?}");
        }
    }

    fn http_url() -> impl Strategy<Value = String> {
        (
            prop_oneof![Just("http"), Just("https"), Just("HTTPS"), Just("Http")],
            prop_oneof![
                "[a-zA-Z][a-zA-Z0-9]{0,8}(\\.[a-zA-Z][a-zA-Z0-9]{0,8}){0,3}",
                Just("127.0.0.1".to_owned()),
                Just("[::1]".to_owned()),
                Just("LOCALHOST".to_owned()),
            ],
            proptest::option::of(prop_oneof![Just(80u16), Just(443u16), 1u16..]),
            "(/[A-Za-z0-9_~.-]{0,6}){0,4}/?",
            proptest::option::of("[A-Za-z0-9=&%_-]{0,10}"),
        )
            .prop_map(|(scheme, host, port, path, query)| {
                let mut s = format!("{scheme}://{host}");
                if let Some(p) = port {
                    s.push_str(&format!(":{p}"));
                }
                s.push_str(&path);
                if let Some(q) = query {
                    s.push('?');
                    s.push_str(&q);
                }
                s
            })
    }

    proptest! {
        #[test]
        fn canonical_resource_is_idempotent(u in http_url()) {
            if let Ok(c) = canonical_resource(&u) {
                prop_assert_eq!(canonical_resource(&c), Ok(c.clone()));
                prop_assert!(same_resource(&u, &c));
                prop_assert!(!c.ends_with('/'));
            }
        }

        #[test]
        fn trailing_slash_never_changes_the_resource(u in http_url()) {
            if canonical_resource(&u).is_ok() {
                // Add one `/` at the end of the path, before any query.
                let with = match u.split_once('?') {
                    Some((p, q)) => format!("{p}/?{q}"),
                    None => format!("{u}/"),
                };
                prop_assert_eq!(canonical_resource(&with), canonical_resource(&u));
            }
        }

        #[test]
        fn canonical_resource_never_panics_and_is_idempotent(s in ".{0,100}") {
            if let Ok(c) = canonical_resource(&s) {
                prop_assert_eq!(canonical_resource(&c), Ok(c.clone()));
            }
        }

        #[test]
        fn valid_server_urls_are_valid_resources(u in http_url()) {
            if validate_server_url(&u).is_ok() {
                prop_assert!(canonical_resource(&u).is_ok());
                let wk = well_known_url(&u, "oauth-protected-resource");
                prop_assert!(wk.is_ok(), "{}", u);
                prop_assert!(wk.unwrap().contains("/.well-known/oauth-protected-resource"));
            }
        }

        #[test]
        fn public_url_is_idempotent(
            scheme in prop_oneof![Just("http"), Just("https")],
            host in "[a-z][a-z0-9]{0,8}(\\.[a-z][a-z0-9]{0,8}){0,2}",
            port in proptest::option::of(1u16..),
            slash in any::<bool>(),
        ) {
            let mut s = format!("{scheme}://{host}");
            if let Some(p) = port { s.push_str(&format!(":{p}")); }
            if slash { s.push('/'); }
            let base = parse_public_url(&s).unwrap();
            prop_assert!(!base.ends_with('/'));
            prop_assert_eq!(parse_public_url(&base), Ok(base.clone()));
            // The issuer's metadata URL keeps the base verbatim (RFC 8414 §3.1).
            let issuer = format!("{base}/resources/res_abc");
            prop_assert_eq!(
                well_known_url(&issuer, "oauth-authorization-server").unwrap(),
                format!("{base}/.well-known/oauth-authorization-server/resources/res_abc")
            );
        }

        #[test]
        fn strict_functions_never_panic(s in ".{0,100}", suffix in ".{0,10}") {
            let _ = validate_server_url(&s);
            let _ = parse_public_url(&s);
            let _ = well_known_url(&s, &suffix);
        }
    }
}
