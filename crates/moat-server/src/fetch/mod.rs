//! The SSRF-safe fetcher for URLs that clients give Moat (Client ID Metadata Documents, logos,
//! `jwks_uri`): MCP requirements item 12, DESIGN.md §5.
//!
//! - https only, no userinfo, no proxy, no redirects (a 3xx is an error);
//! - Moat resolves DNS itself and vets every address against [`address::check`]; the
//!   connection goes to exactly the vetted addresses (the resolver hands reqwest only those,
//!   so a second lookup cannot rebind the name); IP literals in any form (`2130706433`,
//!   `0x7f.1`, `[::ffff:127.0.0.1]`) are normalised by the WHATWG URL parser and vetted too;
//! - connect and total timeouts; the body is streamed and cut off at a byte cap; only the
//!   expected content types are accepted.

pub mod address;

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use reqwest::dns::{Addrs, Name, Resolve, Resolving};
use reqwest::header;

/// Settings of the fetcher.
#[derive(Debug, Clone)]
pub struct FetchSettings {
    /// Allow 127.0.0.0/8 and ::1 (`MOAT_CIMD_ALLOW_LOOPBACK`); off by default.
    pub allow_loopback: bool,
    /// Extra trusted root CAs, PEM (`MOAT_CIMD_EXTRA_ROOT_CA`).
    pub extra_root_ca_pem: Option<Vec<u8>>,
    /// Host → addresses overrides (`MOAT_CIMD_RESOLVE`), still vetted.
    pub resolve: HashMap<String, Vec<IpAddr>>,
    pub connect_timeout: Duration,
    pub total_timeout: Duration,
}

impl Default for FetchSettings {
    fn default() -> Self {
        Self {
            allow_loopback: false,
            extra_root_ca_pem: None,
            resolve: HashMap::new(),
            connect_timeout: Duration::from_secs(3),
            total_timeout: Duration::from_secs(5),
        }
    }
}

/// Parses `host=ip[,host=ip…]` (repeat a host for several addresses).
pub fn parse_resolve_overrides(s: &str) -> Result<HashMap<String, Vec<IpAddr>>, String> {
    let mut map: HashMap<String, Vec<IpAddr>> = HashMap::new();
    for entry in s.split(',').map(str::trim).filter(|e| !e.is_empty()) {
        let (host, ip) = entry.split_once('=').ok_or_else(|| format!("{entry:?} is not host=ip"))?;
        let ip: IpAddr = ip
            .trim()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .parse()
            .map_err(|_| format!("{entry:?}: bad IP address"))?;
        map.entry(host.trim().to_ascii_lowercase()).or_default().push(ip);
    }
    Ok(map)
}

/// What kind of content a fetch expects.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Expect {
    /// `application/json` or `application/*+json`.
    Json,
    /// Raster images (`image/png`, `image/jpeg`, `image/gif`, `image/webp`); never SVG, which can
    /// carry script.
    Image,
}

/// Why a fetch failed. Messages are safe to show and log (no response bodies).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum FetchError {
    #[error("not a valid URL")]
    InvalidUrl,
    #[error("only https URLs are fetched")]
    NotHttps,
    #[error("URLs with user information are not fetched")]
    UserInfo,
    #[error("the address {0} is not allowed ({1})")]
    ForbiddenAddress(IpAddr, &'static str),
    #[error("the host name could not be resolved")]
    Resolve,
    #[error("the connection failed")]
    Connect,
    #[error("the fetch took too long")]
    Timeout,
    #[error("the server answered with a redirect ({0}); redirects are not followed")]
    Redirect(u16),
    #[error("the server answered with status {0}")]
    Status(u16),
    #[error("unexpected content type {0:?}")]
    ContentType(String),
    #[error("the response is larger than {0} bytes")]
    TooLarge(usize),
    #[error("reading the response failed")]
    Body,
}

impl FetchError {
    /// Short label for metrics.
    pub fn label(&self) -> &'static str {
        match self {
            Self::InvalidUrl | Self::NotHttps | Self::UserInfo => "bad_url",
            Self::ForbiddenAddress(..) => "forbidden_address",
            Self::Resolve => "dns",
            Self::Connect => "connect",
            Self::Timeout => "timeout",
            Self::Redirect(_) => "redirect",
            Self::Status(_) => "status",
            Self::ContentType(_) => "content_type",
            Self::TooLarge(_) => "too_large",
            Self::Body => "body",
        }
    }
}

