//! Redirect URI rules: what may be registered (OAuth 2.1 §2.3.1, RFC 8252 §7) and how a
//! requested `redirect_uri` matches a registered one (exact string match; loopback port
//! freedom per RFC 8252 §7.3).
//!
//! # Parser differentials
//!
//! A redirect URI is checked here but followed by a browser or an operating system, whose
//! parsers (WHATWG URL, platform URI handlers) are far more forgiving than RFC 3986: they strip
//! tabs and newlines, trim spaces and control characters, read `\` as `/` in `http(s)` URLs,
//! decode percent-encoded hosts, resolve `..` segments and accept `https:host` without `//`.
//! Any string on which two parsers disagree is a way to make Moat approve one destination while
//! the browser visits another. So this module parses the raw string with a deliberately strict
//! RFC 3986 grammar and refuses everything outside it instead of normalising: only RFC 3986
//! characters, an explicit `//` authority for `http(s)`, plain ASCII host names (no
//! percent-encoding), numeric ports, no dot segments. Matching is then done on the raw bytes.

use std::net::Ipv6Addr;

/// Longest redirect URI accepted.
pub const MAX_REDIRECT_URI_LEN: usize = 2000;

/// Schemes that are never acceptable redirect targets: script execution (`javascript:`,
/// `vbscript:`), inline or local content (`data:`, `blob:`, `about:`, `file:`) and schemes
/// that are not navigation targets for an authorization response (`ftp:`, `ws:`, `wss:`), or
/// that belong to the platform or browser rather than to an app (`intent:`, `view-source:`,
/// `filesystem:`, `chrome:`, `mailto:`, `tel:`, `sms:`, `ms-settings:`).
/// Compared case-insensitively (RFC 3986 §3.1: schemes are case-insensitive).
const FORBIDDEN_SCHEMES: [&str; 17] = [
    "javascript",
    "data",
    "file",
    "vbscript",
    "about",
    "blob",
    "ftp",
    "ws",
    "wss",
    "intent",
    "view-source",
    "filesystem",
    "chrome",
    "mailto",
    "tel",
    "sms",
    "ms-settings",
];

/// The only hosts for which plain `http` is allowed (RFC 8252 §7.3 and §8.3), compared
/// case-insensitively. Other spellings of loopback (`127.1`, `[0:0:0:0:0:0:0:1]`,
/// `localhost.`) are deliberately not recognised: they are exactly the forms on which parsers
/// disagree.
const LOOPBACK_HOSTS: [&str; 3] = ["127.0.0.1", "[::1]", "localhost"];

/// The kinds of redirect URI Moat accepts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RedirectKind {
    /// `https://…`
    Https,
    /// `http://127.0.0.1…`, `http://[::1]…`, `http://localhost…` (RFC 8252 §7.3).
    LoopbackHttp,
    /// A native app's private-use scheme such as `com.example.app:/cb` (RFC 8252 §7.1).
    PrivateUseScheme,
}

/// Why a redirect URI cannot be registered.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RedirectUriError {
    #[error("redirect URI is too long")]
    TooLong,
    /// Also used for every URI outside the strict grammar described in the module docs
    /// (characters outside RFC 3986, percent-encoded or malformed hosts, bad ports, dot
    /// segments, `http(s)` without `//`).
    #[error("redirect URI is not an absolute URI")]
    NotAbsolute,
    #[error("redirect URI must not contain a fragment")]
    Fragment,
    #[error("redirect URI must not contain user information")]
    UserInfo,
    #[error("redirect URI scheme is not allowed")]
    ForbiddenScheme,
    #[error("plain http redirect URIs are only allowed for loopback hosts")]
    InsecureHttp,
}

/// A redirect URI split by the strict grammar. Every field borrows the raw input unchanged, so
/// comparisons are byte comparisons of what the client actually sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawUri<'a> {
    /// The scheme as written (case preserved).
    pub scheme: &'a str,
    /// The authority when the URI has `//`.
    pub authority: Option<RawAuthority<'a>>,
    /// Everything between the authority (or the scheme's `:`) and `?`.
    pub path: &'a str,
    /// The query without its `?`.
    pub query: Option<&'a str>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RawAuthority<'a> {
    /// The host as written, brackets included for IPv6 literals.
    pub host: &'a str,
    /// The port digits, when a port is given.
    pub port: Option<&'a str>,
}

/// RFC 3986 §3.1: `scheme = ALPHA *( ALPHA / DIGIT / "+" / "-" / "." )`.
pub(crate) fn is_valid_scheme(s: &str) -> bool {
    let mut bytes = s.bytes();
    bytes.next().is_some_and(|b| b.is_ascii_alphabetic())
        && bytes.all(|b| b.is_ascii_alphanumeric() || matches!(b, b'+' | b'-' | b'.'))
}

