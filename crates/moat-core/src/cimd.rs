//! Client ID Metadata Documents (draft-ietf-oauth-client-id-metadata-document-01, MCP
//! authorization spec 2025-11-25 "Client ID Metadata Documents"): which `client_id` URLs may be
//! fetched, and which fetched documents describe an acceptable client.
//!
//! The document cannot carry a shared secret (there is no way to deliver one), so symmetric
//! authentication methods, `client_secret` and private key material are refused; a client may
//! be public (`none`) or authenticate with `private_key_jwt` (RFC 7523) using keys it publishes.

use serde_json::{Map, Value};

use crate::model::{AuthMethod, GrantType};
use crate::redirect;

/// Longest client id URL accepted (also [`crate::ids::ClientId::MAX_LEN`]).
pub const MAX_CLIENT_ID_URL_LEN: usize = 512;
/// Most redirect URIs a document may list.
pub const MAX_REDIRECT_URIS: usize = 20;
/// Longest `client_name`.
pub const MAX_CLIENT_NAME_LEN: usize = 200;
/// Most keys in a key set (inline `jwks`, a `jwks_uri` set, `moat client create --jwks-file`).
/// A client needs one signing key, two while it rotates; twenty leaves ample room and keeps a
/// set Moat holds and searches small.
pub const MAX_JWKS_KEYS: usize = 20;

