//! moat-guard: the resource-server library for MCP servers protected by Moat.
//!
//! - [`Validator`] checks RFC 9068 JWT access tokens locally against the issuer's JWKS
//!   (fetched lazily, cached with a TTL, refetched on an unknown `kid` — coalesced and
//!   rate-limited — and kept when Moat is unreachable), with a bounded cache of verified tokens.
//! - [`Guard`] holds the endpoint's policy: protected resource metadata (RFC 9728), bearer
//!   extraction from the header only (RFC 6750 §2.1), per-tool scopes ([`ScopePolicy`]) with an
//!   optional hierarchy ([`ScopeHierarchy`]), RFC 6750 §3 challenges ([`BearerChallenge`]), and
//!   MCP sessions bound to the `(iss, sub)` that created them ([`Guard::check_session`]).
//! - `feature = "axum"` (default): [`GuardLayer`] for tower/axum and
//!   [`Guard::metadata_router`].
//! - `feature = "rmcp"`: [`rmcp::Caller`], the verified claims as an rmcp tool parameter.
//! - `feature = "testing"`: [`testing::TestAuthority`], a loopback stand-in for Moat's key
//!   endpoints that mints tokens in Moat's wire format, for your own tests.
//!
//! Key fetching runs on the tokio runtime (reqwest, `tokio::spawn`): call the validator from
//! within one. See `docs/moat-guard.md` for a walkthrough.

#[cfg(feature = "axum")]
mod axum;
mod cache;
mod challenge;
mod claims;
mod config;
mod error;
mod guard;
mod jwk;
mod jwt;
mod keys;
mod metadata;
mod policy;
#[cfg(feature = "rmcp")]
pub mod rmcp;
mod scope;
mod session;
#[cfg(feature = "testing")]
pub mod testing;
pub mod url;
mod validator;

#[cfg(feature = "axum")]
pub use crate::axum::{AuthenticatedCaller, GuardLayer, GuardService};
pub use challenge::{BearerChallenge, sanitize_description};
pub use claims::Claims;
pub use config::ValidatorConfig;
pub use error::{ConfigError, ValidationError};
pub use guard::{Guard, GuardConfig, Rejection, bearer_token, claims_from_extensions, query_has_access_token};
pub use jwt::Algorithm;
pub use metadata::ProtectedResourceMetadata;
pub use policy::ScopePolicy;
pub use scope::{ScopeHierarchy, is_scope_token, parse_scope};
pub use session::SessionCheck;
pub use validator::Validator;

/// Origins and hosts to allow on the MCP endpoint (DNS-rebinding defence, MCP transport spec),
/// derived from the server's public URL.
pub mod origin {
    /// The `Origin` value a browser page served from the MCP server's own origin sends:
    /// `scheme://host[:port]` of `server_url`.
    pub fn default_allowed_origins(server_url: &str) -> Vec<String> {
        crate::url::origin_of(server_url).into_iter().collect()
    }

    /// `Host` header values to accept: the server URL's host, and `host:port` when the URL has
    /// an explicit port.
    pub fn default_allowed_hosts(server_url: &str) -> Vec<String> {
        let Ok(url) = url::Url::parse(server_url) else {
            return Vec::new();
        };
        let Some(host) = url.host_str() else {
            return Vec::new();
        };
        let mut out = vec![host.to_owned()];
        if let Some(port) = url.port() {
            out.push(format!("{host}:{port}"));
        }
        out
    }

    /// True when an `Origin` header value is allowed: absent origins are allowed (non-browser
    /// clients send none); otherwise it must equal one of `allowed` after lowercasing, with
    /// default ports dropped.
    pub fn origin_allowed(origin: Option<&str>, allowed: &[String]) -> bool {
        let Some(origin) = origin else {
            return true;
        };
        let Some(origin) = crate::url::origin_of(origin) else {
            return false;
        };
        allowed.iter().filter_map(|a| crate::url::origin_of(a)).any(|a| a == origin)
    }

    #[cfg(test)]
    mod tests {
        use super::*;

        #[test]
        fn derived_lists() {
            assert_eq!(default_allowed_origins("http://127.0.0.1:3000/mcp"), vec!["http://127.0.0.1:3000".to_owned()]);
            assert_eq!(
                default_allowed_hosts("http://127.0.0.1:3000/mcp"),
                vec!["127.0.0.1".to_owned(), "127.0.0.1:3000".to_owned()]
            );
            assert_eq!(default_allowed_hosts("https://mcp.example.com/mcp"), vec!["mcp.example.com".to_owned()]);
            let allowed = default_allowed_origins("https://mcp.example.com/mcp");
            assert!(origin_allowed(None, &allowed));
            assert!(origin_allowed(Some("https://MCP.example.com:443"), &allowed));
            assert!(!origin_allowed(Some("https://evil.example"), &allowed));
            assert!(!origin_allowed(Some("null"), &allowed));
        }
    }
}