/// RFC 3986 §2: unreserved, gen-delims and sub-delims. `%` is checked separately (it must start
/// a `%XX` escape). Everything else — spaces, tabs, newlines, other controls, `\`, `"`, `<`,
/// `>`, `^`, `` ` ``, `{`, `|`, `}`, DEL and all non-ASCII — is outside the URI grammar.
fn is_uri_char(b: u8) -> bool {
    b.is_ascii_alphanumeric()
        || matches!(
            b,
            b'-' | b'.'
                | b'_'
                | b'~'
                | b':'
                | b'/'
                | b'?'
                | b'#'
                | b'['
                | b']'
                | b'@'
                | b'!'
                | b'$'
                | b'&'
                | b'\''
                | b'('
                | b')'
                | b'*'
                | b'+'
                | b','
                | b';'
                | b'='
        )
}

/// True when every byte is an RFC 3986 character and every `%` starts a `%XX` escape.
pub(crate) fn has_only_uri_chars(s: &str) -> bool {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let hex = |j: usize| b.get(j).is_some_and(u8::is_ascii_hexdigit);
            if !(hex(i + 1) && hex(i + 2)) {
                return false;
            }
            i += 3;
        } else if is_uri_char(b[i]) {
            i += 1;
        } else {
            return false;
        }
    }
    true
}

/// Host names Moat accepts in redirect URIs: non-empty ASCII letters, digits, `-`, `.` and `_`
/// (which covers DNS names and IDNA A-labels), or an IPv6 literal in brackets. Percent-encoding
/// and RFC 3986 sub-delims are refused because browsers decode or reinterpret them.
pub(crate) fn is_valid_host(host: &str) -> bool {
    if let Some(inner) = host.strip_prefix('[') {
        // IP-literal (RFC 3986 §3.2.2). IPvFuture (`[v1.x]`) and zone identifiers are refused.
        return inner.strip_suffix(']').is_some_and(|addr| addr.parse::<Ipv6Addr>().is_ok() && !addr.contains('%'));
    }
    !host.is_empty() && host.bytes().all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'.' | b'_'))
}

/// RFC 3986 §3.2.3 port, restricted to 1–5 digits with a value of at most 65535.
fn is_valid_port(port: &str) -> bool {
    !port.is_empty()
        && port.len() <= 5
        && port.bytes().all(|b| b.is_ascii_digit())
        && port.parse::<u32>().is_ok_and(|p| p <= 65535)
}

/// Splits `host[:port]`. The caller has already excluded userinfo.
pub(crate) fn parse_authority(authority: &str) -> Result<RawAuthority<'_>, RedirectUriError> {
    let (host, port) = if authority.starts_with('[') {
        let end = authority.find(']').ok_or(RedirectUriError::NotAbsolute)?;
        let (host, rest) = authority.split_at(end + 1);
        match rest {
            "" => (host, None),
            _ => (host, Some(rest.strip_prefix(':').ok_or(RedirectUriError::NotAbsolute)?)),
        }
    } else {
        match authority.split_once(':') {
            None => (authority, None),
            Some((host, port)) => (host, Some(port)),
        }
    };
    if let Some(p) = port
        && !is_valid_port(p)
    {
        return Err(RedirectUriError::NotAbsolute);
    }
    Ok(RawAuthority { host, port })
}

/// True when a path has a `.` or `..` segment, in any spelling a WHATWG parser treats as one
/// (`%2e`, `.%2E`, …): browsers resolve them, so the raw string and the visited URL differ.
pub(crate) fn has_dot_segment(path: &str) -> bool {
    path.split('/').any(|seg| {
        let decoded = seg.to_ascii_lowercase().replace("%2e", ".");
        decoded == "." || decoded == ".."
    })
}

/// Parses `uri` with the strict grammar. Does not decide whether the scheme is acceptable
/// beyond the forbidden list; [`validate_redirect_uri`] does that.
pub(crate) fn parse_strict(uri: &str) -> Result<RawUri<'_>, RedirectUriError> {
    if uri.len() > MAX_REDIRECT_URI_LEN {
        return Err(RedirectUriError::TooLong);
    }
    let (scheme, rest) = uri.split_once(':').ok_or(RedirectUriError::NotAbsolute)?;
    if !is_valid_scheme(scheme) {
        return Err(RedirectUriError::NotAbsolute);
    }
    // Dangerous schemes are reported as such whatever follows them.
    let lower = scheme.to_ascii_lowercase();
    if FORBIDDEN_SCHEMES.contains(&lower.as_str()) {
        return Err(RedirectUriError::ForbiddenScheme);
    }
    if !has_only_uri_chars(rest) {
        return Err(RedirectUriError::NotAbsolute);
    }
    // OAuth 2.1 §2.3.1 / RFC 6749 §3.1.2: the redirection endpoint must not have a fragment.
    if rest.contains('#') {
        return Err(RedirectUriError::Fragment);
    }
    let (hier, query) = match rest.split_once('?') {
        Some((h, q)) => (h, Some(q)),
        None => (rest, None),
    };
    let (authority, path) = match hier.strip_prefix("//") {
        Some(after) => {
            let end = after.find('/').unwrap_or(after.len());
            let (authority, path) = after.split_at(end);
            // RFC 3986 §3.2.1 userinfo: credentials in a redirect URI are never legitimate and
            // `a@b` is the classic way to show one host and visit another.
            if authority.contains('@') {
                return Err(RedirectUriError::UserInfo);
            }
            (Some(parse_authority(authority)?), path)
        }
        None => (None, hier),
    };
    Ok(RawUri { scheme, authority, path, query })
}