/// Why a client id URL or its document was refused. Messages are shown to the user.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CimdError {
    #[error("the client_id is not an https URL with a path")]
    NotHttpsWithPath,
    #[error("the client_id URL must not contain a fragment, user information or dot segments")]
    ForbiddenUrlPart,
    #[error("the client_id URL is too long")]
    TooLong,
    #[error("the client metadata document is not a JSON object")]
    NotAnObject,
    #[error("the document's client_id does not match the URL it was fetched from")]
    ClientIdMismatch,
    #[error("the document has no valid {0}")]
    Missing(&'static str),
    #[error("the document's {0} is invalid")]
    Invalid(&'static str),
    #[error("the document must not contain {0}")]
    Forbidden(&'static str),
    #[error("token_endpoint_auth_method {0} is not allowed for metadata-document clients")]
    AuthMethod(String),
    #[error("the key set is invalid: {0}")]
    KeySet(&'static str),
    #[error("the key set holds more than {} keys", MAX_JWKS_KEYS)]
    TooManyKeys,
}

/// True when `s` looks like a CIMD client id (an https URL); whether it is acceptable is
/// [`validate_client_id_url`]'s business.
pub fn is_client_id_url(s: &str) -> bool {
    // Compared as bytes: slicing the `str` at 8 would panic when byte 8 falls inside a
    // multi-byte character (the client_id is attacker-chosen).
    s.len() > 8 && s.as_bytes().get(..8).is_some_and(|p| p.eq_ignore_ascii_case(b"https://"))
}

/// Checks a `client_id` URL before it is fetched: https, a host, a path other than `/`, no
/// fragment, no user information, no `.`/`..` segments (also percent-encoded), printable ASCII
/// only, at most [`MAX_CLIENT_ID_URL_LEN`] bytes.
pub fn validate_client_id_url(s: &str) -> Result<(), CimdError> {
    if s.len() > MAX_CLIENT_ID_URL_LEN {
        return Err(CimdError::TooLong);
    }
    if !s.bytes().all(|b| (0x21..=0x7e).contains(&b)) || s.contains('\\') {
        return Err(CimdError::ForbiddenUrlPart);
    }
    let Some(rest) = s.strip_prefix("https://") else { return Err(CimdError::NotHttpsWithPath) };
    // CIMD draft §3: the URL MUST NOT contain a fragment component.
    if s.contains('#') {
        return Err(CimdError::ForbiddenUrlPart);
    }
    // RFC 3986 §3.2: the authority ends at the first '/', '?' or '#' ('#' is refused above).
    // Splitting at the first '/' alone would read `https://host?x/client.json` as having the
    // path `/client.json`, although its path is empty and `x/client.json` is its query.
    let authority_end = rest.find(['/', '?']).unwrap_or(rest.len());
    let (authority, path_and_query) = rest.split_at(authority_end);
    // CIMD draft §3: MUST NOT contain a username or password component.
    if authority.is_empty() || authority.contains('@') {
        return Err(if authority.is_empty() { CimdError::NotHttpsWithPath } else { CimdError::ForbiddenUrlPart });
    }
    // CIMD draft §3: MUST contain a path component (Moat also refuses the bare `/`, which the
    // draft calls NOT RECOMMENDED). A query MAY be present (the draft says SHOULD NOT, not
    // MUST NOT), so it is allowed after a real path.
    let path = path_and_query.split('?').next().unwrap_or_default();
    if !path.starts_with('/') || path == "/" {
        return Err(CimdError::NotHttpsWithPath);
    }
    let dot_segment = path.split('/').any(|seg| {
        let lower = seg.to_ascii_lowercase().replace("%2e", ".");
        lower == "." || lower == ".."
    });
    if dot_segment {
        return Err(CimdError::ForbiddenUrlPart);
    }
    // The WHATWG parser (which the fetcher uses) must agree: an https URL with a host and a
    // path other than `/`, without user information or fragment.
    let parsed = url::Url::parse(s).map_err(|_| CimdError::NotHttpsWithPath)?;
    if parsed.scheme() != "https" || parsed.host_str().is_none() || parsed.path() == "/" {
        return Err(CimdError::NotHttpsWithPath);
    }
    if !parsed.username().is_empty() || parsed.password().is_some() || parsed.fragment().is_some() {
        return Err(CimdError::ForbiddenUrlPart);
    }
    Ok(())
}

/// The host of a (validated) client id URL, lowercased, without port.
pub fn client_id_host(s: &str) -> Option<String> {
    url::Url::parse(s).ok()?.host_str().map(|h| h.to_ascii_lowercase())
}

/// Whether `host` is allowed by a list of patterns: `example.com` matches exactly,
/// `*.example.com` matches any subdomain (not `example.com` itself). An empty list allows all.
pub fn host_allowed(host: &str, patterns: &[String]) -> bool {
    if patterns.is_empty() {
        return true;
    }
    let host = host.to_ascii_lowercase();
    patterns.iter().any(|p| {
        let p = p.to_ascii_lowercase();
        match p.strip_prefix("*.") {
            Some(suffix) => host.len() > suffix.len() + 1 && host.ends_with(&format!(".{suffix}")),
            None => host == p,
        }
    })
}

/// Validates an allow-list pattern given by the operator.
pub fn valid_host_pattern(p: &str) -> bool {
    let name = p.strip_prefix("*.").unwrap_or(p);
    !name.is_empty()
        && name.len() <= 253
        && name
            .split('.')
            .all(|l| !l.is_empty() && l.len() <= 63 && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'))
}

/// A document that passed validation.
#[derive(Debug, Clone, PartialEq)]
pub struct CimdClient {
    pub client_id: String,
    pub client_name: String,
    pub redirect_uris: Vec<String>,
    pub grant_types: Vec<GrantType>,
    pub auth_method: AuthMethod,
    /// Inline public keys (`private_key_jwt`).
    pub jwks: Option<Value>,
    /// Where the public keys are published (`private_key_jwt`); fetched through the safe fetcher.
    pub jwks_uri: Option<String>,
    /// An https logo URL, if the document has one.
    pub logo_uri: Option<String>,
    /// An https home page, if the document has one.
    pub client_uri: Option<String>,
    /// The document as received (kept for display and audit).
    pub metadata: Map<String, Value>,
}

impl CimdClient {
    /// Whether every redirect URI is a loopback one (the consent page warns about it).
    pub fn loopback_only(&self) -> bool {
        self.redirect_uris.iter().all(|u| redirect::is_loopback_redirect(u))
    }
}

/// Members of a JWK that only private or symmetric keys have (RFC 7518 §6).
const PRIVATE_JWK_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

fn https_url(v: Option<&Value>) -> Option<String> {
    let s = v?.as_str()?;
    (s.len() <= 2000 && url::Url::parse(s).is_ok_and(|u| u.scheme() == "https" && u.host_str().is_some()))
        .then(|| s.to_owned())
}

/// Checks that a JWKS (`{"keys": [...]}`, RFC 7517 §5) holds at most [`MAX_JWKS_KEYS`] keys,
/// each a JSON object (RFC 7517 §4), and only public asymmetric keys: no private members and
/// no symmetric (`oct`) keys, since anything published is public.
pub fn check_public_jwks(v: &Value) -> Result<(), CimdError> {
    let keys = v
        .as_object()
        .and_then(|o| o.get("keys"))
        .and_then(Value::as_array)
        .ok_or(CimdError::KeySet("it must be a JSON object with a \"keys\" array"))?;
    if keys.len() > MAX_JWKS_KEYS {
        return Err(CimdError::TooManyKeys);
    }
    for k in keys {
        let k = k.as_object().ok_or(CimdError::KeySet("every key must be a JSON object"))?;
        if PRIVATE_JWK_MEMBERS.iter().any(|m| k.contains_key(*m)) || k.get("kty").and_then(Value::as_str) == Some("oct")
        {
            return Err(CimdError::Forbidden("private or symmetric key material"));
        }
    }
    Ok(())
}

/// Validates a fetched document for `client_id`.
pub fn validate_document(doc: &Value, client_id: &str) -> Result<CimdClient, CimdError> {
    let obj = doc.as_object().ok_or(CimdError::NotAnObject)?;
    // draft §4.1: simple string comparison with the URL the document was fetched from.
    if obj.get("client_id").and_then(Value::as_str) != Some(client_id) {
        return Err(CimdError::ClientIdMismatch);
    }
    for field in ["client_secret", "client_secret_expires_at"] {
        if obj.contains_key(field) {
            return Err(CimdError::Forbidden(if field == "client_secret" {
                "a client_secret"
            } else {
                "client_secret_expires_at"
            }));
        }
    }
    let client_name = obj
        .get("client_name")
        .and_then(Value::as_str)
        .map(str::trim)
        .filter(|n| !n.is_empty() && n.chars().count() <= MAX_CLIENT_NAME_LEN && !n.chars().any(char::is_control))
        .ok_or(CimdError::Missing("client_name"))?
        .to_owned();
    let uris = obj.get("redirect_uris").and_then(Value::as_array).ok_or(CimdError::Missing("redirect_uris"))?;
    if uris.is_empty() || uris.len() > MAX_REDIRECT_URIS {
        return Err(CimdError::Missing("redirect_uris"));
    }
    let mut redirect_uris = Vec::with_capacity(uris.len());
    for u in uris {
        let u = u.as_str().ok_or(CimdError::Invalid("redirect_uris"))?;
        redirect::validate_redirect_uri(u).map_err(|_| CimdError::Invalid("redirect_uris"))?;
        if !redirect_uris.iter().any(|x: &String| x == u) {
            redirect_uris.push(u.to_owned());
        }
    }
    let auth_method = match obj.get("token_endpoint_auth_method") {
        None | Some(Value::Null) => AuthMethod::None,
        Some(Value::String(m)) => match m.as_str() {
            "none" => AuthMethod::None,
            "private_key_jwt" => AuthMethod::PrivateKeyJwt,
            other => return Err(CimdError::AuthMethod(other.chars().take(40).collect())),
        },
        Some(_) => return Err(CimdError::Invalid("token_endpoint_auth_method")),
    };
    let jwks = match obj.get("jwks") {
        None | Some(Value::Null) => None,
        Some(v) => {
            check_public_jwks(v)?;
            Some(v.clone())
        }
    };
    let jwks_uri = match obj.get("jwks_uri") {
        None | Some(Value::Null) => None,
        v => Some(https_url(v).ok_or(CimdError::Invalid("jwks_uri"))?),
    };
    if jwks.is_some() && jwks_uri.is_some() {
        return Err(CimdError::Invalid("jwks (both jwks and jwks_uri are present)"));
    }
    if auth_method == AuthMethod::PrivateKeyJwt && jwks.is_none() && jwks_uri.is_none() {
        return Err(CimdError::Missing("jwks or jwks_uri (required for private_key_jwt)"));
    }
    // Unknown grant types are tolerated (MCP requirements item 11); only the ones Moat issues
    // for are kept. Client credentials need an authenticated client and a registration an
    // operator approved, so a document cannot grant itself that.
    let grant_types = match obj.get("grant_types") {
        None | Some(Value::Null) => vec![GrantType::AuthorizationCode],
        Some(Value::Array(items)) => {
            let mut out = Vec::new();
            for g in items.iter().filter_map(Value::as_str) {
                match GrantType::parse(g) {
                    Some(GrantType::AuthorizationCode) if !out.contains(&GrantType::AuthorizationCode) => {
                        out.push(GrantType::AuthorizationCode)
                    }
                    Some(GrantType::RefreshToken) if !out.contains(&GrantType::RefreshToken) => {
                        out.push(GrantType::RefreshToken)
                    }
                    _ => {}
                }
            }
            if !out.contains(&GrantType::AuthorizationCode) {
                return Err(CimdError::Invalid("grant_types (authorization_code is required)"));
            }
            out
        }
        Some(_) => return Err(CimdError::Invalid("grant_types")),
    };
    Ok(CimdClient {
        client_id: client_id.to_owned(),
        client_name,
        redirect_uris,
        grant_types,
        auth_method,
        jwks,
        jwks_uri,
        logo_uri: https_url(obj.get("logo_uri")),
        client_uri: https_url(obj.get("client_uri")),
        metadata: obj.clone(),
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    const ID: &str = "https://app.example.com/oauth/client.json";

    fn doc() -> Value {
        json!({
            "client_id": ID,
            "client_name": "Example App",
            "redirect_uris": ["http://127.0.0.1/callback", "https://app.example.com/cb"],
            "grant_types": ["authorization_code", "refresh_token", "urn:ietf:params:oauth:grant-type:device_code"],
            "response_types": ["code", "something-new"],
            "token_endpoint_auth_method": "none",
            "logo_uri": "https://app.example.com/logo.png",
        })
    }

    fn with(k: &str, v: Value) -> Value {
        let mut d = doc();
        d[k] = v;
        d
    }

    fn without(k: &str) -> Value {
        let mut d = doc();
        d.as_object_mut().unwrap().remove(k);
        d
    }

    #[test]
    fn client_id_urls() {
        for ok in [ID, "https://example.com/c", "https://example.com:8443/a/b?x=1", "https://127.0.0.1/client.json"] {
            assert_eq!(validate_client_id_url(ok), Ok(()), "{ok}");
        }
        let cases = [
            ("http://example.com/c", CimdError::NotHttpsWithPath),
            ("https://example.com", CimdError::NotHttpsWithPath),
            ("https://example.com/", CimdError::NotHttpsWithPath),
            ("https://example.com/?x", CimdError::NotHttpsWithPath),
            ("https://example.com/c#frag", CimdError::ForbiddenUrlPart),
            ("https://user@example.com/c", CimdError::ForbiddenUrlPart),
            ("https://example.com/a/../c", CimdError::ForbiddenUrlPart),
            ("https://example.com/./c", CimdError::ForbiddenUrlPart),
            ("https://example.com/a/%2E%2e/c", CimdError::ForbiddenUrlPart),
            ("https://example.com/a b", CimdError::ForbiddenUrlPart),
            ("https://example.com/a\\b", CimdError::ForbiddenUrlPart),
            ("https:///c", CimdError::NotHttpsWithPath),
        ];
        for (url, err) in cases {
            assert_eq!(validate_client_id_url(url), Err(err), "{url}");
        }
        assert_eq!(validate_client_id_url(&format!("https://e.com/{}", "a".repeat(600))), Err(CimdError::TooLong));
    }

    #[test]
    fn client_id_authority_ends_at_query_too() {
        // The URL's path is empty and `x/client.json` is its query: no path component
        // (CIMD draft §3), although a '/' follows the '?'.
        for url in [
            "https://clients.test:8443?x/client.json",
            "https://clients.test?/client.json",
            "https://clients.test?",
            "https://example.com?a=/b/c",
        ] {
            assert_eq!(validate_client_id_url(url), Err(CimdError::NotHttpsWithPath), "{url}");
        }
        // Credentials hidden behind a query-only authority are still credentials.
        assert_eq!(validate_client_id_url("https://u@clients.test?x/client.json"), Err(CimdError::ForbiddenUrlPart));
        // A fragment anywhere is refused first.
        assert_eq!(validate_client_id_url("https://clients.test#/client.json"), Err(CimdError::ForbiddenUrlPart));
        // A query after a real path stays allowed (the draft's SHOULD NOT, not MUST NOT).
        assert_eq!(validate_client_id_url("https://clients.test:8443/client.json?v=2"), Ok(()));
        assert_eq!(validate_client_id_url("https://clients.test/c?redirect=/x/../y"), Ok(()), "dots in the query");
    }

    #[test]
    fn is_client_id_url_is_byte_safe() {
        // Byte 8 inside a multi-byte character must not panic.
        for s in ["httpsé://x", "ééééé", "https:/é/x", "日本語のURLです", "https://"] {
            assert!(!is_client_id_url(s), "{s}");
        }
        assert!(is_client_id_url("HTTPS://example.com/c"));
        assert!(
            is_client_id_url("https://é.example/c"),
            "non-ASCII after the scheme is validate_client_id_url's business"
        );
    }

    #[test]
    fn key_sets_are_bounded_objects_of_public_keys() {
        let key = json!({"kty": "EC", "crv": "P-256", "x": "a", "y": "b"});
        let set = |n: usize| json!({ "keys": vec![key.clone(); n] });
        assert_eq!(check_public_jwks(&set(MAX_JWKS_KEYS)), Ok(()));
        assert_eq!(check_public_jwks(&set(MAX_JWKS_KEYS + 1)), Err(CimdError::TooManyKeys));
        for bad in [json!({"keys": [0, 0]}), json!({"keys": [key.clone(), "k"]}), json!({"keys": [[]]})] {
            assert!(matches!(check_public_jwks(&bad), Err(CimdError::KeySet(_))), "{bad}");
        }
        for bad in [json!([]), json!({"keys": {}}), json!({}), json!("keys")] {
            assert!(matches!(check_public_jwks(&bad), Err(CimdError::KeySet(_))), "{bad}");
        }
        // Inline jwks in a document obey the same bound.
        let mut d = with("token_endpoint_auth_method", json!("private_key_jwt"));
        d["jwks"] = set(MAX_JWKS_KEYS + 1);
        assert_eq!(validate_document(&d, ID), Err(CimdError::TooManyKeys));
    }

    #[test]
    fn valid_document() {
        let c = validate_document(&doc(), ID).unwrap();
        assert_eq!(c.client_name, "Example App");
        assert_eq!(c.auth_method, AuthMethod::None);
        assert_eq!(
            c.grant_types,
            vec![GrantType::AuthorizationCode, GrantType::RefreshToken],
            "unknown grant types tolerated"
        );
        assert_eq!(c.logo_uri.as_deref(), Some("https://app.example.com/logo.png"));
        assert!(!c.loopback_only());
        let d = validate_document(&without("token_endpoint_auth_method"), ID).unwrap();
        assert_eq!(d.auth_method, AuthMethod::None);
    }

    #[test]
    fn refused_documents() {
        let cases = [
            (json!([]), CimdError::NotAnObject),
            (with("client_id", json!("https://app.example.com/oauth/client.json/")), CimdError::ClientIdMismatch),
            (with("client_id", json!("https://APP.example.com/oauth/client.json")), CimdError::ClientIdMismatch),
            (without("client_id"), CimdError::ClientIdMismatch),
            (without("client_name"), CimdError::Missing("client_name")),
            (with("client_name", json!("  ")), CimdError::Missing("client_name")),
            (without("redirect_uris"), CimdError::Missing("redirect_uris")),
            (with("redirect_uris", json!([])), CimdError::Missing("redirect_uris")),
            (with("redirect_uris", json!(["javascript:alert(1)"])), CimdError::Invalid("redirect_uris")),
            (with("redirect_uris", json!(["http://evil.example/cb"])), CimdError::Invalid("redirect_uris")),
            (with("client_secret", json!("s3cret")), CimdError::Forbidden("a client_secret")),
            (
                with("token_endpoint_auth_method", json!("client_secret_basic")),
                CimdError::AuthMethod("client_secret_basic".into()),
            ),
            (
                with("token_endpoint_auth_method", json!("client_secret_post")),
                CimdError::AuthMethod("client_secret_post".into()),
            ),
            (
                with("token_endpoint_auth_method", json!("client_secret_jwt")),
                CimdError::AuthMethod("client_secret_jwt".into()),
            ),
            (
                with("token_endpoint_auth_method", json!("private_key_jwt")),
                CimdError::Missing("jwks or jwks_uri (required for private_key_jwt)"),
            ),
            (
                with("jwks", json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b", "d": "secret"}]})),
                CimdError::Forbidden("private or symmetric key material"),
            ),
            (
                with("jwks", json!({"keys": [{"kty": "oct", "k": "c2VjcmV0"}]})),
                CimdError::Forbidden("private or symmetric key material"),
            ),
            (with("jwks_uri", json!("http://app.example.com/jwks")), CimdError::Invalid("jwks_uri")),
            (
                with("grant_types", json!(["client_credentials"])),
                CimdError::Invalid("grant_types (authorization_code is required)"),
            ),
        ];
        for (d, err) in cases {
            assert_eq!(validate_document(&d, ID), Err(err), "{d}");
        }
    }

    #[test]
    fn private_key_jwt_clients() {
        let mut d = with("token_endpoint_auth_method", json!("private_key_jwt"));
        d["jwks"] = json!({"keys": [{"kty": "EC", "crv": "P-256", "x": "a", "y": "b"}]});
        let c = validate_document(&d, ID).unwrap();
        assert_eq!(c.auth_method, AuthMethod::PrivateKeyJwt);
        assert!(c.jwks.is_some());
        d["jwks_uri"] = json!("https://app.example.com/jwks.json");
        assert!(validate_document(&d, ID).is_err(), "both jwks and jwks_uri");
    }

    #[test]
    fn host_patterns() {
        let p = vec!["example.com".to_owned(), "*.apps.test".to_owned()];
        assert!(host_allowed("example.com", &p));
        assert!(host_allowed("EXAMPLE.com", &p));
        assert!(!host_allowed("www.example.com", &p));
        assert!(host_allowed("a.apps.test", &p));
        assert!(host_allowed("b.a.apps.test", &p));
        assert!(!host_allowed("apps.test", &p));
        assert!(!host_allowed("evilapps.test", &p));
        assert!(host_allowed("anything.test", &[]));
        assert!(valid_host_pattern("*.example.com"));
        assert!(!valid_host_pattern("*"));
        assert!(!valid_host_pattern("exa mple.com"));
        assert!(!valid_host_pattern("https://example.com"));
    }
}