/// A successful fetch.
#[derive(Debug, Clone)]
pub struct Fetched {
    pub body: Bytes,
    pub content_type: String,
    /// Response headers relevant to HTTP caching.
    pub cache_control: Option<String>,
    pub expires: Option<String>,
    pub age: Option<String>,
    pub date: Option<String>,
}

/// The resolver reqwest uses: system DNS (or an override), every address vetted.
struct VettingResolver {
    allow_loopback: bool,
    overrides: Arc<HashMap<String, Vec<IpAddr>>>,
}

impl Resolve for VettingResolver {
    fn resolve(&self, name: Name) -> Resolving {
        let host = name.as_str().to_ascii_lowercase();
        let allow_loopback = self.allow_loopback;
        let overrides = Arc::clone(&self.overrides);
        Box::pin(async move {
            let ips: Vec<IpAddr> = match overrides.get(&host) {
                Some(ips) => ips.clone(),
                // A resolver failure (NXDOMAIN, SERVFAIL, no resolver) is reported as
                // `FetchError::Resolve`, which `classify` finds in reqwest's error chain, so the
                // metric and log say `dns` rather than `connect`.
                None => match tokio::net::lookup_host((host.as_str(), 0)).await {
                    Ok(addrs) => addrs.map(|a| a.ip()).collect(),
                    Err(e) => {
                        tracing::debug!(host, error = %e, "resolving a client-supplied host failed");
                        return Err(Box::new(FetchError::Resolve) as Box<dyn std::error::Error + Send + Sync>);
                    }
                },
            };
            vet_all(&ips, allow_loopback).map_err(|e| -> Box<dyn std::error::Error + Send + Sync> { Box::new(e) })?;
            let addrs: Addrs = Box::new(ips.into_iter().map(|ip| SocketAddr::new(ip, 0)));
            Ok(addrs)
        })
    }
}

/// Every address must pass: a name that resolves to both public and internal addresses is
/// refused rather than trimmed, so what is fetched never depends on which answer wins.
fn vet_all(ips: &[IpAddr], allow_loopback: bool) -> Result<(), FetchError> {
    if ips.is_empty() {
        return Err(FetchError::Resolve);
    }
    for ip in ips {
        address::check(*ip, allow_loopback).map_err(|why| FetchError::ForbiddenAddress(*ip, why))?;
    }
    Ok(())
}

/// The fetcher (cheap to clone; one connection pool).
#[derive(Clone)]
pub struct SafeFetcher {
    client: reqwest::Client,
    settings: Arc<FetchSettings>,
}

impl SafeFetcher {
    pub fn new(settings: FetchSettings) -> anyhow::Result<Self> {
        let resolver =
            VettingResolver { allow_loopback: settings.allow_loopback, overrides: Arc::new(settings.resolve.clone()) };
        let mut builder = reqwest::Client::builder()
            .no_proxy()
            .redirect(reqwest::redirect::Policy::none())
            .https_only(true)
            .connect_timeout(settings.connect_timeout)
            .timeout(settings.total_timeout)
            .user_agent(concat!("Moat/", env!("CARGO_PKG_VERSION"), " (client metadata fetcher)"))
            .dns_resolver(Arc::new(resolver));
        if let Some(pem) = &settings.extra_root_ca_pem {
            let certs = reqwest::Certificate::from_pem_bundle(pem)
                .map_err(|e| anyhow::anyhow!("MOAT_CIMD_EXTRA_ROOT_CA: not a PEM certificate bundle: {e}"))?;
            builder = builder.tls_certs_merge(certs);
        }
        let client = builder.build().map_err(|e| anyhow::anyhow!("building the HTTP client: {e}"))?;
        Ok(Self { client, settings: Arc::new(settings) })
    }