/// Validates a redirect URI for registration and says which kind it is.
///
/// - `https` with a valid host → [`RedirectKind::Https`];
/// - `http` to exactly `127.0.0.1`, `[::1]` or `localhost` (case-insensitive), any port →
///   [`RedirectKind::LoopbackHttp`] (RFC 8252 §7.3); any other `http` →
///   [`RedirectUriError::InsecureHttp`];
/// - `javascript:`, `data:`, `file:`, `vbscript:`, `about:`, `blob:`, `ftp:`, `ws:`, `wss:` →
///   [`RedirectUriError::ForbiddenScheme`];
/// - any other scheme is a private-use scheme (RFC 8252 §7.1), e.g. `com.example.app:/cb` or
///   `cursor://anysphere.cursor-mcp/oauth/callback`.
///
/// Schemes are matched case-insensitively (RFC 3986 §3.1), so `HTTPS://…` is accepted and
/// `JAVASCRIPT:` is refused; matching against the registration stays byte-exact.
pub fn validate_redirect_uri(uri: &str) -> Result<RedirectKind, RedirectUriError> {
    let parsed = parse_strict(uri)?;
    let scheme = parsed.scheme.to_ascii_lowercase();
    match scheme.as_str() {
        "https" | "http" => {
            // `https:host/cb` and `https:/host/cb` are read as `https://host/cb` by browsers:
            // an explicit authority is required so what we check is what they visit.
            let authority = parsed.authority.ok_or(RedirectUriError::NotAbsolute)?;
            if !is_valid_host(authority.host) || has_dot_segment(parsed.path) {
                return Err(RedirectUriError::NotAbsolute);
            }
            if scheme == "http" {
                let host = authority.host.to_ascii_lowercase();
                return if LOOPBACK_HOSTS.contains(&host.as_str()) {
                    Ok(RedirectKind::LoopbackHttp)
                } else {
                    Err(RedirectUriError::InsecureHttp)
                };
            }
            // Cross-check with the WHATWG parser browsers use: it must see the same host. This
            // refuses hosts the URL Standard rewrites, such as `127.1` or `0x7f.0.0.1` (IPv4
            // shorthand), `[0:0:0:0:0:0:0:1]` and names that fail IDNA validation.
            let whatwg = ::url::Url::parse(uri).map_err(|_| RedirectUriError::NotAbsolute)?;
            if whatwg.host_str() != Some(authority.host.to_ascii_lowercase().as_str()) {
                return Err(RedirectUriError::NotAbsolute);
            }
            Ok(RedirectKind::Https)
        }
        _ => {
            // RFC 8252 §7.1 says private-use schemes SHOULD be reverse domain names
            // (`com.example.app:`), but widely used MCP clients register single-label schemes
            // (Cursor: `cursor://anysphere.cursor-mcp/oauth/callback`), so those are accepted
            // too; platform and dangerous schemes are refused above. Such redirects are never
            // treated as verifiable: the consent page is shown every time (RFC 8252 §8.6).
            if let Some(authority) = parsed.authority {
                // An empty authority (`com.example.app:///cb`) is tolerated; a present host
                // must still be a plain host name.
                if !authority.host.is_empty() && !is_valid_host(authority.host) {
                    return Err(RedirectUriError::NotAbsolute);
                }
            }
            if parsed.authority.is_none() && parsed.path.is_empty() && parsed.query.is_none() {
                // `com.example.app:` alone names no endpoint.
                return Err(RedirectUriError::NotAbsolute);
            }
            Ok(RedirectKind::PrivateUseScheme)
        }
    }
}

/// True for an `http` redirect URI whose host is `127.0.0.1`, `[::1]` or `localhost`.
///
/// The URI must also pass [`validate_redirect_uri`]: an unparseable or ambiguous string is
/// never treated as loopback.
pub fn is_loopback_redirect(uri: &str) -> bool {
    matches!(validate_redirect_uri(uri), Ok(RedirectKind::LoopbackHttp))
}

