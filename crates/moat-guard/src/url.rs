//! URL helpers: canonical comparison of resource URLs (RFC 8707 §2, RFC 3986 §6) and the
//! path-inserted well-known URLs of RFC 8414 §3.1 and RFC 9728 §3.1.

use url::Url;

/// The canonical form used to compare resource URLs, as Moat does (DESIGN.md §8): lowercase
/// scheme and host (the `url` crate lowercases both for http/https), default port dropped,
/// an empty path and a single trailing slash ignored. `None` for anything that is not an absolute
/// http(s) URL without fragment and userinfo: such a string never matches a resource.
pub fn canonical_resource(input: &str) -> Option<String> {
    let url = Url::parse(input).ok()?;
    if !matches!(url.scheme(), "http" | "https")
        || url.fragment().is_some()
        || !url.username().is_empty()
        || url.password().is_some()
    {
        return None;
    }
    let host = url.host_str()?;
    let mut out = format!("{}://{}", url.scheme(), host);
    // `Url::port()` is already `None` for the scheme's default port (RFC 3986 §6.2.3).
    if let Some(port) = url.port() {
        out.push(':');
        out.push_str(&port.to_string());
    }
    let path = url.path();
    out.push_str(path.strip_suffix('/').unwrap_or(path));
    if let Some(query) = url.query() {
        out.push('?');
        out.push_str(query);
    }
    Some(out)
}

/// True when both strings are resource URLs with the same canonical form.
pub fn same_resource(a: &str, b: &str) -> bool {
    match (canonical_resource(a), canonical_resource(b)) {
        (Some(a), Some(b)) => a == b,
        _ => false,
    }
}

/// RFC 8414 §3.1 / RFC 9728 §3.1 path insertion: the well-known segment goes between the origin
/// and the URL's path, and a trailing slash of the path is dropped:
/// `https://h/p` + `oauth-protected-resource` → `https://h/.well-known/oauth-protected-resource/p`.
/// Query and fragment are not carried over.
pub fn well_known_url(input: &str, suffix: &str) -> Option<String> {
    let url = Url::parse(input).ok()?;
    let origin = url.origin();
    if !origin.is_tuple() {
        return None;
    }
    let path = url.path();
    let path = path.strip_suffix('/').unwrap_or(path);
    Some(format!("{}/.well-known/{suffix}{path}", origin.ascii_serialization()))
}

/// The path part of [`well_known_url`] (what a router serves), e.g.
/// `/.well-known/oauth-protected-resource/mcp` for `https://h/mcp`.
pub fn well_known_path(input: &str, suffix: &str) -> Option<String> {
    let url = Url::parse(input).ok()?;
    let path = url.path();
    let path = path.strip_suffix('/').unwrap_or(path);
    Some(format!("/.well-known/{suffix}{path}"))
}

/// `scheme://host[:port]` of a URL (RFC 6454 ASCII serialisation), the form an `Origin` header
/// carries.
pub fn origin_of(input: &str) -> Option<String> {
    let url = Url::parse(input).ok()?;
    let origin = url.origin();
    origin.is_tuple().then(|| origin.ascii_serialization())
}

/// True for `localhost`, `127.0.0.0/8` and `[::1]`: hosts where plain http is acceptable.
pub fn is_loopback_url(url: &Url) -> bool {
    match url.host() {
        Some(url::Host::Domain(d)) => d.eq_ignore_ascii_case("localhost"),
        Some(url::Host::Ipv4(ip)) => ip.is_loopback(),
        Some(url::Host::Ipv6(ip)) => ip.is_loopback(),
        None => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn canonical_forms() {
        assert_eq!(
            canonical_resource("HTTPS://MCP.Example.com:443/mcp/").as_deref(),
            Some("https://mcp.example.com/mcp")
        );
        assert_eq!(canonical_resource("http://127.0.0.1:3000/mcp").as_deref(), Some("http://127.0.0.1:3000/mcp"));
        assert_eq!(canonical_resource("https://h.example").as_deref(), Some("https://h.example"));
        assert!(same_resource("https://h.example/", "https://H.example:443"));
        assert!(!same_resource("https://h.example/mcp", "https://h.example/MCP"));
        assert!(!same_resource("https://h.example/mcp", "http://h.example/mcp"));
        assert!(!same_resource("https://h.example:8443/mcp", "https://h.example/mcp"));
        assert_eq!(canonical_resource("https://h.example/mcp#x"), None);
        assert_eq!(canonical_resource("https://u@h.example/mcp"), None);
        assert_eq!(canonical_resource("res_123"), None);
    }

    #[test]
    fn path_insertion() {
        assert_eq!(
            well_known_url("https://h.example/mcp", "oauth-protected-resource").as_deref(),
            Some("https://h.example/.well-known/oauth-protected-resource/mcp")
        );
        assert_eq!(
            well_known_url("https://h.example/", "oauth-protected-resource").as_deref(),
            Some("https://h.example/.well-known/oauth-protected-resource")
        );
        assert_eq!(
            well_known_url("http://127.0.0.1:9/resources/res_1", "oauth-authorization-server").as_deref(),
            Some("http://127.0.0.1:9/.well-known/oauth-authorization-server/resources/res_1")
        );
        assert_eq!(
            well_known_path("https://h.example/a/mcp/", "oauth-protected-resource").as_deref(),
            Some("/.well-known/oauth-protected-resource/a/mcp")
        );
        assert_eq!(origin_of("https://H.example:443/mcp").as_deref(), Some("https://h.example"));
    }
}