    /// Fetches `url` under the policy, reading at most `max_bytes`.
    pub async fn fetch(&self, url: &str, expect: Expect, max_bytes: usize) -> Result<Fetched, FetchError> {
        let parsed = url::Url::parse(url).map_err(|_| FetchError::InvalidUrl)?;
        if parsed.scheme() != "https" {
            return Err(FetchError::NotHttps);
        }
        if !parsed.username().is_empty() || parsed.password().is_some() {
            return Err(FetchError::UserInfo);
        }
        // IP literals never reach the resolver: vet them here. The WHATWG parser has already
        // turned `2130706433`, `0x7f.1` and friends into dotted IPv4.
        match parsed.host() {
            Some(url::Host::Ipv4(ip)) => vet_all(&[IpAddr::V4(ip)], self.settings.allow_loopback)?,
            Some(url::Host::Ipv6(ip)) => vet_all(&[IpAddr::V6(ip)], self.settings.allow_loopback)?,
            Some(url::Host::Domain(_)) => {}
            None => return Err(FetchError::InvalidUrl),
        }
        let accept = match expect {
            Expect::Json => "application/json",
            Expect::Image => "image/png, image/jpeg, image/gif, image/webp",
        };
        let fut = async {
            let mut resp = self.client.get(parsed).header(header::ACCEPT, accept).send().await.map_err(classify)?;
            let status = resp.status();
            if status.is_redirection() {
                return Err(FetchError::Redirect(status.as_u16()));
            }
            if status != reqwest::StatusCode::OK {
                return Err(FetchError::Status(status.as_u16()));
            }
            let content_type = resp
                .headers()
                .get(header::CONTENT_TYPE)
                .and_then(|v| v.to_str().ok())
                .unwrap_or_default()
                .to_ascii_lowercase();
            let essence = content_type.split(';').next().unwrap_or_default().trim().to_owned();
            let ok = match expect {
                Expect::Json => {
                    essence == "application/json" || (essence.starts_with("application/") && essence.ends_with("+json"))
                }
                Expect::Image => matches!(essence.as_str(), "image/png" | "image/jpeg" | "image/gif" | "image/webp"),
            };
            if !ok {
                return Err(FetchError::ContentType(essence));
            }
            if resp.content_length().is_some_and(|l| l > max_bytes as u64) {
                return Err(FetchError::TooLarge(max_bytes));
            }
            let header =
                |name: header::HeaderName| resp.headers().get(name).and_then(|v| v.to_str().ok()).map(str::to_owned);
            let cache_control = combined_field(resp.headers(), &header::CACHE_CONTROL);
            let expires = header(header::EXPIRES);
            let age = header(header::AGE);
            let date = header(header::DATE);
            let mut body = Vec::new();
            while let Some(chunk) = resp.chunk().await.map_err(classify_body)? {
                if body.len() + chunk.len() > max_bytes {
                    return Err(FetchError::TooLarge(max_bytes));
                }
                body.extend_from_slice(&chunk);
            }
            Ok(Fetched { body: Bytes::from(body), content_type: essence, cache_control, expires, age, date })
        };
        tokio::time::timeout(self.settings.total_timeout, fut).await.map_err(|_| FetchError::Timeout)?
    }
}

/// All field lines of a list-valued header combined into one value, as RFC 9110 §5.3 defines
/// (in order, joined with ", "), so that e.g. a `no-store` on a second `Cache-Control` line is
/// seen. Bytes that are not visible ASCII are kept (lossily) rather than dropping the line,
/// which could hide a directive.
fn combined_field(headers: &header::HeaderMap, name: &header::HeaderName) -> Option<String> {
    let lines: Vec<String> =
        headers.get_all(name).iter().map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).collect();
    (!lines.is_empty()).then(|| lines.join(", "))
}