/// The parts of a valid loopback `http` redirect URI, as raw slices.
fn loopback_parts(uri: &str) -> Option<RawUri<'_>> {
    if !is_loopback_redirect(uri) {
        return None;
    }
    parse_strict(uri).ok()
}

/// Whether `requested` matches `registered`: byte-exact equality, except that for loopback
/// `http` URIs the port may differ (host, path and query must still be exactly equal, and
/// `localhost` and `127.0.0.1` are different hosts).
///
/// OAuth 2.1 §2.3.1 and RFC 9700 §4.1.3 require exact string matching. The only exception is
/// RFC 8252 §7.3: native apps listen on an ephemeral loopback port chosen at run time. In that
/// case both strings must be valid loopback redirect URIs under the strict grammar and must be
/// byte-identical apart from the port (present, absent or different on either side): the
/// scheme and host are compared as written (`HTTP://LOCALHOST` does not match
/// `http://localhost`), and so are path and query. Registered URIs are validated by
/// [`validate_redirect_uri`] at registration; the exact-equality branch trusts that.
pub fn matches_registered(registered: &str, requested: &str) -> bool {
    if registered == requested {
        return true;
    }
    let (Some(reg), Some(req)) = (loopback_parts(registered), loopback_parts(requested)) else {
        return false;
    };
    match (reg.authority, req.authority) {
        (Some(a), Some(b)) => {
            reg.scheme == req.scheme && a.host == b.host && reg.path == req.path && reg.query == req.query
        }
        _ => false,
    }
}

/// The registered URI `requested` matches, if any.
pub fn find_match<'a>(registered: &'a [String], requested: &str) -> Option<&'a str> {
    registered.iter().map(String::as_str).find(|r| matches_registered(r, requested))
}

/// A display name for a client that registered without `client_name`: the host of an
/// `http(s)` redirect URI (lowercased), or the scheme of a private-use one. `None` when the URI
/// is not valid.
pub(crate) fn display_host(uri: &str) -> Option<String> {
    validate_redirect_uri(uri).ok()?;
    let parsed = parse_strict(uri).ok()?;
    match parsed.authority {
        Some(a) if !a.host.is_empty() && is_http_scheme(parsed.scheme) => Some(a.host.to_ascii_lowercase()),
        _ => Some(parsed.scheme.to_ascii_lowercase()),
    }
}