fn source_chain(e: &(dyn std::error::Error + 'static)) -> Option<FetchError> {
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(err) = cur {
        if let Some(f) = err.downcast_ref::<FetchError>() {
            return Some(f.clone());
        }
        cur = err.source();
    }
    None
}

fn classify(e: reqwest::Error) -> FetchError {
    if let Some(f) = source_chain(&e) {
        return f;
    }
    if e.is_timeout() { FetchError::Timeout } else { FetchError::Connect }
}

fn classify_body(e: reqwest::Error) -> FetchError {
    if e.is_timeout() { FetchError::Timeout } else { FetchError::Body }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fetcher() -> SafeFetcher {
        SafeFetcher::new(FetchSettings::default()).unwrap()
    }

    #[tokio::test]
    async fn literal_and_odd_forms_of_internal_addresses_are_refused_before_connecting() {
        let f = fetcher();
        for url in [
            "https://127.0.0.1/x",
            "https://2130706433/x",
            "https://0x7f.1/x",
            "https://0x7f000001/x",
            "https://017700000001/x",
            "https://127.1/x",
            "https://[::1]/x",
            "https://[::ffff:127.0.0.1]/x",
            "https://[::ffff:7f00:1]/x",
            "https://169.254.169.254/latest/meta-data/",
            "https://10.1.2.3/x",
            "https://[fd00::1]/x",
            "https://0/x",
        ] {
            match f.fetch(url, Expect::Json, 5120).await {
                Err(FetchError::ForbiddenAddress(..)) => {}
                other => panic!("{url}: expected a forbidden address, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn non_https_and_userinfo_are_refused() {
        let f = fetcher();
        assert_eq!(f.fetch("http://example.com/x", Expect::Json, 10).await.unwrap_err(), FetchError::NotHttps);
        assert_eq!(f.fetch("https://u:p@example.com/x", Expect::Json, 10).await.unwrap_err(), FetchError::UserInfo);
        assert_eq!(f.fetch("not a url", Expect::Json, 10).await.unwrap_err(), FetchError::InvalidUrl);
    }

    #[tokio::test]
    async fn names_resolving_to_internal_addresses_are_refused() {
        let s = FetchSettings {
            resolve: parse_resolve_overrides("internal.test=10.0.0.5,mixed.test=93.184.216.34,mixed.test=127.0.0.1")
                .unwrap(),
            ..Default::default()
        };
        let f = SafeFetcher::new(s).unwrap();
        for url in ["https://internal.test/x", "https://mixed.test/x", "https://localhost/x"] {
            match f.fetch(url, Expect::Json, 5120).await {
                Err(FetchError::ForbiddenAddress(..)) => {}
                other => panic!("{url}: expected a forbidden address, got {other:?}"),
            }
        }
    }

    #[tokio::test]
    async fn resolver_failures_are_dns_errors() {
        // RFC 6761 §6.4: `.invalid` names never resolve.
        let err = fetcher().fetch("https://moat-fetch-test.invalid/client.json", Expect::Json, 5120).await.unwrap_err();
        assert_eq!(err, FetchError::Resolve);
        assert_eq!(err.label(), "dns");
    }

    #[test]
    fn cache_control_field_lines_are_combined() {
        let mut h = header::HeaderMap::new();
        assert_eq!(combined_field(&h, &header::CACHE_CONTROL), None);
        h.append(header::CACHE_CONTROL, header::HeaderValue::from_static("public, max-age=300"));
        assert_eq!(combined_field(&h, &header::CACHE_CONTROL).as_deref(), Some("public, max-age=300"));
        h.append(header::CACHE_CONTROL, header::HeaderValue::from_static("no-store"));
        let combined = combined_field(&h, &header::CACHE_CONTROL);
        assert_eq!(combined.as_deref(), Some("public, max-age=300, no-store"));
        let now = std::time::SystemTime::now();
        assert_eq!(
            crate::cimd::ttl::freshness(combined.as_deref(), None, None, None, now),
            Duration::ZERO,
            "no-store on any line wins"
        );
        // A line with non-ASCII bytes is kept, not dropped with its directives.
        let mut h = header::HeaderMap::new();
        h.append(header::CACHE_CONTROL, header::HeaderValue::from_static("max-age=300"));
        h.append(header::CACHE_CONTROL, header::HeaderValue::from_bytes(b"no-store, x=\xe9").unwrap());
        let combined = combined_field(&h, &header::CACHE_CONTROL);
        assert_eq!(crate::cimd::ttl::freshness(combined.as_deref(), None, None, None, now), Duration::ZERO);
    }

    #[test]
    fn resolve_override_parsing() {
        let m = parse_resolve_overrides("a.test=127.0.0.1, a.test=[::1],B.test=10.0.0.1").unwrap();
        assert_eq!(m["a.test"].len(), 2);
        assert!(m.contains_key("b.test"));
        assert!(parse_resolve_overrides("nohost").is_err());
        assert!(parse_resolve_overrides("a=notanip").is_err());
    }
}