fn is_http_scheme(scheme: &str) -> bool {
    scheme.eq_ignore_ascii_case("http") || scheme.eq_ignore_ascii_case("https")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::RedirectKind::*;
    use super::RedirectUriError::*;
    use super::*;

    #[test]
    fn accepted_redirect_uris() {
        let cases: &[(&str, RedirectKind)] = &[
            ("https://example.com/cb", Https),
            ("https://example.com", Https),
            ("https://example.com/", Https),
            ("https://example.com:8443/cb?x=1&y=2", Https),
            ("https://example.com:443/cb", Https),
            ("https://sub.example.co.uk/oauth/callback", Https),
            ("https://xn--bcher-kva.example/cb", Https),
            ("https://example.com./cb", Https),
            ("https://127.0.0.1/cb", Https),
            ("https://[2001:db8::1]/cb", Https),
            ("https://localhost:3000/cb", Https),
            ("HTTPS://example.com/cb", Https),
            ("https://EXAMPLE.com/cb", Https),
            ("https://example.com/a%20b", Https),
            ("https://example.com/cb?next=%2Fhome", Https),
            ("https://example.com/cb?", Https),
            ("http://127.0.0.1/cb", LoopbackHttp),
            ("http://127.0.0.1:8080/cb", LoopbackHttp),
            ("http://127.0.0.1:65535/cb", LoopbackHttp),
            ("http://[::1]/cb", LoopbackHttp),
            ("http://[::1]:1234/cb", LoopbackHttp),
            ("http://localhost/cb", LoopbackHttp),
            ("http://localhost:3334/oauth/callback", LoopbackHttp),
            ("http://localhost", LoopbackHttp),
            ("HTTP://LOCALHOST:1234/cb", LoopbackHttp),
            ("http://LocalHost/cb", LoopbackHttp),
            ("com.example.app:/oauth2redirect", PrivateUseScheme),
            ("com.example.app://callback", PrivateUseScheme),
            ("com.example.app:///callback", PrivateUseScheme),
            ("com.googleusercontent.apps.123-abc:/oauth2redirect", PrivateUseScheme),
            ("COM.EXAMPLE.APP:/cb", PrivateUseScheme),
            ("com.example.app:cb", PrivateUseScheme),
            ("myapp://callback", PrivateUseScheme),
            ("myapp:/callback", PrivateUseScheme),
            ("cursor://anysphere.cursor-mcp/oauth/callback", PrivateUseScheme),
            ("com.example.:/cb", PrivateUseScheme),
            ("com..example:/cb", PrivateUseScheme),
            ("com.example.app:/cb?x=1", PrivateUseScheme),
            ("net.example+app:/cb", PrivateUseScheme),
        ];
        for (uri, kind) in cases {
            assert_eq!(validate_redirect_uri(uri), Ok(*kind), "{uri}");
        }
    }

    #[test]
    fn rejected_redirect_uris() {
        let long = format!("https://example.com/{}", "a".repeat(MAX_REDIRECT_URI_LEN));
        let cases: &[(&str, RedirectUriError)] = &[
            (&long, TooLong),
            ("", NotAbsolute),
            ("/cb", NotAbsolute),
            ("example.com/cb", NotAbsolute),
            ("//example.com/cb", NotAbsolute),
            ("1https://example.com", NotAbsolute),
            ("https:example.com/cb", NotAbsolute),
            ("https:/example.com/cb", NotAbsolute),
            ("https:///cb", NotAbsolute),
            ("https://", NotAbsolute),
            ("https://example.com:/cb", NotAbsolute),
            ("https://example.com:abc/cb", NotAbsolute),
            ("https://example.com:65536/cb", NotAbsolute),
            ("https://example.com:123456/cb", NotAbsolute),
            ("https://example.com:80:80/cb", NotAbsolute),
            // Whitespace and controls: browsers strip tabs/newlines, so the visited URL differs.
            ("https://example.com/c\tb", NotAbsolute),
            ("https://exa\nmple.com/cb", NotAbsolute),
            ("https://example.com/cb\r\n", NotAbsolute),
            (" https://example.com/cb", NotAbsolute),
            ("https://example.com/cb ", NotAbsolute),
            ("https://example.com/c b", NotAbsolute),
            ("https://example.com/cb\u{0}", NotAbsolute),
            ("https://example.com/cb\u{7f}", NotAbsolute),
            // Backslashes are `/` to a WHATWG parser.
            ("https://example.com\\@evil.com/cb", NotAbsolute),
            ("https:\\\\example.com/cb", NotAbsolute),
            // Non-ASCII and other characters outside RFC 3986.
            ("https://exämple.com/cb", NotAbsolute),
            ("https://example.com/cb?x=\"", NotAbsolute),
            ("https://example.com/<script>", NotAbsolute),
            ("https://example.com/a|b", NotAbsolute),
            ("https://example.com/%", NotAbsolute),
            ("https://example.com/%zz", NotAbsolute),
            // Percent-encoded, sub-delim or otherwise ambiguous hosts.
            ("https://%65xample.com/cb", NotAbsolute),
            ("https://example.com%2F@evil.com/cb", UserInfo),
            ("https://exa!mple.com/cb", NotAbsolute),
            ("https://127.1/cb", NotAbsolute),
            ("https://0x7f.0.0.1/cb", NotAbsolute),
            ("https://2130706433/cb", NotAbsolute),
            ("https://[0:0:0:0:0:0:0:1]/cb", NotAbsolute),
            ("https://[::1%25eth0]/cb", NotAbsolute),
            ("https://[v1.x]/cb", NotAbsolute),
            ("https://[::1/cb", NotAbsolute),
            ("https://[::1]x/cb", NotAbsolute),
            // Dot segments are resolved by browsers.
            ("https://example.com/a/../cb", NotAbsolute),
            ("https://example.com/./cb", NotAbsolute),
            ("https://example.com/a/%2e%2E/cb", NotAbsolute),
            ("https://example.com/a/.%2e", NotAbsolute),
            ("https://example.com/cb#", Fragment),
            ("https://example.com/cb#x", Fragment),
            ("com.example.app:/cb#x", Fragment),
            ("https://user@example.com/cb", UserInfo),
            ("https://a@b", UserInfo),
            ("https://user:pw@example.com/cb", UserInfo),
            ("https://@example.com/cb", UserInfo),
            ("http://localhost@evil.com/cb", UserInfo),
            ("http://127.0.0.1:80@evil.com/cb", UserInfo),
            ("com.example.app://user@host/cb", UserInfo),
            ("javascript:alert(1)", ForbiddenScheme),
            ("JAVASCRIPT:alert(1)", ForbiddenScheme),
            ("JavaScript://example.com/%0aalert(1)", ForbiddenScheme),
            ("javascript:alert(\"x\")", ForbiddenScheme),
            ("data:text/html,<script>alert(1)</script>", ForbiddenScheme),
            ("DATA:text/html;base64,AAAA", ForbiddenScheme),
            ("file:///etc/passwd", ForbiddenScheme),
            ("vbscript:msgbox(1)", ForbiddenScheme),
            ("about:blank", ForbiddenScheme),
            ("blob:https://example.com/uuid", ForbiddenScheme),
            ("ftp://example.com/cb", ForbiddenScheme),
            ("ws://127.0.0.1/cb", ForbiddenScheme),
            ("wss://example.com/cb", ForbiddenScheme),
            ("intent://cb", ForbiddenScheme),
            ("ms-settings:cb", ForbiddenScheme),
            ("com.example.app:", NotAbsolute),
            ("com.example.app://h%6fst/cb", NotAbsolute),
            ("com.example.app:/c b", NotAbsolute),
            ("http://example.com/cb", InsecureHttp),
            ("http://127.1/cb", InsecureHttp),
            ("http://127.0.0.2/cb", InsecureHttp),
            ("http://[0:0:0:0:0:0:0:1]/cb", InsecureHttp),
            ("http://localhost./cb", InsecureHttp),
            ("http://localhost.evil.com/cb", InsecureHttp),
            ("http://127.0.0.1.nip.io/cb", InsecureHttp),
            ("http://2130706433/cb", InsecureHttp),
            ("http://%6cocalhost/cb", NotAbsolute),
            ("http://127.0.0.1%2f@evil.com/cb", UserInfo),
            ("http://localhost\\@evil.com/cb", NotAbsolute),
            ("http:localhost/cb", NotAbsolute),
            ("http://localhost/a/../cb", NotAbsolute),
            ("http://localhost:/cb", NotAbsolute),
            ("http://localhost:0x50/cb", NotAbsolute),
        ];
        for (uri, err) in cases {
            assert_eq!(validate_redirect_uri(uri), Err(err.clone()), "{uri:?}");
        }
    }

    #[test]
    fn loopback_detection() {
        for uri in ["http://127.0.0.1/cb", "http://[::1]:99/cb", "HTTP://LOCALHOST/x"] {
            assert!(is_loopback_redirect(uri), "{uri}");
        }
        for uri in [
            "https://127.0.0.1/cb",
            "http://localhost./cb",
            "http://127.1/cb",
            "http://localhost@evil.com/",
            "http://localhost/c\tb",
            "com.example.app:/cb",
            "not a uri",
        ] {
            assert!(!is_loopback_redirect(uri), "{uri}");
        }
    }

    #[test]
    fn exact_match_for_non_loopback() {
        let reg = "https://example.com/cb";
        assert!(matches_registered(reg, reg));
        for req in [
            "https://example.com/cb/",
            "https://example.com/CB",
            "https://EXAMPLE.com/cb",
            "HTTPS://example.com/cb",
            "https://example.com:443/cb",
            "https://example.com/cb?",
            "https://example.com/cb?x=1",
            "https://example.com/cb#",
            "https://example.com/%63b",
            "https://example.com:8443/cb",
            "https://example.com/cb ",
            "https://example.com/cb\t",
            "https://example.com./cb",
            "",
        ] {
            assert!(!matches_registered(reg, req), "{req:?}");
        }
        // Private-use schemes get no port or case freedom either.
        assert!(matches_registered("com.example.app:/cb", "com.example.app:/cb"));
        assert!(!matches_registered("com.example.app:/cb", "COM.EXAMPLE.APP:/cb"));
        assert!(!matches_registered("com.example.app://h/cb", "com.example.app://h:1/cb"));
        // https on a loopback host is not the loopback exception.
        assert!(!matches_registered("https://127.0.0.1:1/cb", "https://127.0.0.1:2/cb"));
        assert!(!matches_registered("https://localhost/cb", "https://localhost:3000/cb"));
    }

    #[test]
    fn loopback_port_freedom() {
        let cases: &[(&str, &str)] = &[
            ("http://127.0.0.1/cb", "http://127.0.0.1:51234/cb"),
            ("http://127.0.0.1:8080/cb", "http://127.0.0.1:9090/cb"),
            ("http://127.0.0.1:8080/cb", "http://127.0.0.1/cb"),
            ("http://[::1]/cb", "http://[::1]:1/cb"),
            ("http://localhost:3334/oauth/callback", "http://localhost:40000/oauth/callback"),
            ("http://localhost/cb?a=1", "http://localhost:5/cb?a=1"),
            ("http://localhost", "http://localhost:80"),
            ("HTTP://LOCALHOST/cb", "HTTP://LOCALHOST:9/cb"),
        ];
        for (reg, req) in cases {
            assert!(matches_registered(reg, req), "{reg} vs {req}");
            assert!(matches_registered(req, reg), "{req} vs {reg}");
        }
    }

    #[test]
    fn loopback_everything_but_the_port_must_be_identical() {
        let reg = "http://127.0.0.1/cb";
        for req in [
            // Different hosts, even if both are loopback.
            "http://localhost:1234/cb",
            "http://[::1]:1234/cb",
            "http://127.0.0.2:1234/cb",
            "http://127.1:1234/cb",
            // Different path or query.
            "http://127.0.0.1:1234/cb/",
            "http://127.0.0.1:1234/CB",
            "http://127.0.0.1:1234/cb?",
            "http://127.0.0.1:1234/cb?x=1",
            "http://127.0.0.1:1234",
            "http://127.0.0.1:1234/%63b",
            "http://127.0.0.1:1234/x/../cb",
            // Scheme change.
            "https://127.0.0.1:1234/cb",
            "HTTP://127.0.0.1:1234/cb",
            // Parser-differential tricks.
            "http://127.0.0.1:1234@evil.com/cb",
            "http://127.0.0.1:1234\\@evil.com/cb",
            "http://127.0.0.1:1234\\evil.com/cb",
            "http://127.0.0.1:12\t34/cb",
            "http://127.0.0.1:1234/cb\n",
            "http://127.0.0.1:1234/cb#",
            "http://127.0.0.1:1234/cb#x",
            "http://127.0.0.1:/cb",
            "http://127.0.0.1:99999/cb",
            "http://127.0.0.1:1234.evil.com/cb",
            "http://127.0.0.1.evil.com:1234/cb",
            "http://%31%32%37.0.0.1:1234/cb",
            " http://127.0.0.1:1234/cb",
        ] {
            assert!(!matches_registered(reg, req), "{req:?}");
        }
        assert!(!matches_registered("http://localhost/cb", "http://LOCALHOST:1/cb"));
        assert!(!matches_registered("http://localhost/cb", "http://127.0.0.1:1/cb"));
        // An invalid registered loopback string never matches anything but itself.
        assert!(!matches_registered("http://localhost/c\tb", "http://localhost:1/c\tb"));
    }

    #[test]
    fn find_match_returns_the_registered_string() {
        let reg = vec!["https://example.com/cb".to_owned(), "http://127.0.0.1/cb".to_owned()];
        assert_eq!(find_match(&reg, "http://127.0.0.1:555/cb"), Some("http://127.0.0.1/cb"));
        assert_eq!(find_match(&reg, "https://example.com/cb"), Some("https://example.com/cb"));
        assert_eq!(find_match(&reg, "https://example.com/cb2"), None);
    }

    #[test]
    fn display_host_of_redirects() {
        assert_eq!(display_host("https://App.Example.com/cb").as_deref(), Some("app.example.com"));
        assert_eq!(display_host("http://[::1]:3/cb").as_deref(), Some("[::1]"));
        assert_eq!(display_host("com.Example.app:/cb").as_deref(), Some("com.example.app"));
        assert_eq!(display_host("com.example.app://cb").as_deref(), Some("com.example.app"));
        assert_eq!(display_host("javascript:alert(1)"), None);
    }

    fn loopback_host() -> impl Strategy<Value = &'static str> {
        prop_oneof![Just("127.0.0.1"), Just("[::1]"), Just("localhost"), Just("LocalHost")]
    }

    fn path_and_query() -> impl Strategy<Value = String> {
        ("(/[A-Za-z0-9_~-]{1,8}){0,4}", proptest::option::of("[A-Za-z0-9=&_-]{0,12}")).prop_map(|(p, q)| match q {
            Some(q) => format!("{p}?{q}"),
            None => p,
        })
    }

    fn valid_uri() -> impl Strategy<Value = String> {
        prop_oneof![
            ("[a-z][a-z0-9]{0,10}(\\.[a-z][a-z0-9]{0,10}){1,3}", path_and_query())
                .prop_map(|(h, pq)| format!("https://{h}{pq}")),
            (loopback_host(), proptest::option::of(1u16..), path_and_query()).prop_map(|(h, p, pq)| match p {
                Some(p) => format!("http://{h}:{p}{pq}"),
                None => format!("http://{h}{pq}"),
            }),
            ("[a-z]{2,6}\\.[a-z]{2,8}(\\.[a-z]{2,8})?", "(/[A-Za-z0-9_-]{1,8}){1,3}")
                .prop_map(|(s, p)| format!("{s}:{p}")),
        ]
    }

    proptest! {
        #[test]
        fn every_valid_uri_matches_itself(uri in valid_uri()) {
            prop_assert!(validate_redirect_uri(&uri).is_ok(), "{}", uri);
            prop_assert!(matches_registered(&uri, &uri));
        }

        #[test]
        fn loopback_port_independence(
            host in loopback_host(),
            p1 in proptest::option::of(1u16..),
            p2 in proptest::option::of(1u16..),
            pq in path_and_query(),
        ) {
            let with = |p: Option<u16>| match p {
                Some(p) => format!("http://{host}:{p}{pq}"),
                None => format!("http://{host}{pq}"),
            };
            let (a, b) = (with(p1), with(p2));
            prop_assert_eq!(validate_redirect_uri(&a), Ok(LoopbackHttp));
            prop_assert!(matches_registered(&a, &b), "{} vs {}", a, b);
            prop_assert!(matches_registered(&b, &a));
        }

        #[test]
        fn non_loopback_uris_only_match_identical_strings(a in valid_uri(), b in valid_uri()) {
            if matches_registered(&a, &b) && a != b {
                // The only inexact matches are two loopback URIs equal but for the port.
                prop_assert!(is_loopback_redirect(&a) && is_loopback_redirect(&b));
                let strip = |s: &str| {
                    let p = parse_strict(s).unwrap();
                    (p.scheme.to_owned(), p.authority.unwrap().host.to_owned(), p.path.to_owned(),
                     p.query.map(str::to_owned))
                };
                prop_assert_eq!(strip(&a), strip(&b));
            }
        }

        #[test]
        fn inserting_a_forbidden_char_breaks_validation(
            uri in valid_uri(),
            pos in any::<prop::sample::Index>(),
            c in prop_oneof![Just('\t'), Just('\n'), Just('\r'), Just(' '), Just('\\'),
                             Just('\u{0}'), Just('\u{7f}'), Just('é'), Just('#')],
        ) {
            let mut s = uri.clone();
            let i = pos.index(s.len() + 1);
            s.insert(i, c);
            prop_assert!(validate_redirect_uri(&s).is_err(), "{:?}", s);
            prop_assert!(!matches_registered(&uri, &s));
        }

        #[test]
        fn arbitrary_strings_never_panic(a in ".{0,80}", b in ".{0,80}") {
            let _ = validate_redirect_uri(&a);
            let _ = is_loopback_redirect(&a);
            let _ = display_host(&a);
            prop_assert_eq!(matches_registered(&a, &a), true);
            if matches_registered(&a, &b) && a != b {
                prop_assert!(is_loopback_redirect(&a) && is_loopback_redirect(&b));
            }
        }

        #[test]
        fn accepted_http_uris_agree_with_the_whatwg_parser(
            scheme in prop_oneof![Just("http"), Just("https"), Just("HTTPS"), Just("hTTp")],
            tail in prop_oneof![
                "[a-zA-Z0-9:@\\[\\]%./?#=&'!$()*+,;_~\\\\\t -]{0,40}",
                "(:[0-9]{1,5})?(/[a-zA-Z0-9%.@:!$&'()*+,;=_~-]{0,8}){0,3}(\\?[a-zA-Z0-9%/?@:=&_-]{0,10})?",
            ],
            host in prop_oneof![
                Just("localhost"), Just("127.0.0.1"), Just("[::1]"), Just("LOCALHOST"),
                Just("127.1"), Just("0x7f.1"), Just("[::ffff:127.0.0.1]"), Just("example.com"),
                Just("EXAMPLE.com."), Just("xn--bcher-kva.example"), Just("ex%61mple.com"),
                Just("a.b-c_d.example"), Just("1.2.3.4"), Just("[2001:db8::1]"),
            ],
        ) {
            let s = format!("{scheme}://{host}{tail}");
            let whatwg = ::url::Url::parse(&s);
            if let Ok(kind) = validate_redirect_uri(&s) {
                let whatwg = whatwg.unwrap();
                let raw = parse_strict(&s).unwrap();
                let raw_host = raw.authority.unwrap().host.to_ascii_lowercase();
                prop_assert_eq!(whatwg.host_str(), Some(raw_host.as_str()), "{}", s);
                prop_assert!(whatwg.username().is_empty() && whatwg.password().is_none());
                prop_assert!(whatwg.fragment().is_none());
                if kind == LoopbackHttp {
                    prop_assert_eq!(whatwg.scheme(), "http");
                    prop_assert!(LOOPBACK_HOSTS.contains(&raw_host.as_str()));
                } else {
                    prop_assert_eq!(whatwg.scheme(), "https");
                }
            }
        }

        #[test]
        fn uri_like_strings_never_panic(s in "[a-zA-Z.]{1,12}:(//)?[a-zA-Z0-9:@\\[\\]%./?#=\\\\ -]{0,40}") {
            if let Ok(kind) = validate_redirect_uri(&s) {
                prop_assert!(!s.contains('#') && !s.contains('\\') && !s.contains(' '));
                if kind != PrivateUseScheme {
                    prop_assert!(!s.contains('@'));
                    // No parser differential: the WHATWG parser (what browsers run) sees the
                    // same host, no credentials and no fragment.
                    let raw = parse_strict(&s).unwrap().authority.unwrap().host.to_ascii_lowercase();
                    let whatwg = ::url::Url::parse(&s).unwrap();
                    prop_assert_eq!(whatwg.host_str(), Some(raw.as_str()));
                    prop_assert!(whatwg.username().is_empty() && whatwg.password().is_none());
                    prop_assert!(whatwg.fragment().is_none());
                }
            }
        }
    }
}
